// libbus: the Client API and its data paths.
#include <poll.h>

#include <algorithm>
#include <cstring>

#include "bus/clock.hpp"
#include "bus/limits.hpp"
#include "impl.hpp"

namespace bus {
namespace {

constexpr uint64_t kMs = 1'000'000;

uint64_t ns(std::chrono::nanoseconds d) { return d.count() > 0 ? static_cast<uint64_t>(d.count()) : 0; }

// A subject an agent may publish to: no wildcards, no empty tokens. busd checks it again (and
// ACLs); this only turns obvious mistakes into errors at the caller.
bool plausible_subject(std::string_view s) {
  if (s.empty() || s.size() > 255 || s.front() == '.' || s.back() == '.') return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '*' || c == '>' || c <= ' ' || c == 0x7F) return false;
    if (c == '.' && s[i + 1] == '.') return false;
  }
  return true;
}

// The template for `subject`, built on first use (the only allocation of a publish).
const EnvelopeTemplate* template_for(StringMap<EnvelopeTemplate>& map, std::string_view subject,
                                     std::string_view reply_to) {
  auto it = map.find(subject);
  if (it != map.end()) return &it->second;
  auto t = EnvelopeTemplate::make({subject, reply_to, {}, {}});
  if (!t) return nullptr;
  return &map.emplace(std::string(subject), std::move(*t)).first->second;
}

}  // namespace

// ---------------------------------------------------------------- set-up

Expected<std::unique_ptr<Client>> Client::connect(ClientOptions options) {
  if (options.name.empty()) return fail(Errc::InvalidArgument, "an agent needs a name");
  auto ws = shm::parse_wait_strategy(options.wait);
  if (!ws) return tl::unexpected(ws.error());
  std::unique_ptr<Client> c(new Client());
  c->impl_ = std::make_unique<Impl>();
  Impl& m = *c->impl_;
  m.opts = std::move(options);
  m.wait = *ws;
  m.subs.resize(1);  // sid 0 is the inbox
  if (auto r = m.connect_once(); !r) {
    return tl::unexpected(Error(r.error()).context("agent '" + m.opts.name + "'"));
  }
  m.state = ConnectionState::Connected;
  return c;
}

static ClientOptions named(std::string name) {
  ClientOptions o;
  o.name = std::move(name);
  return o;
}

Client::Client(std::string name) : Client(named(std::move(name))) {}

Client::Client(ClientOptions options) {
  auto c = connect(std::move(options));
  if (!c) throw ClientError(c.error());
  impl_ = std::move((*c)->impl_);
}

Client::~Client() {
  // Nothing the user gave us runs from a destructor: its captures may already be gone.
  if (impl_) {
    impl_->on_state = nullptr;
    impl_->on_reply = nullptr;
  }
  close();
}

void Client::close() {
  if (!impl_ || impl_->state == ConnectionState::Closed) return;
  if (impl_->sock >= 0 && impl_->state == ConnectionState::Connected) {
    // A clean exit says so: busd publishes "left", not "died". (busd routes what is still in
    // the ring before it acts on the Goodbye.)
    impl_->out.publish();
    auto bye = control::CreateGoodbyeDirect(impl_->fbb, "closed by the agent", 0);
    (void)impl_->send_control(control::Body::Goodbye, bye.Union());
  }
  impl_->disconnect(Error(Errc::Closed, "closed by the agent"), false);
}

ConnectionState Client::state() const noexcept { return impl_->state; }
uint32_t Client::agent_id() const noexcept { return impl_->agent_id; }
const std::string& Client::name() const noexcept { return impl_->opts.name; }
const Client::Stats& Client::stats() const noexcept { return impl_->stats; }
void Client::on_state_change(std::function<void(ConnectionState, const Error*)> cb) {
  impl_->on_state = std::move(cb);
}

// ---------------------------------------------------------------- sending

