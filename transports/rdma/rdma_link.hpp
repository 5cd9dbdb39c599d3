// The RDMA link: link frames between two busd over one reliable-connected (RC) queue pair.
//
// Design
// ------
// Set-up: librdmacm (rdma_cm) resolves the peer's address and route, creates the RC queue pair
// and connects; it works alike over InfiniBand and RoCE (Soft-RoCE `rxe` included). Each side
// puts its *window* in the connect private data (40 bytes): where its receive ring is, the key
// that lets the peer write there, and where its credit slots are (verbs.hpp, Window).
//
// Data path: RDMA WRITE WITH IMMEDIATE into the peer's ring, with credit return. Not SEND/RECV
// with a shared receive queue, because:
//   - a link carries a stream of variable-size frames (a 100-byte envelope, then a 60 KiB one).
//     SEND/RECV lands every message in a fixed-size posted buffer: small frames waste most of it,
//     large ones either span several buffers (a reassembly copy) or force every buffer to be
//     max_frame bytes (memory = depth x max_frame). A byte ring holds frames packed, back to
//     back, each one contiguous, so the receiver hands them to the session as views into the
//     ring, with no copy, exactly as the TCP link hands out views into its read buffer;
//   - one WRITE carries a whole batch of frames (contiguous in the ring): work requests, and
//     completions at the peer, are per batch, not per frame;
//   - flow control is one number per direction (how far the peer consumed its ring), plus the
//     count of receive WRs it reposted; a shared receive queue shares buffers between many
//     queue pairs, which busd (a handful of links, each with its own ring) does not need;
//   - the receive WRs that the immediates consume carry no buffer (zero scatter entries): they
//     cost nothing to repost, in one chain per poll pass.
//   The price: each ring is registered for remote write (a peer that broke the rules could
//   scribble in it: what it writes is checked like any wire bytes, frame by frame), and the
//   window is exchanged at connect.
//
// Ring: a side's receive ring of N bytes is addressed by a virtual position p (u64, from 0);
// the byte lives at ring[p % N]. A record is the stream framing the TCP link uses (u32 length,
// then the link frame: link/wire.hpp) and never straddles the ring's end: a record that would
// starts the next lap, and the WRITE that carries it says so (the wrap bit of its immediate).
// The sender keeps a mirror of the peer's ring as its registered staging area: a batch is
// copied there once and written from there to the same offset at the peer.
//   immediate (32 bits): bit 31 = 0: data, bit 30 = wrap (skip to the next lap first), bits
//                        0..29 = bytes written (whole records);
//                        bit 31 = 1: credit return number (mod 2^30), 16 bytes written to the
//                        peer's credit slot (that number % credit_slots): u64 ring position
//                        consumed, u64 receive WRs consumed (absolute, so a later return
//                        supersedes an earlier one).
// Credits: a sender writes only into ring space the peer returned (N - (tail - consumed)), and
// sends only while the peer has a receive WR posted for it (credit_slots - (sent - consumed));
// the last receive credit is kept for a credit return, so both sides stalled can always tell
// each other. A receiver returns credit once a quarter of its ring or half of its receive WRs
// were consumed since the last return, which a stalled sender (needing at most 2 x max record
// <= N/2) always triggers. max_frame + 4 <= N / 4 is required of both sides.
//
// Send queue: a batch is a chain of WRITE work requests posted with one ibv_post_send (one
// doorbell). Every Nth request is signaled (IBV_SEND_SIGNALED), and so is the one that fills
// the queue; a polled completion retires every request up to it. Requests outstanding never
// exceed the queue (max_send_wr), completions never exceed the CQ (created for send_depth +
// recv_depth: the link refuses a smaller one). Records up to the device's max_inline_data go
// inline (IBV_SEND_INLINE: no DMA read of the staging area).
//
// Completions are polled from busd's poll loop (receive(), transmit(), has_input()); before
// busd sleeps, arm() asks for a completion event on the CQ's channel (wait_fd()). Nothing on
// the data path makes a system call, allocates or locks. A completion error (retry exceeded,
// remote access, a flushed queue after the QP broke) or a peer that breaks the rules takes the
// link Down with the verbs status string ("rdma write to 10.0.0.2: transport retry counter
// exceeded (status 12, vendor error 0x81)"); busd's peer then reconnects and the session above
// resends what the peer did not acknowledge: exactly once, in order, across the reconnect.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "link/link.hpp"
#include "rdma/verbs.hpp"

namespace bus::rdma {

/// What the RDMA link counts beyond link::LinkCounters.
struct RdmaCounters {
  uint64_t doorbells = 0;         // ibv_post_send calls (chains)
  uint64_t wrs_posted = 0;        // send WRs (data and credit)
  uint64_t wrs_signaled = 0;
  uint64_t wrs_inline = 0;
  uint64_t credit_returns_sent = 0, credit_returns_received = 0;
  uint64_t ring_stalls = 0;       // output held back: the peer's ring was full
  uint64_t recv_credit_stalls = 0;  // output held back: the peer had no receive WR to spare
  uint64_t sq_stalls = 0;         // output held back: the send queue was full
  uint64_t wc_errors = 0;         // completions with an error status
  uint64_t recvs_posted = 0;
};

class RdmaLink final : public link::Link {
 public:
  /// Takes a connection (Connecting or Up). `peer` names the other side in messages.
  RdmaLink(std::unique_ptr<Verbs> v, const Options& o, std::string peer);
  ~RdmaLink() override;
  RdmaLink(const RdmaLink&) = delete;
  RdmaLink& operator=(const RdmaLink&) = delete;

