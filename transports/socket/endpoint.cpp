// TCP endpoints and plain TCP streams (see endpoint.hpp).
#include "socket/endpoint.hpp"
#include "socket/frame.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace bus::tcp {
namespace detail {

// Joins text without `"literal" + std::string` (GCC 12 at -O3 reports a false -Wrestrict there).
std::string cat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (auto p : parts) s.append(p);
  return s;
}

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

std::string address_of(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    ::inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    port = ntohs(v4->sin_port);
    return cat({host, ":", std::to_string(port)});
  }
  if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
    port = ntohs(v6->sin6_port);
  }
  return cat({"[", host, "]:", std::to_string(port)});
}

// Resolves host:port (numeric first; names through getaddrinfo, which may block: config time).
Expected<addrinfo*> resolve(const Endpoint& e, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(e.port);
  const int rc = ::getaddrinfo(e.host.empty() ? nullptr : e.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return fail(Errc::NotFound, cat({"cannot resolve '", e.to_string(), "': ", ::gai_strerror(rc)}));
  }
  return res;
}

}  // namespace detail

using detail::cat;

std::string Endpoint::to_string() const {
  const bool v6 = host.find(':') != std::string::npos;
  return v6 ? cat({"[", host, "]:", std::to_string(port)}) : cat({host, ":", std::to_string(port)});
}

Expected<Endpoint> parse_endpoint(std::string_view text) {
  Endpoint e;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail(Errc::InvalidArgument, cat({"'", text, "' is not [address]:port"}));
    }
    e.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return fail(Errc::InvalidArgument, cat({"'", text, "' is not host:port"}));
    }
    e.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  unsigned v = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
  if (ec != std::errc{} || end != port.data() + port.size() || port.empty() || v > 65535) {
    return fail(Errc::InvalidArgument, cat({"'", text, "': port must be 0..65535"}));
  }
  if (e.host.empty()) return fail(Errc::InvalidArgument, cat({"'", text, "': no host"}));
  e.port = static_cast<uint16_t>(v);
  return e;
}

Expected<Endpoint> listen_endpoint(std::string_view text) {
  std::string_view t = text;
  if (!t.empty() && t.front() == ':') t.remove_prefix(1);
  const bool port_only = !t.empty() && t.find_first_not_of("0123456789") == std::string_view::npos;
  if (port_only) return parse_endpoint(cat({"127.0.0.1:", t}));
  return parse_endpoint(text);
}

namespace detail {

Expected<Connecting> start_connect(const Endpoint& e) {
  auto res = resolve(e, false);
  if (!res) return tl::unexpected(res.error());
  const addrinfo* ai = *res;
  const int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(*res);
    return tl::unexpected(system_error("socket", errno));
  }
  set_nodelay(fd);
  const int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
  const int err = rc == 0 ? 0 : errno;
  ::freeaddrinfo(*res);
  return Connecting{fd, err};
}

}  // namespace detail

Expected<int> dial_tcp(const Endpoint& e, int timeout_ms) {
  auto c = detail::start_connect(e);
  if (!c) return tl::unexpected(c.error());
  const int fd = c->fd;
  int err = c->err;
  if (err == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    const int rc = ::poll(&p, 1, timeout_ms);
    socklen_t len = sizeof err;
    if (rc == 1) {
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    } else {
      err = ETIMEDOUT;
    }
  }
  if (err != 0) {
    ::close(fd);
    Error why = system_error(cat({"connecting to ", e.to_string()}), err);
    if (err == ECONNREFUSED) why = Error(Errc::NotFound, cat({"nothing listens at ", e.to_string(), " (", std::strerror(err), ")"}));
    return tl::unexpected(why);
  }
  return fd;
}

bool send_pending(int fd, std::vector<std::byte>& out, size_t& sent, size_t compact_after) {
  bool ok = true;
  while (sent < out.size()) {
    const ssize_t w = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      ok = errno == EAGAIN || errno == EWOULDBLOCK;
      break;
    }
    sent += static_cast<size_t>(w);
  }
  sock::drop_sent(out, sent, compact_after);
  return ok;
}

Expected<ChanFrame> parse_chan(std::span<const std::byte> frame) {
  if (frame.size() < kChanHeader) return fail(Errc::BadMessage, "agent stream: a frame shorter than its 8-byte header");
  ChanFrame f;
  f.channel = frame[0];
  if (f.channel != kChanControl && f.channel != kChanData && f.channel != kChanAuth) {
    return fail(Errc::BadMessage, cat({"agent stream: unknown channel ", std::to_string(static_cast<unsigned>(f.channel))}));
  }
  if (frame[1] != std::byte{0} || frame[2] != std::byte{0} || frame[3] != std::byte{0}) {
    return fail(Errc::BadMessage, "agent stream: reserved header bytes are not zero");
  }
  for (int i = 3; i >= 0; --i) f.tag = (f.tag << 8) | static_cast<uint8_t>(frame[4 + i]);
  if (f.channel == kChanControl && f.tag != 0) return fail(Errc::BadMessage, "agent stream: a control frame with a tag");
  f.body = frame.subspan(kChanHeader);
  if (f.channel == kChanAuth && (f.tag != 0 || f.body.size() > kMaxTokenFrame)) {
    return fail(Errc::BadMessage, "agent stream: a token frame with a tag or above 1024 bytes");
  }
  return f;
}

void append_chan(std::vector<std::byte>& out, std::byte channel, uint32_t tag, std::span<const std::byte> body) {
  const uint32_t len = static_cast<uint32_t>(kChanHeader + body.size());
  const size_t at = out.size();
  out.resize(at + 4 + kChanHeader);
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<std::byte>(len >> (8 * i));
  out[at + 4] = channel;
  for (int i = 0; i < 4; ++i) out[at + 8 + i] = static_cast<std::byte>(tag >> (8 * i));
  out.insert(out.end(), body.begin(), body.end());
}

}  // namespace bus::tcp
