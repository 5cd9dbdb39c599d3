// A reliable, ordered connection of link frames over datagrams that may be lost, reordered,
// duplicated or corrupted: what the link session (link/session.hpp) needs underneath it on a
// DPDK port, and what any UDP transport could use. Packets: dgram/wire.hpp.
//
//   handshake   each side picks a random connection id and sends Syn until the peer names it;
//               packets of any other connection (an earlier one, a restarted peer's) are
//               dropped. A Syn with a new id from a peer that was up means the peer started
//               over: this connection is Down, and the session above resumes on the next.
//   sending     link frames from the session are packed into Data packets (many small frames
//               to a packet, a large one split over several), each kept in a slot until the
//               peer acknowledges it. At most `window` packets are in flight, and never beyond
//               what the peer said it accepts.
//   receiving   packets are checked (CRC32C over all of it), put in order in a window of slots,
//               duplicates dropped; frames leave in order, as views into the packets where they
//               fit in one (zero copy), else reassembled.
//   repairing   the receiver acknowledges cumulatively (piggybacked on every packet, and in Ack
//               packets after `ack_every` packets or `ack_delay_ns`), and names the holes it
//               sees (selective NAKs) at once and again while they last; the sender resends
//               what is NAKed (at most once a round trip) and, when acks stop, the oldest
//               packets after a retransmission timeout (RTT-estimated, doubling per timeout).
//
// The channel does no I/O and reads no clock: the transport passes received packets and the
// time, and sends what collect() returns. No allocation per packet or frame after start-up
// (the reassembly buffers grow to the largest frame seen, bounded by max_frame).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bus/error.hpp"
#include "dgram/packet.hpp"
#include "dgram/wire.hpp"
#include "link/session.hpp"
#include "link/wire.hpp"

namespace bus::dgram {

struct ChannelOptions {
  uint32_t max_packet = 1472;            // bytes per datagram (the UDP payload; 1500-byte MTU)
  uint32_t window = 256;                 // packets in flight, and accepted ahead of a hole
  uint32_t max_frame = (1u << 20) + 4096;  // the largest link frame reassembled
  uint64_t rto_min_ns = 1'000'000;       // retransmission timeout bounds
  uint64_t rto_max_ns = 200'000'000;
  uint64_t syn_every_ns = 10'000'000;    // handshake: Syn resent this often
  uint64_t ack_delay_ns = 100'000;       // an Ack goes out at most this long after a Data packet
  uint32_t ack_every = 32;               // ... or after this many Data packets
  uint64_t nak_every_ns = 500'000;       // holes are named again this often while they last
};

enum class ChannelState : uint8_t { Connecting, Up, Down };

struct ChannelStats {
  uint64_t packets_out = 0, bytes_out = 0;
  uint64_t data_out = 0, retransmits = 0, rto_fires = 0;
  uint64_t syns_out = 0, acks_out = 0, naks_out = 0, fins_out = 0;
  uint64_t window_full = 0;               // collect() stopped by the window
  uint64_t packets_in = 0, bytes_in = 0;
  uint64_t data_in = 0, duplicates = 0, out_of_order = 0, beyond_window = 0;
  uint64_t naks_in = 0;                   // NAK ranges received
  uint64_t corrupt = 0;                   // CRC mismatch: dropped
  uint64_t malformed = 0;                 // other header faults (magic, version, lengths): dropped
  uint64_t stale = 0;                     // another connection's packets: dropped
  uint64_t frames_in = 0, reassembled = 0, frames_out = 0, fragmented = 0;
  uint64_t srtt_ns = 0, rttvar_ns = 0, rto_ns = 0;
};

class Channel {
 public:
  /// `conn_id`: this connection's id (random, non-zero).
  Channel(const ChannelOptions& o, uint32_t conn_id);
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  [[nodiscard]] ChannelState state() const noexcept { return state_; }
  /// Why the channel went Down ("" while it is not).
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  /// Closed (the peer closed or started over, or close()) or BadMessage (a protocol fault).
  [[nodiscard]] Errc down_code() const noexcept { return down_code_; }
  [[nodiscard]] uint32_t conn_id() const noexcept { return id_; }
  [[nodiscard]] uint32_t peer_conn() const noexcept { return peer_; }

  // ---- receiving
  /// Takes received packets (the channel owns their handles until it lists them in
  /// released()). With `out`, appends the link frames now in order (views valid until the next
  /// receive(): into the packets, or into a reassembly buffer), stopping at a packet boundary
  /// once `max` frames are out or a reassembled frame is; the rest waits (pending()). Without
  /// `out` (during the handshake), packets are only taken in. Errors: BadMessage when the peer
  /// breaks the protocol (a malformed chunk sequence, a frame above max_frame, an ack of what
  /// was never sent): the channel is Down.
  Result<size_t> receive(std::span<const RxPacket> in, std::vector<link::Frame>* out, size_t max, uint64_t now);
  /// Packets are in order and waiting for receive().
  [[nodiscard]] bool pending() const noexcept;
  /// Handles the transport may free now (the views into them are no longer handed out).
  [[nodiscard]] std::vector<uint64_t>& released() noexcept { return released_; }
  /// Before the channel goes away: every handle it still holds goes to released().
  void release_all();

