// busd: one poll loop (this class) owns the control socket, every agent's control channel and
// rings, the router and the counters page. The control plane (control.cpp) is single-threaded
// bookkeeping; the data plane (routing.cpp) moves records from agents' rings to subscribers'
// rings without locks, allocation or system calls while there is work.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent.hpp"
#include "bus/control.hpp"
#include "bus/envelope.hpp"
#include "config/config.hpp"
#include "counters/page.hpp"
#include "links/body.hpp"
#include "links/peer.hpp"
#include "shm/log.hpp"
#include "router/queue_groups.hpp"
#include "router/trie.hpp"
#include "tcp/tcp_link.hpp"

namespace bus::daemon {

namespace metrics {
class Server;  // metrics.hpp: the Prometheus endpoint's thread
}

/// Router subscriber ids at or above this stand for peer busds (kPeerBase + the peer's index):
/// the peer's interests sit in the trie beside local subscriptions, so one match and one queue
/// group choice covers both. Agent ids count up from 1 and never get here.
inline constexpr uint32_t kPeerBase = 0xF000'0000u;

/// Where a reply subject points: "_INBOX.<id>" (node empty: this host) or "_INBOX.<node>.<id>".
/// agent is 0 when the id is malformed.
struct InboxTarget {
  std::string_view node;
  uint32_t agent = 0;
};
[[nodiscard]] InboxTarget inbox_target(std::string_view subject) noexcept;

/// A Timed message's two hops in this busd (Flags::Timed): from its timestamp `sent` to busd
/// reading it, and from then to `now` (saturated to 32 bits).
[[nodiscard]] inline HopTiming hops_of(const Agent& src, uint64_t sent, uint64_t now) noexcept {
  auto sat = [](uint64_t v) { return static_cast<uint32_t>(std::min<uint64_t>(v, UINT32_MAX)); };
  return HopTiming{sat(src.timed_in_ns > sent ? src.timed_in_ns - sent : 0), sat(now - src.timed_in_ns)};
}

/// Deliveries that are replies or system events carry this tag (no subscription).
inline constexpr uint32_t kInboxTag = 0;

/// Hop timing into a delivered copy (Flags::Timed) of a message `src` sent; the copy is busd's
/// own memory until committed.
void stamp_hops(const Agent& src, std::byte* copy) noexcept;

/// One peer busd (links.cpp): the Peer that runs the connection and session, and what this busd
/// knows of the other side.
struct PeerSlot {
  uint32_t index = 0;
  std::string label;   // for logs: the configured address, or "<node> (dialed in)"
  bool dials = false;  // from [[links]]; otherwise the peer dialed this busd
  std::unique_ptr<links::Peer> peer;
  links::PeerState last_state = links::PeerState::Waiting;
  std::string node;             // the peer's node name, from its first Hello
  uint64_t known_session = 0;   // the peer incarnation whose interests and agents are held here
  uint64_t synced_due_ns = 0;   // when this busd's snapshot to it ends (Synced); 0: not pending
  int fd = -1;                  // as registered with epoll
  uint32_t events = 0;
  bool readable = false;
  std::string last_logged;      // the last failure logged (a redial failing alike stays quiet)
  // Security: the identity of the peer on this link (its certificate's, or its token's; "" =
  // none: everything is allowed, as between members of one cluster), and what it may do:
  // subscribe = what this busd forwards to it, publish = what it accepts from it. `narrowed`:
  // an interest broader than the grants was taken, so each message sent is checked.
  std::string identity;
  Grants grants;
  bool narrowed = false;
  uint64_t acl_refused = 0;     // interests refused and messages dropped by the link's grants
  counters::LinkCounters* stats = nullptr;  // its slot in the counters page (null: the table was full)

  struct Interest {
    std::string pattern;
    uint32_t group = 0;  // this busd's id of the group name
  };
  std::unordered_map<uint32_t, Interest> interest;  // by the peer's interest id
  // The plain interests of the peer's earlier incarnation, still routed (in the trie under their
  // old ids) until its new incarnation's snapshot is in (Synced). Apart from `interest`: the new
  // incarnation numbers its interests from 1 again, and its ids must not reach these.
  struct StaleInterest {
    uint32_t id;
    std::string pattern;
  };
  std::vector<StaleInterest> stale_interest;
  struct RemoteAgent {
    std::string name;  // "name@node"
    std::vector<std::string> capabilities;
  };
  std::unordered_map<uint32_t, RemoteAgent> agents;  // by the agent's id on the peer

