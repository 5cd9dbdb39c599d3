// Reader side of the counters page (layout: bus/counters.hpp). A decoder of bytes another
// process writes: every size and offset is checked once against the mapping, then copied.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <utility>

#include "bus/counters.hpp"

namespace bus::counters {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
// Loads inside a seqlock read are acquire loads (plain moves on x86); see seqlock_read.
constexpr auto kInSeqlock = std::memory_order_acquire;
constexpr int kSeqlockTries = 64;  // then the slot is left out of this snapshot

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Bytes of a NUL-padded string stored as atomic words, up to the first NUL.
template <size_t N>
std::string load_string(const std::atomic<uint64_t> (&words)[N]) {
  char buf[N * 8];
  for (size_t i = 0; i < N; ++i) {
    const uint64_t w = words[i].load(kInSeqlock);
    std::memcpy(buf + i * 8, &w, 8);
  }
  return std::string(buf, ::strnlen(buf, sizeof buf));
}

// Copies a slot's descriptor and counters between two loads of its seq. The writer (page.cpp
// seqlock_write) stores seq odd, then every field with a release store, then seq even with a
// release store. `read` loads every field with an acquire load (kInSeqlock). No fences: GCC's
// TSan does not model atomic_thread_fence. False when busd kept rewriting the slot.
template <class Slot, class Read>
bool seqlock_read(const Slot& s, uint64_t& seq_out, Read&& read) {
  for (int i = 0; i < kSeqlockTries; ++i) {
    // Acquire: pairs with the writer's release store of the even seq that ended its last write,
    // so the fields read below are at least that new.
    const uint64_t s1 = s.seq.load(std::memory_order_acquire);
    if ((s1 & 1) != 0) continue;
    read();
    // The field loads were acquire loads: this load cannot move before them, and if any of them
    // read a store of a newer write (a release store after that write's odd seq), this load sees
    // that odd seq or later, so s1 differs.
    if (s.seq.load(kRelaxed) == s1) {
      seq_out = s1;
      return true;
    }
  }
  return false;
}

bool table_fits(uint64_t offset, uint64_t count, uint64_t stride, uint64_t header_size,
                uint64_t page_size) {
  // count <= kMaxTableSlots + 1 and stride < 2^16 were checked first: no overflow here.
  return offset >= header_size && offset % kCacheLine == 0 && offset <= page_size &&
         count * stride <= page_size - offset;
}

}  // namespace

