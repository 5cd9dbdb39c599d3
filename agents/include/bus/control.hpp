// Reading control messages (schemas/control.fbs) that arrive from another process.
#pragma once

#include <cstdint>
#include <span>

#include "bus/error.hpp"
#include "control_generated.h"

namespace bus {

/// Verifies a control message: size limit, FlatBuffers verifier with tight limits (identifier
/// "BUSC", required fields of the body), and a body for every body type this build knows: the
/// FlatBuffers verifier alone accepts a union tag without its table, whose required fields would
/// then go unchecked. A body type this build does not know (a newer peer) verifies, so the
/// handler can answer Unsupported instead of dropping the connection.
/// Errors: TooLarge, BadMessage.
[[nodiscard]] Result<const control::ControlMessage*> verify_control(
    std::span<const std::byte> bytes, uint32_t max_size) noexcept;

/// Whether this build knows the body type (Body::NONE is not a known body).
[[nodiscard]] constexpr bool known_body(control::Body t) noexcept {
  return t > control::Body::NONE && t <= control::Body::MAX;
}

}  // namespace bus
