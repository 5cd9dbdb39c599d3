// Wait-free single-producer single-consumer ring of variable-length records in shared memory.
// Byte layout and record framing: layout.hpp. Waiting and wake-ups: wait.hpp.
//
// Producer: try_claim(len) -> write the bytes -> commit(len) (the record is visible now), any
// number of times, then publish() once per batch (wakes a sleeping consumer). Consumer:
// try_peek() -> use the record -> advance(), any number of times, then release() once per batch
// (or poll(), which does that). Each call finishes in a bounded number of steps whatever the
// other side does: no locks, no allocation, no system call unless the other side announced it
// sleeps.
//
// Trust: either side may be another process that rewrites the shared memory at any moment.
// The geometry is checked once at attach and kept in the endpoint; every index and record
// header read from shared memory is checked against it before use, and a violation makes the
// endpoint report Corrupt (sticky) instead of reading or writing out of bounds. Record bytes can
// still change under a zero-copy reader: a consumer that does not trust its producer copies the
// record out (try_read_copy) and verifies the copy.
#pragma once

#include <atomic>
#include <cstring>
#include <span>
#include <string>

#include "bus/error.hpp"
#include "shm/layout.hpp"
#include "shm/wait.hpp"

namespace bus::shm {

/// Polls a wait makes inline, before its out-of-line loop (spin and adaptive strategies).
inline constexpr int kInlinePolls = 64;

/// The two eventfds of a ring: `data` is written by the producer to wake the consumer, `space`
/// by the consumer to wake a producer waiting for room. -1: that side never sleeps.
struct RingFds {
  int data = -1;
  int space = -1;
};

/// System calls and back-pressure seen by one endpoint (local memory, owned by its thread).
struct EndpointStats {
  uint64_t wakes_sent = 0;   // eventfd writes to wake the other side
  uint64_t sleeps = 0;       // times this side slept on its eventfd
  uint64_t would_block = 0;  // producer: claims refused because the ring was full
};

/// Whether format_ring may skip zeroing the records: `yes` for memory known to be zero (a new
/// memfd or file just sized), so that none of its pages is touched (and made resident) until
/// records are written there. busd creates a ring pair per agent: thousands of agents cost
/// their touched pages, not 8 MiB each.
enum class Zeroed : bool { no, yes };

/// Writes a fresh ring into `region` (ring_bytes(capacity) bytes, 128-byte aligned), for the
/// creator only, before any other side attaches: zeroes the records (unless `zeroed`), sets the
/// descriptor. max_record = 0 picks max_record_for(capacity).
[[nodiscard]] Expected<void> format_ring(std::span<std::byte> region, uint64_t capacity,
                                         uint32_t max_record = 0, Zeroed zeroed = Zeroed::no);

/// The geometry an attaching side read and checked.
struct RingGeometry {
  uint64_t capacity = 0;
  uint32_t max_record = 0;
};

/// Checks the descriptor of a ring in `region` (magic, layout version, sizes).
[[nodiscard]] Expected<RingGeometry> check_ring(std::span<const std::byte> region);

// Endpoints are aligned to kFalseSharingRange: a producer and a consumer often sit side by side
// in one struct while two threads use them, and the wait loops re-read their fields on every poll.
class alignas(kFalseSharingRange) RingProducer {
 public:
  RingProducer() = default;
  [[nodiscard]] static Expected<RingProducer> attach(std::span<std::byte> region,
                                                     RingFds fds = {});

