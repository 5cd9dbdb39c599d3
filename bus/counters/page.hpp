// The writer of busd's counters page (layout and reader: bus/counters.hpp).
//
// One writer per value. Today that is busd's single loop for everything; when shards arrive, an
// agent's counters (AgentCounters) and a pattern's (PatternCounters) are written by the shard
// that serves them, the globals and every slot descriptor stay with the control loop. Because a
// value has one writer, an increment is a relaxed load and a relaxed store of the writer's own
// value (a plain add, no locked read-modify-write): readers in other processes see each store
// whole, and nothing is ordered by a counter.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bus/counters.hpp"
#include "bus/error.hpp"

namespace bus::counters {

/// Single-writer increment (see the top of this file).
inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

/// Single-writer decrement of a gauge; saturates at 0.
inline void drop_by(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
  const uint64_t v = c.load(std::memory_order_relaxed);
  c.store(v > n ? v - n : 0, std::memory_order_relaxed);
}

/// Raises a high-water mark to `v` if `v` is higher (single writer).
inline void note_high_water(std::atomic<uint64_t>& c, uint64_t v) noexcept {
  if (v > c.load(std::memory_order_relaxed)) c.store(v, std::memory_order_relaxed);
}

// Per-agent helpers, for the thread that serves the agent.
inline void message_in(AgentCounters& a, uint64_t bytes) noexcept {
  bump(a.messages_in);
  bump(a.bytes_in, bytes);
}
inline void message_out(AgentCounters& a, uint64_t bytes) noexcept {
  bump(a.messages_out);
  bump(a.bytes_out, bytes);
}
inline void delivered(PatternCounters& p, uint64_t bytes) noexcept {
  bump(p.messages);
  bump(p.bytes, bytes);
}

class CountersPage {
 public:
  /// Creates the page at `path` (O_EXCL: fails with AlreadyExists if a file is there; see
  /// remove_stale), sizes it for the two tables, maps it and writes the header, the heartbeat
  /// set to now. 1 <= max_agents, max_patterns <= kMaxTableSlots.
  [[nodiscard]] static Expected<CountersPage> create(const std::string& path, uint32_t max_agents,
                                                     uint32_t max_patterns, mode_t mode = 0644);

  /// Removes a page left at `path` by a busd that is gone: its recorded pid does not exist
  /// (kill(pid, 0) fails with ESRCH), or is this process's own pid (a restart that got the same
  /// pid, as pid 1 in a container does). True if it removed one, false if there was none.
  /// AlreadyExists when its busd is running; Corrupt when the file is not a readable page
  /// (never removed: an operator should look, or busd is creating it right now).
  [[nodiscard]] static Expected<bool> remove_stale(const std::string& path);

  CountersPage() = default;
  CountersPage(CountersPage&& o) noexcept;
  CountersPage& operator=(CountersPage&& o) noexcept;
  CountersPage(const CountersPage&) = delete;
  CountersPage& operator=(const CountersPage&) = delete;
  /// Marks the page stopped (heartbeat 0, for readers that still map it) and unlinks it.
  ~CountersPage();

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] bool valid() const noexcept { return base_ != nullptr; }

  /// About once a second: readers call a page whose heartbeat is old stale.
  void heartbeat(uint64_t now_realtime_ns) noexcept;

  void add(Global g, uint64_t n = 1) noexcept { bump(global(g), n); }
  void sub(Global g, uint64_t n = 1) noexcept { drop_by(global(g), n); }
  void set(Global g, uint64_t v) noexcept { global(g).store(v, std::memory_order_relaxed); }
  [[nodiscard]] uint64_t get(Global g) const noexcept {
    return global(g).load(std::memory_order_relaxed);
  }

  /// Takes a free agent slot: descriptor written (name truncated to 64 bytes at a UTF-8
  /// boundary), counters zeroed. nullptr when every slot is taken: limit_hits is counted and the
  /// caller refuses the agent. The agents_* globals are the caller's to count (it knows why an
  /// agent came and went); the slot functions touch no global but limit_hits.
  [[nodiscard]] AgentCounters* agent_open(uint32_t agent_id, std::string_view name, pid_t pid,
                                          uid_t uid, gid_t gid);
  /// The agent died and busd is reclaiming its rings: the slot shows as dead (counters kept)
  /// until agent_close(). Null is ignored.
  void agent_dead(AgentCounters* a) noexcept;
  /// Frees the slot; readers stop listing it. Null is ignored.
  void agent_close(AgentCounters* a) noexcept;

  /// The counters of subject pattern `pattern`, one call per subscription: the first call takes a
  /// slot, later ones share it; `subscribers` counts the calls. When the table is full the pattern
  /// goes to the overflow slot ("other patterns") and limit_hits is counted; never nullptr.
  [[nodiscard]] PatternCounters* pattern_open(std::string_view pattern);
  /// One call per pattern_open of the same pattern (an unsubscribe): the last frees the slot.
  void pattern_close(std::string_view pattern) noexcept;

 private:
  struct PatternRef {
    uint32_t slot;
    uint64_t refs;
  };
  struct StringHash {  // lookups by string_view without building a std::string
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  [[nodiscard]] PageHeader& header() const noexcept { return *reinterpret_cast<PageHeader*>(base_); }
  [[nodiscard]] std::atomic<uint64_t>& global(Global g) const noexcept;
  [[nodiscard]] AgentSlot& agent_slot(uint32_t i) const noexcept;
  [[nodiscard]] PatternSlot& pattern_slot(uint32_t i) const noexcept;
  [[nodiscard]] AgentSlot* slot_of(AgentCounters* a) const noexcept;
  void table_changed() noexcept;
  void reset() noexcept;

  std::byte* base_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  uint32_t max_agents_ = 0;
  uint32_t max_patterns_ = 0;
  // Private to busd: which slots are free, and who shares a pattern slot.
  std::vector<uint32_t> free_agents_;
  std::vector<uint32_t> free_patterns_;
  std::unordered_map<std::string, PatternRef, StringHash, std::equal_to<>> patterns_;
};

}  // namespace bus::counters
