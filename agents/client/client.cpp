// libbus: the Client API and its data paths.
#include <poll.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bus/clock.hpp"
#include "bus/inplace.hpp"
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

// The template for `subject`, built on first use (the only allocation of a publish); the
// subject is checked then (a subject in the map was checked before).
Client::Impl::Outbound* template_for(StringMap<Client::Impl::Outbound>& map, std::string_view subject,
                                     std::string_view reply_to, Client::Impl::LastSubject& last) {
  // The subject sent last, again (a stream): no hash.
  if (last.entry != nullptr && last.key == subject) [[likely]] return last.entry;
  auto it = map.find(subject);
  if (it != map.end()) [[likely]] {
    last = {it->first, &it->second};
    return &it->second;
  }
  if (!plausible_subject(subject)) return nullptr;
  auto t = EnvelopeTemplate::make({subject, reply_to, {}, {}});
  if (!t) return nullptr;
  auto added = map.emplace(std::string(subject), Client::Impl::Outbound{std::move(*t), Client::Impl::kNoEpoch, Client::Impl::kNoEpoch, {}}).first;
  last = {added->first, &added->second};
  return &added->second;
}

}  // namespace

void stale_message_view() noexcept {
  std::fputs("libbus: a bus::Message was used after its handler returned (or, for a reply, after the next "
             "call on its Client): its bytes may already belong to another message. Copy what must live "
             "longer inside the handler.\n",
             stderr);
  std::abort();
}

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
  auto wake_fd = shm::EventFd::create();
  if (!wake_fd) return tl::unexpected(Error(wake_fd.error()).context("agent '" + m.opts.name + "': wake-up eventfd"));
  m.wake_fd = std::move(*wake_fd);
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
                                                         size_t payload_len, uint32_t via, bool batched) {
  // An agent that only publishes never waits for messages, so it looks at its control socket
  // here, at most every 10 ms (one non-blocking read): it answers heartbeats and notices a busd
  // that went away. The clock reading is the message's timestamp anyway. A batch (Flush::Later)
  // reads the clock once per 16 messages: its messages carry their batch's time (a clock read
  // costs as much as a quarter of a lane publish here).
  uint64_t now;
  if (batched && batch_clock_uses > 0) [[likely]] {
    --batch_clock_uses;
    now = batch_clock_ns;
  } else {
    now = clock::mono_ns();
    batch_clock_ns = now;
    batch_clock_uses = batched ? 15 : 0;
  }
  // While busd's answer to a RouteQuery is on its way (at most 100 ms), on every send: the
  // flow moves onto its lanes from the next message on.
  if (state == ConnectionState::Connected && (now - last_control_check_ns >= 10 * kMs || now < route_wait_until)) [[unlikely]] {
    last_control_check_ns = now;
    if (auto r = pump_control_nowait(); !r) disconnect(r.error(), true);
  }
  if (reservation.open) [[unlikely]] return tl::unexpected(Errc::InvalidArgument);  // commit() first
  if (!ensure_connected()) return tl::unexpected(Errc::Closed);
  const bool routed = kind == wire::Kind::Request || kind == wire::Kind::Publish || kind == wire::Kind::Event;
  StringMap<Outbound>& map = kind == wire::Kind::Request ? request_templates
                             : routed                    ? publish_templates
                                                         : reply_templates;
  LastSubject& last = kind == wire::Kind::Request ? last_request : routed ? last_publish : last_reply;
  Outbound* o = template_for(map, subject, kind == wire::Kind::Request ? std::string_view(inbox) : std::string_view(), last);
  if (o == nullptr) return tl::unexpected(Errc::InvalidArgument);
  const EnvelopeTemplate* t = &o->t;
  const size_t size = t->size_for(payload_len);
  if (payload_len > UINT32_MAX || size > max_message || size > out.max_record()) return tl::unexpected(Errc::TooLarge);
  // Lanes: one load tells whether busd changed any route since we last looked.
  if (routes_stale()) [[unlikely]] settle_lanes();
  Lane* lane = nullptr;
  uint32_t tag = 0;
  if (via != 0) {
    // A reply goes back over the lane its request came by, while we still write that lane.
    lane = find_lane(via);
    if (lane != nullptr && (lane->out_ended || lane->close_asked || lane->log)) lane = nullptr;
    tag = kInboxTag;
  } else if (routed && lines != nullptr) {
    if (o->route_epoch == epoch_seen) {
      lane = o->targets.front().lane;  // (requests are never routed over a log: settle_lanes)
      tag = o->targets.front().tag;
    } else if (o->asked_epoch != epoch_seen) {
      ask_route(subject, *o);
    }
  }
  if (lane != nullptr) {
    auto claim = lane_message_claim(*lane, static_cast<uint32_t>(size), tag);
    if (claim) return Claimed{t, claim->data(), now, nullptr, via != 0 ? nullptr : o, lane, 0, false};
    if (claim.error() != Errc::Closed) return tl::unexpected(claim.error());
    // The lane went while we waited for room: its route is gone too; through busd instead.
    settle_lanes();
  }
  if (dirty_lanes > 0) [[unlikely]] fence_dirty_lanes();  // lane messages before this one go first
  auto claim = out.claim(static_cast<uint32_t>(size), wait,
                         shm::Deadline::after(ns(opts.publish_timeout)), kEnvelopeTag);
  if (!claim) return tl::unexpected(claim.error() == Errc::Timeout ? Errc::WouldBlock : claim.error());
  return Claimed{t, claim->data(), now, &out, nullptr, nullptr, 0, false};
}

