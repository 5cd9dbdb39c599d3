// The counters page: a file busd maps read-write and tools map read-only, so that reading
// busd's counters costs busd nothing (no system call, no lock, no message). Layout version 1.
//
//   offset                       size               writer            contents
//   0                            128                create()          PageHeader, static part
//   128                          128                busd's loop       heartbeat_ns, generation
//                                                   create()          lane_stride (static, at 144)
//   globals_offset   (256)       count * 128        busd's loop       one Global counter per 128 B
//   agents_offset    (5120)      max_agents * 256   see AgentSlot     agent slots
//   patterns_offset              (max_patterns + 1) * 256             pattern slots, last = overflow
//   lanes_offset                 max_lanes * 256    see LaneSlot      lane slots (max_lanes may be 0)
//   links_offset                 max_links * 384    see LinkSlot      peer busd slots (max_links may be 0)
//   histograms_offset            count * 2112       busd's loop       latency histograms (see Hist; count may be 0)
//   page_size = histograms_offset + histogram_count * 2112
//
// Rules both sides follow:
//  * Every value a reader may read while busd writes it is a lock-free std::atomic<uint64_t> (or
//    uint32_t). There is one writer per value: it increments with a relaxed load and a relaxed
//    store, not a locked read-modify-write; readers use relaxed loads. A counter is a statistic:
//    nothing is ordered by it.
//  * The static part of the header is written once, before `magic` is release-stored; a reader
//    acquire-loads `magic` first (0: busd is still writing the page).
//  * Strings (agent name, pattern, a lane's agent names) sit in a slot's descriptor, written
//    under the slot's `seq` (a seqlock: odd while busd writes the descriptor, +2 per change; the
//    fields are stored with release and loaded with acquire, plain moves on x86, no fences). A
//    reader copies the descriptor between two loads of `seq` and retries when they differ or are
//    odd, so it never shows a torn name; `seq` changing also tells it the slot was reused.
//    Strings are stored as atomic 8-byte words (their bytes in memory are the NUL-padded string)
//    so that a reader racing the writer is still race-free.
//  * Each global counter owns 128 bytes (two cache lines: the adjacent-line prefetcher fetches
//    pairs). An agent slot is 256 bytes, 64-byte aligned: its descriptor (written by the control
//    loop) and its counters (written by whoever serves the agent: one shard thread later) sit on
//    separate lines, and two slots never share a line. Pattern and lane slots are built the same.
//  * Room to grow within version 1: fields are only appended, into the reserved bytes or at a
//    slot's end, and a reader accepts a larger header_size, larger strides and more globals than
//    it knows. Anything else changes kLayoutVersion. The lane and link tables came this way (into
//    reserved header bytes): a page from a busd without one has max_lanes (max_links) 0 and
//    reads as having no lanes (links). The histograms too (histogram_count 0: none).
//  * A reader trusts nothing it maps: the header is checked once against the file size (every
//    table inside the file, every offset aligned) and copied; later reads use only those copies.
//    The page is a plain file (it cannot be sealed): a process able to truncate it could make a
//    reader's next access fault. busd never shrinks it and creates it writable only by itself.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/error.hpp"