Result<Client::Impl::Claimed> Client::Impl::claim_message(wire::Kind kind, std::string_view subject,
                                                         size_t payload_len) {
  // An agent that only publishes never waits for messages, so it looks at its control socket
  // here, at most every 10 ms (one non-blocking read): it answers heartbeats and notices a busd
  // that went away. The clock reading is the message's timestamp anyway.
  const uint64_t now = clock::mono_ns();
  if (state == ConnectionState::Connected && now - last_control_check_ns >= 10 * kMs) {
    last_control_check_ns = now;
    if (auto r = pump_control_nowait(); !r) disconnect(r.error(), true);
  }
  if (reservation.open) [[unlikely]] return tl::unexpected(Errc::InvalidArgument);  // commit() first
  if (!ensure_connected()) return tl::unexpected(Errc::Closed);
  if (!plausible_subject(subject)) return tl::unexpected(Errc::InvalidArgument);
  StringMap<EnvelopeTemplate>& map = kind == wire::Kind::Request ? request_templates
                                     : kind == wire::Kind::Publish || kind == wire::Kind::Event
                                         ? publish_templates
                                         : reply_templates;
  const EnvelopeTemplate* t =
      template_for(map, subject, kind == wire::Kind::Request ? std::string_view(inbox) : std::string_view());
  if (t == nullptr) return tl::unexpected(Errc::InvalidArgument);
  const size_t size = t->size_for(payload_len);
  if (payload_len > UINT32_MAX || size > max_message || size > out.max_record()) return tl::unexpected(Errc::TooLarge);
  auto claim = out.claim(static_cast<uint32_t>(size), wait,
                         shm::Deadline::after(ns(opts.publish_timeout)), kEnvelopeTag);
  if (!claim) return tl::unexpected(claim.error() == Errc::Timeout ? Errc::WouldBlock : claim.error());
  return Claimed{t, claim->data(), now};
}

void Client::Impl::finish_message(const Claimed& c, size_t payload_len, wire::Kind kind, uint64_t correlation_id,
                                  uint64_t budget_ns, Errc status, bool flush) {
  // The prefix for the length used (the payload vector's length is in it), then the header.
  wire::Header* h = c.t->write_prefix(c.base, static_cast<uint32_t>(payload_len));
  MessageMeta meta;
  meta.kind = kind;
  meta.msg_id = ++next_msg_id;
  meta.correlation_id = correlation_id;
  meta.stamp = clock::stamp(c.now, budget_ns);
  meta.source_id = agent_id;
  meta.status = status;
  meta.timed = opts.hop_timing;
  fill_header(*h, meta);
  out.commit(static_cast<uint32_t>(c.t->size_for(payload_len)));
  if (flush) out.publish();
  ++stats.published;
}

Result<void> Client::Impl::send(wire::Kind kind, std::string_view subject,
                                std::span<const std::byte> payload, uint64_t correlation_id,
                                uint64_t budget_ns, Errc status, bool flush) {
  auto c = claim_message(kind, subject, payload.size());
  if (!c) return tl::unexpected(c.error());
  if (!payload.empty()) std::memcpy(c->base + c->t->prefix_size(), payload.data(), payload.size());
  finish_message(*c, payload.size(), kind, correlation_id, budget_ns, status, flush);
  return {};
}

Result<void> Client::publish(std::string_view subject, std::span<const std::byte> payload) {
  return impl_->send(wire::Kind::Publish, subject, payload, 0, 0, Errc::Ok);
}

Result<void> Client::publish(std::string_view subject, std::span<const std::byte> payload, Flush flush) {
  return impl_->send(wire::Kind::Publish, subject, payload, 0, 0, Errc::Ok, flush == Flush::Now);
}

void Client::flush() noexcept {
  if (impl_->out.attached()) impl_->out.publish();
}

Expected<std::span<std::byte>> Client::reserve(std::string_view subject, size_t max_payload) {
  Impl& m = *impl_;
  if (m.reservation.open) return fail(Errc::InvalidArgument, "a reservation is already open: commit() or abandon() it");
  auto c = m.claim_message(wire::Kind::Publish, subject, max_payload);
  if (!c) {
    if (c.error() == Errc::InvalidArgument) return fail(Errc::InvalidArgument, "'" + std::string(subject) + "' is not a subject");
    if (c.error() == Errc::TooLarge) {
      return fail(Errc::TooLarge, "a payload of " + std::to_string(max_payload) + " bytes makes a message above the maximum (" +
                                      std::to_string(std::min<size_t>(m.max_message, m.out.max_record())) + " bytes)");
    }
    return tl::unexpected(c.error());
  }
  m.reservation = Impl::Reservation{true, false, *c, max_payload};
  return std::span<std::byte>(c->base + c->t->prefix_size(), max_payload);
}

