// After warm-up, matching a subject and choosing queue-group members allocate nothing: counted
// by the replaced global operator new (tests/support/counting_alloc.hpp; this binary only).
#define BUS_COUNTING_ALLOC_DEFINE
#include "../../support/counting_alloc.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "router/queue_groups.hpp"
#include "router/trie.hpp"
#include "router_test_util.hpp"

using namespace bus::router;
using bus::router::test::random_pattern;
using bus::router::test::random_subject;
using bus::router::test::Rng;

TEST_CASE("match and select allocate nothing after warm-up", "[router]") {
  QueueGroups q;
  const uint32_t g1 = q.intern_group("g1").value();
  const uint32_t g2 = q.intern_group("g2").value();
  SubjectTrie t;
  Rng r{2024};
  for (uint32_t i = 0; i < 2000; ++i) {
    const uint32_t group = i % 3 == 0 ? 0 : (i % 3 == 1 ? g1 : g2);
    (void)t.insert(random_pattern(r, 4), {1 + r.below(50), i, group});  // duplicates refused
  }
  // A subject with long tokens (no small-string optimisation could hide a std::string).
  REQUIRE(t.insert("a-rather-long-first-token-beyond-sso.b.*", {7, 7, 0}));
  std::vector<std::string> subjects;
  for (int i = 0; i < 200; ++i) subjects.push_back(random_subject(r, 5));
  subjects.push_back("a-rather-long-first-token-beyond-sso.b.c");

  std::vector<SubRef> matches;
  std::vector<SubRef> out;
  matches.reserve(t.size());
  out.reserve(t.size());
  q.reserve(t.size());

  const uint64_t before = bus::test::allocations;
  size_t delivered = 0;
  size_t visited = 0;
  for (int round = 0; round < 20; ++round) {
    for (const std::string& s : subjects) {
      matches.clear();
      out.clear();
      visited += t.match(s, matches);
      delivered += q.select(matches, out);
    }
  }
  const uint64_t allocs = bus::test::allocations - before;
  CHECK(allocs == 0);
  CHECK(delivered > 0);
  CHECK(visited > 0);
}
