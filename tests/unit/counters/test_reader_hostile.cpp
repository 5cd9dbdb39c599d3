// The reader is a decoder of bytes another process writes: a damaged or hostile page gives a
// clear error, never a crash or a read outside the mapping (run under ASan+UBSan too).
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

#include "counters/page.hpp"
#include "temp_dir.hpp"
#include "../../support/scale.hpp"

using namespace bus;
using namespace bus::counters;
using bus::test::TempDir;

namespace {

struct FreeDeleter {
  void operator()(std::byte* p) const noexcept { std::free(p); }
};

// A page image in heap memory, 4096-aligned like a mapping, exactly `size` bytes long (ASan
// catches any read past it).
class Image {
 public:
  explicit Image(size_t size) : size_(size) {
    const size_t alloc = (size + 4095) / 4096 * 4096;
    mem_.reset(static_cast<std::byte*>(std::aligned_alloc(4096, alloc == 0 ? 4096 : alloc)));
    std::memset(mem_.get(), 0, size);
  }
  Image(const std::byte* src, size_t size) : Image(size) { std::memcpy(mem_.get(), src, size); }
  [[nodiscard]] std::byte* data() const { return mem_.get(); }
  [[nodiscard]] size_t size() const { return size_; }
  [[nodiscard]] PageHeader& header() const { return *reinterpret_cast<PageHeader*>(mem_.get()); }
  [[nodiscard]] std::span<const std::byte> bytes(size_t n) const { return {mem_.get(), n}; }
  [[nodiscard]] std::span<const std::byte> bytes() const { return bytes(size_); }