  /// Reserves room for a record of `len` bytes and returns where to write them.
  /// Errors: TooLarge (len > max_record), WouldBlock (full: publish and retry later),
  /// InvalidArgument (tag == kPadTag), Corrupt (the consumer broke the layout).
  [[nodiscard]] Result<std::span<std::byte>> try_claim(uint32_t len, uint32_t tag = 0) noexcept {
    if (len > max_record_) [[unlikely]] return tl::unexpected(Errc::TooLarge);
    if (tag == kPadTag) [[unlikely]] return tl::unexpected(Errc::InvalidArgument);
    const uint64_t span = record_span(len);
    uint64_t idx = tail_ & mask_;
    const uint64_t contig = capacity_ - idx;
    const uint64_t need = span <= contig ? span : contig + span;
    if (need > capacity_ - (tail_ - head_cache_)) [[unlikely]] {
      if (!refresh_head()) return tl::unexpected(Errc::Corrupt);
      if (need > capacity_ - (tail_ - head_cache_)) {
        ++stats_.would_block;
        return tl::unexpected(Errc::WouldBlock);
      }
    }
    if (span > contig) {  // does not fit before the end: pad to the end, start at 0
      write_header(idx, static_cast<uint32_t>(contig - kRecordHeaderSize), kPadTag, tail_);
      tail_ += contig;
      idx = 0;
    }
    claim_idx_ = idx;
    claim_tag_ = tag;
    return std::span<std::byte>(data_ + idx + kRecordHeaderSize, len);
  }

  /// Completes the claimed record with `len` bytes (at most what was claimed): a polling
  /// consumer sees it from now on. A sleeping consumer is woken only by publish().
  void commit(uint32_t len) noexcept {
    write_header(claim_idx_, len, claim_tag_, tail_);
    tail_ += record_span(len);
  }

  /// Ends a batch: stores the tail and wakes the consumer if it said it sleeps.
  void publish() noexcept {
    if (tail_ == published_) return;
    published_ = tail_;
    // seq_cst store. Pairs with the consumer's seq_cst store of consumer_sleeping and seq_cst
    // load of tail in arm_sleep(): one of the two sees the other, so a consumer never sleeps on
    // a record it was not woken for. (Records themselves are released by their commit word.)
    shared_->prod.tail.store(tail_, std::memory_order_seq_cst);
    // seq_cst load: the other half of that pairing (a relaxed load could pass the store above).
    if (shared_->sleep.consumer_sleeping.load(std::memory_order_seq_cst) != 0) [[unlikely]] {
      wake_consumer();
    }
  }

  /// claim + copy + commit + publish.
  [[nodiscard]] Result<void> try_write(std::span<const std::byte> rec, uint32_t tag = 0) noexcept {
    auto c = try_claim(static_cast<uint32_t>(rec.size()), tag);
    if (rec.size() > UINT32_MAX || !c) [[unlikely]] {
      return tl::unexpected(rec.size() > UINT32_MAX ? Errc::TooLarge : c.error());
    }
    if (!rec.empty()) std::memcpy(c->data(), rec.data(), rec.size());
    commit(static_cast<uint32_t>(rec.size()));
    publish();
    return {};
  }

  /// Writes records from `recs` (a range of byte spans) until one does not fit, publishes once,
  /// returns how many were written. Stops early on an error other than WouldBlock, which is
  /// then in `*err` (if given).
  template <class Range>
  size_t try_write_batch(const Range& recs, uint32_t tag = 0, Errc* err = nullptr) noexcept {
    size_t n = 0;
    for (const auto& r : recs) {
      const std::span<const std::byte> rec(r);
      auto c = try_claim(static_cast<uint32_t>(rec.size()), tag);
      if (!c) {
        if (err != nullptr) *err = c.error();
        break;
      }
      if (!rec.empty()) std::memcpy(c->data(), rec.data(), rec.size());
      commit(static_cast<uint32_t>(rec.size()));
      ++n;
    }
    publish();
    return n;
  }

  /// try_claim that waits while the ring is full, per `ws`, until `deadline`.
  /// Publishes pending records before it waits. Errors: as try_claim, and Timeout.
  [[nodiscard]] Result<std::span<std::byte>> claim(uint32_t len, const WaitStrategy& ws,
                                                   Deadline deadline = Deadline::never(),
                                                   uint32_t tag = 0) noexcept {
    auto c = try_claim(len, tag);
    if (c || c.error() != Errc::WouldBlock) [[likely]] return c;
    return claim_slow(len, ws, deadline, tag);
  }

