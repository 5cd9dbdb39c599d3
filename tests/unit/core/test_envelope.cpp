#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <string>
#include <random>
#include <vector>

#include "bus/control.hpp"
#include "bus/envelope.hpp"
#include "bus/inplace.hpp"
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

TEST_CASE("a prefix written with a gap before the payload verifies and gives the same payload",
          "[envelope]") {
  auto t = EnvelopeTemplate::make({"orders.new", "_INBOX.7", "shop", "order.v1"});
  REQUIRE(t);
  const auto payload = payload_of(40, 5);
  for (size_t gap : {size_t{0}, size_t{8}, size_t{64}, size_t{1000} * 1000}) {
    INFO("gap " << gap);
    const size_t size = t->size_for(payload.size()) + gap;
    Buf buf(size);
    std::memset(buf.data(), 0xA5, size);  // what was in the ring before
    std::byte* at = buf.data() + t->prefix_size() + gap;
    std::memcpy(at, payload.data(), payload.size());  // the payload is already where it lies
    wire::Header* h = t->write_prefix_with_gap(buf.data(), static_cast<uint32_t>(payload.size()), gap);
    fill_header(*h, sample_meta());
    auto v = EnvelopeView::verify({buf.data(), size}, defaults::kMaxMessageSize);
    REQUIRE(v);
    CHECK(v->subject() == "orders.new");
    CHECK(v->reply_to() == "_INBOX.7");
    CHECK(v->source() == "shop");
    CHECK(v->payload_type() == "order.v1");
    CHECK(&v->header() == h);
    CHECK(v->header().msg_id() == 77);
    CHECK(v->payload().data() == at);
    REQUIRE(v->payload().size() == payload.size());
    CHECK(std::memcmp(v->payload().data(), payload.data(), payload.size()) == 0);
    // The filler is zeros: nothing of what was in the ring before goes out with the message.
    CHECK(std::all_of(buf.data() + 8, buf.data() + 8 + gap, [](std::byte b) { return b == std::byte{0}; }));
    if (gap == 0) {  // write_prefix, byte for byte
      Buf ref(size);
      t->write(ref.data(), payload, sample_meta());
      CHECK(std::memcmp(ref.data(), buf.data(), size) == 0);
    }
  }
}

namespace {
// A small control message (Presence), built with any FlatBufferBuilder.
void build_presence(flatbuffers::FlatBufferBuilder& fbb, uint32_t id, size_t caps) {
  std::vector<std::string> names;
  for (size_t i = 0; i < caps; ++i) names.push_back("capability-" + std::to_string(i));
  const auto caps_v = fbb.CreateVectorOfStrings(names);
  auto p = control::CreatePresence(fbb, control::PresenceEvent::Joined, fbb.CreateString("agent"), id, caps_v);
  control::FinishControlMessageBuffer(fbb, control::CreateControlMessage(fbb, id, control::Body::Presence, p.Union()));
}
}  // namespace

TEST_CASE("a FlatBuffer built in place at the end of its room is sent where it lies", "[envelope]") {
  auto t = EnvelopeTemplate::make({"orders.new"});
  REQUIRE(t);
  for (size_t room_size : {size_t{256}, size_t{300}, size_t{4096}}) {
    INFO("room " << room_size);
    Buf buf(t->prefix_size() + room_size);
    const std::span<std::byte> room(buf.data() + t->prefix_size(), room_size);
    InPlaceBuilder fbb(room);
    CHECK(fbb.room().data() == room.data());
    CHECK(fbb.room().size() == (room_size & ~size_t{7}));
    CHECK_FALSE(fbb.is_finished());
    build_presence(fbb, 42, 3);
    REQUIRE(fbb.is_finished());
    const auto built = fbb.built();
    // At the end of the (8-aligned) room, with an 8-byte multiple before it.
    CHECK(built.data() + built.size() == fbb.room().data() + fbb.room().size());
    CHECK(built.size() % 8 == 0);
    const size_t gap = static_cast<size_t>(built.data() - room.data());
    CHECK(gap % 8 == 0);
    fill_header(*t->write_prefix_with_gap(buf.data(), static_cast<uint32_t>(built.size()), gap), sample_meta());
    auto v = EnvelopeView::verify({buf.data(), t->size_for(built.size()) + gap}, defaults::kMaxMessageSize);
    REQUIRE(v);
    CHECK(v->payload().data() == built.data());
    CHECK(reinterpret_cast<uintptr_t>(v->payload().data()) % 8 == 0);
    auto c = verify_control(v->payload(), 1 << 20);
    REQUIRE(c);
    CHECK((*c)->seq() == 42);
    REQUIRE((*c)->body_as_Presence() != nullptr);
    CHECK((*c)->body_as_Presence()->capabilities()->size() == 3);
  }
}

TEST_CASE("an InPlaceBuilder that outgrows its room throws TooLarge and can start over", "[envelope]") {
  Buf buf(512);
  const std::span<std::byte> room(buf.data(), 512);
  InPlaceBuilder fbb(room);
  // Outgrown at once (the first allocation) and while growing (a reallocation).
  for (size_t caps : {size_t{0}, size_t{100}}) {
    try {
      if (caps == 0) {
        std::vector<uint8_t> big(1000);
        fbb.CreateVector(big);
      } else {
        build_presence(fbb, 1, caps);
      }
      FAIL("no TooLarge");
    } catch (const ClientError& e) {
      CHECK(e.error().code() == Errc::TooLarge);
      CHECK(std::string(e.what()).find("512 bytes") != std::string::npos);
    }
    CHECK_FALSE(fbb.is_finished());
    CHECK(fbb.built().empty());
    fbb.Clear();  // starts over in the same room
  }
  build_presence(fbb, 7, 2);
  REQUIRE(fbb.is_finished());
  CHECK(fbb.built().data() + fbb.built().size() == room.data() + room.size());
  CHECK(verify_control(fbb.built(), 1 << 20));
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
