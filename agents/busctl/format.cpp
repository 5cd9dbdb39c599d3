#include "format.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace bus::ctl {
namespace {

std::string scaled(uint64_t v, uint64_t base, const char* const* units, size_t n_units,
                   const char* plain_suffix) {
  if (v < base) return std::to_string(v) + plain_suffix;
  const auto b = static_cast<double>(base);
  double x = static_cast<double>(v);
  size_t u = 0;
  while (x >= b && u + 1 < n_units) {
    x /= b;
    ++u;
  }
  if (x >= 999.5 && u + 1 < n_units) {  // would print as 1000: say 1.0 of the next unit
    x /= b;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, x < 99.95 ? "%.1f%s" : "%.0f%s", x, units[u]);
  return buf;
}

// Length of the UTF-8 sequence starting at s[i], or 0 if it is not a valid one.
size_t utf8_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  uint32_t cp = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
      (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
    return 0;
  }
  return n;
}

size_t width(std::string_view s) {
  size_t w = 0;
  for (char ch : s) w += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
  return w;
}

}  // namespace

std::string human_count(uint64_t v) {
  static const char* const kUnits[] = {"", "k", "M", "G", "T", "P", "E"};
  return scaled(v, 1000, kUnits, 7, "");
}

std::string human_bytes(uint64_t v) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  return scaled(v, 1024, kUnits, 7, "B");
}

std::string human_duration(uint64_t ns) {
  char buf[48];
  const uint64_t ms = ns / 1'000'000;
  const uint64_t s = ns / 1'000'000'000;
  if (s < 1) {
    std::snprintf(buf, sizeof buf, "%llums", static_cast<unsigned long long>(ms));
  } else if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s / 60 % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llud%02lluh", static_cast<unsigned long long>(s / 86400),
                  static_cast<unsigned long long>(s / 3600 % 24));
  }
  return buf;
}

std::string human_latency(uint64_t ns) {
  if (ns == 0) return "-";
  char buf[32];
  const auto x = static_cast<double>(ns);
  if (ns < 1000) {
    std::snprintf(buf, sizeof buf, "%lluns", static_cast<unsigned long long>(ns));
  } else if (ns < 999'500) {  // rounds below 1000µs
    std::snprintf(buf, sizeof buf, ns < 99'950 ? "%.1f\u00b5s" : "%.0f\u00b5s", x / 1e3);
  } else if (ns < 999'500'000) {
    std::snprintf(buf, sizeof buf, ns < 9'995'000 ? "%.2fms" : ns < 99'950'000 ? "%.1fms" : "%.0fms", x / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2fs", x / 1e9);
  }
  return buf;
}

std::string human_rate(double v, bool bytes) {
  if (!(v > 0)) return bytes ? "0B" : "0";  // also NaN
  if (bytes) return human_bytes(static_cast<uint64_t>(std::llround(v)));
  if (v < 9.95) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  if (v >= 1.8e19) return human_count(UINT64_MAX);
  return human_count(static_cast<uint64_t>(std::llround(v)));
}

double per_second(uint64_t before, uint64_t after, uint64_t dt_ns) noexcept {
  if (dt_ns == 0 || after <= before) return 0.0;
  return static_cast<double>(after - before) * 1e9 / static_cast<double>(dt_ns);
}

int64_t parse_duration(std::string_view t) noexcept {
  size_t i = 0;
  while (i < t.size() && ((t[i] >= '0' && t[i] <= '9') || t[i] == '.')) ++i;
  const std::string_view number = t.substr(0, i), unit = t.substr(i);
  if (number.empty() || number.front() == '.' || number.back() == '.' ||
      number.find('.') != number.rfind('.')) {
    return -1;
  }
  double scale = 0;
  if (unit.empty() || unit == "s") {
    scale = 1e9;
  } else if (unit == "ms") {
    scale = 1e6;
  } else if (unit == "us" || unit == "\u00b5s") {
    scale = 1e3;
  } else if (unit == "ns") {
    scale = 1;
  } else if (unit == "m") {
    scale = 60e9;
  } else if (unit == "h") {
    scale = 3600e9;
  } else {
    return -1;
  }
  double v = 0;
  const auto r = std::from_chars(number.data(), number.data() + number.size(), v);
  if (r.ec != std::errc() || r.ptr != number.data() + number.size()) return -1;
  const double ns = v * scale;
  if (!(ns < 9.2e18)) return -1;  // also NaN
  return static_cast<int64_t>(std::llround(ns));
}

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    const auto c = static_cast<unsigned char>(s[i]);
    if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7F))) {
      out += '?';
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    const auto c = static_cast<unsigned char>(s[i]);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n == 1) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default:
          if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
          } else {
            out += static_cast<char>(c);
          }
      }
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  out += '"';
  return out;
}

std::string Table::render() const {
  std::vector<size_t> w(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) w[c] = width(columns_[c].title);
  for (const auto& r : rows_) {
    for (size_t c = 0; c < r.size() && c < w.size(); ++c) w[c] = std::max(w[c], width(r[c]));
  }
  std::string out;
  auto line = [&](auto cell_of) {
    std::string l;
    for (size_t c = 0; c < columns_.size(); ++c) {
      const std::string_view cell = cell_of(c);
      const std::string pad(w[c] - width(cell), ' ');
      if (c > 0) l += "  ";
      if (columns_[c].align == Align::Right) {
        l += pad;
        l += cell;
      } else {
        l += cell;
        l += pad;
      }
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();  // no trailing blanks
    out += l;
    out += '\n';
  };
  line([&](size_t c) -> std::string_view { return columns_[c].title; });
  for (const auto& r : rows_) {
    line([&](size_t c) -> std::string_view { return c < r.size() ? std::string_view(r[c]) : ""; });
  }
  return out;
}

void JsonObject::key(std::string_view k) {
  out_ += out_.empty() ? "{" : ", ";
  out_ += json_string(k);
  out_ += ": ";
}

JsonObject& JsonObject::num(std::string_view k, uint64_t v) {
  key(k);
  out_ += std::to_string(v);
  return *this;
}

JsonObject& JsonObject::num(std::string_view k, int64_t v) {
  key(k);
  out_ += std::to_string(v);
  return *this;
}

JsonObject& JsonObject::str(std::string_view k, std::string_view v) {
  key(k);
  out_ += json_string(v);
  return *this;
}

JsonObject& JsonObject::boolean(std::string_view k, bool v) {
  key(k);
  out_ += v ? "true" : "false";
  return *this;
}

JsonObject& JsonObject::real(std::string_view k, double v) {
  if (!std::isfinite(v)) return null(k);
  key(k);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  out_ += buf;
  return *this;
}

JsonObject& JsonObject::null(std::string_view k) {
  key(k);
  out_ += "null";
  return *this;
}

JsonObject& JsonObject::raw(std::string_view k, std::string_view json) {
  key(k);
  out_ += json;
  return *this;
}

JsonArray& JsonArray::raw(std::string_view json) {
  if (!out_.empty()) out_ += ",\n  ";
  out_ += json;
  return *this;
}

}  // namespace bus::ctl
