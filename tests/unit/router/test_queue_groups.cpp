// Queue groups: interning with references, one member per group per message, round-robin
// fairness, and subscribers without a group get every message.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include "router/queue_groups.hpp"
#include "router/trie.hpp"
#include "router_test_util.hpp"

using namespace bus;
using namespace bus::router;

TEST_CASE("intern_group: ids, references, release and reuse", "[router]") {
  QueueGroups q;
  const auto w1 = q.intern_group("workers");
  REQUIRE(w1);
  CHECK(*w1 >= 1);
  CHECK(q.intern_group("workers").value() == *w1);  // a second member
  const auto p = q.intern_group("planners");
  REQUIRE(p);
  CHECK(*p != *w1);
  CHECK(q.find_group("workers") == *w1);
  CHECK(q.group_name(*w1) == "workers");
  CHECK(q.members(*w1) == 2);
  CHECK(q.group_count() == 2);

  CHECK(q.release_group(*w1));
  CHECK(q.find_group("workers") == *w1);  // one member left
  CHECK(q.release_group(*w1));
  CHECK(q.find_group("workers") == 0);
  CHECK(q.group_name(*w1).empty());
  CHECK(q.members(*w1) == 0);
  CHECK_FALSE(q.release_group(*w1));
  CHECK_FALSE(q.release_group(0));
  CHECK_FALSE(q.release_group(12345));
  CHECK(q.group_count() == 1);

  const auto again = q.intern_group("tools");
  REQUIRE(again);
  CHECK(*again == *w1);  // the freed id is reused
  CHECK(q.group_name(*again) == "tools");

  CHECK(q.intern_group("").error() == Errc::InvalidArgument);
  CHECK(q.intern_group("a b").error() == Errc::InvalidArgument);
  CHECK(q.intern_group(std::string(256, 'g')).error() == Errc::InvalidArgument);
  CHECK(q.intern_group(std::string(255, 'g')).has_value());
}

TEST_CASE("select: every plain subscriber, one member per group, round robin", "[router]") {
  QueueGroups q;
  const uint32_t workers = q.intern_group("workers").value();
  const uint32_t tools = q.intern_group("tools").value();
  SubjectTrie t;
  // Plain subscribers.
  REQUIRE(t.insert("jobs.>", {1, 1, 0}));
  REQUIRE(t.insert("jobs.*", {2, 1, 0}));
  // 5 workers in a group, through different patterns.
  for (uint32_t a = 10; a < 15; ++a) {
    REQUIRE(t.insert(a % 2 == 0 ? "jobs.*" : "jobs.new", {a, 1, workers}));
    if (a != 10) REQUIRE(q.intern_group("workers"));
  }
  // 3 tools.
  for (uint32_t a = 20; a < 23; ++a) {
    REQUIRE(t.insert("jobs.>", {a, 1, tools}));
    if (a != 20) REQUIRE(q.intern_group("tools"));
  }

  constexpr int kRounds = 7;
  std::map<uint32_t, int> got;
  std::vector<SubRef> matches;
  std::vector<SubRef> out;
  for (int m = 0; m < kRounds * 5 * 3; ++m) {
    matches.clear();
    out.clear();
    t.match("jobs.new", matches);
    REQUIRE(matches.size() == 10);
    REQUIRE(q.select(matches, out) == 4);
    CHECK(out[0] == SubRef{1, 1, 0});  // plain ones first, in match order
    CHECK(out[1] == SubRef{2, 1, 0});
    CHECK(out[2].group == workers);  // then one per group, ascending id
    CHECK(out[3].group == tools);
    for (const SubRef& r : out) ++got[r.agent];
  }
  CHECK(got[1] == kRounds * 15);
  CHECK(got[2] == kRounds * 15);
  for (uint32_t a = 10; a < 15; ++a) CHECK(got[a] == kRounds * 3);  // 105 messages / 5
  for (uint32_t a = 20; a < 23; ++a) CHECK(got[a] == kRounds * 5);  // 105 messages / 3
}

TEST_CASE("select: membership changes, unknown group ids, empty input", "[router]") {
  QueueGroups q;
  const uint32_t g = q.intern_group("g").value();
  std::vector<SubRef> out;
  CHECK(q.select({}, out) == 0);

  std::vector<SubRef> matches{{1, 1, g}, {2, 1, g}, {3, 1, g}};
  std::map<uint32_t, int> got;
  for (int i = 0; i < 6; ++i) {
    out.clear();
    REQUIRE(q.select(matches, out) == 1);
    ++got[out[0].agent];
  }
  CHECK(got == std::map<uint32_t, int>{{1, 2}, {2, 2}, {3, 2}});
  matches.pop_back();  // member 3 left: the rest still alternate
  got.clear();
  for (int i = 0; i < 10; ++i) {
    out.clear();
    REQUIRE(q.select(matches, out) == 1);
    ++got[out[0].agent];
  }
  CHECK(got == std::map<uint32_t, int>{{1, 5}, {2, 5}});

  // An id nobody interned: still one delivery (the first member).
  const std::vector<SubRef> stray{{7, 1, 999}, {8, 1, 999}};
  for (int i = 0; i < 3; ++i) {
    out.clear();
    REQUIRE(q.select(stray, out) == 1);
    CHECK(out[0] == SubRef{7, 1, 999});
  }
}
