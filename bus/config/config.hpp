// busd's configuration: a TOML file (busd.toml) with the tables [busd], [limits], [cluster],
// [tls], [[acl]], [[tokens]], [[slow_consumers]], [[links]] and [dpdk] (with its [[dpdk.ports]]).
//
// Every knob has one default, here: the member initializers below (sizes from bus/limits.hpp).
// default_config_text() is the embedded default document, written out from these values with a
// one-line explanation per key (busd --print-default-config prints it), so the two cannot drift.
//
// A bad file gives one error (the first in the file) whose detail() is one line naming the
// file, the line where toml++ knows it, the key with its table path and the problem:
//   busd.toml:12: limits.max_agents: must be an integer in [1, 1000000], got -3
//   busd.toml:4: unknown key 'limits.max_agent' (did you mean 'max_agents'?)
//   busd.toml:7:14: TOML syntax: Error while parsing key-value pair: expected '=', saw 'x'
// The caller prints detail() and exits non-zero. Parsing is pure: no file system or user
// database look-ups (busd resolves socket_group and the socket path when it starts).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bus/error.hpp"
#include "bus/limits.hpp"

namespace bus::config {

/// One [[acl]] table: who (peer credentials from SO_PEERCRED, agent name) and what they may do.
struct AclRule {
  std::optional<uint32_t> uid;  // absent = any uid
  std::optional<uint32_t> gid;  // absent = any gid
  std::string name = "*";       // agent-name glob: '*' matches any run of characters, '?' one
  /// Remote identity glob (a TLS client certificate's CN or SAN, or a [[tokens]] identity):
  /// absent = any agent; present = only remote agents and links whose identity matches.
  std::optional<std::string> identity{};
  std::vector<std::string> publish;    // subject patterns (the router validates their syntax)
  std::vector<std::string> subscribe;  // subject patterns

  friend bool operator==(const AclRule&, const AclRule&) = default;
};

/// What busd does with a message for a subscription that finds its agent's ring full (the
/// order of control.fbs SlowPolicy).
enum class SlowPolicy : uint8_t { Block, DropOldest, DropNewest, Disconnect };

/// "block", "drop-oldest", "drop-newest", "disconnect".
[[nodiscard]] std::string_view slow_policy_name(SlowPolicy p) noexcept;

/// One [[slow_consumers]] table: the operator's choice of slow-consumer policy for the
/// subscriptions of matching agents, over what the agent asked. The first rule whose name glob
/// matches the agent and one of whose subjects covers the subscription's pattern decides.
struct SlowRule {
  std::string name = "*";            // agent-name glob ('*' any run of characters, '?' one)
  std::vector<std::string> subjects;  // subject patterns; a subscription inside one matches
  SlowPolicy policy = SlowPolicy::Block;

  friend bool operator==(const SlowRule&, const SlowRule&) = default;
};

struct Limits {
  uint32_t max_agents = bus::defaults::kMaxAgents;                     // agents registered at once
  uint32_t max_subscriptions_per_agent = bus::defaults::kMaxSubscriptionsPerAgent;    // subscriptions one agent may hold
  uint32_t max_message_size = bus::defaults::kMaxMessageSize;  // largest encoded envelope, bytes
  uint32_t max_pending_requests_per_agent = bus::defaults::kMaxPendingRequestsPerAgent; // requests awaiting a reply, per agent
  /// Data bytes per shm ring, a power of two. In a file, 0 or no key: the smallest ring that takes
  /// max_message_size (shm::capacity_for), which for the default size is kRingCapacity.
  uint64_t ring_capacity = bus::defaults::kRingCapacity;
  uint32_t max_lanes_per_agent = 64;  // lanes one agent may have open at once (each: two rings)
  uint32_t max_lane_targets = 8;      // subscribers a subject may have and still go over lanes
  /// Per agent: bytes of messages busd keeps for it while its ring is full, for its
  /// subscriptions with a drop-oldest, drop-newest or disconnect policy (rounded down to a
  /// power of two; below 4096: none, the policy acts as soon as the ring is full).
  uint64_t slow_buffer_bytes = 1u << 20;
  /// Connections (local and remote agents) that have not registered yet, at once: past it a
  /// new one gets a LimitReached error and is closed. Also the time one may take to register.
  uint32_t max_pending_connections = 256;
  uint32_t handshake_ms = 5000;
  /// TCP connections from one remote address (remote agents and link connections still in
  /// their handshake) at once; past it a new one is refused.
  uint32_t max_connections_per_address = 64;