  /// claim + copy + commit + publish, waiting while full.
  [[nodiscard]] Result<void> write(std::span<const std::byte> rec, const WaitStrategy& ws,
                                   Deadline deadline = Deadline::never(), uint32_t tag = 0) noexcept {
    if (rec.size() > max_record_) [[unlikely]] return tl::unexpected(Errc::TooLarge);
    auto c = claim(static_cast<uint32_t>(rec.size()), ws, deadline, tag);
    if (!c) [[unlikely]] return tl::unexpected(c.error());
    if (!rec.empty()) std::memcpy(c->data(), rec.data(), rec.size());
    commit(static_cast<uint32_t>(rec.size()));
    publish();
    return {};
  }

  /// For a thread that waits on many rings with epoll (busd): announce that this producer waits
  /// for room for a record of `len` bytes; false means the room is there now (do not sleep).
  /// After epoll reports the space eventfd readable, or when giving up, call disarm_space().
  [[nodiscard]] bool arm_space(uint32_t len) noexcept;
  void disarm_space() noexcept;

  /// Bytes committed and not yet released by the consumer (reads its head now).
  [[nodiscard]] uint64_t unconsumed() noexcept {
    (void)refresh_head();
    return tail_ - head_cache_;
  }

  [[nodiscard]] uint32_t max_record() const noexcept { return max_record_; }
  [[nodiscard]] uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] const EndpointStats& stats() const noexcept { return stats_; }
  /// Why the endpoint reported Corrupt, with the offending values.
  [[nodiscard]] const std::string& corruption() const noexcept { return corruption_; }
  [[nodiscard]] bool attached() const noexcept { return shared_ != nullptr; }

 private:
  void write_header(uint64_t idx, uint32_t len, uint32_t tag, uint64_t position) noexcept {
    auto* h = reinterpret_cast<RecordHeader*>(data_ + idx);
    h->length = len;
    h->tag = tag;
    // release: the payload, length and tag written before happen-before the consumer's acquire
    // load of this word in try_peek().
    std::atomic_ref<uint64_t>(h->commit).store(position + 1, std::memory_order_release);
  }
  bool refresh_head() noexcept;
  bool enough_room(uint64_t need) noexcept;
  [[nodiscard]] uint64_t room_needed(uint32_t len) const noexcept {
    const uint64_t span = record_span(len);
    const uint64_t contig = capacity_ - (tail_ & mask_);
    return span <= contig ? span : contig + span;
  }
  Result<std::span<std::byte>> claim_slow(uint32_t len, const WaitStrategy& ws, Deadline deadline,
                                          uint32_t tag) noexcept;
  void wake_consumer() noexcept;

  RingShared* shared_ = nullptr;
  std::byte* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint32_t max_record_ = 0;
  RingFds fds_{};
  // Private to this endpoint: never read back from shared memory.
  uint64_t tail_ = 0;        // end of committed records
  uint64_t published_ = 0;   // tail as last stored (for the sleep protocol)
  uint64_t head_cache_ = 0;  // last checked value of the consumer's head
  uint64_t claim_idx_ = 0;
  uint32_t claim_tag_ = 0;
  bool corrupt_ = false;
  EndpointStats stats_{};
  std::string corruption_;
};

/// A record as the consumer sees it: valid until advance().
struct Record {
  uint32_t tag = 0;
  std::span<const std::byte> data{};
};

class alignas(kFalseSharingRange) RingConsumer {
 public:
  RingConsumer() = default;
  [[nodiscard]] static Expected<RingConsumer> attach(std::span<std::byte> region,
                                                     RingFds fds = {});

