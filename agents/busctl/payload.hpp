// Payloads as JSON: a FlatBuffers schema (.fbs) and a root table name turn JSON text into the
// FlatBuffer busctl pub/req send, and received FlatBuffers back into JSON (verified against the
// schema first: a payload from the bus is untrusted input).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/error.hpp"

namespace bus::ctl {

class JsonCodec {
 public:
  /// Parses `fbs_path` (includes resolved beside it) and picks table `type` as the root.
  /// InvalidArgument with the parser's message when the schema or the type is wrong.
  [[nodiscard]] static Expected<JsonCodec> load(const std::string& fbs_path, const std::string& type);

  JsonCodec(JsonCodec&&) noexcept;
  JsonCodec& operator=(JsonCodec&&) noexcept;
  ~JsonCodec();

  /// JSON text to a finished FlatBuffer of the root type (with the schema's file_identifier).
  /// InvalidArgument with the parser's message (line and what it expected).
  [[nodiscard]] Expected<std::vector<uint8_t>> from_json(std::string_view json);
  /// A FlatBuffer of the root type to one line of JSON. BadMessage when it does not verify
  /// against the schema (or lacks the schema's file_identifier).
  [[nodiscard]] Expected<std::string> to_json(std::span<const std::byte> payload) const;

  [[nodiscard]] const std::string& type() const noexcept;

 private:
  struct State;
  explicit JsonCodec(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace bus::ctl