void Client::Impl::finish_message(const Claimed& c, size_t payload_len, wire::Kind kind, uint64_t correlation_id,
                                  uint64_t budget_ns, Errc status, bool flush) {
  // The prefix for the length used (the payload vector's length is in it), then the header.
  wire::Header* h = c.gap == 0 ? c.t->write_prefix(c.base, static_cast<uint32_t>(payload_len))
                               : c.t->write_prefix_with_gap(c.base, static_cast<uint32_t>(payload_len), c.gap);
  MessageMeta meta;
  meta.kind = kind;
  meta.msg_id = ++next_msg_id;
  meta.correlation_id = correlation_id;
  meta.stamp = clock::stamp(c.now, budget_ns);
  meta.source_id = agent_id;
  meta.status = status;
  meta.timed = opts.hop_timing;
  meta.payload_is_flatbuffer = c.flatbuffer;
  fill_header(*h, meta);
  const auto size = static_cast<uint32_t>(c.t->size_for(payload_len) + c.gap);
  ++stats.published;
  last_lane = 0;
  if (c.lane == nullptr) {
    out.commit(size);
    if (flush) out.publish();
    ++brokered_sent;
  } else {
    c.lane->out_commit(size);
    if (flush) c.lane->out_publish();
    last_lane = c.lane->id;
    ++stats.lane_sent;
    c.lane->count_out(size);
    if (c.route != nullptr && c.route->targets.size() > 1) {
      // More receivers on this subject: the same bytes into their lanes (a receiver that went
      // meanwhile is skipped: its lane is closing, and the route with it).
      for (size_t i = 1; i < c.route->targets.size(); ++i) {
        const Target& tg = c.route->targets[i];
        auto more = lane_message_claim(*tg.lane, size, tg.tag);
        if (!more) continue;
        std::memcpy(more->data(), c.base, size);
        tg.lane->out_commit(size);
        if (flush) tg.lane->out_publish();
        ++stats.lane_sent;
        tg.lane->count_out(size);
      }
    }
  }
}

