// The Link interface: one connection to a peer busd, of any kind (TCP, DPDK; RDMA later),
// driven by busd's link manager from its poll loop. A Link moves link frames (wire.hpp) and
// knows nothing of subjects; the Session above it (session.hpp) owns sequence numbers, acks and
// resends; the router above that knows nothing of sockets.
//
// Poll mode and batches: transmit() hands the link everything the session has ready (one
// writev on TCP), receive() returns every complete frame that arrived as views into the link's
// buffer. One virtual call per batch, none per message; no allocation per message (the frame
// vector keeps its capacity).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bus/error.hpp"
#include "link/session.hpp"
#include "link/wire.hpp"

namespace bus::link {

enum class LinkState : uint8_t {
  Connecting,  // a connect is in progress (wait for writability)
  Up,          // bytes flow
  Down,        // the connection ended (error() says why); the manager reconnects
};

struct LinkCounters {
  uint64_t bytes_out = 0, bytes_in = 0;
  uint64_t frames_in = 0;
  uint64_t write_calls = 0, read_calls = 0;  // system calls: writev/sendmsg, read/recv (poll-mode: bursts)
  uint64_t would_block = 0;                  // writes the kernel refused (socket buffer full)
  // Datagram links (0 on a stream link, whose transport repairs itself).
  uint64_t retransmits = 0;         // packets sent again
  uint64_t naks = 0;                // holes named to the peer (NAK ranges sent)
  uint64_t datagrams_corrupt = 0;   // checksum mismatch: dropped
  uint64_t datagrams_dropped = 0;   // malformed, another connection's, beyond the window: dropped
  uint64_t rtt_ns = 0;              // smoothed round trip (a gauge)
  // Queue-pair links (RDMA; 0 elsewhere).
  uint64_t doorbells = 0;          // chains of work requests posted (ibv_post_send calls)
  uint64_t credit_stalls = 0;      // output held back: the peer's ring full, or no receive WR of its to spare
  uint64_t queue_stalls = 0;       // output held back: the local send queue full
  uint64_t completion_errors = 0;  // completions with an error status (each takes the link down)

  /// Adds another connection's counts (the gauge is taken from `o`).
  void add(const LinkCounters& o) noexcept {
    bytes_out += o.bytes_out;
    bytes_in += o.bytes_in;
    frames_in += o.frames_in;
    write_calls += o.write_calls;
    read_calls += o.read_calls;
    would_block += o.would_block;
    retransmits += o.retransmits;
    naks += o.naks;
    datagrams_corrupt += o.datagrams_corrupt;
    datagrams_dropped += o.datagrams_dropped;
    doorbells += o.doorbells;
    credit_stalls += o.credit_stalls;
    queue_stalls += o.queue_stalls;
    completion_errors += o.completion_errors;
    rtt_ns = o.rtt_ns;
  }
};

class Link {
 public:
  virtual ~Link() = default;

  [[nodiscard]] virtual LinkState state() const noexcept = 0;
  /// Why the link went Down (empty while it is not).
  [[nodiscard]] virtual const std::string& error() const noexcept = 0;
  /// The descriptor to wait on (readable: receive(); writable: transmit() or connect done), -1 if none.
  [[nodiscard]] virtual int wait_fd() const noexcept = 0;
  /// Whether the link has output the kernel did not take yet (wait for writability).
  [[nodiscard]] virtual bool wants_write() const noexcept = 0;

  /// Completes a connect in progress (call when wait_fd() is writable). Up or Down afterwards.
  virtual void finish_connect() = 0;
  /// Writes what `s` has ready (s.next_output()) and reports it (s.wrote()). Returns bytes
  /// written; 0 with the link still Up when the kernel takes nothing now. Errors: Closed (the
  /// link went Down: see error()).
  virtual Result<size_t> transmit(Session& s) = 0;
  /// Reads what arrived and appends each complete frame to `out`, up to `max` frames. The
  /// frames are views valid until the next receive(). Errors: Closed (peer hung up or the
  /// connection broke), BadMessage (garbage: a frame above the maximum or malformed; the link
  /// is then Down with the reason in error()).
  virtual Result<size_t> receive(std::vector<Frame>& out, size_t max) = 0;
  /// Ends the connection (the link is Down).
  virtual void close(const std::string& why) = 0;

  [[nodiscard]] virtual const LinkCounters& counters() const noexcept = 0;

  // Poll-mode links (a DPDK port's thread hands packets over in memory, not through the
  // kernel) also say these; a socket link's descriptor says it all.
  /// Input is ready without waiting on wait_fd(): call receive().
  [[nodiscard]] virtual bool has_input() const noexcept { return false; }
  /// The caller is about to sleep on wait_fd(): false when input is ready (do not sleep).
  [[nodiscard]] virtual bool arm() noexcept { return true; }
  /// The caller woke up (after arm()).
  virtual void disarm() noexcept {}
  /// When transmit() (or finish_connect() while connecting) must be called at the latest, on
  /// CLOCK_MONOTONIC (retransmission and ack timers); UINT64_MAX: no timer.
  [[nodiscard]] virtual uint64_t timer_ns() const noexcept { return UINT64_MAX; }
};

}  // namespace bus::link