Result<void> Client::commit(size_t payload_len, Flush flush) {
  Impl& m = *impl_;
  if (m.reservation.lost) {
    m.reservation = {};
    return tl::unexpected(Errc::Closed);
  }
  if (!m.reservation.open || payload_len > m.reservation.max_payload) return tl::unexpected(Errc::InvalidArgument);
  Impl::Claimed c = m.reservation.claimed;
  c.now = clock::mono_ns();  // sent now, not when the room was claimed
  m.reservation = {};
  m.finish_message(c, payload_len, wire::Kind::Publish, 0, 0, Errc::Ok, flush == Flush::Now);
  return {};
}

void Client::abandon() noexcept { impl_->reservation = {}; }

Result<void> Client::reply(const Message& request, std::span<const std::byte> payload) {
  if (request.reply_to().empty()) return tl::unexpected(Errc::InvalidArgument);
  return impl_->send(wire::Kind::Reply, request.reply_to(), payload, request.id(), 0, Errc::Ok);
}

Result<void> Client::reply_error(const Message& request, Errc code, std::string_view detail) {
  if (request.reply_to().empty()) return tl::unexpected(Errc::InvalidArgument);
  return impl_->send(wire::Kind::Error, request.reply_to(),
                     std::as_bytes(std::span(detail.data(), detail.size())), request.id(), 0, code);
}

// ---------------------------------------------------------------- receiving

Result<size_t> Client::Impl::dispatch(size_t max, uint64_t want_reply, bool* got) {
  size_t n = 0;
  if (!in.attached()) return n;  // disconnected: no rings
  while (n < max) {
    auto rec = in.try_peek();
    if (!rec) {
      if (rec.error() == Errc::WouldBlock) break;
      in.release();
      disconnect(Error(Errc::Corrupt, "ring from busd: " + in.corruption()), true);
      return tl::unexpected(Errc::Corrupt);
    }
    auto view = EnvelopeView::verify(rec->data, max_message);
    if (!view) {
      ++stats.verify_failures;
      in.advance();
      continue;
    }
    ++stats.received;
    if (rec->tag == kInboxTag) {
      const auto k = view->header().kind();
      if ((k == wire::Kind::Reply || k == wire::Kind::Error) && want_reply != 0 &&
          view->header().correlation_id() == want_reply) {
        // Copy out: the reply must outlive the ring slot (valid until the next call).
        reply_buf.assign(rec->data.begin(), rec->data.end());
        in.advance();
        *got = true;
        ++n;
        break;
      }
      if ((k == wire::Kind::Reply || k == wire::Kind::Error) && on_reply) {
        const uint64_t cid = view->header().correlation_id();
        auto it = std::find_if(outstanding.begin(), outstanding.end(), [&](const Outstanding& o) { return o.id == cid; });
        if (it != outstanding.end()) {
          outstanding.erase(it);
          if (k == wire::Kind::Error) {
            const auto text = view->payload();
            on_reply(cid, tl::unexpected(Error(view->header().status(),
                                               std::string(reinterpret_cast<const char*>(text.data()), text.size()))));
          } else {
            on_reply(cid, Message(*view, 0));
          }
        } else {
          ++stats.replies_late;
        }
      } else if (k == wire::Kind::Reply || k == wire::Kind::Error) {
        ++stats.replies_late;  // its request already timed out
      } else if (!subs.empty() && subs[0].handler) {
        subs[0].handler(Message(*view, 0));  // system event on the inbox
      }
    } else if (rec->tag < subs.size() && subs[rec->tag].handler) {
      subs[rec->tag].handler(Message(*view, rec->tag));
    }
    in.advance();
    ++n;
  }
  in.release();
  return n;
}

