#include "bus/control.hpp"

#include <flatbuffers/flatbuffers.h>

namespace bus {
namespace {

// ControlMessage -> one body table -> strings / vectors of strings.
constexpr flatbuffers::Verifier::Options kVerifyOptions = [] {
  flatbuffers::Verifier::Options o;
  o.max_depth = 8;
  o.max_tables = 8;
  o.check_alignment = true;
  o.check_nested_flatbuffers = false;
  return o;
}();

}  // namespace

Result<const control::ControlMessage*> verify_control(std::span<const std::byte> bytes,
                                                      uint32_t max_size) noexcept {
  if (bytes.size() > max_size) return tl::unexpected(Errc::TooLarge);
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  flatbuffers::Verifier v(p, bytes.size(), kVerifyOptions);
  if (!control::VerifyControlMessageBuffer(v)) return tl::unexpected(Errc::BadMessage);
  const control::ControlMessage* m = control::GetControlMessage(p);
  const control::Body t = m->body_type();
  if (t == control::Body::NONE || (known_body(t) && m->body() == nullptr)) {
    return tl::unexpected(Errc::BadMessage);
  }
  return m;
}

}  // namespace bus
