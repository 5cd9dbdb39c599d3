// Single-thread semantics of the shared-memory ring: framing, publish/release visibility,
// wrap-around at every offset, full and empty edges, batches.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "../../support/heap_ring.hpp"
#include "shm/ring.hpp"

using namespace bus;
using namespace bus::shm;
using bus::test::bytes_of;
using bus::test::HeapRing;
using bus::test::text_of;

namespace {

// Deterministic record contents: byte i of record `seq` is a function of both.
std::vector<std::byte> pattern(uint64_t seq, size_t len) {
  std::vector<std::byte> v(len);
  for (size_t i = 0; i < len; ++i) v[i] = static_cast<std::byte>((seq * 131 + i * 7 + 1) & 0xFF);
  return v;
}

bool same(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

}  // namespace

TEST_CASE("format_ring and check_ring agree on the geometry", "[ring]") {
  HeapRing r(8192);
  auto g = check_ring(r.region());
  REQUIRE(g);
  CHECK(g->capacity == 8192);
  CHECK(g->max_record == max_record_for(8192));
  CHECK(max_record_for(8192) == 4096 - kRecordHeaderSize);
  CHECK(record_span(0) == 16);
  CHECK(record_span(1) == 32);
  CHECK(record_span(64) == 80);
  CHECK(capacity_for(defaults::kMaxMessageSize) == defaults::kRingCapacity);
}

TEST_CASE("a ring formatted over used memory has no records", "[ring]") {
  HeapRing r(4096);
  {
    auto p = r.producer();
    REQUIRE(p.try_write(bytes_of("from the old ring")));
    p.publish();
  }
  REQUIRE(format_ring(r.region(), 4096));
  auto c = r.consumer();
  CHECK(c.try_peek().error() == Errc::WouldBlock);
  CHECK_FALSE(c.readable());
}

TEST_CASE("format_ring rejects bad geometry", "[ring]") {
  HeapRing r(8192);
  CHECK(format_ring(r.region(), 5000).error().code() == Errc::InvalidArgument);   // not pow2
  CHECK(format_ring(r.region(), 2048).error().code() == Errc::InvalidArgument);   // too small
  CHECK(format_ring(r.region(), 16384).error().code() == Errc::InvalidArgument);  // no room
  CHECK(format_ring(r.region(), 8192, 4096).error().code() == Errc::InvalidArgument);
  CHECK(format_ring(r.region().subspan(64), 4096).error().code() == Errc::InvalidArgument);
  CHECK(format_ring(r.region(), 8192, 100));
  CHECK(check_ring(r.region())->max_record == 100);
}

TEST_CASE("check_ring names what is wrong with a descriptor", "[ring]") {
  HeapRing r(4096);
  auto& d = r.shared().desc;
  SECTION("magic") {
    d.magic ^= 1;
    auto g = check_ring(r.region());
    REQUIRE_FALSE(g);
    CHECK(g.error().code() == Errc::Corrupt);
    CHECK_THAT(g.error().message(), Catch::Contains("magic"));
  }
  SECTION("layout version") {
    d.layout_version = 99;
    auto g = check_ring(r.region());
    REQUIRE_FALSE(g);
    CHECK(g.error().code() == Errc::VersionMismatch);
    CHECK_THAT(g.error().message(), Catch::Contains("99") && Catch::Contains("1"));
  }
  SECTION("capacity larger than the region") {
    d.capacity = 8192;
    d.max_record = 100;
    CHECK(check_ring(r.region()).error().code() == Errc::Corrupt);
  }
  SECTION("capacity not a power of two") {
    d.capacity = 4000;
    CHECK(check_ring(r.region()).error().code() == Errc::Corrupt);
  }
  SECTION("max record above half the capacity") {
    d.max_record = 4096;
    CHECK(check_ring(r.region()).error().code() == Errc::Corrupt);
  }
  SECTION("region without a header") {
    CHECK(check_ring(r.region().first(100)).error().code() == Errc::Corrupt);
  }
  SECTION("attach reports it with context") {
    d.magic = 0;
    auto p = RingProducer::attach(r.region());
    REQUIRE_FALSE(p);
    CHECK_THAT(p.error().message(), Catch::StartsWith("Corrupt: attaching ring producer"));
  }
}

TEST_CASE("records become visible on commit and space returns on release", "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();

  CHECK(c.try_peek().error() == Errc::WouldBlock);
  auto claim = p.try_claim(5, 42);
  REQUIRE(claim);
  std::memcpy(claim->data(), "hello", 5);
  CHECK(c.try_peek().error() == Errc::WouldBlock);  // claimed, not committed
  p.commit(5);
  CHECK(r.shared().prod.tail.load() == 0);  // the tail moves once per batch, at publish()

  auto rec = c.try_peek();
  REQUIRE(rec);
  CHECK(rec->tag == 42);
  CHECK(text_of(rec->data) == "hello");
  // Peeking again without advance returns the same record.
  CHECK(text_of(c.try_peek()->data) == "hello");
  c.advance();
  CHECK(c.try_peek().error() == Errc::WouldBlock);

  // The producer sees the space only after release().
  CHECK(r.shared().cons.head.load() == 0);
  c.release();
  CHECK(r.shared().cons.head.load() == record_span(5));
  p.publish();
  CHECK(r.shared().prod.tail.load() == record_span(5));
}

TEST_CASE("empty records and the largest record", "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  REQUIRE(p.try_write({}, 7));
  auto rec = c.try_peek();
  REQUIRE(rec);
  CHECK(rec->data.empty());
  CHECK(rec->tag == 7);
  c.advance();
  c.release();

  const auto big = pattern(1, p.max_record());
  REQUIRE(p.try_write(big));
  CHECK(same(c.try_peek()->data, big));
  c.advance();
  c.release();

  const auto too_big = pattern(2, p.max_record() + 1);
  CHECK(p.try_write(too_big).error() == Errc::TooLarge);
  CHECK(p.try_claim(p.max_record() + 1).error() == Errc::TooLarge);
  CHECK(p.try_claim(1, kPadTag).error() == Errc::InvalidArgument);
}

TEST_CASE("claim large, commit what was written", "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  auto claim = p.try_claim(1000);
  REQUIRE(claim);
  std::memcpy(claim->data(), "abc", 3);
  p.commit(3);
  REQUIRE(p.try_write(bytes_of("next")));
  CHECK(text_of(c.try_peek()->data) == "abc");
  c.advance();
  CHECK(text_of(c.try_peek()->data) == "next");
  // Only the committed length was used: both fit in two small spans.
  CHECK(r.shared().prod.tail.load() == record_span(3) + record_span(4));
}

TEST_CASE("full and empty edges", "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  const auto rec = pattern(0, 48);  // span 64: exactly 64 fit
  int written = 0;
  while (p.try_write(rec)) ++written;
  CHECK(written == 4096 / 64);
  CHECK(p.try_write(rec).error() == Errc::WouldBlock);
  CHECK(p.stats().would_block >= 1);

  // Consuming without release frees nothing.
  REQUIRE(c.try_peek());
  c.advance();
  CHECK(p.try_write(rec).error() == Errc::WouldBlock);
  c.release();
  CHECK(p.try_write(rec));
  CHECK(p.try_write(rec).error() == Errc::WouldBlock);

  // Drain everything: empty again, and the ring is reusable.
  int read = 0;
  auto n = c.poll([&](const Record& x) {
    CHECK(same(x.data, rec));
    ++read;
  });
  REQUIRE(n);
  CHECK(*n == static_cast<size_t>(read));
  CHECK(read == 4096 / 64);
  CHECK(c.try_peek().error() == Errc::WouldBlock);
  CHECK(p.try_write(rec));
}

TEST_CASE("wrap-around at every offset never splits a record", "[ring]") {
  constexpr uint64_t kCap = 4096;
  // Sizes around the interesting spans: tiny, odd, one line, half the ring.
  const uint32_t sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 100, 1000, 2030, max_record_for(kCap)};
  for (uint64_t offset = 0; offset < kCap; offset += kRecordAlign) {
    HeapRing r(kCap);
    auto p = r.producer();
    auto c = r.consumer();
    // Move both indices to `offset` with filler records.
    REQUIRE(bus::test::move_to(p, c, offset));
    REQUIRE(r.shared().prod.tail.load() == offset);
    uint64_t seq = 1;
    for (uint32_t len : sizes) {
      const auto rec = pattern(seq, len);
      auto w = p.try_write(rec, static_cast<uint32_t>(seq));
      INFO("offset " << offset << " len " << len);
      REQUIRE(w);
      auto got = c.try_peek();
      REQUIRE(got);
      CHECK(got->tag == seq);
      CHECK(same(got->data, rec));
      // The record lies inside the data area: never split across the end.
      const auto* lo = r.data();
      CHECK(got->data.data() >= lo);
      CHECK(got->data.data() + got->data.size() <= lo + kCap);
      c.advance();
      c.release();
      ++seq;
    }
  }
}