  // Receiving: the bodies of the last receive() not routed yet. When a local ring is full the
  // rest is copied into held_in (8-byte aligned slots) and routed on later passes.
  std::vector<std::span<const std::byte>> in;
  size_t in_next = 0;
  std::vector<uint64_t> held_in;     // first the head envelope (held_head bytes), then the rest
  size_t held_head = 0;
  std::vector<router::SubRef> owed;  // deliveries the head message still owes
  bool broken = false;               // this busd just cut it for breaking the protocol

  // Sending: the interest ids of this peer that the message being routed goes to.
  std::vector<uint32_t> route_ids;
  bool touched = false;
  bool up() const noexcept { return peer->state() == links::PeerState::Up; }
};

/// A lane between two local agents, or a broadcast log from one to several (lanes.cpp); busd
/// keeps its segment mapped for the counters.
struct LaneRec {
  uint32_t id = 0;
  uint32_t agent[2] = {0, 0};  // a lane: agent[0] < agent[1], agent[0] writes ring 0; a log: the writer
  shm::Segment segment;
  shm::EventFd fds[4];  // ring 0 data, space; ring 1 data, space (a log: fds[1] is its space eventfd)
  shm::lane::LaneHeader* header = nullptr;
  counters::LaneCounters* stats = nullptr;
  uint32_t routes = 0;  // routes of either end that use it; 0: closed
  // A broadcast log: its readers and their data eventfds, its shared line (counters).
  bool log = false;
  std::vector<uint32_t> readers;
  std::vector<shm::EventFd> reader_fds;
  shm::log::LogShared* log_shared = nullptr;
  std::string subject;
};

/// An accepted link connection whose Hello has not arrived yet.
struct Greeter {
  std::unique_ptr<link::Link> link;
  std::string identity;  // from its certificate or token, once known
  std::string from;
  uint64_t deadline_ns = 0;
  counters::LinkKind kind = counters::LinkKind::Tcp;  // Tcp: link is a tcp::TcpLink; Rdma: an rdma::RdmaLink
};

struct Options {
  config::Config config;
  std::string config_path;  // "" = the embedded default (SIGHUP then has nothing to reload)
};

class Daemon {
 public:
  explicit Daemon(Options opts);
  ~Daemon();

  /// Creates the socket, the counters page and the poll set; reclaims what a killed busd left.
  Expected<void> start();
  /// The loop, until SIGINT/SIGTERM (then drains) or stop(). Returns the exit code.
  int run();

  [[nodiscard]] const std::string& socket_path() const noexcept { return socket_path_; }

 private:
  friend struct Routing;

  // ---- control plane (control.cpp)
  void accept_agents();
  /// `frame` where FlatBuffers may read it: itself when 8-byte aligned, else a copy (valid until
  /// the next call).
  std::span<const std::byte> aligned_control(std::span<const std::byte> frame);
  /// Sends an ErrorReply on a connection just accepted (`tcp`: a remote agent's stream, framed
  /// as such) and closes it.
  void refuse_connection(int fd, Errc code, const std::string& why, bool tcp = false);
  /// Whether limits.max_pending_connections agents are already waiting to register (counted,
  /// logged at most once a second); `from` names the new connection for the log.
  bool pending_connections_full(std::string_view from);
  /// A TCP connection just accepted from `from` ("host:port"): "" when it may go on, else why
  /// not (limits.max_connections_per_address, limits.max_pending_connections), counted and
  /// logged at most once a second.
  std::string remote_limit(std::string_view from);
  void note_refusal(std::string_view from, const std::string& why);
  /// accept() failed with `err`: for EMFILE/ENFILE one waiting connection is accepted on the
  /// spare descriptor and closed (true: try again); otherwise false.
  bool shed_connection(int listener, int err);
  void on_agent_socket(Agent& a, uint32_t events);
  void handle_control(Agent& a, const control::ControlMessage& m);
  void on_hello(Agent& a, const control::ControlMessage& m);
  void on_register(Agent& a, const control::ControlMessage& m);
  void on_subscribe(Agent& a, const control::ControlMessage& m);
  void on_unsubscribe(Agent& a, const control::ControlMessage& m);
  void on_find_agents(Agent& a, const control::ControlMessage& m);
  void send_ok(Agent& a, uint64_t ref);
  void send_error(Agent& a, uint64_t ref, Errc code, const std::string& message);
  void send_control(Agent& a, control::Body type, flatbuffers::Offset<void> body,
                    std::span<const int> fds = {});
  Expected<void> give_rings(Agent& a);
  /// Closes its channel, drops its subscriptions and requests, publishes presence; the record
  /// itself is freed by reap() at the end of the loop turn.
  void remove_agent(Agent& a, const char* why, bool drain = true);
  void reap();
  void presence(const Agent& a, control::PresenceEvent ev);
  /// Publishes a presence event here (a local agent's, or a remote one's as "name@node").
  void publish_presence(std::string_view name, uint32_t id, std::span<const std::string> caps,
                       control::PresenceEvent ev);
  void heartbeats();
  void reload();
  void begin_shutdown();

