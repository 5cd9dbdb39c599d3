// Layout v1 of the counters page, checked at compile time (the header's static_asserts) and
// here: the numbers a reader in another language would hard-code.
#include <catch2/catch.hpp>

#include <cstring>

#include "bus/counters.hpp"

using namespace bus::counters;

static_assert(kGlobalCount == 43);
static_assert(sizeof(PageHeader) == 256 && alignof(PageHeader) == 128);
static_assert(sizeof(GlobalCell) == 128 && alignof(GlobalCell) == 128);
static_assert(sizeof(AgentSlot) == 256 && alignof(AgentSlot) == 64);
static_assert(sizeof(PatternSlot) == 256 && alignof(PatternSlot) == 64);
static_assert(sizeof(LaneSlot) == 256 && alignof(LaneSlot) == 64);
static_assert(offsetof(PageHeader, magic) == 0 && offsetof(PageHeader, layout_version) == 8 &&
              offsetof(PageHeader, header_size) == 12 && offsetof(PageHeader, page_size) == 16 &&
              offsetof(PageHeader, pid) == 24 && offsetof(PageHeader, start_time_ns) == 32 &&
              offsetof(PageHeader, max_agents) == 80 && offsetof(PageHeader, max_patterns) == 88 &&
              offsetof(PageHeader, agents_offset) == 104 && offsetof(PageHeader, max_lanes) == 28 &&
              offsetof(PageHeader, lanes_offset) == 120 && offsetof(PageHeader, lane_stride) == 144);
static_assert(offsetof(AgentSlot, seq) == 0 && offsetof(AgentSlot, agent_id) == 12 &&
              offsetof(AgentSlot, uid) == 20 && offsetof(AgentSlot, gid) == 24);
static_assert(offsetof(AgentCounters, messages_in) == 0 && offsetof(AgentCounters, bytes_out) == 24 &&
              offsetof(AgentCounters, drops_verify) == 56 && offsetof(AgentCounters, pending_requests) == 72 &&
              offsetof(AgentCounters, inbound_high_water) == 80);
static_assert(offsetof(PatternSlot, state) == 8 &&
              offsetof(PatternSlot, counters) + offsetof(PatternCounters, drops) == 216);
static_assert(offsetof(LaneSlot, seq) == 0 && offsetof(LaneSlot, state) == 8 &&
              offsetof(LaneSlot, name) + kNameSize == 96 &&  // name[1] at 96
              offsetof(LaneSlot, counters) + offsetof(LaneCounters, would_block) + 8 == 232);
static_assert(kGlobalsOffset == 256 && kAgentsOffset == 5760);
// The histograms come last: 2 of 64 + 256 * 8 = 2112 bytes.
static_assert(sizeof(HistogramSlot) == 2112 && kHistCount == 2);
static_assert(page_size(1, 1, 0) == 5760 + 256 + 2 * 256 + 2 * 2112);
static_assert(page_size(1, 1, 3) == 5760 + 256 + 2 * 256 + 3 * 256 + 2 * 2112);
static_assert(lanes_offset(1024, 4096) == 5760 + 1024 * 256 + 4097 * 256);
static_assert(page_size(1024, 4096, 4096) == 5760 + 1024 * 256 + 4097 * 256 + 4096 * 256 + 2 * 2112);
static_assert(histograms_offset(1, 1, 0, 2) == 5760 + 256 + 2 * 256 + 2 * 384 && histograms_offset(1, 1, 0, 2) % kCacheLine == 0);
// Every agent slot and the pattern and lane tables start on a 64-byte boundary (the slots'
// alignment).
static_assert(patterns_offset(3) % kCacheLine == 0 && kAgentsOffset % kCacheLine == 0 &&
              lanes_offset(3, 5) % kCacheLine == 0);

TEST_CASE("the magic spells !BUSCNTR in memory", "[counters][layout]") {
  char m[8];
  std::memcpy(m, &kMagic, 8);
  CHECK(std::string(m, 8) == "!BUSCNTR");
}