void Client::Impl::wait_inbound(uint64_t deadline_ns) {
  if (state != ConnectionState::Connected) {
    // Reconnecting: sleep a little (bounded by the deadline), then let the caller retry.
    const uint64_t now = clock::mono_ns();
    if (now < deadline_ns) {
      const uint64_t nap = std::min<uint64_t>(deadline_ns - now, 20 * kMs);
      ::poll(nullptr, 0, static_cast<int>(nap / kMs + 1));
    }
    return;
  }
  // Spin phase per the strategy, on the ring only (a control message can wait that long).
  if (wait.kind != shm::WaitKind::Block) {
    const uint64_t spin = wait.kind == shm::WaitKind::Adaptive ? wait.spin_ns : 10 * kMs;
    const uint64_t until = std::min(deadline_ns, clock::mono_ns() + spin);
    // Adaptive: the ring's adaptive wait spins politely (yields every 64 polls) and, with no
    // spin limit of its own, never sleeps on the ring alone: `until` ends it (this sleeps on the
    // socket too).
    const shm::WaitStrategy spin_as = wait.kind == shm::WaitKind::Yield      ? shm::WaitStrategy::yield()
                                      : wait.kind == shm::WaitKind::Adaptive ? shm::WaitStrategy::adaptive(shm::kForever)
                                                                             : shm::WaitStrategy::spin();
    if (in.wait_peek(spin_as, shm::Deadline::at(until))) {
      return;
    }
    if (wait.kind == shm::WaitKind::Spin) {
      (void)pump_control_nowait();
      return;
    }
  }
  // Sleep on the ring's eventfd and the control socket together.
  if (!in.arm_sleep()) return;
  pollfd p[2] = {{fds[2].fd(), POLLIN, 0}, {sock, POLLIN, 0}};
  const uint64_t now = clock::mono_ns();
  const int ms = deadline_ns == shm::kForever ? 1000
                 : now >= deadline_ns       ? 0
                                            : static_cast<int>(std::min<uint64_t>((deadline_ns - now) / kMs + 1, 1000));
  ::poll(p, 2, ms);
  in.disarm();
  if (p[1].revents != 0) {
    if (auto r = pump_control_nowait(); !r) disconnect(r.error(), true);
  }
}

Result<size_t> Client::poll(std::chrono::nanoseconds timeout) {
  Impl& m = *impl_;
  const uint64_t deadline = clock::mono_ns() + ns(timeout);
  flush();  // batched publishes must not wait behind a poll
  for (;;) {
    if (m.ensure_connected()) {
      bool got = false;
      auto n = m.dispatch(256, 0, &got);
      if (!n) return n;
      if (*n > 0) return n;
    }
    const uint64_t now = clock::mono_ns();
    m.fail_outstanding(now, m.state != ConnectionState::Connected, m.state != ConnectionState::Connected ? Errc::Closed : Errc::Timeout);
    if (stop_.load(std::memory_order_relaxed) || now >= deadline) return size_t{0};
    m.wait_inbound(deadline);
  }
}

void Client::run() {
  stop_.store(false, std::memory_order_relaxed);
  while (!stop_.load(std::memory_order_relaxed) && impl_->state != ConnectionState::Closed) {
    (void)poll(std::chrono::milliseconds(200));
  }
}

// ---------------------------------------------------------------- request / reply

Expected<Message> Client::request(std::string_view subject, std::span<const std::byte> payload,
                                  std::chrono::nanoseconds timeout) {
  Impl& m = *impl_;
  const uint64_t budget = ns(timeout);
  if (auto s = m.send(wire::Kind::Request, subject, payload, 0, budget, Errc::Ok); !s) {
    return tl::unexpected(Error(s.error(), "sending request on " + std::string(subject)));
  }
  ++m.stats.requests;
  const uint64_t id = m.next_msg_id;
  // busd answers Timeout at the deadline; the local deadline is a backstop a little later.
  const uint64_t deadline = clock::mono_ns() + budget + 50 * kMs;
  for (;;) {
    bool got = false;
    auto n = m.dispatch(256, id, &got);
    if (!n) return tl::unexpected(Error(n.error()));
    if (got) {
      const EnvelopeView v = EnvelopeView::trusted(m.reply_buf);  // verified in dispatch()
      if (v.header().kind() == wire::Kind::Error) {
        const auto text = v.payload();
        return tl::unexpected(Error(v.header().status(),
                                    std::string(reinterpret_cast<const char*>(text.data()), text.size())));
      }
      return Message(v, 0);
    }
    if (m.state != ConnectionState::Connected) {
      return tl::unexpected(Error(Errc::Closed, "connection to busd lost during the request"));
    }
    if (clock::mono_ns() >= deadline) return tl::unexpected(Error(Errc::Timeout, "no reply"));
    m.wait_inbound(deadline);
  }
}

void Client::Impl::fail_outstanding(uint64_t now_ns, bool all, Errc why) {
  if (outstanding.empty() || !on_reply) return;
  for (size_t i = 0; i < outstanding.size();) {
    if (all || outstanding[i].deadline_ns <= now_ns) {
      const uint64_t id = outstanding[i].id;
      outstanding[i] = outstanding.back();
      outstanding.pop_back();
      on_reply(id, tl::unexpected(Error(why, all ? "connection to busd lost" : "no answer from busd")));
    } else {
      ++i;
    }
  }
}

