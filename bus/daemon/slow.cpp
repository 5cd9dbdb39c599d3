// Slow consumers: what busd does when a delivery finds the subscriber's ring full.
//
// Per subscription (control.fbs SlowPolicy; the agent chooses it in Subscribe, a matching
// [[slow_consumers]] rule of the config overrides that: slow_policy_for):
//   block        (default) the message waits at the head of the publisher's ring, and with it
//                everything that publisher sends after it: nothing is lost, the publisher is
//                pushed back (routing.cpp).
//   drop-newest  the message waits in the agent's slow buffer (busd's memory, up to
//                limits.slow_buffer_bytes per agent); when that is full, the new message is
//                dropped.
//   drop-oldest  as drop-newest, but a full buffer makes room by dropping the oldest messages
//                waiting in it.
//   disconnect   as drop-newest, but a full buffer disconnects the agent (an error first, then
//                its connection closes; the SDK reconnects and resubscribes by itself).
// While anything waits in an agent's slow buffer, every later delivery to that agent goes
// behind it (a block subscription's publisher waits as for a full ring), so each publisher's
// messages still arrive in order. Every drop is counted (globals slow_drops_oldest,
// slow_drops_newest, drops_slow_consumer; the agent's drops_slow_consumer; the subscription's
// count in its events).
//
// Events: $bus.slow.became_slow when a message for a subscription found the ring full, and
// $bus.slow.recovered once the agent caught up (nothing waits for it in busd and its ring is at
// most half full), each a control::SlowConsumer naming the agent and the subscription. At most
// one became_slow per subscription per busd.slow_event_interval_ms; an episode that began and
// ended inside that time is not announced, only counted (`suppressed` in the next event).
//
// None of this is on the per-message path of a consumer that keeps up: deliver() comes here
// only when the ring is full or the buffer is in use.
#include <bit>
#include <cstring>

#include "bus/clock.hpp"
#include "daemon.hpp"
#include "log.hpp"
#include "router/subjects.hpp"

namespace bus::daemon {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kScanEveryNs = kMs;  // recovery and events are looked at once a millisecond

static_assert(static_cast<int>(config::SlowPolicy::Block) == static_cast<int>(control::SlowPolicy::Block) &&
              static_cast<int>(config::SlowPolicy::DropOldest) == static_cast<int>(control::SlowPolicy::DropOldest) &&
              static_cast<int>(config::SlowPolicy::DropNewest) == static_cast<int>(control::SlowPolicy::DropNewest) &&
              static_cast<int>(config::SlowPolicy::Disconnect) == static_cast<int>(control::SlowPolicy::Disconnect) &&
              control::SlowPolicy::MAX == control::SlowPolicy::Disconnect,
              "config::SlowPolicy follows control.fbs SlowPolicy");

[[nodiscard]] std::string_view policy_name(control::SlowPolicy p) noexcept {
  return config::slow_policy_name(static_cast<config::SlowPolicy>(p));
}

}  // namespace

control::SlowPolicy Daemon::slow_policy_for(const Agent& a, std::string_view pattern, control::SlowPolicy asked) const {
  for (const config::SlowRule& r : opts_.config.slow_consumers) {
    if (!glob_match(r.name, a.name)) continue;
    for (const std::string& subject : r.subjects) {
      if (router::pattern_covers(subject, pattern)) return static_cast<control::SlowPolicy>(r.policy);
    }
  }
  return asked;
}

bool Daemon::deliver_slow(Agent& dst, uint32_t tag, std::span<const std::byte> bytes, const Agent* src) {
  // What waits in the buffer goes first; when it all fits in the ring now, so may this one.
  if (dst.slow_waiting && flush_slow(dst)) return deliver(dst.id, tag, bytes, src);
  Agent::Sub* s = nullptr;
  if (tag != kInboxTag && tag < shm::lane::kReservedTagBase) {
    if (auto it = dst.subs.find(tag); it != dst.subs.end()) s = &it->second;
  }
  // Replies, busd's events and lane fences wait like a block subscription's messages.
  if (s == nullptr) return false;
  note_slow(dst, *s);
  if (s->policy == control::SlowPolicy::Block) return false;
  if (dst.slow_cut) return true;  // it is being disconnected: the message goes with it
  const auto len = static_cast<uint32_t>(bytes.size());
  if (!slow_buffer(dst)) {
    // No buffer (slow_buffer_bytes below a ring's minimum): the policy acts at once.
    slow_overflow(dst, tag, *s);
    return true;
  }
  for (;;) {
    auto claim = dst.slow_in.try_claim(len, tag);
    if (claim) {
      std::memcpy(claim->data(), bytes.data(), len);
      if (src != nullptr && src->timed_in_ns != 0) [[unlikely]] stamp_hops(*src, claim->data());
      dst.slow_in.commit(len);
      dst.slow_in.publish();
      dst.slow_bytes += len;
      slow_bytes_ += len;
      counters_.set(counters::Global::slow_waiting_bytes, slow_bytes_);
      dst.slow_waiting = true;
      return true;
    }
    // Full (or the message is larger than the whole buffer: it can never wait there).
    if (claim.error() == Errc::WouldBlock && s->policy == control::SlowPolicy::DropOldest && drop_oldest(dst)) continue;
    slow_overflow(dst, tag, *s);
    return true;
  }
}