namespace bus::counters {

inline constexpr uint64_t kMagic = 0x52544E43'53554221ull;  // "!BUSCNTR" little-endian
inline constexpr uint32_t kLayoutVersion = 1;
inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kFalseSharingRange = 128;  // two lines: the adjacent-line prefetcher
inline constexpr size_t kVersionSize = 32;         // busd version string, NUL-padded
inline constexpr size_t kNameSize = 64;            // agent name, NUL-padded (no NUL when full)
inline constexpr size_t kPatternSize = 128;        // subject pattern, NUL-padded
/// Largest table a writer creates and a reader accepts (any table).
inline constexpr uint32_t kMaxTableSlots = 1u << 20;
/// busd stores heartbeat_ns about once a second; a reader calls a page whose heartbeat is
/// further than this from its own clock stale (busd stopped, hung or killed).
inline constexpr uint64_t kStaleAfterNs = 3'000'000'000ull;

// ---- global counters --------------------------------------------------------------------------

/// Global counters, one 128-byte cell each, in this order. Append only (before Count).
/// "in" and "out" are busd's view throughout: in = from agents into busd, out = busd to agents.
enum class Global : uint32_t {
  agents_connected,          // gauge: agents registered now
  agents_total,              // agents ever registered
  agents_died,               // agents that went away without Goodbye
  messages_in,               // messages accepted from agents
  messages_out,              // deliveries to agents (one message to 3 subscribers: 3)
  bytes_in,                  // bytes of messages_in
  bytes_out,                 // bytes of messages_out
  verify_failures,           // messages refused by verification
  published_no_subscribers,  // publishes that matched no subscriber (not a drop)
  drops_slow_consumer,       // deliveries dropped for a slow subscriber (its policy; busd's own events)
  drops_acl,                 // messages refused by an ACL
  drops_too_large,           // messages above the size limit
  requests,                  // requests routed
  no_responders,             // requests that found no subscriber
  request_timeouts,          // requests whose deadline expired before a reply
  control_errors,            // control-protocol errors sent to agents
  limit_hits,                // a configured limit refused something (agents, patterns, ...)
  config_reloads,            // configuration reloads applied
  config_reload_failures,    // configuration reloads refused
  links_up,                  // gauge: peer busds connected now
  link_connects,             // link connections made (handshake done), either direction
  link_disconnects,          // link connections lost
  link_refused,              // link connections refused: garbage, wrong cluster or version
  link_messages_out,         // messages sent to peer busds (one message to 2 peers: 2)
  link_messages_in,          // messages received from peer busds
  link_bytes_out,            // envelope bytes of link_messages_out
  link_bytes_in,             // envelope bytes of link_messages_in
  link_drops_held_full,      // messages for a peer dropped: its hold buffer was full
  link_drops_no_route,       // replies for a node this busd has no link to
  lanes_open,                // gauge: direct lanes between two local agents open now
  lanes_opened,              // lanes set up
  lanes_closed,              // lanes torn down
  lane_routes,               // routes over a lane handed to agents
  lane_table_full,           // lane_open found no free lane slot: that lane is not in the table
  link_retransmits,          // datagram links: packets sent again (NAKed or timed out)
  link_naks,                 // datagram links: holes this busd named to a peer (selective NAK ranges)
  link_datagrams_corrupt,    // datagram links: packets dropped for a checksum mismatch
  link_datagrams_dropped,    // datagram links: packets dropped otherwise (malformed, stale connection, beyond the window)
  slow_drops_oldest,         // slow consumers: waiting messages dropped to make room (drop-oldest)
  slow_drops_newest,         // slow consumers: new messages dropped, the buffer full (drop-newest)
  slow_disconnects,          // slow consumers: agents disconnected (policy disconnect)
  slow_events,               // $bus.slow events published (became slow, recovered)
  slow_waiting_bytes,        // gauge: bytes waiting in busd for slow consumers (drop and disconnect policies)
  Count
};
inline constexpr size_t kGlobalCount = static_cast<size_t>(Global::Count);
static_assert(kGlobalCount == 43, "layout v1 has 43 globals: append only, and update the table below");

struct GlobalInfo {
  std::string_view name;  // as printed by busctl and in JSON
  std::string_view help;  // one line, for tables and Prometheus HELP
  bool gauge;             // goes up and down (Prometheus TYPE gauge)
  bool bytes;             // a byte count (printed with KiB/MiB units)
};

inline constexpr std::array<GlobalInfo, kGlobalCount> kGlobals{{
    {"agents_connected", "agents registered now", true, false},
    {"agents_total", "agents ever registered", false, false},
    {"agents_died", "agents gone without Goodbye", false, false},
    {"messages_in", "messages accepted from agents", false, false},
    {"messages_out", "deliveries to agents", false, false},
    {"bytes_in", "bytes accepted from agents", false, true},
    {"bytes_out", "bytes delivered to agents", false, true},
    {"verify_failures", "messages refused by verification", false, false},
    {"published_no_subscribers", "publishes that matched nobody", false, false},
    {"drops_slow_consumer", "deliveries dropped for slow subscribers", false, false},
    {"drops_acl", "messages refused by an ACL", false, false},
    {"drops_too_large", "messages above the size limit", false, false},
    {"requests", "requests routed", false, false},
    {"no_responders", "requests that found no subscriber", false, false},
    {"request_timeouts", "requests that expired unanswered", false, false},
    {"control_errors", "control-protocol errors sent", false, false},
    {"limit_hits", "refused by a configured limit", false, false},
    {"config_reloads", "configuration reloads applied", false, false},
    {"config_reload_failures", "configuration reloads refused", false, false},
    {"links_up", "peer busds connected now", true, false},
    {"link_connects", "link connections made", false, false},
    {"link_disconnects", "link connections lost", false, false},
    {"link_refused", "link connections refused (garbage, cluster, version)", false, false},
    {"link_messages_out", "messages sent to peer busds", false, false},
    {"link_messages_in", "messages received from peer busds", false, false},
    {"link_bytes_out", "bytes sent to peer busds", false, true},
    {"link_bytes_in", "bytes received from peer busds", false, true},
    {"link_drops_held_full", "messages dropped: a peer's hold buffer was full", false, false},
    {"link_drops_no_route", "replies for a node with no link", false, false},
    {"lanes_open", "direct lanes between two agents open now", true, false},
    {"lanes_opened", "direct lanes set up", false, false},
    {"lanes_closed", "direct lanes torn down", false, false},
    {"lane_routes", "routes over a lane handed to agents", false, false},
    {"lane_table_full", "lanes left out of the counters page: lane table full", false, false},
    {"link_retransmits", "datagram link packets sent again (NAKed or timed out)", false, false},
    {"link_naks", "holes named to peers on datagram links (NAK ranges)", false, false},
    {"link_datagrams_corrupt", "datagram link packets dropped: checksum mismatch", false, false},
    {"link_datagrams_dropped", "datagram link packets dropped: malformed, stale or beyond the window", false, false},
    {"slow_drops_oldest", "slow consumers: waiting messages dropped for room (drop-oldest)", false, false},
    {"slow_drops_newest", "slow consumers: new messages dropped, buffer full (drop-newest)", false, false},
    {"slow_disconnects", "slow consumers disconnected (policy disconnect)", false, false},
    {"slow_events", "$bus.slow events published", false, false},
    {"slow_waiting_bytes", "bytes waiting in busd for slow consumers", true, true},
}};

[[nodiscard]] constexpr const GlobalInfo& global_info(Global g) noexcept {
  return kGlobals[static_cast<size_t>(g)];
}

// ---- latency histograms -----------------------------------------------------------------------

/// Durations busd measures where it reads the clock anyway, one histogram each, in this order.
/// Append only (before Count), as the globals.
enum class Hist : uint32_t {
  request_reply,  // a request routed to its first reply or error back in busd: the responders'
                  // service time as busd sees it (local and remote responders alike)
  link_rtt,       // busd to busd round trips of heartbeat echoes, every link (once per heartbeat)
  Count
};
inline constexpr size_t kHistCount = static_cast<size_t>(Hist::Count);

struct HistInfo {
  std::string_view name;  // as printed by busctl and in JSON; Prometheus: busd_<name>_seconds
  std::string_view help;
};
inline constexpr std::array<HistInfo, kHistCount> kHists{{
    {"request_reply", "request routed to its reply back in busd (the responder's service time)"},
    {"link_rtt", "busd-to-busd round trip of heartbeat echoes"},
}};

/// A histogram has kHistBuckets buckets of nanosecond values, log-linear: 0..3 one bucket each,
/// then every power of two [2^e, 2^(e+1)) split in 4 equal buckets (each at most 25% wide), up to
/// 2^64 - 1 in bucket 251. 4 buckets are spare, to keep the slot a whole number of lines.
inline constexpr uint32_t kHistBuckets = 256;
inline constexpr uint32_t kHistBucketsUsed = 252;

/// The bucket holding value `v`.
[[nodiscard]] constexpr uint32_t hist_bucket(uint64_t v) noexcept {
  if (v < 4) return static_cast<uint32_t>(v);
  const uint32_t e = 63 - static_cast<uint32_t>(__builtin_clzll(v));  // 2^e <= v < 2^(e+1), e >= 2
  return ((e - 1) << 2) + static_cast<uint32_t>((v >> (e - 2)) & 3);
}
/// The smallest value bucket `i` holds (i < kHistBucketsUsed).
[[nodiscard]] constexpr uint64_t hist_bucket_low(uint32_t i) noexcept {
  if (i < 4) return i;
  const uint32_t e = (i >> 2) + 1;
  return (uint64_t{4} + (i & 3)) << (e - 2);
}
/// The largest value bucket `i` holds (i < kHistBucketsUsed).
[[nodiscard]] constexpr uint64_t hist_bucket_high(uint32_t i) noexcept {
  return i + 1 < kHistBucketsUsed ? hist_bucket_low(i + 1) - 1 : ~uint64_t{0};
}
static_assert(hist_bucket(4) == 4 && hist_bucket(7) == 7 && hist_bucket(8) == 8 && hist_bucket(9) == 8 &&
              hist_bucket(10) == 9 && hist_bucket(15) == 11 && hist_bucket(16) == 12 &&
              hist_bucket(~uint64_t{0}) == kHistBucketsUsed - 1);
static_assert(hist_bucket_low(12) == 16 && hist_bucket_high(11) == 15 && hist_bucket_low(8) == 8 &&
              hist_bucket_high(3) == 3);

// ---- the byte layout --------------------------------------------------------------------------

struct PageHeader {
  // Static part: written once by the creator, before magic is release-stored.
  std::atomic<uint64_t> magic;       // 0    kMagic, stored last (release)
  uint32_t layout_version;           // 8    kLayoutVersion
  uint32_t header_size;              // 12   sizeof(PageHeader)
  uint64_t page_size;                // 16   bytes of the whole page (the file's size)
  int32_t pid;                       // 24   busd's pid
  uint32_t max_lanes;                // 28   lane slots (0: no lane table, as in older v1 pages)
  uint64_t start_time_ns;            // 32   CLOCK_REALTIME when busd created the page
  char busd_version[kVersionSize];   // 40   NUL-padded
  uint32_t global_count;             // 72   kGlobalCount
  uint32_t global_stride;            // 76   sizeof(GlobalCell)
  uint32_t max_agents;               // 80   agent slots
  uint32_t agent_stride;             // 84   sizeof(AgentSlot)
  uint32_t max_patterns;             // 88   ordinary pattern slots; one overflow slot follows
  uint32_t pattern_stride;           // 92   sizeof(PatternSlot)
  uint64_t globals_offset;           // 96
  uint64_t agents_offset;            // 104
  uint64_t patterns_offset;          // 112
  uint64_t lanes_offset;             // 120  (0 in older v1 pages: no lane table)
  // Live part, its own two lines: written by busd's loop.
  alignas(kFalseSharingRange) std::atomic<uint64_t> heartbeat_ns;  // 128  CLOCK_REALTIME; 0 = stopped
  std::atomic<uint64_t> generation;  // 136  +1 whenever a slot of any table changes state
  // Static like the first line (written once, before magic), here because that line is full.
  uint32_t lane_stride;              // 144  sizeof(LaneSlot)
  uint32_t max_links;                // 148  link slots (0: no link table, as in older v1 pages)
  uint64_t links_offset;             // 152  (0 in older v1 pages)
  uint32_t link_stride;              // 160  sizeof(LinkSlot)
  uint32_t reserved2;                // 164
  uint64_t histograms_offset;        // 168  (0 in older v1 pages: no histograms)
  uint32_t histogram_count;          // 176  kHistCount (0 in older v1 pages)
  uint32_t histogram_stride;         // 180  sizeof(HistogramSlot)
  uint64_t reserved3[9];             // 184
};

struct alignas(kFalseSharingRange) GlobalCell {
  std::atomic<uint64_t> value;
  uint64_t reserved[15];
};

enum class SlotState : uint32_t {
  Free = 0,      // unused (a reader skips it)
  Active = 1,    // an agent is registered / a pattern has subscribers
  Dead = 2,      // the agent died; busd is reclaiming its rings (counters still shown)
  Overflow = 3,  // the pattern table's last slot: every pattern that found no free slot
  Closed = 4,    // a lane that closed: its last counters stay shown until the slot is reused
};

/// Per-agent counters: the part of an AgentSlot the thread serving the agent writes.
/// in/out are busd's view: inbound ring = agent to busd, outbound ring = busd to agent.
struct alignas(kCacheLine) AgentCounters {
  std::atomic<uint64_t> messages_in;          // 0    messages accepted from the agent
  std::atomic<uint64_t> messages_out;         // 8    messages delivered to the agent
  std::atomic<uint64_t> bytes_in;             // 16
  std::atomic<uint64_t> bytes_out;            // 24
  std::atomic<uint64_t> drops_slow_consumer;  // 32   deliveries to it dropped: its ring was full
  std::atomic<uint64_t> drops_acl;            // 40   its messages refused by an ACL
  std::atomic<uint64_t> drops_too_large;      // 48   its messages above the size limit
  std::atomic<uint64_t> drops_verify;         // 56   its messages that failed verification
  std::atomic<uint64_t> subscriptions;        // 64   gauge
  std::atomic<uint64_t> pending_requests;     // 72   gauge: its requests awaiting a reply
  std::atomic<uint64_t> inbound_high_water;   // 80   most bytes ever queued, agent to busd
  std::atomic<uint64_t> outbound_high_water;  // 88   most bytes ever queued, busd to agent
                                              //      (both sampled once per routing pass)
  std::atomic<uint64_t> inbound_depth;        // 96   gauge: bytes queued agent to busd now (copied once a second)
  std::atomic<uint64_t> outbound_depth;       // 104  gauge: bytes queued busd to agent now (copied once a second)
  std::atomic<uint64_t> slow_waiting_bytes;   // 112  gauge: bytes busd holds for it (slow consumer; once a second)
  uint64_t reserved[1];                       // 120
};

struct alignas(kCacheLine) AgentSlot {
  // Descriptor: written by the control loop under seq.
  std::atomic<uint64_t> seq;              // 0    seqlock: odd while written, +2 per change
  std::atomic<uint32_t> state;            // 8    SlotState
  std::atomic<uint32_t> agent_id;         // 12
  std::atomic<int32_t> pid;               // 16
  std::atomic<uint32_t> uid;              // 20
  std::atomic<uint32_t> gid;              // 24
  std::atomic<uint32_t> reserved0;        // 28
  std::atomic<uint64_t> name[kNameSize / 8];  // 32  the name's bytes, NUL-padded
  std::atomic<uint64_t> opened_ns;        // 96   CLOCK_REALTIME when the agent registered
  uint64_t reserved1[3];                  // 104
  AgentCounters counters;                 // 128
};

/// Per-pattern counters. messages/bytes count deliveries (one per subscriber reached).
struct alignas(kCacheLine) PatternCounters {
  std::atomic<uint64_t> subscribers;  // 0    gauge: subscriptions with this pattern
  std::atomic<uint64_t> messages;     // 8    deliveries through this pattern
  std::atomic<uint64_t> bytes;        // 16
  std::atomic<uint64_t> drops;        // 24   deliveries dropped (slow consumer)
  uint64_t reserved[4];               // 32
};

struct alignas(kCacheLine) PatternSlot {
  std::atomic<uint64_t> seq;                        // 0    as AgentSlot::seq
  std::atomic<uint32_t> state;                      // 8    SlotState
  std::atomic<uint32_t> reserved0;                  // 12
  std::atomic<uint64_t> pattern[kPatternSize / 8];  // 16   the pattern's bytes, NUL-padded
  uint64_t reserved1[6];                            // 144
  PatternCounters counters;                         // 192
};

/// Per-lane counters, one direction per index: [0] is agent[0] to agent[1] (ring 0 of the lane,
/// written by agent[0]), [1] the other way. busd copies the totals it reads in the lane's own
/// header (shm/lane.hpp LaneSide) now and then (CountersPage::lane_set).
struct alignas(kCacheLine) LaneCounters {
  std::atomic<uint64_t> messages[2];     // 0    messages written into the lane's ring
  std::atomic<uint64_t> bytes[2];        // 16
  std::atomic<uint64_t> would_block[2];  // 32   writes that found the ring full
  uint64_t reserved[2];                  // 48
};

/// A direct lane between two local agents (busd sets it up; their messages skip busd).
/// Active = open; Closed = torn down, last counters kept until the slot is reused.
struct alignas(kCacheLine) LaneSlot {
  std::atomic<uint64_t> seq;                     // 0    as AgentSlot::seq
  std::atomic<uint32_t> state;                   // 8    SlotState: Free, Active, Closed
  std::atomic<uint32_t> lane_id;                 // 12
  std::atomic<uint32_t> agent_id[2];             // 16   agent[0] writes ring 0 (the lower id)
  std::atomic<uint64_t> opened_ns;               // 24   CLOCK_REALTIME when busd set it up
  std::atomic<uint64_t> name[2][kNameSize / 8];  // 32   the agents' names, as AgentSlot::name
  uint64_t reserved[4];                          // 160
  LaneCounters counters;                         // 192
};

/// What kind of transport a link runs over (LinkSlot::kind).
enum class LinkKind : uint32_t { Unknown = 0, Tcp = 1, Dpdk = 2, Rdma = 3 };
[[nodiscard]] constexpr const char* to_string(LinkKind k) noexcept {
  switch (k) {
    case LinkKind::Tcp: return "tcp";
    case LinkKind::Dpdk: return "dpdk";
    case LinkKind::Rdma: return "rdma";
    case LinkKind::Unknown: break;
  }
  return "?";
}

/// Per-peer link counters, written by busd's loop (which runs every link). Totals over every
/// connection to the peer; gauges (up, held_bytes, rtt_ns, interests, remote_agents) are now.
struct alignas(kCacheLine) LinkCounters {
  std::atomic<uint64_t> up;                 // 0    gauge: 1 while the link is up (handshake done)
  std::atomic<uint64_t> messages_out;       // 8    messages sent to the peer
  std::atomic<uint64_t> messages_in;        // 16   messages received from it
  std::atomic<uint64_t> bytes_out;          // 24   envelope bytes of messages_out
  std::atomic<uint64_t> bytes_in;           // 32   envelope bytes of messages_in
  std::atomic<uint64_t> drops_held_full;    // 40   messages for it dropped: its hold buffer was full
  std::atomic<uint64_t> drops_acl;          // 48   messages and interests refused by the link's grants
  std::atomic<uint64_t> held_bytes;         // 56   gauge: bytes held for it (unacknowledged or waiting for the link)
  std::atomic<uint64_t> held_high_water;    // 64   most bytes ever held for it
  std::atomic<uint64_t> connects;           // 72   connections made (handshake done)
  std::atomic<uint64_t> disconnects;        // 80   connections lost
  std::atomic<uint64_t> retransmits;        // 88   datagram links: packets sent again
  std::atomic<uint64_t> naks;               // 96   datagram links: holes named to the peer
  std::atomic<uint64_t> datagrams_corrupt;  // 104  datagram links: checksum mismatches dropped
  std::atomic<uint64_t> datagrams_dropped;  // 112  datagram links: other packets dropped
  std::atomic<uint64_t> rtt_ns;             // 120  gauge: smoothed round trip, busd to busd (heartbeat echo); 0 = none yet
  std::atomic<uint64_t> interests;          // 128  gauge: subject interests the peer holds here
  std::atomic<uint64_t> remote_agents;      // 136  gauge: the peer's agents known here
  // Queue-pair links (kind rdma; 0 for the others):
  std::atomic<uint64_t> doorbells;          // 144  chains of work requests posted (ibv_post_send calls)
  std::atomic<uint64_t> credit_stalls;      // 152  output held back: the peer's ring full or no receive WR to spare
  std::atomic<uint64_t> queue_stalls;       // 160  output held back: the local send queue full
  std::atomic<uint64_t> completion_errors;  // 168  completions with an error status (each took the link down)
  uint64_t reserved[2];                     // 176
};

/// A peer busd: one of this busd's [[links]], or a node that dialed in. Active = known to
/// busd (up or not: LinkCounters::up); Closed = forgotten, last counters kept until reuse.
struct alignas(kCacheLine) LinkSlot {
  std::atomic<uint64_t> seq;                         // 0    as AgentSlot::seq
  std::atomic<uint32_t> state;                       // 8    SlotState: Free, Active, Closed
  std::atomic<uint32_t> kind;                        // 12   LinkKind
  std::atomic<uint64_t> opened_ns;                   // 16   CLOCK_REALTIME when busd took the slot
  uint64_t reserved0;                                // 24
  std::atomic<uint64_t> node[kNameSize / 8];         // 32   the peer's node name ("" until its first Hello)
  std::atomic<uint64_t> address[kNameSize / 8];      // 96   what busd dials, or where the peer dialed from
  uint64_t reserved1[4];                             // 160
  LinkCounters counters;                             // 192
};

/// One latency histogram (see Hist), written by busd's loop. count, sum_ns and max_ns are stored
/// after the bucket: a reader racing a record may see a bucket total one ahead of count.
struct alignas(kCacheLine) HistogramSlot {
  std::atomic<uint64_t> count;                   // 0    values recorded
  std::atomic<uint64_t> sum_ns;                  // 8    their sum (for the mean)
  std::atomic<uint64_t> max_ns;                  // 16   the largest
  uint64_t reserved[5];                          // 24
  std::atomic<uint64_t> buckets[kHistBuckets];  // 64   values per bucket (hist_bucket)
};

static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free &&
              std::atomic<int32_t>::is_always_lock_free, "counters live in shared memory");
