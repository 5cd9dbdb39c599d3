// libbus: the client SDK agents embed.
//
//   bus::Client c{"planner"};                                   // connects to the local busd
//   c.subscribe("jobs.>", [](const bus::Message& m) { ... });
//   c.publish("jobs.new", bytes);
//   auto reply = c.request("svc.plan", bytes, std::chrono::milliseconds(5));
//   c.run();                                                    // dispatch until stop()
//
// Where busd is: ClientOptions::address, else $BUS_SOCKET, else $XDG_RUNTIME_DIR/busd.sock,
// else /run/busd/busd.sock (bus/address.hpp), the same order busd uses.
//
// Threads. A Client is used by one thread at a time: none of its calls are thread-safe, and
// handlers run on the thread that calls poll(), run() or request(). Its outbound ring has one
// producer, so an agent that publishes from several threads gives each thread its own Client
// (each is an agent with its own name and rings; that is also what keeps their publishes from
// contending), or serializes the calls with its own mutex. wake() and stop() are the calls
// another thread (or a signal handler) may make: an event loop that owns a Client on an I/O
// thread queues work for it and calls wake() to end that thread's poll().
//
// Cost. publish(), the receive path and request() allocate nothing after warm-up (the first
// message on a subject builds its envelope template); messages are written straight into the
// shared-memory ring and handed to handlers as views into it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bus/envelope.hpp"
#include "bus/error.hpp"

namespace bus {

namespace shm {
struct WaitStrategy;
}
class InPlaceBuilder;  // bus/inplace.hpp

// Debug builds check that a Message is not used after the memory it views was handed back
// (BUS_CHECK_VIEWS, on unless NDEBUG; define it to 0 or 1 to choose). The check is in this
// header, so it follows the agent's build, not libbus's; the Message layout is the same both ways.
#ifndef BUS_CHECK_VIEWS
#ifdef NDEBUG
#define BUS_CHECK_VIEWS 0
#else
#define BUS_CHECK_VIEWS 1
#endif
#endif

/// Aborts with a message naming the misuse (a Message used after its handler returned).
[[noreturn]] void stale_message_view() noexcept;

/// A received message. Its views point into ring memory (or, for request(), into the Client's
/// reply buffer): valid until the handler returns, or until the next call on the Client. Copy
/// what must live longer. In a debug build, using a Message after that aborts with a clear
/// message instead of reading bytes that may already belong to the next message.
class Message {
 public:
  Message() = default;
  /// `epoch`: the Client's count of handed-back views; the Message is stale once it moves.
  Message(EnvelopeView v, uint32_t sid, uint32_t lane = 0, const uint64_t* epoch = nullptr) noexcept
      : view_(v), sid_(sid), lane_(lane), valid_(true), epoch_(epoch), epoch_at_(epoch != nullptr ? *epoch : 0) {}

  [[nodiscard]] std::string_view subject() const noexcept { return checked().subject(); }
  [[nodiscard]] std::string_view reply_to() const noexcept { return checked().reply_to(); }
  [[nodiscard]] std::span<const std::byte> payload() const noexcept { return checked().payload(); }
  /// The payload as text (no copy, not 0-terminated).
  [[nodiscard]] std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(payload().data()), payload().size()};
  }
  [[nodiscard]] wire::Kind kind() const noexcept { return checked().header().kind(); }
  [[nodiscard]] bool is_request() const noexcept { return kind() == wire::Kind::Request; }
  [[nodiscard]] uint64_t id() const noexcept { return checked().header().msg_id(); }
  [[nodiscard]] uint32_t source_id() const noexcept { return checked().header().source_id(); }
  /// The subscription it was delivered for (0: a reply or a system message).
  [[nodiscard]] uint32_t sid() const noexcept { return sid_; }
  /// The direct lane it came over (0: through busd). A reply to a request goes back the same way.
  [[nodiscard]] uint32_t lane() const noexcept { return lane_; }
  [[nodiscard]] const EnvelopeView& envelope() const noexcept { return checked(); }
  [[nodiscard]] bool valid() const noexcept { return valid_; }
  /// Whether the memory it views was handed back (the handler returned, or another call on
  /// the Client came): then its views must not be used. Always false for a Message not from a
  /// Client.
  [[nodiscard]] bool stale() const noexcept { return epoch_ != nullptr && *epoch_ != epoch_at_; }

 private:
  [[nodiscard]] const EnvelopeView& checked() const noexcept {
#if BUS_CHECK_VIEWS
    if (stale()) stale_message_view();
#endif
    return view_;
  }
  EnvelopeView view_{};
  uint32_t sid_ = 0;
  uint32_t lane_ = 0;
  bool valid_ = false;
  const uint64_t* epoch_ = nullptr;
  uint64_t epoch_at_ = 0;
};

