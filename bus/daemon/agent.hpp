// One connected agent, as busd sees it.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "acl.hpp"
#include "bus/control.hpp"
#include "bus/counters.hpp"
#include "router/trie.hpp"
#include "shm/lane.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "socket/frame.hpp"
#include "tls/stream.hpp"

namespace bus::daemon {

struct Agent {
  enum class Phase : uint8_t { Hello, Register, Active, Closing };

  uint32_t id = 0;
  Phase phase = Phase::Hello;
  std::string name;
  std::vector<std::string> capabilities;
  ucred cred{};
  Grants grants;

  // Control channel.
  int sock = -1;
  sock::FrameReader reader{64 * 1024};
  uint64_t last_seen_ns = 0;
  uint64_t heartbeat_seq = 0;
  bool said_goodbye = false;
  /// Said Goodbye while what it published still waited for room (a full subscriber ring, a
  /// link's hold buffer): busd routes the rest, then removes it, at the latest by then.
  uint64_t leaving_deadline_ns = 0;
  uint64_t control_dropped = 0;  // control messages dropped in a row: it does not read (send_control)

  // Rings: `from` carries the agent's messages to busd, `to` busd's deliveries to the agent.
  shm::Segment segment;
  shm::EventFd fds[4];  // from.data, from.space, to.data, to.space
  shm::RingConsumer from;
  shm::RingProducer to;
  bool to_dirty = false;    // committed deliveries not yet published (publish once per pass)
  bool verify = true;       // verify its envelopes
  bool copy_first = false;  // another uid: copy out of the ring before verifying
  std::vector<std::byte> copy_buf;

  // Subscriptions: client sid -> (pattern, interned queue group).
  struct Sub {
    std::string pattern;
    uint32_t group = 0;
    counters::PatternCounters* stats = nullptr;  // its pattern's slot in the counters page
    // What happens to a message for it that finds the agent's ring full (routing.cpp, slow.cpp).
    control::SlowPolicy policy = control::SlowPolicy::Block;
    control::SlowPolicy asked = control::SlowPolicy::Block;  // the agent's choice (a config rule may override it)
    // Slow-consumer state: a message for it found the ring full and the agent has not caught
    // up since; whether $bus.slow.became_slow went out for this episode (the rate limit may
    // hold it back); events the rate limit left out; when the last one went out.
    bool slow = false;
    bool announced = false;
    uint32_t suppressed = 0;
    uint64_t last_event_ns = 0;
    uint64_t dropped = 0;  // messages for it dropped by its policy
  };
  std::unordered_map<uint32_t, Sub> subs;

  // Slow-consumer buffer (slow.cpp): deliveries for a drop-oldest, drop-newest or disconnect
  // subscription that found `to` full wait here, in busd's memory, in arrival order, up to
  // limits.slow_buffer_bytes; while anything waits here, every later delivery to the agent goes
  // behind it (block subscriptions wait, as for a full ring), so that order per publisher holds.
  std::vector<std::byte> slow_mem;  // allocated on first need, kept until the agent goes
  shm::RingProducer slow_in;
  shm::RingConsumer slow_out;
  uint64_t slow_bytes = 0;   // bytes waiting in it
  bool slow_waiting = false;  // slow_out has records
  bool slow_listed = false;   // in Daemon::slow_agents_
  bool slow_cut = false;      // a disconnect-policy subscription overflowed: removed after the pass
  uint32_t slow_cut_sid = 0;  // ... this one

  // Back-pressure (block policy): the message at the head of `from` still owes deliveries to
  // these targets; nothing more is read from this agent until they are done.
  std::vector<router::SubRef> owed;
  // The head message was routed and waits for its owed deliveries (set when route() stalled).
  // When the agents it waits for all go away, owed empties and the message is done: it must
  // not be routed again (its other receivers have it already).
  bool head_routed = false;
  bool stalled() const noexcept { return !owed.empty(); }
  // The message at the head asked for hop timing (Flags::Timed): when busd read it (0: not
  // timed) and where its Header sits, for stamping each delivered copy.
  uint64_t timed_in_ns = 0;
  uint32_t timed_header_at = 0;

  // The message at the head waits for room in a connected peer's hold buffer (route() runs
  // again; it was counted the first time).
  bool link_wait = false;

  uint32_t pending_requests = 0;
  counters::AgentCounters* stats = nullptr;

  // Lanes (lanes.cpp). `lines` sits in its segment (null: a remote agent, no lanes); the
  // routes it was answered in this epoch, each with the lanes it uses; the lanes it is in.
  shm::lane::AgentLines* lines = nullptr;
  uint64_t route_epoch = 0;
  struct RouteRec {
    std::string subject;
    std::vector<uint32_t> lanes;                // lanes and logs it uses
    std::vector<control::RouteTarget> targets;  // as answered (a second query gets the same)
  };
  std::vector<RouteRec> routes;
  std::vector<uint32_t> lanes;

  // A remote agent (busd.tcp_listen; tcp_agents.cpp): `sock` is its TCP connection, carrying
  // control and data frames (socket/endpoint.hpp). Its rings live in busd's memory only: busd
  // writes the envelopes it receives into `from` (tcp_in) and sends what is delivered to `to`
  // (tcp_out), so the router treats it like any other agent.
  bool tcp = false;
  shm::RingProducer tcp_in;
  shm::RingConsumer tcp_out;
  std::vector<std::byte> tcp_obuf;  // framed bytes not yet written to the socket
  size_t tcp_osent = 0;
  std::vector<std::byte> tcp_held;  // an envelope waiting for room in `from`
  uint32_t tcp_events = 0;          // as registered with epoll
  // TLS and tokens (tcp_agents.cpp): the TLS state over `sock` ([tls] listen_agents), the
  // identity its certificate or token gave ("" = none), whether it passed the checks before its
  // first control frame, and by when its TLS handshake must be done.
  std::unique_ptr<tls::Stream> tls;
  std::string identity;
  std::string tcp_from;  // its address, for logs
  bool tcp_admitted = false;
  uint64_t tcp_deadline_ns = 0;
};

/// epoll user data: what became ready.
enum class Source : uint32_t { Listener = 1, Signal, Timer, AgentSocket, AgentData, AgentSpace, LinkListener, Link, Greeter,
                              TcpAgentListener };
inline uint64_t tag(Source s, uint32_t id = 0) noexcept {
  return (static_cast<uint64_t>(s) << 32) | id;
}

}  // namespace bus::daemon
