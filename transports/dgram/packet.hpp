// A received datagram as the datagram layer sees it, whatever carried it (a DPDK mbuf, a UDP
// socket's buffer, a test's simulated network): the payload bytes and an opaque handle that the
// transport frees when the datagram layer releases it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bus::dgram {

struct RxPacket {
  const std::byte* data = nullptr;  // the UDP payload
  uint32_t len = 0;
  uint64_t handle = 0;              // the transport's (an rte_mbuf*, a buffer index)
};

}  // namespace bus::dgram