using Handler = std::function<void(const Message&)>;

enum class ConnectionState : uint8_t {
  Connecting,    // first connect in progress
  Connected,     // registered, rings mapped
  Disconnected,  // busd went away (or asked us to go): reconnecting by itself if enabled
  Closed,        // close() or drain() finished, or reconnect disabled
};
[[nodiscard]] std::string_view to_string(ConnectionState s) noexcept;

struct AgentInfo {
  std::string name;
  uint32_t agent_id = 0;
  std::vector<std::string> capabilities;
  uint32_t pid = 0;
  uint32_t uid = 0;
};

struct ClientOptions {
  std::string name;                        // unique on this host
  std::vector<std::string> capabilities;   // found by find_agents()
  std::string address;                     // busd's socket path; "" = the default lookup
                                           // ("tcp://host:port", "tls://host:port": a remote busd)
  /// A remote busd over TLS ("tls://host:port") and tokens. An empty field takes its
  /// environment variable: $BUS_TLS_CA, $BUS_TLS_CERT, $BUS_TLS_KEY, $BUS_TLS_SERVER_NAME,
  /// $BUS_TOKEN. A certificate (with its key) is this agent's identity to busd's [[acl]]
  /// (mutual TLS); a token, one of busd's [[tokens]], is the simpler alternative (it works
  /// over "tcp://" too, but is then sent in the clear).
  std::string tls_ca;           // PEM CA bundle that verifies busd; "" = the system's CAs
  std::string tls_cert;         // PEM client certificate; "" = none
  std::string tls_key;          // its PEM private key
  std::string tls_server_name;  // the name busd's certificate must carry; "" = the address's host
  std::string token;            // presented before the Hello; "" = none
  std::string wait = "adaptive";           // spin | yield | adaptive[:<n>us] | block
  bool reconnect = true;                   // reconnect and resubscribe after busd restarts
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds control_timeout{2000};  // subscribe/unsubscribe/find acknowledgements
  /// How long publish() waits while the ring to busd is full (0: return WouldBlock at once).
  std::chrono::milliseconds publish_timeout{1000};
  /// Ask busd to write its hop times into every message this agent sends (Flags::Timed, read
  /// with bus::hop_timing(msg.envelope().header())): busbench's per-hop breakdown. Costs busd
  /// two clock reads per such message.
  bool hop_timing = false;
};

/// What busd does with a message for a subscription whose agent's ring is full (the agent
/// reads slower than it is sent to). Every drop is counted and reported in $bus.slow events.
enum class SlowPolicy : uint8_t {
  Block,       // (default) the publisher waits: nothing is lost, the publisher is pushed back
  DropOldest,  // busd keeps the newest messages (limits.slow_buffer_bytes per agent), drops the oldest
  DropNewest,  // busd keeps what fits in that buffer and drops new messages beyond it
  Disconnect,  // as DropNewest, but a full buffer disconnects the agent (it then reconnects)
};
[[nodiscard]] std::string_view to_string(SlowPolicy p) noexcept;

struct SubscribeOptions {
  std::string_view queue_group;  // one member of the group gets each message
  SlowPolicy slow = SlowPolicy::Block;
};

/// publish(): wake busd for this message now (one ring publish, and a wake-up if busd sleeps),
/// or leave it for a later flush (batching; see Client::flush()).
enum class Flush : uint8_t { Now, Later };

