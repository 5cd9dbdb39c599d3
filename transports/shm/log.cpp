// Broadcast log: see log.hpp.
#include "shm/log.hpp"

#include <sched.h>

#include <cstring>
#include <new>

#include "bus/clock.hpp"

namespace bus::shm::log {

Expected<void> format_log(std::span<std::byte> region, uint32_t log_id, uint32_t writer,
                          std::span<const uint32_t> readers, uint64_t capacity, Zeroed zeroed) {
  if (readers.empty() || readers.size() > kMaxReaders) return fail(Errc::InvalidArgument, "a log has 1 to 256 readers");
  const auto n = static_cast<uint32_t>(readers.size());
  if (region.size() < log_bytes(n, capacity)) return fail(Errc::InvalidArgument, "region too small for the log");
  const size_t lines_at = sizeof(LogHeader) + sizeof(LogShared);
  const size_t ring_at = lines_at + size_t{n} * sizeof(ReaderLine);
  if (zeroed == Zeroed::no) std::memset(region.data(), 0, ring_at);
  if (auto f = format_ring(region.subspan(ring_at, ring_bytes(capacity)), capacity, 0, zeroed); !f) return f;
  auto* h = new (region.data()) LogHeader{};
  h->magic = kLogMagic;
  h->layout_version = kLogLayoutVersion;
  h->log_id = log_id;
  h->writer = writer;
  h->readers = n;
  h->ring_offset = ring_at;
  h->ring_size = ring_bytes(capacity);
  new (region.data() + sizeof(LogHeader)) LogShared{};
  auto* lines = reinterpret_cast<ReaderLine*>(region.data() + lines_at);
  for (uint32_t i = 0; i < n; ++i) {
    new (&lines[i]) ReaderLine{};
    lines[i].agent = readers[i];
  }
  return {};
}

Expected<LogParts> check_log(std::span<std::byte> region) {
  LogParts p;
  if (region.size() < sizeof(LogHeader) + sizeof(LogShared)) return fail(Errc::Corrupt, "log: region too small");
  std::memcpy(&p.header, region.data(), sizeof p.header);  // checked once, then used from the copy
  const LogHeader& h = p.header;
  const size_t lines_at = sizeof(LogHeader) + sizeof(LogShared);
  if (h.magic != kLogMagic || h.layout_version != kLogLayoutVersion) return fail(Errc::Corrupt, "log: bad magic or version");
  if (h.readers == 0 || h.readers > kMaxReaders || h.ring_offset != lines_at + size_t{h.readers} * sizeof(ReaderLine) ||
      h.ring_size > region.size() || h.ring_offset > region.size() - h.ring_size) {
    return fail(Errc::Corrupt, "log: geometry outside the segment");
  }
  p.shared = reinterpret_cast<LogShared*>(region.data() + sizeof(LogHeader));
  p.lines = std::span(reinterpret_cast<ReaderLine*>(region.data() + lines_at), h.readers);
  p.ring = region.subspan(h.ring_offset, h.ring_size);
  return p;
}

// ---------------------------------------------------------------- writer

Expected<LogWriter> LogWriter::attach(std::span<std::byte> region, std::vector<int> reader_fds, int space_fd) {
  auto parts = check_log(region);
  if (!parts) return tl::unexpected(parts.error());
  if (reader_fds.size() != parts->lines.size()) return fail(Errc::InvalidArgument, "log: one eventfd per reader");
  // The ring's own wake-up is not used: readers sleep on their own eventfds (wake_readers()).
  auto ring = RingProducer::attach(parts->ring, {-1, space_fd});
  if (!ring) return tl::unexpected(ring.error());
  LogWriter w;
  w.ring_ = std::move(*ring);
  w.ring_shared_ = reinterpret_cast<RingShared*>(parts->ring.data());
  w.shared_ = parts->shared;
  w.lines_ = parts->lines;
  w.reader_fds_ = std::move(reader_fds);
  w.cut_.assign(w.lines_.size(), 0);
  w.space_fd_ = space_fd;
  w.slowest_ = w.ring_shared_->cons.head.load(std::memory_order_acquire);
  return w;
}

void LogWriter::aggregate() noexcept {
  // The tail as far as readers may have read: everything committed.
  const uint64_t tail = ring_.unconsumed() + slowest_;
  uint64_t slowest = tail;
  bool any = false;
  for (size_t i = 0; i < lines_.size(); ++i) {
    if (cut_[i] != 0) continue;
    // acquire: pairs with the reader's seq_cst store in release(): it is done with what it read.
    const uint64_t h = lines_[i].head.load(std::memory_order_acquire);
    if (h - slowest_ > tail - slowest_ || h % kRecordAlign != 0) {
      cut_[i] = 1;  // a position no honest reader stores: it no longer holds the writer back
      continue;
    }
    if (!any || h - slowest_ < slowest - slowest_) slowest = h;
    any = true;
  }
  slowest_ = slowest;
  // The ring's consumer head is ours to write in a log: the producer checks it like any head.
  ring_shared_->cons.head.store(slowest, std::memory_order_release);
}

void LogWriter::wake_readers() noexcept {
  for (size_t i = 0; i < lines_.size(); ++i) {
    // exchange: one wake per announced sleep.
    if (lines_[i].sleeping.load(std::memory_order_relaxed) != 0 &&
        lines_[i].sleeping.exchange(0, std::memory_order_acq_rel) != 0 && reader_fds_[i] >= 0) {
      wake::signal(reader_fds_[i]);
    }
  }
}

Result<std::span<std::byte>> LogWriter::claim(uint32_t len, const WaitStrategy& ws, Deadline deadline,
                                              uint32_t tag) noexcept {
  auto c = try_claim(len, tag);
  if (c || c.error() != Errc::WouldBlock) [[likely]] return c;
  publish();  // the readers must see what is pending, or they never make room
  shared_->would_block.store(shared_->would_block.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  const uint64_t until = deadline.resolve();
  const uint64_t spin_until =
      ws.kind == WaitKind::Block ? 0 : ws.kind == WaitKind::Adaptive ? clock::mono_ns() + ws.spin_ns : until;
  for (;;) {
    c = try_claim(len, tag);
    if (c || c.error() != Errc::WouldBlock) return c;
    const uint64_t now = clock::mono_ns();
    if (now >= until) return tl::unexpected(Errc::Timeout);
    if (now < spin_until) {
      if (ws.kind == WaitKind::Spin) {
        cpu_relax();
      } else {
        ::sched_yield();
      }
      continue;
    }
    // seq_cst store, then the readers' positions: pairs with release() (seq_cst store of its
    // position, then seq_cst load of this flag).
    shared_->writer_sleeping.store(1, std::memory_order_seq_cst);
    c = try_claim(len, tag);
    if (!c && c.error() == Errc::WouldBlock && space_fd_ >= 0) {
      (void)wake::sleep_until(space_fd_, std::min(until, now + 10'000'000));  // re-looks every 10 ms
      wake::drain(space_fd_);
    }
    shared_->writer_sleeping.store(0, std::memory_order_relaxed);
    if (c || c.error() != Errc::WouldBlock) return c;
  }
}

// ---------------------------------------------------------------- reader

Expected<LogReader> LogReader::attach(std::span<std::byte> region, uint32_t index, int data_fd, int space_fd) {
  auto parts = check_log(region);
  if (!parts) return tl::unexpected(parts.error());
  if (index >= parts->lines.size()) return fail(Errc::InvalidArgument, "log: no such reader");
  auto ring = RingConsumer::attach(parts->ring, {-1, -1});
  if (!ring) return tl::unexpected(ring.error());
  LogReader r;
  r.ring_ = std::move(*ring);
  r.ring_shared_ = reinterpret_cast<RingShared*>(parts->ring.data());
  r.shared_ = parts->shared;
  r.line_ = &parts->lines[index];
  r.data_fd_ = data_fd;
  r.space_fd_ = space_fd;
  // A fresh log: every reader starts at 0 (the ring consumer attached at the aggregate head,
  // which is 0 before anything was read).
  r.released_ = r.ring_.position();
  return r;
}

void LogReader::wake_writer() noexcept {
  if (shared_->writer_sleeping.exchange(0, std::memory_order_acq_rel) != 0 && space_fd_ >= 0) wake::signal(space_fd_);
}

bool LogReader::arm_sleep() noexcept {
  line_->sleeping.store(1, std::memory_order_seq_cst);
  shared_->sleepers.fetch_add(1, std::memory_order_seq_cst);
  armed_ = true;
  // seq_cst load of the tail: pairs with publish() (seq_cst store of the tail, then seq_cst
  // load of sleepers). Either the writer sees us counted, or we see its tail (and a tail with
  // no record behind it makes the ring Corrupt, as in RingConsumer::arm_sleep).
  const uint64_t t = ring_shared_->prod.tail.load(std::memory_order_seq_cst);
  if (ring_.awake_for_tail(t) || ring_.readable()) {
    disarm();
    return false;
  }
  return true;
}

void LogReader::disarm() noexcept {
  if (!armed_) return;
  armed_ = false;
  line_->sleeping.store(0, std::memory_order_relaxed);
  shared_->sleepers.fetch_sub(1, std::memory_order_seq_cst);
  if (data_fd_ >= 0) wake::drain(data_fd_);
}

}  // namespace bus::shm::log