static_assert(sizeof(std::atomic<uint64_t>) == 8 && alignof(std::atomic<uint64_t>) == 8);
static_assert(sizeof(std::atomic<uint32_t>) == 4 && sizeof(std::atomic<int32_t>) == 4);
static_assert(offsetof(PageHeader, busd_version) == 40 && offsetof(PageHeader, global_count) == 72 &&
              offsetof(PageHeader, globals_offset) == 96 && offsetof(PageHeader, patterns_offset) == 112 &&
              offsetof(PageHeader, heartbeat_ns) == 128 && offsetof(PageHeader, generation) == 136 &&
              offsetof(PageHeader, max_lanes) == 28 && offsetof(PageHeader, lanes_offset) == 120 &&
              offsetof(PageHeader, lane_stride) == 144 && sizeof(PageHeader) == 256,
              "PageHeader v1 is fixed: change kLayoutVersion with it");
static_assert(sizeof(GlobalCell) == 128);
static_assert(sizeof(AgentCounters) == 128 && offsetof(AgentCounters, subscriptions) == 64 &&
              offsetof(AgentCounters, outbound_high_water) == 88);
static_assert(offsetof(AgentSlot, state) == 8 && offsetof(AgentSlot, pid) == 16 &&
              offsetof(AgentSlot, name) == 32 && offsetof(AgentSlot, opened_ns) == 96 &&
              offsetof(AgentSlot, counters) == 128 && sizeof(AgentSlot) == 256,
              "AgentSlot v1 is fixed: change kLayoutVersion with it");
