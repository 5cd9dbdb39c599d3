// Fuzz target: bus::tcp::parse_chan, the frames of a remote agent's TCP stream (busd's
// tcp_listen and libbus's tcp:// side), fed through sock::FrameReader as the stream arrives.
//
// Input: [max frame u8 (x 64 bytes)] then the stream bytes. Properties: no crash or read
// outside the input (ASan); errors are BadMessage (a frame) or TooLarge (the reader); a frame
// that parses is written back by append_chan to the same bytes, length included.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.hpp"
#include "socket/endpoint.hpp"
#include "socket/frame.hpp"

using namespace bus;
using bus::fuzz::touch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  sock::FrameReader reader(64u * (1u + data[0]));
  bus::fuzz::ExactCopy in(data + 1, size - 1);
  auto bytes = in.bytes();
  while (!bytes.empty()) {
    const size_t took = reader.feed(bytes);
    bytes = bytes.subspan(took);
    for (;;) {
      auto f = reader.next();
      if (!f) {
        FUZZ_CHECK(f.error() == Errc::WouldBlock || f.error() == Errc::TooLarge);
        if (f.error() == Errc::TooLarge) return 0;  // the stream is closed there
        break;
      }
      auto c = tcp::parse_chan(*f);
      if (!c) {
        FUZZ_CHECK(c.error().code() == Errc::BadMessage);
        continue;  // busd closes the connection; here the next frames are tried too
      }
      touch(c->body);
      std::vector<std::byte> again;
      tcp::append_chan(again, c->channel, c->tag, c->body);
      FUZZ_CHECK(again.size() == 4 + f->size());
      FUZZ_CHECK(std::memcmp(again.data() + 4, f->data(), f->size()) == 0);
    }
    if (took == 0 && reader.next().error() == Errc::WouldBlock) break;
  }
  return 0;
}