  friend bool operator==(const Limits&, const Limits&) = default;
};

/// [cluster]: this busd's place among its peers, the TCP listener, and link timings.
struct Cluster {
  std::string name = "default";  // peers of another cluster name are refused at the handshake
  std::string node;              // this busd's name among its peers; "" = the host name
  /// The TCP listener for peer busds (and remote agents): "" = none; "7400" or ":7400" =
  /// 127.0.0.1:7400 (loopback); "host:port" or "[v6]:port" binds there (an explicit choice).
  std::string listen;
  /// The RDMA listener for peer busds' kind = "rdma" links: "" = none; "addr:port" (an address
  /// of the RDMA interface: rdma_cm picks the device by it).
  std::string rdma_listen{};
  uint32_t heartbeat_ms = 500;     // a heartbeat when nothing else was sent for this long
  uint32_t dead_after_ms = 2000;   // nothing heard from a peer for this long: the link is down
  uint32_t handshake_ms = 2000;    // a new connection must finish its Hello within this long
  uint32_t backoff_min_ms = 50;    // first redial delay; doubles per failure up to
  uint32_t backoff_max_ms = 5000;  // this, each with +-25% jitter
  uint64_t hold_bytes = 8ull << 20;  // per peer: messages held while its link is down; past it dropped and counted
  uint32_t max_peers = 64;  // peer busds this one knows (its [[links]] and the node names that dialed in)
  uint32_t resubscribe_grace_ms = 2000;  // after a start: the peers keep the old interests this long (Synced)

  friend bool operator==(const Cluster&, const Cluster&) = default;
};

/// [tls]: the certificate, key and CA this busd uses on its TCP listeners and on the links it
/// dials with tls = true (restart).
struct Tls {
  std::string cert;         // PEM certificate (chain) busd presents; needed when a listener uses TLS
  std::string key;          // PEM private key of cert
  std::string ca;           // PEM CA bundle that verifies peers (and remote agents); "" = the system's
  bool verify_peer = true;  // listeners: require a client certificate the CA signed (mutual TLS); dialing: verify the peer
  bool listen_links = false;   // [cluster] listen speaks TLS only
  bool listen_agents = false;  // [busd] tcp_listen speaks TLS only

  friend bool operator==(const Tls&, const Tls&) = default;
};

/// One [[tokens]] table: a shared secret a remote agent or a peer busd presents, and the
/// identity it stands for (restart).
struct Token {
  std::string identity;    // what [[acl]] identity globs and the logs see
  std::string token;       // the secret itself (at least 16 characters), or
  std::string token_file;  // an absolute path to a file holding it (read at start; trailing newline cut)

