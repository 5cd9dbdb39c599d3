// The scalar keys of busd.toml: form, range, whether a reload applies them, and the one-line
// explanation default_config_text() prints. Defaults live in config.hpp.
#include "config/fields.hpp"

#include <sys/un.h>

#include <algorithm>
#include <charconv>

#include "shm/layout.hpp"
#include "shm/wait.hpp"

namespace bus::config::detail {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr size_t kMaxSocketPath = sizeof(sockaddr_un{}.sun_path) - 1;  // room for the NUL

std::string absolute_path_or_empty(std::string_view v) {
  if (v.empty() || v.front() == '/') return {};
  return "must be an absolute path or \"\" (default), got " + quoted(v);
}

std::string check_socket(std::string_view v) {
  if (std::string p = absolute_path_or_empty(v); !p.empty()) return p;
  if (v.size() > kMaxSocketPath) {
    return "must be at most " + std::to_string(kMaxSocketPath) + " bytes (a socket address), got " +
           std::to_string(v.size());
  }
  return {};
}

std::string check_group(std::string_view v) {
  const bool numeric = !v.empty() && std::all_of(v.begin(), v.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (numeric) {
    uint64_t gid = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), gid);
    if (ec == std::errc{} && end == v.data() + v.size() && gid <= kMaxId) return {};
    return "numeric gid out of range [0, " + std::to_string(kMaxId) + "], got " + std::string(v);
  }
  const bool name_chars = std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '.';
  });
  if (name_chars && (v.empty() || v.front() != '-')) return {};
  return "must be a group name, a numeric gid or \"\" (busd's group), got " + quoted(v);
}

std::string check_log_level(std::string_view v) {
  if (v == "error" || v == "warn" || v == "info" || v == "debug") return {};
  return "must be one of error, warn, info, debug, got " + quoted(v);
}

std::string check_wait(std::string_view v) {
  auto ws = shm::parse_wait_strategy(v);
  return ws ? std::string() : ws.error().detail();
}

constexpr Field kFields[] = {
    {"busd", "socket", Form::Text, &Config::socket, true, 0, 0, check_socket,
     "Control socket path; \"\" = $BUS_SOCKET, else $XDG_RUNTIME_DIR/busd.sock, "
     "else /run/busd/busd.sock."},
    {"busd", "socket_mode", Form::OctalMode, &Config::socket_mode, true, 0, 0777, nullptr,
     "File mode of the control socket, in octal (\"0660\": owner and group may connect)."},
    {"busd", "socket_group", Form::Text, &Config::socket_group, true, 0, 0, check_group,
     "Group (name or number) that owns the control socket; \"\" = busd's own group."},
    {"busd", "shm_dir", Form::Text, &Config::shm_dir, true, 0, 0, absolute_path_or_empty,
     "Directory of busd's named shared memory (the counters page busctl reads); "
     "\"\" = next to the socket."},
    {"busd", "log_level", Form::Text, &Config::log_level, false, 0, 0, check_log_level,
     "Log level: error, warn, info or debug."},
    {"busd", "drain_timeout_ms", Form::Integer, &Config::drain_timeout_ms, false, 0, 600'000,
     nullptr, "On SIGTERM, time to deliver what is queued before exiting (0 = exit at once)."},
    {"busd", "heartbeat_interval_ms", Form::Integer, &Config::heartbeat_interval_ms, false, 100,
     3'600'000, nullptr,
     "Heartbeat period: the fallback way to notice a dead agent (a closed socket is the first)."},
    {"busd", "heartbeat_misses", Form::Integer, &Config::heartbeat_misses, false, 1, 1000,
     nullptr, "An agent that misses this many heartbeats in a row is declared dead."},
    {"busd", "wait", Form::Text, &Config::wait, true, 0, 0, check_wait,
     "busd's wait strategy: spin, yield, block, adaptive or adaptive:<n>ns|us|ms "
     "(spin that long, then sleep)."},
    {"busd", "verify_same_uid", Form::Flag, &Config::verify_same_uid, false, 0, 0, nullptr,
     "Verify envelopes from agents of busd's own uid too (other uids' are always verified)."},
    {"busd", "acl_owner_all", Form::Flag, &Config::acl_owner_all, false, 0, 0, nullptr,
     "busd's own uid may publish and subscribe to everything, before the [[acl]] rules."},

    {"limits", "max_agents", Form::Integer, &Limits::max_agents, false, 1, 1'000'000, nullptr,
     "Agents registered at once."},
    {"limits", "max_subscriptions_per_agent", Form::Integer, &Limits::max_subscriptions_per_agent,
     false, 1, 1'000'000, nullptr, "Subscriptions one agent may hold."},
    {"limits", "max_message_size", Form::Integer, &Limits::max_message_size, true, kKiB,
     64 * kMiB, nullptr, "Largest encoded envelope in bytes, at every entry point."},
    {"limits", "max_pending_requests_per_agent", Form::Integer,
     &Limits::max_pending_requests_per_agent, false, 1, 1'000'000, nullptr,
     "Requests one agent may have awaiting a reply."},
    {"limits", "ring_capacity", Form::RingCapacity, &Limits::ring_capacity, true,
     shm::kMinCapacity, shm::kMaxCapacity, nullptr,
     "Data bytes of each shared-memory ring, a power of two; 0 = the smallest ring that takes "
     "max_message_size."},
};

