// The datagram layer over a kernel UDP socket: a PacketIo for DgramLink that is not DPDK. busd
// does not offer it as a link kind (TCP is its kernel-socket link); it exists to show, and test
// against real sockets, that the datagram layer stands on its own. recvmmsg/sendmmsg move up
// to a burst per system call into a fixed pool of buffers (a handle is a buffer's index).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bus/error.hpp"
#include "dgram/dgram_link.hpp"

namespace bus::dgram {

class UdpIo final : public PacketIo {
 public:
  /// A socket bound to 127.0.0.1:`local_port` (0: any) and connected to 127.0.0.1:`peer_port`
  /// (0: later, see connect_to). Buffers: `buffers` of `max_packet` bytes each.
  [[nodiscard]] static Expected<std::unique_ptr<UdpIo>> open(uint16_t local_port, uint16_t peer_port,
                                                             size_t max_packet, size_t buffers = 1024);
  ~UdpIo() override;
  UdpIo(const UdpIo&) = delete;
  UdpIo& operator=(const UdpIo&) = delete;

  [[nodiscard]] Expected<void> connect_to(uint16_t peer_port);
  [[nodiscard]] uint16_t local_port() const noexcept { return port_; }

  size_t rx_burst(RxPacket* out, size_t max) override;
  void release(const uint64_t* handles, size_t n) override;
  size_t tx(std::span<const std::span<const std::byte>> packets) override;
  [[nodiscard]] bool has_rx() const noexcept override { return false; }  // the socket says so (epoll)
  [[nodiscard]] int wait_fd() const noexcept override { return fd_; }
  [[nodiscard]] bool arm() noexcept override { return true; }
  void disarm() noexcept override {}

 private:
  UdpIo(int fd, uint16_t port, size_t max_packet, size_t buffers);
  int fd_;
  uint16_t port_;
  size_t max_packet_;
  std::vector<std::byte> mem_;   // buffers, 8-byte aligned slots (+2: the payload at 2 mod 8)
  std::vector<uint32_t> free_;   // free buffer indices
  size_t stride_;
};

}  // namespace bus::dgram
