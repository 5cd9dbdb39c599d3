// One peer busd as busd's link manager sees it: a Link (TCP now) that it dials or accepts, the
// handshake (Hello: cluster and protocol version), the Session above it (sequence numbers,
// acks, resume), heartbeats, death detection and reconnection with exponential back-off and
// jitter. It reads no clock and blocks nowhere: the poll loop passes `now` and calls tick()
// and receive() when the peer's descriptor is ready (or its timer is due).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "link/link.hpp"
#include "link/session.hpp"
#include "link/wire.hpp"
#include "tcp/tcp_link.hpp"

namespace bus::links {

struct PeerOptions {
  std::string cluster = "default";
  std::string node;                 // this busd's name in the cluster
  tcp::Endpoint address;            // where to dial (dial = true)
  bool dial = true;                 // false: the peer dials us (adopt() its connections)
  /// Makes a new link to the peer (any kind; a datagram link starts Connecting and finishes
  /// its handshake in finish_connect()). Empty: a TCP connect to `address`.
  std::function<Expected<std::unique_ptr<link::Link>>()> dialer;
  std::string target;               // what is dialed, for messages ("" = address)
  tcp::LinkSecurity security;       // TLS and token of a TCP link this peer dials
  uint32_t heartbeat_ms = 1000;     // a Heartbeat when nothing else was sent for this long
  uint32_t dead_after_ms = 3000;    // nothing heard for this long: the connection is dead
  uint32_t handshake_ms = 2000;     // Hello must arrive within this long
  uint32_t backoff_min_ms = 50;     // first reconnect delay; doubles up to backoff_max_ms,
  uint32_t backoff_max_ms = 5000;   // each with +-25% jitter
  size_t hold_bytes = 8u << 20;     // messages held while the link is down (then refused)
  uint32_t max_frame = (1u << 20) + 4096;
};

enum class PeerState : uint8_t {
  Waiting,     // down; the next dial is due at retry_at() (or, not dialing: an accept)
  Connecting,  // TCP connect in progress
  Handshake,   // connected, Hellos being exchanged
  Up,          // handshake done, the session flows
};
[[nodiscard]] const char* to_string(PeerState s) noexcept;

struct PeerCounters {
  uint64_t connects = 0, disconnects = 0, handshake_failures = 0, heartbeats_sent = 0;
  uint64_t refused_held_full = 0;  // send() while the hold buffer was full (dropped by the caller)
};

class Peer {
 public:
  Peer(PeerOptions o, uint64_t session_id, uint64_t seed);

  /// Dials when due, finishes connects, sends Hello, Heartbeats and everything ready; declares
  /// the connection dead after dead_after_ms of silence (or handshake_ms without a Hello).
  void tick(uint64_t now_ns);
  /// Reads what arrived; envelopes delivered in order are appended to `out` (views valid until
  /// the next receive() or tick(), even if the connection failed meanwhile). Other frames are
  /// handled here; acks and replies go out at the next tick().
  void receive(std::vector<std::span<const std::byte>>& out, uint64_t now_ns);
  /// Holds an envelope for the peer (sent when the link is up, resent after a reconnect).
  /// Errors: WouldBlock (hold buffer full: drop and count), TooLarge.
  [[nodiscard]] Result<void> send(std::span<const std::byte> envelope);
  /// Whether send() would take a body of `body` bytes now.
  [[nodiscard]] bool can_send(size_t body) const noexcept { return session_.can_offer(body); }
  /// The same for a body gathered from parts (no copy before the session's own).
  [[nodiscard]] Result<void> send(std::span<const std::span<const std::byte>> parts);
  /// An accepted connection for this peer (the manager matched it by the peer's Hello, or this
  /// peer does not dial). Replaces the current one.
  void adopt(std::unique_ptr<link::Link> l, uint64_t now_ns);
  /// An accepted connection whose Hello the manager already read (and negotiated) to find this
  /// peer: `rest` are the frames that came after it in the same read (views into the link's
  /// buffer); they must be control frames, the peer sends Data only after our Resume.
  void adopt_greeted(std::unique_ptr<link::Link> l, const link::Hello& hello, std::span<const link::Frame> rest,
                     uint64_t now_ns);
  /// From now on, dial with `dialer` (see PeerOptions::dialer); `target` names it in messages.
  void set_dialer(decltype(PeerOptions::dialer) dialer, std::string target) {
    o_.dialer = std::move(dialer);
    o_.target = std::move(target);
    o_.dial = true;
  }
  /// The TLS and token of the TCP links this peer dials (see PeerOptions::security).
  void set_security(tcp::LinkSecurity s) { o_.security = std::move(s); }
  /// This busd's Hello, as sent.
  [[nodiscard]] const link::Hello& local() const noexcept { return local_; }
  /// Ends the current connection (operator command, shutdown, tests); a dialing peer redials
  /// after the back-off.
  void disconnect(const std::string& why, uint64_t now_ns) { fail(why, now_ns); }