  // ---- data plane (routing.cpp)
  /// Moves up to `budget` messages from every agent's ring; returns how many moved.
  size_t route_all(size_t budget);
  size_t drain_agent(Agent& a, size_t budget);
  /// Routes one message; false when it could not be delivered everywhere yet (stalled).
  bool route(Agent& src, std::span<const std::byte> bytes);
  /// Delivers `bytes` to each of `owed` (`src`: the local publisher, for hop timing); keeps in
  /// `owed` those whose ring is full. True when none is left.
  bool deliver_owed(std::vector<router::SubRef>& owed, std::span<const std::byte> bytes, const Agent* src);
  /// A message its agent may not send (system subject, invalid subject, ACL): counted and
  /// answered. Cold path.
  [[gnu::cold, gnu::noinline]] void refuse(Agent& src, const EnvelopeView& v, bool system_subject);
  /// `src`: the publisher, when the message is one of its (for hop timing); null for busd's own.
  bool deliver(uint32_t agent, uint32_t tag, std::span<const std::byte> bytes, const Agent* src = nullptr);
  void publish_dirty();
  /// A ring of `a`'s broke its rules: logged, and `a` removed after the pass (once).
  void condemn(Agent& a, const std::string& detail);
  /// `dst`'s `to` ring has records to publish at the end of the pass.
  void mark_dirty(Agent& dst) noexcept {
    if (!dst.to_dirty) {
      dst.to_dirty = true;
      dirty_.push_back(&dst);
    }
  }
  /// Counts a delivery just committed to `dst`'s ring (tag: the subscription, or kInboxTag).
  void delivered(Agent& dst, uint32_t tag, size_t size) noexcept;

  // ---- slow consumers (slow.cpp)
  /// The policy a subscription of `a` to `pattern` gets: the first [[slow_consumers]] rule that
  /// matches the agent and covers the pattern, else what the agent asked.
  [[nodiscard]] control::SlowPolicy slow_policy_for(const Agent& a, std::string_view pattern, control::SlowPolicy asked) const;
  /// A delivery found `dst`'s ring full, or its slow buffer in use: per the subscription's
  /// policy, false (block: the publisher waits) or true (buffered, dropped, or the agent is cut).
  [[gnu::cold, gnu::noinline]] bool deliver_slow(Agent& dst, uint32_t tag, std::span<const std::byte> bytes,
                                                 const Agent* src);
  /// The policy's answer to a full slow buffer: the message is dropped (counted), and a
  /// disconnect subscription's agent is cut.
  void slow_overflow(Agent& dst, uint32_t sid, Agent::Sub& s);
  /// Drops the oldest message waiting in `dst`'s slow buffer (false: none waits).
  bool drop_oldest(Agent& dst);
  /// `a`'s slow buffer, made on first need (false: slow_buffer_bytes allows none).
  bool slow_buffer(Agent& a);
  /// Moves what waits in `dst`'s slow buffer into its ring; true when nothing waits any more.
  bool flush_slow(Agent& dst);
  void note_slow(Agent& a, Agent::Sub& s);
  /// Each pass while some agent is slow: flushes the buffers; once a millisecond notices who
  /// recovered and sends the events; cuts the agents a disconnect policy condemned.
  void service_slow(uint64_t now);
  void slow_event(Agent& a, uint32_t sid, Agent::Sub& s, control::SlowEvent ev, uint64_t now);
  void cut_slow(Agent& a);
  /// The agent is going: it is no longer slow, and what waited for it is gone.
  void forget_slow(Agent& a);
  void answer_error(Agent& requester, uint64_t request_id, Errc code, std::string_view detail);
  void expire_requests(uint64_t now_ns);
  /// The requests `agent` made are dropped; those waiting only on it are answered with `code`.
  void forget_requests_of(uint32_t agent, Errc code = Errc::NoResponders,
                          std::string_view why = "the responder went away before replying");
  /// A Reply/Error for `agent`'s request `id` arrived: the request is no longer pending.
  void settle_pending(uint32_t agent, uint64_t id);
  /// "_INBOX.<id>" (standalone) or "_INBOX.<node>.<id>" (with links).
  [[nodiscard]] std::string inbox_of(uint32_t agent) const;
  void system_publish(std::string_view subject, std::span<const std::byte> payload);

