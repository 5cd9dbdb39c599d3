#include "counters/page.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <utility>

#include "bus/clock.hpp"

#ifndef BUSD_VERSION
#define BUSD_VERSION "unknown"
#endif

namespace bus::counters {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
// Stores inside a seqlock write are release stores (plain moves on x86): each one orders the odd
// seq before it, which is what the reader's re-check of seq relies on (see seqlock_write). No
// fences: GCC's TSan does not model atomic_thread_fence.
constexpr auto kInSeqlock = std::memory_order_release;

// The longest prefix of `s` that fits `max` bytes without cutting a UTF-8 sequence.
std::string_view fit_utf8(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // s[n]: continuation
  return s.substr(0, n);
}

template <size_t N>
void store_string(std::atomic<uint64_t> (&words)[N], std::string_view s) {
  char buf[N * 8] = {};
  const std::string_view fit = fit_utf8(s, sizeof buf);
  std::memcpy(buf, fit.data(), fit.size());
  for (size_t i = 0; i < N; ++i) {
    uint64_t w;
    std::memcpy(&w, buf + i * 8, 8);
    words[i].store(w, kInSeqlock);
  }
}

// Seqlock write of a slot's descriptor (reader: seqlock_read in counters_reader.cpp). Every
// store `write` makes is a release store (kInSeqlock).
template <class Slot, class Write>
void seqlock_write(Slot& s, Write&& write) {
  const uint64_t seq = s.seq.load(kRelaxed);  // ours: we are its only writer
  s.seq.store(seq + 1, kRelaxed);             // odd: readers retry
  // The field stores in write() are release stores: a reader whose acquire load reads any of
  // them also sees seq + 1 (or later) when it re-reads seq, and retries.
  write();
  // Release: pairs with the reader's acquire load of seq; the fields are visible with it.
  s.seq.store(seq + 2, std::memory_order_release);
}

// The slot whose `counters` member `c` points to, if it is one of the `n` slots from `first`.
template <class Slot, class Counters>
Slot* slot_holding(Slot* first, uint32_t n, Counters* c) noexcept {
  if (c == nullptr) return nullptr;
  auto* slot = reinterpret_cast<Slot*>(reinterpret_cast<std::byte*>(c) - offsetof(Slot, counters));
  if (slot < first || slot >= first + n) return nullptr;  // not one of ours
  return slot;
}

void zero(AgentCounters& c) {
  for (auto* v : {&c.messages_in, &c.messages_out, &c.bytes_in, &c.bytes_out, &c.drops_slow_consumer,
                  &c.drops_acl, &c.drops_too_large, &c.drops_verify, &c.subscriptions,
                  &c.pending_requests, &c.inbound_high_water, &c.outbound_high_water, &c.inbound_depth,
                  &c.outbound_depth, &c.slow_waiting_bytes}) {
    v->store(0, kInSeqlock);
  }
}

}  // namespace

