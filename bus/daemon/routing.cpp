// busd's data plane: from each agent's ring, through verification, ACL and the subject trie, into
// the subscribers' rings. Per message: no allocation (scratch vectors keep their capacity), no
// lock, no system call; each subscriber's ring is published once per pass, not per message.
//
// Back-pressure (block policy, the default): a subscriber whose ring is full holds the message
// at the head of the publisher's ring; nothing more is read from that publisher until every
// delivery it owes is done, so busd's memory stays bounded and the publisher feels the push-back
// through its own ring filling up.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "bus/clock.hpp"
#include "bus/envelope.hpp"
#include "daemon.hpp"
#include "log.hpp"
#include "router/subjects.hpp"

namespace bus::daemon {
namespace {

constexpr uint64_t kDefaultRequestTimeoutNs = 30'000'000'000ull;  // a request without deadline

}  // namespace

InboxTarget inbox_target(std::string_view subject) noexcept {
  InboxTarget t;
  const size_t dot = subject.find('.');
  const size_t last = subject.rfind('.');
  if (dot == std::string_view::npos) return t;
  if (last != dot) t.node = subject.substr(dot + 1, last - dot - 1);
  const std::string_view rest = subject.substr(last + 1);
  const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), t.agent);
  if (ec != std::errc{} || end != rest.data() + rest.size() || t.agent >= kPeerBase) t.agent = 0;
  return t;
}

void stamp_hops(const Agent& src, std::byte* copy) noexcept {
  auto* h = reinterpret_cast<wire::Header*>(copy + src.timed_header_at);
  set_hop_timing(*h, hops_of(src, h->timestamp_ns(), clock::mono_ns()));
}

size_t Daemon::route_all(size_t budget) {
  size_t moved = 0;
  for (size_t i = 0; i < active_.size(); ++i) {
    Agent* a = active_[i];
    if (a->phase == Agent::Phase::Active) moved += drain_agent(*a, budget);
  }
  return moved;
}

size_t Daemon::drain_agent(Agent& a, size_t budget) {
  size_t n = 0;
  while (n < budget && a.phase == Agent::Phase::Active) {
    auto rec = a.from.try_peek();
    if (!rec) {
      if (rec.error() == Errc::Corrupt) condemn(a, a.from.corruption());
      break;
    }
    bool done;
    if (a.stalled() || a.head_routed) {
      // A copy (another uid's message, or a fence busd rewrote) is retried from the copy.
      const bool copied = a.copy_first || rec->tag >= shm::lane::kReservedTagBase;
      done = deliver_owed(a.owed, copied ? std::span<const std::byte>(a.copy_buf) : rec->data, &a);
    } else if (rec->tag >= shm::lane::kReservedTagBase) [[unlikely]] {
      done = forward_fence(a, *rec);  // lanes: a mark or gate for the other end of a lane
    } else {
      done = route(a, rec->data);
    }
    if (!done) {
      a.head_routed = !a.owed.empty();  // (a retry after a link wait routes it again)
      break;  // stalled: the record stays at the head until its deliveries are done
    }
    a.head_routed = false;
    a.from.advance();
    ++n;
  }
  if (n > 0) {
    if (a.stats) counters::note_high_water(a.stats->inbound_high_water, a.from.backlog());
    a.from.release();
  }
  return n;
}

