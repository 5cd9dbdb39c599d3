// The broadcast log (shm/log.hpp): every reader gets every record once, in order; the slowest
// reader holds the writer back; a reader that breaks the rules stops counting; sleep and wake.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "../../support/scale.hpp"
#include "shm/log.hpp"

using namespace bus;
using namespace bus::shm;
using namespace bus::shm::log;

namespace {

struct HeapLog {
  std::vector<uint64_t> mem;  // 8-byte aligned; the log is 128-aligned inside
  std::span<std::byte> region;
  explicit HeapLog(uint32_t readers, uint64_t capacity) {
    const size_t n = log_bytes(readers, capacity);
    mem.assign((n + 256) / 8, 0);
    auto* p = reinterpret_cast<std::byte*>(mem.data());
    const auto mis = reinterpret_cast<uintptr_t>(p) % 128;
    region = std::span<std::byte>(p + (mis ? 128 - mis : 0), n);
    std::vector<uint32_t> ids(readers);
    for (uint32_t i = 0; i < readers; ++i) ids[i] = 10 + i;
    REQUIRE(format_log(region, 7, 1, ids, capacity, Zeroed::yes));
  }
};

uint64_t seq_of(const Record& r) {
  uint64_t s = 0;
  std::memcpy(&s, r.data.data(), 8);
  return s;
}

}  // namespace

TEST_CASE("a log: each reader reads every record once, in order, at its own pace", "[ring][log]") {
  HeapLog l(3, 4096);
  auto w = LogWriter::attach(l.region, {-1, -1, -1}, -1);
  REQUIRE(w);
  std::vector<LogReader> rs;
  for (uint32_t i = 0; i < 3; ++i) {
    auto r = LogReader::attach(l.region, i, -1, -1);
    REQUIRE(r);
    rs.push_back(std::move(*r));
  }
  std::vector<uint64_t> next(3, 0);
  uint64_t written = 0;
  // Reader 2 reads only every third round: it holds the writer back, the others do not wait.
  for (int round = 0; round < 300; ++round) {
    for (;;) {
      auto c = w->try_claim(40, 5);
      if (!c) {
        REQUIRE(c.error() == Errc::WouldBlock);
        break;
      }
      std::memset(c->data(), 0, 40);
      std::memcpy(c->data(), &written, 8);
      w->commit(40);
      ++written;
    }
    w->publish();
    for (uint32_t i = 0; i < 3; ++i) {
      if (i == 2 && round % 3 != 0) continue;
      for (;;) {
        auto rec = rs[i].try_peek();
        if (!rec) {
          REQUIRE(rec.error() == Errc::WouldBlock);
          break;
        }
        REQUIRE(rec->tag == 5);
        REQUIRE(seq_of(*rec) == next[i]);
        ++next[i];
        rs[i].advance();
      }
      rs[i].release();
    }
  }
  CHECK(written > 1000);  // wrapped many times
  CHECK(next[0] == written);
  CHECK(next[1] == written);
  // The writer never got more than a log's worth ahead of the slowest reader.
  CHECK(next[2] + 4096 / 64 >= written);
}

TEST_CASE("a log: a reader storing a position it cannot have is no longer waited for", "[ring][log]") {
  HeapLog l(2, 4096);
  auto w = LogWriter::attach(l.region, {-1, -1}, -1);
  auto good = LogReader::attach(l.region, 0, -1, -1);
  REQUIRE((w && good));
  auto parts = check_log(l.region);
  REQUIRE(parts);
  parts->lines[1].head.store(12345 * 16 + 8, std::memory_order_relaxed);  // misaligned: a liar
  uint64_t written = 0, read = 0;
  for (int i = 0; i < 2000; ++i) {
    auto c = w->try_claim(8, 1);
    if (c) {
      std::memcpy(c->data(), &written, 8);
      w->commit(8);
      ++written;
      w->publish();
    }
    while (auto rec = good->try_peek()) {
      REQUIRE(seq_of(*rec) == read);
      ++read;
      good->advance();
    }
    good->release();
  }
  CHECK(written == 2000);  // the liar held nothing back
  CHECK(read == 2000);
}

