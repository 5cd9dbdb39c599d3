// The link session layer, written once above every link kind: what makes "exactly once, in
// order" hold across a reconnect, which a transport's own retransmission (TCP's) does not.
//
//   sending   offer() gives each envelope the next sequence number and keeps it, framed and
//             ready to send, in a bounded hold buffer until the peer acknowledges it;
//   receiving on_frame() delivers Data in sequence order, drops duplicates, and answers with
//             cumulative Acks (every `ack_every` frames, and at flush_ack());
//   resuming  after a (re)connect both sides first send Resume: their session id and the last
//             sequence they received from the peer's session. Each side then frees what the
//             other already has and resends the rest from there. A peer whose session id changed
//             (it restarted and lost its state) is resent everything still held; its first
//             frame after that sets the base of the new stream.
//
// The session does no I/O and reads no clock: the link's poll loop hands it received frames,
// asks next_output() for what to write (ready-made spans: a batch of frames leaves in one
// writev), and reports with wrote() how much the transport took. Memory is bounded by
// hold_bytes; nothing is allocated per message (the control frames reuse one small buffer).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "bus/error.hpp"
#include "link/wire.hpp"

namespace bus::link {

struct SessionOptions {
  size_t hold_bytes = 8u << 20;  // bound of the hold buffer (framed bytes, unacked + unsent)
  uint32_t ack_every = 64;       // Data frames received before an Ack is sent unasked
};

struct SessionStats {
  uint64_t offered = 0, refused_full = 0;       // offer(): taken / refused (hold buffer full)
  uint64_t frames_sent = 0, frames_resent = 0;  // Data frames written (resent: after a resume)
  uint64_t delivered = 0, duplicates = 0;       // Data received: new / already delivered
  uint64_t acks_sent = 0, acks_received = 0;
  uint64_t resumes = 0, peer_restarts = 0;      // Resumes received; of those, a new peer session
  uint64_t held_high_water = 0;                 // bytes
};

class Session {
 public:
  /// `session_id`: this side's incarnation (random, non-zero; a restart picks a new one).
  Session(const SessionOptions& o, uint64_t session_id);

  // ---- sending
  /// Holds `envelope` as the next Data frame. Errors: WouldBlock (the hold buffer is full: hold
  /// it back or drop it, and count), TooLarge (it can never fit).
  [[nodiscard]] Result<uint64_t> offer(std::span<const std::byte> envelope);
  /// Whether offer() would take a body of `body` bytes now (not WouldBlock).
  [[nodiscard]] bool can_offer(size_t body) const noexcept;
  /// The same for a body gathered from several parts (a routing prefix, then the envelope).
  [[nodiscard]] Result<uint64_t> offer(std::span<const std::span<const std::byte>> parts);

  /// What to write next, in order (up to 4 spans: data, control frames, more data); empty when
  /// there is nothing. Valid until the next call on the session.
  [[nodiscard]] std::span<const std::span<const std::byte>> next_output();
  /// The transport wrote `n` bytes of what next_output() returned (n may end mid-frame).
  void wrote(size_t n) noexcept;

  // ---- receiving
  enum class Inbound : uint8_t { Deliver, Duplicate, Control };
  /// A frame from the peer. Data: Deliver (the body is the envelope, pass it on) or Duplicate
  /// (already delivered: drop). Others: Control. Errors: BadMessage when the peer breaks the
  /// protocol (an ack beyond what was sent, a gap, Data before Resume): close the connection.
  [[nodiscard]] Expected<Inbound> on_frame(const Frame& f);
  /// Queues a cumulative Ack for what was delivered, if anything is unacknowledged (the poll
  /// loop calls it when it has drained its input).
  void flush_ack() noexcept;
  /// Queues a Heartbeat carrying `stamp` (a probe: the peer answers with an echo of it).
  void heartbeat(uint64_t stamp) noexcept;
  /// Round trips: a Heartbeat whose value has kEchoBit clear is a probe, answered with a
  /// Heartbeat carrying the same value with kEchoBit set (an echo). A peer that predates echoes
  /// ignores them, as every busd ignores a Heartbeat's value otherwise, so the protocol
  /// version is the same. take_echo(): the stamp of the last echo received since the last
  /// call (kEchoBit cleared), 0 if none.
  static constexpr uint64_t kEchoBit = uint64_t{1} << 63;
  [[nodiscard]] uint64_t take_echo() noexcept { return std::exchange(echoed_, 0); }

