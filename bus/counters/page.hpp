// The writer of busd's counters page (layout and reader: bus/counters.hpp).
//
// One writer per value. Today that is busd's single loop for everything; when shards arrive, an
// agent's counters (AgentCounters) and a pattern's (PatternCounters) are written by the shard
// that serves them, the globals, every slot descriptor and the lane counters (copies busd makes
// of the lanes' own counters) stay with the control loop. Because a value has one writer, an
// increment is a relaxed load and a relaxed store of the writer's own value (a plain add, no
// locked read-modify-write): readers in other processes see each store whole, and nothing is
// ordered by a counter.
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
  /// remove_stale), sizes it for the three tables, maps it and writes the header, the heartbeat
  /// set to now. 1 <= max_agents, max_patterns <= kMaxTableSlots; 0 <= max_lanes, max_links <=
  /// kMaxTableSlots (0: no lane or link table, lane_open and link_open always find it full).
  [[nodiscard]] static Expected<CountersPage> create(const std::string& path, uint32_t max_agents,
                                                     uint32_t max_patterns, uint32_t max_lanes,
                                                     mode_t mode = 0644, uint32_t max_links = 0);

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

  /// Takes a lane slot for lane `lane_id` between agent_a and agent_b (agent_a writes ring 0 of
  /// the lane, see shm/lane.hpp; names truncated as agent_open does), counters zeroed. Slots
  /// never used go first, then the one closed longest ago, so a closed lane stays listed as long
  /// as possible. nullptr when every slot holds an open lane: lane_table_full is counted (not
  /// limit_hits: the lane may open without a slot). The other lane globals (lanes_open,
  /// lanes_opened, lanes_closed, lane_routes) are the caller's to count, as for agents.
  [[nodiscard]] LaneCounters* lane_open(uint32_t lane_id, uint32_t agent_a, std::string_view name_a,
                                        uint32_t agent_b, std::string_view name_b);
  /// The lane is gone: its slot shows as closed, counters kept, until lane_open reuses it.
  /// Null, a pointer not from lane_open, and a second close are ignored.
  void lane_close(LaneCounters* l) noexcept;
  /// Stores the totals of direction `side` (0: agent_a to agent_b, 1: back) that busd read from
  /// the lane. Single writer: relaxed stores. Null or a side other than 0 and 1 is ignored. A
  /// last copy goes before lane_close: after it, the slot may already hold another lane.
  void lane_set(LaneCounters* l, int side, uint64_t messages, uint64_t bytes,
                uint64_t would_block) noexcept;

  /// Takes a link slot for a peer busd (node "" until it is known; address: what busd dials or
  /// where the peer dialed from; both truncated as agent names are), counters zeroed. Free
  /// slots first, then the one closed longest ago. nullptr when every slot holds a known peer.
  /// busd's loop then writes the counters directly (bump, set: one writer).
  [[nodiscard]] LinkCounters* link_open(LinkKind kind, std::string_view node, std::string_view address);
  /// The peer's node name became known (or changed).
  void link_rename(LinkCounters* l, std::string_view node) noexcept;
  /// busd forgot the peer: its slot shows as closed, counters kept, until link_open reuses it.
  void link_close(LinkCounters* l) noexcept;

  /// Records one duration of `ns` nanoseconds in histogram `h` (single writer: busd's loop).
  void record(Hist h, uint64_t ns) noexcept {
    HistogramSlot& s = histogram(h);
    bump(s.buckets[hist_bucket(ns)]);
    bump(s.count);
    bump(s.sum_ns, ns);
    note_high_water(s.max_ns, ns);
  }

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
  [[nodiscard]] LaneSlot& lane_slot(uint32_t i) const noexcept;
  [[nodiscard]] LaneSlot* slot_of(LaneCounters* l) const noexcept;
  [[nodiscard]] LinkSlot& link_slot(uint32_t i) const noexcept;
  [[nodiscard]] LinkSlot* slot_of(LinkCounters* l) const noexcept;
  [[nodiscard]] HistogramSlot& histogram(Hist h) const noexcept {
    return reinterpret_cast<HistogramSlot*>(base_ + histograms_offset_)[static_cast<size_t>(h)];
  }
  void table_changed() noexcept;
  void reset() noexcept;

  std::byte* base_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  uint32_t max_agents_ = 0;
  uint32_t max_patterns_ = 0;
  uint32_t max_lanes_ = 0;
  uint32_t max_links_ = 0;
  uint64_t histograms_offset_ = 0;
  // Private to busd: which slots are free, and who shares a pattern slot.
  std::vector<uint32_t> free_agents_;
  std::vector<uint32_t> free_patterns_;
  // Free and closed lane slots, oldest first: a ring of max_lanes entries (never reallocated).
  std::vector<uint32_t> free_lanes_;
  uint32_t free_lanes_head_ = 0;
  uint32_t free_lanes_count_ = 0;
  std::unordered_map<std::string, PatternRef, StringHash, std::equal_to<>> patterns_;
  // Link slots: free ones (never used, taken lowest first) and closed ones, oldest first.
  std::vector<uint32_t> free_links_;
  std::vector<uint32_t> closed_links_;
};

}  // namespace bus::counters
