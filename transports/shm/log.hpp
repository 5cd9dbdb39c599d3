// A broadcast log: one writer, several readers, each record written once and read by every
// reader at its own position (fan-out without one copy per reader). busd sets one up for a
// subject with several local subscribers (bus/daemon/lanes.cpp); its bytes are laid out here.
//
//   offset  size             contents
//   0       128              LogHeader: magic, version, log id, reader count, offsets
//   128     128              LogShared: sleepers (readers asleep now), writer_sleeping
//   256     readers * 128    ReaderLine per reader: its position (head) and its sleep flag
//   ring    ring_bytes(cap)  a ring (layout.hpp): the records, framed as in any ring
//
// The records are an ordinary ring's. The writer is a RingProducer whose "consumer head" is the
// slowest reader's position: the writer computes it (aggregate()) and stores it there itself,
// so a full log holds the writer back until the slowest reader moves (block policy). Each
// reader reads the records with its own RingConsumer (never its release(): it stores its
// position in its ReaderLine), so readers never write the same line.
//
// Sleeping: a reader announces sleep in its line and counts itself in `sleepers`, then
// re-checks the tail; the writer, after publishing, reads `sleepers` and wakes only the readers
// whose flag is set (an eventfd each). A reader that moves while the writer sleeps for room
// wakes it through the space eventfd. As in rings, every pairing is a seq_cst store/RMW on one
// side and a seq_cst load on the other.
//
// Trust: a reader that stores a position outside [slowest seen, tail] is cut out of the
// aggregate (it only loses its own records); a writer that breaks the framing makes readers
// report Corrupt, as for a ring.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "bus/error.hpp"
#include "shm/ring.hpp"

namespace bus::shm::log {

inline constexpr uint64_t kLogMagic = 0x474F4C42'53554221ull;  // "!BUSBLOG" little-endian
inline constexpr uint32_t kLogLayoutVersion = 1;
inline constexpr uint32_t kMaxReaders = 256;

struct alignas(kFalseSharingRange) LogHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t log_id;
  uint32_t writer;        // agent id of the writer
  uint32_t readers;       // reader lines that follow LogShared
  uint64_t ring_offset;   // where the ring starts
  uint64_t ring_size;     // ring_bytes(capacity)
};

struct alignas(kFalseSharingRange) LogShared {
  std::atomic<uint32_t> sleepers;        // readers asleep now
  std::atomic<uint32_t> writer_sleeping;
  // Written by the writer, read by busd for the counters page.
  std::atomic<uint64_t> messages;
  std::atomic<uint64_t> bytes;
  std::atomic<uint64_t> would_block;
};

struct alignas(kFalseSharingRange) ReaderLine {
  std::atomic<uint64_t> head;
  std::atomic<uint32_t> sleeping;
  uint32_t agent;  // the reader's agent id (busd fills it in)
};

static_assert(sizeof(LogHeader) == 128 && sizeof(LogShared) == 128 && sizeof(ReaderLine) == 128);

/// Bytes of a log for `readers` readers and a ring of `capacity`.
[[nodiscard]] constexpr size_t log_bytes(uint32_t readers, uint64_t capacity) noexcept {
  return sizeof(LogHeader) + sizeof(LogShared) + size_t{readers} * sizeof(ReaderLine) + ring_bytes(capacity);
}

/// Writes a fresh log into `region` (log_bytes(readers, capacity) bytes, zeroed or `zeroed`).
[[nodiscard]] Expected<void> format_log(std::span<std::byte> region, uint32_t log_id, uint32_t writer,
                                        std::span<const uint32_t> readers, uint64_t capacity,
                                        Zeroed zeroed = Zeroed::no);

/// The parts of a log an attaching side found and checked.
struct LogParts {
  LogHeader header;
  LogShared* shared = nullptr;
  std::span<ReaderLine> lines;
  std::span<std::byte> ring;
};
[[nodiscard]] Expected<LogParts> check_log(std::span<std::byte> region);

