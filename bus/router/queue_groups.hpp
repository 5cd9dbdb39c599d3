// Queue groups: interned group names, and the step that turns a subject's raw matches into
// deliveries. Every subscription without a group gets the message; of each group present in
// the matches exactly one member does, chosen round-robin per group across messages. With
// stable membership and a stable trie, k*n messages to a group of n members give each exactly k
// (the trie returns members in the same order every time).
//
// select() allocates nothing once its scratch space has grown to the largest match list seen
// (reserve() grows it up front). Single-threaded, like the trie it serves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bus/error.hpp"
#include "trie.hpp"

namespace bus::router {

class QueueGroups {
 public:
  /// Id (>= 1) of a group name, interned on first use. Each call takes one reference: call it
  /// once per member that joins, and release_group once per member that leaves. A name is
  /// 1..255 bytes of printable ASCII (0x21..0x7E); InvalidArgument otherwise.
  [[nodiscard]] Result<uint32_t> intern_group(std::string_view name);

  /// Drops one reference; the last one frees the name (its id may be handed out again, with a
  /// fresh round-robin position). False for an id not in use.
  bool release_group(uint32_t id) noexcept;

  /// The id of an interned name, 0 when there is none. Takes no reference.
  [[nodiscard]] uint32_t find_group(std::string_view name) const noexcept;
  /// The name of an id in use, "" otherwise.
  [[nodiscard]] std::string_view group_name(uint32_t id) const noexcept;
  /// References held on an id (0 when not in use).
  [[nodiscard]] uint32_t members(uint32_t id) const noexcept;
  /// Ids in use.
  [[nodiscard]] size_t group_count() const noexcept { return ids_.size(); }

  /// Sizes the scratch space for match lists up to `max_matches` long.
  void reserve(size_t max_matches);

  /// Appends to `out` the deliveries for one message: the group-0 matches in their order, then
  /// one member per group in ascending group id. Returns how many it appended. A group id not
  /// in use (not from intern_group) still gets one delivery: its first member, not rotated.
  size_t select(std::span<const SubRef> matches, std::vector<SubRef>& out);

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  struct Slot {
    std::string name;
    uint32_t refs = 0;
    uint64_t cursor = 0;  // messages this group has received
  };

  std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>> ids_;
  std::vector<Slot> slots_{1};        // indexed by id; slot 0 is "no group"
  std::vector<uint32_t> free_;        // released ids, reused last-in first-out
  std::vector<std::pair<uint32_t, uint32_t>> scratch_;  // (group, index in matches)
};

}  // namespace bus::router
