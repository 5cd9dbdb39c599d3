// Fuzz target: the counters page reader (bus::counters::CountersView::from_bytes, then every
// accessor), the decoder busctl runs over a page another process writes.
//
// Input: [mode u8][page image...]. The image is copied into an exactly sized, 128-byte aligned
// block (as a mapping is aligned; ASan sees one byte too far). Mode bits:
//   1  force a valid magic and layout version, so the checks behind them are reached;
//   2  shape the header into a consistent one (tables from the image's own small counts), and
//      grow the image to the page size it then declares, so the tables' slots are walked;
//   4  after a successful open, overwrite the whole header with other input bytes (a writer
//      rewriting it) and read again: the view must only use the copies it checked.
// Properties: never a crash or a read outside the image; a page that opens has tables inside it;
// every snapshot is bounded: at most max_agents agents, max_patterns + 1 patterns, max_lanes
// lanes and max_links links, histogram_count histograms with quantiles non-decreasing in q, names at most 64 bytes, patterns at most 128, the version at most 32; only active/dead
// agents, the overflow pattern only in the last slot and without a name, lanes by slot.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "bus/counters.hpp"
#include "fuzz_check.hpp"

using namespace bus;
using namespace bus::counters;
using bus::fuzz::touch;
using bus::fuzz::touch_value;

namespace {

class AlignedImage {
 public:
  explicit AlignedImage(size_t size)
      : mem_(static_cast<std::byte*>(::operator new[](std::max<size_t>(size, 1), std::align_val_t{128}))),
        size_(size) {}
  ~AlignedImage() { ::operator delete[](mem_, std::align_val_t{128}); }
  AlignedImage(const AlignedImage&) = delete;
  AlignedImage& operator=(const AlignedImage&) = delete;
  std::byte* data() const noexcept { return mem_; }
  std::span<const std::byte> bytes() const noexcept { return {mem_, size_}; }