bool Daemon::route(Agent& src, std::span<const std::byte> bytes) {
  const uint32_t max = opts_.config.limits.max_message_size;
  if (bytes.size() > max) {
    counters_.add(counters::Global::drops_too_large);
    if (src.stats) counters::bump(src.stats->drops_too_large);
    send_error(src, 0, Errc::TooLarge, "message of " + std::to_string(bytes.size()) + " bytes above max_message_size " +
                                           std::to_string(max) + " (dropped)");
    return true;
  }
  if (src.copy_first) {
    // Another uid: copy out of memory it can still write, then verify the copy.
    src.copy_buf.assign(bytes.begin(), bytes.end());
    bytes = src.copy_buf;
  }
  EnvelopeView v;
  if (src.verify) {
    auto checked = EnvelopeView::verify(bytes, max);
    if (!checked) {
      counters_.add(counters::Global::verify_failures);
      if (src.stats) counters::bump(src.stats->drops_verify);
      send_error(src, 0, Errc::BadMessage, "a message from this agent does not verify as an Envelope (dropped)");
      return true;
    }
    v = *checked;
  } else {
    v = EnvelopeView::trusted(bytes);
  }
  const bool counted = src.link_wait;  // a retry after waiting for a peer: counted already
  src.link_wait = false;
  if (!counted) {
    counters_.add(counters::Global::messages_in);
    counters_.add(counters::Global::bytes_in, bytes.size());
    if (src.stats) counters::message_in(*src.stats, bytes.size());
  }
  src.timed_in_ns = 0;
  if ((v.header().flags() & static_cast<uint8_t>(wire::Flags::Timed)) != 0) [[unlikely]] {
    src.timed_in_ns = clock::mono_ns();
    src.timed_header_at = static_cast<uint32_t>(reinterpret_cast<const std::byte*>(&v.header()) - bytes.data());
  }

  const std::string_view subject = v.subject();
  const wire::Kind kind = v.header().kind();
  const auto cls = router::classify(subject);
  const bool is_request = kind == wire::Kind::Request;
  if (cls == router::SubjectClass::System || !router::validate_subject(subject) || !src.grants.may_publish(subject)) {
    refuse(src, v, cls == router::SubjectClass::System);
    return true;
  }

  if (cls == router::SubjectClass::Inbox) {
    const InboxTarget t = inbox_target(subject);
    if (!t.node.empty() && t.node != node_) return forward_reply(t.node, bytes, v, &src);
    if (kind == wire::Kind::Reply || kind == wire::Kind::Error) settle_pending(t.agent, v.header().correlation_id());
    src.owed.assign(1, router::SubRef{t.agent, kInboxTag, 0});
    return deliver_owed(src.owed, bytes, &src);
  }

  matches_.clear();
  trie_.match(subject, matches_);
  if (is_request && !peers_.empty()) {
    // A request is not held for a link that is down: its requester would wait for the deadline.
    std::erase_if(matches_, [&](const router::SubRef& r) {
      return r.agent >= kPeerBase && !peers_[r.agent - kPeerBase]->up();
    });
  }
  deliveries_.clear();
  groups_.select(matches_, deliveries_);
  // Block policy across links: a connected peer whose hold buffer is full holds the message
  // here, like a full subscriber ring (a peer that is down takes what fits and drops the rest).
  if (!peers_.empty() && !peers_have_room(bytes.size())) {
    src.link_wait = true;
    return false;
  }
  if (is_request) {
    counters_.add(counters::Global::requests);
    if (deliveries_.empty()) {
      counters_.add(counters::Global::no_responders);
      answer_error(src, v.header().msg_id(), Errc::NoResponders, "no responders for '" + std::string(subject) + "'");
      return true;
    }
    if (src.pending_requests >= opts_.config.limits.max_pending_requests_per_agent) {
      counters_.add(counters::Global::limit_hits);
      answer_error(src, v.header().msg_id(), Errc::LimitReached,
                   "max_pending_requests_per_agent (" + std::to_string(opts_.config.limits.max_pending_requests_per_agent) + ") reached");
      return true;
    }
    const uint64_t now = clock::mono_ns();
    const clock::Stamp st = v.stamp();
    const uint64_t deadline = st.has_deadline ? clock::deadline_of(st) : now + kDefaultRequestTimeoutNs;
    const uint64_t key = pending_key(src.id, v.header().msg_id());
    Pending& p = add_pending(key);
    p.requester = src.id;
    p.request_id = v.header().msg_id();
    p.deadline_ns = deadline;
    p.routed_ns = now;
    p.responders.clear();
    for (const auto& d : deliveries_) p.responders.push_back(d.agent);
    deadlines_.emplace(deadline, key);
    // Answered requests leave their entry in the heap until its deadline: rebuild it from the
    // live ones when they are fewer than half, so its size stays bounded by what is pending.
    if (deadlines_.size() > 2 * pending_.size() + 1024) {
      std::vector<std::pair<uint64_t, uint64_t>> live;
      live.reserve(pending_.size());
      for (const auto& [k, pr] : pending_) live.emplace_back(pr.deadline_ns, k);
      deadlines_ = decltype(deadlines_)(std::greater<>{}, std::move(live));
    }
    ++src.pending_requests;
    if (src.stats) counters::bump(src.stats->pending_requests);
  } else if (deliveries_.empty()) {
    counters_.add(counters::Global::published_no_subscribers);
    return true;
  }
  if (!peers_.empty()) send_to_peers(v, bytes, &src);
  src.owed.assign(deliveries_.begin(), deliveries_.end());
  return deliver_owed(src.owed, bytes, &src);
}