  // ---- lanes between local agents (lanes.cpp)
  using Lane = LaneRec;
  /// Answers a RouteQuery: lanes (opened as needed) or busd's path, and why.
  void on_route_query(Agent& a, const control::ControlMessage& m);
  /// Whether `subject` from `a` can go over lanes; fills lane_targets_ (else says why).
  bool route_by_lanes(Agent& a, std::string_view subject, std::string& why);
  /// A lane or log just announced to its agents: counted and kept.
  Lane* keep_lane(std::unique_ptr<Lane> l);
  /// Whether `a` may have one more lane or log (else says why).
  [[nodiscard]] bool lanes_left(const Agent& a, std::string& why) const;
  /// The lane between two agents, opened (and announced to both) if there is none.
  Lane* lane_between(Agent& a, Agent& b, std::string& why);
  /// A broadcast log from `a` to the agents in matches_ (several), announced to all of them.
  Lane* open_log(Agent& a, std::string_view subject, std::string& why);
  /// Bumps the agent's route epoch: it forgets every route, and so does busd.
  void forget_routes(Agent& a);
  /// A subscription or interest on `pattern` came or went: senders answered for a subject it
  /// matches forget their routes; lanes no route uses any more are closed.
  void routes_changed(std::string_view pattern);
  void close_unused_lanes(const char* why);
  /// LaneClose to both ends (to the survivor only, with peer_gone, when agent `gone` died).
  void close_lane(uint32_t id, const char* why, uint32_t gone);
  /// The agent is going: its routes and lanes.
  void drop_lanes_of(Agent& a);
  /// Every route forgotten, every lane closed (reload: the ACL may have changed).
  void reset_lanes(const char* why);
  /// Copies the counters the lane's writers keep into the counters page.
  void sync_lane(Lane& l);
  void sync_lanes();
  /// Agents that said Goodbye with messages still waiting for room: removed once their ring is
  /// empty (or at drain_timeout_ms, the rest dropped and logged).
  void finish_leaving(uint64_t now);
  /// The datagram links' repair counts (retransmits, NAKs, dropped packets) into the globals.
  void sync_link_counters();
  /// A mark or gate record from `src` (shm/lane.hpp): to the other end of its lane, in order.
  bool forward_fence(Agent& src, const shm::Record& rec);