  friend bool operator==(const Token&, const Token&) = default;
};

/// One [[links]] table: a peer busd this one dials (tcp, rdma), or exchanges datagrams with
/// through a DPDK port (dpdk: both sides list each other).
struct LinkConfig {
  std::string kind = "tcp";  // tcp | dpdk | rdma
  /// tcp: "host:port" or "[v6]:port" of the peer's [cluster] listen. dpdk: "IPv4:udp_port" of
  /// the peer's end of this link. rdma: "host:port" of the peer's [cluster] rdma_listen.
  std::string peer;
  // kind = "dpdk" only (the keys below are refused on a tcp link):
  std::string port;          // the name of a [[dpdk.ports]] table
  std::string local;         // "IPv4:udp_port" of this side (several links share a port by UDP port); rdma: see below
  std::string peer_mac;      // "aa:bb:cc:dd:ee:ff"; "" = learn it by ARP
  uint32_t window = 256;     // datagrams in flight (and accepted ahead of a hole), 16..4096
  uint32_t rto_min_us = 1000;  // least retransmission timeout, 50..1000000
  // kind = "tcp" only:
  bool tls = false;          // dial with TLS ([tls] ca verifies the peer; cert and key, if set, are presented)
  std::string server_name{};  // the name the peer's certificate must carry; "" = the host of peer
  std::string token{};        // a [[tokens]] secret of the peer to present, or
  std::string token_file{};   // an absolute path to a file holding it
  // kind = "rdma" only (peer: "host:port" of the peer's [cluster] rdma_listen; local, above: the
  // numeric address to dial from, "" = any; it picks the device). Mapped onto rdma::Options.
  std::string device{};       // "" = any; else the device the address resolves to must be this ("mlx5_0", "rxe0")
  /// This side's receive ring in bytes, at least 4 x (limits.max_message_size + 4100). In a
  /// file, 0 or no key: the smallest power of two that is, and at least 1 MiB.
  uint32_t ring_bytes{0};
  uint32_t send_depth{256};    // send work requests outstanding, 4..32768
  uint32_t recv_depth{256};    // receive work requests posted (the peer's credits), 4..32768
  uint32_t signal_every{16};   // every Nth send WR is signaled, 1..send_depth/2
  uint32_t inline_bytes{128};  // inline data asked of the device, 0..1024
  uint32_t batch_wrs{32};      // send WRs per doorbell, 1..send_depth
  /// rdma_cm picks device, port and source GID by the addresses; these check what it picked
  /// (busd takes the link down, naming it, when they differ):
  uint32_t ib_port{0};         // 0 = any; else the port (1..255) local must resolve to
  int32_t gid_index{-1};       // -1 = any; else the index (0..255) of the source GID in that port's GID table

  friend bool operator==(const LinkConfig&, const LinkConfig&) = default;
};

/// One [[dpdk.ports]] table: a DPDK ethdev port and its poll-mode thread.
struct DpdkPort {
  std::string name;               // ethdev name: a --vdev name ("net_memif0") or a PCI address
  int32_t cpu = -1;               // pin the port's poll thread to this CPU; -1 = it floats
  std::string idle = "adaptive";  // busy (never sleeps: a dedicated core) | adaptive | inline (no thread: busd's loop polls it)
  uint32_t spin_us = 20;          // adaptive: idle polls this long before sleeping, 0..1000000
  uint32_t sleep_max_us = 100;    // adaptive: longest sleep (rx without interrupts is seen this late), 1..1000000
  uint32_t mbufs = 8191;          // mbuf pool size, 1023..1048575
  uint32_t rx_desc = 1024;        // rx and tx descriptors, 64..16384
  uint32_t tx_desc = 1024;
  uint32_t mtu = 1500;            // 576..9000
  std::string mac;                // "aa:bb:cc:dd:ee:ff" to set; "" = the port's own
  /// Fault injection on what the port sends, per mille (tests: loss, duplicates, reordering,
  /// corruption where the kernel has no netem). 0..1000 each.
  uint32_t impair_loss = 0, impair_dup = 0, impair_reorder = 0, impair_corrupt = 0;
  uint64_t impair_seed = 1;

  friend bool operator==(const DpdkPort&, const DpdkPort&) = default;
};

/// [dpdk]: the EAL arguments (busd initialises the EAL once, at start, when a link has kind =
/// "dpdk") and the ports.
struct Dpdk {
  std::vector<std::string> eal;  // e.g. ["-l", "0", "--no-huge", "-m", "512", "--file-prefix=busd", "--vdev=..."]
  std::vector<DpdkPort> ports;

