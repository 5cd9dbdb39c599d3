// Fuzz target: bus::router subjects, patterns, the trie and queue groups.
// Input: lines ('\n'), at most 12; each line is tried as a pattern and as a subject.
// Properties: validation never crashes and a valid subject is a valid pattern; the trie's
// matches equal the reference pattern_matches() (as multisets) and come in the same order
// whatever the insertion order; pattern_covers is exact: covers(a, b) holds iff `a` matches
// every witness subject of `b` (each '*' replaced by a token `a` does not name, a final '>' by
// 1 or by tokens(a)+1 such tokens), which implies: covers(a, b) and b matches s give a matches s;
// queue-group selection delivers every plain match and one member per group; erasing
// everything leaves no subscription and no node.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "router/queue_groups.hpp"
#include "router/subjects.hpp"
#include "router/trie.hpp"

using namespace bus;
using namespace bus::router;

namespace {

constexpr size_t kMaxLines = 12;

size_t count_tokens(std::string_view p) {
  return static_cast<size_t>(std::count(p.begin(), p.end(), '.')) + 1;
}

// A token `outer` does not name: longer than any of its tokens.
std::string fresh_token(std::string_view outer) {
  size_t longest = 0;
  Tokens t(outer);
  while (!t.done()) longest = std::max(longest, t.next().size());
  return std::string(longest + 1, '~');
}

// `inner` with each '*' as `fresh` and a final '>' as `tail` copies of `fresh`.
std::string witness(std::string_view inner, const std::string& fresh, size_t tail) {
  std::string out;
  Tokens t(inner);
  while (!t.done()) {
    const std::string_view tok = t.next();
    if (!out.empty()) out += '.';
    if (tok == "*") {
      out += fresh;
    } else if (tok == ">" && t.done()) {
      for (size_t i = 0; i < tail; ++i) out += (i == 0 ? "" : ".") + fresh;
    } else {
      out += tok;
    }
  }
  return out;
}

bool covers_by_witnesses(std::string_view outer, std::string_view inner) {
  const std::string fresh = fresh_token(outer);
  const size_t long_tail = count_tokens(outer) + 1;
  return pattern_matches(outer, witness(inner, fresh, 1)) &&
         pattern_matches(outer, witness(inner, fresh, long_tail));
}

struct Sub {
  std::string pattern;
  SubRef ref;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);  // exactly sized for ASan
  std::vector<std::string> lines;
  for (size_t at = 0; at <= text.size() && lines.size() < kMaxLines;) {
    const size_t nl = std::min(text.find('\n', at), text.size());
    lines.push_back(text.substr(at, nl - at));
    at = nl + 1;
  }

  QueueGroups groups;
  const uint32_t gid = groups.intern_group("fuzz").value();
  std::vector<std::string> patterns;
  std::vector<std::string> subjects;
  std::vector<Sub> subs;
  SubjectTrie trie;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    const auto vs = validate_subject(l);
    const auto vp = validate_pattern(l);
    FUZZ_CHECK(vs || vs.error() == Errc::InvalidArgument);
    FUZZ_CHECK(vp || vp.error() == Errc::InvalidArgument);
    FUZZ_CHECK(!vs || vp);  // a subject is a pattern
    FUZZ_CHECK(!vp || (!l.empty() && l.size() <= kMaxSubjectLength));
    if (vs) {
      subjects.push_back(l);
      FUZZ_CHECK(pattern_matches(l, l));
    }
    if (!vp) {
      FUZZ_CHECK(trie.insert(l, {1, 1, 0}).error() == Errc::InvalidArgument);
      continue;
    }
    patterns.push_back(l);
    FUZZ_CHECK(pattern_covers(l, l));
    // Two subscriptions per pattern (the second in the queue group); a repeat is refused.
    for (const SubRef ref : {SubRef{static_cast<uint32_t>(i % 3 + 1), static_cast<uint32_t>(i), 0},
                             SubRef{static_cast<uint32_t>(i % 2 + 4), static_cast<uint32_t>(i), gid}}) {
      const bool fresh = std::none_of(subs.begin(), subs.end(), [&](const Sub& s) {
        return s.pattern == l && s.ref == ref;
      });
      const auto r = trie.insert(l, ref);
      FUZZ_CHECK(r.has_value() == fresh);
      FUZZ_CHECK(fresh || r.error() == Errc::AlreadyExists);
      if (fresh) subs.push_back({l, ref});
    }
  }
  FUZZ_CHECK(trie.size() == subs.size());

  // The same contents inserted backwards: the same results in the same order.
  SubjectTrie backwards;
  for (auto it = subs.rbegin(); it != subs.rend(); ++it) {
    FUZZ_CHECK(backwards.insert(it->pattern, it->ref).has_value());
  }
  FUZZ_CHECK(backwards.node_count() == trie.node_count());

  for (const std::string& s : subjects) {
    std::vector<SubRef> got;
    std::vector<SubRef> again;
    const size_t visited = trie.match(s, got);
    FUZZ_CHECK(visited >= 1 && visited <= trie.node_count() + 1);
    FUZZ_CHECK(backwards.match(s, again) == visited);
    FUZZ_CHECK(got == again);
    std::vector<SubRef> want;
    for (const Sub& x : subs) {
      if (pattern_matches(x.pattern, s)) want.push_back(x.ref);
    }
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    FUZZ_CHECK(got == want);

    std::vector<SubRef> out;
    const size_t n = groups.select(again, out);
    const size_t plain = static_cast<size_t>(
        std::count_if(again.begin(), again.end(), [](SubRef r) { return r.group == 0; }));
    FUZZ_CHECK(n == out.size() && n == plain + (plain != again.size() ? 1 : 0));
    for (const SubRef r : out) FUZZ_CHECK(std::find(again.begin(), again.end(), r) != again.end());
  }

  for (const std::string& a : patterns) {
    for (const std::string& b : patterns) {
      const bool covers = pattern_covers(a, b);
      FUZZ_CHECK(covers == covers_by_witnesses(a, b));
      if (!covers) continue;
      for (const std::string& s : subjects) {
        FUZZ_CHECK(!pattern_matches(b, s) || pattern_matches(a, s));
      }
    }
  }

  // Erase: the queue-group subscriptions one by one, the rest per agent.
  for (const Sub& x : subs) {
    if (x.ref.group != 0) FUZZ_CHECK(trie.erase(x.pattern, x.ref));
  }
  size_t erased = 0;
  for (uint32_t agent = 1; agent <= 3; ++agent) erased += trie.erase_agent(agent);
  FUZZ_CHECK(erased == static_cast<size_t>(std::count_if(
                           subs.begin(), subs.end(), [](const Sub& x) { return x.ref.group == 0; })));
  FUZZ_CHECK(trie.size() == 0 && trie.node_count() == 0);
  for (const Sub& x : subs) FUZZ_CHECK(!trie.erase(x.pattern, x.ref));
  return 0;
}
