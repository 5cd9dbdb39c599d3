#include "bus/control.hpp"

#include <flatbuffers/flatbuffers.h>

#include "verify_options.hpp"

namespace bus {

Result<const control::ControlMessage*> verify_control(std::span<const std::byte> bytes,
                                                      uint32_t max_size) noexcept {
  if (bytes.size() > max_size) return tl::unexpected(Errc::TooLarge);
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  flatbuffers::Verifier v(p, bytes.size(), detail::kWireVerifyOptions);
  if (!control::VerifyControlMessageBuffer(v)) return tl::unexpected(Errc::BadMessage);
  const control::ControlMessage* m = control::GetControlMessage(p);
  const control::Body t = m->body_type();
  if (t == control::Body::NONE || (known_body(t) && m->body() == nullptr)) {
    return tl::unexpected(Errc::BadMessage);
  }
  return m;
}

}  // namespace bus
