// A ring whose other side is hostile: it rewrites indices, lengths and records that were
// already committed. The reader must report Corrupt and never touch memory outside the ring
// (the ring lives in an exactly-sized heap block, so AddressSanitizer sees any stray access).
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "../../support/heap_ring.hpp"
#include "shm/ring.hpp"

using namespace bus;
using namespace bus::shm;
using bus::test::bytes_of;
using bus::test::HeapRing;
using bus::test::text_of;

namespace {

// Rewrites length and tag of the header at `idx`, keeping its commit word.
void put_header(HeapRing& r, uint64_t idx, uint32_t len, uint32_t tag) {
  const uint32_t words[2] = {len, tag};
  std::memcpy(r.data() + idx, words, sizeof words);
}

void expect_corrupt(RingConsumer& c, const char* what) {
  INFO(what);
  auto rec = c.try_peek();
  REQUIRE_FALSE(rec);
  CHECK(rec.error() == Errc::Corrupt);
  CHECK_FALSE(c.corruption().empty());
  // Sticky: a broken ring stays broken.
  CHECK(c.try_peek().error() == Errc::Corrupt);
  CHECK(c.readable());
}

}  // namespace

TEST_CASE("a forged tail makes nothing readable that was not committed", "[ring][hostile]") {
  // The consumer learns of records from their commit words; the tail only decides whether it
  // may sleep. Junk there never exposes bytes; a tail published beyond head with no record
  // there is a lie the consumer finds when it goes to sleep.
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  REQUIRE(p.try_write(bytes_of("ok")));
  for (uint64_t junk : {uint64_t{4096 + 16}, ~uint64_t{0} - 15, uint64_t{0}, uint64_t{13}}) {
    r.shared().prod.tail.store(junk);
    CHECK(c.readable());
    CHECK(text_of(c.try_peek()->data) == "ok");
  }
  c.advance();
  c.release();
  r.shared().prod.tail.store(4096);
  CHECK(c.try_peek().error() == Errc::WouldBlock);  // nothing committed at head
  // Junk far from head: no reason to stay awake.
  r.shared().prod.tail.store(c.position() + 3 * 4096);
  CHECK(c.arm_sleep());
  c.disarm();
  REQUIRE(p.try_write(bytes_of("still works")));
  CHECK(text_of(c.try_peek()->data) == "still works");
  c.advance();
  c.release();
  // Published beyond head with nothing committed there: the producer lied, the ring stops
  // (staying awake for it would spin; sleeping would leave the ring stuck for good).
  r.shared().prod.tail.store(c.position() + 16);
  CHECK(c.try_peek().error() == Errc::WouldBlock);
  CHECK_FALSE(c.arm_sleep());
  c.disarm();
  CHECK(c.try_peek().error() == Errc::Corrupt);
  CHECK(c.corruption().find("published beyond head") != std::string::npos);
}

TEST_CASE("stale and forged commit words are not records", "[ring][hostile]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  // A full lap of records, consumed: the buffer is full of stale headers of lap 0.
  REQUIRE(bus::test::move_to(p, c, 4096));
  CHECK(c.try_peek().error() == Errc::WouldBlock);
  // A header at head whose commit names another position (an earlier lap, or off by one).
  auto* h = reinterpret_cast<RecordHeader*>(r.data());
  for (uint64_t forged : {uint64_t{1}, uint64_t{4096}, uint64_t{4096 + 2}, uint64_t{8192 + 1}}) {
    h->length = 3;
    h->commit = forged;
    CHECK(c.try_peek().error() == Errc::WouldBlock);
  }
}

