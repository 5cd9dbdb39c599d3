#include "tcp/tcp_link.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <initializer_list>

namespace bus::tcp {
using detail::address_of;
using detail::cat;
using detail::resolve;

// ---------------------------------------------------------------- TcpLink

TcpLink::TcpLink(int fd, uint32_t max_frame, std::string peer, link::LinkState st)
    : fd_(fd), state_(st), peer_(std::move(peer)), reader_(max_frame) {}

TcpLink::~TcpLink() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<std::unique_ptr<TcpLink>> TcpLink::connect(const Endpoint& peer, uint32_t max_frame) {
  auto c = detail::start_connect(peer);
  if (!c) return tl::unexpected(c.error());
  std::unique_ptr<TcpLink> l(new TcpLink(c->fd, max_frame, peer.to_string(), link::LinkState::Connecting));
  if (c->err == 0) {
    l->state_ = link::LinkState::Up;
  } else if (c->err != EINPROGRESS) {
    l->down(cat({"connect to ", peer.to_string(), ": ", std::strerror(c->err)}));
  }
  return l;
}

std::unique_ptr<TcpLink> TcpLink::adopt(int fd, uint32_t max_frame, std::string peer) {
  return std::unique_ptr<TcpLink>(new TcpLink(fd, max_frame, std::move(peer), link::LinkState::Up));
}

void TcpLink::down(const std::string& why) {
  if (state_ == link::LinkState::Down) return;
  state_ = link::LinkState::Down;
  error_ = why;
  wants_write_ = false;
}

void TcpLink::finish_connect() {
  if (state_ != link::LinkState::Connecting) return;
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    down(cat({"connect to ", peer_, ": ", std::strerror(err)}));
    return;
  }
  state_ = link::LinkState::Up;
}

Result<size_t> TcpLink::transmit(link::Session& s) {
  if (state_ != link::LinkState::Up) return tl::unexpected(state_ == link::LinkState::Down ? Errc::Closed : Errc::WouldBlock);
  size_t total = 0;
  for (;;) {
    const auto spans = s.next_output();
    if (spans.empty()) {
      wants_write_ = false;
      return total;
    }
    iovec iov[4];
    size_t want = 0;
    for (size_t i = 0; i < spans.size(); ++i) {
      iov[i] = {const_cast<std::byte*>(spans[i].data()), spans[i].size()};
      want += spans[i].size();
    }
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = spans.size();
    ++c_.write_calls;
    const ssize_t n = ::sendmsg(fd_, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        ++c_.would_block;
        wants_write_ = true;
        return total;
      }
      down(cat({"send to ", peer_, ": ", std::strerror(errno)}));
      return tl::unexpected(Errc::Closed);
    }
    s.wrote(static_cast<size_t>(n));
    c_.bytes_out += static_cast<uint64_t>(n);
    total += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < want) {  // the socket buffer is full: wait for writability
      wants_write_ = true;
      return total;
    }
  }
}

Result<size_t> TcpLink::receive(std::vector<link::Frame>& out, size_t max) {
  if (state_ != link::LinkState::Up) return tl::unexpected(Errc::Closed);
  size_t got = 0;
  // Take the frames already buffered first (a previous call may have stopped at `max`).
  auto drain = [&]() -> Result<void> {
    while (got < max) {
      auto f = reader_.next();
      if (!f) {
        if (f.error() == Errc::WouldBlock) return {};
        down(cat({"link frame from ", peer_, " above the maximum size (garbage?)"}));
        return tl::unexpected(Errc::BadMessage);
      }
      auto frame = link::parse_frame(*f);
      if (!frame) {
        down(cat({"from ", peer_, ": ", frame.error().message()}));
        return tl::unexpected(Errc::BadMessage);
      }
      out.push_back(*frame);
      ++got;
      ++c_.frames_in;
    }
    return {};
  };
  if (auto d = drain(); !d) return tl::unexpected(d.error());
  if (got > 0) return got;  // frames in hand: reading more would move them (room() compacts)
  for (;;) {
    auto room = reader_.room(64 * 1024);
    ++c_.read_calls;
    const ssize_t n = ::recv(fd_, room.data(), room.size(), 0);
    if (n > 0) {
      reader_.commit(static_cast<size_t>(n));
      c_.bytes_in += static_cast<uint64_t>(n);
      if (auto d = drain(); !d) return tl::unexpected(d.error());
      return got;
    }
    if (n == 0) {
      down(cat({"connection closed by ", peer_, reader_.pending() > 0 ? " mid-frame" : ""}));
      return tl::unexpected(Errc::Closed);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return got;
    down(cat({"receive from ", peer_, ": ", std::strerror(errno)}));
    return tl::unexpected(Errc::Closed);
  }
}

void TcpLink::close(const std::string& why) {
  down(why);
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

// ---------------------------------------------------------------- TcpListener

TcpListener& TcpListener::operator=(TcpListener&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    port_ = o.port_;
    o.fd_ = -1;
  }
  return *this;
}

TcpListener::~TcpListener() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<TcpListener> TcpListener::listen(const Endpoint& local) {
  auto res = resolve(local, true);
  if (!res) return tl::unexpected(res.error());
  const addrinfo* ai = *res;
  TcpListener l;
  l.fd_ = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l.fd_ < 0) {
    ::freeaddrinfo(*res);
    return tl::unexpected(system_error("socket", errno));
  }
  const int one = 1;
  ::setsockopt(l.fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(l.fd_, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(l.fd_, SOMAXCONN) != 0) {
    const int e = errno;
    ::freeaddrinfo(*res);
    return tl::unexpected(system_error(cat({"listen on ", local.to_string()}), e));
  }
  ::freeaddrinfo(*res);
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  ::getsockname(l.fd_, reinterpret_cast<sockaddr*>(&a), &len);
  l.port_ = a.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  return l;
}

Result<int> TcpListener::accept(std::string* peer) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  for (;;) {
    const int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&a), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      detail::set_nodelay(fd);
      if (peer != nullptr) *peer = address_of(a);
      return fd;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return tl::unexpected(errno == EAGAIN || errno == EWOULDBLOCK ? Errc::WouldBlock : Errc::System);
  }
}

}  // namespace bus::tcp