  // ---- sending
  /// What to send now, appended to `out` as whole datagrams (views valid until the next call):
  /// Syns while connecting, Acks and NAKs, retransmissions due, then new Data packed from `s`
  /// (null: none) while the window allows. The transport sends them in order; one it cannot
  /// send counts as lost (the NAK or the timeout brings it back).
  void collect(link::Session* s, uint64_t now, std::vector<std::span<const std::byte>>& out);
  /// When collect() has something to do at the latest (a timer), UINT64_MAX if nothing.
  [[nodiscard]] uint64_t next_timer_ns() const noexcept;
  /// Ends the connection: the next collect() returns a Fin (once); the channel is Down.
  void close(const std::string& why);

  [[nodiscard]] uint64_t in_flight() const noexcept { return next_seq_ - 1 - acked_; }
  [[nodiscard]] const ChannelStats& stats() const noexcept { return st_; }
  [[nodiscard]] uint32_t max_packet() const noexcept { return send_max_; }

 private:
  struct TxSlot {
    uint32_t len = 0;
    uint32_t sends = 0;
    uint64_t last_sent = 0;
    bool nak = false;  // the peer named it missing: resend
  };
  struct RxSlot {
    uint64_t seq = 0;  // 0: empty
    RxPacket pkt;
  };

  void down(Errc code, std::string why);
  void acked_out() noexcept;  // the cumulative ack went out: nothing owed until more arrives
  [[nodiscard]] uint32_t window_field() const noexcept;
  void on_packet(const RxPacket& p, uint64_t now);
  void on_ack(uint64_t ack, uint32_t window, uint64_t now);
  void deliver(std::vector<link::Frame>& out, size_t max);
  bool deliver_packet(const RxPacket& p, std::vector<link::Frame>& out);
  void emit_frame(std::span<const std::byte> bytes, std::vector<link::Frame>& out);
  std::byte* tx_slot(uint64_t seq) noexcept { return tx_mem_.data() + (seq % o_.window) * o_.max_packet; }
  void send_slot(uint64_t seq, uint64_t now, std::vector<std::span<const std::byte>>& out);
  void pack(link::Session& s, uint64_t now, std::vector<std::span<const std::byte>>& out);
  void finish_packet(uint64_t now, std::vector<std::span<const std::byte>>& out);
  std::byte* control_packet(PacketType t, size_t payload_len, std::vector<std::span<const std::byte>>& out);
  void build_ack(std::vector<std::span<const std::byte>>& out, uint64_t now);
  [[nodiscard]] uint64_t send_limit() const noexcept;

  ChannelOptions o_;
  uint32_t id_;
  uint32_t peer_ = 0;
  ChannelState state_ = ChannelState::Connecting;
  std::string error_;
  Errc down_code_ = Errc::Closed;
  uint32_t send_max_;  // min(own max_packet, the peer's)

  // Handshake and close.
  bool syn_owed_ = true;      // send a Syn now (the peer does not know this side yet)
  uint64_t last_syn_ = 0;
  bool fin_owed_ = false;

  // Sending: packets [acked_ + 1, next_seq_) are in flight, in slots seq % window.
  std::vector<std::byte> tx_mem_;
  std::vector<TxSlot> tx_;
  uint64_t next_seq_ = 1;
  uint64_t acked_ = 0;
  uint64_t peer_limit_ = 0;   // the peer accepts Data up to this seq
  uint64_t rto_ = 0;
  uint64_t srtt_ = 0, rttvar_ = 0;
  uint64_t rto_armed_at_ = 0;  // when the oldest in-flight packet's timer started
  uint32_t naks_pending_ = 0;  // slots marked for a resend
  // Packing: the link frame stream from the session is parsed as it is consumed.
  std::array<std::byte, 4> len_buf_{};
  uint32_t len_have_ = 0;      // bytes of the next frame's length prefix seen
  uint32_t frame_left_ = 0;    // bytes of the current frame still to pack
  bool frame_started_ = false;  // its first chunk is out
  bool building_ = false;      // a Data packet is open at next_seq_
  uint32_t build_len_ = 0;

  // Receiving: seq delivered_ + 1 is next; slots hold packets up to delivered_ + window;
  // every packet up to contig_ has arrived (the cumulative ack).
  std::vector<RxSlot> rx_;
  uint64_t delivered_ = 0;
  uint64_t contig_ = 0;
  uint64_t highest_in_ = 0;
  uint32_t unacked_in_ = 0;    // Data packets taken in since the last ack sent
  uint64_t ack_due_ = 0;       // an Ack must leave by then (0: none owed)
  bool ack_now_ = false;       // a duplicate, or ack_every packets: ack at once
  bool nak_now_ = false;       // a new hole: name it at once
  uint64_t last_nak_ = 0;
  std::vector<uint64_t> released_;
  std::vector<RxPacket> delivering_;  // delivered in the last receive(): released at the next
  // Reassembly: two buffers, so that a frame completed in one stays valid while the next
  // one's first fragment arrives in the same packet.
  std::array<std::vector<std::byte>, 2> asm_;
  int asm_cur_ = 0;
  bool assembling_ = false;
  bool reassembled_ = false;   // a reassembled frame is out in this receive()

  // Control packets built by collect() (Syn, Ack, Fin).
  std::array<std::vector<std::byte>, 3> ctl_;
  size_t ctl_used_ = 0;

  ChannelStats st_;
};

}  // namespace bus::dgram
