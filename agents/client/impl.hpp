// libbus internals: one Client's connection to busd (private to agents/client).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "bus/client.hpp"
#include "bus/control.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "socket/frame.hpp"

namespace bus {

/// Connects to busd's [busd] tcp_listen at "host:port" and returns a Unix socket that speaks
/// busd's control protocol to this process (tcp_proxy.cpp).
Expected<int> start_tcp_proxy(std::string_view address, int timeout_ms);


/// Record tags on the agent's rings. Towards busd every record is an envelope; towards the agent
/// the tag names the subscription it was delivered for, or kInboxTag for replies and system
/// messages.
inline constexpr uint32_t kEnvelopeTag = 1;
inline constexpr uint32_t kInboxTag = 0;

/// Hash with heterogeneous lookup: find(string_view) without building a std::string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct Client::Impl {
  struct Subscription {
    std::string pattern;
    std::string group;
    Handler handler;
    bool active = false;
  };

  ClientOptions opts;
  shm::WaitStrategy wait{};
  ConnectionState state = ConnectionState::Connecting;
  std::function<void(ConnectionState, const Error*)> on_state;

  // Connection (valid while Connected).
  int sock = -1;
  sock::FrameReader reader{1 << 20};
  shm::Segment segment;
  shm::EventFd fds[4];  // to_busd.data, to_busd.space, to_agent.data, to_agent.space
  shm::RingProducer out;
  shm::RingConsumer in;
  uint32_t agent_id = 0;
  uint32_t max_message = 0;
  std::string inbox;       // "_INBOX.<agent id>": where replies to this agent go
  uint64_t control_seq = 0;
  uint64_t last_reconnect_try_ns = 0;
  uint64_t last_control_check_ns = 0;
  bool disconnecting = false;
  uint64_t reconnect_backoff_ns = 0;

  // Messages.
  uint64_t next_msg_id = 0;
  // A message being written into the outbound ring: its template, where it starts, its time.
  struct Claimed {
    const EnvelopeTemplate* t = nullptr;
    std::byte* base = nullptr;
    uint64_t now = 0;
  };
  // Zero copy (reserve/commit): the open reservation, if any.
  struct Reservation {
    bool open = false;
    bool lost = false;  // the connection dropped while it was open
    Claimed claimed;
    size_t max_payload = 0;
  } reservation;
  StringMap<EnvelopeTemplate> publish_templates;
  StringMap<EnvelopeTemplate> request_templates;  // reply_to = inbox
  StringMap<EnvelopeTemplate> reply_templates;    // keyed by the requester's inbox
  std::vector<Subscription> subs;                 // index = sid; 0 unused
  // send_request(): answers go to on_reply; outstanding ones are failed locally if busd never
  // answers (it went away) by their deadline plus a grace period.
  std::function<void(uint64_t, const Expected<Message>&)> on_reply;
  struct Outstanding {
    uint64_t id;
    uint64_t deadline_ns;
  };
  std::vector<Outstanding> outstanding;
  void fail_outstanding(uint64_t now_ns, bool all, Errc why);
  std::vector<std::byte> reply_buf;
  std::vector<std::byte> verify_buf;
  flatbuffers::FlatBufferBuilder fbb{512};
  Client::Stats stats;

  // ---- connection (connection.cpp)
  Expected<void> connect_once();
  void disconnect(const Error& why, bool reconnect);
  /// Reconnects if disconnected and the back-off allows; true when connected afterwards.
  bool ensure_connected();
  void set_state(ConnectionState s, const Error* why);

  // ---- control plane (connection.cpp)
  Expected<void> send_control(control::Body type, flatbuffers::Offset<void> body);
  /// Reads and handles control messages; with `want_ref` waits (up to `deadline_ns`) until the
  /// answer to that seq arrives and returns it through `on_answer`.
  Expected<void> pump_control(uint64_t want_ref, uint64_t deadline_ns,
                              const std::function<Expected<void>(const control::ControlMessage&)>& on_answer);
  Expected<void> pump_control_nowait();
  Expected<void> subscribe_remote(uint32_t sid);

  // ---- data plane (client.cpp)
  Result<void> send(wire::Kind kind, std::string_view subject, std::span<const std::byte> payload,
                    uint64_t correlation_id, uint64_t budget_ns, Errc status, bool flush = true);
  /// send() in two halves (reserve/commit use them apart): room in the ring for a message with
  /// a payload of `payload_len` bytes, then its prefix and header written and the record committed.
  Result<Claimed> claim_message(wire::Kind kind, std::string_view subject, size_t payload_len);
  void finish_message(const Claimed& c, size_t payload_len, wire::Kind kind, uint64_t correlation_id,
                      uint64_t budget_ns, Errc status, bool flush);
  /// Dispatches up to `max` ready messages; stops early at the reply `want_reply` (copied into
  /// reply_buf, *got set) if non-zero.
  Result<size_t> dispatch(size_t max, uint64_t want_reply, bool* got);
  /// Waits until a record or a control message is there, or `deadline_ns`.
  void wait_inbound(uint64_t deadline_ns);
};

}  // namespace bus