  /// The next record, zero-copy, without consuming it. Errors: WouldBlock (empty), Corrupt.
  [[nodiscard]] Result<Record> try_peek() noexcept {
    if (corrupt_) [[unlikely]] return tl::unexpected(Errc::Corrupt);
    uint64_t idx = head_ & mask_;
    if (!committed(idx)) return tl::unexpected(Errc::WouldBlock);
    RecordHeader h = header_at(idx);  // read once: the writer may rewrite it later
    if (h.tag == kPadTag) [[unlikely]] {
      // A pad covers the rest of the buffer; an honest producer never pads from offset 0.
      const uint64_t contig = capacity_ - idx;
      if (idx == 0 || h.length != contig - kRecordHeaderSize) return corrupt_record(idx, h);
      head_ += contig;
      idx = 0;
      if (!committed(idx)) return tl::unexpected(Errc::WouldBlock);
      h = header_at(idx);
      if (h.tag == kPadTag) return corrupt_record(idx, h);
    }
    const uint64_t span = record_span(h.length);
    if (h.length > max_record_ || span > capacity_ - idx) [[unlikely]] {
      return corrupt_record(idx, h);
    }
    pending_ = span;
    return Record{h.tag, std::span<const std::byte>(data_ + idx + kRecordHeaderSize, h.length)};
  }

  /// Consumes the record returned by the last try_peek. Its space goes back to the producer at
  /// the next release().
  void advance() noexcept {
    head_ += pending_;
    pending_ = 0;
  }

  /// Hands consumed space back to the producer and wakes it if it waits for room.
  void release() noexcept {
    if (head_ == released_) return;
    released_ = head_;
    // seq_cst store. Release part: this side's reads of the consumed records happen-before the
    // producer's acquire load of head (refresh_head), so it never overwrites bytes still being
    // read. Sequential part: pairs with the producer's seq_cst store of producer_sleeping and
    // load of head in its sleep (see publish() for the mirror image).
    shared_->cons.head.store(head_, std::memory_order_seq_cst);
    if (shared_->sleep.producer_sleeping.load(std::memory_order_seq_cst) != 0) [[unlikely]] {
      wake_producer();
    }
  }

  /// Calls on_record(Record) for up to `max` records, then release() once. Returns how many
  /// were handled; Corrupt if the ring broke (the records before it were handled).
  template <class F>
  Result<size_t> poll(F&& on_record, size_t max = SIZE_MAX) noexcept(noexcept(on_record(Record{}))) {
    size_t n = 0;
    while (n < max) {
      auto r = try_peek();
      if (!r) {
        if (r.error() == Errc::WouldBlock) break;
        release();
        return tl::unexpected(r.error());
      }
      on_record(*r);
      advance();
      ++n;
    }
    release();
    return n;
  }

  /// Copies the next record into `out` and consumes it (release() still needed), for readers
  /// that verify what they read: the copy cannot change under the verifier. Returns the length;
  /// `*tag` gets the tag. Errors: WouldBlock, Corrupt, TooLarge (out is too small; the record is
  /// left in place).
  [[nodiscard]] Result<uint32_t> try_read_copy(std::span<std::byte> out,
                                               uint32_t* tag = nullptr) noexcept {
    auto r = try_peek();
    if (!r) return tl::unexpected(r.error());
    if (r->data.size() > out.size()) return tl::unexpected(Errc::TooLarge);
    if (!r->data.empty()) std::memcpy(out.data(), r->data.data(), r->data.size());
    if (tag != nullptr) *tag = r->tag;
    advance();
    return static_cast<uint32_t>(r->data.size());
  }

  /// Bytes the producer has published and this side has not released yet (for high-water
  /// marks; reads the producer's tail, so not for every message). 0 if the tail looks wrong.
  [[nodiscard]] uint64_t backlog() const noexcept {
    const uint64_t t = shared_->prod.tail.load(std::memory_order_acquire);
    return t - released_ <= capacity_ ? t - released_ : 0;
  }

  /// True when try_peek() will return a record (or Corrupt); looks past a pad. Does not
  /// change which record advance() consumes.
  [[nodiscard]] bool readable() noexcept {
    const uint64_t pending = pending_;
    auto r = try_peek();
    pending_ = pending;
    return r || r.error() != Errc::WouldBlock;
  }

