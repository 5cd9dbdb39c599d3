// busd's log: one line per event, key=value fields, to stderr (the journal picks it up under
// systemd). `log::info("agent_joined", {{"name", n}, {"id", id}})`.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace bus::log {

enum class Level : uint8_t { Error, Warn, Info, Debug };

/// "error" | "warn" | "info" | "debug"; anything else leaves the level unchanged and returns false.
bool set_level(std::string_view name) noexcept;
[[nodiscard]] bool enabled(Level l) noexcept;

struct Field {
  std::string_view key;
  std::string value;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(v) {}
  Field(std::string_view k, const std::string& v) : key(k), value(v) {}
  template <class N, class = std::enable_if_t<std::is_arithmetic_v<N>>>
  Field(std::string_view k, N v) : key(k), value(std::to_string(v)) {}
};

void write(Level l, std::string_view event, std::initializer_list<Field> fields);

inline void error(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Error, e, f); }
inline void warn(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Warn, e, f); }
inline void info(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Info, e, f); }
inline void debug(std::string_view e, std::initializer_list<Field> f = {}) {
  if (enabled(Level::Debug)) write(Level::Debug, e, f);
}

}  // namespace bus::log
