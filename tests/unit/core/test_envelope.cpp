#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "bus/envelope.hpp"
#include "bus/limits.hpp"

using namespace bus;

namespace {

std::vector<std::byte> payload_of(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(seed + i);
  return v;
}

MessageMeta sample_meta() {
  MessageMeta m;
  m.kind = wire::Kind::Request;
  m.msg_id = 77;
  m.correlation_id = 0;
  m.stamp = clock::stamp(123'456, 5'000'000);
  m.source_id = 9;
  m.trace_hi = 1;
  m.trace_lo = 2;
  return m;
}

// An 8-byte aligned buffer for encoded envelopes.
struct Buf {
  explicit Buf(size_t n) : words((n + 7) / 8 + 1) {}
  std::byte* data() { return reinterpret_cast<std::byte*>(words.data()); }
  std::vector<uint64_t> words;
};

}  // namespace

TEST_CASE("a template-written envelope verifies and reads back", "[envelope]") {
  auto t = EnvelopeTemplate::make({"svc.plan", "_inbox.planner.1", "planner", "plan.v1"});
  REQUIRE(t);
  CHECK(t->prefix_size() % 8 == 0);
  for (size_t n : {0, 1, 7, 64, 1000}) {
    const auto payload = payload_of(n, 3);
    Buf buf(t->size_for(n));
    t->write(buf.data(), payload, sample_meta());
    auto v = EnvelopeView::verify({buf.data(), t->size_for(n)}, defaults::kMaxMessageSize);
    INFO("payload " << n);
    REQUIRE(v);
    CHECK(v->subject() == "svc.plan");
    CHECK(v->reply_to() == "_inbox.planner.1");
    CHECK(v->source() == "planner");
    CHECK(v->payload_type() == "plan.v1");
    CHECK(v->payload().size() == n);
    CHECK((n == 0 || std::memcmp(v->payload().data(), payload.data(), n) == 0));
    // The payload starts 8-aligned, so a nested FlatBuffer can be read in place.
    CHECK(reinterpret_cast<uintptr_t>(v->payload().data()) % 8 == 0);
    const auto& h = v->header();
    CHECK(h.kind() == wire::Kind::Request);
    CHECK(h.msg_id() == 77);
    CHECK(h.source_id() == 9);
    CHECK(v->stamp().has_deadline);
    CHECK(clock::deadline_of(v->stamp()) == 123'456 + 5'000'000);
  }
}

TEST_CASE("template output equals what FlatBufferBuilder reads as the same message",
          "[envelope]") {
  auto t = EnvelopeTemplate::make({"a.b.c"});
  REQUIRE(t);
  const auto payload = payload_of(64, 9);
  const auto built = build_envelope({"a.b.c"}, payload, sample_meta());
  Buf buf(t->size_for(64));
  t->write(buf.data(), payload, sample_meta());
  auto a = EnvelopeView::verify(built, defaults::kMaxMessageSize);
  auto b = EnvelopeView::verify({buf.data(), t->size_for(64)}, defaults::kMaxMessageSize);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(std::memcmp(&a->header(), &b->header(), sizeof(wire::Header)) == 0);
  CHECK(a->subject() == b->subject());
  CHECK(a->reply_to().empty());
  CHECK(b->reply_to().empty());
  CHECK(std::memcmp(a->payload().data(), b->payload().data(), 64) == 0);
}

TEST_CASE("header fields are rewritten in place, per message", "[envelope]") {
  auto t = EnvelopeTemplate::make({"x.y"});
  REQUIRE(t);
  Buf buf(t->size_for(8));
  wire::Header* h = t->write_prefix(buf.data(), 8);
  std::memcpy(buf.data() + t->prefix_size(), "12345678", 8);
  for (uint64_t id = 1; id <= 3; ++id) {
    h->mutate_msg_id(id);
    auto v = EnvelopeView::verify({buf.data(), t->size_for(8)}, 1024);
    REQUIRE(v);
    CHECK(v->header().msg_id() == id);
  }
}

TEST_CASE("verify rejects oversize, truncated and damaged envelopes", "[envelope]") {
  const auto good = build_envelope({"s"}, payload_of(32, 1), sample_meta());
  REQUIRE(EnvelopeView::verify(good, 1 << 20));
  CHECK(EnvelopeView::verify(good, static_cast<uint32_t>(good.size() - 1)).error() ==
        Errc::TooLarge);
  for (size_t cut = 0; cut < good.size(); ++cut) {
    INFO("truncated to " << cut);
    CHECK(EnvelopeView::verify(std::span(good).first(cut), 1 << 20).error() == Errc::BadMessage);
  }
  // Wrong file identifier ("BUSC" is the control protocol's).
  auto other = good;
  std::memcpy(other.data() + 4, "BUSC", 4);
  CHECK(EnvelopeView::verify(other, 1 << 20).error() == Errc::BadMessage);
  // Random damage never crashes; whatever verifies reads back within bounds.
  std::mt19937 rng(7);
  int rejected = 0;
  for (int i = 0; i < 5000; ++i) {
    auto bad = good;
    bad[rng() % bad.size()] = static_cast<std::byte>(rng());
    bad[rng() % bad.size()] = static_cast<std::byte>(rng());
    auto v = EnvelopeView::verify(bad, 1 << 20);
    if (!v) {
      ++rejected;
      continue;
    }
    CHECK(v->subject().size() <= bad.size());
    CHECK(v->payload().size() <= bad.size());
  }
  CHECK(rejected > 100);
}

TEST_CASE("a missing subject is refused at build and at verify", "[envelope]") {
  CHECK(EnvelopeTemplate::make({""}).error().code() == Errc::InvalidArgument);
  // Built below EnvelopeBuilder, whose Finish() asserts required fields in debug builds: this
  // is what a hostile peer sends.
  flatbuffers::FlatBufferBuilder fbb;
  wire::Header h;
  const auto start = fbb.StartTable();
  fbb.AddStruct(wire::Envelope::VT_HEADER, &h);  // subject is (required) but absent
  const flatbuffers::Offset<wire::Envelope> env(fbb.EndTable(start));
  fbb.Finish(env, wire::EnvelopeIdentifier());
  const std::span<const std::byte> b(reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()),
                                     fbb.GetSize());
  CHECK(EnvelopeView::verify(b, 1 << 20).error() == Errc::BadMessage);
}
