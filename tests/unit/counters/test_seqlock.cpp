// A reader racing the writer never sees a torn name, pattern or lane: the writer keeps reusing slots
// with names of different lengths and letters while a reader thread snapshots (also a TSan
// target: every shared access is atomic).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "counters/page.hpp"
#include "temp_dir.hpp"
#include "../../support/scale.hpp"

using namespace bus;
using namespace bus::counters;

TEST_CASE("names and patterns are never torn while slots are reused", "[counters][seqlock]") {
  bus::test::TempDir dir;
  const std::string path = dir.file("c");
  auto page = CountersPage::create(path, 2, 2, 2);
  REQUIRE(page);
  auto view = open_counters(path);
  REQUIRE(view);

  auto name_of = [](uint64_t i) { return std::string(1 + i % 64, static_cast<char>('a' + i % 26)); };
  auto valid = [](const std::string& s, size_t max) {
    if (s.empty() || s.size() > max) return false;
    for (char c : s) {
      if (c != s[0]) return false;
    }
    return true;
  };

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn{0}, seen{0}, passes{0};
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      passes.fetch_add(1, std::memory_order_relaxed);
      for (const auto& a : view->agents()) {
        seen.fetch_add(1, std::memory_order_relaxed);
        // The writer opens agent i with name_of(i) and messages_in = 0 (zeroed in the same
        // seqlock write): a consistent copy has a uniform name of the right length.
        if (!valid(a.name, kNameSize) || a.name.size() != 1 + a.agent_id % 64 ||
            a.name[0] != static_cast<char>('a' + a.agent_id % 26)) {
          torn.fetch_add(1, std::memory_order_relaxed);
        }
      }
      for (const auto& p : view->patterns()) {
        if (!p.overflow && !valid(p.pattern, kPatternSize)) torn.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });

  // At least `rounds` slot reuses, and on until the reader made 2000 passes over the tables
  // (30 s at most: a starved reader thread on a loaded machine).
  const uint64_t rounds = bus::test::scaled(200'000);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (uint64_t i = 0; i < rounds || (passes.load(std::memory_order_relaxed) < 2000 &&
                                      std::chrono::steady_clock::now() < deadline);
       ++i) {
    AgentCounters* a = page->agent_open(static_cast<uint32_t>(i), name_of(i), 1, 0, 0);
    REQUIRE(a != nullptr);
    message_in(*a, 1);
    const std::string pat(1 + i % 128, static_cast<char>('A' + i % 26));
    (void)page->pattern_open(pat);
    page->agent_close(a);
    page->pattern_close(pat);
  }
  // Leave one agent in place so the reader certainly sees some.
  REQUIRE(page->agent_open(5, name_of(5), 1, 0, 0) != nullptr);
  while (seen.load() == 0) std::this_thread::yield();
  stop = true;
  reader.join();
  INFO("reader passes: " << passes.load() << ", agent snapshots: " << seen.load());
  CHECK(torn.load() == 0);
}

TEST_CASE("a lane's agents and names are never torn while lane slots are reused",
          "[counters][seqlock][lanes]") {
  bus::test::TempDir dir;
  const std::string path = dir.file("c");
  auto page = CountersPage::create(path, 1, 1, 2);
  REQUIRE(page);
  auto view = open_counters(path);
  REQUIRE(view);

  // Lane i joins agents i and i + 1, named by their ids: a consistent copy agrees with lane_id.
  auto name_of = [](uint64_t id) { return std::string(1 + id % 64, static_cast<char>('a' + id % 26)); };
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn{0}, seen{0}, passes{0};
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      passes.fetch_add(1, std::memory_order_relaxed);
      for (const auto& l : view->lanes()) {
        seen.fetch_add(1, std::memory_order_relaxed);
        if (l.agent_id[0] != l.lane_id || l.agent_id[1] != l.lane_id + 1 ||
            l.name[0] != name_of(l.lane_id) || l.name[1] != name_of(l.lane_id + 1)) {
          torn.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
  });

  const uint64_t rounds = bus::test::scaled(200'000);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (uint64_t i = 0; i < rounds || (passes.load(std::memory_order_relaxed) < 2000 &&
                                      std::chrono::steady_clock::now() < deadline);
       ++i) {
    const auto id = static_cast<uint32_t>(i);
    LaneCounters* l = page->lane_open(id, id, name_of(id), id + 1, name_of(id + 1));
    REQUIRE(l != nullptr);
    page->lane_set(l, 0, i, i, 0);
    page->lane_close(l);
  }
  REQUIRE(page->lane_open(5, 5, name_of(5), 6, name_of(6)) != nullptr);
  while (seen.load() == 0) std::this_thread::yield();
  stop = true;
  reader.join();
  INFO("reader passes: " << passes.load() << ", lane snapshots: " << seen.load());
  CHECK(torn.load() == 0);
}
