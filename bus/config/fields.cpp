// The scalar keys of busd.toml: form, range, whether a reload applies them, and the one-line
// explanation default_config_text() prints. Defaults live in config.hpp.
#include "config/fields.hpp"

#include <sys/un.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <iterator>
#include <optional>

#include "shm/layout.hpp"
#include "shm/wait.hpp"

namespace bus::config::detail {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
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

constexpr size_t kMaxNodeName = 255;
constexpr size_t kMaxHostName = 253;  // a DNS name
constexpr size_t kMaxPortDigits = 10;  // more cannot be a port (and cannot overflow below)

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
         c == '_' || c == '-';
}

bool is_name(std::string_view v, size_t max) {
  return !v.empty() && v.size() <= max && std::all_of(v.begin(), v.end(), is_name_char);
}

bool is_hex_digit(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The inside of [...]: hex digits, ':' and '.' (an embedded IPv4), at least one ':', then an
// optional %zone (an interface name).
bool is_v6(std::string_view v) {
  std::string_view zone;
  if (const size_t pct = v.find('%'); pct != std::string_view::npos) {
    zone = v.substr(pct + 1);
    v = v.substr(0, pct);
    if (!is_name(zone, kMaxNodeName)) return false;
  }
  return v.find(':') != std::string_view::npos && v.size() <= 45 &&  // INET6_ADDRSTRLEN - 1
         std::all_of(v.begin(), v.end(),
                     [](char c) { return is_hex_digit(c) || c == ':' || c == '.'; });
}

// Decimal digits only; std::nullopt for anything else (a sign, a space, nothing).
std::optional<uint64_t> port_number(std::string_view v) {
  if (v.empty() || v.size() > kMaxPortDigits || !std::all_of(v.begin(), v.end(), is_digit)) {
    return std::nullopt;
  }
  uint64_t n = 0;
  for (const char c : v) n = n * 10 + static_cast<uint64_t>(c - '0');
  return n;
}

std::string port_problem(std::string_view v) {
  return "port must be in [1, " + std::to_string(kMaxPort) + "], got " + quoted(v);
}

std::string check_cluster_name(std::string_view v) {
  if (v.size() > kMaxNodeName) {
    return "must be at most " + std::to_string(kMaxNodeName) + " characters, got " +
           std::to_string(v.size());
  }
  if (is_name(v, kMaxNodeName)) return {};
  return "must be 1 to 255 characters of A-Z a-z 0-9 . _ -, got " + quoted(v);
}

std::string check_node(std::string_view v) {
  if (v.size() > kMaxNodeName) {
    return "must be at most " + std::to_string(kMaxNodeName) + " characters, got " +
           std::to_string(v.size());
  }
  if (v.empty() || is_name(v, kMaxNodeName)) return {};
  return "must be \"\" (the host name) or 1 to 255 characters of A-Z a-z 0-9 . _ -, got " +
         quoted(v);
}

std::string check_listen(std::string_view v) {
  if (v.empty()) return {};
  std::string_view port = v;  // "7400" or ":7400": a port on the loopback address
  if (port.front() == ':') port.remove_prefix(1);
  HostPort syntax = HostPort::Shape;
  if (const auto n = port_number(port)) {
    syntax = *n >= 1 && *n <= kMaxPort ? HostPort::Ok : HostPort::Port;
  } else {
    syntax = host_port(v);
  }
  switch (syntax) {
    case HostPort::Ok: return {};
    case HostPort::Port: return port_problem(v);
    case HostPort::Shape: break;
  }
  return "must be \"\" (no listener), a port (loopback), \"host:port\" or \"[v6]:port\", got " +
         quoted(v);
}

std::string check_rdma_listen(std::string_view v) {
  if (v.empty()) return {};
  switch (host_port(v)) {
    case HostPort::Ok: return {};
    case HostPort::Port: return port_problem(v);
    case HostPort::Shape: break;
  }
  return "must be \"\" (none) or \"addr:port\" / \"[v6]:port\" (an address of the RDMA interface), got " +
         quoted(v);
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
    {"busd", "tcp_listen", Form::Text, &Config::tcp_listen, true, 0, 0, check_listen,
     "TCP listener for remote agents (tcp://host:port): \"\" = none; \"7401\" or \":7401\" = "
     "127.0.0.1:7401 (loopback); \"host:port\" or \"[v6]:port\" binds there."},
    {"busd", "tcp_agent_uid", Form::Integer, &Config::tcp_agent_uid, false, 0, kMaxId, nullptr,
     "The uid [[acl]] rules see for a remote agent (TCP has no peer credentials); 65534 = "
     "nobody: nothing is allowed until a rule grants it."},
    {"busd", "lanes", Form::Flag, &Config::lanes, false, 0, 0, nullptr,
     "Direct lanes between local agents that talk (their messages skip busd); false = every "
     "message passes through busd. A change closes every lane."},
    {"busd", "lanes_verify_same_uid", Form::Flag, &Config::lanes_verify_same_uid, false, 0, 0, nullptr,
     "On a lane between agents of the same uid, the reader verifies each message too (another "
     "uid's are always copied, then verified); false trusts same-uid writers."},
    {"busd", "slow_event_interval_ms", Form::Integer, &Config::slow_event_interval_ms, false, 0,
     3'600'000, nullptr,
     "$bus.slow events: at most one \"became slow\" per subscription per this many ms (each "
     "followed by its \"recovered\"); 0 = no limit."},
    {"busd", "metrics_listen", Form::Text, &Config::metrics_listen, true, 0, 0, check_listen,
     "Prometheus metrics over HTTP (GET /metrics): \"\" = off; \"9464\" or \":9464\" = "
     "127.0.0.1:9464 (loopback); \"host:port\" or \"[v6]:port\" binds there."},

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
    {"limits", "max_lanes_per_agent", Form::Integer, &Limits::max_lanes_per_agent, false, 1,
     100'000, nullptr, "Lanes one agent may have open at once (each holds two rings)."},
    {"limits", "max_lane_targets", Form::Integer, &Limits::max_lane_targets, false, 1, 1024,
     nullptr, "Subscribers a subject may have and still go over lanes (more: through busd)."},
    {"limits", "slow_buffer_bytes", Form::Integer, &Limits::slow_buffer_bytes, true, 0, 1 * kGiB,
     nullptr,
     "Per agent: bytes busd keeps for it while its ring is full, for drop-oldest, drop-newest and "
     "disconnect subscriptions (rounded down to a power of two; below 4096: none)."},
    {"limits", "max_pending_connections", Form::Integer, &Limits::max_pending_connections, false, 1,
     1'000'000, nullptr,
     "Agent connections (local and remote) not registered yet, at once; past it a new one is "
     "refused with an error."},
    {"limits", "handshake_ms", Form::Integer, &Limits::handshake_ms, false, 100, 600'000, nullptr,
     "An agent connection must register within this long, else it is closed."},
    {"limits", "max_connections_per_address", Form::Integer, &Limits::max_connections_per_address,
     false, 1, 1'000'000, nullptr,
     "TCP connections from one remote address at once (remote agents, and link connections "
     "before their Hello); past it a new one is refused."},

    {"cluster", "name", Form::Text, &Cluster::name, true, 0, 0, check_cluster_name,
     "Cluster name (1 to 255 of A-Z a-z 0-9 . _ -): peers of another cluster name are refused at "
     "the handshake."},
    {"cluster", "node", Form::Text, &Cluster::node, true, 0, 0, check_node,
     "This busd's name among its peers (the same characters as name); \"\" = the host name."},
    {"cluster", "listen", Form::Text, &Cluster::listen, true, 0, 0, check_listen,
     "TCP listener for peer busds: \"\" = none; \"7400\" or \":7400\" = "
     "127.0.0.1:7400 (loopback); \"host:port\" or \"[v6]:port\" binds there."},
    {"cluster", "rdma_listen", Form::Text, &Cluster::rdma_listen, true, 0, 0, check_rdma_listen,
     "RDMA listener for peer busds' kind = \"rdma\" links: \"\" = none; \"addr:port\" (an "
     "address of the RDMA interface; it picks the device)."},
    {"cluster", "heartbeat_ms", Form::Integer, &Cluster::heartbeat_ms, true, 10, 600'000, nullptr,
     "A heartbeat to a peer when nothing else was sent to it for this long."},
    {"cluster", "dead_after_ms", Form::Integer, &Cluster::dead_after_ms, true, 30, 3'600'000,
     nullptr,
     "Nothing heard from a peer for this long: its link is down. More than heartbeat_ms."},
    {"cluster", "handshake_ms", Form::Integer, &Cluster::handshake_ms, true, 10, 600'000, nullptr,
     "A new peer connection must finish its Hello within this long."},
    {"cluster", "backoff_min_ms", Form::Integer, &Cluster::backoff_min_ms, true, 1, 600'000,
     nullptr,
     "First redial delay after a link fails; it doubles per failure up to backoff_max_ms."},
    {"cluster", "backoff_max_ms", Form::Integer, &Cluster::backoff_max_ms, true, 1, 600'000,
     nullptr, "Longest redial delay, at least backoff_min_ms (each delay has +-25% jitter)."},
    {"cluster", "hold_bytes", Form::Integer, &Cluster::hold_bytes, true, 64 * kKiB, 1024 * kMiB,
     nullptr,
     "Per peer: bytes of messages held while its link is down; past it they are dropped and "
     "counted."},
    {"cluster", "max_peers", Form::Integer, &Cluster::max_peers, true, 1, 4096, nullptr,
     "Peer busds this one knows at once: its [[links]] and every node name that dialed in; "
     "past it a new node's link is refused."},
    {"cluster", "resubscribe_grace_ms", Form::Integer, &Cluster::resubscribe_grace_ms, true, 0, 600'000,
     nullptr,
     "After a start, how long this busd's agents have to come back before its peers drop the "
     "interests its previous run left with them (its snapshot ends then)."},

    {"tls", "cert", Form::Text, &Tls::cert, true, 0, 0, absolute_path_or_empty,
     "PEM certificate (chain) busd presents on its TLS listeners and links; \"\" = none."},
    {"tls", "key", Form::Text, &Tls::key, true, 0, 0, absolute_path_or_empty,
     "PEM private key of cert."},
    {"tls", "ca", Form::Text, &Tls::ca, true, 0, 0, absolute_path_or_empty,
     "PEM CA bundle that verifies peer busds and remote agents; \"\" = the system's CAs."},
    {"tls", "verify_peer", Form::Flag, &Tls::verify_peer, true, 0, 0, nullptr,
     "On TLS listeners, require a client certificate the CA signed (mutual TLS; its CN or SAN "
     "is the identity); when dialing, verify the peer's certificate. false: a listener asks for "
     "none (use [[tokens]] for identities)."},
    {"tls", "listen_links", Form::Flag, &Tls::listen_links, true, 0, 0, nullptr,
     "[cluster] listen speaks TLS only (needs cert and key); links dial with TLS per [[links]] tls."},
    {"tls", "listen_agents", Form::Flag, &Tls::listen_agents, true, 0, 0, nullptr,
     "[busd] tcp_listen speaks TLS only (needs cert and key): agents connect with tls://host:port."},
};

// Every uint32_t field's range fits its type (set() casts).
static_assert(std::all_of(std::begin(kFields), std::end(kFields), [](const Field& f) {
  return std::holds_alternative<uint64_t Limits::*>(f.member) ||
         std::holds_alternative<uint64_t Cluster::*>(f.member) || f.max <= UINT32_MAX;
}));

// Every key is in a table of kTables, and the keys of one table are contiguous (render() writes
// a [table] header where the table changes).
static_assert([] {
  for (size_t i = 0; i < std::size(kFields); ++i) {
    if (std::find(std::begin(kTables), std::end(kTables), kFields[i].table) == std::end(kTables)) {
      return false;
    }
    for (size_t j = i + 1; j < std::size(kFields); ++j) {
      if (kFields[j].table == kFields[i].table && kFields[j - 1].table != kFields[i].table) {
        return false;
      }
    }
  }
  return true;
}());

constexpr PortNumber kPortNumbers[] = {
    {"cpu", &DpdkPort::cpu, -1, 1023, "the CPU of the port's poll thread; -1 = it floats"},
    {"spin_us", &DpdkPort::spin_us, 0, 1'000'000,
     "adaptive: idle polls this long before sleeping"},
    {"sleep_max_us", &DpdkPort::sleep_max_us, 1, 1'000'000,
     "adaptive: longest sleep (rx is seen this late)"},
    {"mbufs", &DpdkPort::mbufs, 1023, 1'048'575, "mbuf pool size"},
    {"rx_desc", &DpdkPort::rx_desc, 64, 16384, "rx descriptors"},
    {"tx_desc", &DpdkPort::tx_desc, 64, 16384, "tx descriptors"},
    {"mtu", &DpdkPort::mtu, 576, 9000, "IP MTU"},
    {"impair_loss", &DpdkPort::impair_loss, 0, 1000, "tests only: per mille of sent packets lost"},
    {"impair_dup", &DpdkPort::impair_dup, 0, 1000, "tests only: per mille duplicated"},
    {"impair_reorder", &DpdkPort::impair_reorder, 0, 1000, "tests only: per mille reordered"},
    {"impair_corrupt", &DpdkPort::impair_corrupt, 0, 1000, "tests only: per mille corrupted"},
    {"impair_seed", &DpdkPort::impair_seed, 0, INT64_MAX, "tests only: seed of those draws"},
};

// Every range fits its member's type (set() casts), and every key is one of kDpdkPortKeys.
static_assert(std::all_of(std::begin(kPortNumbers), std::end(kPortNumbers), [](const PortNumber& n) {
  if (std::find(std::begin(kDpdkPortKeys), std::end(kDpdkPortKeys), n.name) ==
      std::end(kDpdkPortKeys)) {
    return false;
  }
  if (std::holds_alternative<int32_t DpdkPort::*>(n.member)) {
    return n.min >= INT32_MIN && n.max <= INT32_MAX;
  }
  if (std::holds_alternative<uint32_t DpdkPort::*>(n.member)) return n.min >= 0 && n.max <= UINT32_MAX;
  return n.min >= 0;
}));

bool is_ipv4_byte(std::string_view v, uint64_t* out) {
  if (v.empty() || v.size() > 3 || !std::all_of(v.begin(), v.end(), is_digit)) return false;
  if (v.size() > 1 && v.front() == '0') return false;  // 010: octal to inet_aton, refused
  uint64_t n = 0;
  for (const char c : v) n = n * 10 + static_cast<uint64_t>(c - '0');
  *out = n;
  return n <= 255;
}

}  // namespace

std::span<const Field> fields() noexcept { return kFields; }

std::span<const PortNumber> port_numbers() noexcept { return kPortNumbers; }

int64_t number_of(const DpdkPort& p, const PortNumber& n) noexcept {
  if (const auto* m = std::get_if<int32_t DpdkPort::*>(&n.member)) return p.**m;
  if (const auto* m = std::get_if<uint32_t DpdkPort::*>(&n.member)) return p.**m;
  if (const auto* m = std::get_if<uint64_t DpdkPort::*>(&n.member)) {
    return static_cast<int64_t>(p.**m);  // at most INT64_MAX (its range)
  }
  return 0;
}

void set(DpdkPort& p, const PortNumber& n, int64_t v) {
  // Ranges fit the members (see kPortNumbers), so the casts keep the value.
  if (const auto* m = std::get_if<int32_t DpdkPort::*>(&n.member)) p.**m = static_cast<int32_t>(v);
  if (const auto* m = std::get_if<uint32_t DpdkPort::*>(&n.member)) {
    p.**m = static_cast<uint32_t>(v);
  }
  if (const auto* m = std::get_if<uint64_t DpdkPort::*>(&n.member)) p.**m = static_cast<uint64_t>(v);
}

HostPort ipv4_port(std::string_view v, uint64_t* key) {
  const size_t colon = v.find(':');
  if (colon == std::string_view::npos) return HostPort::Shape;
  std::string_view host = v.substr(0, colon);
  uint64_t address = 0;
  for (int i = 0; i < 4; ++i) {
    const size_t dot = i < 3 ? host.find('.') : host.size();
    if (dot == std::string_view::npos) return HostPort::Shape;
    uint64_t byte = 0;
    if (!is_ipv4_byte(host.substr(0, dot), &byte)) return HostPort::Shape;
    address = address << 8 | byte;
    host.remove_prefix(i < 3 ? dot + 1 : dot);
  }
  const auto n = port_number(v.substr(colon + 1));
  if (!n) return HostPort::Shape;
  if (*n < 1 || *n > kMaxPort) return HostPort::Port;
  if (key != nullptr) *key = address << 16 | *n;
  return HostPort::Ok;
}

bool is_mac(std::string_view v) {
  if (v.size() != 17) return false;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i % 3 == 2 ? v[i] != ':' : !is_hex_digit(v[i])) return false;
  }
  return true;
}

