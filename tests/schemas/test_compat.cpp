// Wire compatibility across versions: a message from a newer writer (envelope_next.fbs: fields
// appended to Envelope) verifies and reads correctly with the current code, a current message
// reads with the newer code (new fields at their defaults), and a foreign file_identifier is
// refused.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "bus/envelope.hpp"
#include "bus/limits.hpp"
#include "control_generated.h"
#include "envelope_next_generated.h"

using namespace bus;
namespace next = bus::wire::next;

namespace {

std::vector<std::byte> payload_of(size_t n) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 7 + 1);
  return v;
}

std::vector<std::byte> bytes_of(const flatbuffers::FlatBufferBuilder& fbb) {
  const auto* p = reinterpret_cast<const std::byte*>(fbb.GetBufferPointer());
  return {p, p + fbb.GetSize()};
}

constexpr uint8_t kFlags = static_cast<uint8_t>(wire::Flags::HasDeadline) |
                           static_cast<uint8_t>(wire::Flags::Traced);

// A message as the next version writes it: every current field set, and the appended ones.
std::vector<std::byte> build_next(std::span<const std::byte> payload, bool set_optional = true) {
  flatbuffers::FlatBufferBuilder fbb(512);
  const auto body = fbb.CreateVector(reinterpret_cast<const uint8_t*>(payload.data()),
                                     payload.size());
  const auto origin = fbb.CreateString("site-b");
  const std::vector<uint64_t> tags{1, 2, 3};
  const auto info = next::CreateNextInfo(fbb, 3, origin, fbb.CreateVector(tags));
  const std::vector<std::string> hops{"host-a", "link-1", "host-b"};
  const auto route = fbb.CreateVectorOfStrings(hops);
  const auto type = fbb.CreateString("plan.v2");
  const auto source = fbb.CreateString("planner");
  const auto reply = fbb.CreateString("_inbox.planner.7");
  const auto subject = fbb.CreateString("svc.plan.next");
  const next::Header h(101, 100, 123'456'789, 5'000'000, 0xAABB, 0xCCDD, 42,
                       wire::Code::Timeout, next::Kind::Error, kFlags);
  next::EnvelopeBuilder eb(fbb);
  eb.add_header(&h);
  eb.add_subject(subject);
  if (set_optional) {
    eb.add_reply_to(reply);
    eb.add_source(source);
    eb.add_payload_type(type);
  }
  eb.add_payload(body);
  eb.add_priority(9);
  eb.add_route(route);
  eb.add_extra(info);
  eb.add_origin_code(wire::Code::NoResponders);
  next::FinishEnvelopeBuffer(fbb, eb.Finish());
  return bytes_of(fbb);
}

bool next_verifies(std::span<const std::byte> b) {
  flatbuffers::Verifier v(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  return next::VerifyEnvelopeBuffer(v);
}

}  // namespace

TEST_CASE("the generated next schema is an append-only extension", "[schema][compat]") {
  // Same struct, same identifier, old field ids unchanged, new ones after them.
  STATIC_REQUIRE(sizeof(next::Header) == sizeof(wire::Header));
  STATIC_REQUIRE(alignof(next::Header) == alignof(wire::Header));
  CHECK(std::string_view(next::EnvelopeIdentifier()) == wire::EnvelopeIdentifier());
  const auto vt = [](auto v) { return static_cast<int>(v); };
  CHECK(vt(next::Envelope::VT_HEADER) == vt(wire::Envelope::VT_HEADER));
  CHECK(vt(next::Envelope::VT_PAYLOAD) == vt(wire::Envelope::VT_PAYLOAD));
  CHECK(vt(next::Envelope::VT_PRIORITY) > vt(wire::Envelope::VT_PAYLOAD));
}

TEST_CASE("the current reader accepts a message from the next version", "[schema][compat]") {
  for (size_t n : {0, 1, 13, 300}) {
    INFO("payload " << n);
    const auto payload = payload_of(n);
    const auto msg = build_next(payload);
    REQUIRE(next_verifies(msg));

    auto v = EnvelopeView::verify(msg, defaults::kMaxMessageSize);
    REQUIRE(v);
    CHECK(v->subject() == "svc.plan.next");
    CHECK(v->reply_to() == "_inbox.planner.7");
    CHECK(v->source() == "planner");
    CHECK(v->payload_type() == "plan.v2");
    REQUIRE(v->payload().size() == n);
    CHECK((n == 0 || std::memcmp(v->payload().data(), payload.data(), n) == 0));
    const wire::Header& h = v->header();
    CHECK(h.msg_id() == 101);
    CHECK(h.correlation_id() == 100);
    CHECK(h.timestamp_ns() == 123'456'789);
    CHECK(h.deadline_budget_ns() == 5'000'000);
    CHECK(h.trace_id_hi() == 0xAABB);
    CHECK(h.trace_id_lo() == 0xCCDD);
    CHECK(h.source_id() == 42);
    CHECK(h.status() == wire::Code::Timeout);
    CHECK(h.kind() == wire::Kind::Error);
    CHECK(h.flags() == kFlags);
    CHECK(v->stamp().has_deadline);
    CHECK(clock::deadline_of(v->stamp()) == 123'456'789 + 5'000'000);
  }
}