Expected<CountersPage> CountersPage::create(const std::string& path, uint32_t max_agents,
                                            uint32_t max_patterns, uint32_t max_lanes, mode_t mode,
                                            uint32_t max_links) {
  if (max_agents < 1 || max_agents > kMaxTableSlots || max_patterns < 1 ||
      max_patterns > kMaxTableSlots || max_lanes > kMaxTableSlots || max_links > kMaxTableSlots) {
    std::string what = "counters page tables: ";
    what.append(std::to_string(max_agents)).append(" agents, ").append(std::to_string(max_patterns));
    what.append(" patterns (each 1..").append(std::to_string(kMaxTableSlots)).append("), ");
    what.append(std::to_string(max_lanes)).append(" lanes, ").append(std::to_string(max_links));
    what.append(" links (each 0..").append(std::to_string(kMaxTableSlots));
    return fail(Errc::InvalidArgument, what + ")");
  }
  const uint64_t size = page_size(max_agents, max_patterns, max_lanes, max_links);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return tl::unexpected(system_error("creating counters page " + path, errno));
  // open() applies the umask; the configured mode is what operators asked for.
  if (::fchmod(fd, mode) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return tl::unexpected(system_error("sizing counters page " + path, e));
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  const int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    ::unlink(path.c_str());
    return tl::unexpected(system_error("mapping counters page " + path, e));
  }

  CountersPage page;
  page.base_ = static_cast<std::byte*>(p);
  page.size_ = size;
  page.path_ = path;
  page.max_agents_ = max_agents;
  page.max_patterns_ = max_patterns;
  page.max_lanes_ = max_lanes;
  page.max_links_ = max_links;
  page.histograms_offset_ = histograms_offset(max_agents, max_patterns, max_lanes, max_links);

  // The file is new and zero-filled: every slot Free with seq 0, every counter 0.
  PageHeader& h = page.header();
  h.layout_version = kLayoutVersion;
  h.header_size = sizeof(PageHeader);
  h.page_size = size;
  h.pid = static_cast<int32_t>(::getpid());
  h.start_time_ns = clock::real_ns();
  std::strncpy(h.busd_version, BUSD_VERSION, sizeof h.busd_version);
  h.global_count = kGlobalCount;
  h.global_stride = sizeof(GlobalCell);
  h.max_agents = max_agents;
  h.agent_stride = sizeof(AgentSlot);
  h.max_patterns = max_patterns;
  h.pattern_stride = sizeof(PatternSlot);
  h.globals_offset = kGlobalsOffset;
  h.agents_offset = kAgentsOffset;
  h.patterns_offset = patterns_offset(max_agents);
  h.max_lanes = max_lanes;
  h.lane_stride = sizeof(LaneSlot);
  h.lanes_offset = lanes_offset(max_agents, max_patterns);
  h.max_links = max_links;
  h.link_stride = sizeof(LinkSlot);
  h.links_offset = links_offset(max_agents, max_patterns, max_lanes);
  h.histograms_offset = page.histograms_offset_;
  h.histogram_count = kHistCount;
  h.histogram_stride = sizeof(HistogramSlot);
  h.heartbeat_ns.store(h.start_time_ns, kRelaxed);
  page.pattern_slot(max_patterns).state.store(static_cast<uint32_t>(SlotState::Overflow), kRelaxed);
  // Release: pairs with the reader's acquire load of magic; the header above is complete.
  h.magic.store(kMagic, std::memory_order_release);

  page.free_agents_.reserve(max_agents);
  for (uint32_t i = max_agents; i > 0; --i) page.free_agents_.push_back(i - 1);  // slot 0 first
  page.free_patterns_.reserve(max_patterns);
  for (uint32_t i = max_patterns; i > 0; --i) page.free_patterns_.push_back(i - 1);
  page.free_lanes_.resize(max_lanes);
  for (uint32_t i = 0; i < max_lanes; ++i) page.free_lanes_[i] = i;  // slot 0 first
  page.free_lanes_count_ = max_lanes;
  page.free_links_.reserve(max_links);
  for (uint32_t i = max_links; i > 0; --i) page.free_links_.push_back(i - 1);  // slot 0 first
  page.closed_links_.reserve(max_links);
  return page;
}

Expected<bool> CountersPage::remove_stale(const std::string& path) {
  auto view = open_counters(path);
  if (!view) {
    if (view.error().code() == Errc::NotFound) return false;
    return tl::unexpected(view.error().context("not removing it"));
  }
  const int32_t pid = view->info().pid;
  if (pid <= 0) return fail(Errc::Corrupt, "counters page " + path + " records pid " + std::to_string(pid));
  const bool ours = pid == static_cast<int32_t>(::getpid());
  if (!ours && (::kill(pid, 0) == 0 || errno != ESRCH)) {
    return fail(Errc::AlreadyExists,
                "counters page " + path + " belongs to busd pid " + std::to_string(pid) + ", which is running");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return tl::unexpected(system_error("removing stale counters page " + path, errno));
  }
  return true;
}