 private:
  std::unique_ptr<std::byte, FreeDeleter> mem_;
  size_t size_;
};

// A realistic page: a few agents, patterns and lanes, read back from the file busd wrote.
// With max_links > 0, a link table after the lanes with one peer in it.
Image valid_image(const TempDir& dir, uint32_t max_links = 0) {
  const std::string path = dir.file("valid");
  auto page = CountersPage::create(path, 4, 3, 3, 0644, max_links);
  REQUIRE(page);
  page->add(Global::messages_in, 7);
  AgentCounters* a = page->agent_open(1, "alpha", 100, 1, 1);
  REQUIRE(a != nullptr);
  message_in(*a, 9);
  AgentCounters* b = page->agent_open(2, std::string(64, 'b'), 101, 2, 2);
  page->agent_dead(b);
  (void)page->pattern_open("x.>");
  (void)page->pattern_open("y");
  for (int i = 0; i < 3; ++i) (void)page->pattern_open("overflow" + std::to_string(i));
  LaneCounters* l = page->lane_open(5, 1, "alpha", 2, std::string(64, 'b'));
  REQUIRE(l != nullptr);
  page->lane_set(l, 0, 11, 1100, 1);
  LaneCounters* closed = page->lane_open(6, 1, "alpha", 3, "gamma");
  REQUIRE(closed != nullptr);
  page->lane_close(closed);
  if (max_links > 0) {
    LinkCounters* k = page->link_open(LinkKind::Tcp, "", "10.0.0.2:7400");
    REQUIRE(k != nullptr);
    page->link_rename(k, "b");
    bump(k->messages_out, 3);
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(buf.size() == page_size(4, 3, 3, max_links));
  return Image(reinterpret_cast<const std::byte*>(buf.data()), buf.size());
}

// Everything a tool would do with a view; nothing may crash, and strings stay in bounds.
void exercise(const CountersView& v) {
  (void)v.globals();
  (void)v.live(0);
  (void)v.live(UINT64_MAX);
  (void)v.generation();
  for (const auto& a : v.agents()) {
    CHECK(a.name.size() <= kNameSize);
    CHECK(a.slot < v.info().max_agents);
  }
  for (const auto& p : v.patterns()) {
    CHECK(p.pattern.size() <= kPatternSize);
    CHECK(p.slot <= v.info().max_patterns);
  }
  const auto lanes = v.lanes();
  CHECK(lanes.size() <= v.info().max_lanes);
  for (const auto& l : lanes) {
    CHECK(l.name[0].size() <= kNameSize);
    CHECK(l.name[1].size() <= kNameSize);
    CHECK(l.slot < v.info().max_lanes);
  }
  const auto links = v.links();
  CHECK(links.size() <= v.info().max_links);
  for (const auto& l : links) {
    CHECK(l.node.size() <= kNameSize);
    CHECK(l.address.size() <= kNameSize);
    CHECK(l.slot < v.info().max_links);
  }
  CHECK(v.info().busd_version.size() <= kVersionSize);
  const auto hists = v.histograms();
  CHECK(hists.size() == v.info().histogram_count);
  for (const auto& h : hists) (void)h.quantile(0.99);
}

std::string error_of(const Image& img, size_t n) {
  auto v = CountersView::from_bytes(img.bytes(n));
  REQUIRE_FALSE(v);
  return v.error().message();
}

}  // namespace

TEST_CASE("the valid image decodes", "[counters][hostile]") {
  TempDir dir;
  Image img = valid_image(dir);
  auto v = CountersView::from_bytes(img.bytes());
  REQUIRE(v);
  CHECK(v->globals()[Global::messages_in] == 7);
  REQUIRE(v->agents().size() == 2);
  CHECK(v->patterns().size() == 4);  // x.>, y, overflow0, and the overflow slot (the rest)
  const auto lanes = v->lanes();
  REQUIRE(lanes.size() == 2);
  CHECK(lanes[0].open);
  CHECK(lanes[0].messages[0] == 11);
  CHECK(lanes[0].name[1] == std::string(64, 'b'));
  CHECK_FALSE(lanes[1].open);
  CHECK(lanes[1].name[1] == "gamma");
  exercise(*v);
}

TEST_CASE("damaged headers give clear errors", "[counters][hostile]") {
  TempDir dir;
  const Image good = valid_image(dir);
  // Without the histograms (as a page from before them): the lane table is last, the table the
  // sections below grow past the page's end. The histograms' own checks are further down.
  auto fresh = [&] {
    Image img(good.data(), good.size() - kHistCount * sizeof(HistogramSlot));
    img.header().histogram_count = 0;
    img.header().histograms_offset = 0;
    img.header().page_size = img.size();
    return img;
  };

  SECTION("shorter than the header") {
    Image img = fresh();
    CHECK_THAT(error_of(img, 0), Catch::Contains("less than its 256-byte header"));
    CHECK_THAT(error_of(img, 255), Catch::Contains("255 bytes"));
  }
  SECTION("bad magic") {
    Image img = fresh();
    img.header().magic.store(0x1122334455667788ull);
    CHECK_THAT(error_of(img, img.size()), Catch::Contains("not a busd counters page") &&
                                               Catch::Contains("0x1122334455667788"));
  }
  SECTION("not initialised yet") {
    Image img = fresh();
    img.header().magic.store(0);
    CHECK_THAT(error_of(img, img.size()), Catch::Contains("not initialised"));
  }
  SECTION("another layout version") {
    Image img = fresh();
    img.header().layout_version = 2;
    auto v = CountersView::from_bytes(img.bytes());
    REQUIRE_FALSE(v);
    CHECK(v.error().code() == Errc::VersionMismatch);
    CHECK_THAT(v.error().message(), Catch::Contains("version 2"));
  }
  SECTION("file shorter than the header claims") {
    Image img = fresh();
    CHECK_THAT(error_of(img, img.size() - 1),
               Catch::Contains("has " + std::to_string(img.size() - 1) + " bytes") &&
                   Catch::Contains("header says " + std::to_string(img.size())));
    CHECK_THAT(error_of(img, 256), Catch::Contains("header says"));
  }
  SECTION("page_size beyond the file") {
    Image img = fresh();
    img.header().page_size = UINT64_MAX;
    CHECK_THAT(error_of(img, img.size()), Catch::Contains("header says"));
  }
  SECTION("header_size out of range") {
    for (uint32_t hs : {0u, 100u, 257u, 0xFFFFFFC0u}) {
      Image img = fresh();
      img.header().header_size = hs;
      CHECK_THAT(error_of(img, img.size()), Catch::Contains("header_size"));
    }
  }
  SECTION("offsets past the end, wrapping or misaligned") {
    for (uint64_t off : {uint64_t{1} << 40, UINT64_MAX - 63, good.size() + 64, uint64_t{0},
                         uint64_t{64}, uint64_t{kAgentsOffset + 8}}) {
      Image img = fresh();
      img.header().agents_offset = off;
      CHECK_THAT(error_of(img, img.size()), Catch::Contains("agents table"));
      Image img2 = fresh();
      img2.header().patterns_offset = off;
      CHECK_THAT(error_of(img2, img2.size()), Catch::Contains("patterns table"));
      Image img3 = fresh();
      img3.header().globals_offset = off;
      CHECK_THAT(error_of(img3, img3.size()), Catch::Contains("globals table"));
      Image img4 = fresh();
      img4.header().lanes_offset = off;
      CHECK_THAT(error_of(img4, img4.size()), Catch::Contains("lanes table"));
    }
    // Inside the page and aligned, but over another table.
    Image img = fresh();
    img.header().lanes_offset = img.header().patterns_offset;
    CHECK_THAT(error_of(img, img.size()), Catch::Contains("overlap"));
    Image img2 = fresh();
    img2.header().lanes_offset = img2.header().lanes_offset + 64;  // its last 64 bytes past the end
    CHECK_THAT(error_of(img2, img2.size()), Catch::Contains("lanes table"));
  }
  SECTION("a lane table larger than the file") {
    Image img = fresh();
    img.header().max_lanes = 4;  // one slot more than the page holds
    CHECK_THAT(error_of(img, img.size()), Catch::Contains("lanes table") &&
                                               Catch::Contains("(4 x 256 bytes)"));
    Image huge = fresh();
    huge.header().max_lanes = kMaxTableSlots;
    CHECK_THAT(error_of(huge, huge.size()), Catch::Contains("lanes table"));
    Image over = fresh();
    over.header().max_lanes = kMaxTableSlots + 1;
    CHECK_THAT(error_of(over, over.size()), Catch::Contains("exceed"));
    Image wide = fresh();
    wide.header().max_lanes = UINT32_MAX;
    CHECK_THAT(error_of(wide, wide.size()), Catch::Contains("exceed"));
    // A file cut inside the lane table.
    Image cut = fresh();
    cut.header().page_size = cut.size() - 256;
    CHECK_THAT(error_of(cut, cut.size() - 256), Catch::Contains("lanes table"));
    CHECK_THAT(error_of(cut, cut.size() - 257), Catch::Contains("header says"));
  }
  SECTION("no lane table (a page from a busd before lanes): offset and stride are not read") {
    Image img = fresh();
    img.header().max_lanes = 0;
    img.header().lanes_offset = UINT64_MAX;
    img.header().lane_stride = 3;
    auto v = CountersView::from_bytes(img.bytes());
    REQUIRE(v);
    CHECK(v->info().max_lanes == 0);
    CHECK(v->lanes().empty());
    exercise(*v);
  }
  SECTION("tables larger than the page") {
    Image img = fresh();
    img.header().max_agents = 100;
    CHECK_THAT(error_of(img, img.size()), Catch::Contains("agents table"));
    Image over = fresh();
    over.header().max_agents = 5;  // runs into the pattern table
    CHECK_THAT(error_of(over, over.size()), Catch::Contains("overlap"));
    Image over2 = fresh();
    over2.header().patterns_offset = over2.header().agents_offset;
    CHECK_THAT(error_of(over2, over2.size()), Catch::Contains("overlap"));
    Image img2 = fresh();
    img2.header().max_patterns = kMaxTableSlots + 1;
    CHECK_THAT(error_of(img2, img2.size()), Catch::Contains("exceed"));
    Image img3 = fresh();
    img3.header().global_count = 1000;
    CHECK_THAT(error_of(img3, img3.size()), Catch::Contains("globals table"));
  }
  SECTION("strides") {
    for (uint32_t st : {0u, 8u, 255u, 257u, 1u << 17}) {
      Image img = fresh();
      img.header().agent_stride = st;
      CHECK_THAT(error_of(img, img.size()), Catch::Contains("strides"));
      Image img2 = fresh();
      img2.header().lane_stride = st;
      CHECK_THAT(error_of(img2, img2.size()), Catch::Contains("strides"));
    }
    Image img = fresh();
    img.header().lane_stride = 512;  // a larger stride is fine, if the table still fits: not here
    CHECK_THAT(error_of(img, img.size()), Catch::Contains("lanes table"));
  }
}

TEST_CASE("room to grow: larger strides, headers and more globals are accepted",
          "[counters][hostile]") {
  // A v1 page from a newer busd: a 512-byte header, 40 globals, 320-byte agent and lane slots.
  const uint32_t agents = 2, patterns = 1, lanes = 2;
  const uint64_t globals_off = 512, agents_off = globals_off + 40 * 128;
  const uint64_t patterns_off = agents_off + agents * 320;
  const uint64_t lanes_off = patterns_off + (patterns + 1) * 256;
  const uint64_t size = lanes_off + lanes * 320;
  Image img(size);
  PageHeader& h = img.header();
  h.layout_version = 1;
  h.header_size = 512;
  h.page_size = size;
  h.pid = 77;
  std::memcpy(h.busd_version, "9.9.9-with-a-version-of-32-bytes", 32);  // no NUL
  h.global_count = 40;
  h.global_stride = 128;
  h.max_agents = agents;
  h.agent_stride = 320;
  h.max_patterns = patterns;
  h.pattern_stride = 256;
  h.globals_offset = globals_off;
  h.agents_offset = agents_off;
  h.patterns_offset = patterns_off;
  h.max_lanes = lanes;
  h.lane_stride = 320;
  h.lanes_offset = lanes_off;
  h.magic.store(kMagic);
  auto* g = reinterpret_cast<GlobalCell*>(img.data() + globals_off);
  g[static_cast<size_t>(Global::config_reload_failures)].value.store(5);
  g[39].value.store(99);  // a global this reader does not know
  auto* slot1 = reinterpret_cast<AgentSlot*>(img.data() + agents_off + 320);
  slot1->seq.store(2);
  slot1->state.store(static_cast<uint32_t>(SlotState::Active));
  slot1->agent_id.store(42);
  slot1->counters.messages_in.store(3);
  auto* lane1 = reinterpret_cast<LaneSlot*>(img.data() + lanes_off + 320);
  lane1->seq.store(4);
  lane1->state.store(static_cast<uint32_t>(SlotState::Closed));
  lane1->lane_id.store(8);
  lane1->counters.would_block[1].store(6);

  auto v = CountersView::from_bytes(img.bytes());
  REQUIRE(v);
  CHECK(v->info().pid == 77);
  CHECK(v->info().busd_version == "9.9.9-with-a-version-of-32-bytes");
  CHECK(v->globals()[Global::config_reload_failures] == 5);
  const auto a = v->agents();
  REQUIRE(a.size() == 1);
  CHECK(a[0].slot == 1);
  CHECK(a[0].agent_id == 42);
  CHECK(a[0].messages_in == 3);
  CHECK(a[0].name.empty());
  const auto l = v->lanes();
  REQUIRE(l.size() == 1);
  CHECK(l[0].slot == 1);
  CHECK(l[0].lane_id == 8);
  CHECK_FALSE(l[0].open);
  CHECK(l[0].would_block[1] == 6);
  CHECK(l[0].generation == 4);
  CHECK(v->histograms().empty());  // histogram_count 0: a page from before them
}

TEST_CASE("a slot left odd (a writer that died mid-update) is skipped, not waited for",
          "[counters][hostile]") {
  TempDir dir;
  Image img = valid_image(dir);
  auto v = CountersView::from_bytes(img.bytes());
  REQUIRE(v);
  REQUIRE(v->agents().size() == 2);
  auto* slot0 = reinterpret_cast<AgentSlot*>(img.data() + kAgentsOffset);
  slot0->seq.store(slot0->seq.load() + 1);
  const auto agents = v->agents();
  REQUIRE(agents.size() == 1);
  CHECK(agents[0].slot == 1);
}

TEST_CASE("lane slots with a garbage state or left odd are skipped", "[counters][hostile]") {
  TempDir dir;
  Image img = valid_image(dir);
  auto v = CountersView::from_bytes(img.bytes());
  REQUIRE(v);
  REQUIRE(v->lanes().size() == 2);
  auto* slots = reinterpret_cast<LaneSlot*>(img.data() + img.header().lanes_offset);
  for (uint32_t garbage : {static_cast<uint32_t>(SlotState::Overflow), static_cast<uint32_t>(SlotState::Dead),
                           5u, 0xFFFFFFFFu}) {
    slots[0].state.store(garbage);
    const auto lanes = v->lanes();
    REQUIRE(lanes.size() == 1);
    CHECK(lanes[0].slot == 1);
  }
  slots[0].state.store(static_cast<uint32_t>(SlotState::Active));
  REQUIRE(v->lanes().size() == 2);
  slots[1].seq.store(slots[1].seq.load() + 1);  // a writer that died mid-update
  const auto lanes = v->lanes();
  REQUIRE(lanes.size() == 1);
  CHECK(lanes[0].slot == 0);
  // Names with no NUL in either 64-byte field stay within 64 bytes each.
  std::memset(static_cast<void*>(&slots[0].name), 'z', sizeof slots[0].name);
  const auto named = v->lanes();
  REQUIRE(named.size() == 1);
  CHECK(named[0].name[0] == std::string(64, 'z'));
  CHECK(named[0].name[1] == std::string(64, 'z'));
  // The unused third slot, made to look open: listed, within the table.
  slots[2].state.store(static_cast<uint32_t>(SlotState::Active));
  CHECK(v->lanes().size() == 2);
}

TEST_CASE("link slots: read back; a garbage state, a slot left odd or a table outside the page", "[counters][hostile]") {
  TempDir dir;
  Image img = valid_image(dir, 2);
  auto v = CountersView::from_bytes(img.bytes());
  REQUIRE(v);
  auto links = v->links();
  REQUIRE(links.size() == 1);
  CHECK(links[0].node == "b");
  CHECK(links[0].address == "10.0.0.2:7400");
  CHECK(links[0].kind == LinkKind::Tcp);
  CHECK(links[0].messages_out == 3);
  auto* slots = reinterpret_cast<LinkSlot*>(img.data() + img.header().links_offset);
  slots[0].kind.store(99);  // an unknown kind reads as Unknown
  CHECK(v->links().at(0).kind == LinkKind::Unknown);
  for (uint32_t garbage : {static_cast<uint32_t>(SlotState::Overflow), 7u, 0xFFFFFFFFu}) {
    slots[0].state.store(garbage);
    CHECK(v->links().empty());
  }
  slots[0].state.store(static_cast<uint32_t>(SlotState::Active));
  slots[0].seq.store(slots[0].seq.load() + 1);  // a writer that died mid-update
  CHECK(v->links().empty());
  slots[0].seq.store(slots[0].seq.load() + 1);
  std::memset(static_cast<void*>(&slots[0].node), 'n', sizeof slots[0].node + sizeof slots[0].address);
  links = v->links();
  REQUIRE(links.size() == 1);
  CHECK(links[0].node == std::string(64, 'n'));
  CHECK(links[0].address == std::string(64, 'n'));

  Image out(img.data(), img.size());
  out.header().links_offset = out.size() - 128;
  CHECK(error_of(out, out.size()).find("links table at") != std::string::npos);
  Image stride(img.data(), img.size());
  stride.header().link_stride = 100;  // not a multiple of 64
  CHECK(error_of(stride, stride.size()).find("strides") != std::string::npos);
  Image overlap(img.data(), img.size());
  overlap.header().links_offset = overlap.header().lanes_offset;
  CHECK(error_of(overlap, overlap.size()).find("overlap") != std::string::npos);
}

TEST_CASE("histograms: read back; a table outside the page, a bad stride or overlap is refused", "[counters][hostile]") {
  TempDir dir;
  Image img = valid_image(dir, 1);
  auto* slots = reinterpret_cast<HistogramSlot*>(img.data() + img.header().histograms_offset);
  slots[0].count.store(1);
  slots[0].buckets[hist_bucket(1500)].store(1);
  auto v = CountersView::from_bytes(img.bytes());
  REQUIRE(v);
  REQUIRE(v->histograms().size() == kHistCount);
  CHECK(v->histograms()[0].quantile(0.5) == hist_bucket_high(hist_bucket(1500)));
  // Garbage only in the spare buckets: no crash, counted as the last bucket, capped by max_ns.
  slots[1].buckets[kHistBuckets - 1].store(5);
  slots[1].max_ns.store(12);
  CHECK(v->histograms()[1].quantile(0.5) == 12);
  slots[1].max_ns.store(0);
  CHECK(v->histograms()[1].quantile(0.5) == ~uint64_t{0});
  // A total that wraps: still an answer, quantiles non-decreasing.
  slots[1].buckets[3].store(~uint64_t{0} - 1);
  const auto wrapped = v->histograms()[1];
  CHECK(wrapped.quantile(0.5) <= wrapped.quantile(0.99));
  // A total just below 2^64: the rank is clamped before it becomes an integer (UBSan: no overflow).
  slots[1].buckets[kHistBuckets - 1].store(0);
  slots[1].buckets[3].store(~uint64_t{0} - 1);
  slots[1].buckets[0].store(1);
  const auto huge = v->histograms()[1];
  CHECK(huge.total() == ~uint64_t{0});
  CHECK(huge.quantile(0.99) == 3);
  CHECK(huge.quantile(1.0) == 3);
  CHECK(huge.quantile(0.0) == 0);

  Image out(img.data(), img.size());
  out.header().histogram_count = 3;  // one more than fits in the page
  CHECK(error_of(out, out.size()).find("histograms table at") != std::string::npos);
  Image stride(img.data(), img.size());
  stride.header().histogram_stride = 64;  // smaller than a slot
  CHECK(error_of(stride, stride.size()).find("strides") != std::string::npos);
  Image overlap(img.data(), img.size());
  overlap.header().histograms_offset = overlap.header().links_offset;
  CHECK(error_of(overlap, overlap.size()).find("overlap") != std::string::npos);
  Image none(img.data(), img.size());
  none.header().histogram_count = 0;  // an older page: no histograms, offset ignored
  none.header().histograms_offset = 3;
  auto nv = CountersView::from_bytes(none.bytes());
  REQUIRE(nv);
  CHECK(nv->histograms().empty());
}

TEST_CASE("open_counters on files that are not pages", "[counters][hostile]") {
  TempDir dir;
  auto err = [](const std::string& p) {
    auto v = open_counters(p);
    REQUIRE_FALSE(v);
    INFO(v.error().message());
    CHECK_THAT(v.error().message(), Catch::Contains(p));
    return v.error().code();
  };
  CHECK(err(dir.file("missing")) == Errc::NotFound);
  CHECK(err(dir.path()) == Errc::Corrupt);  // a directory
  REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0600) == 0);
  CHECK(err(dir.file("fifo")) == Errc::Corrupt);  // refused, without waiting for a writer
  { std::ofstream(dir.file("empty")); }
  CHECK(err(dir.file("empty")) == Errc::Corrupt);
  { std::ofstream(dir.file("text")) << std::string(4096, 'z'); }
  CHECK(err(dir.file("text")) == Errc::Corrupt);

  // A real page cut short (as a full disk or a crash mid-ftruncate could leave it).
  const Image good = valid_image(dir);
  {
    std::ofstream out(dir.file("cut"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(good.data()), static_cast<std::streamsize>(good.size() / 2));
  }
  CHECK(err(dir.file("cut")) == Errc::Corrupt);
}

