// TCP endpoints ("host:port", "[v6]:port") and the plain TCP stream a remote agent speaks with
// busd (bus::Client with "tcp://host:port", busd's [busd] tcp_listen).
//
// The agent stream is the control socket's length-framed stream (socket/frame.hpp) over TCP,
// data and control on one connection: every frame starts with an 8-byte channel header,
//
//   u8 channel ('C' control, 'D' data) | 3 zero bytes | u32 tag (little-endian)
//
// then a ControlMessage ('C', tag 0) or an Envelope ('D'; from busd the tag is the delivery's
// subscription id, as a ring record carries it; from the agent 0). An agent with a token sends
// it first, before its Hello, as an 'A' frame (tag 0; the body is the token, at most
// kMaxTokenFrame bytes). No descriptors cross: busd
// and the agent's library each keep their side of the rings in their own memory and move
// records between the rings and the stream.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/error.hpp"

namespace bus::tcp {

/// "host:port", "[v6addr]:port". The host is numeric or a name (resolved at connect/listen).
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  [[nodiscard]] std::string to_string() const;
};
[[nodiscard]] Expected<Endpoint> parse_endpoint(std::string_view text);
/// Where a listener binds: a port alone ("7400" or ":7400") is 127.0.0.1 (loopback by
/// default); anything else is parse_endpoint's (binding elsewhere is an explicit choice).
[[nodiscard]] Expected<Endpoint> listen_endpoint(std::string_view text);

/// A blocking connect with a timeout; the socket returned is non-blocking, TCP_NODELAY.
/// Errors: NotFound (refused, or the name does not resolve), Timeout-like System errors.
[[nodiscard]] Expected<int> dial_tcp(const Endpoint& e, int timeout_ms);

inline constexpr std::byte kChanControl{'C'};
inline constexpr std::byte kChanData{'D'};
inline constexpr std::byte kChanAuth{'A'};
inline constexpr size_t kMaxTokenFrame = 1024;
inline constexpr size_t kChanHeader = 8;

struct ChanFrame {
  std::byte channel{};
  uint32_t tag = 0;
  std::span<const std::byte> body;
};
/// One frame of the agent stream (without its 4-byte length). Errors: BadMessage with a reason.
[[nodiscard]] Expected<ChanFrame> parse_chan(std::span<const std::byte> frame);
/// Writes what `out` holds past `sent` to a non-blocking socket until it would block, then
/// drops what went out: all of it (cleared), or the prefix once more than `compact_after`
/// bytes went. False when the socket broke.
[[nodiscard]] bool send_pending(int fd, std::vector<std::byte>& out, size_t& sent, size_t compact_after = SIZE_MAX);

/// Appends a whole frame (length included) to `out`.
void append_chan(std::vector<std::byte>& out, std::byte channel, uint32_t tag, std::span<const std::byte> body);

namespace detail {
// Joins text without `"literal" + std::string` (GCC 12 at -O3 reports a false -Wrestrict there).
std::string cat(std::initializer_list<std::string_view> parts);
void set_nodelay(int fd);
std::string address_of(const sockaddr_storage& a);
// Resolves host:port (numeric first; names through getaddrinfo, which may block: config time).
Expected<addrinfo*> resolve(const Endpoint& e, bool passive);
// A non-blocking, TCP_NODELAY socket with connect() started: err is 0 (connected), EINPROGRESS,
// or why connect() failed (the caller owns fd either way).
struct Connecting {
  int fd;
  int err;
};
Expected<Connecting> start_connect(const Endpoint& e);
}  // namespace detail

}  // namespace bus::tcp
