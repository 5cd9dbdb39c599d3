// Private to bus/config: the table of scalar keys ([busd], [limits] and [cluster]) that parsing,
// rendering, "did you mean" suggestions and reloadable_diff all read, so a key is described once.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.hpp"

namespace bus::config::detail {

enum class Form : uint8_t {
  Text,          // a string; Field::check says whether it is acceptable
  Flag,          // true or false
  Integer,       // an integer in [min, max]
  OctalMode,     // a file mode <= max: a string of octal digits ("0660") or a TOML 0o660
  RingCapacity,  // 0 (derive from max_message_size) or a power of two in [min, max]
};

using Member = std::variant<std::string Config::*, bool Config::*, uint32_t Config::*,
                            uint32_t Limits::*, uint64_t Limits::*, std::string Cluster::*,
                            uint32_t Cluster::*, uint64_t Cluster::*, std::string Tls::*,
                            bool Tls::*>;

struct Field {
  std::string_view table;  // "busd", "limits" or "cluster"
  std::string_view name;
  Form form;
  Member member;
  bool restart;  // a change takes effect only at the next start, not on reload
  uint64_t min = 0;
  uint64_t max = 0;
  /// Text only: "" when the value is acceptable, else the problem ("must be one of ...").
  std::string (*check)(std::string_view) = nullptr;
  std::string_view help;  // one line for default_config_text()
};

/// Every scalar key, in document order.
[[nodiscard]] std::span<const Field> fields() noexcept;

/// The tables of the document, in order, and the keys of one [[acl]], one [[links]], the [dpdk]
/// and one [[dpdk.ports]] table.
inline constexpr std::string_view kTables[] = {"busd", "limits", "cluster", "tls", "acl", "tokens", "slow_consumers", "links", "dpdk"};
inline constexpr std::string_view kAclKeys[] = {"uid", "gid", "name", "identity", "publish", "subscribe"};
inline constexpr std::string_view kTokenKeys[] = {"identity", "token", "token_file"};
inline constexpr std::string_view kSlowKeys[] = {"name", "subjects", "policy"};
inline constexpr std::string_view kLinkKeys[] = {"kind",     "peer",   "port",       "local",
                                                 "peer_mac", "window", "rto_min_us", "tls",
                                                 "server_name", "token", "token_file",
                                                 "device", "ring_bytes", "send_depth", "recv_depth",
                                                 "signal_every", "inline_bytes", "batch_wrs", "ib_port", "gid_index"};
/// The keys of kLinkKeys that only a kind = "rdma" link may have (and local, shared with dpdk).
inline constexpr std::string_view kRdmaLinkKeys[] = {"device",       "ring_bytes",   "send_depth", "recv_depth",
                                                     "signal_every", "inline_bytes", "batch_wrs",  "ib_port",
                                                     "gid_index"};
/// A kind = "rdma" link's ranges (rdma::check's) and the frame slack above max_message_size.
inline constexpr int64_t kMinRdmaDepth = 4, kMaxRdmaDepth = 32768;
inline constexpr int64_t kMaxRdmaInline = 1024;
inline constexpr int64_t kMinRdmaRing = 4096, kMaxRdmaRing = int64_t{1} << 30;
inline constexpr int64_t kMaxRdmaPort = 255, kMaxRdmaGidIndex = 255;  // ibv port_num and sgid_index are 8 bits
inline constexpr uint64_t kRdmaFrameSlack = 4096;  // link framing and routing prefix (as dpdk_links.cpp)
/// The least ring_bytes for `max_message_size`: 4 x (max frame + its 4-byte length).
[[nodiscard]] constexpr uint64_t rdma_min_ring(uint64_t max_message_size) noexcept {
  return 4 * (max_message_size + kRdmaFrameSlack + 4);
}
/// The keys of kLinkKeys that only a kind = "tcp" link may have.
inline constexpr std::string_view kTcpLinkKeys[] = {"tls", "server_name", "token", "token_file"};
/// A token's least length (a shorter secret is refused by the config).
inline constexpr size_t kMinTokenLength = 16;
/// The keys of kLinkKeys that only a kind = "dpdk" link may have.
inline constexpr std::string_view kDpdkLinkKeys[] = {"port", "local", "peer_mac", "window",
                                                     "rto_min_us"};
inline constexpr std::string_view kDpdkKeys[] = {"eal", "ports"};
inline constexpr std::string_view kDpdkPortKeys[] = {
    "name",    "cpu", "idle", "spin_us",     "sleep_max_us", "mbufs",          "rx_desc",
    "tx_desc", "mtu", "mac",  "impair_loss", "impair_dup",   "impair_reorder", "impair_corrupt",
    "impair_seed"};
/// Largest uid/gid in an [[acl]] rule ((uid_t)-1 means "no id" to the kernel).
inline constexpr uint64_t kMaxId = UINT32_MAX - 1;

/// A kind = "dpdk" link's window and rto_min_us ranges.
inline constexpr int64_t kMinWindow = 16, kMaxWindow = 4096;
inline constexpr int64_t kMinRtoUs = 50, kMaxRtoUs = 1'000'000;
/// [dpdk] eal: at most this many arguments.
inline constexpr size_t kMaxEalArgs = 64;
/// A [[dpdk.ports]] name: at most this many characters (DPDK's device names, RTE_DEV_NAME_MAX_LEN
/// with its NUL).
inline constexpr size_t kMaxPortName = 63;

/// The integer keys of a [[dpdk.ports]] table, in document order: range and the one-line
/// explanation of the commented example in default_config_text().
struct PortNumber {
  std::string_view name;
  std::variant<int32_t DpdkPort::*, uint32_t DpdkPort::*, uint64_t DpdkPort::*> member;
  int64_t min;
  int64_t max;
  std::string_view help;
};
[[nodiscard]] std::span<const PortNumber> port_numbers() noexcept;
[[nodiscard]] int64_t number_of(const DpdkPort& p, const PortNumber& n) noexcept;
void set(DpdkPort& p, const PortNumber& n, int64_t v);  // v within the key's range

[[nodiscard]] const std::string* text_of(const Config& c, const Field& f) noexcept;
[[nodiscard]] bool flag_of(const Config& c, const Field& f) noexcept;
[[nodiscard]] uint64_t number_of(const Config& c, const Field& f) noexcept;  // Integer forms
void set(Config& c, const Field& f, std::string v);
void set(Config& c, const Field& f, bool v);
void set(Config& c, const Field& f, uint64_t v);  // v within the field's range

/// The field's value in `c` as a TOML value ("0660" for a mode, 1_048_576 for a large number).
[[nodiscard]] std::string toml_value(const Config& c, const Field& f);

/// The syntax of "host:port" and "[v6]:port" (no look-up): Ok, or what is wrong with it.
enum class HostPort : uint8_t {
  Ok,
  Shape,  // not host:port or [v6]:port (no port, a bad host, several colons without brackets)
  Port,   // the shape is right but the port is not in [1, 65535]
};
/// "host:port" (a name or IPv4 address: A-Z a-z 0-9 . _ -) or "[v6]:port" (hex digits, ':' and
/// '.', and an optional %zone). On Ok, *key (when not null) is the endpoint with the host in
/// lower case and the port as a plain number, so that two spellings of one peer compare equal.
[[nodiscard]] HostPort host_port(std::string_view v, std::string* key = nullptr);
inline constexpr uint32_t kMaxPort = 65535;
/// "a.b.c.d:port": a dotted-quad IPv4 address (four decimal numbers 0..255 without leading
/// zeros, as inet_pton takes them) and a port (Port when not in [1, 65535]); no names. On Ok,
/// *key (when not null) is address << 16 | port, so that two spellings of one endpoint
/// ("10.0.0.1:9000", "10.0.0.1:09000") compare equal.
[[nodiscard]] HostPort ipv4_port(std::string_view v, uint64_t* key = nullptr);
/// "aa:bb:cc:dd:ee:ff": six hex bytes (either case) separated by ':'.
[[nodiscard]] bool is_mac(std::string_view v);
/// A [[dpdk.ports]] name: 1 to kMaxPortName characters of A-Z a-z 0-9 . _ : -.
[[nodiscard]] bool is_port_name(std::string_view v);

// Text helpers (text.cpp).
/// A TOML basic string: quotes, backslash and control characters escaped.
[[nodiscard]] std::string quoted(std::string_view s);
/// 1048576 -> "1_048_576" (numbers below 10000 as they are).
[[nodiscard]] std::string grouped(uint64_t v);
/// Octal with a leading zero: 0660 -> "0660".
[[nodiscard]] std::string octal(uint32_t mode);
/// Control characters as \xNN, so that a message stays on one line whatever it quotes.
[[nodiscard]] std::string one_line(std::string_view s);
/// Optimal-string-alignment distance (an adjacent swap counts 1), capped: any result above
/// `cap` is returned as cap + 1.
[[nodiscard]] size_t edit_distance(std::string_view a, std::string_view b, size_t cap);
/// " (did you mean 'x'?)" for the closest candidate within distance 2, else "".
[[nodiscard]] std::string suggestion(std::string_view name, std::span<const std::string_view> among);

}  // namespace bus::config::detail