  // ---- links to peer busds (links.cpp)
  Expected<void> start_links();
  void stop_links();
  void accept_links();
  /// An accepted link connection (TCP or RDMA) waits for its Hello until the handshake time;
  /// one already Down is refused and counted.
  void admit_greeter(uint32_t id, Greeter g);
  void on_greeter(uint32_t id);
  /// Routes what arrived from peers (and what waited for room); returns how many moved.
  size_t poll_links();
  /// Runs every peer's state machine and writes what is ready; logs ups and downs.
  void flush_links(uint64_t now_ns);
  /// After tick() or receive(): logs ups, downs and failed dials, and meets a new incarnation
  /// of the peer (forgets what it had said, sends it this busd's interests and agents).
  void observe(PeerSlot& p, uint64_t now_ns);
  void on_peer_up(PeerSlot& p);
  void on_peer_down(PeerSlot& p);
  void forget_peer_state(PeerSlot& p);
  void watch_peer(PeerSlot& p);
  /// One body from a peer; false when a local ring is full (try again later).
  bool route_remote(PeerSlot& p, std::span<const std::byte> body);
  bool route_remote_message(PeerSlot& p, const links::Body& b);
  void stall_remote(PeerSlot& p);
  void apply_interest(PeerSlot& p, const links::Body& b);
  /// Takes the peer's earlier incarnations' interests out of the trie (its snapshot is in).
  void drop_stale_interests(PeerSlot& p);
  void apply_presence(PeerSlot& p, const links::Body& b);
  /// Removes the peer refs from deliveries_ and sends the message to those peers, once each,
  /// with the interest ids that chose them. Never waits: a full hold buffer drops (counted).
  void send_to_peers(const EnvelopeView& v, std::span<const std::byte> bytes, const Agent* src);
  /// Whether every connected peer in deliveries_ can take a message of `size` bytes now.
  [[nodiscard]] bool peers_have_room(size_t size) const noexcept;
  /// `src`: the local publisher, when its message asked for hop timing (Flags::Timed): this
  /// busd's two hops go into the copy sent, as into a local delivery; the peer leaves them.
  bool send_message(PeerSlot& p, std::span<const uint32_t> ids, const EnvelopeView& v, std::span<const std::byte> bytes,
                    const Agent* src = nullptr);
  /// A local subscription came or went: the peers learn when a (pattern, group) appears or goes.
  void interest_up(std::string_view pattern, uint32_t group);
  void interest_down(std::string_view pattern, uint32_t group);
  void send_control_body(PeerSlot& p, std::span<const std::byte> body);
  /// To every peer met in this incarnation (one not met yet gets observe()'s snapshot).
  void to_known_peers(std::span<const std::byte> body);
  /// A peer that broke the protocol: counted, logged, disconnected; its batch is dropped.
  void cut_off(PeerSlot& p, const std::string& why);
  void presence_to_peers(const Agent& a, links::PresenceOp op);
  /// A reply subject of another node: sent to that peer (true), or dropped and counted.
  bool forward_reply(std::string_view node, std::span<const std::byte> bytes, const EnvelopeView& v, const Agent* src);
  /// Answers a request that came over a link with an error, back over the link.
  void answer_remote(PeerSlot& p, const EnvelopeView& request, Errc code, std::string_view detail);
  PeerSlot* peer_by_node(std::string_view node) noexcept;
  /// A new slot at the end of peers_ (dialing `address`, or waiting to be dialed).
  /// `where` names it in the counters page's link table ("" = the label).
  PeerSlot& add_peer(std::string label, const tcp::Endpoint* address, counters::LinkKind kind = counters::LinkKind::Tcp,
                     std::string_view where = {});
  /// A slot whose link `dialer` makes (a DPDK link: both sides dial).
  PeerSlot& add_dialing_peer(std::string label, decltype(links::PeerOptions::dialer) dialer, std::string target,
                             counters::LinkKind kind);
  /// EAL, ports and a peer per [[links]] table of kind "dpdk" (dpdk_links.cpp). Errors: the EAL
  /// or a port does not start, or busd was built without DPDK.
  Expected<void> start_dpdk_links();
  /// Before any listener: a config with a kind = "rdma" link or rdma_listen needs an RDMA device
  /// (and the one a link names), and a busd built with RDMA (rdma_links.cpp). Errors: one line
  /// naming the link and the reason.
  Expected<void> check_rdma_links();
  /// A dialing peer per [[links]] table of kind "rdma", and the [cluster] rdma_listen listener.
  Expected<void> start_rdma_links();
  /// rdma_listen's connection requests, each accepted into a greeter (accept_links() calls it).
  void accept_rdma_links();

 public:
  /// The link kinds this build has: "tcp" or "tcp, dpdk" (busd --version).
  [[nodiscard]] static std::string_view link_kinds() noexcept;

 private:
  [[nodiscard]] bool clustered() const noexcept { return link_listener_.fd() >= 0 || rdma_ != nullptr || !peers_.empty(); }
  /// How long the poll loop may sleep for the links' sake (dials, heartbeats, retransmissions).
  [[nodiscard]] uint64_t link_timeout_ns(uint64_t now) const noexcept;
  /// Before sleeping: poll-mode links announce it (false: one has input, do not sleep).
  bool arm_links() noexcept;
  void disarm_links() noexcept;

