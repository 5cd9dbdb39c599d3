// Subject and pattern validation, the reference matcher (NATS semantics) and pattern_covers
// against brute force over every subject up to 5 tokens on a 3-letter token alphabet.
#include <catch2/catch.hpp>

#include <bitset>
#include <string>
#include <vector>

#include "router/subjects.hpp"

using namespace bus;
using namespace bus::router;

TEST_CASE("validate_subject accepts and rejects", "[router]") {
  const std::string max(255, 'x');
  const char* good[] = {"a", "a.b", "svc.plan.run", "$bus.agents.left", "_INBOX.x.1", "!~#",
                        "A-b_c:d/e", "1.2.3.4"};
  for (const char* s : good) {
    INFO(s);
    CHECK(validate_subject(s).has_value());
  }
  CHECK(validate_subject(max).has_value());
  const std::string too_long(256, 'x');
  const std::string bad[] = {"", ".", "a.", ".a", "a..b", "*", ">", "a.*", "a.>", "a*", "a>b",
                             "a b", std::string("a\0b", 3), "a\tb", "\x7f", "\x80.a", "é",
                             too_long};
  for (const std::string& s : bad) {
    INFO(s);
    const auto r = validate_subject(s);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == Errc::InvalidArgument);
  }
}

TEST_CASE("validate_pattern accepts and rejects", "[router]") {
  const char* good[] = {"a", "*", ">", "a.*", "a.>", "*.*", "*.>", "a.*.c", "$bus.>", "a.b.c"};
  for (const char* p : good) {
    INFO(p);
    CHECK(validate_pattern(p).has_value());
  }
  CHECK(validate_pattern(std::string(255, 'x')).has_value());
  const std::string bad[] = {"", ".", "a.", ".>", ">.a", "a.>.b", ">.>", "a*", "*b", "**", ">>",
                             "a.b*", "a.>b", "a.*>", "a..*", "a b", std::string(256, 'x'),
                             std::string(127, 'a') + ".*." + std::string(126, 'b')};
  for (const std::string& p : bad) {
    INFO(p);
    const auto r = validate_pattern(p);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == Errc::InvalidArgument);
  }
  // Every valid subject is a valid pattern (matching only itself).
  CHECK(validate_pattern("svc.plan.run").has_value());
}

TEST_CASE("classify and validate_agent_publish", "[router]") {
  CHECK(classify("$bus.agents.left") == SubjectClass::System);
  CHECK(classify("$bus") == SubjectClass::System);
  CHECK(classify("$busy.x") == SubjectClass::Normal);
  CHECK(classify("_INBOX.a1.7") == SubjectClass::Inbox);
  CHECK(classify("_INBOXES.x") == SubjectClass::Normal);
  CHECK(classify("svc.plan") == SubjectClass::Normal);
  CHECK(validate_agent_publish("svc.plan").has_value());
  CHECK(validate_agent_publish("_INBOX.a1.7").has_value());
  CHECK(validate_agent_publish("$bus.agents.left").error() == Errc::PermissionDenied);
  CHECK(validate_agent_publish("$bus.*").error() == Errc::InvalidArgument);
  CHECK(validate_agent_publish("").error() == Errc::InvalidArgument);
  // Subscribing to system subjects is fine.
  CHECK(validate_pattern("$bus.agents.>").has_value());
}

TEST_CASE("pattern_matches follows NATS semantics", "[router]") {
  struct Row {
    const char* pattern;
    const char* subject;
    bool match;
  };
  const Row rows[] = {
      {"a", "a", true},           {"a", "b", false},          {"a", "a.b", false},
      {"a.b", "a", false},        {"*", "a", true},           {"*", "a.b", false},
      {"a.*", "a.b", true},       {"a.*", "a", false},        {"a.*", "a.b.c", false},
      {"a.>", "a", false},        {"a.>", "a.b", true},       {"a.>", "a.b.c", true},
      {">", "a", true},           {">", "a.b.c", true},       {"*.>", "a", false},
      {"*.>", "a.b", true},       {"*.b.*", "a.b.c", true},   {"*.b.*", "a.c.c", false},
      {"a.*.>", "a.b", false},    {"a.*.>", "a.b.c", true},   {"svc.plan.run", "svc.plan.run", true},
      {"svc.plan.run", "svc.plan.runs", false},                {"svc.plan", "svc.plans", false},
      {"ab.>", "a.b", false},     {"$bus.>", "$bus.agents.left", true},
  };
  for (const Row& r : rows) {
    INFO(r.pattern << " vs " << r.subject);
    CHECK(pattern_matches(r.pattern, r.subject) == r.match);
  }
}

