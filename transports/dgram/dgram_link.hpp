// A Link over datagrams: the datagram layer's Channel (dgram/channel.hpp) above a PacketIo that
// moves whole datagrams (a DPDK port's endpoint; a UDP socket would do as well). The link
// session above it sees a reliable, ordered stream of link frames like TCP's.
//
// Connecting: the Channel's handshake runs in finish_connect() (the peer manager calls it on
// its tick while the link is Connecting); Data that arrives early waits in the Channel until
// receive(). Every call moves at most one burst in and reads the clock once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dgram/channel.hpp"
#include "dgram/packet.hpp"
#include "link/link.hpp"

namespace bus::dgram {

/// Whole datagrams in and out, for one link. Called from one thread; no call blocks.
class PacketIo {
 public:
  virtual ~PacketIo() = default;
  /// Up to `max` received datagrams (each owned by the caller until release()).
  virtual size_t rx_burst(RxPacket* out, size_t max) = 0;
  virtual void release(const uint64_t* handles, size_t n) = 0;
  /// Sends datagrams in order (copies them); returns how many it took (the rest are lost).
  virtual size_t tx(std::span<const std::span<const std::byte>> packets) = 0;
  [[nodiscard]] virtual bool has_rx() const noexcept = 0;
  [[nodiscard]] virtual int wait_fd() const noexcept = 0;
  [[nodiscard]] virtual bool arm() noexcept = 0;
  virtual void disarm() noexcept = 0;
};

class DgramLink final : public link::Link {
 public:
  using Clock = uint64_t (*)();
  /// `conn_id`: random, non-zero. `clock`: CLOCK_MONOTONIC ns (tests pass their own).
  DgramLink(std::unique_ptr<PacketIo> io, const ChannelOptions& o, uint32_t conn_id, Clock clock);
  ~DgramLink() override;
  DgramLink(const DgramLink&) = delete;
  DgramLink& operator=(const DgramLink&) = delete;

  [[nodiscard]] link::LinkState state() const noexcept override;
  [[nodiscard]] const std::string& error() const noexcept override { return ch_.error(); }
  [[nodiscard]] int wait_fd() const noexcept override { return io_->wait_fd(); }
  [[nodiscard]] bool wants_write() const noexcept override { return false; }
  void finish_connect() override;
  Result<size_t> transmit(link::Session& s) override;
  Result<size_t> receive(std::vector<link::Frame>& out, size_t max) override;
  void close(const std::string& why) override;
  [[nodiscard]] const link::LinkCounters& counters() const noexcept override { return c_; }
  [[nodiscard]] bool has_input() const noexcept override { return io_->has_rx() || ch_.pending(); }
  [[nodiscard]] bool arm() noexcept override { return !ch_.pending() && io_->arm(); }
  void disarm() noexcept override { io_->disarm(); }
  [[nodiscard]] uint64_t timer_ns() const noexcept override { return ch_.next_timer_ns(); }

  [[nodiscard]] const Channel& channel() const noexcept { return ch_; }
  [[nodiscard]] PacketIo& io() noexcept { return *io_; }

 private:
  void pull(std::vector<link::Frame>* out, size_t max, uint64_t now);
  void push(link::Session* s, uint64_t now);
  void give_back();
  void sync_counters() noexcept;  // the channel's repair counts into c_

  std::unique_ptr<PacketIo> io_;
  Channel ch_;
  Clock clock_;
  std::vector<RxPacket> in_;
  std::vector<std::span<const std::byte>> out_;
  link::LinkCounters c_;
};

}  // namespace bus::dgram