static_assert(sizeof(PatternCounters) == 64);
static_assert(offsetof(PatternSlot, pattern) == 16 && offsetof(PatternSlot, counters) == 192 &&
              sizeof(PatternSlot) == 256, "PatternSlot v1 is fixed: change kLayoutVersion with it");
static_assert(sizeof(LaneCounters) == 64 && offsetof(LaneCounters, bytes) == 16 &&
              offsetof(LaneCounters, would_block) == 32);
static_assert(offsetof(LaneSlot, lane_id) == 12 && offsetof(LaneSlot, agent_id) == 16 &&
              offsetof(LaneSlot, opened_ns) == 24 && offsetof(LaneSlot, name) == 32 &&
              offsetof(LaneSlot, counters) == 192 && sizeof(LaneSlot) == 256,
              "LaneSlot v1 is fixed: change kLayoutVersion with it");
static_assert(offsetof(PageHeader, max_links) == 148 && offsetof(PageHeader, links_offset) == 152 &&
              offsetof(PageHeader, link_stride) == 160 && sizeof(PageHeader) == 256,
              "PageHeader v1 is fixed: change kLayoutVersion with it");
static_assert(offsetof(LinkCounters, doorbells) == 144 && offsetof(LinkCounters, completion_errors) == 168);
static_assert(offsetof(LinkCounters, rtt_ns) == 120 && offsetof(LinkCounters, remote_agents) == 136 &&
              sizeof(LinkCounters) == 192 && offsetof(LinkSlot, node) == 32 && offsetof(LinkSlot, address) == 96 &&
              offsetof(LinkSlot, counters) == 192 && sizeof(LinkSlot) == 384,
              "LinkSlot v1 is fixed: change kLayoutVersion with it");