bool is_port_name(std::string_view v) {
  return !v.empty() && v.size() <= kMaxPortName &&
         std::all_of(v.begin(), v.end(), [](char c) { return is_name_char(c) || c == ':'; });
}

HostPort host_port(std::string_view v, std::string* key) {
  std::string_view host;
  std::string_view port;
  if (!v.empty() && v.front() == '[') {
    const size_t close = v.find(']');
    if (close == std::string_view::npos || close + 1 >= v.size() || v[close + 1] != ':') {
      return HostPort::Shape;
    }
    host = v.substr(1, close - 1);
    port = v.substr(close + 2);
    if (!is_v6(host)) return HostPort::Shape;
  } else {
    const size_t colon = v.find(':');
    if (colon == std::string_view::npos || v.find(':', colon + 1) != std::string_view::npos) {
      return HostPort::Shape;
    }
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
    if (!is_name(host, kMaxHostName)) return HostPort::Shape;
  }
  const auto n = port_number(port);
  if (!n) return HostPort::Shape;
  if (*n < 1 || *n > kMaxPort) return HostPort::Port;
  if (key != nullptr) {
    key->clear();
    for (const char c : host) {
      key->push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    }
    key->push_back('#');
    key->append(std::to_string(*n));
  }
  return HostPort::Ok;
}

