// Slow paths of the ring: attach checks, index validation, sleeping and waking.
#include "shm/ring.hpp"

#include <new>

#include "bus/clock.hpp"

namespace bus::shm {
namespace {

bool is_pow2(uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

std::string num(uint64_t v) { return std::to_string(v); }

// The loop shared by both endpoints' waits, entered after a first poll found nothing.
// ready() polls the ring; sleep_once(deadline_ns) announces the sleep, re-checks and sleeps on
// the eventfd (false: timed out). Returns false when the deadline passed.
// The clock is read only every 64 polls, and first after 64: a wait that ends within its first
// polls (a reply already on its way) costs no clock reading. Spin time and relative deadlines
// count from that first reading.
template <class Ready, class Sleep>
bool wait_loop(const WaitStrategy& ws, Deadline& deadline, bool can_sleep, Ready&& ready,
               Sleep&& sleep_once) noexcept {
  WaitKind kind = ws.kind;
  if (!can_sleep && (kind == WaitKind::Adaptive || kind == WaitKind::Block)) {
    kind = WaitKind::Yield;  // no eventfd: never sleep blind
  }
  if (kind == WaitKind::Block) {
    const uint64_t deadline_ns = deadline.resolve();
    for (;;) {
      if (!sleep_once(deadline_ns)) return ready();
      if (ready()) return true;
      // Woken or not allowed to sleep without a record: the deadline still holds.
      if (deadline_ns != kForever && clock::mono_ns() >= deadline_ns) return false;
    }
  }
  uint64_t start = 0;
  for (uint32_t i = 1;; ++i) {
    if (kind == WaitKind::Yield) {
      sched_yield();
    } else {
      cpu_relax();
    }
    if (ready()) return true;
    if ((i & 63) != 0) continue;
    // Adaptive spins politely: every 64 polls it offers the CPU to a runnable task. Where
    // parties outnumber cores (three on two here), a woken party otherwise waits for a
    // spinner's whole spin phase before it runs; measured by busbench pingpong.
    if (kind == WaitKind::Adaptive) sched_yield();
    const uint64_t now = clock::mono_ns();
    if (start == 0) start = now;
    const uint64_t deadline_ns = deadline.resolve();
    if (now >= deadline_ns) return false;
    if (kind == WaitKind::Adaptive && now - start >= ws.spin_ns) {
      if (!sleep_once(deadline_ns)) return ready();
      if (ready()) return true;
    }
  }
}

}  // namespace

Expected<void> format_ring(std::span<std::byte> region, uint64_t capacity, uint32_t max_record, Zeroed zeroed) {
  if (!is_pow2(capacity) || capacity < kMinCapacity || capacity > kMaxCapacity) {
    return fail(Errc::InvalidArgument, "ring capacity " + num(capacity) +
                                           " must be a power of two in [" + num(kMinCapacity) +
                                           ", " + num(kMaxCapacity) + "]");
  }
  if (max_record == 0) max_record = max_record_for(capacity);
  if (max_record > max_record_for(capacity)) {
    return fail(Errc::InvalidArgument, "max record " + num(max_record) + " exceeds " +
                                           num(max_record_for(capacity)) + " for capacity " +
                                           num(capacity));
  }
  if (region.size() < ring_bytes(capacity)) {
    return fail(Errc::InvalidArgument, "ring region of " + num(region.size()) +
                                           " bytes is smaller than " + num(ring_bytes(capacity)));
  }
  if (reinterpret_cast<uintptr_t>(region.data()) % kFalseSharingRange != 0) {
    return fail(Errc::InvalidArgument, "ring region is not 128-byte aligned");
  }
  // Zero the records: a commit word left over in reused memory (an earlier ring, an earlier
  // format) could otherwise equal a position of this ring and read as a record.
  if (zeroed == Zeroed::no) std::memset(region.data() + kDataOffset, 0, capacity);
  auto* s = new (region.data()) RingShared{};
  s->desc.layout_version = kRingLayoutVersion;
  s->desc.data_offset = static_cast<uint32_t>(kDataOffset);
  s->desc.capacity = capacity;
  s->desc.max_record = max_record;
  s->prod.tail.store(0, std::memory_order_relaxed);
  s->cons.head.store(0, std::memory_order_relaxed);
  s->sleep.consumer_sleeping.store(0, std::memory_order_relaxed);
  s->sleep.producer_sleeping.store(0, std::memory_order_relaxed);
  // The magic goes last: a ring is only valid once everything else is in place. Attachers get
  // the region after it is formatted (fd passing synchronizes), so a plain store suffices.
  s->desc.magic = kRingMagic;
  return {};
}

Expected<RingGeometry> check_ring(std::span<const std::byte> region) {
  if (region.size() < kDataOffset) {
    return fail(Errc::Corrupt, "ring region of " + num(region.size()) + " bytes has no header");
  }
  if (reinterpret_cast<uintptr_t>(region.data()) % kFalseSharingRange != 0) {
    return fail(Errc::InvalidArgument, "ring region is not 128-byte aligned");
  }
  RingDescriptor d;
  std::memcpy(&d, region.data(), sizeof d);  // one snapshot; checked and used from here on
  if (d.magic != kRingMagic) return fail(Errc::Corrupt, "not a busd ring (bad magic)");
  if (d.layout_version != kRingLayoutVersion) {
    return fail(Errc::VersionMismatch, "ring layout version " + num(d.layout_version) +
                                           ", this build speaks " + num(kRingLayoutVersion));
  }
  if (d.data_offset != kDataOffset) {
    return fail(Errc::Corrupt, "ring data offset " + num(d.data_offset) + ", expected " +
                                   num(kDataOffset));
  }
  if (!is_pow2(d.capacity) || d.capacity < kMinCapacity || d.capacity > kMaxCapacity) {
    return fail(Errc::Corrupt, "ring capacity " + num(d.capacity) + " is invalid");
  }
  if (d.max_record == 0 || d.max_record > max_record_for(d.capacity)) {
    return fail(Errc::Corrupt, "ring max record " + num(d.max_record) + " is invalid for capacity " +
                                   num(d.capacity));
  }
  if (region.size() < ring_bytes(d.capacity)) {
    return fail(Errc::Corrupt, "ring of capacity " + num(d.capacity) + " needs " +
                                   num(ring_bytes(d.capacity)) + " bytes, region has " +
                                   num(region.size()));
  }
  return RingGeometry{d.capacity, d.max_record};
}

// ---------------------------------------------------------------- producer

Expected<RingProducer> RingProducer::attach(std::span<std::byte> region, RingFds fds) {
  auto g = check_ring(region);
  if (!g) return tl::unexpected(g.error().context("attaching ring producer"));
  RingProducer p;
  p.shared_ = reinterpret_cast<RingShared*>(region.data());
  p.data_ = region.data() + kDataOffset;
  p.capacity_ = g->capacity;
  p.mask_ = g->capacity - 1;
  p.max_record_ = g->max_record;
  p.fds_ = fds;
  // Resume where the ring stands (a producer may re-attach). The consumer may have rewritten
  // either index; check them like any other read.
  const uint64_t tail = p.shared_->prod.tail.load(std::memory_order_acquire);
  const uint64_t head = p.shared_->cons.head.load(std::memory_order_acquire);
  if (tail % kRecordAlign != 0 || head % kRecordAlign != 0 ||
      (tail - head > g->capacity && head - tail > g->capacity)) {
    return fail(Errc::Corrupt, "attaching ring producer: indices head " + num(head) + " tail " +
                                   num(tail) + " are inconsistent");
  }
  // A consumer may have read records committed after the last publish: resume after them.
  p.tail_ = p.published_ = head - tail <= g->capacity ? head : tail;
  p.head_cache_ = head;
  return p;
}

bool RingProducer::refresh_head() noexcept {
  if (corrupt_) return false;
  // acquire: pairs with the consumer's seq_cst (release) store in release(): its reads of the
  // records before head are done, their bytes may be overwritten now.
  const uint64_t h = shared_->cons.head.load(std::memory_order_acquire);
  // A valid head moved forward from the last one seen, by whole records, and not past what was
  // committed.
  if (h - head_cache_ > tail_ - head_cache_ || h % kRecordAlign != 0) [[unlikely]] {
    corrupt_ = true;
    corruption_ = "consumer head " + num(h) + " outside [" + num(head_cache_) + ", " +
                  num(tail_) + "]";
    return false;
  }
  head_cache_ = h;
  return true;
}

bool RingProducer::enough_room(uint64_t need) noexcept {
  if (!refresh_head()) return true;  // let try_claim report Corrupt
  return need <= capacity_ - (tail_ - head_cache_);
}

void RingProducer::wake_consumer() noexcept {
  // exchange: one wake per announced sleep, even if the flag stays set by a hostile consumer.
  if (shared_->sleep.consumer_sleeping.exchange(0, std::memory_order_acq_rel) != 0 &&
      fds_.data >= 0) {
    wake::signal(fds_.data);
    ++stats_.wakes_sent;
  }
}

Result<std::span<std::byte>> RingProducer::claim_slow(uint32_t len, const WaitStrategy& ws,
                                                      Deadline deadline, uint32_t tag) noexcept {
  publish();  // the consumer must see what is pending, or it will never make room
  const uint64_t need = room_needed(len);
  auto ready = [&] { return enough_room(need); };
  auto sleep_once = [&](uint64_t until) {
    // seq_cst store then seq_cst load of head: pairs with the consumer's release() (its seq_cst
    // store of head, then seq_cst load of this flag).
    shared_->sleep.producer_sleeping.store(1, std::memory_order_seq_cst);
    const uint64_t h = shared_->cons.head.load(std::memory_order_seq_cst);
    bool slept = true;
    if (need > capacity_ - (tail_ - h) && !corrupt_) {
      ++stats_.sleeps;
      slept = wake::sleep_until(fds_.space, until);
      wake::drain(fds_.space);
    }
    shared_->sleep.producer_sleeping.store(0, std::memory_order_relaxed);
    return slept;
  };
  if (!wait_loop(ws, deadline, fds_.space >= 0, ready, sleep_once)) {
    return tl::unexpected(Errc::Timeout);
  }
  return try_claim(len, tag);
}

bool RingProducer::arm_space(uint32_t len) noexcept {
  publish();
  const uint64_t need = room_needed(len);
  // seq_cst store then seq_cst load of head: pairs with the consumer's release(), as in
  // claim_slow(). Either it sees the flag and signals the space eventfd, or we see its head.
  shared_->sleep.producer_sleeping.store(1, std::memory_order_seq_cst);
  const uint64_t h = shared_->cons.head.load(std::memory_order_seq_cst);
  if (corrupt_ || need <= capacity_ - (tail_ - h)) {
    shared_->sleep.producer_sleeping.store(0, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void RingProducer::disarm_space() noexcept {
  shared_->sleep.producer_sleeping.store(0, std::memory_order_relaxed);
  if (fds_.space >= 0) wake::drain(fds_.space);
}

// ---------------------------------------------------------------- consumer

Expected<RingConsumer> RingConsumer::attach(std::span<std::byte> region, RingFds fds) {
  auto g = check_ring(region);
  if (!g) return tl::unexpected(g.error().context("attaching ring consumer"));
  RingConsumer c;
  c.shared_ = reinterpret_cast<RingShared*>(region.data());
  c.data_ = region.data() + kDataOffset;
  c.capacity_ = g->capacity;
  c.mask_ = g->capacity - 1;
  c.max_record_ = g->max_record;
  c.fds_ = fds;
  const uint64_t head = c.shared_->cons.head.load(std::memory_order_acquire);
  if (head % kRecordAlign != 0) {
    return fail(Errc::Corrupt, "attaching ring consumer: head " + num(head) + " is misaligned");
  }
  c.head_ = c.released_ = head;
  return c;
}

bool RingConsumer::awake_for_tail(uint64_t t) noexcept {
  if (corrupt_ || committed(head_ & mask_)) return true;
  // Seeing the tail, we see every record committed before it (the tail store releases them):
  // a tail published beyond head with nothing committed at head comes from no honest producer.
  // Staying awake for it would let one store keep this side spinning; sleeping on it would
  // leave a ring that never moves again (its producer is stuck behind the missing record).
  if (t - head_ - 1 < capacity_) {  // 0 < t - head_ <= capacity
    corrupt_ = true;
    corruption_ = "tail " + num(t) + " published beyond head " + num(head_) + " with no record committed at head";
    return true;
  }
  return false;
}

tl::unexpected<Errc> RingConsumer::corrupt_record(uint64_t idx, RecordHeader h) noexcept {
  corrupt_ = true;
  corruption_ = "record at offset " + num(idx) + " (head " + num(head_) + ") has length " +
                num(h.length) + " tag " + num(h.tag) + ": " +
                (h.tag == kPadTag ? "a pad must run from a non-zero offset to the end of the buffer"
                                  : "beyond max record " + num(max_record_) +
                                        " or the end of the buffer");
  return tl::unexpected(Errc::Corrupt);
}

void RingConsumer::wake_producer() noexcept {
  if (shared_->sleep.producer_sleeping.exchange(0, std::memory_order_acq_rel) != 0 &&
      fds_.space >= 0) {
    wake::signal(fds_.space);
    ++stats_.wakes_sent;
  }
}

bool RingConsumer::arm_sleep() noexcept {
  // seq_cst store then seq_cst load of tail: pairs with publish() (seq_cst store of tail, then
  // seq_cst load of this flag). Either publish() sees the flag and wakes us, or we see its tail.
  // head may be ahead of the tail (records are visible on commit, before their publish): that
  // is no reason to stay awake, the next publish() will see the flag.
  shared_->sleep.consumer_sleeping.store(1, std::memory_order_seq_cst);
  const uint64_t t = shared_->prod.tail.load(std::memory_order_seq_cst);
  if (awake_for_tail(t)) {
    shared_->sleep.consumer_sleeping.store(0, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void RingConsumer::disarm() noexcept {
  shared_->sleep.consumer_sleeping.store(0, std::memory_order_relaxed);
  if (fds_.data >= 0) wake::drain(fds_.data);
}

Result<Record> RingConsumer::wait_peek_slow(const WaitStrategy& ws, Deadline deadline) noexcept {
  // The poll is one load of the commit word at head: nothing is built per spin.
  auto ready = [&] { return corrupt_ || committed(head_ & mask_); };
  auto sleep_once = [&](uint64_t until) {
    if (!arm_sleep()) return true;
    ++stats_.sleeps;
    const bool woke = wake::sleep_until(fds_.data, until);
    disarm();
    return woke;
  };
  for (;;) {
    if (!wait_loop(ws, deadline, fds_.data >= 0, ready, sleep_once)) {
      return tl::unexpected(Errc::Timeout);
    }
    auto r = try_peek();
    if (r || r.error() != Errc::WouldBlock) return r;
    // A pad whose record is still being written: try_peek stepped over the pad; wait on.
  }
}

}  // namespace bus::shm