Result<void> Client::Impl::send(wire::Kind kind, std::string_view subject,
                                std::span<const std::byte> payload, uint64_t correlation_id,
                                uint64_t budget_ns, Errc status, bool flush, uint32_t via) {
  auto c = claim_message(kind, subject, payload.size(), via, !flush);
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
  for (auto& l : impl_->lanes) l->out_publish();
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

Result<void> Client::commit_built(const InPlaceBuilder& fbb, Flush flush) {
  Impl::Reservation& r = impl_->reservation;
  if (!r.open) return commit(0, flush);  // InvalidArgument, or Closed: lost to a disconnect
  // The FlatBuffer lies in the reserved room, a multiple of 8 bytes from its start: the envelope
  // prefix goes right before it and the front of the room becomes filler (no copy).
  const std::span<const std::byte> built = fbb.built();
  const auto room = reinterpret_cast<uintptr_t>(r.claimed.base + r.claimed.t->prefix_size());
  const auto at = reinterpret_cast<uintptr_t>(built.data());
  if (built.empty() || at < room || built.size() > r.max_payload || at - room > r.max_payload - built.size() ||
      (at - room) % 8 != 0) {
    return tl::unexpected(Errc::InvalidArgument);
  }
  r.claimed.gap = static_cast<uint32_t>(at - room);
  r.claimed.flatbuffer = true;
  return commit(built.size(), flush);
}

Result<void> Client::reply(const Message& request, std::span<const std::byte> payload) {
  if (request.reply_to().empty()) return tl::unexpected(Errc::InvalidArgument);
  return impl_->send(wire::Kind::Reply, request.reply_to(), payload, request.id(), 0, Errc::Ok, true, request.lane());
}

Result<void> Client::reply_error(const Message& request, Errc code, std::string_view detail) {
  if (request.reply_to().empty()) return tl::unexpected(Errc::InvalidArgument);
  return impl_->send(wire::Kind::Error, request.reply_to(),
                     std::as_bytes(std::span(detail.data(), detail.size())), request.id(), 0, code, true,
                     request.lane());
}

// ---------------------------------------------------------------- receiving

void Client::Impl::deliver_record(Lane* l, const shm::Record& rec, uint64_t want_reply, bool* got) {
  std::span<const std::byte> bytes = rec.data;
  if (l != nullptr && l->copy_first) {
    // Another uid can still change the bytes after its commit: copy, then verify the copy.
    verify_buf.assign(bytes.begin(), bytes.end());
    bytes = verify_buf;
  }
  EnvelopeView view;
  if (l == nullptr || l->verify) {
    auto v = EnvelopeView::verify(bytes, max_message);
    if (!v) {
      ++stats.verify_failures;
      return;
    }
    view = *v;
  } else {
    view = EnvelopeView::trusted(bytes);  // a same-uid lane, [busd] verify_same_uid = false
  }
  ++stats.received;
  const uint32_t lane_id = l != nullptr ? l->id : 0;
  if (l != nullptr) ++stats.lane_received;
  const uint32_t tag = rec.tag;
  if (tag == kInboxTag) {
    const auto k = view.header().kind();
    if ((k == wire::Kind::Reply || k == wire::Kind::Error) && want_reply != 0 &&
        view.header().correlation_id() == want_reply) {
      // Copy out: the reply must outlive the ring slot (valid until the next call).
      reply_buf.assign(bytes.begin(), bytes.end());
      reply_lane = lane_id;
      *got = true;
      return;
    }
    if ((k == wire::Kind::Reply || k == wire::Kind::Error) && on_reply) {
      const uint64_t cid = view.header().correlation_id();
      auto it = std::find_if(outstanding.begin(), outstanding.end(), [&](const Outstanding& o) { return o.id == cid; });
      if (it != outstanding.end()) {
        outstanding.erase(it);
        if (k == wire::Kind::Error) {
          const auto text = view.payload();
          on_reply(cid, tl::unexpected(Error(view.header().status(),
                                             std::string(reinterpret_cast<const char*>(text.data()), text.size()))));
        } else {
          on_reply(cid, Message(view, 0, lane_id, &view_epoch));
          ++view_epoch;
        }
      } else {
        ++stats.replies_late;
      }
    } else if (k == wire::Kind::Reply || k == wire::Kind::Error) {
      ++stats.replies_late;  // its request already timed out
    } else if (!subs.empty() && subs[0].handler) {
      subs[0].handler(Message(view, 0, lane_id, &view_epoch));  // system event on the inbox
      ++view_epoch;
    }
  } else if (tag < subs.size() && subs[tag].handler) {
    subs[tag].handler(Message(view, tag, lane_id, &view_epoch));
    ++view_epoch;  // the handler returned: its Message's views are handed back
  } else if (l != nullptr && view.header().kind() == wire::Kind::Request && !view.reply_to().empty()) {
    // A request over a lane for a subscription that just went: answer as busd would have.
    const std::string_view why = "no responders (the subscription is gone)";
    (void)send(wire::Kind::Error, view.reply_to(), std::as_bytes(std::span(why.data(), why.size())),
               view.header().msg_id(), 0, Errc::NoResponders, true, l->id);
  }
}

Result<size_t> Client::Impl::dispatch(size_t max, uint64_t want_reply, bool* got) {
  size_t n = 0;
  if (!in.attached()) return n;  // disconnected: no rings
  ++dispatching;
  // The outermost dispatch tears down a connection that a handler found gone (disconnect()).
  struct Done {
    Impl& m;
    ~Done() {
      if (--m.dispatching == 0 && m.teardown_deferred) m.finish_deferred_teardown();
    }
  } done{*this};
  for (;;) {
    const size_t before = n;
    while (n < max && !*got) {
      auto rec = in.try_peek();
      if (!rec) {
        if (rec.error() == Errc::WouldBlock) break;
        in.release();
        disconnect(Error(Errc::Corrupt, "ring from busd: " + in.corruption()), true);
        return tl::unexpected(Errc::Corrupt);
      }
      if (rec->tag >= shm::lane::kReservedTagBase) [[unlikely]] {
        // A lane's mark or gate, forwarded by busd from the lane's other end.
        shm::lane::Fence f{};
        if (rec->data.size() == sizeof f) std::memcpy(&f, rec->data.data(), sizeof f);
        Lane* l = find_lane(f.lane_id);
        if (l == nullptr && f.lane_id != 0) {
          (void)pump_control_nowait();  // its LaneOpen may still be in the socket
          l = find_lane(f.lane_id);
        }
        if (l != nullptr && l->peer != f.agent) l = nullptr;  // only the other end may fence a lane
        if (l != nullptr && rec->tag == shm::lane::kMarkTag) {
          if (f.k > l->busd_mark) l->busd_mark = f.k;
        } else if (l != nullptr && rec->tag == shm::lane::kGateTag && l->lane_mark < f.k) {
          // What follows here was sent after the lane's records up to mark k: read those first.
          (void)read_lane(*l, SIZE_MAX, f.k, want_reply, got, &n);
          if (l->lane_mark < f.k && !l->in_ended) ++stats.verify_failures;  // its writer broke the protocol
          if (*got) break;  // the gate stays: the next dispatch goes on from it
        }
        in.advance();
        continue;
      }
      deliver_record(nullptr, *rec, want_reply, got);
      in.advance();
      ++n;
    }
    in.release();
    for (size_t i = 0; i < lanes.size() && n < max && !*got; ++i) {
      Lane& l = *lanes[i];
      if (!l.in_ended) (void)read_lane(l, max - n, 0, want_reply, got, &n);
    }
    if (*got || n >= max || n == before) break;
  }
  return n;
}

// ---------------------------------------------------------------- waiting, wake()

void Client::wake() noexcept {
  Impl* m = impl_.get();
  if (m == nullptr) return;
  // seq_cst exchange of pending, then seq_cst load of sleeping: pairs with sleep_poll()'s
  // seq_cst store of sleeping and load of pending. One side sees the other, so either the
  // waiter sees the wake-up before it sleeps or this writes the eventfd it sleeps on; a waiter
  // that is not asleep costs no system call. The exchange also releases what the caller did
  // before wake() (a command it queued) to the poll() that takes the wake-up (acquire).
  if (m->wake_line.pending.exchange(true, std::memory_order_seq_cst)) return;  // owed already: no second write
  if (m->wake_line.sleeping.load(std::memory_order_seq_cst)) shm::wake::signal(m->wake_fd.fd());
}

void Client::stop() noexcept {
  // relaxed: wake()'s exchange releases it to the poll() that takes the wake-up, and run()
  // reads it after that poll returns.
  stop_.store(true, std::memory_order_relaxed);
  wake();
}

void Client::Impl::sleep_poll(pollfd* p, size_t n, int ms, bool wakeable) noexcept {
  if (!wakeable) {
    ::poll(p, n, ms);
    return;
  }
  p[n] = {wake_fd.fd(), POLLIN, 0};
  // The sleeper's half of the pairing described in Client::wake().
  wake_line.sleeping.store(true, std::memory_order_seq_cst);
  if (wake_line.pending.load(std::memory_order_seq_cst)) {
    wake_line.sleeping.store(false, std::memory_order_relaxed);
    return;
  }
  ::poll(p, n + 1, ms);
  wake_line.sleeping.store(false, std::memory_order_relaxed);
  // A write that came after the wake-up it was for was taken (or a late one): drained here, so
  // the eventfd never stays readable and turns the next sleep into a spin.
  if (p[n].revents != 0) shm::wake::drain(wake_fd.fd());
}

void Client::Impl::wait_inbound(uint64_t deadline_ns, bool wakeable) {
  if (state != ConnectionState::Connected) {
    // Reconnecting: sleep a little (bounded by the deadline), then let the caller retry.
    const uint64_t now = clock::mono_ns();
    if (now < deadline_ns) {
      const uint64_t nap = std::min<uint64_t>(deadline_ns - now, 20 * kMs);
      pollfd p[1];
      sleep_poll(p, 0, static_cast<int>(nap / kMs + 1), wakeable);
    }
    return;
  }
  if (!lanes.empty()) return wait_inbound_lanes(deadline_ns, wakeable);
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
    if (wakeable) {
      // poll(): the ring's wait cannot see wake(), so this spins itself, on the ring and the
      // wake-up flag (one more load per turn).
      for (uint32_t polls = 1;; ++polls) {
        if (in.readable() || wake_owed()) return;
        if ((polls & 63) == 0) {
          if (clock::mono_ns() >= until) break;
          if (wait.kind != shm::WaitKind::Spin) ::sched_yield();
        } else {
          shm::cpu_relax();
        }
      }
    } else if (in.wait_peek(spin_as, shm::Deadline::at(until))) {
      return;
    }
    if (wait.kind == shm::WaitKind::Spin) {
      (void)pump_control_nowait();
      return;
    }
  }
  // Sleep on the ring's eventfd and the control socket together.
  if (!in.arm_sleep()) return;
  pollfd p[3] = {{fds[2].fd(), POLLIN, 0}, {sock, POLLIN, 0}, {}};  // [2]: wake()'s eventfd
  const uint64_t now = clock::mono_ns();
  const int ms = deadline_ns == shm::kForever ? 1000
                 : now >= deadline_ns       ? 0
                                            : static_cast<int>(std::min<uint64_t>((deadline_ns - now) / kMs + 1, 1000));
  sleep_poll(p, 2, ms, wakeable);
  in.disarm();
  if (p[1].revents != 0) {
    if (auto r = pump_control_nowait(); !r) disconnect(r.error(), true);
  }
}