CountersPage::CountersPage(CountersPage&& o) noexcept { *this = std::move(o); }

CountersPage& CountersPage::operator=(CountersPage&& o) noexcept {
  if (this != &o) {
    reset();
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    path_ = std::exchange(o.path_, {});
    max_agents_ = std::exchange(o.max_agents_, 0);
    max_patterns_ = std::exchange(o.max_patterns_, 0);
    max_lanes_ = std::exchange(o.max_lanes_, 0);
    max_links_ = std::exchange(o.max_links_, 0);
    histograms_offset_ = std::exchange(o.histograms_offset_, 0);
    free_links_ = std::move(o.free_links_);
    closed_links_ = std::move(o.closed_links_);
    free_agents_ = std::move(o.free_agents_);
    free_patterns_ = std::move(o.free_patterns_);
    patterns_ = std::move(o.patterns_);
    free_lanes_ = std::move(o.free_lanes_);
    free_lanes_head_ = std::exchange(o.free_lanes_head_, 0);
    free_lanes_count_ = std::exchange(o.free_lanes_count_, 0);
  }
  return *this;
}

CountersPage::~CountersPage() { reset(); }

void CountersPage::reset() noexcept {
  if (base_ != nullptr) {
    header().heartbeat_ns.store(0, kRelaxed);  // readers still mapping it: stopped
    ::munmap(base_, size_);
  }
  if (!path_.empty()) ::unlink(path_.c_str());
  base_ = nullptr;
  size_ = 0;
  path_.clear();
}

void CountersPage::heartbeat(uint64_t now_realtime_ns) noexcept {
  header().heartbeat_ns.store(now_realtime_ns, kRelaxed);
}

std::atomic<uint64_t>& CountersPage::global(Global g) const noexcept {
  auto* cells = reinterpret_cast<GlobalCell*>(base_ + kGlobalsOffset);
  return cells[static_cast<size_t>(g)].value;
}

AgentSlot& CountersPage::agent_slot(uint32_t i) const noexcept {
  return reinterpret_cast<AgentSlot*>(base_ + kAgentsOffset)[i];
}

PatternSlot& CountersPage::pattern_slot(uint32_t i) const noexcept {
  return reinterpret_cast<PatternSlot*>(base_ + patterns_offset(max_agents_))[i];
}

AgentSlot* CountersPage::slot_of(AgentCounters* a) const noexcept {
  return slot_holding(&agent_slot(0), max_agents_, a);
}

LaneSlot& CountersPage::lane_slot(uint32_t i) const noexcept {
  return reinterpret_cast<LaneSlot*>(base_ + lanes_offset(max_agents_, max_patterns_))[i];
}

LaneSlot* CountersPage::slot_of(LaneCounters* l) const noexcept {
  return slot_holding(&lane_slot(0), max_lanes_, l);  // max_lanes_ 0: &lane_slot(0) is the end
}

LinkSlot& CountersPage::link_slot(uint32_t i) const noexcept {
  return reinterpret_cast<LinkSlot*>(base_ + links_offset(max_agents_, max_patterns_, max_lanes_))[i];
}

LinkSlot* CountersPage::slot_of(LinkCounters* l) const noexcept {
  return slot_holding(&link_slot(0), max_links_, l);
}

void CountersPage::table_changed() noexcept { bump(header().generation); }

AgentCounters* CountersPage::agent_open(uint32_t agent_id, std::string_view name, pid_t pid,
                                        uid_t uid, gid_t gid) {
  if (free_agents_.empty()) {
    add(Global::limit_hits);
    return nullptr;
  }
  AgentSlot& s = agent_slot(free_agents_.back());
  free_agents_.pop_back();
  const uint64_t now = clock::real_ns();
  seqlock_write(s, [&] {
    s.state.store(static_cast<uint32_t>(SlotState::Active), kInSeqlock);
    s.agent_id.store(agent_id, kInSeqlock);
    s.pid.store(static_cast<int32_t>(pid), kInSeqlock);
    s.uid.store(static_cast<uint32_t>(uid), kInSeqlock);
    s.gid.store(static_cast<uint32_t>(gid), kInSeqlock);
    store_string(s.name, name);
    s.opened_ns.store(now, kInSeqlock);
    zero(s.counters);
  });
  table_changed();
  return &s.counters;
}

