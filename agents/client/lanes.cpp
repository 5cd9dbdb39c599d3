// libbus: direct lanes to other agents of this host (protocol: shm/lane.hpp; busd's side:
// bus/daemon/lanes.cpp).
//
// Sending: the first message to a subject in a route epoch goes through busd and asks busd for
// the subject's route (RouteQuery). When busd answers with lanes, the flow switches: a mark
// through busd, a gate in each lane, then the messages go straight into the lanes. When the
// epoch in AgentLines moves (busd: a subscription changed, a lane closes, a reload), every
// routed lane switches back the other way (a mark in the lane, a gate through busd) and routes
// are asked for again.
//
// Receiving: busd's ring and every lane are read; a lane stops at a gate until its mark came
// through busd, and a gate on busd's ring first reads the lane up to its mark (the writer wrote
// the mark before the gate, so it is there). So each flow is seen in the order it was sent,
// whichever way each message went.
#include <unistd.h>

#include <cstring>

#include "bus/clock.hpp"
#include "impl.hpp"

namespace bus {
namespace {

constexpr uint64_t kMs = 1'000'000;

// Routes that send over `l` go back to busd's path (until the next route epoch: a route asked
// for again in this one would name the same lane).
void forget_routes_over(Client::Impl& m, const Client::Impl::Lane& l) {
  for (auto* map : {&m.publish_templates, &m.request_templates}) {
    for (auto& [s, o] : *map) {
      for (const auto& t : o.targets) {
        if (t.lane == &l) {
          o.targets.clear();
          o.route_epoch = Client::Impl::kNoEpoch;
          break;
        }
      }
    }
  }
}

// The other end broke the ring we write into it (a head outside what we wrote): nothing more
// goes over the lane (not even an end record: the ring cannot take one) and its routes go back
// through busd; counted once, as a verify failure. Closed tells the caller to send through busd.
tl::unexpected<Errc> lane_broken(Client::Impl& m, Client::Impl::Lane& l) {
  if (!l.out_ended) ++m.stats.verify_failures;
  l.out_ended = true;
  l.close_asked = true;
  m.lanes_dirty = true;
  forget_routes_over(m, l);
  return tl::unexpected(Errc::Closed);
}

}  // namespace

Client::Impl::Lane* Client::Impl::find_lane(uint32_t id) noexcept {
  for (auto& l : lanes) {
    if (l->id == id) return l.get();
  }
  return nullptr;
}

bool Client::Impl::take_fds(size_t n, int* out) {
  if (rx_fds.size() < n) return false;  // busd sent none: nothing to map
  for (size_t i = 0; i < n; ++i) {
    out[i] = rx_fds.front();
    rx_fds.pop_front();
  }
  return true;
}

void Client::Impl::close_rx_fds() noexcept {
  for (int fd : rx_fds) ::close(fd);
  rx_fds.clear();
}

void Client::Impl::add_lane(std::unique_ptr<Lane> l) {
  lanes.push_back(std::move(l));
  // wait_inbound's poll set grows here, not on the data path.
  pfds.reserve(lanes.size() + 3);  // the control socket, busd's ring, the lanes, wake()'s eventfd
  armed.reserve(lanes.size());
  ++stats.lanes_opened;
  stats.lanes_open = lanes.size();
}

void Client::Impl::on_lane_open(const control::LaneOpen& m) {
  // The segment and four eventfds came with this frame, ahead of anything received after it.
  int fd[5];
  if (!take_fds(5, fd)) return;
  auto l = std::make_unique<Lane>();
  for (int i = 0; i < 4; ++i) l->fds[i] = shm::EventFd(fd[1 + i]);
  auto seg = shm::Segment::attach_fd(fd[0], sizeof(shm::lane::LaneHeader));
  if (!seg || find_lane(m.lane_id()) != nullptr || m.segment_size() != seg->size()) return;
  l->segment = std::move(*seg);
  const auto bytes = l->segment.bytes();
  auto* h = reinterpret_cast<shm::lane::LaneHeader*>(bytes.data());
  if (h->magic != shm::lane::kLaneMagic || h->layout_version != shm::lane::kLaneLayoutVersion || h->lane_id != m.lane_id()) {
    return;
  }
  const int side = h->agent[0] == agent_id ? 0 : h->agent[1] == agent_id ? 1 : -1;
  if (side < 0 || m.out_offset() >= bytes.size() || m.in_offset() >= bytes.size()) return;
  auto o = shm::RingProducer::attach(bytes.subspan(m.out_offset()), {l->fds[0].fd(), l->fds[1].fd()});
  auto i = shm::RingConsumer::attach(bytes.subspan(m.in_offset()), {l->fds[2].fd(), l->fds[3].fd()});
  if (!o || !i) return;
  l->out = std::move(*o);
  l->in = std::move(*i);
  l->id = m.lane_id();
  l->peer = m.peer_id();
  if (m.peer_name() != nullptr) l->peer_name = m.peer_name()->str();
  l->out_messages = &h->side[side].messages;
  l->out_bytes = &h->side[side].bytes;
  l->out_would_block = &h->side[side].would_block;
  l->closed = &h->closed;
  l->verify = m.verify();
  l->copy_first = m.copy_first();
  add_lane(std::move(l));
}

void Client::Impl::on_log_open(const control::LogOpen& m) {
  // Descriptors: the segment, then (writer) the space eventfd and each reader's data eventfd,
  // or (reader) its data eventfd and the space eventfd.
  const bool writer = m.reader_index() < 0;
  const size_t readers = m.reader_ids() != nullptr ? m.reader_ids()->size() : 0;
  const size_t want = writer ? 2 + readers : 3;
  std::vector<int> fd(want);
  if (!take_fds(want, fd.data())) return;
  auto l = std::make_unique<Lane>();
  l->log = true;
  for (size_t i = 1; i < want; ++i) l->log_fds.emplace_back(fd[i]);
  auto seg = shm::Segment::attach_fd(fd[0], sizeof(shm::log::LogHeader));
  if (!seg || find_lane(m.log_id()) != nullptr || m.segment_size() != seg->size()) return;
  l->segment = std::move(*seg);
  auto parts = shm::log::check_log(l->segment.bytes());
  if (!parts || parts->header.log_id != m.log_id() || parts->lines.size() != readers) return;
  l->id = m.log_id();
  l->peer = m.writer_id();
  if (m.writer_name() != nullptr) l->peer_name = m.writer_name()->str();
  l->log_readers.assign(m.reader_ids()->begin(), m.reader_ids()->end());
  l->out_messages = &parts->shared->messages;
  l->out_bytes = &parts->shared->bytes;
  l->out_would_block = &parts->shared->would_block;
  if (writer) {
    if (parts->header.writer != agent_id) return;
    std::vector<int> data;
    for (size_t i = 1; i < l->log_fds.size(); ++i) data.push_back(l->log_fds[i].fd());
    auto w = shm::log::LogWriter::attach(l->segment.bytes(), std::move(data), l->log_fds[0].fd());
    if (!w) return;
    l->log_out = std::move(*w);
    l->in_ended = true;  // nothing comes back on a log
  } else {
    const auto index = static_cast<uint32_t>(m.reader_index());
    if (index >= readers || parts->lines[index].agent != agent_id) return;
    auto r = shm::log::LogReader::attach(l->segment.bytes(), index, l->log_fds[0].fd(), l->log_fds[1].fd());
    if (!r) return;
    l->log_in = std::move(*r);
    l->fds[2] = shm::EventFd(::dup(l->log_fds[0].fd()));  // wait_inbound polls fds[2] of every lane
    if (m.sids() != nullptr) l->sids.assign(m.sids()->begin(), m.sids()->end());
    l->verify = m.verify();
    l->copy_first = m.copy_first();
    l->out_ended = true;  // a reader never writes it
  }
  add_lane(std::move(l));
}

void Client::Impl::on_lane_close(const control::LaneClose& m) {
  if (Lane* l = find_lane(m.lane_id())) {
    l->close_asked = true;
    l->peer_gone = l->peer_gone || m.peer_gone();
    lanes_dirty = true;
  }
}

void Client::Impl::on_route(const control::Route& m) {
  if (routes_pending > 0 && --routes_pending == 0) route_wait_until = 0;
  RouteAnswer a{m.subject()->str(), m.epoch(), {}};
  if (m.targets() != nullptr) {
    for (const auto* t : *m.targets()) a.targets.emplace_back(t->lane_id(), t->tag());
  }
  if (a.targets.empty()) return;  // through busd, as it is until an answer says otherwise
  route_answers.push_back(std::move(a));
  lanes_dirty = true;
}

void Client::Impl::ask_route(std::string_view subject, Outbound& o) {
  o.asked_epoch = epoch_seen;
  ++routes_pending;
  route_wait_until = clock::mono_ns() + 100 * kMs;
  const std::string s(subject);
  auto q = control::CreateRouteQueryDirect(fbb, s.c_str(), epoch_seen);
  (void)send_control(control::Body::RouteQuery, q.Union());  // lost: the subject stays on busd's path
}

bool Client::Impl::write_fence(Lane& l, bool to_lane, uint32_t tag, uint64_t k) {
  const shm::lane::Fence f{l.id, to_lane ? 0 : l.peer, k};
  const auto bytes = std::as_bytes(std::span(&f, 1));
  if (to_lane) {
    if (l.peer_gone && (l.is_closed() || l.log)) return true;  // nobody reads it
    auto c = lane_claim(l, sizeof f, tag);
    if (!c) return false;
    std::memcpy(c->data(), &f, sizeof f);
    l.out_commit(sizeof f);
    l.out_publish();
    return true;
  }
  // Through busd, to the other end; a log's to each of its readers.
  const auto deadline = shm::Deadline::after(static_cast<uint64_t>(opts.publish_timeout.count()) * kMs);
  if (!l.log) return out.write(bytes, wait, deadline, tag).has_value();
  for (uint32_t reader : l.log_readers) {
    const shm::lane::Fence fr{l.id, reader, k};
    if (!out.write(std::as_bytes(std::span(&fr, 1)), wait, deadline, tag)) return false;
  }
  return true;
}

bool Client::Impl::fence_to_lane(Lane& l) {
  // Mark on busd's path first: everything sent through busd before it is read before the lane.
  const uint64_t k = ++l.out_k;
  if (!write_fence(l, false, shm::lane::kMarkTag, k) || !write_fence(l, true, shm::lane::kGateTag, k)) {
    // The lane cannot take the gate (its reader is gone): it is not used.
    l.out_ended = true;
    return false;
  }
  l.fenced_at = brokered_sent;
  return true;
}

void Client::Impl::fence_dirty_lanes() {
  for (size_t i = 0; i < lanes.size() && dirty_lanes > 0; ++i) {
    if (lanes[i]->dirty) fence_to_busd(*lanes[i], false);
  }
  dirty_lanes = 0;
}

Result<std::span<std::byte>> Client::Impl::lane_message_claim(Lane& l, uint32_t len, uint32_t tag) {
  if (l.fenced_at != brokered_sent && !fence_to_lane(l)) [[unlikely]] return tl::unexpected(Errc::Closed);
  auto c = lane_claim(l, len, tag);
  if (c && !l.dirty) {
    l.dirty = true;
    ++dirty_lanes;
  }
  return c;
}

void Client::Impl::fence_to_busd(Lane& l, bool end) {
  if (l.dirty) {
    l.dirty = false;
    if (dirty_lanes > 0) --dirty_lanes;
  }
  if (l.out_ended) return;
  const uint64_t k = ++l.out_k;
  l.out_ended = end;
  // Mark (or end) in the lane first, then the gate through busd: the reader finishes the lane
  // up to here before it reads what follows through busd.
  if (write_fence(l, true, end ? shm::lane::kEndTag : shm::lane::kMarkTag, k)) {
    (void)write_fence(l, false, shm::lane::kGateTag, k);
  }
}

Result<std::span<std::byte>> Client::Impl::lane_claim(Lane& l, uint32_t len, uint32_t tag) {
  auto c = l.out_try_claim(len, tag);
  if (c) [[likely]] return c;
  if (c.error() == Errc::Corrupt) return lane_broken(*this, l);
  if (c.error() != Errc::WouldBlock) return c;
  // Full: wait for the reader like publish() waits for busd, looking at the control socket
  // every few ms (the lane may be closing: its reader died).
  shm::lane::count(*l.out_would_block);
  const uint64_t deadline = clock::mono_ns() + static_cast<uint64_t>(opts.publish_timeout.count()) * kMs;
  for (;;) {
    if (l.is_closed()) return tl::unexpected(Errc::Closed);
    const uint64_t now = clock::mono_ns();
    if (now >= deadline) return tl::unexpected(Errc::WouldBlock);
    c = l.out_claim(len, wait, shm::Deadline::at(std::min(deadline, now + 5 * kMs)), tag);
    if (!c && c.error() == Errc::Corrupt) return lane_broken(*this, l);
    if (c || c.error() != Errc::Timeout) return c;
    if (auto r = pump_control_nowait(); !r) return tl::unexpected(Errc::Closed);
    if (l.close_asked) return tl::unexpected(Errc::Closed);
  }
}

void Client::Impl::settle_lanes() {
  if (lines == nullptr) return;
  lanes_dirty = false;
  const uint64_t e = lines->route_epoch.load(std::memory_order_acquire);
  if (e != epoch_seen) {
    // Every route is gone: lanes that carried routed messages switch back to busd's path.
    // Every route is gone; the next message through busd fences the lanes used meanwhile.
    epoch_seen = e;
    route_answers.clear();
  }
  // By index: writing may pump the control socket, and a LaneOpen appends to `lanes`.
  for (size_t i = 0; i < lanes.size(); ++i) {
    if (lanes[i]->close_asked && !lanes[i]->out_ended) fence_to_busd(*lanes[i], true);
  }
  std::vector<RouteAnswer> answers;
  answers.swap(route_answers);
  for (auto& a : answers) {
    if (a.epoch != epoch_seen) continue;
    for (auto* map : {&publish_templates, &request_templates}) {
      auto it = map->find(a.subject);
      if (it == map->end() || it->second.asked_epoch != epoch_seen) continue;
      Outbound& o = it->second;
      o.targets.clear();
      for (const auto& [id, tag] : a.targets) {
        Lane* l = find_lane(id);
        // A request to several responders goes through busd, which gathers their answers.
        if (l == nullptr || l->out_ended || l->close_asked || (l->log && map == &request_templates)) {
          o.targets.clear();  // all or nothing: a target we cannot reach keeps it on busd's path
          break;
        }
        o.targets.push_back({l, tag});
      }
      if (!o.targets.empty()) o.route_epoch = epoch_seen;  // fenced at its first message
    }
  }
  // Lanes that are done in both directions (or whose other end died and is read to the end)
  // are unmapped; not while a dispatch may be reading one of them.
  if (dispatching > 0) {
    lanes_dirty = true;
    return;
  }
  for (size_t i = 0; i < lanes.size();) {
    Lane& l = *lanes[i];
    const bool drained = l.in_ended || (l.peer_gone && !l.in_try_peek());
    if (!(l.out_ended && drained && (l.close_asked || l.peer_gone))) {
      ++i;
      continue;
    }
    if (l.peer_gone) fail_lane_requests(l.id);
    // Routes that still name it (the epoch moved first; this is a second line of defence).
    forget_routes_over(*this, l);
    lanes.erase(lanes.begin() + static_cast<std::ptrdiff_t>(i));
    ++stats.lanes_closed;
  }
  stats.lanes_open = lanes.size();
}

void Client::Impl::fail_lane_requests(uint32_t lane) {
  if (sync_lane == lane) sync_lane_gone = true;
  for (size_t i = 0; i < outstanding.size();) {
    if (outstanding[i].lane != lane) {
      ++i;
      continue;
    }
    const uint64_t id = outstanding[i].id;
    outstanding[i] = outstanding.back();
    outstanding.pop_back();
    if (on_reply) on_reply(id, tl::unexpected(Error(Errc::NoResponders, "the responder went away before replying")));
  }
}

void Client::Impl::drop_lanes() {
  // Disconnected: busd is gone, and with it every route; the lanes' other ends learn from their
  // own busd connection. Nothing is written.
  for (auto& l : lanes) fail_lane_requests(l->id);
  for (auto* map : {&publish_templates, &request_templates, &reply_templates}) {
    for (auto& [s, o] : *map) {
      o.targets.clear();
      o.route_epoch = kNoEpoch;
      o.asked_epoch = kNoEpoch;
    }
  }
  stats.lanes_closed += lanes.size();
  lanes.clear();
  route_answers.clear();
  stats.lanes_open = 0;
  lines = nullptr;
  epoch_seen = 0;
  lanes_dirty = false;
  routes_pending = 0;
  route_wait_until = 0;
  close_rx_fds();
}

Result<void> Client::Impl::read_lane(Lane& l, size_t max, uint64_t until_mark, uint64_t want_reply, bool* got,
                                     size_t* n) {
  size_t taken = 0;
  while (!l.in_ended && (until_mark != 0 ? l.lane_mark < until_mark : taken < max)) {
    auto rec = l.in_try_peek();
    if (!rec) {
      if (rec.error() == Errc::WouldBlock) break;
      // A lane the other agent broke: its flows stop here; everything else goes on. Our own
      // direction ends too (settle_lanes), and nothing is routed over it after its end record.
      l.in_ended = true;
      l.close_asked = true;
      lanes_dirty = true;
      ++stats.verify_failures;
      forget_routes_over(*this, l);
      break;
    }
    const uint32_t tag = rec->tag;
    if (tag >= shm::lane::kReservedTagBase) {
      shm::lane::Fence f{};
      if (rec->data.size() == sizeof f) std::memcpy(&f, rec->data.data(), sizeof f);
      if (tag == shm::lane::kGateTag) {
        if (l.busd_mark < f.k) {
          l.blocked = true;  // its mark is still on the way through busd
          break;
        }
      } else if (tag == shm::lane::kMarkTag || tag == shm::lane::kEndTag) {
        if (f.k > l.lane_mark) l.lane_mark = f.k;
        if (tag == shm::lane::kEndTag) {
          l.in_ended = true;
          lanes_dirty = true;
        }
      }
      l.blocked = false;
      l.in_advance();
      continue;
    }
    l.blocked = false;
    // The record's other lines are on their way from the writer's cache: ask for all of them
    // now, so that reading it costs one transfer time instead of one per line.
    for (size_t off = 64; off < rec->data.size(); off += 64) __builtin_prefetch(rec->data.data() + off);
    if (l.log) {
      // A log's record is for each of this agent's subscriptions on its subject.
      for (size_t i = 0; i < l.sids.size() && !*got; ++i) deliver_record(&l, shm::Record{l.sids[i], rec->data}, want_reply, got);
    } else {
      deliver_record(&l, *rec, want_reply, got);
    }
    l.in_advance();
    ++taken;
    ++*n;
    if (*got) break;
  }
  l.in_release();
  return {};
}

}  // namespace bus
