#include "trie.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <unordered_map>

#include "subjects.hpp"

namespace bus::router {

namespace {

struct TokenHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

void insert_sorted(std::vector<SubRef>& v, SubRef ref) {
  v.insert(std::lower_bound(v.begin(), v.end(), ref), ref);
}

void remove_sorted(std::vector<SubRef>& v, SubRef ref) noexcept {
  const auto it = std::lower_bound(v.begin(), v.end(), ref);
  if (it != v.end() && *it == ref) v.erase(it);
  if (v.empty()) std::vector<SubRef>().swap(v);  // give the memory back
}

}  // namespace

struct SubjectTrie::Node {
  using Children = std::unordered_map<std::string, std::unique_ptr<Node>, TokenHash, std::equal_to<>>;

  Children children;           // literal tokens
  std::unique_ptr<Node> star;  // '*'
  std::vector<SubRef> subs;    // patterns that end here (sorted)
  std::vector<SubRef> rest;    // patterns that are this prefix + '>' (sorted)

  [[nodiscard]] bool empty() const noexcept {
    return children.empty() && !star && subs.empty() && rest.empty();
  }
};

namespace {

void append(std::vector<SubRef>& out, const std::vector<SubRef>& v) {
  if (!v.empty()) out.insert(out.end(), v.begin(), v.end());
}

}  // namespace

// `rest` holds the subject's tokens not yet consumed; `none_left` says there are none (an empty
// `rest` alone could be one empty token).
void SubjectTrie::match_node(const Node& n, std::string_view rest, bool none_left,
                             std::vector<SubRef>& out, size_t& visited) {
  ++visited;
  if (none_left) {
    append(out, n.subs);
    return;
  }
  append(out, n.rest);  // '>' takes the one or more tokens left
  const size_t dot = rest.find('.');
  const std::string_view tok = rest.substr(0, dot);
  const bool last = dot == std::string_view::npos;
  const std::string_view after = last ? std::string_view{} : rest.substr(dot + 1);
  if (!n.children.empty()) {
    const auto it = n.children.find(tok);
    if (it != n.children.end()) match_node(*it->second, after, last, out, visited);
  }
  if (n.star) match_node(*n.star, after, last, out, visited);
}

SubjectTrie::SubjectTrie() : root_(std::make_unique<Node>()) {}
SubjectTrie::~SubjectTrie() = default;
SubjectTrie::SubjectTrie(SubjectTrie&&) noexcept = default;
SubjectTrie& SubjectTrie::operator=(SubjectTrie&&) noexcept = default;

Result<void> SubjectTrie::insert(std::string_view pattern, SubRef ref) {
  if (auto v = validate_pattern(pattern); !v) return v;
  const EntryView key{ref.agent, pattern, ref.sid, ref.group};
  if (index_.find(key) != index_.end()) return tl::unexpected(Errc::AlreadyExists);

  Node* n = root_.get();
  Tokens t(pattern);
  while (!t.done()) {
    const std::string_view tok = t.next();
    if (tok == ">") {  // validated: the last token
      insert_sorted(n->rest, ref);
      index_.insert(Entry{ref.agent, std::string(pattern), ref.sid, ref.group});
      return {};
    }
    if (tok == "*") {
      if (!n->star) {
        n->star = std::make_unique<Node>();
        ++nodes_;
      }
      n = n->star.get();
      continue;
    }
    auto it = n->children.find(tok);
    if (it == n->children.end()) {
      it = n->children.emplace(std::string(tok), std::make_unique<Node>()).first;
      ++nodes_;
    }
    n = it->second.get();
  }
  insert_sorted(n->subs, ref);
  index_.insert(Entry{ref.agent, std::string(pattern), ref.sid, ref.group});
  return {};
}

void SubjectTrie::remove_from_nodes(std::string_view pattern, SubRef ref) noexcept {
  // The path from the root, to prune bottom-up what the removal empties.
  std::array<Node*, kMaxTokens + 1> path{};
  std::array<std::string_view, kMaxTokens + 1> via{};  // token leading to path[i]
  size_t depth = 0;
  path[0] = root_.get();
  Tokens t(pattern);
  while (!t.done()) {
    const std::string_view tok = t.next();
    Node* n = path[depth];
    if (tok == ">") {
      remove_sorted(n->rest, ref);
      break;
    }
    Node* next = nullptr;
    if (tok == "*") {
      next = n->star.get();
    } else if (const auto it = n->children.find(tok); it != n->children.end()) {
      next = it->second.get();
    }
    if (next == nullptr || depth == kMaxTokens) return;  // not there: the index says it is
    path[++depth] = next;
    via[depth] = tok;
    if (t.done()) remove_sorted(next->subs, ref);
  }
  for (; depth > 0 && path[depth]->empty(); --depth) {
    Node* parent = path[depth - 1];
    if (via[depth] == "*") {
      parent->star.reset();
    } else {
      parent->children.erase(parent->children.find(via[depth]));
      if (parent->children.empty()) Node::Children().swap(parent->children);  // free buckets
    }
    --nodes_;
  }
}

bool SubjectTrie::erase(std::string_view pattern, SubRef ref) {
  const auto it = index_.find(EntryView{ref.agent, pattern, ref.sid, ref.group});
  if (it == index_.end()) return false;
  remove_from_nodes(pattern, ref);
  index_.erase(it);
  return true;
}

size_t SubjectTrie::erase_agent(uint32_t agent) {
  const auto lo = index_.lower_bound(EntryView{agent, {}, 0, 0});
  const auto hi = agent == UINT32_MAX ? index_.end()
                                      : index_.lower_bound(EntryView{agent + 1, {}, 0, 0});
  size_t n = 0;
  for (auto it = lo; it != hi; ++it, ++n) {
    remove_from_nodes(it->pattern, SubRef{it->agent, it->sid, it->group});
  }
  index_.erase(lo, hi);
  return n;
}

size_t SubjectTrie::count_agent(uint32_t agent) const {
  const auto lo = index_.lower_bound(EntryView{agent, {}, 0, 0});
  const auto hi = agent == UINT32_MAX ? index_.end()
                                      : index_.lower_bound(EntryView{agent + 1, {}, 0, 0});
  return static_cast<size_t>(std::distance(lo, hi));
}

bool SubjectTrie::contains(std::string_view pattern, SubRef ref) const {
  return index_.find(EntryView{ref.agent, pattern, ref.sid, ref.group}) != index_.end();
}

size_t SubjectTrie::match(std::string_view subject, std::vector<SubRef>& out) const {
  if (subject.empty()) return 0;
  size_t visited = 0;
  match_node(*root_, subject, false, out, visited);
  return visited;
}

}  // namespace bus::router
