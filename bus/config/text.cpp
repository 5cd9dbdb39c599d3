// Text helpers of bus/config: TOML quoting, number formats, one-line messages, suggestions.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "config/fields.hpp"

namespace bus::config::detail {

std::string quoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
          char u[8];
          std::snprintf(u, sizeof u, "\\u%04X", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += u;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string grouped(uint64_t v) {
  std::string digits = std::to_string(v);
  if (v < 10'000) return digits;
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out += '_';
    out += digits[i];
  }
  return out;
}

std::string octal(uint32_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode);
  return buf;
}

std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      char x[8];
      std::snprintf(x, sizeof x, "\\x%02X", static_cast<unsigned>(u));
      out += x;
    } else {
      out += c;
    }
  }
  return out;
}

size_t edit_distance(std::string_view a, std::string_view b, size_t cap) {
  if ((a.size() > b.size() ? a.size() - b.size() : b.size() - a.size()) > cap) return cap + 1;
  // Three rows of the optimal-string-alignment table: i-2, i-1, i.
  std::vector<size_t> prev2(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return std::min(prev[b.size()], cap + 1);
}

std::string suggestion(std::string_view name, std::span<const std::string_view> among) {
  constexpr size_t kMaxDistance = 2;
  std::string_view best;
  size_t best_d = kMaxDistance + 1;
  for (const std::string_view c : among) {
    const size_t d = edit_distance(name, c, kMaxDistance);
    if (d < best_d) {
      best = c;
      best_d = d;
    }
  }
  if (best_d > kMaxDistance) return {};
  return " (did you mean '" + std::string(best) + "'?)";
}

}  // namespace bus::config::detail