class Client {
 public:
  /// Connects or throws bus::ClientError (a convenience for tools and examples).
  explicit Client(std::string name);
  explicit Client(ClientOptions options);
  /// Connects without throwing.
  [[nodiscard]] static Expected<std::unique_ptr<Client>> connect(ClientOptions options);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  /// Closes without calling any handler or callback.
  ~Client();

  /// Publishes `payload` on `subject`. Waits up to publish_timeout while busd is behind (the
  /// ring is full), then returns WouldBlock. Errors: InvalidArgument (bad subject), TooLarge,
  /// WouldBlock, Closed (not connected).
  Result<void> publish(std::string_view subject, std::span<const std::byte> payload);
  /// Batching: with Flush::Later the message is written to the ring without waking busd; busd
  /// takes it when it next looks at the ring, at the latest at the next flush(),
  /// publish(Flush::Now), request, reply, poll, or when the ring fills up. A batch of N
  /// messages costs one ring publish and at most one wake-up of busd.
  Result<void> publish(std::string_view subject, std::span<const std::byte> payload, Flush flush);
  /// Makes every message published with Flush::Later visible to busd.
  void flush() noexcept;

  /// Zero copy: claims room in the outbound ring for a message on `subject` with a payload of
  /// up to `max_payload` bytes and returns where to write the payload (ring memory, 8-byte
  /// aligned); commit() sends it. One reservation at a time, and nothing else is sent while it
  /// is open. Waits like publish() when the ring is full. Errors: InvalidArgument (bad subject,
  /// or a reservation is already open), TooLarge, WouldBlock, Closed.
  Expected<std::span<std::byte>> reserve(std::string_view subject, size_t max_payload);
  /// Sends the reserved message with the first `payload_len` bytes of its payload. Errors:
  /// InvalidArgument (no reservation open, or payload_len above what was reserved: the
  /// reservation stays open), Closed (the connection dropped since reserve(): it is gone).
  Result<void> commit(size_t payload_len, Flush flush = Flush::Now);
  /// Sends the reserved message with the FlatBuffer `fbb` finished in the reserved room
  /// (bus/inplace.hpp), where it lies: the payload is exactly that FlatBuffer, 8-byte aligned,
  /// and Flags::PayloadFlatBuffer is set. Errors: InvalidArgument (no reservation open, `fbb`
  /// not finished or not built in the reserved room: the reservation stays open), Closed (as
  /// commit()).
  Result<void> commit_built(const InPlaceBuilder& fbb, Flush flush = Flush::Now);
  /// Drops the open reservation, if any; nothing is sent.
  void abandon() noexcept;
  Result<void> publish(std::string_view subject, std::string_view text) {
    return publish(subject, std::as_bytes(std::span(text.data(), text.size())));
  }

  /// Subscribes `handler` to a pattern (`*` one token, `>` the rest), optionally as a member of
  /// a queue group (one member of the group gets each message). Returns the subscription id
  /// once busd has acknowledged it: messages published after that reach the handler.
  Expected<uint32_t> subscribe(std::string_view pattern, Handler handler,
                               std::string_view queue_group = {});
  /// The same, with a queue group and a slow-consumer policy. A subscription with a drop or
  /// disconnect policy is never served over a direct lane: its messages pass through busd,
  /// which applies the policy.
  Expected<uint32_t> subscribe(std::string_view pattern, Handler handler, const SubscribeOptions& options);
  Expected<void> unsubscribe(uint32_t sid);

  /// Sends a request and waits for its reply (dispatching other messages to their handlers
  /// meanwhile). Errors: NoResponders (nobody subscribed, at once), Timeout, Closed, and
  /// whatever the responder or busd answered (PermissionDenied, TooLarge, ...). The reply stays
  /// valid until the next call on this Client.
  Expected<Message> request(std::string_view subject, std::span<const std::byte> payload,
                            std::chrono::nanoseconds timeout);
  Expected<Message> request(std::string_view subject, std::string_view text,
                            std::chrono::nanoseconds timeout) {
    return request(subject, std::as_bytes(std::span(text.data(), text.size())), timeout);
  }