TEST_CASE("the current reader accepts a next message without the optional fields",
          "[schema][compat]") {
  const auto msg = build_next(payload_of(8), false);
  auto v = EnvelopeView::verify(msg, defaults::kMaxMessageSize);
  REQUIRE(v);
  CHECK(v->subject() == "svc.plan.next");
  CHECK(v->reply_to().empty());
  CHECK(v->source().empty());
  CHECK(v->payload_type().empty());
  CHECK(v->payload().size() == 8);
}

TEST_CASE("the next reader reads a current message, new fields at their defaults",
          "[schema][compat]") {
  MessageMeta m;
  m.kind = wire::Kind::Request;
  m.msg_id = 7;
  m.correlation_id = 3;
  m.stamp = clock::stamp(1'000, 2'000);
  m.source_id = 5;
  m.trace_hi = 11;
  m.trace_lo = 12;
  const auto payload = payload_of(40);

  auto t = EnvelopeTemplate::make({"a.b", "_inbox.x", "src", "type.v1"});
  REQUIRE(t);
  std::vector<uint64_t> words(t->size_for(payload.size()) / 8 + 1);
  auto* out = reinterpret_cast<std::byte*>(words.data());
  t->write(out, payload, m);
  const std::vector<std::byte> templated(out, out + t->size_for(payload.size()));

  for (const auto& msg : {build_envelope({"a.b", "_inbox.x", "src", "type.v1"}, payload, m),
                          templated}) {
    REQUIRE(next_verifies(msg));
    const next::Envelope* e = next::GetEnvelope(msg.data());
    CHECK(e->priority() == 4);  // the schema default, not 0
    CHECK(e->route() == nullptr);
    CHECK(e->extra() == nullptr);
    CHECK(e->origin_code() == wire::Code::Ok);
    CHECK(e->subject()->string_view() == "a.b");
    CHECK(e->reply_to()->string_view() == "_inbox.x");
    CHECK(e->source()->string_view() == "src");
    CHECK(e->payload_type()->string_view() == "type.v1");
    REQUIRE(e->payload()->size() == payload.size());
    CHECK(std::memcmp(e->payload()->data(), payload.data(), payload.size()) == 0);
    CHECK(e->header()->msg_id() == 7);
    CHECK(e->header()->correlation_id() == 3);
    CHECK(e->header()->kind() == next::Kind::Request);
    CHECK(e->header()->source_id() == 5);
    CHECK(e->header()->trace_id_lo() == 12);
  }
}

TEST_CASE("the next reader sees its own new fields", "[schema][compat]") {
  const auto msg = build_next(payload_of(4));
  const next::Envelope* e = next::GetEnvelope(msg.data());
  CHECK(e->priority() == 9);
  REQUIRE(e->route() != nullptr);
  REQUIRE(e->route()->size() == 3);
  CHECK(e->route()->Get(1)->string_view() == "link-1");
  REQUIRE(e->extra() != nullptr);
  CHECK(e->extra()->hops() == 3);
  CHECK(e->extra()->origin()->string_view() == "site-b");
  CHECK(e->origin_code() == wire::Code::NoResponders);
}

TEST_CASE("a message with another file_identifier is refused", "[schema][compat]") {
  const auto good = build_envelope({"a.b"}, payload_of(16), MessageMeta{});
  REQUIRE(EnvelopeView::verify(good, defaults::kMaxMessageSize));
  REQUIRE(std::memcmp(good.data() + 4, "BUSE", 4) == 0);

  SECTION("identifier bytes changed") {
    for (const char* id : {"BUSX", "BUSC", "buse", "\0\0\0\0"}) {
      auto bad = good;
      std::memcpy(bad.data() + 4, id, 4);
      auto v = EnvelopeView::verify(bad, defaults::kMaxMessageSize);
      REQUIRE_FALSE(v);
      CHECK(v.error() == Errc::BadMessage);
      CHECK_FALSE(next_verifies(bad));
    }
  }
  SECTION("a valid Envelope table finished without an identifier") {
    flatbuffers::FlatBufferBuilder fbb;
    const auto subject = fbb.CreateString("a.b");
    const wire::Header h;
    wire::EnvelopeBuilder eb(fbb);
    eb.add_header(&h);
    eb.add_subject(subject);
    fbb.Finish(eb.Finish());  // plain Finish: no "BUSE"
    const auto bad = bytes_of(fbb);
    flatbuffers::Verifier plain(fbb.GetBufferPointer(), fbb.GetSize());
    REQUIRE(plain.VerifyBuffer<wire::Envelope>(nullptr));  // the table itself is fine
    auto v = EnvelopeView::verify(bad, defaults::kMaxMessageSize);
    REQUIRE_FALSE(v);
    CHECK(v.error() == Errc::BadMessage);
  }
  SECTION("a control message (BUSC) is not an envelope") {
    flatbuffers::FlatBufferBuilder fbb;
    const auto body = control::CreateOk(fbb);
    control::FinishControlMessageBuffer(
        fbb, control::CreateControlMessage(fbb, 1, control::Body::Ok, body.Union()));
    auto v = EnvelopeView::verify(bytes_of(fbb), defaults::kMaxMessageSize);
    REQUIRE_FALSE(v);
    CHECK(v.error() == Errc::BadMessage);
  }
}