static_assert(offsetof(PageHeader, histograms_offset) == 168 && offsetof(PageHeader, histogram_count) == 176 &&
              offsetof(PageHeader, histogram_stride) == 180 && sizeof(PageHeader) == 256,
              "PageHeader v1 is fixed: change kLayoutVersion with it");
static_assert(offsetof(HistogramSlot, buckets) == 64 && sizeof(HistogramSlot) == 64 + 8 * kHistBuckets,
              "HistogramSlot v1 is fixed: change kLayoutVersion with it");

inline constexpr uint64_t kGlobalsOffset = sizeof(PageHeader);
inline constexpr uint64_t kAgentsOffset = kGlobalsOffset + kGlobalCount * sizeof(GlobalCell);
static_assert(kAgentsOffset == 5760 && kAgentsOffset % kFalseSharingRange == 0);

/// Offset of the pattern table in a page with `max_agents` agent slots.
[[nodiscard]] constexpr uint64_t patterns_offset(uint32_t max_agents) noexcept {
  return kAgentsOffset + uint64_t{max_agents} * sizeof(AgentSlot);
}

/// Offset of the lane table (after the pattern table and its overflow slot).
[[nodiscard]] constexpr uint64_t lanes_offset(uint32_t max_agents, uint32_t max_patterns) noexcept {
  return patterns_offset(max_agents) + (uint64_t{max_patterns} + 1) * sizeof(PatternSlot);
}