// wait_inbound() with lanes: busd's ring and every lane that can be read, then one poll() on all
// their eventfds and the control socket.
void Client::Impl::wait_inbound_lanes(uint64_t deadline_ns, bool wakeable) {
  auto ready = [&]() noexcept {
    if (in.try_peek().has_value()) return true;
    for (auto& l : lanes) {
      if (!l->in_ended && !l->blocked && l->in_try_peek().has_value()) return true;
    }
    return false;
  };
  if (wait.kind != shm::WaitKind::Block) {
    const uint64_t spin = wait.kind == shm::WaitKind::Adaptive ? wait.spin_ns : 10 * kMs;
    const uint64_t until = std::min(deadline_ns, clock::mono_ns() + spin);
    for (uint32_t polls = 1;; ++polls) {
      if (ready() || routes_stale() || (wakeable && wake_owed())) return;
      if ((polls & 63) == 0) {
        if (clock::mono_ns() >= until) break;
        if (wait.kind != shm::WaitKind::Spin) ::sched_yield();
      } else {
        shm::cpu_relax();
      }
    }
    if (wait.kind == shm::WaitKind::Spin) {
      (void)pump_control_nowait();
      return;
    }
  }
  // Sleep on every eventfd that can bring something, and the control socket.
  pfds.clear();
  armed.clear();
  pfds.push_back({sock, POLLIN, 0});
  auto disarm_all = [&]() noexcept {
    in.disarm();
    for (Lane* l : armed) l->in_disarm();
  };
  if (!in.arm_sleep()) return;
  pfds.push_back({fds[2].fd(), POLLIN, 0});
  for (auto& lp : lanes) {
    Lane& l = *lp;
    if (l.in_ended || l.blocked) continue;  // a blocked lane waits for busd's ring
    if (!l.in_arm_sleep()) {
      disarm_all();
      return;
    }
    armed.push_back(&l);
    pfds.push_back({l.fds[2].fd(), POLLIN, 0});
  }
  const uint64_t now = clock::mono_ns();
  const int ms = deadline_ns == shm::kForever ? 1000
                 : now >= deadline_ns       ? 0
                                            : static_cast<int>(std::min<uint64_t>((deadline_ns - now) / kMs + 1, 1000));
  pfds.emplace_back();  // room for wake()'s eventfd (reserved in add_lane: no allocation)
  sleep_poll(pfds.data(), pfds.size() - 1, ms, wakeable);
  disarm_all();  // drains the eventfds too
  if (pfds[0].revents != 0) {
    if (auto r = pump_control_nowait(); !r) disconnect(r.error(), true);
  }
}