  /// try_peek that waits while the ring is empty, per `ws`, until `deadline`.
  /// Errors: Timeout, Corrupt.
  [[nodiscard]] Result<Record> wait_peek(const WaitStrategy& ws,
                                         Deadline deadline = Deadline::never()) noexcept {
    auto r = try_peek();
    if (r || r.error() != Errc::WouldBlock) [[likely]] return r;
    // A reply already on its way arrives within these polls: keep them in the caller's code
    // (measured: going out of line for them costs ~25 ns per wait on these machines).
    if (ws.kind == WaitKind::Spin || ws.kind == WaitKind::Adaptive) {
      for (int i = 0; i < kInlinePolls; ++i) {
        cpu_relax();
        r = try_peek();
        if (r || r.error() != Errc::WouldBlock) return r;
      }
    }
    return wait_peek_slow(ws, deadline);
  }

  /// Waits until readable(), per `ws`, until `deadline`. Errors: Timeout.
  [[nodiscard]] Result<void> wait_readable(const WaitStrategy& ws,
                                           Deadline deadline = Deadline::never()) noexcept {
    auto r = wait_peek(ws, deadline);
    if (!r && r.error() == Errc::Timeout) return tl::unexpected(Errc::Timeout);
    return {};
  }

  /// For one thread waiting on many rings with epoll: announce the sleep; false means a record
  /// arrived meanwhile (do not sleep). After epoll reports the data eventfd readable, or when
  /// giving up, call disarm().
  [[nodiscard]] bool arm_sleep() noexcept;
  void disarm() noexcept;
  /// Part of arm_sleep (and of a broadcast log reader's): given the tail `t` just loaded
  /// (seq_cst, after announcing the sleep), true when this side must stay awake: a record is
  /// committed at head, or the ring is Corrupt. A tail published beyond head with no record
  /// there is a producer's lie: the ring becomes Corrupt (try_peek says so).
  [[nodiscard]] bool awake_for_tail(uint64_t t) noexcept;

  [[nodiscard]] uint32_t max_record() const noexcept { return max_record_; }
  [[nodiscard]] uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] const EndpointStats& stats() const noexcept { return stats_; }
  [[nodiscard]] const std::string& corruption() const noexcept { return corruption_; }
  [[nodiscard]] bool attached() const noexcept { return shared_ != nullptr; }
  /// Bytes consumed so far (advance()d, released or not): a broadcast log's reader (log.hpp)
  /// stores it in its own line instead of calling release().
  [[nodiscard]] uint64_t position() const noexcept { return head_; }

 private:
  // acquire: pairs with the release store of the commit word in RingProducer::write_header():
  // the record's length, tag and payload are complete once we see its commit.
  [[nodiscard]] bool committed(uint64_t idx) const noexcept {
    auto& word = const_cast<RecordHeader*>(reinterpret_cast<const RecordHeader*>(data_ + idx))->commit;
    return std::atomic_ref<uint64_t>(word).load(std::memory_order_acquire) == head_ + 1;
  }
  [[nodiscard]] RecordHeader header_at(uint64_t idx) const noexcept {
    RecordHeader h;
    std::memcpy(&h, data_ + idx, offsetof(RecordHeader, commit));
    h.commit = head_ + 1;
    return h;
  }
  tl::unexpected<Errc> corrupt_record(uint64_t idx, RecordHeader h) noexcept;
  void wake_producer() noexcept;
  Result<Record> wait_peek_slow(const WaitStrategy& ws, Deadline deadline) noexcept;

  RingShared* shared_ = nullptr;
  const std::byte* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint32_t max_record_ = 0;
  RingFds fds_{};
  // Private to this endpoint: never read back from shared memory.
  uint64_t head_ = 0;        // start of the next unconsumed record
  uint64_t released_ = 0;    // head as last stored
  uint64_t pending_ = 0;     // span of the peeked record
  bool corrupt_ = false;
  EndpointStats stats_{};
  std::string corruption_;
};

}  // namespace bus::shm
