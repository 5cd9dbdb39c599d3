// What the RDMA link calls, and nothing more: one reliable-connected queue pair with one
// completion queue, two registered memory regions, and the peer's window (its ring and its
// credit slots, learnt at connect). The link's logic (rdma_link.hpp: rings, credits, batching,
// signaling) is written against this interface; ibv_verbs.hpp implements it over libibverbs and
// librdmacm, fake_verbs.hpp in memory for tests (with the real limits enforced).
//
// The data-path calls take the real libibverbs structures (ibv_send_wr chains, ibv_recv_wr
// chains, ibv_wc arrays), so the real implementation passes them through untouched: one
// virtual call per batch (a chain, a poll of up to N completions), never one per message.
#pragma once

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "bus/error.hpp"

namespace bus::rdma {

/// Sizes a link asks for. Every knob's default lives here (and nowhere else).
struct Options {
  uint32_t ring_bytes = 1u << 20;  // this side's receive ring (the peer writes into it);
                                   // at least 4 x (max_frame + 4), at most 1 GiB
  uint32_t max_frame = 64u << 10;  // largest link frame (header + body) either side sends
  uint32_t send_depth = 256;       // send work requests outstanding (the send queue)
  uint32_t recv_depth = 256;       // receive work requests posted (= credit slots the peer writes)
  uint32_t signal_every = 16;      // every Nth send WR is signaled (at most send_depth / 2)
  uint32_t inline_bytes = 128;     // inline data asked for (the device may give more or less)
  uint32_t batch_wrs = 32;         // send WRs per doorbell (per ibv_post_send), at most
  // rdma_cm picks the device, port and source GID by resolving the addresses; these two check
  // what it picked (after address resolution: a mismatch takes the connection down, saying what
  // rdma_cm chose; see check_resolved() in ibv_verbs.hpp):
  uint32_t ib_port = 0;            // 0 = any; else the port (1..255) it must resolve to
  int32_t gid_index = -1;          // -1 = any; else the index (0..255) of the source GID in the port's GID table
};

/// What the queue pair and completion queue were created with (real: what the device granted).
struct Limits {
  uint32_t max_send_wr = 0;  // send WRs outstanding: posted and not yet retired by a polled completion
  uint32_t max_recv_wr = 0;  // receive WRs posted and not yet completed
  uint32_t cq_depth = 0;     // completions the CQ holds before it overruns (one CQ for both queues)
  uint32_t max_inline = 0;   // bytes a send WR may carry with IBV_SEND_INLINE
  uint32_t max_msg = 0;      // bytes one WR may move (the port's max_msg_sz)
};

/// A registered memory region.
struct Region {
  std::byte* addr = nullptr;
  size_t len = 0;
  uint32_t lkey = 0;
  uint32_t rkey = 0;
};

/// What a side tells its peer at connect (rdma_cm private data; see kWindowBytes).
struct Window {
  uint64_t ring_addr = 0;     // its receive ring: the peer RDMA-writes data here
  uint32_t rkey = 0;          // the key of the region holding the ring and the credit slots
  uint32_t ring_bytes = 0;
  uint64_t credit_addr = 0;   // credit_slots x 16 bytes: the peer RDMA-writes credit returns here
  uint32_t credit_slots = 0;  // = its posted receive WRs
  uint32_t max_frame = 0;     // the largest frame it accepts
};

/// The window on the wire: magic "BRDM", u16 version, u16 flags (0), then the fields above in
/// order, little-endian: 40 bytes (an InfiniBand CM REQ leaves 56 to the user).
inline constexpr uint32_t kWindowMagic = 0x4d445242;  // "BRDM"
inline constexpr uint16_t kWindowVersion = 1;
inline constexpr size_t kWindowBytes = 40;
void encode_window(const Window& w, std::byte* out) noexcept;
/// Errors: BadMessage (short, wrong magic, fields out of range), VersionMismatch.
[[nodiscard]] Expected<Window> decode_window(const void* p, size_t len);

/// Bytes of each credit return (u64 consumed ring position, u64 receive WRs consumed).
inline constexpr size_t kCreditBytes = 16;
/// Validates options; the message names the knob.
[[nodiscard]] Expected<void> check(const Options& o);
/// The range of Options::ib_port (0..255) and gid_index (-1..255), named as the config keys
/// (check() includes it).
[[nodiscard]] Expected<void> check_port_gid(const Options& o);

enum class ConnState : uint8_t { Connecting, Up, Down };

class Verbs {
 public:
  virtual ~Verbs() = default;

  // ---- connection (set-up: system calls and allocation are fine here)
  /// Drives the connection (rdma_cm events; never blocks) and says where it is. Once Up, call it
  /// after a wake-up or now and then: it notices a disconnect (the peer left, the port went down).
  virtual ConnState progress() = 0;
  /// Why it is Down ("" otherwise).
  [[nodiscard]] virtual const std::string& error() const noexcept = 0;
  /// From Up: what the QP and CQ were created with.
  [[nodiscard]] virtual const Limits& limits() const noexcept = 0;
  /// From Up: this side's receive ring followed by its credit slots (the peer writes there).
  [[nodiscard]] virtual const Region& inbound() const noexcept = 0;
  /// From Up: the peer's window.
  [[nodiscard]] virtual const Window& peer() const noexcept = 0;
  /// From Up: registers `bytes` of local memory (the send staging area; no remote access).
  [[nodiscard]] virtual Expected<Region> register_local(size_t bytes) = 0;
  /// Ends the connection (the QP flushes; the peer sees a disconnect).
  virtual void disconnect() noexcept = 0;

  // ---- data path: one call per batch, no system call, no allocation
  /// ibv_post_send: 0, or an errno value with *bad the first WR not taken.
  virtual int post_send(ibv_send_wr* wr, ibv_send_wr** bad) noexcept = 0;
  /// ibv_post_recv.
  virtual int post_recv(ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept = 0;
  /// ibv_poll_cq: completions taken (0..n), or negative on a CQ error.
  virtual int poll_cq(int n, ibv_wc* wc) noexcept = 0;

  // ---- sleeping
  /// A descriptor readable when a completion or a connection event may be there (-1: none).
  [[nodiscard]] virtual int wait_fd() const noexcept = 0;
  /// Requests a completion event before the caller sleeps (ibv_req_notify_cq).
  virtual void arm() noexcept = 0;
  /// The caller woke up: consumes and acknowledges the completion events.
  virtual void disarm() noexcept = 0;
};

}  // namespace bus::rdma
