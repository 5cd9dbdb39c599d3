// SubjectTrie: the subscriptions of one router, indexed by the tokens of their patterns, so that
// matching a subject costs what the subject can reach, never what the other subscriptions are.
//
// A node per pattern prefix. Each node has literal children in a hash map (looked up by
// std::string_view: C++20 heterogeneous lookup, no allocation), one '*' child, the
// subscriptions whose pattern ends there and those whose pattern is the node's prefix plus '>'.
// Matching `a.b.c` visits, level by level, the literal child for the token and the '*' child:
// only nodes that the subject's own tokens lead to.
//
// Result order is a function of the trie's contents (not of insertion history): depth first,
// at each node its '>' subscriptions, then the literal child's subtree, then the '*' child's,
// and at the last token the node's own subscriptions; within a list, ascending SubRef.
//
// Single-threaded: the owner (a router thread) inserts, erases and matches. No lock.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "bus/error.hpp"

namespace bus::router {

/// One subscription: the agent, its subscription id and its queue group (0: none; otherwise an
/// id from QueueGroups::intern_group).
struct SubRef {
  uint32_t agent = 0;
  uint32_t sid = 0;
  uint32_t group = 0;

  friend constexpr auto operator<=>(const SubRef&, const SubRef&) noexcept = default;
};

class SubjectTrie {
 public:
  SubjectTrie();
  ~SubjectTrie();
  SubjectTrie(SubjectTrie&&) noexcept;
  SubjectTrie& operator=(SubjectTrie&&) noexcept;
  SubjectTrie(const SubjectTrie&) = delete;
  SubjectTrie& operator=(const SubjectTrie&) = delete;

  /// Adds a subscription. InvalidArgument for a pattern validate_pattern refuses,
  /// AlreadyExists when this exact (pattern, ref) is present.
  [[nodiscard]] Result<void> insert(std::string_view pattern, SubRef ref);

  /// Removes a subscription; false when it was not there. Nodes left empty are freed.
  bool erase(std::string_view pattern, SubRef ref);

  /// Removes every subscription of `agent`; returns how many.
  size_t erase_agent(uint32_t agent);

  /// Appends every subscription whose pattern matches `subject` (a valid subject: see
  /// validate_subject) to `out`, in the order described above. Allocates nothing when `out`
  /// has the capacity. Returns the number of trie nodes visited (the root included).
  size_t match(std::string_view subject, std::vector<SubRef>& out) const;

  [[nodiscard]] bool contains(std::string_view pattern, SubRef ref) const;

  /// Subscriptions held.
  [[nodiscard]] size_t size() const noexcept { return index_.size(); }
  [[nodiscard]] bool empty() const noexcept { return index_.empty(); }
  /// Nodes besides the root (0 when empty: erase frees what it empties).
  [[nodiscard]] size_t node_count() const noexcept { return nodes_; }
  /// Subscriptions of one agent.
  [[nodiscard]] size_t count_agent(uint32_t agent) const;

 private:
  struct Node;

  // Every subscription, ordered by agent first (erase_agent takes a range) and looked up by a
  // view of the pattern (no allocation to check for one).
  struct Entry {
    uint32_t agent;
    std::string pattern;
    uint32_t sid;
    uint32_t group;
  };
  struct EntryView {
    uint32_t agent;
    std::string_view pattern;
    uint32_t sid;
    uint32_t group;
  };
  struct EntryLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const noexcept {
      return key(a) < key(b);
    }
    template <class E>
    static std::tuple<uint32_t, std::string_view, uint32_t, uint32_t> key(const E& e) noexcept {
      return {e.agent, e.pattern, e.sid, e.group};
    }
  };

  void remove_from_nodes(std::string_view pattern, SubRef ref) noexcept;
  static void match_node(const Node& n, std::string_view rest, bool none_left,
                         std::vector<SubRef>& out, size_t& visited);

  std::unique_ptr<Node> root_;
  size_t nodes_ = 0;
  std::set<Entry, EntryLess> index_;
};

}  // namespace bus::router