void CountersPage::agent_dead(AgentCounters* a) noexcept {
  AgentSlot* s = slot_of(a);
  if (s == nullptr || s->state.load(kRelaxed) != static_cast<uint32_t>(SlotState::Active)) return;
  seqlock_write(*s, [&] { s->state.store(static_cast<uint32_t>(SlotState::Dead), kInSeqlock); });
  table_changed();
}

void CountersPage::agent_close(AgentCounters* a) noexcept {
  AgentSlot* s = slot_of(a);
  if (s == nullptr) return;
  if (s->state.load(kRelaxed) == static_cast<uint32_t>(SlotState::Free)) return;
  seqlock_write(*s, [&] { s->state.store(static_cast<uint32_t>(SlotState::Free), kInSeqlock); });
  free_agents_.push_back(static_cast<uint32_t>(s - &agent_slot(0)));  // reserved: never allocates
  table_changed();
}

PatternCounters* CountersPage::pattern_open(std::string_view pattern) {
  if (auto it = patterns_.find(pattern); it != patterns_.end()) {
    ++it->second.refs;
    PatternCounters& c = pattern_slot(it->second.slot).counters;
    bump(c.subscribers);
    return &c;
  }
  uint32_t slot = max_patterns_;  // the overflow slot
  if (free_patterns_.empty()) {
    add(Global::limit_hits);
  } else {
    slot = free_patterns_.back();
    free_patterns_.pop_back();
    PatternSlot& s = pattern_slot(slot);
    seqlock_write(s, [&] {
      s.state.store(static_cast<uint32_t>(SlotState::Active), kInSeqlock);
      store_string(s.pattern, pattern);
      for (auto* v : {&s.counters.subscribers, &s.counters.messages, &s.counters.bytes, &s.counters.drops}) {
        v->store(0, kInSeqlock);
      }
    });
    table_changed();
  }
  patterns_.emplace(std::string(pattern), PatternRef{slot, 1});
  PatternCounters& c = pattern_slot(slot).counters;
  bump(c.subscribers);
  return &c;
}

void CountersPage::pattern_close(std::string_view pattern) noexcept {
  auto it = patterns_.find(pattern);
  if (it == patterns_.end()) return;
  const uint32_t slot = it->second.slot;
  PatternSlot& s = pattern_slot(slot);
  drop_by(s.counters.subscribers);
  if (--it->second.refs > 0) return;
  patterns_.erase(it);
  if (slot == max_patterns_) return;  // the overflow slot stays
  seqlock_write(s, [&] { s.state.store(static_cast<uint32_t>(SlotState::Free), kInSeqlock); });
  free_patterns_.push_back(slot);
  table_changed();
}

LaneCounters* CountersPage::lane_open(uint32_t lane_id, uint32_t agent_a, std::string_view name_a,
                                      uint32_t agent_b, std::string_view name_b) {
  if (free_lanes_count_ == 0) {
    add(Global::lane_table_full);
    return nullptr;
  }
  LaneSlot& s = lane_slot(free_lanes_[free_lanes_head_]);
  free_lanes_head_ = free_lanes_head_ + 1 == max_lanes_ ? 0 : free_lanes_head_ + 1;
  --free_lanes_count_;
  const uint64_t now = clock::real_ns();
  seqlock_write(s, [&] {
    s.state.store(static_cast<uint32_t>(SlotState::Active), kInSeqlock);
    s.lane_id.store(lane_id, kInSeqlock);
    s.agent_id[0].store(agent_a, kInSeqlock);
    s.agent_id[1].store(agent_b, kInSeqlock);
    s.opened_ns.store(now, kInSeqlock);
    store_string(s.name[0], name_a);
    store_string(s.name[1], name_b);
    for (int side = 0; side < 2; ++side) {
      s.counters.messages[side].store(0, kInSeqlock);
      s.counters.bytes[side].store(0, kInSeqlock);
      s.counters.would_block[side].store(0, kInSeqlock);
    }
  });
  table_changed();
  return &s.counters;
}