void Daemon::slow_overflow(Agent& dst, uint32_t sid, Agent::Sub& s) {
  ++s.dropped;
  counters_.add(counters::Global::drops_slow_consumer);
  if (dst.stats) counters::bump(dst.stats->drops_slow_consumer);
  if (s.policy == control::SlowPolicy::Disconnect) {
    if (!dst.slow_cut) {
      dst.slow_cut = true;
      dst.slow_cut_sid = sid;
      if (!dst.slow_listed) {
        dst.slow_listed = true;
        slow_agents_.push_back(&dst);
      }
    }
    return;
  }
  counters_.add(s.policy == control::SlowPolicy::DropOldest ? counters::Global::slow_drops_oldest
                                                            : counters::Global::slow_drops_newest);
}

bool Daemon::drop_oldest(Agent& dst) {
  auto rec = dst.slow_out.try_peek();
  if (!rec) return false;
  const uint32_t len = static_cast<uint32_t>(rec->data.size());
  if (auto it = dst.subs.find(rec->tag); it != dst.subs.end()) ++it->second.dropped;
  dst.slow_out.advance();
  dst.slow_out.release();
  dst.slow_bytes -= len;
  slow_bytes_ -= len;
  counters_.set(counters::Global::slow_waiting_bytes, slow_bytes_);
  counters_.add(counters::Global::drops_slow_consumer);
  counters_.add(counters::Global::slow_drops_oldest);
  if (dst.stats) counters::bump(dst.stats->drops_slow_consumer);
  return true;
}

bool Daemon::slow_buffer(Agent& a) {
  if (a.slow_in.capacity() != 0) return true;
  const uint64_t want = opts_.config.limits.slow_buffer_bytes;
  if (want < shm::kMinCapacity) return false;
  const uint64_t cap = std::min<uint64_t>(std::bit_floor(want), shm::kMaxCapacity);
  // A ring in busd's own memory (both ends are busd): 128-byte aligned inside the vector.
  a.slow_mem.assign(shm::ring_bytes(cap) + 128, std::byte{0});
  const auto at = reinterpret_cast<uintptr_t>(a.slow_mem.data());
  const size_t skip = (128 - at % 128) % 128;
  const std::span<std::byte> region(a.slow_mem.data() + skip, shm::ring_bytes(cap));
  auto formatted = shm::format_ring(region, cap, 0, shm::Zeroed::yes);
  auto in = formatted ? shm::RingProducer::attach(region) : tl::unexpected(formatted.error());
  auto out = formatted ? shm::RingConsumer::attach(region) : tl::unexpected(formatted.error());
  if (!in || !out) {
    log::warn("slow_buffer_failed", {{"agent", a.name}, {"detail", (!in ? in.error() : out.error()).message()}});
    a.slow_mem = {};
    return false;
  }
  a.slow_in = std::move(*in);
  a.slow_out = std::move(*out);
  return true;
}

bool Daemon::flush_slow(Agent& dst) {
  size_t n = 0;
  uint64_t moved = 0;
  for (;;) {
    auto rec = dst.slow_out.try_peek();
    if (!rec) break;
    const auto len = static_cast<uint32_t>(rec->data.size());
    auto claim = dst.to.try_claim(len, rec->tag);
    if (!claim) {
      if (claim.error() == Errc::WouldBlock) break;
      if (claim.error() == Errc::Corrupt) {
        condemn(dst, dst.to.corruption());
        break;
      }
      counters_.add(counters::Global::drops_too_large);  // cannot happen: the same size limits
    } else {
      std::memcpy(claim->data(), rec->data.data(), len);
      dst.to.commit(len);
      delivered(dst, rec->tag, len);
    }
    dst.slow_out.advance();
    moved += len;
    ++n;
  }
  if (n > 0) {
    dst.slow_out.release();
    dst.slow_bytes -= moved;
    slow_bytes_ -= moved;
    counters_.set(counters::Global::slow_waiting_bytes, slow_bytes_);
    mark_dirty(dst);
  }
  dst.slow_waiting = dst.slow_bytes != 0;
  return !dst.slow_waiting;
}