bool process_alive(int32_t pid) noexcept {
  if (pid <= 0) return false;  // kill(0 or -n, 0) would ask about process groups
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

CountersView::CountersView(CountersView&& o) noexcept { *this = std::move(o); }

CountersView& CountersView::operator=(CountersView&& o) noexcept {
  if (this != &o) {
    if (owned_ && base_ != nullptr) ::munmap(const_cast<std::byte*>(base_), size_);
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    owned_ = std::exchange(o.owned_, false);
    info_ = std::move(o.info_);
    global_count_ = o.global_count_;
    global_stride_ = o.global_stride_;
    agent_stride_ = o.agent_stride_;
    pattern_stride_ = o.pattern_stride_;
    lane_stride_ = o.lane_stride_;
    link_stride_ = o.link_stride_;
    histogram_stride_ = o.histogram_stride_;
    histograms_offset_ = o.histograms_offset_;
    globals_offset_ = o.globals_offset_;
    agents_offset_ = o.agents_offset_;
    patterns_offset_ = o.patterns_offset_;
    lanes_offset_ = o.lanes_offset_;
    links_offset_ = o.links_offset_;
  }
  return *this;
}

CountersView::~CountersView() {
  if (owned_ && base_ != nullptr) ::munmap(const_cast<std::byte*>(base_), size_);
}

Expected<CountersView> CountersView::from_bytes(std::span<const std::byte> bytes) {
  const size_t size = bytes.size();
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(PageHeader) != 0) {
    return fail(Errc::InvalidArgument, "counters page image is not 128-byte aligned");
  }
  if (size < sizeof(PageHeader)) {
    return fail(Errc::Corrupt, "counters page has " + std::to_string(size) +
                                   " bytes, less than its " + std::to_string(sizeof(PageHeader)) +
                                   "-byte header");
  }
  const auto* h = reinterpret_cast<const PageHeader*>(bytes.data());
  // Acquire: pairs with the creator's release store of magic, made after the static header.
  const uint64_t magic = h->magic.load(std::memory_order_acquire);
  if (magic == 0) {
    return fail(Errc::Corrupt, "counters page is not initialised (busd starting, or it died starting)");
  }
  if (magic != kMagic) {
    return fail(Errc::Corrupt, "not a busd counters page: magic " + hex(magic) + ", expected " + hex(kMagic));
  }
  if (h->layout_version != kLayoutVersion) {
    return fail(Errc::VersionMismatch, "counters page layout version " +
                                           std::to_string(h->layout_version) + ", this reader knows " +
                                           std::to_string(kLayoutVersion));
  }
  // Copy once; only the copies are used from here on (busd, or anyone, may rewrite the header).
  const uint64_t header_size = h->header_size;
  const uint64_t page_size = h->page_size;
  const uint32_t global_count = h->global_count, global_stride = h->global_stride;
  const uint32_t max_agents = h->max_agents, agent_stride = h->agent_stride;
  const uint32_t max_patterns = h->max_patterns, pattern_stride = h->pattern_stride;
  const uint64_t globals_offset = h->globals_offset, agents_offset = h->agents_offset,
                 patterns_offset = h->patterns_offset;
  // No lane table (a page from a busd before lanes has 0 there): its offset and stride unused.
  const uint32_t max_lanes = h->max_lanes;
  const uint32_t lane_stride = max_lanes == 0 ? uint32_t{sizeof(LaneSlot)} : h->lane_stride;
  const uint64_t lanes_offset = max_lanes == 0 ? 0 : h->lanes_offset;
  // Likewise the link table (a page from a busd before it has 0 there).
  const uint32_t max_links = h->max_links;
  const uint32_t link_stride = max_links == 0 ? uint32_t{sizeof(LinkSlot)} : h->link_stride;
  const uint64_t links_offset = max_links == 0 ? 0 : h->links_offset;
  // Likewise the histograms (a page from a busd before them has 0 there).
  const uint32_t histogram_count = h->histogram_count;
  const uint32_t histogram_stride = histogram_count == 0 ? uint32_t{sizeof(HistogramSlot)} : h->histogram_stride;
  const uint64_t histograms_offset = histogram_count == 0 ? 0 : h->histograms_offset;

  if (header_size < sizeof(PageHeader) || header_size % kCacheLine != 0 || header_size > page_size) {
    return fail(Errc::Corrupt, "counters page header_size " + std::to_string(header_size) +
                                   " (page_size " + std::to_string(page_size) + ")");
  }
  if (page_size > size) {
    return fail(Errc::Corrupt, "counters page file has " + std::to_string(size) +
                                   " bytes, its header says " + std::to_string(page_size));
  }
  auto stride_ok = [](uint32_t stride, size_t min) {
    return stride >= min && stride % kCacheLine == 0 && stride <= (1u << 16);
  };
  if (!stride_ok(global_stride, sizeof(GlobalCell)) || !stride_ok(agent_stride, sizeof(AgentSlot)) ||
      !stride_ok(pattern_stride, sizeof(PatternSlot)) || !stride_ok(lane_stride, sizeof(LaneSlot)) ||
      !stride_ok(link_stride, sizeof(LinkSlot)) || !stride_ok(histogram_stride, sizeof(HistogramSlot))) {
    return fail(Errc::Corrupt, "counters page strides " + std::to_string(global_stride) + "/" +
                                   std::to_string(agent_stride) + "/" + std::to_string(pattern_stride) +
                                   "/" + std::to_string(lane_stride) + "/" + std::to_string(link_stride) +
                                   "/" + std::to_string(histogram_stride) +
                                   " (globals/agents/patterns/lanes/links/histograms)");
  }
  if (global_count > kMaxTableSlots || max_agents > kMaxTableSlots || max_patterns > kMaxTableSlots ||
      max_lanes > kMaxTableSlots || max_links > kMaxTableSlots || histogram_count > kMaxTableSlots) {
    std::string what = "counters page table sizes ";
    what.append(std::to_string(global_count)).append("/").append(std::to_string(max_agents));
    what.append("/").append(std::to_string(max_patterns)).append("/").append(std::to_string(max_lanes));
    what.append("/").append(std::to_string(max_links)).append("/").append(std::to_string(histogram_count));
    what.append(" (globals/agents/patterns/lanes/links/histograms) exceed ").append(std::to_string(kMaxTableSlots));
    return fail(Errc::Corrupt, what);
  }
  auto where = [&](const char* table, uint64_t off, uint64_t count, uint64_t stride) {
    return std::string(table) + " table at " + std::to_string(off) + " (" + std::to_string(count) +
           " x " + std::to_string(stride) + " bytes) is outside the " + std::to_string(page_size) +
           "-byte page or misaligned";
  };
  if (!table_fits(globals_offset, global_count, global_stride, header_size, page_size)) {
    return fail(Errc::Corrupt, where("globals", globals_offset, global_count, global_stride));
  }
  if (!table_fits(agents_offset, max_agents, agent_stride, header_size, page_size)) {
    return fail(Errc::Corrupt, where("agents", agents_offset, max_agents, agent_stride));
  }
  if (!table_fits(patterns_offset, uint64_t{max_patterns} + 1, pattern_stride, header_size, page_size)) {
    return fail(Errc::Corrupt, where("patterns", patterns_offset, uint64_t{max_patterns} + 1, pattern_stride));
  }
  if (max_lanes > 0 && !table_fits(lanes_offset, max_lanes, lane_stride, header_size, page_size)) {
    return fail(Errc::Corrupt, where("lanes", lanes_offset, max_lanes, lane_stride));
  }
  if (max_links > 0 && !table_fits(links_offset, max_links, link_stride, header_size, page_size)) {
    return fail(Errc::Corrupt, where("links", links_offset, max_links, link_stride));
  }
  if (histogram_count > 0 &&
      !table_fits(histograms_offset, histogram_count, histogram_stride, header_size, page_size)) {
    return fail(Errc::Corrupt, where("histograms", histograms_offset, histogram_count, histogram_stride));
  }

  {
    // Tables never overlap (overlap would not make a read unsafe, but it is not a page busd wrote).
    struct Range {
      uint64_t begin, end;
    };
    // An empty range (no lane or link table, no histograms) overlaps nothing.
    const Range r[6] = {{globals_offset, globals_offset + uint64_t{global_count} * global_stride},
                        {agents_offset, agents_offset + uint64_t{max_agents} * agent_stride},
                        {patterns_offset, patterns_offset + (uint64_t{max_patterns} + 1) * pattern_stride},
                        {lanes_offset, lanes_offset + uint64_t{max_lanes} * lane_stride},
                        {links_offset, links_offset + uint64_t{max_links} * link_stride},
                        {histograms_offset, histograms_offset + uint64_t{histogram_count} * histogram_stride}};
    for (int i = 0; i < 6; ++i) {
      for (int j = i + 1; j < 6; ++j) {
        if (r[i].begin < r[j].end && r[j].begin < r[i].end) {
          std::string what = "counters page tables overlap (globals at ";
          what.append(std::to_string(globals_offset)).append(", agents at ");
          what.append(std::to_string(agents_offset)).append(", patterns at ");
          what.append(std::to_string(patterns_offset)).append(", lanes at ");
          what.append(std::to_string(lanes_offset)).append(", links at ");
          what.append(std::to_string(links_offset)).append(", histograms at ");
          what.append(std::to_string(histograms_offset)).append(")");
          return fail(Errc::Corrupt, what);
        }
      }
    }
  }

  CountersView v;
  v.base_ = bytes.data();
  v.size_ = size;
  v.info_.layout_version = kLayoutVersion;
  v.info_.pid = h->pid;
  v.info_.start_time_ns = h->start_time_ns;
  v.info_.page_size = page_size;
  char version[kVersionSize];
  std::memcpy(version, h->busd_version, sizeof version);
  v.info_.busd_version.assign(version, ::strnlen(version, sizeof version));
  v.info_.max_agents = max_agents;
  v.info_.max_patterns = max_patterns;
  v.info_.max_lanes = max_lanes;
  v.info_.max_links = max_links;
  v.info_.histogram_count = histogram_count;
  v.histogram_stride_ = histogram_stride;
  v.histograms_offset_ = histograms_offset;
  v.global_count_ = global_count;
  v.global_stride_ = global_stride;
  v.agent_stride_ = agent_stride;
  v.pattern_stride_ = pattern_stride;
  v.lane_stride_ = lane_stride;
  v.link_stride_ = link_stride;
  v.globals_offset_ = globals_offset;
  v.agents_offset_ = agents_offset;
  v.patterns_offset_ = patterns_offset;
  v.lanes_offset_ = lanes_offset;
  v.links_offset_ = links_offset;
  return v;
}

