// libbus_c: the C ABI (bus/bus.h) over bus::Client. Every entry point catches everything: no
// C++ exception crosses into C. Errors are returned as bus_status; their text is kept per thread
// for bus_last_error_message().
#include "bus/bus.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bus/client.hpp"
#include "bus/envelope.hpp"

static_assert(BUS_E_CANCELLED == static_cast<int>(bus::Errc::Cancelled), "bus_status mirrors bus::Errc");
static_assert(BUS_E_WOULD_BLOCK == static_cast<int>(bus::Errc::WouldBlock), "bus_status mirrors bus::Errc");
static_assert(BUS_E_NO_RESPONDERS == static_cast<int>(bus::Errc::NoResponders), "bus_status mirrors bus::Errc");
static_assert(BUS_E_PERMISSION_DENIED == static_cast<int>(bus::Errc::PermissionDenied), "bus_status mirrors bus::Errc");
static_assert(static_cast<int>(bus::Errc::MAX) == BUS_E_CANCELLED,
              "a code was added to schemas/errors.fbs: add it to bus_status in bus/bus.h");
static_assert(BUS_STATE_CLOSED == static_cast<int>(bus::ConnectionState::Closed), "bus_state mirrors ConnectionState");
static_assert(BUS_SLOW_DISCONNECT == static_cast<int>(bus::SlowPolicy::Disconnect), "bus_slow_policy mirrors SlowPolicy");

namespace {

thread_local std::string t_error;  // bus_last_error_message()

bus_status set_error(bus::Errc code, std::string_view message) noexcept {
  try {
    t_error.assign(message);
  } catch (...) {
    t_error.clear();  // out of memory for the text: the code still says what happened
  }
  return static_cast<bus_status>(code);
}
bus_status set_error(const bus::Error& e) noexcept {
  try {
    return set_error(e.code(), e.message());
  } catch (...) {
    return set_error(e.code(), bus::errc_name(e.code()));
  }
}
bus_status set_error(bus::Errc code) noexcept { return set_error(code, bus::errc_name(code)); }
bus_status invalid(const char* what) noexcept {
  try {
    t_error = "InvalidArgument: ";
    t_error += what;
  } catch (...) {
  }
  return BUS_E_INVALID_ARGUMENT;
}
bus_status internal_error(const char* what) noexcept {
  try {
    t_error = "Internal: ";
    t_error += what;
  } catch (...) {
  }
  return BUS_E_INTERNAL;
}

// The catch-all around every entry point that returns a bus_status.
#define BUS_TRY try {
#define BUS_CATCH                                                \
  }                                                              \
  catch (const std::bad_alloc&) {                                \
    return internal_error("out of memory");                      \
  }                                                              \
  catch (const std::exception& e) {                              \
    return internal_error(e.what());                             \
  }                                                              \
  catch (...) {                                                  \
    return internal_error("unknown exception");                  \
  }
// ... and around those that return nothing (the error is dropped: they document none).
#define BUS_CATCH_VOID \
  }                    \
  catch (...) {        \
  }

std::chrono::nanoseconds wait_ns(int64_t ns) {
  // Negative: wait (practically) forever. Far from overflowing a monotonic deadline.
  return std::chrono::nanoseconds(ns < 0 ? INT64_MAX / 4 : ns);
}

std::span<const std::byte> bytes(const void* p, size_t len) {
  return {static_cast<const std::byte*>(p), len};
}

void fill(bus_message& out, const bus::Message& m) noexcept {
  const auto subject = m.subject();
  const auto reply_to = m.reply_to();
  const auto payload = m.payload();
  out.subject = subject.data();
  out.subject_len = subject.size();
  out.reply_to = reply_to.empty() ? "" : reply_to.data();
  out.reply_to_len = reply_to.size();
  out.payload = payload.data();
  out.payload_len = payload.size();
  out.id = m.id();
  out.sid = m.sid();
  out.source_id = m.source_id();
  out.lane = m.lane();
  out.flags = m.is_request() ? BUS_MSG_REQUEST : 0u;
  out.internal = &m;
}

}  // namespace