TEST_CASE("a log: threads, sleeping readers woken, a slow one holds the writer back (block)", "[ring][log]") {
  constexpr uint32_t kReaders = 3;
  const uint64_t n = bus::test::scaled(200000);
  HeapLog l(kReaders, 1 << 14);
  std::vector<int> fds;
  for (uint32_t i = 0; i <= kReaders; ++i) fds.push_back(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  const int space = fds[kReaders];
  auto w = LogWriter::attach(l.region, std::vector<int>(fds.begin(), fds.begin() + kReaders), space);
  REQUIRE(w);
  std::atomic<uint64_t> bad{0};
  std::vector<uint64_t> got(kReaders, 0);
  std::vector<std::thread> readers;
  for (uint32_t i = 0; i < kReaders; ++i) {
    readers.emplace_back([&, i] {
      auto r = LogReader::attach(l.region, i, fds[i], space);
      if (!r) {
        ++bad;
        return;
      }
      uint64_t next = 0;
      while (next < n) {
        auto rec = r->try_peek();
        if (!rec) {
          if (rec.error() != Errc::WouldBlock) {
            ++bad;
            return;
          }
          r->release();
          // Sleep (blocking readers: every wake-up path is exercised); reader 2 also dawdles.
          if (r->arm_sleep()) {
            pollfd p{fds[i], POLLIN, 0};
            (void)::poll(&p, 1, 100);
            r->disarm();
          }
          continue;
        }
        if (i == 2 && next == 0) {
          // The slow reader holds its first record until the writer has had to wait for it (the
          // writer fills the 16 KiB log long before; bounded, so a bug fails below, not hangs).
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
          while (w->shared()->would_block.load() == 0 && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (seq_of(*rec) != next) ++bad;
        ++next;
        r->advance();
        if (i == 2 && next % 4096 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      r->release();
      got[i] = next;
    });
  }
  for (uint64_t s = 0; s < n; ++s) {
    auto c = w->claim(24, WaitStrategy::block(), Deadline::after(10'000'000'000ull), 1);
    REQUIRE(c);
    std::memcpy(c->data(), &s, 8);
    w->commit(24);
    if (s % 8 == 7) w->publish();
  }
  w->publish();
  for (auto& t : readers) t.join();
  CHECK(bad.load() == 0);
  for (uint32_t i = 0; i < kReaders; ++i) CHECK(got[i] == n);
  CHECK(w->shared()->would_block.load() > 0);  // the slow reader made the writer wait
  for (int fd : fds) ::close(fd);
}

TEST_CASE("a log: a tail published past a reader with no record behind it is a lie: Corrupt", "[ring][log]") {
  HeapLog l(1, 4096);
  auto w = LogWriter::attach(l.region, {-1}, -1);
  auto r = LogReader::attach(l.region, 0, -1, -1);
  REQUIRE((w && r));
  auto parts = check_log(l.region);
  REQUIRE(parts);
  auto* ring = reinterpret_cast<RingShared*>(parts->ring.data());
  // A record the writer really commits and publishes: the reader stays awake for it.
  auto c = w->try_claim(8, 1);
  REQUIRE(c);
  std::memset(c->data(), 7, 8);
  w->commit(8);
  w->publish();
  CHECK_FALSE(r->arm_sleep());
  r->disarm();
  REQUIRE(r->try_peek());
  r->advance();
  r->release();
  CHECK(r->arm_sleep());  // nothing more: it sleeps
  r->disarm();
  ring->prod.tail.store(ring->prod.tail.load() + 64, std::memory_order_seq_cst);  // nothing behind it
  CHECK(r->try_peek().error() == Errc::WouldBlock);
  CHECK_FALSE(r->arm_sleep());  // found when it goes to sleep
  r->disarm();
  CHECK(r->try_peek().error() == Errc::Corrupt);
  CHECK(r->corruption().find("published beyond head") != std::string::npos);
}
