// Two-party stress of the ring: millions of records of random sizes, each carrying its sequence
// number and a checksum, between two threads and between two processes, under each wait
// strategy. The consumer checks that nothing is lost, duplicated, reordered or torn.
// Spins on at most two threads (this runs on 2 cores): not parallel with other tests.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "../support/heap_ring.hpp"
#include "../support/scale.hpp"
#include "bus/clock.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"

using namespace bus;
using namespace bus::shm;

namespace {

constexpr uint64_t kSec = 1'000'000'000;

// xorshift64*: the producer and the consumer draw the same sizes from the same seed.
struct Rng {
  uint64_t s;
  uint64_t next() noexcept {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

uint64_t fnv1a(const std::byte* p, size_t n) noexcept {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint64_t>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

// Record layout: [seq u64][checksum u64 of the body][body...], at least 16 bytes; the body is
// filled from the sequence number so that a torn or stale record fails the checksum.
constexpr uint32_t kMinRecord = 16;

void fill(std::span<std::byte> rec, uint64_t seq) noexcept {
  std::byte* body = rec.data() + 16;
  const size_t n = rec.size() - 16;
  for (size_t i = 0; i < n; ++i) body[i] = static_cast<std::byte>((seq >> (i % 8)) + i);
  const uint64_t sum = fnv1a(body, n);
  std::memcpy(rec.data(), &seq, 8);
  std::memcpy(rec.data() + 8, &sum, 8);
}

struct Outcome {
  uint64_t received = 0;
  uint64_t bad_seq = 0;
  uint64_t bad_len = 0;
  uint64_t bad_sum = 0;
  uint64_t errors = 0;
};

void produce(RingProducer& p, uint64_t count, uint32_t max_len, uint64_t seed,
             const WaitStrategy& ws, bool batch) {
  Rng rng{seed};
  const Deadline deadline = Deadline::at(clock::mono_ns() + 120 * kSec);
  for (uint64_t seq = 0; seq < count; ++seq) {
    const auto len = static_cast<uint32_t>(kMinRecord + rng.next() % (max_len - kMinRecord + 1));
    auto c = p.claim(len, ws, deadline);
    if (!c) return;  // the consumer reports the shortfall
    fill(*c, seq);
    p.commit(len);
    // Batched: publish every 16 records (and before any wait, which claim() does itself).
    if (!batch || seq % 16 == 15) p.publish();
  }
  p.publish();
}

Outcome consume(RingConsumer& c, uint64_t count, uint32_t max_len, uint64_t seed,
                const WaitStrategy& ws) {
  Rng rng{seed};
  Outcome o;
  const Deadline deadline = Deadline::at(clock::mono_ns() + 120 * kSec);
  while (o.received < count) {
    if (!c.wait_readable(ws, deadline)) {
      ++o.errors;
      break;
    }
    auto n = c.poll([&](const Record& r) {
      const auto expect_len =
          static_cast<uint32_t>(kMinRecord + rng.next() % (max_len - kMinRecord + 1));
      uint64_t seq = 0;
      uint64_t sum = 0;
      if (r.data.size() != expect_len || r.data.size() < kMinRecord) {
        ++o.bad_len;
      } else {
        std::memcpy(&seq, r.data.data(), 8);
        std::memcpy(&sum, r.data.data() + 8, 8);
        if (seq != o.received) ++o.bad_seq;
        if (sum != fnv1a(r.data.data() + 16, r.data.size() - 16)) ++o.bad_sum;
      }
      ++o.received;
    });
    if (!n) {
      ++o.errors;
      break;
    }
  }
  return o;
}

void check(const Outcome& o, uint64_t count) {
  CHECK(o.errors == 0);
  CHECK(o.received == count);
  CHECK(o.bad_len == 0);
  CHECK(o.bad_seq == 0);
  CHECK(o.bad_sum == 0);
}

struct Fds {
  EventFd data = *EventFd::create();
  EventFd space = *EventFd::create();
  RingFds ring() const { return {data.fd(), space.fd()}; }
};

}  // namespace

TEST_CASE("two threads: millions of records, nothing lost, duplicated, reordered or torn",
          "[ring][stress]") {
  struct Case {
    const char* name;
    WaitStrategy ws;
    uint64_t capacity;
    uint32_t max_len;
    bool batch;
  };
  const Case cases[] = {
      {"spin, small ring, sizes 16..1000", WaitStrategy::spin(), 1 << 14, 1000, false},
      {"adaptive, batched, sizes 16..4000", WaitStrategy::adaptive(), 1 << 16, 4000, true},
      {"block, sizes 16..256", WaitStrategy::block(), 1 << 12, 256, true},
      {"yield, sizes 16..64", WaitStrategy::yield(), 1 << 12, 64, false},
  };
  for (const auto& k : cases) {
    SECTION(k.name) {
      // ~1 GB through the ring per case at most (the checksums cost more than the ring).
      const uint64_t count = bus::test::scaled(
          std::min<uint64_t>(k.ws.kind == WaitKind::Block ? 300'000 : 2'000'000, 2'000'000'000 / k.max_len));
      bus::test::HeapRing r(k.capacity);
      Fds fds;
      auto p = r.producer(fds.ring());
      auto c = r.consumer(fds.ring());
      const uint64_t seed = 0x1234'5678 + k.capacity;
      std::thread prod([&] { produce(p, count, k.max_len, seed, k.ws, k.batch); });
      const Outcome o = consume(c, count, k.max_len, seed, k.ws);
      prod.join();
      INFO(k.name << ": " << o.received << " of " << count);
      check(o, count);
    }
  }
}

TEST_CASE("two processes over a memfd segment", "[ring][stress]") {
  const uint64_t count = bus::test::scaled(2'000'000);
  constexpr uint64_t kCap = 1 << 16;
  constexpr uint32_t kMax = 2000;
  constexpr uint64_t kSeed = 42;
  auto seg = Segment::create_memfd("stress", ring_bytes(kCap));
  REQUIRE(seg);
  REQUIRE(format_ring(seg->bytes(), kCap));
  Fds fds;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Consumer process: maps the segment afresh from the fd, as an agent would.
    auto mine = Segment::attach_fd(::dup(seg->fd()), ring_bytes(kCap));
    if (!mine) ::_exit(10);
    auto c = RingConsumer::attach(mine->bytes(), fds.ring());
    if (!c) ::_exit(11);
    const Outcome o = consume(*c, count, kMax, kSeed, WaitStrategy::adaptive());
    const bool good = o.errors == 0 && o.received == count && o.bad_len == 0 && o.bad_seq == 0 &&
                      o.bad_sum == 0;
    ::_exit(good ? 0 : 12);
  }
  auto p = RingProducer::attach(seg->bytes(), fds.ring());
  REQUIRE(p);
  produce(*p, count, kMax, kSeed, WaitStrategy::adaptive(), true);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("block ping-pong never loses a wake-up", "[ring][stress]") {
  // Both sides sleep whenever they wait: every round trip goes through the sleep/wake protocol.
  // A lost wake-up shows as a Timeout (each wait has a 10 s deadline).
  const uint64_t rounds = bus::test::scaled(30'000);
  bus::test::HeapRing ping(4096);
  bus::test::HeapRing pong(4096);
  Fds f1;
  Fds f2;
  auto p1 = ping.producer(f1.ring());
  auto c1 = ping.consumer(f1.ring());
  auto p2 = pong.producer(f2.ring());
  auto c2 = pong.consumer(f2.ring());
  const auto ws = WaitStrategy::block();
  uint64_t echo_errors = 0;
  std::thread echo([&] {
    std::array<std::byte, 8> buf{};
    for (uint64_t i = 0; i < rounds; ++i) {
      if (!c1.wait_readable(ws, Deadline::after(10 * kSec)) || !c1.try_read_copy(buf)) {
        ++echo_errors;
        return;
      }
      c1.release();
      if (!p2.write(buf, ws, Deadline::after(10 * kSec))) {
        ++echo_errors;
        return;
      }
    }
  });
  uint64_t timeouts = 0;
  uint64_t mismatches = 0;
  std::array<std::byte, 8> buf{};
  for (uint64_t i = 0; i < rounds && timeouts == 0; ++i) {
    std::memcpy(buf.data(), &i, 8);
    if (!p1.write(buf, ws, Deadline::after(10 * kSec))) {
      ++timeouts;
      break;
    }
    if (!c2.wait_readable(ws, Deadline::after(10 * kSec))) {
      ++timeouts;
      break;
    }
    std::array<std::byte, 8> back{};
    if (!c2.try_read_copy(back) || std::memcmp(back.data(), buf.data(), 8) != 0) ++mismatches;
    c2.release();
  }
  echo.join();
  CHECK(timeouts == 0);
  CHECK(echo_errors == 0);
  CHECK(mismatches == 0);
  // It really did sleep and wake (not just spin through).
  CHECK(c2.stats().sleeps + c1.stats().sleeps > 0);
  CHECK(p1.stats().wakes_sent + p2.stats().wakes_sent > 0);
}