// A message queued for bus_next(): a copy of its envelope.
struct QueuedMessage {
  std::vector<std::byte> envelope;
  uint32_t sid = 0;
  uint32_t lane = 0;
};

struct bus_client {
  struct Sub {
    bus_client* owner = nullptr;
    bus_message_fn fn = nullptr;  // NULL: queue for bus_next()
    void* user = nullptr;
  };
  std::unique_ptr<bus::Client> cpp;
  std::vector<std::unique_ptr<Sub>> subs;  // stable addresses: the handlers point at them
  std::deque<QueuedMessage> queue;
  QueuedMessage current;        // what bus_next() returned last
  bus::Message current_msg;     // ... as a Message (bus_reply on it)
  bus::Message last_reply;      // bus_request()'s reply
  bus_state_fn state_fn = nullptr;
  void* state_user = nullptr;
  bus_reply_fn reply_fn = nullptr;
  void* reply_user = nullptr;
};

struct bus_agent_list {
  std::vector<bus::AgentInfo> agents;
  std::vector<std::vector<const char*>> caps;
};

extern "C" {

const char* bus_version(void) { return "0.1.0"; }

int bus_abi_version(void) { return BUS_ABI_VERSION; }

const char* bus_strerror(bus_status status) {
  if (status == BUS_E_INTERNAL) return "Internal";
  // errc_name returns a view into FlatBuffers' static, 0-terminated name table.
  const int v = static_cast<int>(status);
  if (v < 0 || v > static_cast<int>(bus::Errc::MAX)) return "Unknown";
  return bus::wire::EnumNameCode(static_cast<bus::Errc>(v));
}

const char* bus_last_error_message(void) { return t_error.c_str(); }

const char* bus_state_name(bus_state state) {
  switch (state) {
    case BUS_STATE_CONNECTING: return "connecting";
    case BUS_STATE_CONNECTED: return "connected";
    case BUS_STATE_DISCONNECTED: return "disconnected";
    case BUS_STATE_CLOSED: return "closed";
  }
  return "unknown";
}

void bus_options_init(bus_options* o) {
  if (o == nullptr) return;
  std::memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->reconnect = 1;
  o->connect_timeout_ms = 2000;
  o->control_timeout_ms = 2000;
  o->publish_timeout_ms = 1000;
}

bus_status bus_connect(const bus_options* o, bus_client** out) {
  BUS_TRY
  if (out == nullptr) return invalid("bus_connect: out is NULL");
  *out = nullptr;
  if (o == nullptr) return invalid("bus_connect: options are NULL (use bus_options_init)");
  if (o->struct_size < sizeof(bus_options)) {
    return invalid("bus_connect: options.struct_size is too small (call bus_options_init)");
  }
  if (o->name == nullptr || o->name[0] == '\0') return invalid("bus_connect: options.name is required");
  if (o->capabilities_len > 0 && o->capabilities == nullptr) return invalid("bus_connect: capabilities is NULL");
  if (o->connect_timeout_ms < 0 || o->control_timeout_ms < 0 || o->publish_timeout_ms < 0) {
    return invalid("bus_connect: negative timeout");
  }
  bus::ClientOptions co;
  co.name = o->name;
  for (size_t i = 0; i < o->capabilities_len; ++i) {
    if (o->capabilities[i] == nullptr) return invalid("bus_connect: a capability is NULL");
    co.capabilities.emplace_back(o->capabilities[i]);
  }
  auto str = [](const char* s) { return s != nullptr ? std::string(s) : std::string(); };
  co.address = str(o->address);
  co.tls_ca = str(o->tls_ca);
  co.tls_cert = str(o->tls_cert);
  co.tls_key = str(o->tls_key);
  co.tls_server_name = str(o->tls_server_name);
  co.token = str(o->token);
  if (o->wait != nullptr) co.wait = o->wait;
  co.reconnect = o->reconnect != 0;
  co.hop_timing = o->hop_timing != 0;
  co.connect_timeout = std::chrono::milliseconds(o->connect_timeout_ms);
  co.control_timeout = std::chrono::milliseconds(o->control_timeout_ms);
  co.publish_timeout = std::chrono::milliseconds(o->publish_timeout_ms);
  auto c = bus::Client::connect(std::move(co));
  if (!c) return set_error(c.error());
  auto h = std::make_unique<bus_client>();
  h->cpp = std::move(*c);
  *out = h.release();
  return BUS_OK;
  BUS_CATCH
}

void bus_close(bus_client* c) {
  if (c == nullptr) return;
  c->state_fn = nullptr;  // as documented: no callback runs from here on
  c->reply_fn = nullptr;
  try {
    c->cpp->close();
  } catch (...) {
  }
  delete c;  // ~Client is noexcept
}

bus_status bus_drain(bus_client* c, int64_t timeout_ns) {
  BUS_TRY
  if (c == nullptr) return invalid("bus_drain: client is NULL");
  if (timeout_ns < 0) return invalid("bus_drain: negative timeout");
  auto r = c->cpp->drain(std::chrono::nanoseconds(timeout_ns));
  if (!r) return set_error(r.error());
  return BUS_OK;
  BUS_CATCH
}

bus_state bus_get_state(const bus_client* c) {
  if (c == nullptr) return BUS_STATE_CLOSED;
  return static_cast<bus_state>(c->cpp->state());
}

void bus_on_state_change(bus_client* c, bus_state_fn fn, void* user) {
  if (c == nullptr) return;
  try {
    c->state_fn = fn;
    c->state_user = user;
    if (fn == nullptr) {
      c->cpp->on_state_change(nullptr);
      return;
    }
    c->cpp->on_state_change([c](bus::ConnectionState s, const bus::Error* e) {
      bus_status st = BUS_OK;
      if (e != nullptr) st = set_error(*e);
      if (c->state_fn != nullptr) c->state_fn(c->state_user, c, static_cast<bus_state>(s), st);
    });
  BUS_CATCH_VOID
}

uint32_t bus_agent_id(const bus_client* c) { return c == nullptr ? 0 : c->cpp->agent_id(); }

const char* bus_name(const bus_client* c) { return c == nullptr ? "" : c->cpp->name().c_str(); }

bus_status bus_get_stats(const bus_client* c, bus_stats* out) {
  if (c == nullptr || out == nullptr) return invalid("bus_get_stats: NULL argument");
  if (out->struct_size < sizeof(size_t)) return invalid("bus_get_stats: set struct_size");
  const auto& s = c->cpp->stats();
  bus_stats full{};
  full.struct_size = out->struct_size;
  full.published = s.published;
  full.received = s.received;
  full.requests = s.requests;
  full.replies_late = s.replies_late;
  full.verify_failures = s.verify_failures;
  full.reconnects = s.reconnects;
  full.resubscribe_failures = s.resubscribe_failures;
  full.lane_sent = s.lane_sent;
  full.lane_received = s.lane_received;
  full.lanes_opened = s.lanes_opened;
  full.lanes_closed = s.lanes_closed;
  full.lanes_open = s.lanes_open;
  std::memcpy(out, &full, std::min(out->struct_size, sizeof full));
  return BUS_OK;
}

// ---- publishing

bus_status bus_publish_ex(bus_client* c, const char* subject, const void* payload, size_t len, unsigned flags) {
  BUS_TRY
  if (c == nullptr || subject == nullptr) return invalid("bus_publish: NULL client or subject");
  if (payload == nullptr && len != 0) return invalid("bus_publish: payload is NULL");
  if (flags > BUS_FLUSH_LATER) return invalid("bus_publish: unknown flags");
  auto r = c->cpp->publish(subject, bytes(payload, len), flags == BUS_FLUSH_LATER ? bus::Flush::Later : bus::Flush::Now);
  if (!r) return set_error(r.error());
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_publish(bus_client* c, const char* subject, const void* payload, size_t len) {
  return bus_publish_ex(c, subject, payload, len, BUS_FLUSH_NOW);
}

void bus_flush(bus_client* c) {
  if (c != nullptr) c->cpp->flush();
}

bus_status bus_reserve(bus_client* c, const char* subject, size_t max_payload, void** out, size_t* room) {
  BUS_TRY
  if (c == nullptr || subject == nullptr || out == nullptr) return invalid("bus_reserve: NULL argument");
  *out = nullptr;
  if (room != nullptr) *room = 0;
  auto r = c->cpp->reserve(subject, max_payload);
  if (!r) return set_error(r.error());
  *out = r->data();
  if (room != nullptr) *room = r->size();
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_commit(bus_client* c, size_t len, unsigned flags) {
  BUS_TRY
  if (c == nullptr) return invalid("bus_commit: client is NULL");
  if (flags > BUS_FLUSH_LATER) return invalid("bus_commit: unknown flags");
  auto r = c->cpp->commit(len, flags == BUS_FLUSH_LATER ? bus::Flush::Later : bus::Flush::Now);
  if (!r) return set_error(r.error());
  return BUS_OK;
  BUS_CATCH
}

void bus_abandon(bus_client* c) {
  if (c != nullptr) c->cpp->abandon();
}

// ---- subscribing

bus_status bus_subscribe(bus_client* c, const char* pattern, const char* queue_group, bus_slow_policy slow,
                         bus_message_fn fn, void* user, uint32_t* sid) {
  BUS_TRY
  if (c == nullptr || pattern == nullptr) return invalid("bus_subscribe: NULL client or pattern");
  if (static_cast<int>(slow) < 0 || slow > BUS_SLOW_DISCONNECT) return invalid("bus_subscribe: unknown slow policy");
  auto sub = std::make_unique<bus_client::Sub>();
  sub->owner = c;
  sub->fn = fn;
  sub->user = user;
  bus_client::Sub* s = sub.get();
  bus::Handler h;
  if (fn != nullptr) {
    h = [s](const bus::Message& m) {
      bus_message cm;
      fill(cm, m);
      s->fn(s->user, s->owner, &cm);
    };
  } else {
    h = [s](const bus::Message& m) {
      const auto env = m.envelope().bytes();
      s->owner->queue.push_back(QueuedMessage{std::vector<std::byte>(env.begin(), env.end()), m.sid(), m.lane()});
    };
  }
  bus::SubscribeOptions so;
  so.queue_group = queue_group != nullptr ? std::string_view(queue_group) : std::string_view();
  so.slow = static_cast<bus::SlowPolicy>(slow);
  auto r = c->cpp->subscribe(pattern, std::move(h), so);
  if (!r) return set_error(r.error());
  c->subs.push_back(std::move(sub));
  if (sid != nullptr) *sid = *r;
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_unsubscribe(bus_client* c, uint32_t sid) {
  BUS_TRY
  if (c == nullptr) return invalid("bus_unsubscribe: client is NULL");
  auto r = c->cpp->unsubscribe(sid);
  if (!r) return set_error(r.error());
  // The Sub stays allocated until bus_close(): a handler copy may still be on the stack.
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_poll(bus_client* c, int64_t timeout_ns, size_t* dispatched) {
  BUS_TRY
  if (dispatched != nullptr) *dispatched = 0;
  if (c == nullptr) return invalid("bus_poll: client is NULL");
  auto r = c->cpp->poll(wait_ns(timeout_ns));
  if (!r) return set_error(r.error());
  if (dispatched != nullptr) *dispatched = *r;
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_run(bus_client* c) {
  BUS_TRY
  if (c == nullptr) return invalid("bus_run: client is NULL");
  c->cpp->run();
  return BUS_OK;
  BUS_CATCH
}

void bus_stop(bus_client* c) {
  if (c != nullptr) c->cpp->stop();
}

void bus_wake(bus_client* c) {
  if (c != nullptr) c->cpp->wake();  // noexcept: an atomic exchange and at most one write(2)
}

bus_status bus_next(bus_client* c, int64_t timeout_ns, bus_message* out) {
  BUS_TRY
  if (c == nullptr || out == nullptr) return invalid("bus_next: NULL argument");
  std::memset(out, 0, sizeof *out);
  const auto deadline = std::chrono::steady_clock::now() + wait_ns(timeout_ns);
  while (c->queue.empty()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return set_error(bus::Errc::Timeout, "Timeout: no message");
    auto r = c->cpp->poll(deadline - now);
    if (!r) return set_error(r.error());
    if (c->cpp->state() == bus::ConnectionState::Closed && c->queue.empty()) {
      return set_error(bus::Errc::Closed, "Closed: the client is closed");
    }
    // poll() returns nothing before its deadline (which is not before ours: it was computed
    // later from the same clock) only when bus_wake() or bus_stop() ended it.
    if (*r == 0 && c->queue.empty() && std::chrono::steady_clock::now() < deadline) {
      return set_error(bus::Errc::Cancelled, "Cancelled: woken by bus_wake() or bus_stop() before a message came");
    }
  }
  c->current = std::move(c->queue.front());
  c->queue.pop_front();
  c->current_msg = bus::Message(bus::EnvelopeView::trusted(c->current.envelope), c->current.sid, c->current.lane);
  fill(*out, c->current_msg);
  return BUS_OK;
  BUS_CATCH
}

// ---- request / reply

bus_status bus_request(bus_client* c, const char* subject, const void* payload, size_t len, int64_t timeout_ns,
                       bus_message* reply) {
  BUS_TRY
  if (c == nullptr || subject == nullptr || reply == nullptr) return invalid("bus_request: NULL argument");
  std::memset(reply, 0, sizeof *reply);
  if (payload == nullptr && len != 0) return invalid("bus_request: payload is NULL");
  if (timeout_ns < 0) return invalid("bus_request: negative timeout");
  auto r = c->cpp->request(subject, bytes(payload, len), std::chrono::nanoseconds(timeout_ns));
  if (!r) return set_error(r.error());
  c->last_reply = *r;
  fill(*reply, c->last_reply);
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_send_request(bus_client* c, const char* subject, const void* payload, size_t len,
                            int64_t timeout_ns, uint64_t* request_id) {
  BUS_TRY
  if (c == nullptr || subject == nullptr) return invalid("bus_send_request: NULL argument");
  if (payload == nullptr && len != 0) return invalid("bus_send_request: payload is NULL");
  if (timeout_ns < 0) return invalid("bus_send_request: negative timeout");
  auto r = c->cpp->send_request(subject, bytes(payload, len), std::chrono::nanoseconds(timeout_ns));
  if (!r) return set_error(r.error());
  if (request_id != nullptr) *request_id = *r;
  return BUS_OK;
  BUS_CATCH
}

void bus_on_reply(bus_client* c, bus_reply_fn fn, void* user) {
  if (c == nullptr) return;
  try {
    c->reply_fn = fn;
    c->reply_user = user;
    if (fn == nullptr) {
      c->cpp->on_reply(nullptr);
      return;
    }
    c->cpp->on_reply([c](uint64_t id, const bus::Expected<bus::Message>& r) {
      if (c->reply_fn == nullptr) return;
      if (!r) {
        const bus_status st = set_error(r.error());
        c->reply_fn(c->reply_user, c, id, st, nullptr);
        return;
      }
      bus_message cm;
      fill(cm, *r);
      c->reply_fn(c->reply_user, c, id, BUS_OK, &cm);
    });
  BUS_CATCH_VOID
}

bus_status bus_reply_to(bus_client* c, const char* reply_to, uint64_t request_id, uint32_t lane, bus_status status,
                        const void* payload, size_t len) {
  BUS_TRY
  if (c == nullptr || reply_to == nullptr || reply_to[0] == '\0') return invalid("bus_reply_to: no reply_to");
  if (payload == nullptr && len != 0) return invalid("bus_reply_to: payload is NULL");
  if (static_cast<int>(status) < 0 || static_cast<int>(status) > static_cast<int>(bus::Errc::MAX)) {
    return invalid("bus_reply_to: status is not a bus_status of the wire list");
  }
  // A stand-in for the request: only its reply_to, id and lane are used by reply().
  bus::MessageMeta meta;
  meta.kind = bus::wire::Kind::Request;
  meta.msg_id = request_id;
  const auto env = bus::build_envelope({"_", reply_to}, {}, meta);
  const bus::Message req(bus::EnvelopeView::trusted(env), 0, lane);
  const auto r = status == BUS_OK
                     ? c->cpp->reply(req, bytes(payload, len))
                     : c->cpp->reply_error(req, static_cast<bus::Errc>(status),
                                           std::string_view(static_cast<const char*>(payload), len));
  if (!r) return set_error(r.error());
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_reply(bus_client* c, const bus_message* request, const void* payload, size_t len) {
  BUS_TRY
  if (c == nullptr || request == nullptr) return invalid("bus_reply: NULL argument");
  if (payload == nullptr && len != 0) return invalid("bus_reply: payload is NULL");
  if (request->internal == nullptr) {
    return bus_reply_to(c, request->reply_to, request->id, request->lane, BUS_OK, payload, len);
  }
  auto r = c->cpp->reply(*static_cast<const bus::Message*>(request->internal), bytes(payload, len));
  if (!r) return set_error(r.error());
  return BUS_OK;
  BUS_CATCH
}

bus_status bus_reply_error(bus_client* c, const bus_message* request, bus_status code, const char* detail) {
  BUS_TRY
  if (c == nullptr || request == nullptr) return invalid("bus_reply_error: NULL argument");
  if (code == BUS_OK || static_cast<int>(code) < 0 || static_cast<int>(code) > static_cast<int>(bus::Errc::MAX)) {
    return invalid("bus_reply_error: code must be an error of the wire list");
  }
  const std::string_view d = detail != nullptr ? std::string_view(detail) : std::string_view();
  if (request->internal == nullptr) {
    return bus_reply_to(c, request->reply_to, request->id, request->lane, code, d.data(), d.size());
  }
  auto r = c->cpp->reply_error(*static_cast<const bus::Message*>(request->internal), static_cast<bus::Errc>(code), d);
  if (!r) return set_error(r.error());
  return BUS_OK;
  BUS_CATCH
}

// ---- discovery

bus_status bus_find_agents(bus_client* c, const char* capability, const char* name_glob, bus_agent_list** out) {
  BUS_TRY
  if (c == nullptr || capability == nullptr || out == nullptr) return invalid("bus_find_agents: NULL argument");
  *out = nullptr;
  auto r = c->cpp->find_agents(capability, name_glob != nullptr ? std::string_view(name_glob) : std::string_view());
  if (!r) return set_error(r.error());
  auto l = std::make_unique<bus_agent_list>();
  l->agents = std::move(*r);
  l->caps.resize(l->agents.size());
  for (size_t i = 0; i < l->agents.size(); ++i) {
    for (const auto& cap : l->agents[i].capabilities) l->caps[i].push_back(cap.c_str());
  }
  *out = l.release();
  return BUS_OK;
  BUS_CATCH
}

size_t bus_agent_list_size(const bus_agent_list* l) { return l == nullptr ? 0 : l->agents.size(); }

bus_status bus_agent_list_get(const bus_agent_list* l, size_t i, bus_agent_info* out) {
  if (l == nullptr || out == nullptr) return invalid("bus_agent_list_get: NULL argument");
  if (i >= l->agents.size()) return set_error(bus::Errc::NotFound, "NotFound: index beyond the list");
  const auto& a = l->agents[i];
  out->name = a.name.c_str();
  out->agent_id = a.agent_id;
  out->pid = a.pid;
  out->uid = a.uid;
  out->capabilities = l->caps[i].empty() ? nullptr : l->caps[i].data();
  out->capabilities_len = l->caps[i].size();
  return BUS_OK;
}

void bus_agent_list_free(bus_agent_list* l) { delete l; }

}  // extern "C"