void CountersPage::lane_close(LaneCounters* l) noexcept {
  LaneSlot* s = slot_of(l);
  if (s == nullptr || s->state.load(kRelaxed) != static_cast<uint32_t>(SlotState::Active)) return;
  seqlock_write(*s, [&] { s->state.store(static_cast<uint32_t>(SlotState::Closed), kInSeqlock); });
  // At the back of the ring: reused after every slot closed before it. Never overflows: each
  // slot is either open or in the ring once.
  uint32_t tail = free_lanes_head_ + free_lanes_count_;
  if (tail >= max_lanes_) tail -= max_lanes_;
  free_lanes_[tail] = static_cast<uint32_t>(s - &lane_slot(0));
  ++free_lanes_count_;
  table_changed();
}

void CountersPage::lane_set(LaneCounters* l, int side, uint64_t messages, uint64_t bytes,
                            uint64_t would_block) noexcept {
  if (l == nullptr || side < 0 || side > 1) return;
  // A statistic with one writer (busd's loop): relaxed, as every counter (see the top of page.hpp).
  l->messages[side].store(messages, kRelaxed);
  l->bytes[side].store(bytes, kRelaxed);
  l->would_block[side].store(would_block, kRelaxed);
}

LinkCounters* CountersPage::link_open(LinkKind kind, std::string_view node, std::string_view address) {
  uint32_t slot = 0;
  if (!free_links_.empty()) {
    slot = free_links_.back();
    free_links_.pop_back();
  } else if (!closed_links_.empty()) {
    slot = closed_links_.front();
    closed_links_.erase(closed_links_.begin());  // rare (a peer forgotten): a short vector
  } else {
    return nullptr;
  }
  LinkSlot& s = link_slot(slot);
  const uint64_t now = clock::real_ns();
  seqlock_write(s, [&] {
    s.state.store(static_cast<uint32_t>(SlotState::Active), kInSeqlock);
    s.kind.store(static_cast<uint32_t>(kind), kInSeqlock);
    s.opened_ns.store(now, kInSeqlock);
    store_string(s.node, node);
    store_string(s.address, address);
    LinkCounters& c = s.counters;
    for (auto* v : {&c.up, &c.messages_out, &c.messages_in, &c.bytes_out, &c.bytes_in, &c.drops_held_full,
                    &c.drops_acl, &c.held_bytes, &c.held_high_water, &c.connects, &c.disconnects, &c.retransmits,
                    &c.naks, &c.datagrams_corrupt, &c.datagrams_dropped, &c.rtt_ns, &c.interests, &c.remote_agents,
                    &c.doorbells, &c.credit_stalls, &c.queue_stalls, &c.completion_errors}) {
      v->store(0, kInSeqlock);
    }
  });
  table_changed();
  return &s.counters;
}

void CountersPage::link_rename(LinkCounters* l, std::string_view node) noexcept {
  LinkSlot* s = slot_of(l);
  if (s == nullptr || s->state.load(kRelaxed) != static_cast<uint32_t>(SlotState::Active)) return;
  seqlock_write(*s, [&] { store_string(s->node, node); });
  table_changed();
}

void CountersPage::link_close(LinkCounters* l) noexcept {
  LinkSlot* s = slot_of(l);
  if (s == nullptr || s->state.load(kRelaxed) != static_cast<uint32_t>(SlotState::Active)) return;
  seqlock_write(*s, [&] { s->state.store(static_cast<uint32_t>(SlotState::Closed), kInSeqlock); });
  s->counters.up.store(0, kRelaxed);
  closed_links_.push_back(static_cast<uint32_t>(s - &link_slot(0)));
  table_changed();
}

}  // namespace bus::counters