const std::string* text_of(const Config& c, const Field& f) noexcept {
  if (const auto* m = std::get_if<std::string Config::*>(&f.member)) return &(c.**m);
  if (const auto* m = std::get_if<std::string Cluster::*>(&f.member)) return &(c.cluster.**m);
  if (const auto* m = std::get_if<std::string Tls::*>(&f.member)) return &(c.tls.**m);
  return nullptr;
}

bool flag_of(const Config& c, const Field& f) noexcept {
  if (const auto* t = std::get_if<bool Tls::*>(&f.member)) return c.tls.**t;
  const auto* m = std::get_if<bool Config::*>(&f.member);
  return m != nullptr && c.**m;
}

uint64_t number_of(const Config& c, const Field& f) noexcept {
  if (const auto* m = std::get_if<uint32_t Config::*>(&f.member)) return c.**m;
  if (const auto* m = std::get_if<uint32_t Limits::*>(&f.member)) return c.limits.**m;
  if (const auto* m = std::get_if<uint64_t Limits::*>(&f.member)) return c.limits.**m;
  if (const auto* m = std::get_if<uint32_t Cluster::*>(&f.member)) return c.cluster.**m;
  if (const auto* m = std::get_if<uint64_t Cluster::*>(&f.member)) return c.cluster.**m;
  return 0;
}