void Daemon::refuse(Agent& src, const EnvelopeView& v, bool system_subject) {
  const std::string_view subject = v.subject();
  const bool valid = router::validate_subject(subject).has_value();
  const bool acl = !system_subject && valid;
  counters_.add(counters::Global::drops_acl);
  if (src.stats) counters::bump(src.stats->drops_acl);
  std::string why;
  if (system_subject) {
    why = "subjects under $bus. are published by busd only";
  } else if (acl) {
    why.append("ACL: agent '").append(src.name).append("' may not publish to '").append(subject).append("'");
  } else {
    why.append("'").append(subject).append("' is not a valid subject");
  }
  const Errc code = acl || system_subject ? Errc::PermissionDenied : Errc::InvalidArgument;
  if (v.header().kind() == wire::Kind::Request) {
    answer_error(src, v.header().msg_id(), code, why);
  } else {
    why.append(" (dropped)");
    send_error(src, 0, code, why);
  }
}

bool Daemon::deliver_owed(std::vector<router::SubRef>& owed, std::span<const std::byte> bytes, const Agent* src) {
  size_t keep = 0;
  for (size_t i = 0; i < owed.size(); ++i) {
    if (!deliver(owed[i].agent, owed[i].sid, bytes, src)) owed[keep++] = owed[i];
  }
  owed.resize(keep);
  return keep == 0;
}

bool Daemon::deliver(uint32_t id, uint32_t tag, std::span<const std::byte> bytes, const Agent* src) {
  Agent* dst = agent(id);
  // Gone, or going (said Goodbye: it reads nothing more): nothing owed.
  if (dst == nullptr || dst->phase != Agent::Phase::Active || dst->leaving_deadline_ns != 0) return true;
  // Messages wait for it in busd (slow.cpp): this one goes behind them.
  if (dst->slow_waiting) [[unlikely]] return deliver_slow(*dst, tag, bytes, src);
  auto claim = dst->to.try_claim(static_cast<uint32_t>(bytes.size()), tag);
  if (!claim) {
    // Full: the subscription's slow-consumer policy (block: push back on the publisher).
    if (claim.error() == Errc::WouldBlock) return deliver_slow(*dst, tag, bytes, src);
    if (claim.error() == Errc::Corrupt) {
      condemn(*dst, dst->to.corruption());
    } else {
      counters_.add(counters::Global::drops_too_large);
    }
    return true;
  }
  std::memcpy(claim->data(), bytes.data(), bytes.size());
  if (src != nullptr && src->timed_in_ns != 0) [[unlikely]] stamp_hops(*src, claim->data());
  dst->to.commit(static_cast<uint32_t>(bytes.size()));
  mark_dirty(*dst);
  delivered(*dst, tag, bytes.size());
  return true;
}

void Daemon::delivered(Agent& dst, uint32_t tag, size_t size) noexcept {
  if (tag >= shm::lane::kReservedTagBase) [[unlikely]] return;  // a lane's fence: not a message
  counters_.add(counters::Global::messages_out);
  counters_.add(counters::Global::bytes_out, size);
  if (dst.stats) counters::message_out(*dst.stats, size);
  if (tag != kInboxTag) {
    if (auto it = dst.subs.find(tag); it != dst.subs.end() && it->second.stats != nullptr) {
      counters::delivered(*it->second.stats, size);
    }
  }
}

void Daemon::condemn(Agent& a, const std::string& detail) {
  // Logged and queued once: every delivery attempt until the removal finds the same corruption.
  if (std::find(condemned_.begin(), condemned_.end(), a.id) != condemned_.end()) return;
  log::warn("ring_corrupt", {{"agent", a.name}, {"detail", detail}});
  condemned_.push_back(a.id);
}

void Daemon::publish_dirty() {
  for (Agent* a : dirty_) {
    a->to.publish();
    a->to_dirty = false;
    if (a->stats) counters::note_high_water(a->stats->outbound_high_water, a->to.unconsumed());
  }
  dirty_.clear();
}