TEST_CASE("fuzz: random damage to a valid page never crashes the reader", "[counters][hostile]") {
  TempDir dir;
  const Image good = valid_image(dir);
  std::mt19937_64 rng(20261122);
  const uint64_t iterations = bus::test::scaled(20'000);
  uint64_t accepted = 0;
  for (uint64_t it = 0; it < iterations; ++it) {
    Image img(good.data(), good.size());
    auto* raw = reinterpret_cast<uint8_t*>(img.data());
    const int kind = static_cast<int>(rng() % 4);
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      if (kind == 0) {  // a byte anywhere in the header
        raw[rng() % 256] = static_cast<uint8_t>(rng());
      } else if (kind == 1) {  // a header field set to a boundary value
        static const uint64_t kVals[] = {0, 1, 63, 64, 255, 256, 4095, 4096, UINT32_MAX,
                                         UINT64_MAX, UINT64_MAX - 255, 1ull << 32, 1ull << 63};
        const uint64_t val = kVals[rng() % std::size(kVals)];
        // An 8-byte field after magic, or lane_stride's (at 144).
        const size_t field = rng() % 16 == 0 ? 144 : 8 + (rng() % 15) * 8;
        const size_t width = rng() % 2 == 0 ? 4 : 8;
        std::memcpy(raw + field + (width == 4 ? (rng() % 2) * 4 : 0), &val, width);
      } else if (kind == 2) {  // slots: seq, state, strings, counters
        raw[256 + rng() % (good.size() - 256)] = static_cast<uint8_t>(rng());
      } else {  // anywhere
        raw[rng() % good.size()] = static_cast<uint8_t>(rng());
      }
    }
    const size_t len = rng() % 8 == 0 ? rng() % (good.size() + 1) : good.size();
    auto v = CountersView::from_bytes(img.bytes(len));
    if (v) {
      ++accepted;
      exercise(*v);
    } else {
      CHECK(!v.error().message().empty());
    }
  }
  INFO("accepted " << accepted << " of " << iterations);
  CHECK(accepted > 0);  // the fuzzer reaches the table readers, not only the header checks
}

