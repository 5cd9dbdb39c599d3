// busctl's output helpers: human units, aligned tables, JSON strings. Pure functions (tested in
// tests/unit/counters/test_busctl_format.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bus::ctl {

/// 999, 1.2k, 12.3k, 123k, 1.2M, ... (SI, one decimal below 100).
[[nodiscard]] std::string human_count(uint64_t v);
/// 512B, 1.2KiB, 12.3MiB, ... (binary).
[[nodiscard]] std::string human_bytes(uint64_t v);
/// 850ms, 12.3s, 5m03s, 1h02m, 3d04h.
[[nodiscard]] std::string human_duration(uint64_t ns);
/// A short latency: 850ns, 12.3µs, 1.25ms, 1.50s (0: "-", nothing measured yet).
[[nodiscard]] std::string human_latency(uint64_t ns);
/// A per-second rate: 0, 0.5, 12.3, 999, 1.2k, ... (human_count above 999; `bytes`: KiB/s style).
[[nodiscard]] std::string human_rate(double per_second, bool bytes = false);
/// Per second between two readings of a counter `dt_ns` apart (0 when it went down or dt is 0).
[[nodiscard]] double per_second(uint64_t before, uint64_t after, uint64_t dt_ns) noexcept;
/// "1s", "500ms", "250us", "2m", "1.5s", "3" (seconds): nanoseconds, or -1 when not a duration.
[[nodiscard]] int64_t parse_duration(std::string_view text) noexcept;
/// For a terminal: valid UTF-8 kept, control characters and invalid bytes become '?'.
[[nodiscard]] std::string printable(std::string_view s);
/// A JSON string literal: quoted, escaped; invalid UTF-8 becomes U+FFFD (output stays valid JSON).
[[nodiscard]] std::string json_string(std::string_view s);

/// Columns separated by two spaces, each as wide as its widest cell (in code points).
class Table {
 public:
  enum class Align { Left, Right };
  struct Column {
    std::string title;
    Align align;
  };
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  [[nodiscard]] std::string render() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

/// Builds one JSON object, fields in call order.
class JsonObject {
 public:
  JsonObject& num(std::string_view key, uint64_t v);
  JsonObject& num(std::string_view key, int64_t v);
  JsonObject& str(std::string_view key, std::string_view v);
  JsonObject& boolean(std::string_view key, bool v);
  /// A fractional number (3 decimals); null when not finite.
  JsonObject& real(std::string_view key, double v);
  JsonObject& null(std::string_view key);
  JsonObject& raw(std::string_view key, std::string_view json);  // an already-encoded value
  [[nodiscard]] std::string done() const { return out_.empty() ? "{}" : out_ + "}"; }

 private:
  void key(std::string_view k);
  std::string out_;
};

/// Builds one JSON array of already-encoded values (JsonObject::done()), one a line.
class JsonArray {
 public:
  JsonArray& raw(std::string_view json);
  [[nodiscard]] std::string done() const { return "[" + out_ + "]"; }

 private:
  std::string out_;
};

}  // namespace bus::ctl