 private:
  std::byte* mem_;
  size_t size_;
};

template <class T>
void put(std::vector<uint8_t>& img, size_t off, T v) {
  std::memcpy(img.data() + off, &v, sizeof v);
}
template <class T>
T get(const std::vector<uint8_t>& img, size_t off) {
  T v;
  std::memcpy(&v, img.data() + off, sizeof v);
  return v;
}

// A header consistent with itself: small tables, in order, the page exactly as large as they are.
void shape(std::vector<uint8_t>& img) {
  if (img.size() < sizeof(PageHeader)) img.resize(sizeof(PageHeader), 0);
  const uint32_t globals = std::min<uint32_t>(get<uint32_t>(img, 72) % 64, 40);
  const uint32_t agents = get<uint32_t>(img, 80) % 9;
  const uint32_t patterns = get<uint32_t>(img, 88) % 9;
  const uint32_t lanes = get<uint32_t>(img, 28) % 9;
  const uint32_t links = get<uint32_t>(img, 148) % 5;
  const uint32_t hists = get<uint32_t>(img, 176) % 4;
  const uint64_t globals_off = sizeof(PageHeader);
  const uint64_t agents_off = globals_off + uint64_t{globals} * sizeof(GlobalCell);
  const uint64_t patterns_off = agents_off + uint64_t{agents} * sizeof(AgentSlot);
  const uint64_t lanes_off = patterns_off + (uint64_t{patterns} + 1) * sizeof(PatternSlot);
  const uint64_t links_off = lanes_off + uint64_t{lanes} * sizeof(LaneSlot);
  const uint64_t hists_off = links_off + uint64_t{links} * sizeof(LinkSlot);
  const uint64_t page = hists_off + uint64_t{hists} * sizeof(HistogramSlot);
  put<uint64_t>(img, 0, kMagic);
  put<uint32_t>(img, 8, kLayoutVersion);
  put<uint32_t>(img, 12, sizeof(PageHeader));
  put<uint64_t>(img, 16, page);
  put<uint32_t>(img, 72, globals);
  put<uint32_t>(img, 76, sizeof(GlobalCell));
  put<uint32_t>(img, 80, agents);
  put<uint32_t>(img, 84, sizeof(AgentSlot));
  put<uint32_t>(img, 88, patterns);
  put<uint32_t>(img, 92, sizeof(PatternSlot));
  put<uint64_t>(img, 96, globals_off);
  put<uint64_t>(img, 104, agents_off);
  put<uint64_t>(img, 112, patterns_off);
  put<uint32_t>(img, 28, lanes);
  put<uint64_t>(img, 120, lanes_off);
  put<uint32_t>(img, 144, sizeof(LaneSlot));
  put<uint32_t>(img, 148, links);
  put<uint64_t>(img, 152, links_off);
  put<uint32_t>(img, 160, sizeof(LinkSlot));
  put<uint64_t>(img, 168, hists_off);
  put<uint32_t>(img, 176, hists);
  put<uint32_t>(img, 180, sizeof(HistogramSlot));
  // Grow to the declared size by repeating the image (slots get varied, input-driven contents).
  const size_t had = img.size();
  while (img.size() < page) img.push_back(img[img.size() % had]);
}

void read_everything(const CountersView& v) {
  const PageInfo& info = v.info();
  FUZZ_CHECK(info.layout_version == kLayoutVersion);
  FUZZ_CHECK(info.busd_version.size() <= kVersionSize);
  FUZZ_CHECK(info.max_agents <= kMaxTableSlots && info.max_patterns <= kMaxTableSlots &&
             info.max_lanes <= kMaxTableSlots);
  touch(info.busd_version);
  touch_value(v.heartbeat_ns());
  touch_value(v.generation());
  touch_value(v.live(0));
  touch_value(v.live(UINT64_MAX));
  const GlobalSnapshot g = v.globals();
  for (uint64_t x : g.values) touch_value(x);

  const auto agents = v.agents();
  FUZZ_CHECK(agents.size() <= info.max_agents);
  uint32_t last_slot = 0;
  for (size_t i = 0; i < agents.size(); ++i) {
    const AgentSnapshot& a = agents[i];
    FUZZ_CHECK(a.slot < info.max_agents);
    FUZZ_CHECK(i == 0 || a.slot > last_slot);
    last_slot = a.slot;
    FUZZ_CHECK(a.state == SlotState::Active || a.state == SlotState::Dead);
    FUZZ_CHECK(a.name.size() <= kNameSize);
    FUZZ_CHECK(a.name.find('\0') == std::string::npos);
    FUZZ_CHECK(a.generation % 2 == 0);
    touch(a.name);
    touch_value(a.drops());
  }

  const auto patterns = v.patterns();
  FUZZ_CHECK(patterns.size() <= size_t{info.max_patterns} + 1);
  for (const PatternSnapshot& p : patterns) {
    FUZZ_CHECK(p.slot <= info.max_patterns);
    FUZZ_CHECK(p.overflow == (p.slot == info.max_patterns));
    FUZZ_CHECK(!p.overflow || p.pattern.empty());
    FUZZ_CHECK(p.pattern.size() <= kPatternSize);
    FUZZ_CHECK(p.pattern.find('\0') == std::string::npos);
    touch(p.pattern);
    touch_value(p.subscribers + p.messages + p.bytes + p.drops);
  }

  const auto lanes = v.lanes();
  FUZZ_CHECK(lanes.size() <= info.max_lanes);
  for (size_t i = 0; i < lanes.size(); ++i) {
    const LaneSnapshot& l = lanes[i];
    FUZZ_CHECK(l.slot < info.max_lanes);
    FUZZ_CHECK(i == 0 || l.slot > lanes[i - 1].slot);
    FUZZ_CHECK(l.generation % 2 == 0);
    for (size_t side = 0; side < 2; ++side) {
      FUZZ_CHECK(l.name[side].size() <= kNameSize);
      FUZZ_CHECK(l.name[side].find('\0') == std::string::npos);
      touch(l.name[side]);
      touch_value(l.agent_id[side] + l.messages[side] + l.bytes[side] + l.would_block[side]);
    }
    touch_value(l.open);
    touch_value(l.lane_id + l.opened_ns);
  }

  const auto links = v.links();
  FUZZ_CHECK(links.size() <= info.max_links);
  for (size_t i = 0; i < links.size(); ++i) {
    const LinkSnapshot& l = links[i];
    FUZZ_CHECK(l.slot < info.max_links);
    FUZZ_CHECK(i == 0 || l.slot > links[i - 1].slot);
    FUZZ_CHECK(l.generation % 2 == 0);
    FUZZ_CHECK(l.node.size() <= kNameSize && l.address.size() <= kNameSize);
    FUZZ_CHECK(l.node.find('\0') == std::string::npos && l.address.find('\0') == std::string::npos);
    FUZZ_CHECK(l.kind <= LinkKind::Rdma);
    touch(l.node);
    touch(l.address);
    touch_value(l.up + l.messages_in + l.messages_out + l.bytes_in + l.bytes_out + l.rtt_ns + l.held_bytes +
                l.retransmits + l.naks + l.interests + l.remote_agents + l.opened_ns);
  }

  const auto hists = v.histograms();
  FUZZ_CHECK(hists.size() == info.histogram_count);
  for (const HistogramSnapshot& h : hists) {
    FUZZ_CHECK(!h.name.empty());
    // Quantiles never decrease with q; an empty histogram answers 0.
    const uint64_t p50 = h.quantile(0.5), p99 = h.quantile(0.99), p100 = h.quantile(1.0);
    FUZZ_CHECK(p50 <= p99);
    FUZZ_CHECK(h.total() != 0 || (p50 == 0 && p99 == 0));
    touch_value(p100 + h.mean_ns() + h.since(h).total());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::vector<uint8_t> img(data + 1, data + size);
  if ((mode & 2) != 0) {
    shape(img);
  } else if ((mode & 1) != 0 && img.size() >= 12) {
    put<uint64_t>(img, 0, kMagic);
    put<uint32_t>(img, 8, kLayoutVersion);
  }
  AlignedImage page(img.size());
  if (!img.empty()) std::memcpy(page.data(), img.data(), img.size());

  auto v = CountersView::from_bytes(page.bytes());
  if (!v) {
    const Errc e = v.error().code();
    FUZZ_CHECK(e == Errc::Corrupt || e == Errc::VersionMismatch);
    touch(v.error().message());
    return 0;
  }
  FUZZ_CHECK(v->info().page_size <= img.size());
  read_everything(*v);

  if ((mode & 4) != 0) {
    // The writer rewrites the header (and the start of the tables) under the reader.
    const size_t n = std::min(img.size(), sizeof(PageHeader) + 128);
    for (size_t i = 0; i < n; ++i) page.data()[i] = static_cast<std::byte>(data[size - 1 - (i % size)] ^ 0x5A);
    read_everything(*v);
  }
  return 0;
}