TEST_CASE("readable() means a record, not a pad whose record is still being written",
          "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  REQUIRE(bus::test::move_to(p, c, 4096 - 64));
  auto claim = p.try_claim(100);  // pads the last 64 bytes (committed), claims at offset 0
  REQUIRE(claim);
  CHECK_FALSE(c.readable());
  CHECK(c.try_peek().error() == Errc::WouldBlock);
  p.commit(100);
  CHECK(c.readable());
  REQUIRE(c.try_peek());
  CHECK(c.try_peek()->data.size() == 100);
}

TEST_CASE("readable() does not arm advance()", "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  REQUIRE(p.try_write(bytes_of("unseen")));
  CHECK(c.readable());
  c.advance();  // nothing was peeked: consumes nothing
  CHECK(text_of(c.try_peek()->data) == "unseen");
}

TEST_CASE("batch write stops at the first record that does not fit", "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  std::vector<std::vector<std::byte>> recs;
  for (int i = 0; i < 100; ++i) recs.push_back(pattern(static_cast<uint64_t>(i), 112));  // span 128
  Errc err = Errc::Ok;
  const size_t n = p.try_write_batch(recs, 3, &err);
  CHECK(n == 4096 / 128);
  CHECK(err == Errc::WouldBlock);
  CHECK(r.shared().prod.tail.load() == 4096);  // one publish for the whole batch

  size_t seen = 0;
  auto got = c.poll(
      [&](const Record& x) {
        CHECK(same(x.data, recs[seen]));
        CHECK(x.tag == 3);
        ++seen;
      },
      10);
  REQUIRE(got);
  CHECK(*got == 10);
  CHECK(r.shared().cons.head.load() == 10 * 128);
}