uint64_t CountersView::heartbeat_ns() const noexcept {
  return reinterpret_cast<const PageHeader*>(base_)->heartbeat_ns.load(kRelaxed);
}

uint64_t CountersView::generation() const noexcept {
  return reinterpret_cast<const PageHeader*>(base_)->generation.load(kRelaxed);
}

bool CountersView::live(uint64_t now_realtime_ns) const noexcept {
  const uint64_t hb = heartbeat_ns();
  if (hb == 0) return false;  // busd stopped cleanly
  const uint64_t age = now_realtime_ns >= hb ? now_realtime_ns - hb : hb - now_realtime_ns;
  return age <= kStaleAfterNs;
}

GlobalSnapshot CountersView::globals() const noexcept {
  GlobalSnapshot g;
  const size_t n = global_count_ < kGlobalCount ? global_count_ : kGlobalCount;
  for (size_t i = 0; i < n; ++i) {
    // GlobalCell::value is its first member; offset and stride were checked 64-byte aligned.
    const auto* value =
        reinterpret_cast<const std::atomic<uint64_t>*>(base_ + globals_offset_ + i * global_stride_);
    g.values[i] = value->load(kRelaxed);
  }
  return g;
}

std::vector<AgentSnapshot> CountersView::agents() const {
  std::vector<AgentSnapshot> out;
  for (uint32_t i = 0; i < info_.max_agents; ++i) {
    const auto* s = reinterpret_cast<const AgentSlot*>(base_ + agents_offset_ + uint64_t{i} * agent_stride_);
    const auto state = static_cast<SlotState>(s->state.load(kRelaxed));
    if (state != SlotState::Active && state != SlotState::Dead) continue;
    AgentSnapshot a;
    a.slot = i;
    const auto& c = s->counters;
    const bool ok = seqlock_read(*s, a.generation, [&] {
      a.state = static_cast<SlotState>(s->state.load(kInSeqlock));
      a.agent_id = s->agent_id.load(kInSeqlock);
      a.pid = s->pid.load(kInSeqlock);
      a.uid = s->uid.load(kInSeqlock);
      a.gid = s->gid.load(kInSeqlock);
      a.name = load_string(s->name);
      a.opened_ns = s->opened_ns.load(kInSeqlock);
      a.messages_in = c.messages_in.load(kInSeqlock);
      a.messages_out = c.messages_out.load(kInSeqlock);
      a.bytes_in = c.bytes_in.load(kInSeqlock);
      a.bytes_out = c.bytes_out.load(kInSeqlock);
      a.drops_slow_consumer = c.drops_slow_consumer.load(kInSeqlock);
      a.drops_acl = c.drops_acl.load(kInSeqlock);
      a.drops_too_large = c.drops_too_large.load(kInSeqlock);
      a.drops_verify = c.drops_verify.load(kInSeqlock);
      a.subscriptions = c.subscriptions.load(kInSeqlock);
      a.pending_requests = c.pending_requests.load(kInSeqlock);
      a.inbound_high_water = c.inbound_high_water.load(kInSeqlock);
      a.inbound_depth = c.inbound_depth.load(kInSeqlock);
      a.outbound_depth = c.outbound_depth.load(kInSeqlock);
      a.slow_waiting_bytes = c.slow_waiting_bytes.load(kInSeqlock);
      a.outbound_high_water = c.outbound_high_water.load(kInSeqlock);
    });
    if (ok && (a.state == SlotState::Active || a.state == SlotState::Dead)) out.push_back(std::move(a));
  }
  return out;
}

