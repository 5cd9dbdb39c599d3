// libbus internals: one Client's connection to busd (private to agents/client).
#pragma once

#include <poll.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "bus/client.hpp"
#include "bus/control.hpp"
#include "shm/lane.hpp"
#include "shm/log.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "socket/frame.hpp"

namespace bus {

/// Connects to busd's [busd] tcp_listen at "host:port" and returns a Unix socket that speaks
/// busd's control protocol to this process (tcp_proxy.cpp). `tls`: the stream is TLS (the
/// handshake is done before this returns; its failure is the error); the TLS and token settings
/// come from `o` (or their environment variables).
Expected<int> start_tcp_proxy(std::string_view address, int timeout_ms, bool tls, const ClientOptions& o);


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
  // ---- lanes (lanes.cpp; layout and protocol: shm/lane.hpp)
  /// A lane to another local agent: the ring this agent writes and the one it reads. Or a
  /// broadcast log (`log`): this agent writes it (readers: log_readers) or reads it (peer: the
  /// writer; sids: the subscriptions its messages are for).
  struct Lane {
    uint32_t id = 0;
    uint32_t peer = 0;
    std::string peer_name;
    shm::Segment segment;
    shm::EventFd fds[4];  // out.data, out.space, in.data, in.space (a log: [2] data, [3] space)
    shm::RingProducer out;
    shm::RingConsumer in;
    bool log = false;
    shm::log::LogWriter log_out;
    shm::log::LogReader log_in;
    std::vector<shm::EventFd> log_fds;  // the writer's: each reader's data eventfd
    std::vector<uint32_t> log_readers;
    std::vector<uint32_t> sids;
    // This direction's counters (we write them): the lane's LaneSide, or the log's.
    std::atomic<uint64_t>* out_messages = nullptr;
    std::atomic<uint64_t>* out_bytes = nullptr;
    std::atomic<uint64_t>* out_would_block = nullptr;
    const std::atomic<uint32_t>* closed = nullptr;  // busd sets it when the lane goes away (lanes)
    bool verify = true;
    bool copy_first = false;
    // Writing.
    uint64_t out_k = 0;     // the last fence number used in this direction
    uint64_t fenced_at = UINT64_MAX;  // brokered_sent at the last switch from busd's path to it
    bool dirty = false;     // messages went over it since the last switch back to busd's path
    bool out_ended = false;  // our end record is written: nothing more goes over it
    // Reading.
    uint64_t lane_mark = 0;  // highest mark passed in the lane
    uint64_t busd_mark = 0;  // highest mark for this lane passed on busd's ring
    bool blocked = false;    // at a gate whose mark has not come through busd yet
    bool in_ended = false;   // the other side's end record was passed
    // busd said: end it (LaneClose); the other side died.
    bool close_asked = false;
    bool peer_gone = false;

    [[nodiscard]] bool is_closed() const noexcept {
      return closed != nullptr && closed->load(std::memory_order_acquire) != 0;
    }
    Result<std::span<std::byte>> out_try_claim(uint32_t len, uint32_t tag) noexcept {
      return log ? log_out.try_claim(len, tag) : out.try_claim(len, tag);
    }
    Result<std::span<std::byte>> out_claim(uint32_t len, const shm::WaitStrategy& ws, shm::Deadline d, uint32_t tag) noexcept {
      return log ? log_out.claim(len, ws, d, tag) : out.claim(len, ws, d, tag);
    }
    void out_commit(uint32_t len) noexcept { log ? log_out.commit(len) : out.commit(len); }
    void out_publish() noexcept {
      if (log) {
        if (log_out.attached()) log_out.publish();
      } else if (out.attached()) {
        out.publish();
      }
    }
    [[nodiscard]] uint64_t out_unconsumed() noexcept { return log ? log_out.unconsumed() : out.unconsumed(); }
    Result<shm::Record> in_try_peek() noexcept { return log ? log_in.try_peek() : in.try_peek(); }
    void in_advance() noexcept { log ? log_in.advance() : in.advance(); }
    void in_release() noexcept { log ? log_in.release() : in.release(); }
    [[nodiscard]] bool in_arm_sleep() noexcept { return log ? log_in.arm_sleep() : in.arm_sleep(); }
    void in_disarm() noexcept { log ? log_in.disarm() : in.disarm(); }
    void count_out(uint32_t bytes) noexcept {
      shm::lane::count(*out_messages);
      shm::lane::count(*out_bytes, bytes);
    }
  };
  struct Target {
    Lane* lane;
    uint32_t tag;
  };
  static constexpr uint64_t kNoEpoch = UINT64_MAX;
  /// A subject this agent sends to: its envelope template and, with lanes, its route.
  struct Outbound {
    EnvelopeTemplate t;
    uint64_t route_epoch = kNoEpoch;  // `targets` hold while the route epoch is this
    uint64_t asked_epoch = kNoEpoch;  // RouteQuery sent in this epoch
    std::vector<Target> targets;
  };
  /// A Route answer waiting to be applied (settle_lanes(): never while a claim is open).
  struct RouteAnswer {
    std::string subject;
    uint64_t epoch;
    std::vector<std::pair<uint32_t, uint32_t>> targets;  // (lane id, tag)
  };