  /// Sends a request without waiting: the reply (or its error: NoResponders, Timeout, Closed,
  /// ...) goes to the on_reply handler, from poll()/run()/request(), with the id returned here.
  /// For scatter-gather: many requests in flight from one agent.
  Result<uint64_t> send_request(std::string_view subject, std::span<const std::byte> payload,
                                std::chrono::nanoseconds timeout);
  Result<uint64_t> send_request(std::string_view subject, std::string_view text,
                                std::chrono::nanoseconds timeout) {
    return send_request(subject, std::as_bytes(std::span(text.data(), text.size())), timeout);
  }
  /// Receives every answer to send_request(); the Message is valid during the call.
  void on_reply(std::function<void(uint64_t request_id, const Expected<Message>& reply)> handler);

  /// Answers a request (its reply_to and id).
  Result<void> reply(const Message& request, std::span<const std::byte> payload);
  Result<void> reply(const Message& request, std::string_view text) {
    return reply(request, std::as_bytes(std::span(text.data(), text.size())));
  }
  /// Answers a request with an error code (the requester's request() returns it).
  Result<void> reply_error(const Message& request, Errc code, std::string_view detail = {});

  /// Dispatches received messages to handlers, waiting up to `timeout` for the first one.
  /// Returns how many were dispatched (0 on timeout, or when woken by wake()).
  Result<size_t> poll(std::chrono::nanoseconds timeout);
  /// poll() until stop(). (wake() does not end it.)
  void run();
  /// Makes run() return, and poll() return without waiting until the next run(). Thread-safe
  /// and async-signal-safe; wakes a wait in progress (as wake()), so run() returns promptly.
  void stop() noexcept;
  /// Ends the wait of a poll() in progress on another thread promptly (it returns 0), or, if
  /// none is waiting, the next poll()'s wait (once: wake-ups before a poll takes them count as
  /// one). The Client goes on working (unlike stop()). Thread-safe and async-signal-safe; the
  /// caller must keep the Client alive during the call. What the caller did before wake() (a
  /// command it queued for the polling thread) is visible to that thread when poll() returns.
  /// Costs one atomic exchange, plus one write(2) when the poller sleeps in the kernel (wait
  /// "block", or "adaptive" past its spin); a poller that spins (any wait strategy) sees it
  /// within a spin turn. request() and drain() are not woken: they wait for what they wait for.
  /// Nothing is added to the message path: poll() reads the flag only when it has nothing to
  /// dispatch.
  void wake() noexcept;

  /// Agents on this host with `capability` (and a name matching `name_glob`).
  Expected<std::vector<AgentInfo>> find_agents(std::string_view capability,
                                               std::string_view name_glob = {});

  /// Graceful exit: unsubscribes everything, dispatches what already arrived, waits until busd
  /// has taken everything this agent published through it (up to `timeout`; what went over a
  /// lane is in its receiver's ring already, and stays readable), then closes.
  Expected<void> drain(std::chrono::nanoseconds timeout);
  void close();

  [[nodiscard]] ConnectionState state() const noexcept;
  /// Called on every state change, on the thread that made the call that noticed it. After a
  /// reconnect, a non-null error on Connected says a subscription was refused (and dropped).
  void on_state_change(std::function<void(ConnectionState, const Error*)> callback);

  [[nodiscard]] uint32_t agent_id() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;

  struct Stats {
    uint64_t published = 0, received = 0, requests = 0, replies_late = 0, verify_failures = 0;
    uint64_t reconnects = 0;
    uint64_t resubscribe_failures = 0;  // subscriptions busd refused after a reconnect (dropped)
    // Lanes (direct rings to other local agents, set up by busd): messages sent and received
    // over them, lanes opened and closed, and the lanes open now.
    uint64_t lane_sent = 0, lane_received = 0;
    uint64_t lanes_opened = 0, lanes_closed = 0, lanes_open = 0;
  };
  [[nodiscard]] const Stats& stats() const noexcept;

  struct Impl;

 private:
  Client() = default;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

/// Thrown by the convenience constructors only.
class ClientError : public std::runtime_error {
 public:
  explicit ClientError(Error e) : std::runtime_error(e.message()), error_(std::move(e)) {}
  [[nodiscard]] const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

}  // namespace bus