std::vector<PatternSnapshot> CountersView::patterns() const {
  std::vector<PatternSnapshot> out;
  for (uint32_t i = 0; i <= info_.max_patterns; ++i) {
    const auto* s = reinterpret_cast<const PatternSlot*>(base_ + patterns_offset_ + uint64_t{i} * pattern_stride_);
    const bool overflow_slot = i == info_.max_patterns;
    const auto state = static_cast<SlotState>(s->state.load(kRelaxed));
    if (state != (overflow_slot ? SlotState::Overflow : SlotState::Active)) continue;
    PatternSnapshot p;
    p.slot = i;
    p.overflow = overflow_slot;
    SlotState seen = SlotState::Free;
    const auto& c = s->counters;
    const bool ok = seqlock_read(*s, p.generation, [&] {
      seen = static_cast<SlotState>(s->state.load(kInSeqlock));
      if (!overflow_slot) p.pattern = load_string(s->pattern);
      p.subscribers = c.subscribers.load(kInSeqlock);
      p.messages = c.messages.load(kInSeqlock);
      p.bytes = c.bytes.load(kInSeqlock);
      p.drops = c.drops.load(kInSeqlock);
    });
    if (!ok || seen != state) continue;
    // The overflow slot is listed only once something went there.
    if (overflow_slot && p.subscribers == 0 && p.messages == 0 && p.drops == 0) continue;
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<LaneSnapshot> CountersView::lanes() const {
  std::vector<LaneSnapshot> out;
  for (uint32_t i = 0; i < info_.max_lanes; ++i) {
    const auto* s = reinterpret_cast<const LaneSlot*>(base_ + lanes_offset_ + uint64_t{i} * lane_stride_);
    const auto state = static_cast<SlotState>(s->state.load(kRelaxed));
    if (state != SlotState::Active && state != SlotState::Closed) continue;
    LaneSnapshot l;
    l.slot = i;
    SlotState seen = SlotState::Free;
    const auto& c = s->counters;
    const bool ok = seqlock_read(*s, l.generation, [&] {
      seen = static_cast<SlotState>(s->state.load(kInSeqlock));
      l.lane_id = s->lane_id.load(kInSeqlock);
      l.opened_ns = s->opened_ns.load(kInSeqlock);
      for (size_t side = 0; side < 2; ++side) {
        l.agent_id[side] = s->agent_id[side].load(kInSeqlock);
        l.name[side] = load_string(s->name[side]);
        l.messages[side] = c.messages[side].load(kInSeqlock);
        l.bytes[side] = c.bytes[side].load(kInSeqlock);
        l.would_block[side] = c.would_block[side].load(kInSeqlock);
      }
    });
    if (!ok || (seen != SlotState::Active && seen != SlotState::Closed)) continue;
    l.open = seen == SlotState::Active;
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<LinkSnapshot> CountersView::links() const {
  std::vector<LinkSnapshot> out;
  for (uint32_t i = 0; i < info_.max_links; ++i) {
    const auto* s = reinterpret_cast<const LinkSlot*>(base_ + links_offset_ + uint64_t{i} * link_stride_);
    const auto state = static_cast<SlotState>(s->state.load(kRelaxed));
    if (state != SlotState::Active && state != SlotState::Closed) continue;
    LinkSnapshot l;
    l.slot = i;
    SlotState seen = SlotState::Free;
    uint32_t kind = 0;
    const auto& c = s->counters;
    const bool ok = seqlock_read(*s, l.generation, [&] {
      seen = static_cast<SlotState>(s->state.load(kInSeqlock));
      kind = s->kind.load(kInSeqlock);
      l.opened_ns = s->opened_ns.load(kInSeqlock);
      l.node = load_string(s->node);
      l.address = load_string(s->address);
      l.up = c.up.load(kInSeqlock) != 0;
      l.messages_out = c.messages_out.load(kInSeqlock);
      l.messages_in = c.messages_in.load(kInSeqlock);
      l.bytes_out = c.bytes_out.load(kInSeqlock);
      l.bytes_in = c.bytes_in.load(kInSeqlock);
      l.drops_held_full = c.drops_held_full.load(kInSeqlock);
      l.drops_acl = c.drops_acl.load(kInSeqlock);
      l.held_bytes = c.held_bytes.load(kInSeqlock);
      l.held_high_water = c.held_high_water.load(kInSeqlock);
      l.connects = c.connects.load(kInSeqlock);
      l.disconnects = c.disconnects.load(kInSeqlock);
      l.retransmits = c.retransmits.load(kInSeqlock);
      l.naks = c.naks.load(kInSeqlock);
      l.datagrams_corrupt = c.datagrams_corrupt.load(kInSeqlock);
      l.datagrams_dropped = c.datagrams_dropped.load(kInSeqlock);
      l.rtt_ns = c.rtt_ns.load(kInSeqlock);
      l.interests = c.interests.load(kInSeqlock);
      l.remote_agents = c.remote_agents.load(kInSeqlock);
      l.doorbells = c.doorbells.load(kInSeqlock);
      l.credit_stalls = c.credit_stalls.load(kInSeqlock);
      l.queue_stalls = c.queue_stalls.load(kInSeqlock);
      l.completion_errors = c.completion_errors.load(kInSeqlock);
    });
    if (!ok || (seen != SlotState::Active && seen != SlotState::Closed)) continue;
    l.open = seen == SlotState::Active;
    l.kind = kind <= static_cast<uint32_t>(LinkKind::Rdma) ? static_cast<LinkKind>(kind) : LinkKind::Unknown;
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<HistogramSnapshot> CountersView::histograms() const {
  std::vector<HistogramSnapshot> out(info_.histogram_count);
  for (uint32_t i = 0; i < info_.histogram_count; ++i) {
    const auto* s =
        reinterpret_cast<const HistogramSlot*>(base_ + histograms_offset_ + uint64_t{i} * histogram_stride_);
    HistogramSnapshot& h = out[i];
    h.name = i < kHistCount ? std::string(kHists[i].name) : "histogram_" + std::to_string(i);
    h.count = s->count.load(kRelaxed);
    h.sum_ns = s->sum_ns.load(kRelaxed);
    h.max_ns = s->max_ns.load(kRelaxed);
    for (uint32_t b = 0; b < kHistBuckets; ++b) h.buckets[b] = s->buckets[b].load(kRelaxed);
  }
  return out;
}

uint64_t HistogramSnapshot::total() const noexcept {
  uint64_t n = 0;
  for (uint64_t b : buckets) n += b;
  return n;
}

uint64_t HistogramSnapshot::quantile(double q) const noexcept {
  const uint64_t n = total();
  if (n == 0) return 0;
  if (!(q > 0)) q = 0;  // NaN too
  if (q > 1) q = 1;
  // The rank of the value at q (1-based), then the bucket where the running count reaches it.
  // Clamped in double before the conversion: n near 2^64 (a damaged page) must not overflow it.
  const double want = std::ceil(q * static_cast<double>(n));
  const uint64_t rank = want < 1.0                            ? 1
                        : want >= static_cast<double>(n) ? n
                                                              : static_cast<uint64_t>(want);
  // The spare buckets count as the last one (busd never writes them): the answer stays
  // non-decreasing in q whatever the page holds. seen ends at n, so the loop always answers.
  uint64_t seen = 0, high = ~uint64_t{0};
  for (uint32_t b = 0; b < kHistBuckets; ++b) {
    seen += buckets[b];
    if (seen >= rank) {
      high = b < kHistBucketsUsed ? hist_bucket_high(b) : ~uint64_t{0};
      break;
    }
  }
  return max_ns != 0 && max_ns < high ? max_ns : high;
}

HistogramSnapshot HistogramSnapshot::since(const HistogramSnapshot& before) const noexcept {
  HistogramSnapshot d;
  d.name = name;
  d.count = count >= before.count ? count - before.count : 0;
  d.sum_ns = sum_ns >= before.sum_ns ? sum_ns - before.sum_ns : 0;
  uint32_t top = 0;
  for (uint32_t b = 0; b < kHistBuckets; ++b) {
    d.buckets[b] = buckets[b] >= before.buckets[b] ? buckets[b] - before.buckets[b] : 0;
    if (d.buckets[b] != 0 && b < kHistBucketsUsed) top = b;
  }
  const uint64_t high = d.total() == 0 ? 0 : hist_bucket_high(top);
  d.max_ns = max_ns != 0 && max_ns < high ? max_ns : high;
  return d;
}

Expected<CountersView> open_counters(const std::string& path) {
  // O_NONBLOCK: a FIFO planted at the path must not hang the tool (refused below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return tl::unexpected(system_error("opening counters page " + path, errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return tl::unexpected(system_error("fstat of counters page " + path, e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(Errc::Corrupt, "counters page " + path + " is not a regular file");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size < sizeof(PageHeader)) {
    ::close(fd);
    return fail(Errc::Corrupt, "counters page " + path + " has " + std::to_string(size) +
                                   " bytes, less than its " + std::to_string(sizeof(PageHeader)) +
                                   "-byte header");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) return tl::unexpected(system_error("mapping counters page " + path, e));
  auto v = CountersView::from_bytes({static_cast<const std::byte*>(p), size});
  if (!v) {
    ::munmap(p, size);
    v.error().context("counters page " + path);
    return v;
  }
  v->owned_ = true;
  return v;
}

}  // namespace bus::counters