  struct Subscription {
    std::string pattern;
    std::string group;
    SlowPolicy slow = SlowPolicy::Block;
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
  // disconnect() from inside a dispatch: the teardown waits for the outermost dispatch.
  bool teardown_deferred = false;
  bool deferred_reconnect = false;
  Error deferred_why{Errc::Closed, ""};
  uint64_t reconnect_backoff_ns = 0;

  // Messages.
  uint64_t next_msg_id = 0;
  // A message being written into the outbound ring or a lane: its template, where it starts,
  // its time, the ring, and the route when it goes over lanes (the other targets get copies).
  struct Claimed {
    const EnvelopeTemplate* t = nullptr;
    std::byte* base = nullptr;
    uint64_t now = 0;
    shm::RingProducer* ring = nullptr;
    const Outbound* route = nullptr;
    Lane* lane = nullptr;  // the lane written (the first target), or null: through busd
    // commit_built(): the payload (a FlatBuffer built in place) starts `gap` bytes after the
    // prefix (EnvelopeTemplate::write_prefix_with_gap); Flags::PayloadFlatBuffer is set.
    uint32_t gap = 0;
    bool flatbuffer = false;
  };
  // Zero copy (reserve/commit): the open reservation, if any.
  struct Reservation {
    bool open = false;
    bool lost = false;  // the connection dropped while it was open
    Claimed claimed;
    size_t max_payload = 0;
  } reservation;
  StringMap<Outbound> publish_templates;
  StringMap<Outbound> request_templates;  // reply_to = inbox
  StringMap<Outbound> reply_templates;    // keyed by the requester's inbox
  /// Each map's entry used last: a stream to one subject skips the hash (entries never move).
  struct LastSubject {
    std::string_view key;
    Outbound* entry = nullptr;
  };
  LastSubject last_publish, last_request, last_reply;
  uint64_t batch_clock_ns = 0;   // the clock read a batch's messages share
  uint32_t batch_clock_uses = 0;  // ... for this many more
  std::vector<Subscription> subs;                 // index = sid; 0 unused
  // send_request(): answers go to on_reply; outstanding ones are failed locally if busd never
  // answers (it went away) by their deadline plus a grace period.
  std::function<void(uint64_t, const Expected<Message>&)> on_reply;
  struct Outstanding {
    uint64_t id;
    uint64_t deadline_ns;
    uint32_t lane;  // sent over this lane (0: through busd)
  };
  std::vector<Outstanding> outstanding;
  /// Fails the outstanding requests past their deadline (all of them with `all`); returns the
  /// earliest deadline of those left (shm::kForever: none), which bounds poll()'s sleep.
  uint64_t fail_outstanding(uint64_t now_ns, bool all, Errc why);
  std::vector<std::byte> reply_buf;
  uint32_t reply_lane = 0;  // the lane reply_buf's reply came over
  uint64_t view_epoch = 0;  // views handed back so far (Message::stale())
  std::vector<std::byte> verify_buf;
  flatbuffers::FlatBufferBuilder fbb{512};
  Client::Stats stats;

  // Lanes.
  shm::lane::AgentLines* lines = nullptr;  // in our segment; null: busd gives no lanes
  uint64_t epoch_seen = 0;                 // the route epoch our routes are from
  std::vector<std::unique_ptr<Lane>> lanes;
  std::vector<RouteAnswer> route_answers;
  uint32_t routes_pending = 0;    // RouteQuery sent, no Route back yet
  uint64_t route_wait_until = 0;  // ... until then the control socket is read on every send
  bool lanes_dirty = false;    // answers to apply or lanes to close: settle_lanes() has work
  int dispatching = 0;         // lanes are not freed while a dispatch may hold one of their records
  uint32_t last_lane = 0;      // the lane the last message went over (0: through busd)
  uint64_t brokered_sent = 0;  // messages sent through busd (fences: fence_to_lane)
  uint32_t dirty_lanes = 0;    // lanes with dirty set
  uint32_t sync_lane = 0;      // request(): the lane its request went over
  bool sync_lane_gone = false;  // ... and that lane's other end died before replying
  // wake() (any thread): `pending` says a wake-up is owed to the current (or the next) wait of
  // poll(); `sleeping` says that wait sleeps in poll(2) with `wake_fd` in its set, so wake()
  // must write it. seq_cst where they pair (see Client::wake()). Their own cache line: the
  // waker writes it, the polling thread reads it only while it has nothing to dispatch.
  struct alignas(64) WakeLine {
    std::atomic<bool> pending{false};
    std::atomic<bool> sleeping{false};
  } wake_line;
  shm::EventFd wake_fd;  // lives as long as the Client (never one of the connection's fds)
  /// Whether a wake-up is pending (one relaxed load: the spin loops' check).
  [[nodiscard]] bool wake_owed() const noexcept { return wake_line.pending.load(std::memory_order_relaxed); }
  /// The sleep in poll(2) on `p` (n entries, and room for one more: with `wakeable` the wake
  /// eventfd goes last), for up to `ms`. With `wakeable` it does not sleep when a wake-up is
  /// owed, and it drains the wake eventfd when that woke it.
  void sleep_poll(pollfd* p, size_t n, int ms, bool wakeable) noexcept;
  std::deque<int> rx_fds;      // descriptors received with control frames, in order
  std::vector<pollfd> pfds;    // wait_inbound's poll set
  std::vector<Lane*> armed;    // ... and the lanes it armed

