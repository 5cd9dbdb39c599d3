// Verifier limits for messages from outside the process (private to agents/core; tests may use
// it). Envelopes and control messages are shallow: one root table, one body table, strings and
// vectors of strings. A hostile buffer cannot make the verifier walk further than this.
#pragma once

#include <flatbuffers/flatbuffers.h>

namespace bus::detail {

inline constexpr flatbuffers::Verifier::Options kWireVerifyOptions = [] {
  flatbuffers::Verifier::Options o;
  o.max_depth = 8;
  o.max_tables = 8;
  o.check_alignment = true;
  o.check_nested_flatbuffers = false;  // payloads are opaque here; their owner verifies them
  return o;
}();

}  // namespace bus::detail