// Every uint32_t field's range fits its type (set() casts).
static_assert(std::all_of(std::begin(kFields), std::end(kFields), [](const Field& f) {
  return std::holds_alternative<uint64_t Limits::*>(f.member) || f.max <= UINT32_MAX;
}));

}  // namespace

std::span<const Field> fields() noexcept { return kFields; }

const std::string* text_of(const Config& c, const Field& f) noexcept {
  const auto* m = std::get_if<std::string Config::*>(&f.member);
  return m != nullptr ? &(c.**m) : nullptr;
}

bool flag_of(const Config& c, const Field& f) noexcept {
  const auto* m = std::get_if<bool Config::*>(&f.member);
  return m != nullptr && c.**m;
}

uint64_t number_of(const Config& c, const Field& f) noexcept {
  if (const auto* m = std::get_if<uint32_t Config::*>(&f.member)) return c.**m;
  if (const auto* m = std::get_if<uint32_t Limits::*>(&f.member)) return c.limits.**m;
  if (const auto* m = std::get_if<uint64_t Limits::*>(&f.member)) return c.limits.**m;
  return 0;
}

void set(Config& c, const Field& f, std::string v) {
  if (const auto* m = std::get_if<std::string Config::*>(&f.member)) c.**m = std::move(v);
}

void set(Config& c, const Field& f, bool v) {
  if (const auto* m = std::get_if<bool Config::*>(&f.member)) c.**m = v;
}

void set(Config& c, const Field& f, uint64_t v) {
  // Ranges of uint32_t fields are within uint32_t (see kFields), so the casts keep the value.
  if (const auto* m = std::get_if<uint32_t Config::*>(&f.member)) c.**m = static_cast<uint32_t>(v);
  if (const auto* m = std::get_if<uint32_t Limits::*>(&f.member)) {
    c.limits.**m = static_cast<uint32_t>(v);
  }
  if (const auto* m = std::get_if<uint64_t Limits::*>(&f.member)) c.limits.**m = v;
}

std::string toml_value(const Config& c, const Field& f) {
  switch (f.form) {
    case Form::Text: return quoted(*text_of(c, f));
    case Form::Flag: return flag_of(c, f) ? "true" : "false";
    case Form::OctalMode: return quoted(octal(static_cast<uint32_t>(number_of(c, f))));
    case Form::Integer:
    case Form::RingCapacity: break;
  }
  return grouped(number_of(c, f));
}

}  // namespace bus::config::detail