TEST_CASE("pattern_covers examples", "[router]") {
  CHECK(pattern_covers("jobs.>", "jobs.*.x"));
  CHECK(pattern_covers("jobs.>", "jobs.a"));
  CHECK(pattern_covers("jobs.>", "jobs.>"));
  CHECK_FALSE(pattern_covers("jobs.>", ">"));
  CHECK_FALSE(pattern_covers("jobs.>", "jobs"));
  CHECK_FALSE(pattern_covers("jobs.>", "*.a"));
  CHECK(pattern_covers(">", "jobs"));
  CHECK(pattern_covers(">", "*.>"));
  CHECK(pattern_covers("*.*", "a.*"));
  CHECK_FALSE(pattern_covers("a.*", "*.*"));
  CHECK_FALSE(pattern_covers("*", ">"));
  CHECK_FALSE(pattern_covers("*.>", ">"));
  CHECK(pattern_covers("*.>", "a.>"));
  CHECK_FALSE(pattern_covers("a.*.>", "a.>"));
  CHECK(pattern_covers("a.>", "a.*.>"));
  CHECK_FALSE(pattern_covers("a.*", "a.>"));
}

namespace {

// Patterns of 1..4 tokens over {a, b, *}, '>' allowed last; subjects of 1..5 tokens over
// {a, b, c}. 'c' stands for every token no pattern names, 5 tokens for "longer than any pattern",
// so the finite check decides the unbounded question.
void build(std::vector<std::string>& out, const std::vector<std::string>& alphabet, size_t max,
           bool wildcard_end) {
  std::vector<std::string> level{""};
  for (size_t len = 1; len <= max; ++len) {
    std::vector<std::string> next;
    for (const std::string& prefix : level) {
      for (const std::string& tok : alphabet) {
        next.push_back(prefix.empty() ? tok : prefix + "." + tok);
      }
      if (wildcard_end) out.push_back(prefix.empty() ? ">" : prefix + ".>");
    }
    out.insert(out.end(), next.begin(), next.end());
    level = std::move(next);
  }
}

}  // namespace

TEST_CASE("pattern_covers equals brute force on a small alphabet", "[router]") {
  std::vector<std::string> patterns;
  std::vector<std::string> subjects;
  build(patterns, {"a", "b", "*"}, 4, true);
  build(subjects, {"a", "b", "c"}, 5, false);
  REQUIRE(patterns.size() == 3 + 9 + 27 + 81 + 1 + 3 + 9 + 27);
  REQUIRE(subjects.size() == 3 + 9 + 27 + 81 + 243);
  constexpr size_t kSubjects = 363;
  std::vector<std::bitset<kSubjects>> sets(patterns.size());
  for (size_t p = 0; p < patterns.size(); ++p) {
    REQUIRE(validate_pattern(patterns[p]).has_value());
    for (size_t s = 0; s < subjects.size(); ++s) sets[p][s] = pattern_matches(patterns[p], subjects[s]);
    REQUIRE(sets[p].any());
  }
  size_t covered = 0;
  size_t mismatches = 0;
  for (size_t o = 0; o < patterns.size(); ++o) {
    for (size_t i = 0; i < patterns.size(); ++i) {
      const bool brute = (sets[i] & ~sets[o]).none();
      const bool got = pattern_covers(patterns[o], patterns[i]);
      if (got != brute) {
        ++mismatches;
        UNSCOPED_INFO("covers(" << patterns[o] << ", " << patterns[i] << ") = " << got);
      }
      covered += brute;
    }
  }
  CHECK(mismatches == 0);
  CHECK(covered > patterns.size());  // more than the reflexive pairs
}