TEST_CASE("every global has a unique snake_case name and a help line", "[counters][layout]") {
  for (size_t i = 0; i < kGlobalCount; ++i) {
    const auto& g = kGlobals[i];
    INFO(g.name);
    CHECK(!g.name.empty());
    CHECK(!g.help.empty());
    for (char ch : g.name) CHECK(((ch >= 'a' && ch <= 'z') || ch == '_'));
    for (size_t j = i + 1; j < kGlobalCount; ++j) CHECK(g.name != kGlobals[j].name);
  }
  CHECK(global_info(Global::agents_connected).gauge);
  CHECK(global_info(Global::bytes_in).bytes);
  CHECK(global_info(Global::bytes_out).bytes);
  CHECK(global_info(Global::config_reload_failures).name == "config_reload_failures");
  CHECK(global_info(Global::lanes_open).gauge);
  CHECK_FALSE(global_info(Global::lanes_opened).gauge);
  CHECK(global_info(Global::lane_table_full).name == "lane_table_full");
  // Appended after the link globals: the indices a reader of an older page knows are unchanged.
  CHECK(static_cast<size_t>(Global::link_drops_no_route) == 28);
  CHECK(static_cast<size_t>(Global::lanes_open) == 29);
}

TEST_CASE("histogram buckets: every value in exactly one, contiguous, each at most 25% wide", "[counters][layout]") {
  // Contiguous: bucket i + 1 starts right after bucket i ends, from 0 up to 2^64 - 1.
  CHECK(hist_bucket_low(0) == 0);
  for (uint32_t i = 0; i + 1 < kHistBucketsUsed; ++i) {
    INFO("bucket " << i);
    REQUIRE(hist_bucket_high(i) + 1 == hist_bucket_low(i + 1));
    REQUIRE(hist_bucket_low(i) <= hist_bucket_high(i));
    // At most 25% wide (the first 8 hold one value each).
    if (i >= 8) CHECK((hist_bucket_high(i) - hist_bucket_low(i) + 1) * 4 <= hist_bucket_low(i));
    CHECK(hist_bucket(hist_bucket_low(i)) == i);
    CHECK(hist_bucket(hist_bucket_high(i)) == i);
  }
  CHECK(hist_bucket_high(kHistBucketsUsed - 1) == ~uint64_t{0});
  CHECK(hist_bucket(~uint64_t{0}) == kHistBucketsUsed - 1);
  // Powers of two (the Prometheus bucket bounds) start buckets 4 apart.
  for (uint32_t e = 2; e < 64; ++e) CHECK(hist_bucket(uint64_t{1} << e) == (e - 1) * 4);
  // Values in between: a pseudo-random sweep over every magnitude.
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int n = 0; n < 100000; ++n) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const uint64_t v = x >> (x % 64);
    const uint32_t b = hist_bucket(v);
    REQUIRE(b < kHistBucketsUsed);
    REQUIRE(hist_bucket_low(b) <= v);
    REQUIRE(v <= hist_bucket_high(b));
  }
}

TEST_CASE("every histogram has a unique snake_case name and a help line", "[counters][layout]") {
  for (size_t i = 0; i < kHistCount; ++i) {
    INFO(kHists[i].name);
    CHECK(!kHists[i].help.empty());
    for (char ch : kHists[i].name) CHECK(((ch >= 'a' && ch <= 'z') || ch == '_'));
    for (size_t j = i + 1; j < kHistCount; ++j) CHECK(kHists[i].name != kHists[j].name);
    for (const auto& g : kGlobals) CHECK(kHists[i].name != g.name);
  }
  CHECK(kHists[static_cast<size_t>(Hist::request_reply)].name == "request_reply");
  CHECK(kHists[static_cast<size_t>(Hist::link_rtt)].name == "link_rtt");
}