  // ---- remote agents over TCP (tcp_agents.cpp)
  Expected<void> start_tcp_agents();
  void accept_tcp_agents();
  /// Reads its stream: control frames to handle_control, envelopes into its `from` ring.
  void on_tcp_agent(Agent& a, uint32_t events);
  /// Sends what was delivered to remote agents (their `to` rings) and what is still buffered.
  void flush_tcp_agents();
  void flush_tcp_agent(Agent& a);
  void watch_tcp_agent(Agent& a);
  /// Queues a control message for a remote agent (dropped when its output is far behind).
  void send_tcp_control(Agent& a, std::span<const std::byte> bytes);
  /// [tls] and [[tokens]]: the TLS contexts and the token table (start_links() calls it first).
  Expected<void> start_tls();
  /// Advances a remote agent's TLS handshake: true when done (it may read on).
  bool tls_handshake(Agent& a);
  /// The checks before a remote agent's first control frame (its token, if it sent one first):
  /// false when it was refused (and removed).
  bool admit_tcp_agent(Agent& a, const tcp::ChanFrame& f);
  void refuse_tcp_agent(Agent& a, Errc code, const std::string& why);
  /// Remote agents whose TLS handshake is past cluster.handshake_ms are dropped (flush_links()).
  void expire_tcp_handshakes(uint64_t now);
  /// A token file's secret (trailing newlines cut; 16 to 1024 characters).
  static Expected<std::string> read_token_file(const std::string& path);
  /// The identity of the [[tokens]] secret `token` (constant time over every entry), or null.
  [[nodiscard]] const std::string* token_identity(std::string_view token) const noexcept;

  // ---- loop (daemon.cpp)
  /// Binds a TCP listener at `text` (tcp::listen_endpoint: a port alone is loopback) and
  /// watches it as `src`; returns the address bound. Errors name the config `key`.
  Expected<std::string> listen_tcp(const std::string& text, std::string_view key, Source src,
                                   tcp::TcpListener& into);
  bool sleep_until_ready(uint64_t timeout_ns);
  /// Waits up to `timeout_ns` (0: just looks) for descriptors, then handles what is ready.
  void handle_events(uint64_t timeout_ns);
  Agent* agent(uint32_t id) noexcept;

  Options opts_;
  std::string socket_path_;
  uid_t uid_ = 0;
  int epoll_ = -1;
  int listener_ = -1;
  int signal_fd_ = -1;
  int timer_fd_ = -1;
  int spare_fd_ = -1;  // held for shed_connection()
  uint64_t last_refusal_log_ns_ = 0;
  bool stopping_ = false;
  bool stop_now_ = false;
  uint64_t drain_deadline_ns_ = 0;
  shm::WaitStrategy wait_{};

  uint32_t next_agent_id_ = 1;
  std::unordered_map<uint32_t, std::unique_ptr<Agent>> agents_;
  std::vector<Agent*> active_;  // registered agents, in id order: what the data plane scans
  std::unordered_map<std::string, uint32_t> names_;
  std::vector<uint32_t> doomed_;     // removed agents, freed by reap()
  std::vector<uint32_t> condemned_;  // agents the data plane found broken: removed between passes
  std::vector<uint32_t> leaving_;    // said Goodbye with messages still to route (finish_leaving)

  router::SubjectTrie trie_;
  router::QueueGroups groups_;
  std::vector<router::SubRef> matches_;     // scratch, reused per message
  std::vector<router::SubRef> deliveries_;  // scratch
  std::vector<Agent*> dirty_;               // agents whose `to` ring has unpublished records
  std::vector<Agent*> slow_agents_;         // agents with a slow subscription or a slow buffer in use
  uint64_t slow_bytes_ = 0;                 // bytes in every slow buffer
  uint64_t last_slow_scan_ns_ = 0;