void Daemon::answer_error(Agent& requester, uint64_t request_id, Errc code, std::string_view detail) {
  // Error paths allocate (build_envelope): they are not the per-message path.
  MessageMeta meta;
  meta.kind = wire::Kind::Error;
  meta.correlation_id = request_id;
  meta.status = code;
  meta.stamp = clock::stamp(clock::mono_ns(), 0);
  const std::string inbox = inbox_of(requester.id);
  const auto env = build_envelope({inbox}, std::as_bytes(std::span(detail.data(), detail.size())), meta);
  if (!deliver(requester.id, kInboxTag, env)) {
    counters_.add(counters::Global::drops_slow_consumer);
    if (requester.stats) counters::bump(requester.stats->drops_slow_consumer);
  }
}

void Daemon::expire_requests(uint64_t now) {
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    const uint64_t key = deadlines_.top().second;
    deadlines_.pop();
    auto it = pending_.find(key);
    if (it == pending_.end() || it->second.deadline_ns > now) continue;  // answered (or re-used)
    const uint32_t requester = it->second.requester;
    const uint64_t request_id = it->second.request_id;
    drop_pending(it);
    counters_.add(counters::Global::request_timeouts);
    if (Agent* r = agent(requester); r != nullptr && r->phase == Agent::Phase::Active) {
      if (r->pending_requests > 0) --r->pending_requests;
      if (r->stats) counters::drop_by(r->stats->pending_requests);
      answer_error(*r, request_id, Errc::Timeout, "no reply before the request's deadline");
    }
  }
}

void Daemon::settle_pending(uint32_t target, uint64_t id) {
  auto it = pending_.find(pending_key(target, id));
  if (it == pending_.end()) return;
  const uint64_t now = clock::mono_ns();
  counters_.record(counters::Hist::request_reply, now > it->second.routed_ns ? now - it->second.routed_ns : 0);
  if (Agent* r = agent(target); r != nullptr && r->pending_requests > 0) {
    --r->pending_requests;
    if (r->stats) counters::drop_by(r->stats->pending_requests);
  }
  drop_pending(it);
}

std::string Daemon::inbox_of(uint32_t id) const {
  std::string s(router::kInboxToken);
  s.push_back('.');
  if (clustered()) s.append(node_).push_back('.');
  return s.append(std::to_string(id));
}

void Daemon::forget_requests_of(uint32_t id, Errc code, std::string_view why) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& p = it->second;
    if (p.requester == id) {
      it = drop_pending(it);
      continue;
    }
    const size_t before = p.responders.size();
    std::erase(p.responders, id);
    if (before != p.responders.size() && p.responders.empty()) {
      // Its only responder died: fail the request now instead of at its deadline.
      if (Agent* r = agent(p.requester); r != nullptr && r->phase == Agent::Phase::Active) {
        if (r->pending_requests > 0) --r->pending_requests;
        if (r->stats) counters::drop_by(r->stats->pending_requests);
        answer_error(*r, p.request_id, code, why);
      }
      it = drop_pending(it);
      continue;
    }
    ++it;
  }
}

Daemon::Pending& Daemon::add_pending(uint64_t key) {
  if (pending_free_.empty()) return pending_[key];
  auto node = std::move(pending_free_.back());
  pending_free_.pop_back();
  node.key() = key;
  auto r = pending_.insert(std::move(node));
  if (!r.inserted) pending_free_.push_back(std::move(r.node));  // same id again: reuse the entry
  return r.position->second;
}

Daemon::PendingMap::iterator Daemon::drop_pending(PendingMap::iterator it) {
  auto next = std::next(it);
  pending_free_.push_back(pending_.extract(it));
  return next;
}

void Daemon::system_publish(std::string_view subject, std::span<const std::byte> payload) {
  MessageMeta meta;
  meta.kind = wire::Kind::Event;
  meta.stamp = clock::stamp(clock::mono_ns(), 0);
  meta.payload_is_flatbuffer = true;
  const auto env = build_envelope({subject, {}, "busd", "BUSC"}, payload, meta);
  matches_.clear();
  trie_.match(subject, matches_);
  deliveries_.clear();
  groups_.select(matches_, deliveries_);
  for (const auto& d : deliveries_) {
    // busd's own events never wait: a full ring drops them (counted).
    if (!deliver(d.agent, d.sid, env)) counters_.add(counters::Global::drops_slow_consumer);
  }
  publish_dirty();
}

}  // namespace bus::daemon