/// Offset of the link table (after the lane table).
[[nodiscard]] constexpr uint64_t links_offset(uint32_t max_agents, uint32_t max_patterns, uint32_t max_lanes) noexcept {
  return lanes_offset(max_agents, max_patterns) + uint64_t{max_lanes} * sizeof(LaneSlot);
}

/// Offset of the histograms (after the link table).
[[nodiscard]] constexpr uint64_t histograms_offset(uint32_t max_agents, uint32_t max_patterns, uint32_t max_lanes,
                                                   uint32_t max_links) noexcept {
  return links_offset(max_agents, max_patterns, max_lanes) + uint64_t{max_links} * sizeof(LinkSlot);
}

/// Bytes of a page with these table capacities (the pattern table has one more slot: overflow).
[[nodiscard]] constexpr uint64_t page_size(uint32_t max_agents, uint32_t max_patterns, uint32_t max_lanes,
                                           uint32_t max_links = 0) noexcept {
  return histograms_offset(max_agents, max_patterns, max_lanes, max_links) + kHistCount * sizeof(HistogramSlot);
}

// ---- reading ----------------------------------------------------------------------------------

/// The static header, checked and copied when the page was opened.
struct PageInfo {
  uint32_t layout_version = 0;
  int32_t pid = 0;
  uint64_t start_time_ns = 0;
  uint64_t page_size = 0;
  std::string busd_version;
  uint32_t max_agents = 0;
  uint32_t max_patterns = 0;  // ordinary slots (the overflow slot is extra)
  uint32_t max_lanes = 0;     // 0: the page has no lane table
  uint32_t max_links = 0;     // 0: the page has no link table
  uint32_t histogram_count = 0;  // 0: the page has no histograms
};

