#include "dgram/udp_io.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace bus::dgram {
namespace {

// A datagram lands 2 bytes into its buffer, where an Ethernet + IPv4 + UDP frame would put it
// in an mbuf (see dgram/wire.hpp): the envelopes inside are then 8-byte aligned, as over DPDK.
constexpr size_t kLead = 2;
constexpr size_t kBurst = 64;

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

}  // namespace

UdpIo::UdpIo(int fd, uint16_t port, size_t max_packet, size_t buffers)
    : fd_(fd), port_(port), max_packet_(max_packet), stride_((kLead + max_packet + 7) & ~size_t{7}) {
  mem_.resize(stride_ * buffers + 8);
  free_.reserve(buffers);
  for (size_t i = buffers; i > 0; --i) free_.push_back(static_cast<uint32_t>(i - 1));
}

UdpIo::~UdpIo() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<std::unique_ptr<UdpIo>> UdpIo::open(uint16_t local_port, uint16_t peer_port, size_t max_packet, size_t buffers) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return tl::unexpected(system_error("udp socket", errno));
  sockaddr_in a = loopback(local_port);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int e = errno;
    ::close(fd);
    return tl::unexpected(system_error("udp bind", e));
  }
  std::unique_ptr<UdpIo> io(new UdpIo(fd, ntohs(a.sin_port), max_packet, buffers));
  if (peer_port != 0) {
    if (auto r = io->connect_to(peer_port); !r) return tl::unexpected(r.error());
  }
  return io;
}

Expected<void> UdpIo::connect_to(uint16_t peer_port) {
  sockaddr_in a = loopback(peer_port);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return tl::unexpected(system_error("udp connect", errno));
  return {};
}

size_t UdpIo::rx_burst(RxPacket* out, size_t max) {
  max = std::min({max, kBurst, free_.size()});
  if (max == 0) return 0;
  mmsghdr msgs[kBurst];
  iovec iov[kBurst];
  uint32_t idx[kBurst];
  for (size_t i = 0; i < max; ++i) {
    idx[i] = free_[free_.size() - 1 - i];
    iov[i] = {mem_.data() + size_t{idx[i]} * stride_ + kLead, max_packet_};
    msgs[i] = {};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  const int n = ::recvmmsg(fd_, msgs, static_cast<unsigned>(max), MSG_DONTWAIT, nullptr);
  if (n <= 0) return 0;
  for (int i = 0; i < n; ++i) {
    free_.pop_back();
    out[i] = RxPacket{static_cast<const std::byte*>(iov[i].iov_base), msgs[i].msg_len, idx[i]};
  }
  return static_cast<size_t>(n);
}

void UdpIo::release(const uint64_t* handles, size_t n) {
  for (size_t i = 0; i < n; ++i) free_.push_back(static_cast<uint32_t>(handles[i]));
}

size_t UdpIo::tx(std::span<const std::span<const std::byte>> packets) {
  size_t sent = 0;
  while (sent < packets.size()) {
    mmsghdr msgs[kBurst];
    iovec iov[kBurst];
    const size_t k = std::min(kBurst, packets.size() - sent);
    for (size_t i = 0; i < k; ++i) {
      iov[i] = {const_cast<std::byte*>(packets[sent + i].data()), packets[sent + i].size()};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int n = ::sendmmsg(fd_, msgs, static_cast<unsigned>(k), MSG_DONTWAIT);
    if (n <= 0) {
      // ECONNREFUSED: the peer's socket is not there (yet); the datagram is lost, as on a wire.
      if (n < 0 && errno == ECONNREFUSED) {
        ++sent;
        continue;
      }
      break;
    }
    sent += static_cast<size_t>(n);
  }
  return sent;
}

}  // namespace bus::dgram
