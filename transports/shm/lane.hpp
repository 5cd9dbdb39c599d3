// Direct lanes between two agents of one host: the shared-memory layout both agents and busd
// agree on. Routing (who gets a lane, for which subjects) is busd's; this file is bytes only.
//
// A lane is one sealed memfd that busd creates and hands to both agents (LaneOpen, with four
// eventfds): a LaneHeader, then two rings (ring.hpp). Ring 0 is written by the agent with the
// lower id, ring 1 by the other. busd keeps it mapped to read the counters in the header.
//
// Moving a flow between busd's path and a lane never reorders it. A side that switches a flow
// from path P to path Q first writes a mark(k) record into P, then a gate(k) record into Q (k
// counts up per lane direction). The reader stops at gate(k) on Q until it has passed mark(k)
// on P. On busd's path the two records travel as records of these tags with a Fence payload;
// busd forwards them, in order with the writer's other messages, to the other agent of the lane.
// A writer closing its direction writes end(k), which is also a mark.
//
// Every agent's own segment holds an AgentLines (offset in Registered.lines_offset): busd bumps
// route_epoch whenever a route it gave that agent may have changed; the agent reads it (one
// load) before each send and, when it moved, forgets every route and asks again.
#pragma once

#include <atomic>
#include <cstdint>

#include "shm/layout.hpp"

namespace bus::shm::lane {

/// Record tags reserved for lane bookkeeping, on lanes and on the rings to and from busd.
/// Subscription ids (the tags of delivered messages) stay below kReservedTagBase.
inline constexpr uint32_t kReservedTagBase = 0xFFFF'FF00u;
inline constexpr uint32_t kMarkTag = 0xFFFF'FFF0u;
inline constexpr uint32_t kGateTag = 0xFFFF'FFF1u;
inline constexpr uint32_t kEndTag = 0xFFFF'FFF2u;

/// Payload of mark, gate and end records. On busd's path `agent` is the lane's other end on the
/// way to busd, and the sender on the way out (busd rewrites it): a reader takes a fence only
/// from the agent at the other end of that lane. busd forwards fences of lanes it closed
/// already too: a reader still needs the mark that lets it past a gate it has read.
struct Fence {
  uint32_t lane_id;
  uint32_t agent;
  uint64_t k;
};
static_assert(sizeof(Fence) == 16);

/// In every agent's segment; written by busd only.
struct alignas(kFalseSharingRange) AgentLines {
  std::atomic<uint64_t> route_epoch;
};
static_assert(sizeof(AgentLines) == kFalseSharingRange);

inline constexpr uint64_t kLaneMagic = 0x454E414C'53554221ull;  // "!BUSLANE" little-endian
inline constexpr uint32_t kLaneLayoutVersion = 1;

/// One direction's counters, written by that direction's writer (one writer: plain adds).
struct alignas(kFalseSharingRange) LaneSide {
  std::atomic<uint64_t> messages;
  std::atomic<uint64_t> bytes;
  std::atomic<uint64_t> would_block;  // writes that found the ring full
};

struct alignas(kFalseSharingRange) LaneHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t lane_id;
  uint32_t agent[2];      // agent ids: agent[0] writes ring 0
  uint64_t ring_offset[2];
  alignas(kFalseSharingRange) std::atomic<uint32_t> closed;  // set by busd: the lane is going away
  LaneSide side[2];
};
static_assert(sizeof(LaneHeader) == 4 * kFalseSharingRange);

/// Single-writer add (the writer's own counter; readers see each store whole).
inline void count(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace bus::shm::lane