void Daemon::note_slow(Agent& a, Agent::Sub& s) {
  s.slow = true;
  if (!a.slow_listed) {
    a.slow_listed = true;
    slow_agents_.push_back(&a);
  }
}

void Daemon::service_slow(uint64_t now) {
  const bool scan = now - last_slow_scan_ns_ >= kScanEveryNs;
  if (scan) last_slow_scan_ns_ = now;
  const uint64_t interval = uint64_t{opts_.config.slow_event_interval_ms} * kMs;
  for (size_t i = 0; i < slow_agents_.size();) {
    Agent& a = *slow_agents_[i];
    if (a.slow_cut) {
      cut_slow(a);  // removes it from slow_agents_
      continue;
    }
    if (a.slow_waiting) flush_slow(a);
    if (!scan) {
      ++i;
      continue;
    }
    const bool recovered = !a.slow_waiting && a.to.unconsumed() <= a.to.capacity() / 2;
    for (auto& [sid, s] : a.subs) {
      if (!s.slow) continue;
      if (recovered) {
        if (s.announced) {
          slow_event(a, sid, s, control::SlowEvent::Recovered, now);
        } else {
          ++s.suppressed;  // began and ended inside the rate limit's interval: not announced
        }
        s.slow = false;
        s.announced = false;
      } else if (!s.announced && (s.last_event_ns == 0 || now - s.last_event_ns >= interval)) {
        slow_event(a, sid, s, control::SlowEvent::BecameSlow, now);
        s.announced = true;
      }
    }
    if (recovered) {
      a.slow_listed = false;
      slow_agents_[i] = slow_agents_.back();
      slow_agents_.pop_back();
      continue;
    }
    ++i;
  }
}

void Daemon::slow_event(Agent& a, uint32_t sid, Agent::Sub& s, control::SlowEvent ev, uint64_t now) {
  const std::string_view group = s.group != 0 ? groups_.group_name(s.group) : std::string_view{};
  auto body = control::CreateSlowConsumerDirect(fbb_, ev, a.name.c_str(), a.id, sid, s.pattern.c_str(),
                                                group.empty() ? nullptr : std::string(group).c_str(), s.policy,
                                                s.dropped, a.slow_bytes, s.suppressed);
  auto msg = control::CreateControlMessage(fbb_, ++control_seq_, control::Body::SlowConsumer, body.Union());
  control::FinishControlMessageBuffer(fbb_, msg);
  const std::vector<std::byte> payload(reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()),
                                       reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()) + fbb_.GetSize());
  fbb_.Clear();
  const bool became = ev == control::SlowEvent::BecameSlow;
  log::info(became ? "slow_consumer" : "slow_consumer_recovered",
            {{"agent", a.name}, {"sid", sid}, {"subject", s.pattern}, {"policy", policy_name(s.policy)},
             {"dropped", s.dropped}, {"waiting_bytes", a.slow_bytes}});
  s.last_event_ns = now;
  s.suppressed = 0;
  counters_.add(counters::Global::slow_events);
  system_publish(became ? "$bus.slow.became_slow" : "$bus.slow.recovered", payload);
}

void Daemon::cut_slow(Agent& a) {
  const auto it = a.subs.find(a.slow_cut_sid);
  const std::string pattern = it != a.subs.end() ? it->second.pattern : std::string("?");
  std::string why = "slow consumer: subscription ";
  why.append(std::to_string(a.slow_cut_sid)).append(" ('").append(pattern);
  why.append("', policy disconnect) fell behind by more than its ring and limits.slow_buffer_bytes (");
  why.append(std::to_string(opts_.config.limits.slow_buffer_bytes)).append("); disconnected");
  log::warn("slow_consumer_disconnected", {{"agent", a.name}, {"sid", a.slow_cut_sid}, {"subject", pattern},
                                           {"waiting_bytes", a.slow_bytes}});
  counters_.add(counters::Global::slow_disconnects);
  if (it != a.subs.end() && !it->second.announced) {
    slow_event(a, a.slow_cut_sid, it->second, control::SlowEvent::BecameSlow, clock::mono_ns());
  }
  send_error(a, 0, Errc::LimitReached, why);
  remove_agent(a, "slow consumer (policy disconnect)");
}

void Daemon::forget_slow(Agent& a) {
  if (a.slow_listed) {
    std::erase(slow_agents_, &a);
    a.slow_listed = false;
  }
  slow_bytes_ -= a.slow_bytes;
  a.slow_bytes = 0;
  a.slow_waiting = false;
  counters_.set(counters::Global::slow_waiting_bytes, slow_bytes_);
}

}  // namespace bus::daemon
