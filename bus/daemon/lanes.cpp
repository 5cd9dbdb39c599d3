// busd's side of direct lanes (layout: shm/lane.hpp). busd decides and the agents carry:
//
//  * An agent asks where a subject goes (RouteQuery, once per route epoch). When every receiver
//    is a local agent it may lane with (no queue group, no peer busd, not a remote agent, not the
//    sender itself, ACL allows the publish, at most max_lane_targets), busd opens the lanes it
//    needs (LaneOpen to both ends, with the memfd and eventfds) and answers Route with the lanes
//    and subscription ids; otherwise Route with no targets and why: the subject stays on busd's
//    path. The ACL is checked here, at set-up: what the sender may publish, and (at subscribe)
//    what the receiver may receive.
//  * Anything that may change an answer bumps the sender's route epoch in its AgentLines: a
//    subscription or a peer's interest that matches a subject it was answered for, a reload,
//    a lane closing. The agent reads the epoch before each send and forgets all its routes when
//    it moved; busd forgets them too, and a lane no route uses any more is closed.
//  * Closing: LaneClose to both ends (peer_gone to the survivor when an agent died); each
//    writer ends its direction with an end record and switches back through busd with a gate,
//    so the reader sees the flow in order. busd unmaps its copy at once; the memfd goes away
//    with the last agent that maps it (nothing in /dev/shm).
//
// Mark and gate records that agents write to busd are forwarded here, in order with the
// sender's other messages, to the other end of the lane.
#include <cstring>

#include "bus/clock.hpp"
#include "daemon.hpp"
#include "log.hpp"
#include "router/subjects.hpp"