  [[nodiscard]] PeerState state() const noexcept { return state_; }
  /// Why the last connection ended or failed, for the log ("" if none has).
  [[nodiscard]] const std::string& last_error() const noexcept { return last_error_; }
  /// The peer's Hello once the handshake is done.
  [[nodiscard]] const link::Hello& remote() const noexcept { return remote_; }
  [[nodiscard]] uint64_t retry_at() const noexcept { return retry_at_; }
  [[nodiscard]] int wait_fd() const noexcept { return link_ ? link_->wait_fd() : -1; }
  [[nodiscard]] bool wants_write() const noexcept { return link_ && link_->wants_write(); }
  /// Poll-mode links (DPDK): input is ready without a readable descriptor.
  [[nodiscard]] bool has_input() const noexcept { return link_ && link_->has_input(); }
  /// Before the poll loop sleeps: false when input is ready (see link::Link::arm()).
  [[nodiscard]] bool arm() noexcept { return !link_ || link_->arm(); }
  void disarm() noexcept {
    if (link_) link_->disarm();
  }
  /// When tick() must run at the latest for the link's timers (retransmissions), UINT64_MAX if
  /// it has none.
  [[nodiscard]] uint64_t timer_ns() const noexcept { return link_ ? link_->timer_ns() : UINT64_MAX; }
  /// Counts of every connection this peer had, the current one included.
  [[nodiscard]] link::LinkCounters link_totals() const noexcept {
    link::LinkCounters t = retired_totals_;
    if (link_) t.add(link_->counters());
    return t;
  }
  /// The link itself (counters of its kind), null while there is none.
  [[nodiscard]] const link::Link* current_link() const noexcept { return link_.get(); }
  [[nodiscard]] const link::Session& session() const noexcept { return session_; }
  [[nodiscard]] const PeerCounters& counters() const noexcept { return c_; }
  /// Smoothed round trip to the peer busd and back (heartbeat probe to its echo: both busds'
  /// loops included), 0 until the first echo. Kept across reconnects.
  [[nodiscard]] uint64_t rtt_ns() const noexcept { return rtt_ns_; }
  /// The round trip of the echo receive() just took, once (0: none since the last call).
  [[nodiscard]] uint64_t take_rtt_sample() noexcept { return std::exchange(rtt_sample_, 0); }

 private:
  void start_link(std::unique_ptr<link::Link> l, uint64_t now_ns);
  void fail(const std::string& why, uint64_t now_ns);
  void flush(uint64_t now_ns);

  PeerOptions o_;
  link::Session session_;
  std::unique_ptr<link::Link> link_;
  std::unique_ptr<link::Link> retired_;  // the link that just failed, kept until the next call
  PeerState state_ = PeerState::Waiting;
  std::string last_error_;
  link::Hello local_;
  link::Hello remote_;
  std::vector<std::byte> hello_bytes_;
  uint64_t state_since_ = 0;
  uint64_t last_heard_ = 0;
  uint64_t last_sent_ = 0;
  uint64_t last_probe_ = 0;  // the last heartbeat sent: one goes out each heartbeat_ms even when busy
  uint64_t rtt_ns_ = 0;
  uint64_t rtt_sample_ = 0;  // the last echo's round trip, until take_rtt_sample()
  uint64_t retry_at_ = 0;
  uint64_t backoff_ms_ = 0;
  std::mt19937_64 rng_;
  std::vector<link::Frame> frames_;
  PeerCounters c_;
  link::LinkCounters retired_totals_;  // the connections before the current one
};

}  // namespace bus::links