  struct Pending {
    uint32_t requester;
    uint64_t request_id;
    uint64_t deadline_ns;
    uint64_t routed_ns;  // when busd routed it: request_reply histogram
    std::vector<uint32_t> responders;
  };
  static uint64_t pending_key(uint32_t agent, uint64_t id) noexcept {
    return (static_cast<uint64_t>(agent) << 40) ^ id;
  }
  using PendingMap = std::unordered_map<uint64_t, Pending>;
  PendingMap pending_;
  // Nodes of answered requests, reused (with their responders' capacity) by the next ones: a
  // routed request allocates nothing once as many have been in flight before.
  std::vector<PendingMap::node_type> pending_free_;
  Pending& add_pending(uint64_t key);
  PendingMap::iterator drop_pending(PendingMap::iterator it);
  // (deadline, key) min-heap; entries whose request was answered are skipped when popped.
  std::priority_queue<std::pair<uint64_t, uint64_t>, std::vector<std::pair<uint64_t, uint64_t>>,
                      std::greater<>>
      deadlines_;

  // Remote agents.
  tcp::TcpListener tcp_agents_listener_;
  std::vector<Agent*> tcp_agents_;  // registered remote agents
  // TLS and tokens ([tls], [[tokens]]; tcp_agents.cpp, links.cpp).
  tls::Context tls_server_;              // the listeners that speak TLS
  tls::Context tls_client_;              // links dialed with tls = true
  struct TokenEntry {
    std::string identity;
    std::string secret;
  };
  std::vector<TokenEntry> tokens_;       // [[tokens]], their files read at start
  std::vector<uint32_t> tcp_handshakes_;  // remote agents in their TLS handshake (deadlines)
  std::vector<uint32_t> lost_;      // remote agents whose connection broke: removed between passes

  // Links.
  std::string node_;
  tcp::TcpListener link_listener_;
  // The DPDK ports (dpdk_links.cpp; type-erased so that this header needs no DPDK). Declared
  // before peers_: their links hold endpoints of these ports, so peers_ goes first.
  std::shared_ptr<void> dpdk_;
  // The rdma_listen listener (rdma_links.cpp; type-erased so that this header needs no verbs).
  // Accepted connections have their own event channels: they may outlive it.
  std::shared_ptr<void> rdma_;
  // Ports with idle = "inline" (no thread): polled by this loop, which then sleeps at most
  // port_poll_ns_. Empty when there are none.
  std::function<bool()> poll_ports_;
  uint64_t port_poll_ns_ = UINT64_MAX;
  std::vector<std::unique_ptr<PeerSlot>> peers_;
  std::unordered_map<uint32_t, Greeter> greeters_;
  uint32_t next_greeter_ = 1;
  struct LocalInterest {
    uint32_t id = 0;
    uint32_t count = 0;  // local subscriptions with this (pattern, group)
  };
  std::unordered_map<std::string, LocalInterest> interest_;  // key: pattern '\n' group
  std::unordered_map<uint32_t, uint32_t> interest_group_;     // our interest id -> group id (0: none)
  uint32_t next_interest_id_ = 1;
  uint64_t links_started_ns_ = 0;  // start_links(): this incarnation's start, for cluster.resubscribe_grace_ms
  std::vector<std::byte> link_body_;  // scratch for control bodies
  std::vector<uint64_t> aligned_;     // scratch: a received envelope that was not 8-byte aligned
  std::vector<uint64_t> control_scratch_;  // scratch: a control frame that was not 8-byte aligned
  std::vector<PeerSlot*> touched_;    // scratch: peers the message being routed goes to
  std::vector<uint32_t> chosen_groups_;  // scratch: groups a peer chose this busd for
  std::span<const std::byte> last_env_;  // the envelope route_remote_message routed last

  // Lanes.
  static constexpr size_t kMaxRoutesPerAgent = 4096;
  std::unordered_map<uint32_t, std::unique_ptr<Lane>> lanes_;
  std::unordered_map<uint64_t, uint32_t> lane_by_pair_;  // (lower id << 32 | higher id) -> lane
  uint32_t next_lane_id_ = 1;
  std::vector<control::RouteTarget> lane_targets_;  // scratch
  std::vector<uint32_t> lane_scratch_;              // scratch

  counters::CountersPage counters_;
  // [busd] metrics_listen: its thread reads counters_'s page (declared after it: stops first).
  std::unique_ptr<metrics::Server> metrics_;
  flatbuffers::FlatBufferBuilder fbb_{1024};
  uint64_t control_seq_ = 0;
};

}  // namespace bus::daemon
