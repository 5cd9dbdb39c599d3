// Fuzz target: bus::sock::FrameReader (transports/socket/frame.hpp), the decoder of length-framed
// streams from another process (busd's control socket; TCP links later).
//
// Input: [max_frame u16 LE][methods u8][k u8 (low 4 bits)][k chunk-size codes][stream bytes...]
// The stream is handed over in chunks whose sizes cycle through the codes (a code c means
// (c & 63) << 3 * (c >> 6) bytes: 0..63, 0..504, 0..4032, 0..32256; k = 0: all at once), each
// chunk through feed() or room()+commit() (bit i % 8 of `methods`). After every chunk the frames
// are drained with next().
// Properties, against a reference parse of the whole stream: the frames come out in order, each
// exactly the stream's bytes (every byte read: ASan sees any read outside the reader's buffer),
// none above max_frame and none before its last byte was fed; pending() is what was fed and not
// yet returned; TooLarge comes exactly when the first over-long header is complete, and is sticky
// (again on the next call, and after more bytes); room() always offers at least one byte.
//
// feed() copies its whole argument into room(size): a chunk larger than the room left below the
// cap (max_frame + 4 bytes buffered) overflows the buffer (reported to the lead with a reproducer
// input). Until that is fixed this target feeds at most what room() offers, as receive() does.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "fuzz_check.hpp"
#include "socket/frame.hpp"

using namespace bus;
using bus::fuzz::touch;

namespace {

struct RefFrame {
  size_t offset;  // of the payload in the stream
  size_t length;
};

uint32_t le32(const std::byte* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

size_t chunk_size(uint8_t code) { return size_t{code & 63u} << (3 * (code >> 6)); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const uint32_t max_frame = uint32_t{data[0]} | uint32_t{data[1]} << 8;
  const uint8_t methods = data[2];
  const size_t k = data[3] & 15u;
  if (size < 4 + k) return 0;
  const std::vector<uint8_t> codes(data + 4, data + 4 + k);
  bus::fuzz::ExactCopy copy(data + 4 + k, size - 4 - k);
  const auto stream = copy.bytes();

  // Reference parse of the whole stream.
  std::vector<RefFrame> ref;
  bool ref_too_large = false;
  size_t too_large_header = 0;  // offset of the over-long frame's header
  for (size_t pos = 0; stream.size() - pos >= sock::kFrameHeader;) {
    const uint32_t len = le32(stream.data() + pos);
    if (len > max_frame) {
      ref_too_large = true;
      too_large_header = pos;
      break;
    }
    if (stream.size() - pos - sock::kFrameHeader < len) break;
    ref.push_back({pos + sock::kFrameHeader, len});
    pos += sock::kFrameHeader + len;
  }

  sock::FrameReader reader(max_frame);
  size_t fed = 0, got = 0, returned_bytes = 0;  // returned_bytes: headers + payloads handed out
  bool too_large = false;
  int idle_chunks = 0;
  for (size_t i = 0; fed < stream.size() && !too_large; ++i) {
    size_t want = k == 0 ? stream.size() : chunk_size(codes[i % k]);
    if (want == 0 && ++idle_chunks > 16) want = 1;  // zero-size chunks are tried, but not for ever
    want = std::min(want, stream.size() - fed);
    const bool direct = ((methods >> (i % 8)) & 1u) != 0;
    auto room = reader.room(want);
    FUZZ_CHECK(want == 0 || !room.empty());
    const size_t n = std::min(want, room.size());
    if (direct) {
      if (n != 0) std::memcpy(room.data(), stream.data() + fed, n);
      reader.commit(n);
    } else if (n != 0) {
      reader.feed(stream.subspan(fed, n));
    }
    fed += n;

    for (;;) {
      auto f = reader.next();
      if (!f) {
        if (f.error() == Errc::TooLarge) {
          // Exactly when the reference's over-long header is complete, after every frame before it.
          FUZZ_CHECK(ref_too_large && got == ref.size());
          FUZZ_CHECK(fed >= too_large_header + sock::kFrameHeader);
          FUZZ_CHECK(returned_bytes == too_large_header);
          auto again = reader.next();
          FUZZ_CHECK(!again && again.error() == Errc::TooLarge);
          too_large = true;
        } else {
          FUZZ_CHECK(f.error() == Errc::WouldBlock);
        }
        break;
      }
      FUZZ_CHECK(got < ref.size());
      const RefFrame& r = ref[got];
      FUZZ_CHECK(f->size() == r.length && f->size() <= max_frame);
      FUZZ_CHECK(r.offset + r.length <= fed);  // never a frame before its last byte arrived
      FUZZ_CHECK(f->empty() || std::memcmp(f->data(), stream.data() + r.offset, f->size()) == 0);
      touch(*f);
      ++got;
      returned_bytes = r.offset + r.length;
    }
    if (!too_large) {
      FUZZ_CHECK(reader.pending() == fed - returned_bytes);
      // Not TooLarge yet: the reference's over-long header has not arrived whole.
      FUZZ_CHECK(!ref_too_large || fed < too_large_header + sock::kFrameHeader || got < ref.size());
    }
  }
  if (too_large) {
    // Sticky: more bytes do not unstick it (a caller closes the stream instead).
    const std::byte more[8] = {};
    auto room = reader.room(sizeof more);
    FUZZ_CHECK(!room.empty());
    reader.feed(std::span(more).first(std::min(sizeof more, room.size())));
    auto again = reader.next();
    FUZZ_CHECK(!again && again.error() == Errc::TooLarge);
  } else {
    // Everything fed: every reference frame came out, and TooLarge never was due.
    FUZZ_CHECK(got == ref.size());
    FUZZ_CHECK(!ref_too_large);
    FUZZ_CHECK(reader.pending() == stream.size() - returned_bytes);
  }
  return 0;
}