Result<size_t> Client::poll(std::chrono::nanoseconds timeout) {
  Impl& m = *impl_;
  const uint64_t deadline = clock::mono_ns() + ns(timeout);
  flush();  // batched publishes must not wait behind a poll
  for (;;) {
    if (m.ensure_connected()) {
      if (!m.reservation.open && m.routes_stale()) m.settle_lanes();
      bool got = false;
      auto n = m.dispatch(256, 0, &got);
      if (!n) return n;
      if (*n > 0) return n;
    }
    const uint64_t now = clock::mono_ns();
    const bool down = m.state != ConnectionState::Connected;
    // The wait ends by the first outstanding request's deadline too: a send_request() over a
    // lane times out on time even in a long poll (busd answers the others at theirs).
    const uint64_t due = m.fail_outstanding(now, down, down ? Errc::Closed : Errc::Timeout);
    if (stop_.load(std::memory_order_relaxed) || now >= deadline) return size_t{0};
    // wake(): a wake-up owed ends the poll, before its wait or once the wait saw it. acquire:
    // pairs with wake()'s exchange (what its caller did before is visible to ours).
    if (m.wake_owed() && m.wake_line.pending.exchange(false, std::memory_order_acquire)) return size_t{0};
    m.wait_inbound(std::min(deadline, due), true);
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
  ++m.view_epoch;  // the previous reply's buffer is about to be reused
  const uint64_t budget = ns(timeout);
  if (auto s = m.send(wire::Kind::Request, subject, payload, 0, budget, Errc::Ok); !s) {
    return tl::unexpected(Error(s.error(), "sending request on " + std::string(subject)));
  }
  ++m.stats.requests;
  const uint64_t id = m.next_msg_id;
  // busd answers Timeout at the deadline; the local deadline is a backstop a little later. A
  // request that went over a lane is not in busd's books: its deadline is ours alone.
  m.sync_lane = m.last_lane;
  m.sync_lane_gone = false;
  struct Reset {
    uint32_t& lane;
    ~Reset() { lane = 0; }
  } reset{m.sync_lane};
  const uint64_t deadline = clock::mono_ns() + budget + (m.sync_lane != 0 ? 0 : 50 * kMs);
  for (;;) {
    bool got = false;
    auto n = m.dispatch(256, id, &got);
    if (!n) return tl::unexpected(Error(n.error()));
    if (!got && m.routes_stale()) m.settle_lanes();
    if (!got && m.sync_lane_gone) {
      return tl::unexpected(Error(Errc::NoResponders, "the responder went away before replying"));
    }
    if (got) {
      const EnvelopeView v = EnvelopeView::trusted(m.reply_buf);  // verified in dispatch()
      if (v.header().kind() == wire::Kind::Error) {
        const auto text = v.payload();
        return tl::unexpected(Error(v.header().status(),
                                    std::string(reinterpret_cast<const char*>(text.data()), text.size())));
      }
      return Message(v, 0, m.reply_lane, &m.view_epoch);
    }
    if (m.state != ConnectionState::Connected) {
      return tl::unexpected(Error(Errc::Closed, "connection to busd lost during the request"));
    }
    if (clock::mono_ns() >= deadline) return tl::unexpected(Error(Errc::Timeout, "no reply"));
    m.wait_inbound(deadline);
  }
}

uint64_t Client::Impl::fail_outstanding(uint64_t now_ns, bool all, Errc why) {
  uint64_t next = shm::kForever;
  if (outstanding.empty() || !on_reply) return next;  // without on_reply nobody is told: no deadline
  for (size_t i = 0; i < outstanding.size();) {
    if (all || outstanding[i].deadline_ns <= now_ns) {
      const uint64_t id = outstanding[i].id;
      outstanding[i] = outstanding.back();
      outstanding.pop_back();
      on_reply(id, tl::unexpected(Error(why, all ? "connection to busd lost" : "no reply before the request's deadline")));
    } else {
      next = std::min(next, outstanding[i].deadline_ns);
      ++i;
    }
  }
  return next;
}

Result<uint64_t> Client::send_request(std::string_view subject, std::span<const std::byte> payload,
                                      std::chrono::nanoseconds timeout) {
  Impl& m = *impl_;
  if (auto s = m.send(wire::Kind::Request, subject, payload, 0, ns(timeout), Errc::Ok); !s) {
    return tl::unexpected(s.error());
  }
  ++m.stats.requests;
  // Over a lane busd does not time it out: the deadline is ours alone.
  m.outstanding.push_back({m.next_msg_id, clock::mono_ns() + ns(timeout) + (m.last_lane != 0 ? 0 : 200 * kMs), m.last_lane});
  return m.next_msg_id;
}

void Client::on_reply(std::function<void(uint64_t, const Expected<Message>&)> handler) {
  impl_->on_reply = std::move(handler);
}

// ---------------------------------------------------------------- subscriptions, discovery

Expected<uint32_t> Client::subscribe(std::string_view pattern, Handler handler,
                                     std::string_view queue_group) {
  return subscribe(pattern, std::move(handler), SubscribeOptions{queue_group, SlowPolicy::Block});
}

std::string_view to_string(SlowPolicy p) noexcept {
  switch (p) {
    case SlowPolicy::Block: return "block";
    case SlowPolicy::DropOldest: return "drop-oldest";
    case SlowPolicy::DropNewest: return "drop-newest";
    case SlowPolicy::Disconnect: return "disconnect";
  }
  return "?";
}

Expected<uint32_t> Client::subscribe(std::string_view pattern, Handler handler, const SubscribeOptions& options) {
  const std::string_view queue_group = options.queue_group;
  if (options.slow > SlowPolicy::Disconnect) return fail(Errc::InvalidArgument, "unknown slow-consumer policy");
  Impl& m = *impl_;
  if (!handler) return fail(Errc::InvalidArgument, "subscribe needs a handler");
  if (!m.ensure_connected()) return fail(Errc::Closed, "not connected to busd");
  uint32_t sid = 1;
  while (sid < m.subs.size() && m.subs[sid].handler) ++sid;
  if (sid == m.subs.size()) m.subs.emplace_back();
  auto& s = m.subs[sid];
  s.pattern.assign(pattern);
  s.group.assign(queue_group);
  s.slow = options.slow;
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
    // What went over lanes is delivered already: a lane is its reader's inbound ring, and it
    // outlives this agent (the reader maps it until it has read it to the end).
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