  friend bool operator==(const Dpdk&, const Dpdk&) = default;
};

struct Config {
  /// Control socket path; "" = busd's default lookup ($BUS_SOCKET, $XDG_RUNTIME_DIR/busd.sock,
  /// /run/busd/busd.sock).
  std::string socket;
  uint32_t socket_mode = 0660;    // file mode of the socket (TOML: octal string "0660")
  std::string socket_group;       // group name or numeric gid of the socket; "" = busd's group
  std::string shm_dir;            // named shared memory (counters page); "" = next to the socket
  std::string log_level = "info";  // error | warn | info | debug
  uint32_t drain_timeout_ms = 2000;       // on SIGTERM: time to flush before exit
  uint32_t heartbeat_interval_ms = 5000;  // fallback death detection: heartbeat period
  uint32_t heartbeat_misses = 6;          // ... and missed heartbeats before an agent is dead
  std::string wait = "adaptive";  // busd's wait strategy (shm::parse_wait_strategy syntax)
  bool verify_same_uid = true;    // verify envelopes from agents of busd's own uid too
  bool acl_owner_all = true;      // busd's own uid may do everything (before the [[acl]] rules)
  /// TCP listener for remote agents (bus::Client with "tcp://host:port"): "" = none; "7401" or
  /// ":7401" = 127.0.0.1:7401; "host:port" / "[v6]:port" binds there (an explicit choice).
  std::string tcp_listen;
  /// The uid [[acl]] rules see for a remote agent (TCP carries no peer credentials): 65534
  /// (nobody) by default, so a remote agent may do nothing until a rule grants it.
  uint32_t tcp_agent_uid = 65534;
  /// Direct lanes: busd sets up shared-memory rings between two local agents that talk, and
  /// their messages skip busd (false: every message passes through busd).
  bool lanes = true;
  /// Lanes between two agents of the same uid: the reader verifies each message too (another
  /// uid's are always copied, then verified). It costs ~5-10 ns per message (measured); false
  /// trusts same-uid writers, which could do worse than send a bad message anyway.
  bool lanes_verify_same_uid = true;
  /// $bus.slow events: at most one "became slow" per subscription per this many ms (each is
  /// followed by its "recovered"); 0 = no limit.
  uint32_t slow_event_interval_ms = 1000;
  /// Prometheus text exposition (GET /metrics over HTTP), served by a thread of its own from the
  /// counters page: "" = off; "9464" or ":9464" = 127.0.0.1:9464; "host:port" / "[v6]:port".
  std::string metrics_listen;
  Limits limits;
  Tls tls;
  std::vector<AclRule> acl;
  std::vector<Token> tokens;
  std::vector<SlowRule> slow_consumers;
  Cluster cluster;
  std::vector<LinkConfig> links;
  Dpdk dpdk;

  friend bool operator==(const Config&, const Config&) = default;
};

/// The configuration busd runs with when given no file.
[[nodiscard]] Config defaults();

/// The embedded default: a commented TOML document listing every key with its default and a
/// one-line explanation. parse(default_config_text(), ...) == defaults().
[[nodiscard]] std::string_view default_config_text();

/// `cfg` as a commented TOML document in the same layout; parse(render(c), ...) == c for every
/// Config that parse() returns.
[[nodiscard]] std::string render(const Config& cfg);

/// Parses and validates a document. `source_name` starts every error line ("busd.toml",
/// "<default>"). Errors: InvalidArgument, detail() one line (see the top of this file).
[[nodiscard]] Expected<Config> parse(std::string_view toml_text, std::string_view source_name);

/// Reads and parses a file. Errors: NotFound / PermissionDenied / System naming the path,
/// TooLarge above kMaxConfigFileSize, or parse()'s errors with the path as source name.
[[nodiscard]] Expected<Config> load_file(const std::string& path);

/// Largest config file load_file reads.
inline constexpr size_t kMaxConfigFileSize = 1u << 20;

/// For a reload (SIGHUP): the keys that differ between `before` and `after`, as dotted names
/// ("busd.log_level", "limits.max_agents", "acl", "slow_consumers"). Keys that take effect on reload are
/// returned; keys that need a restart (socket, socket_mode, socket_group, shm_dir, wait,
/// max_message_size, ring_capacity, every cluster.* key, "links" for the [[links]] tables and
/// "dpdk" for [dpdk] and its ports) are appended to *not_reloadable instead (when not null), so
/// that the daemon can warn and keep their old values. Both lists are in document order.
[[nodiscard]] std::vector<std::string> reloadable_diff(const Config& before, const Config& after,
                                                       std::vector<std::string>* not_reloadable);

}  // namespace bus::config