void set(Config& c, const Field& f, std::string v) {
  if (const auto* m = std::get_if<std::string Config::*>(&f.member)) c.**m = std::move(v);
  if (const auto* m = std::get_if<std::string Cluster::*>(&f.member)) c.cluster.**m = std::move(v);
  if (const auto* m = std::get_if<std::string Tls::*>(&f.member)) c.tls.**m = std::move(v);
}

void set(Config& c, const Field& f, bool v) {
  if (const auto* m = std::get_if<bool Config::*>(&f.member)) c.**m = v;
  if (const auto* m = std::get_if<bool Tls::*>(&f.member)) c.tls.**m = v;
}

void set(Config& c, const Field& f, uint64_t v) {
  // Ranges of uint32_t fields are within uint32_t (see kFields), so the casts keep the value.
  if (const auto* m = std::get_if<uint32_t Config::*>(&f.member)) c.**m = static_cast<uint32_t>(v);
  if (const auto* m = std::get_if<uint32_t Limits::*>(&f.member)) {
    c.limits.**m = static_cast<uint32_t>(v);
  }
  if (const auto* m = std::get_if<uint64_t Limits::*>(&f.member)) c.limits.**m = v;
  if (const auto* m = std::get_if<uint32_t Cluster::*>(&f.member)) {
    c.cluster.**m = static_cast<uint32_t>(v);
  }
  if (const auto* m = std::get_if<uint64_t Cluster::*>(&f.member)) c.cluster.**m = v;
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
