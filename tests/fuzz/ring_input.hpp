// Input format of fuzz_ring, shared with make_corpus (which encodes real ring states in it).
//
//   offset size
//   0      1    flags: bits 0-1 capacity = 4096 << bits; bit 6: also attach a RingProducer
//   1      1    corrupt: >= 0xF0 corrupts the descriptor or the region, kind = corrupt & 0x0F
//                (see fuzz_ring.cpp); anything else leaves the ring as format_ring wrote it
//   2      4    max_record for format_ring (0 or too large: the default for the capacity)
//   6      4    corrupt_value: the value a corruption writes
//   10     8    head index written over the formatted ring
//   18     8    tail index
//   26     32   16 operations (op, arg) run on the consumer (op % kNumOps)
//   58     ...  blob: copied into the data area from head & (capacity - 1) on, wrapping around
//                (a compact seed holds just the live records between head and tail)
// Integers are little-endian; a short input reads as zeros past its end.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace bus::fuzz {

struct RingInput {
  enum Op : uint8_t {
    Peek,           // try_peek; the record must lie in the data area
    Advance,        // advance (harmless without a peeked record)
    Release,        // release
    ReadCopy,       // try_read_copy into a buffer of arg * 16 bytes
    Poll,           // poll up to arg % 8 + 1 records
    Readable,       // readable
    MoveTail,       // hostile producer: tail += (arg - 128) * 16 (arg odd: misaligned by 8)
    RewriteHeader,  // hostile producer: length/tag of the record at the released head become
                    // arg * 16 + arg % 16 / arg (255: the pad tag); its commit word stays
    ForgeCommit,    // hostile producer: a record of length arg % 4 * 40 that looks committed,
                    // arg % 8 record slots after the released head
    ProducerWrite,  // the RingProducer (flags bit 6) writes a record of arg * 3 bytes
    ArmSleep,       // arm_sleep, then disarm (no eventfds: no system calls)
    WaitPeek,       // wait_peek, spin strategy, a deadline already past
    kNumOps
  };
  static constexpr size_t kOps = 16;
  static constexpr size_t kHeaderSize = 26 + 2 * kOps;
  static constexpr uint8_t kWithProducer = 0x40;

  uint8_t flags = 0;
  uint8_t corrupt = 0;
  uint32_t max_record = 0;
  uint32_t corrupt_value = 0;
  uint64_t head = 0;
  uint64_t tail = 0;
  std::array<std::array<uint8_t, 2>, kOps> ops{};
  std::span<const uint8_t> blob{};

  [[nodiscard]] uint64_t capacity() const noexcept { return uint64_t{4096} << (flags & 3); }

  static RingInput parse(const uint8_t* data, size_t size) noexcept {
    auto byte = [&](size_t i) -> uint8_t { return i < size ? data[i] : 0; };
    auto le = [&](size_t at, size_t n) {
      uint64_t v = 0;
      for (size_t i = 0; i < n; ++i) v |= uint64_t{byte(at + i)} << (8 * i);
      return v;
    };
    RingInput in;
    in.flags = byte(0);
    in.corrupt = byte(1);
    in.max_record = static_cast<uint32_t>(le(2, 4));
    in.corrupt_value = static_cast<uint32_t>(le(6, 4));
    in.head = le(10, 8);
    in.tail = le(18, 8);
    for (size_t i = 0; i < kOps; ++i) in.ops[i] = {byte(26 + 2 * i), byte(27 + 2 * i)};
    if (size > kHeaderSize) in.blob = {data + kHeaderSize, size - kHeaderSize};
    return in;
  }

  [[nodiscard]] std::vector<uint8_t> encode() const {
    std::vector<uint8_t> out(kHeaderSize + blob.size());
    auto put = [&](size_t at, uint64_t v, size_t n) {
      for (size_t i = 0; i < n; ++i) out[at + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put(0, flags, 1);
    put(1, corrupt, 1);
    put(2, max_record, 4);
    put(6, corrupt_value, 4);
    put(10, head, 8);
    put(18, tail, 8);
    for (size_t i = 0; i < kOps; ++i) {
      out[26 + 2 * i] = ops[i][0];
      out[27 + 2 * i] = ops[i][1];
    }
    for (size_t i = 0; i < blob.size(); ++i) out[kHeaderSize + i] = blob[i];
    return out;
  }
};

}  // namespace bus::fuzz
