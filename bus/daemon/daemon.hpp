// busd: one poll loop (this class) owns the control socket, every agent's control channel and
// rings, the router and the counters page. The control plane (control.cpp) is single-threaded
// bookkeeping; the data plane (routing.cpp) moves records from agents' rings to subscribers'
// rings without locks, allocation or system calls while there is work.
#pragma once

#include <sys/types.h>

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
#include "router/queue_groups.hpp"
#include "router/trie.hpp"

namespace bus::daemon {

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
  void heartbeats();
  void reload();
  void begin_shutdown();

  // ---- data plane (routing.cpp)
  /// Moves up to `budget` messages from every agent's ring; returns how many moved.
  size_t route_all(size_t budget);
  size_t drain_agent(Agent& a, size_t budget);
  /// Routes one message; false when it could not be delivered everywhere yet (stalled).
  bool route(Agent& src, std::span<const std::byte> bytes);
  bool deliver_owed(Agent& src, std::span<const std::byte> bytes);
  /// A message its agent may not send (system subject, invalid subject, ACL): counted and
  /// answered. Cold path.
  [[gnu::cold, gnu::noinline]] void refuse(Agent& src, const EnvelopeView& v, bool system_subject);
  /// `src`: the publisher, when the message is one of its (for hop timing); null for busd's own.
  bool deliver(uint32_t agent, uint32_t tag, std::span<const std::byte> bytes, const Agent* src = nullptr);
  void publish_dirty();
  void answer_error(Agent& requester, uint64_t request_id, Errc code, std::string_view detail);
  void expire_requests(uint64_t now_ns);
  void forget_requests_of(uint32_t agent);
  void system_publish(std::string_view subject, std::span<const std::byte> payload);

  // ---- loop (daemon.cpp)
  bool sleep_until_ready(uint64_t timeout_ns);
  void handle_events(int timeout_ms);
  Agent* agent(uint32_t id) noexcept;

  Options opts_;
  std::string socket_path_;
  uid_t uid_ = 0;
  int epoll_ = -1;
  int listener_ = -1;
  int signal_fd_ = -1;
  int timer_fd_ = -1;
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

  router::SubjectTrie trie_;
  router::QueueGroups groups_;
  std::vector<router::SubRef> matches_;     // scratch, reused per message
  std::vector<router::SubRef> deliveries_;  // scratch
  std::vector<Agent*> dirty_;               // agents whose `to` ring has unpublished records

  struct Pending {
    uint32_t requester;
    uint64_t request_id;
    uint64_t deadline_ns;
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

  counters::CountersPage counters_;
  flatbuffers::FlatBufferBuilder fbb_{1024};
  uint64_t control_seq_ = 0;
};

}  // namespace bus::daemon