  /// Whether the route epoch moved (one load): then settle_lanes().
  [[nodiscard]] bool routes_stale() const noexcept {
    return lanes_dirty || (lines != nullptr && lines->route_epoch.load(std::memory_order_acquire) != epoch_seen);
  }
  /// Applies what busd said (epoch moved: routes are gone; answers; closes), frees finished
  /// lanes. Never while a reservation is open.
  void settle_lanes();
  Lane* find_lane(uint32_t id) noexcept;
  /// The next `n` descriptors received with control frames (false, none taken: fewer came).
  bool take_fds(size_t n, int* out);
  void close_rx_fds() noexcept;
  /// A lane or log set up: into `lanes`, the poll set sized for it.
  void add_lane(std::unique_ptr<Lane> l);
  void on_lane_open(const control::LaneOpen& m);
  void on_log_open(const control::LogOpen& m);
  void on_lane_close(const control::LaneClose& m);
  void on_route(const control::Route& m);
  void ask_route(std::string_view subject, Outbound& o);
  /// Room for a record in a lane (waits like publish() while it is full); Closed when it went.
  Result<std::span<std::byte>> lane_claim(Lane& l, uint32_t len, uint32_t tag);
  /// A mark/gate/end record: into `l` (to_lane) or into the ring to busd naming `l`.
  bool write_fence(Lane& l, bool to_lane, uint32_t tag, uint64_t k);
  /// Switch `l` from busd's path to the lane (mark via busd, gate in the lane) or back. This
  /// agent's messages to one receiver stay in the order they were sent, whichever path each
  /// took: a lane message after messages through busd is fenced first, and so is a message
  /// through busd after lane messages (fence_dirty_lanes). Only mixed traffic pays.
  bool fence_to_lane(Lane& l);
  void fence_to_busd(Lane& l, bool end);
  void fence_dirty_lanes();
  /// A message for lane `l`: fenced if busd's path was used since (see fence_to_lane).
  Result<std::span<std::byte>> lane_message_claim(Lane& l, uint32_t len, uint32_t tag);
  /// Reads lane records until `until_mark` is passed (0: as many as `max`), the lane is empty
  /// or blocked; counts into *n.
  Result<void> read_lane(Lane& l, size_t max, uint64_t until_mark, uint64_t want_reply, bool* got, size_t* n);
  /// One envelope from busd (lane null) or a lane: verified, handed to its handler.
  void deliver_record(Lane* l, const shm::Record& rec, uint64_t want_reply, bool* got);
  /// A lane's other end died or went: requests sent over it fail now.
  void fail_lane_requests(uint32_t lane);
  void drop_lanes();

  // ---- connection (connection.cpp)
  Expected<void> connect_once();
  void disconnect(const Error& why, bool reconnect);
  void finish_deferred_teardown();
  /// Unmaps the rings and lanes, closes the socket, and moves to Disconnected (or Closed).
  void teardown(const Error& why, bool reconnect);
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
                    uint64_t correlation_id, uint64_t budget_ns, Errc status, bool flush = true, uint32_t via = 0);
  /// send() in two halves (reserve/commit use them apart): room in the ring for a message with
  /// a payload of `payload_len` bytes, then its prefix and header written and the record committed.
  /// `via`: a reply to a request that came over that lane goes back over it (0: busd).
  /// `batched`: Flush::Later (the clock is read once per 16 such messages).
  Result<Claimed> claim_message(wire::Kind kind, std::string_view subject, size_t payload_len, uint32_t via = 0,
                                bool batched = false);
  void finish_message(const Claimed& c, size_t payload_len, wire::Kind kind, uint64_t correlation_id,
                      uint64_t budget_ns, Errc status, bool flush);
  /// Dispatches up to `max` ready messages; stops early at the reply `want_reply` (copied into
  /// reply_buf, *got set) if non-zero.
  Result<size_t> dispatch(size_t max, uint64_t want_reply, bool* got);
  /// Waits until a record or a control message is there, or `deadline_ns`; with `wakeable`
  /// (poll()), also until wake() is called (request() waits for its reply whatever happens).
  void wait_inbound(uint64_t deadline_ns, bool wakeable = false);
  void wait_inbound_lanes(uint64_t deadline_ns, bool wakeable);
};

}  // namespace bus
