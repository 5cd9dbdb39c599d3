#include <catch2/catch.hpp>

#include "bus/control.hpp"
#include "bus/limits.hpp"

using namespace bus;

namespace {

std::vector<std::byte> finish(flatbuffers::FlatBufferBuilder& fbb,
                              flatbuffers::Offset<control::ControlMessage> m) {
  control::FinishControlMessageBuffer(fbb, m);
  const auto* p = reinterpret_cast<const std::byte*>(fbb.GetBufferPointer());
  return {p, p + fbb.GetSize()};
}

}  // namespace

TEST_CASE("a control message verifies and reads back", "[control]") {
  flatbuffers::FlatBufferBuilder fbb;
  auto hello = control::CreateHelloDirect(fbb, kProtocolVersion, 1, "libbus test", 42);
  auto bytes = finish(fbb, control::CreateControlMessage(fbb, 7, control::Body::Hello, hello.Union()));
  auto m = verify_control(bytes, defaults::kMaxMessageSize);
  REQUIRE(m);
  CHECK((*m)->seq() == 7);
  REQUIRE((*m)->body_as_Hello() != nullptr);
  CHECK((*m)->body_as_Hello()->protocol_version() == kProtocolVersion);
  CHECK(verify_control(bytes, static_cast<uint32_t>(bytes.size() - 1)).error() == Errc::TooLarge);
}

TEST_CASE("a known body type without its body is refused", "[control]") {
  // FlatBuffers' verifier accepts this (VerifyTable(nullptr) is true): a Register whose
  // required name would never be checked.
  flatbuffers::FlatBufferBuilder fbb;
  control::ControlMessageBuilder b(fbb);
  b.add_seq(1);
  b.add_body_type(control::Body::Register);
  auto bytes = finish(fbb, b.Finish());
  flatbuffers::Verifier v(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  REQUIRE(control::VerifyControlMessageBuffer(v));  // the gap being closed
  CHECK(verify_control(bytes, defaults::kMaxMessageSize).error() == Errc::BadMessage);
}

TEST_CASE("no body at all is refused; an unknown body type from a newer peer is not",
          "[control]") {
  {
    flatbuffers::FlatBufferBuilder fbb;
    control::ControlMessageBuilder b(fbb);
    b.add_seq(2);
    auto bytes = finish(fbb, b.Finish());
    CHECK(verify_control(bytes, defaults::kMaxMessageSize).error() == Errc::BadMessage);
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto ok = control::CreateOk(fbb);
    auto bytes = finish(fbb, control::CreateControlMessage(
                                 fbb, 3, static_cast<control::Body>(200), ok.Union()));
    auto m = verify_control(bytes, defaults::kMaxMessageSize);
    REQUIRE(m);
    CHECK_FALSE(known_body((*m)->body_type()));  // the handler answers Unsupported
  }
}

TEST_CASE("a Register without its required name is refused", "[control]") {
  flatbuffers::FlatBufferBuilder fbb;
  const auto start = fbb.StartTable();  // below RegisterBuilder, which asserts required fields
  const flatbuffers::Offset<control::Register> reg(fbb.EndTable(start));
  auto bytes = finish(fbb, control::CreateControlMessage(fbb, 4, control::Body::Register, reg.Union()));
  CHECK(verify_control(bytes, defaults::kMaxMessageSize).error() == Errc::BadMessage);
}