class LogWriter {
 public:
  LogWriter() = default;
  /// `reader_fds`: each reader's data eventfd (index = reader line); `space_fd`: readers wake
  /// the writer through it.
  [[nodiscard]] static Expected<LogWriter> attach(std::span<std::byte> region, std::vector<int> reader_fds,
                                                  int space_fd);

  /// As RingProducer::try_claim; WouldBlock while the slowest reader holds the space.
  [[nodiscard]] Result<std::span<std::byte>> try_claim(uint32_t len, uint32_t tag) noexcept {
    auto c = ring_.try_claim(len, tag);
    if (c || c.error() != Errc::WouldBlock) [[likely]] return c;
    aggregate();
    return ring_.try_claim(len, tag);
  }
  /// Waits for room per `ws` until `deadline` (Timeout), sleeping on the space eventfd.
  [[nodiscard]] Result<std::span<std::byte>> claim(uint32_t len, const WaitStrategy& ws, Deadline deadline,
                                                   uint32_t tag) noexcept;
  void commit(uint32_t len) noexcept { ring_.commit(len); }
  /// Ends a batch: publishes the tail and wakes the readers that sleep.
  void publish() noexcept {
    ring_.publish();
    // seq_cst: pairs with a reader's seq_cst count in arm_sleep() (see the top of the file).
    if (shared_->sleepers.load(std::memory_order_seq_cst) != 0) [[unlikely]] wake_readers();
  }
  /// Bytes written and not yet read by the slowest reader.
  [[nodiscard]] uint64_t unconsumed() noexcept {
    aggregate();
    return ring_.unconsumed();
  }
  [[nodiscard]] uint32_t max_record() const noexcept { return ring_.max_record(); }
  [[nodiscard]] LogShared* shared() const noexcept { return shared_; }
  [[nodiscard]] bool attached() const noexcept { return shared_ != nullptr; }

 private:
  /// Stores the slowest live reader's position as the ring's consumer head.
  void aggregate() noexcept;
  void wake_readers() noexcept;

  RingProducer ring_;
  RingShared* ring_shared_ = nullptr;
  LogShared* shared_ = nullptr;
  std::span<ReaderLine> lines_;
  std::vector<int> reader_fds_;
  std::vector<uint8_t> cut_;  // readers whose position broke the rules: not waited for
  uint64_t slowest_ = 0;
  int space_fd_ = -1;
};

class LogReader {
 public:
  LogReader() = default;
  /// Reader `index` (its line); `data_fd`: the writer wakes it there; `space_fd`: it wakes the
  /// writer there.
  [[nodiscard]] static Expected<LogReader> attach(std::span<std::byte> region, uint32_t index, int data_fd,
                                                  int space_fd);

  [[nodiscard]] Result<Record> try_peek() noexcept { return ring_.try_peek(); }
  void advance() noexcept { ring_.advance(); }
  /// Stores this reader's position; wakes the writer if it waits for room.
  void release() noexcept {
    const uint64_t h = ring_.position();
    if (h == released_) return;
    released_ = h;
    line_->head.store(h, std::memory_order_seq_cst);
    if (shared_->writer_sleeping.load(std::memory_order_seq_cst) != 0) [[unlikely]] wake_writer();
  }
  /// As RingConsumer::arm_sleep: false when a record is there (do not sleep).
  [[nodiscard]] bool arm_sleep() noexcept;
  void disarm() noexcept;
  [[nodiscard]] const std::string& corruption() const noexcept { return ring_.corruption(); }
  [[nodiscard]] bool attached() const noexcept { return shared_ != nullptr; }

 private:
  void wake_writer() noexcept;

  RingConsumer ring_;
  RingShared* ring_shared_ = nullptr;
  LogShared* shared_ = nullptr;
  ReaderLine* line_ = nullptr;
  uint64_t released_ = 0;
  int data_fd_ = -1;
  int space_fd_ = -1;
  bool armed_ = false;
};

}  // namespace bus::shm::log