  // ---- connection
  /// A new connection: `first` (whole frames, e.g. the link manager's Hello) goes out first,
  /// then a Resume; Data waits for the peer's Resume.
  void on_connected(std::span<const std::byte> first = {});
  /// The connection is gone: everything not acknowledged will be resent after the next Resume.
  void on_disconnected() noexcept;
  /// The peer's Resume arrived on this connection (Data flows).
  [[nodiscard]] bool resumed() const noexcept { return resumed_; }

  [[nodiscard]] uint64_t session_id() const noexcept { return id_; }
  /// The peer's session id from its last Resume (0: none yet). It changes when the peer
  /// restarted: whatever the peer knew of this side is gone.
  [[nodiscard]] uint64_t peer_session() const noexcept { return peer_session_; }
  [[nodiscard]] uint64_t last_delivered() const noexcept { return last_delivered_; }
  [[nodiscard]] uint64_t last_offered() const noexcept { return next_seq_ - 1; }
  [[nodiscard]] uint64_t last_acked() const noexcept { return acked_; }
  [[nodiscard]] size_t held_bytes() const noexcept { return static_cast<size_t>(tail_ - head_); }
  [[nodiscard]] size_t held_frames() const noexcept { return held_; }
  [[nodiscard]] const SessionStats& stats() const noexcept { return stats_; }

 private:
  // The hold buffer: framed Data records at increasing virtual positions; position p lives at
  // buf_[p % cap]. A record never straddles the physical end: one that would starts at the next
  // lap, leaving a gap [gap_, round_up(gap_)) that is neither held nor sent.
  [[nodiscard]] uint64_t lap_end(uint64_t p) const noexcept { return (p / cap_ + 1) * cap_; }
  [[nodiscard]] const std::byte* at(uint64_t p) const noexcept { return buf_.data() + p % cap_; }
  [[nodiscard]] uint32_t record_len(uint64_t p) const noexcept;  // framed bytes of the record at p
  [[nodiscard]] uint64_t record_seq(uint64_t p) const noexcept;
  [[nodiscard]] uint64_t skip_gap(uint64_t p) const noexcept { return has_gap_ && p == gap_ ? lap_end(gap_) : p; }
  void free_through(uint64_t seq) noexcept;
  void rewind_to_after(uint64_t seq) noexcept;  // send cursor to the first held record above seq
  void build_control();

  SessionOptions o_;
  uint64_t id_;
  uint64_t cap_;
  std::vector<std::byte> buf_;
  uint64_t head_ = 0;     // oldest held record
  uint64_t send_ = 0;     // next byte to write (at or after head_)
  uint64_t frame_end_ = 0;  // end of the Data frame being written (== send_ at a boundary)
  uint64_t tail_ = 0;     // end of held data
  uint64_t gap_ = 0;
  bool has_gap_ = false;
  size_t held_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t acked_ = 0;       // highest sequence the peer acknowledged
  uint64_t max_sent_ = 0;    // highest sequence ever written (any connection)

  // Receiving.
  uint64_t peer_session_ = 0;
  uint64_t last_delivered_ = 0;
  bool base_unknown_ = false;  // new peer session: its next Data sets the base
  uint32_t unacked_in_ = 0;

  // Connection and control frames (built into ctl_ when the previous ones are written).
  bool connected_ = false;
  bool resumed_ = false;
  bool want_resume_ = false;
  bool want_ack_ = false;
  bool want_heartbeat_ = false;
  uint64_t heartbeat_stamp_ = 0;
  bool want_echo_ = false;
  uint64_t echo_stamp_ = 0;  // the probe to echo, kEchoBit set
  uint64_t echoed_ = 0;      // the last echo received
  std::vector<std::byte> ctl_;
  size_t ctl_sent_ = 0;
  std::array<std::span<const std::byte>, 4> out_{};

  SessionStats stats_;
};

}  // namespace bus::link