TEST_CASE("try_read_copy copies and consumes", "[ring]") {
  HeapRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  REQUIRE(p.try_write(bytes_of("payload"), 9));
  std::array<std::byte, 4> small{};
  CHECK(c.try_read_copy(small).error() == Errc::TooLarge);  // left in place
  std::array<std::byte, 64> buf{};
  uint32_t tag = 0;
  auto n = c.try_read_copy(buf, &tag);
  REQUIRE(n);
  CHECK(*n == 7);
  CHECK(tag == 9);
  CHECK(text_of(std::span(buf).first(7)) == "payload");
  CHECK(c.try_read_copy(buf).error() == Errc::WouldBlock);
}

TEST_CASE("endpoints re-attach where the ring stands", "[ring]") {
  HeapRing r(4096);
  {
    auto p = r.producer();
    REQUIRE(p.try_write(bytes_of("one")));
    REQUIRE(p.try_write(bytes_of("two")));
    auto c = r.consumer();
    REQUIRE(c.try_peek());
    c.advance();
    c.release();
  }
  auto p = r.producer();
  auto c = r.consumer();
  REQUIRE(p.try_write(bytes_of("three")));
  CHECK(text_of(c.try_peek()->data) == "two");
  c.advance();
  CHECK(text_of(c.try_peek()->data) == "three");
}