struct GlobalSnapshot {
  std::array<uint64_t, kGlobalCount> values{};  // a global the page lacks reads as 0
  [[nodiscard]] uint64_t operator[](Global g) const noexcept { return values[static_cast<size_t>(g)]; }
};

struct AgentSnapshot {
  uint32_t slot = 0;
  uint64_t generation = 0;  // the slot's seq: changes when the slot is reused
  SlotState state = SlotState::Free;
  uint32_t agent_id = 0;
  std::string name;
  int32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t opened_ns = 0;
  uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
  uint64_t drops_slow_consumer = 0, drops_acl = 0, drops_too_large = 0, drops_verify = 0;
  uint64_t subscriptions = 0, pending_requests = 0;
  uint64_t inbound_high_water = 0, outbound_high_water = 0;
  uint64_t inbound_depth = 0, outbound_depth = 0, slow_waiting_bytes = 0;  // 0 in pages from before them
  [[nodiscard]] uint64_t drops() const noexcept {
    return drops_slow_consumer + drops_acl + drops_too_large + drops_verify;
  }
};

struct PatternSnapshot {
  uint32_t slot = 0;
  uint64_t generation = 0;
  bool overflow = false;  // the "other patterns" slot: pattern is empty
  std::string pattern;
  uint64_t subscribers = 0, messages = 0, bytes = 0, drops = 0;
};

struct LaneSnapshot {
  uint32_t slot = 0;
  uint64_t generation = 0;  // the slot's seq: changes when the slot is reused
  bool open = false;        // false: closed, its last counters (the slot is not reused yet)
  uint32_t lane_id = 0;
  std::array<uint32_t, 2> agent_id{};  // direction 0 is agent_id[0] to agent_id[1]
  std::array<std::string, 2> name;
  uint64_t opened_ns = 0;
  std::array<uint64_t, 2> messages{}, bytes{}, would_block{};  // per direction
};

