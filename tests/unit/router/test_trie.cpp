// SubjectTrie: matches equal the reference matcher on random tries, erase prunes every node,
// erase_agent, result order, and the cost of a match does not grow with subscriptions that
// cannot match.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "router/subjects.hpp"
#include "router/trie.hpp"
#include "router_test_util.hpp"

using namespace bus;
using namespace bus::router;
using bus::router::test::random_pattern;
using bus::router::test::random_subject;
using bus::router::test::Rng;

namespace {

using Sub = std::pair<std::string, SubRef>;

std::vector<SubRef> brute(const std::set<Sub>& subs, const std::string& subject) {
  std::vector<SubRef> out;
  for (const auto& [p, r] : subs) {
    if (pattern_matches(p, subject)) out.push_back(r);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<SubRef> sorted_match(const SubjectTrie& t, const std::string& subject) {
  std::vector<SubRef> out;
  t.match(subject, out);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("trie: insert, match, duplicates, invalid patterns", "[router]") {
  SubjectTrie t;
  CHECK(t.insert("svc.plan.run", {1, 1, 0}).has_value());
  CHECK(t.insert("svc.*.run", {1, 2, 0}).has_value());
  CHECK(t.insert("svc.>", {2, 1, 0}).has_value());
  CHECK(t.insert(">", {3, 1, 0}).has_value());
  CHECK(t.insert("svc", {4, 1, 0}).has_value());
  CHECK(t.insert("svc.plan.run", {1, 1, 0}).error() == Errc::AlreadyExists);
  CHECK(t.insert("svc.plan.run", {1, 1, 7}).has_value());  // another ref: another subscription
  CHECK(t.insert("svc.*x", {1, 9, 0}).error() == Errc::InvalidArgument);
  CHECK(t.insert("", {1, 9, 0}).error() == Errc::InvalidArgument);
  CHECK(t.size() == 6);

  std::vector<SubRef> out;
  t.match("svc.plan.run", out);
  // Depth first: root '>' list, then svc's '>' list, then svc.plan.run, then svc.*.run.
  const std::vector<SubRef> want{{3, 1, 0}, {2, 1, 0}, {1, 1, 0}, {1, 1, 7}, {1, 2, 0}};
  CHECK(out == want);
  out.clear();
  t.match("svc", out);
  CHECK(out == std::vector<SubRef>{{3, 1, 0}, {4, 1, 0}});
  out.clear();
  CHECK(t.match("", out) == 0);
  CHECK(out.empty());
}

TEST_CASE("trie equals the reference matcher on random patterns (many seeds)", "[router]") {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    Rng r{seed};
    SubjectTrie t;
    std::set<Sub> ref;
    const uint32_t n = 1 + r.below(150);
    for (uint32_t i = 0; i < n; ++i) {
      const std::string p = random_pattern(r, 5);
      const SubRef s{1 + r.below(6), r.below(8), r.below(3)};
      const bool fresh = ref.emplace(p, s).second;
      const auto got = t.insert(p, s);
      REQUIRE(got.has_value() == fresh);
    }
    REQUIRE(t.size() == ref.size());
    for (int k = 0; k < 150; ++k) {
      const std::string s = random_subject(r, 6);
      INFO("seed " << seed << " subject " << s);
      REQUIRE(sorted_match(t, s) == brute(ref, s));
    }
    // Erase a random half one by one, then check again.
    std::vector<Sub> all(ref.begin(), ref.end());
    for (const Sub& x : all) {
      if (r.below(2) == 0) continue;
      REQUIRE(t.erase(x.first, x.second));
      REQUIRE_FALSE(t.erase(x.first, x.second));
      ref.erase(x);
    }
    REQUIRE(t.size() == ref.size());
    for (int k = 0; k < 100; ++k) {
      const std::string s = random_subject(r, 6);
      INFO("seed " << seed << " subject " << s);
      REQUIRE(sorted_match(t, s) == brute(ref, s));
    }
    for (const Sub& x : ref) REQUIRE(t.erase(x.first, x.second));
    CHECK(t.size() == 0);
    CHECK(t.node_count() == 0);
  }
}

TEST_CASE("trie: result order depends on contents, not on insertion history", "[router]") {
  Rng r{77};
  std::vector<Sub> subs;
  std::set<Sub> seen;
  while (subs.size() < 300) {
    Sub s{random_pattern(r, 4), SubRef{1 + r.below(5), r.below(50), r.below(3)}};
    if (seen.insert(s).second) subs.push_back(s);
  }
  SubjectTrie forward;
  SubjectTrie backward;
  for (const Sub& s : subs) REQUIRE(forward.insert(s.first, s.second));
  for (auto it = subs.rbegin(); it != subs.rend(); ++it) {
    REQUIRE(backward.insert(it->first, it->second));
    REQUIRE(backward.insert("x.y", {99, 99, 0}));  // and some churn
    REQUIRE(backward.erase("x.y", {99, 99, 0}));
  }
  for (int k = 0; k < 200; ++k) {
    const std::string s = random_subject(r, 5);
    std::vector<SubRef> a;
    std::vector<SubRef> b;
    CHECK(forward.match(s, a) == backward.match(s, b));
    CHECK(a == b);
  }
}

TEST_CASE("trie: erase prunes nodes; erase_agent removes one agent only", "[router]") {
  SubjectTrie t;
  REQUIRE(t.insert("a.b.c.d", {1, 1, 0}));
  REQUIRE(t.insert("a.*.c.>", {1, 2, 0}));
  REQUIRE(t.insert("a.b", {2, 1, 0}));
  CHECK(t.node_count() == 6);  // a, a.b, a.b.c, a.b.c.d, a.*, a.*.c
  CHECK_FALSE(t.erase("a.b.c.d", {1, 1, 5}));
  CHECK_FALSE(t.erase("a.b.c", {1, 1, 0}));
  CHECK_FALSE(t.erase("a..b", {1, 1, 0}));
  CHECK(t.erase("a.b.c.d", {1, 1, 0}));
  CHECK(t.node_count() == 4);  // a.b.c and a.b.c.d gone; a.b stays (agent 2 ends there)
  CHECK(t.erase("a.*.c.>", {1, 2, 0}));
  CHECK(t.node_count() == 2);
  CHECK(t.erase("a.b", {2, 1, 0}));
  CHECK(t.node_count() == 0);
  CHECK(t.size() == 0);

  for (uint32_t agent = 1; agent <= 5; ++agent) {
    for (uint32_t sid = 0; sid < 20; ++sid) {
      REQUIRE(t.insert("x." + std::to_string(agent) + "." + std::to_string(sid), {agent, sid, 0}));
      REQUIRE(t.insert("shared.>", {agent, sid, 0}));
    }
  }
  REQUIRE(t.insert("last", {UINT32_MAX, 1, 0}));
  CHECK(t.size() == 201);
  CHECK(t.count_agent(3) == 40);
  CHECK(t.erase_agent(3) == 40);
  CHECK(t.erase_agent(3) == 0);
  CHECK(t.count_agent(3) == 0);
  CHECK(t.size() == 161);
  std::vector<SubRef> out;
  t.match("shared.q", out);
  CHECK(out.size() == 80);
  CHECK(std::none_of(out.begin(), out.end(), [](SubRef r) { return r.agent == 3; }));
  out.clear();
  t.match("x.3.5", out);
  CHECK(out.empty());
  CHECK(t.erase_agent(UINT32_MAX) == 1);
  for (uint32_t agent : {1u, 2u, 4u, 5u}) CHECK(t.erase_agent(agent) == 40);
  CHECK(t.size() == 0);
  CHECK(t.node_count() == 0);
}

TEST_CASE("trie: match cost does not grow with subscriptions that cannot match", "[router]") {
  const std::vector<std::pair<std::string, SubRef>> matching{
      {"svc.plan.run", {1, 1, 0}}, {"svc.*.run", {2, 1, 0}}, {"svc.>", {3, 1, 0}},
      {"*.plan.>", {4, 1, 0}},     {">", {5, 1, 0}},         {"svc.plan.*", {6, 1, 0}},
      {"*.*.*", {7, 1, 0}}};
  auto visited_with = [&](uint32_t others, std::vector<SubRef>& out) {
    SubjectTrie t;
    for (uint32_t i = 0; i < others / 2; ++i) {
      REQUIRE(t.insert("other." + std::to_string(i) + ".x", {100, i, 0}));
      REQUIRE(t.insert("other.*." + std::to_string(i), {101, i, 0}));
    }
    for (const auto& [p, r] : matching) REQUIRE(t.insert(p, r));
    REQUIRE(t.size() == others + matching.size());
    out.clear();
    return t.match("svc.plan.run", out);
  };
  std::vector<SubRef> small;
  std::vector<SubRef> large;
  const size_t v10 = visited_with(10, small);
  const size_t v100k = visited_with(100'000, large);
  CHECK(v10 == v100k);
  CHECK(small == large);
  std::sort(large.begin(), large.end());
  std::vector<SubRef> want;
  for (const auto& m : matching) want.push_back(m.second);
  CHECK(large == want);
  WARN("nodes visited for svc.plan.run: " << v10 << " with 10 others, " << v100k
                                          << " with 100000 others");
}
