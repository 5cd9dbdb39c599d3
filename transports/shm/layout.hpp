// Byte layout of a shared-memory ring, as both processes see it. Layout version 1.
//
//   offset   size  owner      contents
//   0        128   creator    RingDescriptor: magic, layout version, capacity, max record
//   128      128   producer   tail: bytes ever published (monotonic u64), once per batch
//   256      128   consumer   head: bytes ever consumed  (monotonic u64)
//   384      128   both       sleep flags: consumer_sleeping, producer_sleeping
//   512      cap   producer   records (cap is a power of two)
//
// Each index sits alone in 128 bytes: 64-byte lines, and Intel's adjacent-line prefetcher pulls
// lines in pairs, so 64 would still let the two sides disturb each other.
//
// A record is a 16-byte RecordHeader {length, tag, commit} followed by `length` bytes, padded to
// 16. The producer writes length, tag and payload, then release-stores commit = position + 1
// (position: the record's absolute byte offset in the ring's history). The consumer polls the
// commit word of the record at its head: the record is there when commit == head + 1. A stale
// header from an earlier lap carries an older position and zeroed memory a commit of 0, so
// neither reads as a new record; and the consumer learns of a record from the record's own cache
// line, not from a separate index (one cache-line transfer per hop instead of two).
// The tail index is still published, once per batch: it drives the sleep/wake protocol and lets a
// producer re-attach.
//
// Records never wrap: when one does not fit before the end, the producer writes a pad record
// (tag kPadTag) that covers the rest of the buffer and starts the record at offset 0.
// A record of at most capacity/2 - 16 bytes always fits in an empty ring, whatever its offset,
// which is why max_record is bounded by that.
//
// Neither side trusts what it reads here: the descriptor is checked once at attach and copied
// into the endpoint; indices and record headers are checked against those copies on every read.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bus::shm {

inline constexpr size_t kFalseSharingRange = 128;
inline constexpr uint64_t kRingMagic = 0x474E4952'53554221ull;  // "!BUSRING" little-endian
inline constexpr uint32_t kRingLayoutVersion = 1;
inline constexpr uint32_t kRecordAlign = 16;
inline constexpr uint32_t kRecordHeaderSize = 16;
inline constexpr uint32_t kPadTag = 0xFFFF'FFFFu;  // reserved: user tags are any other value
inline constexpr uint64_t kMinCapacity = 4096;
inline constexpr uint64_t kMaxCapacity = 1ull << 32;

struct RecordHeader {
  uint32_t length;  // payload bytes, header and padding excluded
  uint32_t tag;     // user tag, or kPadTag
  uint64_t commit;  // position + 1, stored last (release): the record is complete
};
static_assert(sizeof(RecordHeader) == kRecordHeaderSize);
static_assert(offsetof(RecordHeader, commit) % 8 == 0, "commit is accessed atomically");

struct alignas(kFalseSharingRange) RingDescriptor {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t data_offset;  // == sizeof(RingShared)
  uint64_t capacity;     // data bytes, power of two
  uint32_t max_record;   // largest record payload, <= capacity / 2 - kRecordHeaderSize
  uint32_t reserved;
};

struct alignas(kFalseSharingRange) ProducerLine {
  std::atomic<uint64_t> tail;
};

struct alignas(kFalseSharingRange) ConsumerLine {
  std::atomic<uint64_t> head;
};

// Written only when a side goes to sleep or is woken: read often, written rarely.
struct alignas(kFalseSharingRange) SleepLine {
  std::atomic<uint32_t> consumer_sleeping;
  std::atomic<uint32_t> producer_sleeping;
};

struct RingShared {
  RingDescriptor desc;
  ProducerLine prod;
  ConsumerLine cons;
  SleepLine sleep;
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "ring indices must be lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "sleep flags must be lock-free");
static_assert(sizeof(std::atomic<uint64_t>) == 8 && sizeof(std::atomic<uint32_t>) == 4);
static_assert(offsetof(RingShared, prod) == 128 && offsetof(RingShared, cons) == 256 &&
              offsetof(RingShared, sleep) == 384 && sizeof(RingShared) == 512,
              "ring layout v1 is fixed: change kRingLayoutVersion with it");

inline constexpr size_t kDataOffset = sizeof(RingShared);

/// Bytes a ring of `capacity` data bytes occupies.
[[nodiscard]] constexpr size_t ring_bytes(uint64_t capacity) noexcept {
  return kDataOffset + capacity;
}

/// The largest record payload a ring of `capacity` takes.
[[nodiscard]] constexpr uint32_t max_record_for(uint64_t capacity) noexcept {
  const uint64_t m = capacity / 2 - kRecordHeaderSize;
  return m > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(m);
}

/// Span of a record in the ring: header + payload rounded up to kRecordAlign.
[[nodiscard]] constexpr uint64_t record_span(uint64_t length) noexcept {
  return (kRecordHeaderSize + length + (kRecordAlign - 1)) & ~uint64_t{kRecordAlign - 1};
}

/// Smallest power-of-two capacity whose rings take records of `max_record` bytes.
[[nodiscard]] constexpr uint64_t capacity_for(uint32_t max_record) noexcept {
  uint64_t c = kMinCapacity;
  while (max_record_for(c) < max_record) c <<= 1;
  return c;
}

}  // namespace bus::shm