TEST_CASE("fuzz: random bytes with a valid magic and version", "[counters][hostile]") {
  std::mt19937_64 rng(7);
  const uint64_t iterations = bus::test::scaled(20'000);
  for (uint64_t it = 0; it < iterations; ++it) {
    const size_t size = 256 + rng() % 8192;
    Image img(size);
    auto* raw = reinterpret_cast<uint8_t*>(img.data());
    for (size_t i = 0; i < size; ++i) raw[i] = static_cast<uint8_t>(rng() % 4 == 0 ? rng() : 0);
    PageHeader& h = img.header();
    h.magic.store(kMagic);
    h.layout_version = kLayoutVersion;
    if (rng() % 2 == 0) {  // plausible geometry with random tables
      h.header_size = 256;
      h.page_size = size;
      h.global_stride = 128;
      h.agent_stride = 256;
      h.pattern_stride = 256;
      h.lane_stride = 256;
      h.global_count = static_cast<uint32_t>(rng() % 32);
      h.max_agents = static_cast<uint32_t>(rng() % 16);
      h.max_patterns = static_cast<uint32_t>(rng() % 16);
      h.globals_offset = 256;
      h.agents_offset = 256 + (rng() % 64) * 64;
      h.patterns_offset = 256 + (rng() % 64) * 64;
      h.max_lanes = static_cast<uint32_t>(rng() % 16);
      h.lanes_offset = 256 + (rng() % 64) * 64;
    }
    auto v = CountersView::from_bytes(img.bytes());
    if (v) exercise(*v);
  }
}