TEST_CASE("consumer rejects corrupted record headers", "[ring][hostile]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();

  SECTION("length above max_record") {
    REQUIRE(p.try_write(bytes_of("ok")));
    put_header(r, 0, max_record_for(4096) + 1, 0);
    expect_corrupt(c, "length > max_record");
  }
  SECTION("length of ~0") {
    REQUIRE(p.try_write(bytes_of("ok")));
    put_header(r, 0, UINT32_MAX, 0);
    expect_corrupt(c, "length 2^32-1");
  }
  SECTION("record crossing the end of the buffer") {
    // Fill to near the end, then claim the last record spans past it.
    REQUIRE(bus::test::move_to(p, c, 4096 - 64));
    const std::vector<std::byte> rec(200);  // pads, then lands at 0
    REQUIRE(p.try_write(rec));
    // Rewrite the pad at 4032 into a 200-byte record: it would cross the end.
    put_header(r, 4096 - 64, 200, 0);
    expect_corrupt(c, "record crosses the end");
  }
  SECTION("pad of the wrong length") {
    REQUIRE(bus::test::move_to(p, c, 4096 - 64));
    const std::vector<std::byte> rec(200);
    REQUIRE(p.try_write(rec));
    put_header(r, 4096 - 64, 16, kPadTag);
    expect_corrupt(c, "pad that does not reach the end");
  }
  SECTION("pad at offset 0") {
    REQUIRE(p.try_write(bytes_of("ok")));
    put_header(r, 0, 4096 - kRecordHeaderSize, kPadTag);  // commit word of "ok" kept
    expect_corrupt(c, "pad at offset 0 (a producer never pads a whole ring)");
  }
}

TEST_CASE("a record rewritten after it was copied does not change the copy", "[ring][hostile]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  REQUIRE(p.try_write(bytes_of("original")));
  std::array<std::byte, 64> buf{};
  auto n = c.try_read_copy(buf);
  REQUIRE(n);
  std::memcpy(r.data() + kRecordHeaderSize, "MUTATED!", 8);  // the writer strikes after the copy
  CHECK(text_of(std::span(buf).first(*n)) == "original");
}

TEST_CASE("producer rejects a corrupted head", "[ring][hostile]") {
  HeapRing r(4096);
  auto p = r.producer();
  const std::vector<std::byte> rec(48);
  while (p.try_write(rec)) {
  }
  auto& head = r.shared().cons.head;
  SECTION("head beyond what was committed") {
    head.store(4096 + 64);
  }
  SECTION("head misaligned") {
    head.store(24);
  }
  SECTION("head moved backwards") {
    auto c = r.consumer();
    REQUIRE(c.try_peek());
    c.advance();
    c.release();
    REQUIRE(p.try_write(rec));  // sees head 64
    CHECK(p.try_write(rec).error() == Errc::WouldBlock);
    head.store(0);
  }
  auto w = p.try_write(rec);
  REQUIRE_FALSE(w);
  CHECK(w.error() == Errc::Corrupt);
  CHECK_FALSE(p.corruption().empty());
}

TEST_CASE("random rewrites of the whole ring never make the reader stray", "[ring][hostile]") {
  // Many seeds: an honest producer writes records; a hostile writer flips random bytes of the
  // indices and data in between reads. Every record the reader returns must lie inside the data
  // area; after a Corrupt the reader stays stopped.
  constexpr uint64_t kCap = 4096;
  int corrupt_runs = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    HeapRing r(kCap);
    auto p = r.producer();
    auto c = r.consumer();
    std::mt19937 rng(seed);
    bool broken = false;
    for (int step = 0; step < 200 && !broken; ++step) {
      const uint32_t len = rng() % 300;
      const std::vector<std::byte> rec(len, std::byte{0x5A});
      (void)p.try_write(rec);  // may hit Corrupt or WouldBlock: the producer is honest
      if (rng() % 4 == 0) {
        // Hostile: rewrite 1..8 random bytes anywhere in the shared region.
        const int flips = 1 + static_cast<int>(rng() % 8);
        for (int f = 0; f < flips; ++f) {
          const size_t at = rng() % r.size;
          r.mem.get()[at] = static_cast<std::byte>(rng());
        }
      }
      for (int k = 0; k < 3; ++k) {
        auto got = c.try_peek();
        if (!got) {
          if (got.error() == Errc::Corrupt) broken = true;
          break;
        }
        const std::byte* lo = r.data();
        REQUIRE(got->data.data() >= lo);
        REQUIRE(got->data.data() + got->data.size() <= lo + kCap);
        REQUIRE(got->data.size() <= c.max_record());
        c.advance();
      }
      c.release();
    }
    if (broken) {
      ++corrupt_runs;
      CHECK(c.try_peek().error() == Errc::Corrupt);
    }
  }
  // The flips must actually have hit something that matters in a good share of the runs.
  CHECK(corrupt_runs > 30);
}