  [[nodiscard]] link::LinkState state() const noexcept override { return state_; }
  [[nodiscard]] const std::string& error() const noexcept override { return error_; }
  [[nodiscard]] int wait_fd() const noexcept override { return v_->wait_fd(); }
  [[nodiscard]] bool wants_write() const noexcept override { return false; }
  void finish_connect() override;
  Result<size_t> transmit(link::Session& s) override;
  Result<size_t> receive(std::vector<link::Frame>& out, size_t max) override;
  void close(const std::string& why) override;
  /// The link's counts; the queue-pair fields (doorbells, stalls, completion errors) are
  /// derived here from rdma_counters(), the one place they are counted.
  [[nodiscard]] const link::LinkCounters& counters() const noexcept override;
  [[nodiscard]] bool has_input() const noexcept override;
  [[nodiscard]] bool arm() noexcept override;
  void disarm() noexcept override;
  /// 0 (now) when output was held back and credit came back since: call transmit().
  [[nodiscard]] uint64_t timer_ns() const noexcept override { return kick_ ? 0 : UINT64_MAX; }

  [[nodiscard]] const RdmaCounters& rdma_counters() const noexcept { return rc_; }
  [[nodiscard]] const std::string& peer_name() const noexcept { return peer_; }
  /// Send WRs posted and not yet retired (tests: never above the queue).
  [[nodiscard]] uint64_t outstanding() const noexcept { return posted_ - retired_; }
  /// The ring and credit positions, for failure messages.
  [[nodiscard]] std::string debug_state() const;

 private:
  static constexpr int kPoll = 32;  // completions per ibv_poll_cq

  void setup();
  void down(std::string why);
  bool reap();                        // polls and handles completions; false: the link went Down
  bool handle(const ibv_wc& wc);
  bool on_data(uint32_t imm);
  bool on_credit(uint32_t imm);
  bool repost();                      // reposts the receive WRs consumed, one chain
  bool parse(std::vector<link::Frame>& out, size_t max);
  bool maybe_credit();                // returns credit if due and possible
  bool post(size_t n);                // posts wr_[0..n) as one chain
  [[nodiscard]] bool credit_due(uint64_t head) const noexcept;
  [[nodiscard]] bool can_credit() const noexcept;
  [[nodiscard]] bool peek() const noexcept;  // completions buffered or waiting in the CQ
  void fill_wr(size_t i, uint64_t start, uint32_t len, bool wrap);
  /// IBV_SEND_INLINE when `len` fits the device's inline limit; IBV_SEND_SIGNALED on every
  /// Nth work request and on the one that fills the send queue (counted in rc_).
  [[nodiscard]] unsigned send_flags(uint64_t idx, uint32_t len) noexcept;
  [[nodiscard]] uint64_t lap_end(uint64_t p, uint64_t n) const noexcept { return (p / n + 1) * n; }

  std::unique_ptr<Verbs> v_;
  Options o_;
  std::string peer_;
  link::LinkState state_ = link::LinkState::Connecting;
  std::string error_;
  Limits lim_;
  Window pw_;      // the peer's window
  Region in_;      // this side's ring + credit slots
  Region out_;     // staging (mirror of the peer's ring) + credit scratch
  uint32_t sig_every_ = 1;

  // Sending.
  uint64_t tx_tail_ = 0;        // next position in the peer's ring
  uint64_t peer_head_ = 0;      // what the peer consumed (credit)
  uint64_t msgs_sent_ = 0;      // WRITE_WITH_IMM sent (each takes one receive WR of the peer)
  uint64_t peer_msgs_done_ = 0; // of those, consumed and reposted by the peer
  uint64_t credits_out_ = 0;    // credit returns sent
  uint64_t posted_ = 0, retired_ = 0, last_signaled_ = 0;  // send WR indices
  bool stalled_ = false;        // output held back for want of credit or queue room
  bool kick_ = false;           // ... and something came back since

  // Receiving.
  uint64_t rx_tail_ = 0, rx_parse_ = 0, rx_head_ = 0;
  bool has_gap_ = false;
  uint64_t gap_at_ = 0;
  uint64_t msgs_done_ = 0;      // receive completions handled (their WRs reposted or about to be)
  uint32_t to_repost_ = 0;
  uint64_t credits_in_ = 0;
  uint64_t reported_head_ = 0, reported_msgs_ = 0;
  uint32_t calls_ = 0;          // receive() calls: the connection's events are looked at now and then

  // Preallocated work requests (no allocation per batch).
  std::vector<ibv_send_wr> wr_;
  std::vector<ibv_sge> sge_;
  std::vector<ibv_recv_wr> rwr_;
  mutable std::array<ibv_wc, kPoll> wc_{};
  mutable int wc_n_ = 0, wc_i_ = 0;
  mutable bool cq_broken_ = false;

  mutable link::LinkCounters c_;  // counters() fills in its queue-pair fields from rc_
  RdmaCounters rc_;
};

}  // namespace bus::rdma
