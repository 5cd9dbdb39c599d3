// A busd link over a DPDK port: the datagram layer (dgram/) above one Endpoint of a Port. The
// port's poll thread moves the frames; this side runs in busd's thread, with the datagrams
// handed over through the endpoint's rings (no lock, no system call per packet) and received
// envelopes left in their mbufs until the router is done with them (zero copy).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "bus/error.hpp"
#include "dgram/channel.hpp"
#include "dpdk/port.hpp"
#include "link/link.hpp"

namespace bus::dpdk {

/// "10.0.0.1:7400": an IPv4 address (host byte order) and a UDP port.
struct Ipv4Endpoint {
  uint32_t ip = 0;
  uint16_t port = 0;
};
[[nodiscard]] Expected<Ipv4Endpoint> parse_ipv4_endpoint(std::string_view text);

/// A new link through `port` (attaches an endpoint; the link detaches it when destroyed). It
/// starts Connecting and finishes the datagram handshake in finish_connect(). `conn_id`:
/// random, non-zero. Errors: the endpoint cannot be attached (its local address is taken).
[[nodiscard]] Expected<std::unique_ptr<link::Link>> dial(Port& port, const EndpointOptions& ep,
                                                         const dgram::ChannelOptions& o, uint32_t conn_id);

}  // namespace bus::dpdk