struct LinkSnapshot {
  uint32_t slot = 0;
  uint64_t generation = 0;  // the slot's seq: changes when the slot is reused
  bool open = false;        // false: busd forgot the peer, its last counters (not reused yet)
  LinkKind kind = LinkKind::Unknown;
  std::string node;     // "" until the peer's first Hello
  std::string address;  // what busd dials, or where the peer dialed from
  uint64_t opened_ns = 0;
  bool up = false;
  uint64_t messages_out = 0, messages_in = 0, bytes_out = 0, bytes_in = 0;
  uint64_t drops_held_full = 0, drops_acl = 0, held_bytes = 0, held_high_water = 0;
  uint64_t connects = 0, disconnects = 0;
  uint64_t retransmits = 0, naks = 0, datagrams_corrupt = 0, datagrams_dropped = 0;
  uint64_t rtt_ns = 0, interests = 0, remote_agents = 0;
  uint64_t doorbells = 0, credit_stalls = 0, queue_stalls = 0, completion_errors = 0;  // rdma links
};

struct HistogramSnapshot {
  std::string name;  // kHists' name, or "histogram_<i>" for one this reader does not know
  uint64_t count = 0, sum_ns = 0, max_ns = 0;
  std::array<uint64_t, kHistBuckets> buckets{};
  /// Values in the buckets (may be one ahead of count while busd records).
  [[nodiscard]] uint64_t total() const noexcept;
  /// The value at quantile q (0..1): the upper bound of the bucket holding it, at most max_ns
  /// (at most 25% above the true value). 0 when empty.
  [[nodiscard]] uint64_t quantile(double q) const noexcept;
  [[nodiscard]] uint64_t mean_ns() const noexcept { return count == 0 ? 0 : sum_ns / count; }
  /// What was recorded since `before` (the same histogram read earlier): counts and sums
  /// subtracted; max_ns is the largest bucket bound seen since, capped by max_ns.
  [[nodiscard]] HistogramSnapshot since(const HistogramSnapshot& before) const noexcept;
};

/// A counters page mapped read-only (or a caller's buffer, see from_bytes). Move-only.
/// Every accessor reads the live page: call again for a newer snapshot.
class CountersView {
 public:
  CountersView() = default;
  CountersView(CountersView&& o) noexcept;
  CountersView& operator=(CountersView&& o) noexcept;
  CountersView(const CountersView&) = delete;
  CountersView& operator=(const CountersView&) = delete;
  ~CountersView();

  /// Checks a page image in memory the caller keeps alive and unshrunk (the decoder under
  /// open_counters; tests and fuzzers call it directly). `bytes` must be 128-byte aligned, as a
  /// mapping is.
  [[nodiscard]] static Expected<CountersView> from_bytes(std::span<const std::byte> bytes);

  [[nodiscard]] const PageInfo& info() const noexcept { return info_; }
  [[nodiscard]] uint64_t heartbeat_ns() const noexcept;
  [[nodiscard]] uint64_t generation() const noexcept;
  /// The heartbeat is within kStaleAfterNs of `now_realtime_ns` (either way: a clock step back).
  [[nodiscard]] bool live(uint64_t now_realtime_ns) const noexcept;

  [[nodiscard]] GlobalSnapshot globals() const noexcept;
  /// Active and dead agents, by slot. A slot busd keeps rewriting during the copy is left out.
  [[nodiscard]] std::vector<AgentSnapshot> agents() const;
  /// Active patterns by slot, then the overflow slot if anything went there.
  [[nodiscard]] std::vector<PatternSnapshot> patterns() const;
  /// Open and closed lanes, by slot (empty when the page has no lane table). A slot busd keeps
  /// rewriting during the copy is left out.
  [[nodiscard]] std::vector<LaneSnapshot> lanes() const;
  /// Peer busds (open and closed link slots), by slot (empty when the page has no link
  /// table). A slot busd keeps rewriting during the copy is left out.
  [[nodiscard]] std::vector<LinkSnapshot> links() const;
  /// The latency histograms (see Hist), in page order (empty when the page has none).
  [[nodiscard]] std::vector<HistogramSnapshot> histograms() const;

 private:
  const std::byte* base_ = nullptr;
  size_t size_ = 0;
  bool owned_ = false;  // base_ is our mmap
  PageInfo info_;
  uint32_t global_count_ = 0, global_stride_ = 0, agent_stride_ = 0, pattern_stride_ = 0,
           lane_stride_ = 0, link_stride_ = 0, histogram_stride_ = 0;
  uint64_t globals_offset_ = 0, agents_offset_ = 0, patterns_offset_ = 0, lanes_offset_ = 0, links_offset_ = 0,
           histograms_offset_ = 0;

  friend Expected<CountersView> open_counters(const std::string& path);
};

/// Maps the page at `path` read-only and checks it (magic, version, sizes against the file).
/// NotFound when there is no file; Corrupt / VersionMismatch with the values when it is wrong.
[[nodiscard]] Expected<CountersView> open_counters(const std::string& path);

/// Whether process `pid` exists (kill(pid, 0); EPERM counts as alive). False for pid <= 0.
[[nodiscard]] bool process_alive(int32_t pid) noexcept;

}  // namespace bus::counters