Result<uint64_t> Client::send_request(std::string_view subject, std::span<const std::byte> payload,
                                      std::chrono::nanoseconds timeout) {
  Impl& m = *impl_;
  if (auto s = m.send(wire::Kind::Request, subject, payload, 0, ns(timeout), Errc::Ok); !s) {
    return tl::unexpected(s.error());
  }
  ++m.stats.requests;
  m.outstanding.push_back({m.next_msg_id, clock::mono_ns() + ns(timeout) + 200 * kMs});
  return m.next_msg_id;
}

void Client::on_reply(std::function<void(uint64_t, const Expected<Message>&)> handler) {
  impl_->on_reply = std::move(handler);
}

// ---------------------------------------------------------------- subscriptions, discovery

Expected<uint32_t> Client::subscribe(std::string_view pattern, Handler handler,
                                     std::string_view queue_group) {
  Impl& m = *impl_;
  if (!handler) return fail(Errc::InvalidArgument, "subscribe needs a handler");
  if (!m.ensure_connected()) return fail(Errc::Closed, "not connected to busd");
  uint32_t sid = 1;
  while (sid < m.subs.size() && m.subs[sid].handler) ++sid;
  if (sid == m.subs.size()) m.subs.emplace_back();
  auto& s = m.subs[sid];
  s.pattern.assign(pattern);
  s.group.assign(queue_group);
  s.handler = std::move(handler);
  if (auto r = m.subscribe_remote(sid); !r) {
    s = Impl::Subscription{};
    return tl::unexpected(Error(r.error()).context("subscribing to " + std::string(pattern)));
  }
  s.active = true;
  return sid;
}

Expected<void> Client::unsubscribe(uint32_t sid) {
  Impl& m = *impl_;
  if (sid == 0 || sid >= m.subs.size() || !m.subs[sid].handler) {
    return fail(Errc::NotFound, "no subscription " + std::to_string(sid));
  }
  m.subs[sid] = Impl::Subscription{};
  if (m.state != ConnectionState::Connected) return {};
  auto body = control::CreateUnsubscribe(m.fbb, sid);
  if (auto r = m.send_control(control::Body::Unsubscribe, body.Union()); !r) return r;
  const uint64_t deadline = clock::mono_ns() + ns(m.opts.control_timeout);
  return m.pump_control(m.control_seq, deadline, [](const control::ControlMessage&) -> Expected<void> { return {}; });
}

Expected<std::vector<AgentInfo>> Client::find_agents(std::string_view capability,
                                                     std::string_view name_glob) {
  Impl& m = *impl_;
  if (!m.ensure_connected()) return fail(Errc::Closed, "not connected to busd");
  auto body = control::CreateFindAgentsDirect(m.fbb, std::string(capability).c_str(),
                                              std::string(name_glob).c_str());
  if (auto r = m.send_control(control::Body::FindAgents, body.Union()); !r) return tl::unexpected(r.error());
  std::vector<AgentInfo> out;
  const uint64_t deadline = clock::mono_ns() + ns(m.opts.control_timeout);
  auto r = m.pump_control(m.control_seq, deadline, [&](const control::ControlMessage& msg) -> Expected<void> {
    const auto* list = msg.body_as_AgentList();
    if (list == nullptr || list->agents() == nullptr) return {};
    for (const auto* a : *list->agents()) {
      AgentInfo info;
      if (a->name() != nullptr) info.name = a->name()->str();
      info.agent_id = a->agent_id();
      info.pid = a->pid();
      info.uid = a->uid();
      if (a->capabilities() != nullptr) {
        for (const auto* c : *a->capabilities()) info.capabilities.push_back(c->str());
      }
      out.push_back(std::move(info));
    }
    return {};
  });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Expected<void> Client::drain(std::chrono::nanoseconds timeout) {
  Impl& m = *impl_;
  const uint64_t deadline = clock::mono_ns() + ns(timeout);
  for (uint32_t sid = 1; sid < m.subs.size(); ++sid) {
    if (m.subs[sid].handler) (void)unsubscribe(sid);
  }
  // Dispatch what already arrived, and wait until busd has read everything we published.
  while (m.state == ConnectionState::Connected) {
    bool got = false;
    (void)m.dispatch(SIZE_MAX, 0, &got);
    if (m.out.unconsumed() == 0) break;
    if (clock::mono_ns() >= deadline) {
      close();
      return fail(Errc::Timeout, "busd did not take everything this agent published");
    }
    ::poll(nullptr, 0, 1);
  }
  close();
  return {};
}

}  // namespace bus
