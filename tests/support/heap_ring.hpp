// A ring in ordinary heap memory of exactly ring_bytes(capacity) bytes, so that AddressSanitizer
// catches any access outside it (it cannot see past the end of an mmap'ed segment).
#pragma once

#include <cstdlib>
#include <memory>
#include <algorithm>
#include <span>
#include <vector>

#include "shm/layout.hpp"
#include "shm/ring.hpp"

namespace bus::test {

struct HeapRing {
  struct Free {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };

  explicit HeapRing(uint64_t capacity, uint32_t max_record = 0)
      : size(shm::ring_bytes(capacity)),
        mem(static_cast<std::byte*>(std::aligned_alloc(shm::kFalseSharingRange, size))) {
    if (!mem || !shm::format_ring(region(), capacity, max_record)) std::abort();
  }

  [[nodiscard]] std::span<std::byte> region() const noexcept { return {mem.get(), size}; }
  [[nodiscard]] shm::RingShared& shared() const noexcept {
    return *reinterpret_cast<shm::RingShared*>(mem.get());
  }
  [[nodiscard]] std::byte* data() const noexcept { return mem.get() + shm::kDataOffset; }

  shm::RingProducer producer(shm::RingFds fds = {}) const {
    auto p = shm::RingProducer::attach(region(), fds);
    if (!p) std::abort();
    return std::move(*p);
  }
  shm::RingConsumer consumer(shm::RingFds fds = {}) const {
    auto c = shm::RingConsumer::attach(region(), fds);
    if (!c) std::abort();
    return std::move(*c);
  }

  size_t size;
  std::unique_ptr<std::byte, Free> mem;
};

/// Moves both indices of an empty ring forward to `offset` (a multiple of 8) with filler records
/// no larger than the ring takes.
inline bool move_to(shm::RingProducer& p, shm::RingConsumer& c, uint64_t offset) {
  uint64_t at = 0;
  std::vector<std::byte> filler;
  while (at < offset) {
    const uint64_t left = offset - at;
    uint64_t span = left < 2 * shm::kRecordHeaderSize ? left : std::min<uint64_t>(left / 2 + 8, p.max_record());
    span &= ~uint64_t{shm::kRecordAlign - 1};
    if (span < shm::kRecordHeaderSize) span = shm::kRecordHeaderSize;
    filler.assign(span - shm::kRecordHeaderSize, std::byte{0xEE});
    if (!p.try_write(filler) || !c.try_peek()) return false;
    c.advance();
    c.release();
    at += span;
  }
  return at == offset;
}

/// Bytes of a string, for short test records.
inline std::span<const std::byte> bytes_of(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
inline std::string_view text_of(std::span<const std::byte> b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace bus::test