namespace bus::daemon {
namespace {

uint64_t pair_key(uint32_t a, uint32_t b) noexcept {
  return a < b ? (uint64_t{a} << 32 | b) : (uint64_t{b} << 32 | a);
}

}  // namespace

bool Daemon::lanes_left(const Agent& a, std::string& why) const {
  if (a.lanes.size() < opts_.config.limits.max_lanes_per_agent) return true;
  why = "limits.max_lanes_per_agent reached";
  return false;
}

namespace {

bool make_eventfds(std::span<shm::EventFd> into, std::string& why) {
  for (auto& e : into) {
    auto fd = shm::EventFd::create();
    if (!fd) {
      why = "creating a lane's eventfds: " + fd.error().message();
      return false;
    }
    e = std::move(*fd);
  }
  return true;
}

}  // namespace

void Daemon::on_route_query(Agent& a, const control::ControlMessage& m) {
  const auto* q = m.body_as_RouteQuery();
  const std::string_view subject = q->subject()->string_view();
  if (a.lines == nullptr || q->epoch() != a.route_epoch) return;  // stale: it asks again
  std::string why;
  lane_targets_.clear();
  const auto known = std::find_if(a.routes.begin(), a.routes.end(), [&](const Agent::RouteRec& r) { return r.subject == subject; });
  if (known != a.routes.end()) {
    // Asked again in this epoch (for requests as well as publishes): the same answer.
    lane_targets_ = known->targets;
    if (lane_targets_.empty()) why = "as answered before";
  } else if (a.routes.size() >= kMaxRoutesPerAgent) {
    // Bounded memory: answers beyond this stay on busd's path until the next epoch.
    why = "too many routes for one agent";
  } else {
    if (!route_by_lanes(a, subject, why)) lane_targets_.clear();
    Agent::RouteRec rec{std::string(subject), {}, lane_targets_};
    for (const auto& t : lane_targets_) {
      if (std::find(rec.lanes.begin(), rec.lanes.end(), t.lane_id()) == rec.lanes.end()) {
        rec.lanes.push_back(t.lane_id());
        ++lanes_.at(t.lane_id())->routes;
      }
    }
    a.routes.push_back(std::move(rec));
  }
  if (!lane_targets_.empty()) counters_.add(counters::Global::lane_routes);
  const std::string subj(subject);
  auto body = control::CreateRouteDirect(fbb_, subj.c_str(), a.route_epoch, &lane_targets_,
                                         why.empty() ? nullptr : why.c_str());
  send_control(a, control::Body::Route, body.Union());
}

bool Daemon::route_by_lanes(Agent& a, std::string_view subject, std::string& why) {
  if (!opts_.config.lanes) {
    why = "lanes are off ([busd] lanes = false)";
    return false;
  }
  if (router::classify(subject) != router::SubjectClass::Normal || !router::validate_subject(subject)) {
    why = "not a subject lanes carry";
    return false;
  }
  if (!a.grants.may_publish(subject)) {
    why = "ACL: not allowed to publish here";
    return false;
  }
  matches_.clear();
  trie_.match(subject, matches_);
  if (matches_.empty()) {
    why = "no subscribers";
    return false;
  }
  if (matches_.size() > opts_.config.limits.max_lane_targets) {
    why = "more subscribers than limits.max_lane_targets";
    return false;
  }
  for (const auto& r : matches_) {
    if (r.agent >= kPeerBase) {
      why = "subscribers on other hosts";
      return false;
    }
    if (r.group != 0) {
      why = "a queue group subscribes";
      return false;
    }
    if (r.agent == a.id) {
      why = "the sender subscribes itself";
      return false;
    }
    const Agent* b = agent(r.agent);
    if (b == nullptr || b->phase != Agent::Phase::Active || b->lines == nullptr) {
      why = "a subscriber cannot take lanes";
      return false;
    }
    // A drop or disconnect policy is busd's to apply: that subscription's messages pass through it.
    if (auto it = b->subs.find(r.sid); it != b->subs.end() && it->second.policy != control::SlowPolicy::Block) {
      why = "a subscriber has a drop or disconnect slow-consumer policy";
      return false;
    }
  }
  // Several receivers: one broadcast log, each message written once for all of them.
  bool several = false;
  for (const auto& r : matches_) several = several || r.agent != matches_.front().agent;
  if (several) {
    Lane* l = open_log(a, subject, why);
    if (l == nullptr) return false;
    lane_targets_.emplace_back(l->id, 0);
    return true;
  }
  for (const auto& r : matches_) {
    Lane* l = lane_between(a, *agent(r.agent), why);
    if (l == nullptr) return false;
    lane_targets_.emplace_back(l->id, r.sid);
  }
  return true;
}

Daemon::Lane* Daemon::open_log(Agent& a, std::string_view subject, std::string& why) {
  // The readers, once each, with the subscriptions each gets the messages for.
  std::vector<uint32_t> readers;
  std::vector<std::vector<uint32_t>> sids;
  for (const auto& r : matches_) {
    auto it = std::find(readers.begin(), readers.end(), r.agent);
    if (it == readers.end()) {
      readers.push_back(r.agent);
      sids.emplace_back();
      it = readers.end() - 1;
    }
    sids[static_cast<size_t>(it - readers.begin())].push_back(r.sid);
  }
  if (!lanes_left(a, why)) return nullptr;
  for (uint32_t id : readers) {
    if (!lanes_left(*agent(id), why)) return nullptr;
  }
  auto l = std::make_unique<Lane>();
  l->id = next_lane_id_++;
  l->log = true;
  l->agent[0] = a.id;
  l->readers = readers;
  l->subject.assign(subject);
  const uint64_t cap = opts_.config.limits.ring_capacity;
  const auto n = static_cast<uint32_t>(readers.size());
  auto seg = shm::Segment::create_memfd("log-" + std::to_string(l->id), shm::log::log_bytes(n, cap), false);
  if (!seg) {
    why = "creating the log: " + seg.error().message();
    return nullptr;
  }
  l->segment = std::move(*seg);
  if (auto f = shm::log::format_log(l->segment.bytes(), l->id, a.id, readers, cap, shm::Zeroed::yes); !f) {
    why = "formatting the log: " + f.error().message();
    return nullptr;
  }
  l->reader_fds.resize(n);
  if (!make_eventfds(std::span(&l->fds[1], 1), why) || !make_eventfds(l->reader_fds, why)) return nullptr;
  l->log_shared = reinterpret_cast<shm::log::LogShared*>(l->segment.bytes().data() + sizeof(shm::log::LogHeader));
  const std::string subj(subject);
  // The writer: the segment, the space eventfd, every reader's data eventfd.
  {
    std::vector<int> fds{l->segment.fd(), l->fds[1].fd()};
    for (const auto& e : l->reader_fds) fds.push_back(e.fd());
    auto open = control::CreateLogOpenDirect(fbb_, l->id, a.id, a.name.c_str(), l->segment.size(), -1, &readers,
                                             nullptr, false, false);
    send_control(a, control::Body::LogOpen, open.Union(), fds);
  }
  for (uint32_t i = 0; i < n; ++i) {
    Agent& r = *agent(readers[i]);
    const bool other_uid = r.cred.uid != a.cred.uid;
    auto open = control::CreateLogOpenDirect(fbb_, l->id, a.id, a.name.c_str(), l->segment.size(), static_cast<int32_t>(i),
                                             &readers, &sids[i], other_uid || opts_.config.lanes_verify_same_uid, other_uid);
    const int fds[3] = {l->segment.fd(), l->reader_fds[i].fd(), l->fds[1].fd()};
    send_control(r, control::Body::LogOpen, open.Union(), fds);
    r.lanes.push_back(l->id);
  }
  a.lanes.push_back(l->id);
  l->stats = counters_.lane_open(l->id, a.id, a.name, 0, std::to_string(n) + " readers of " + subj);
  log::debug("log_open", {{"log", l->id}, {"writer", a.name}, {"subject", subj}, {"readers", n}});
  return keep_lane(std::move(l));
}

Daemon::Lane* Daemon::lane_between(Agent& a, Agent& b, std::string& why) {
  if (auto it = lane_by_pair_.find(pair_key(a.id, b.id)); it != lane_by_pair_.end()) {
    return lanes_.at(it->second).get();
  }
  if (!lanes_left(a, why) || !lanes_left(b, why)) return nullptr;
  auto l = std::make_unique<Lane>();
  l->id = next_lane_id_++;
  Agent& lo = a.id < b.id ? a : b;
  Agent& hi = a.id < b.id ? b : a;
  l->agent[0] = lo.id;
  l->agent[1] = hi.id;
  const uint64_t cap = opts_.config.limits.ring_capacity;
  const size_t ring = shm::ring_bytes(cap);
  const size_t head = sizeof(shm::lane::LaneHeader);
  auto seg = shm::Segment::create_memfd("lane-" + std::to_string(l->id), head + 2 * ring, false);
  if (!seg) {
    why = "creating the lane: " + seg.error().message();
    return nullptr;
  }
  l->segment = std::move(*seg);
  const auto bytes = l->segment.bytes();
  for (int i = 0; i < 2; ++i) {
    if (auto f = shm::format_ring(bytes.subspan(head + i * ring, ring), cap, 0, shm::Zeroed::yes); !f) {
      why = "formatting the lane: " + f.error().message();
      return nullptr;
    }
  }
  if (!make_eventfds(l->fds, why)) return nullptr;
  auto* h = new (bytes.data()) shm::lane::LaneHeader{};
  h->magic = shm::lane::kLaneMagic;
  h->layout_version = shm::lane::kLaneLayoutVersion;
  h->lane_id = l->id;
  h->agent[0] = lo.id;
  h->agent[1] = hi.id;
  h->ring_offset[0] = head;
  h->ring_offset[1] = head + ring;
  l->header = h;
  // Each end: the ring it writes, the ring it reads, and their eventfds in that order.
  for (int side = 0; side < 2; ++side) {
    Agent& me = side == 0 ? lo : hi;
    const Agent& other = side == 0 ? hi : lo;
    const int out = side, in = 1 - side;
    const bool other_uid = me.cred.uid != other.cred.uid;
    auto open = control::CreateLaneOpenDirect(fbb_, l->id, other.id, other.name.c_str(), bytes.size(),
                                              h->ring_offset[out], h->ring_offset[in],
                                              other_uid || opts_.config.lanes_verify_same_uid, other_uid);
    const int fds[5] = {l->segment.fd(), l->fds[2 * out].fd(), l->fds[2 * out + 1].fd(), l->fds[2 * in].fd(),
                        l->fds[2 * in + 1].fd()};
    send_control(me, control::Body::LaneOpen, open.Union(), fds);
  }
  l->stats = counters_.lane_open(l->id, lo.id, lo.name, hi.id, hi.name);
  lo.lanes.push_back(l->id);
  hi.lanes.push_back(l->id);
  lane_by_pair_.emplace(pair_key(lo.id, hi.id), l->id);
  log::debug("lane_open", {{"lane", l->id}, {"a", lo.name}, {"b", hi.name}});
  return keep_lane(std::move(l));
}

Daemon::Lane* Daemon::keep_lane(std::unique_ptr<Lane> l) {
  if (next_lane_id_ == 0) next_lane_id_ = 1;  // wrapped: 0 stands for "through busd"
  counters_.add(counters::Global::lanes_opened);
  Lane* raw = l.get();
  lanes_.emplace(l->id, std::move(l));
  counters_.set(counters::Global::lanes_open, lanes_.size());
  return raw;
}

void Daemon::forget_routes(Agent& a) {
  if (a.lines == nullptr) return;
  ++a.route_epoch;
  a.lines->route_epoch.store(a.route_epoch, std::memory_order_release);
  for (const auto& r : a.routes) {
    for (uint32_t id : r.lanes) {
      if (auto it = lanes_.find(id); it != lanes_.end() && it->second->routes > 0) --it->second->routes;
    }
  }
  a.routes.clear();
}

void Daemon::routes_changed(std::string_view pattern) {
  bool any = false;
  for (Agent* a : active_) {
    for (const auto& r : a->routes) {
      if (router::pattern_matches(pattern, r.subject)) {
        forget_routes(*a);
        any = true;
        break;
      }
    }
  }
  if (any) close_unused_lanes("its routes changed");
}

void Daemon::close_unused_lanes(const char* why) {
  lane_scratch_.clear();
  for (const auto& [id, l] : lanes_) {
    if (l->routes == 0) lane_scratch_.push_back(id);
  }
  for (uint32_t id : lane_scratch_) close_lane(id, why, 0);
}

void Daemon::close_lane(uint32_t id, const char* why, uint32_t gone) {
  auto it = lanes_.find(id);
  if (it == lanes_.end()) return;
  Lane& l = *it->second;
  std::vector<uint32_t> members(l.agent, l.agent + (l.log ? 1 : 2));
  members.insert(members.end(), l.readers.begin(), l.readers.end());
  // The survivors' routes over it go first (nobody must write to a lane nobody reads).
  for (uint32_t member : members) {
    Agent* m = agent(member);
    if (m == nullptr) continue;
    std::erase(m->lanes, id);
    if (member == gone || m->phase != Agent::Phase::Active) continue;
    for (const auto& r : m->routes) {
      if (std::find(r.lanes.begin(), r.lanes.end(), id) != r.lanes.end()) {
        forget_routes(*m);
        break;
      }
    }
  }
  if (l.header != nullptr) l.header->closed.store(1, std::memory_order_release);
  if (l.log && gone != 0 && gone != l.agent[0]) {
    // A reader died: a position no reader can store cuts it out, so that the writer is no
    // longer held back by it and can end the log for the others.
    if (auto parts = shm::log::check_log(l.segment.bytes())) {
      for (auto& line : parts->lines) {
        if (line.agent == gone) line.head.store(1, std::memory_order_release);
      }
    }
  }
  sync_lane(l);
  for (uint32_t member : members) {
    Agent* m = agent(member);
    if (m == nullptr || member == gone || m->phase != Agent::Phase::Active) continue;
    // peer_gone: the one this agent exchanges with is gone (a log: its writer, for a reader).
    const bool peer_gone = gone != 0 && (!l.log || gone == l.agent[0]);
    auto body = control::CreateLaneCloseDirect(fbb_, id, peer_gone, why);
    send_control(*m, control::Body::LaneClose, body.Union());
  }
  if (l.stats != nullptr) counters_.lane_close(l.stats);
  if (!l.log) lane_by_pair_.erase(pair_key(l.agent[0], l.agent[1]));
  log::debug("lane_close", {{"lane", id}, {"why", why}});
  lanes_.erase(it);  // unmaps busd's copy; the agents hold theirs until they are done
  counters_.add(counters::Global::lanes_closed);
  counters_.set(counters::Global::lanes_open, lanes_.size());
}

void Daemon::drop_lanes_of(Agent& a) {
  forget_routes(a);
  const std::vector<uint32_t> mine = a.lanes;  // close_lane edits a.lanes
  for (uint32_t id : mine) close_lane(id, "the agent at the other end is gone", a.id);
  a.lines = nullptr;
}

void Daemon::reset_lanes(const char* why) {
  for (Agent* a : active_) forget_routes(*a);
  close_unused_lanes(why);
}

void Daemon::sync_lane(Lane& l) {
  if (l.stats == nullptr) return;
  if (l.log) {
    // Written once, read by every reader: the bytes count once whatever their number.
    const auto& s = *l.log_shared;
    counters_.lane_set(l.stats, 0, s.messages.load(std::memory_order_relaxed), s.bytes.load(std::memory_order_relaxed),
                       s.would_block.load(std::memory_order_relaxed));
    return;
  }
  for (int side = 0; side < 2; ++side) {
    const auto& s = l.header->side[side];
    counters_.lane_set(l.stats, side, s.messages.load(std::memory_order_relaxed),
                       s.bytes.load(std::memory_order_relaxed), s.would_block.load(std::memory_order_relaxed));
  }
}

void Daemon::sync_lanes() {
  for (auto& [id, l] : lanes_) sync_lane(*l);
}

bool Daemon::forward_fence(Agent& src, const shm::Record& rec) {
  const std::span<const std::byte> bytes = rec.data;
  src.timed_in_ns = 0;  // a retry of this record (drain_agent) must not stamp hop times into it
  shm::lane::Fence f{};
  if (bytes.size() != sizeof f) return true;  // malformed: dropped (it only disorders its own flows)
  std::memcpy(&f, bytes.data(), sizeof f);
  // To the agent it names, whether or not busd still has the lane (the reader may still be
  // before the gate this mark opens), stamped with the sender: the reader checks that the
  // lane is one from the sender, so a fence can only touch the sender's own flows.
  const uint32_t other = f.agent;
  f.agent = src.id;
  src.copy_buf.resize(sizeof f);
  std::memcpy(src.copy_buf.data(), &f, sizeof f);
  src.owed.assign(1, router::SubRef{other, rec.tag, 0});
  return deliver_owed(src.owed, src.copy_buf, nullptr);
}

}  // namespace bus::daemon
