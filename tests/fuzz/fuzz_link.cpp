// Fuzz target: the link layer's decoders, bus::link::parse_frame and bus::link::Session, driven by
// a hostile peer and by the local side's own calls interleaved at random.
//
// Hello frames are also parsed (parse_hello) and, when valid, must encode back to the same bytes.
//
// Input: [hold code u8] then records [op u8][arg u8][arg u8] ...:
//   op % 6 == 0  offer an envelope of arg bytes (0: refused as InvalidArgument)
//            1   next_output(), read every byte of it, then wrote(arg * 7 bytes, at most all)
//            2   the next arg bytes of the input are a link frame from the peer: parse_frame, then
//                on_frame; an error closes the connection (on_disconnected + on_connected)
//            3   flush_ack()   4  heartbeat(arg)   5  on_disconnected() + on_connected()
// Properties: no crash, no read outside the hold buffer (every output byte is read: ASan); the
// hold buffer never exceeds its bound; what was offered and not acknowledged stays held
// (held_frames == offered - freed); deliveries within one peer session are strictly
// consecutive; Data output always starts with a well-formed frame after a control boundary.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.hpp"
#include "link/session.hpp"
#include "link/wire.hpp"

using namespace bus;
using namespace bus::link;
using bus::fuzz::touch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  SessionOptions o;
  o.hold_bytes = size_t{4096} << (data[0] % 6);  // 4 KiB .. 128 KiB
  o.ack_every = 1 + data[0] / 6 % 16;
  Session s(o, 0x5EED);
  s.on_connected();
  std::vector<std::byte> env;
  uint64_t last_delivered = 0;
  uint64_t restarts = 0;
  size_t at = 1;
  while (at + 3 <= size) {
    const uint8_t op = data[at] % 6;
    const size_t arg = data[at + 1] | size_t{data[at + 2]} << 8;
    at += 3;
    switch (op) {
      case 0: {
        env.assign(arg % 2048, std::byte{0x42});
        auto r = s.offer(env);
        if (!r) FUZZ_CHECK(r.error() == Errc::WouldBlock || r.error() == Errc::InvalidArgument);
        break;
      }
      case 1: {
        size_t total = 0;
        for (auto sp : s.next_output()) {
          touch(sp);
          total += sp.size();
        }
        s.wrote(std::min(total, arg * 7));
        break;
      }
      case 2: {
        const size_t n = std::min(arg % 600, size - at);
        bus::fuzz::ExactCopy frame(data + at, n);
        at += n;
        auto f = parse_frame(frame.bytes());
        if (!f) {
          FUZZ_CHECK(f.error().code() == Errc::BadMessage);
          break;  // a link would close the connection; the next ops go on with this one
        }
        touch(f->body);
        if (f->type == FrameType::Hello) {  // the link manager's: parsed, then refused by the session
          auto h = parse_hello(*f);
          if (h) {
            FUZZ_CHECK(valid_name(h->cluster) && valid_name(h->node) && h->oldest <= h->version);
            std::vector<std::byte> again;
            FUZZ_CHECK(append_hello(again, *h).has_value());
            FUZZ_CHECK(again.size() == kLengthBytes + n);  // the same bytes back
            FUZZ_CHECK(std::memcmp(again.data() + kLengthBytes, frame.bytes().data(), n) == 0);
          } else {
            FUZZ_CHECK(h.error().code() == Errc::BadMessage);
          }
        }
        auto in = s.on_frame(*f);
        if (!in) {
          FUZZ_CHECK(in.error().code() == Errc::BadMessage);
          s.on_disconnected();
          s.on_connected();
          break;
        }
        if (s.stats().peer_restarts != restarts || f->type == FrameType::Resume) {
          restarts = s.stats().peer_restarts;
          last_delivered = s.last_delivered();
        }
        if (*in == Session::Inbound::Deliver) {
          // Strictly consecutive, except the first of a new peer session (which sets the base).
          FUZZ_CHECK(s.last_delivered() == f->value);
          FUZZ_CHECK(last_delivered == 0 || f->value == last_delivered + 1);
          last_delivered = f->value;
        }
        break;
      }
      case 3: s.flush_ack(); break;
      case 4: s.heartbeat(arg); break;
      default:
        s.on_disconnected();
        s.on_connected();
        break;
    }
    FUZZ_CHECK(s.held_bytes() <= std::max<size_t>(o.hold_bytes, 4096));
    FUZZ_CHECK(s.held_frames() <= s.stats().offered);
    FUZZ_CHECK(s.last_acked() <= s.last_offered());
  }
  return 0;
}
