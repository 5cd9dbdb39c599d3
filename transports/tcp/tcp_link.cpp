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

namespace {
constexpr size_t kTlsBatch = 256 * 1024;  // output gathered per TLS write (records of 16 KiB)
constexpr size_t kTlsReadBudget = 256 * 1024;
}  // namespace

// ---------------------------------------------------------------- TcpLink

TcpLink::TcpLink(int fd, uint32_t max_frame, std::string peer, link::LinkState st)
    : fd_(fd), state_(st), peer_(std::move(peer)), reader_(max_frame) {}

TcpLink::~TcpLink() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<std::unique_ptr<TcpLink>> TcpLink::connect(const Endpoint& peer, uint32_t max_frame, const LinkSecurity& sec) {
  if (sec.token.size() > kMaxToken) return fail(Errc::InvalidArgument, "a link token above 1024 bytes");
  auto c = detail::start_connect(peer);
  if (!c) return tl::unexpected(c.error());
  std::unique_ptr<TcpLink> l(new TcpLink(c->fd, max_frame, peer.to_string(), link::LinkState::Connecting));
  l->tls_ctx_ = sec.tls;
  l->server_name_ = sec.server_name;
  l->token_out_ = sec.token;
  if (c->err == 0) {
    l->connected();
  } else if (c->err != EINPROGRESS) {
    l->down(cat({"connect to ", peer.to_string(), ": ", std::strerror(c->err)}));
  }
  return l;
}

std::unique_ptr<TcpLink> TcpLink::adopt(int fd, uint32_t max_frame, std::string peer, const tls::Context* tls) {
  std::unique_ptr<TcpLink> l(new TcpLink(fd, max_frame, std::move(peer), link::LinkState::Connecting));
  l->tls_ctx_ = tls;
  l->connected();
  return l;
}

bool TcpLink::wants_write() const noexcept {
  if (state_ == link::LinkState::Connecting) return !tcp_up_ || (tls_ != nullptr && tls_->wants_write());
  return wants_write_ || (tls_ != nullptr && tls_->wants_write());
}

void TcpLink::connected() {
  tcp_up_ = true;
  if (tls_ctx_ != nullptr && !tls_) {
    auto s = tls::Stream::create(*tls_ctx_, fd_, server_name_);
    if (!s) {
      down(cat({"TLS with ", peer_, ": ", s.error().message()}));
      return;
    }
    tls_ = std::move(*s);
  }
  if (tls_ && !tls_->established()) {
    switch (tls_->handshake()) {
      case tls::Step::Done: break;
      case tls::Step::WantRead:
      case tls::Step::WantWrite: return;  // finish_connect() goes on
      case tls::Step::Failed: down(cat({"with ", peer_, ": ", tls_->error()})); return;
    }
  }
  state_ = link::LinkState::Up;
  if (!token_out_.empty()) {
    // The token frame goes out before anything of the session's.
    const uint32_t len = static_cast<uint32_t>(kTokenMagic.size() + token_out_.size());
    for (int i = 0; i < 4; ++i) tx_.push_back(static_cast<std::byte>(len >> (8 * i)));
    for (char ch : kTokenMagic) tx_.push_back(static_cast<std::byte>(ch));
    for (char ch : token_out_) tx_.push_back(static_cast<std::byte>(ch));
  }
}

bool TcpLink::take_token_frame(std::span<const std::byte> f) {
  if (f.size() < kTokenMagic.size() || std::memcmp(f.data(), kTokenMagic.data(), kTokenMagic.size()) != 0) return false;
  const auto t = f.subspan(kTokenMagic.size());
  presented_token_.assign(reinterpret_cast<const char*>(t.data()), std::min(t.size(), kMaxToken));
  return true;
}

void TcpLink::down(const std::string& why) {
  if (state_ == link::LinkState::Down) return;
  state_ = link::LinkState::Down;
  error_ = why;
  wants_write_ = false;
}

void TcpLink::finish_connect() {
  if (state_ != link::LinkState::Connecting) return;
  if (tcp_up_) {
    connected();  // the TLS handshake goes on
    return;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    down(cat({"connect to ", peer_, ": ", std::strerror(err)}));
    return;
  }
  connected();
}

Result<size_t> TcpLink::transmit_tls(link::Session& s) {
  size_t total = 0;
  for (;;) {
    // Gather what the session has into one buffer (its capacity is kept: no allocation once
    // warm), then encrypt and send it as a batch.
    while (tx_.size() < kTlsBatch) {
      const auto spans = s.next_output();
      if (spans.empty()) break;
      size_t took = 0;
      for (const auto& sp : spans) {
        const size_t n = std::min(sp.size(), kTlsBatch - tx_.size());
        tx_.insert(tx_.end(), sp.begin(), sp.begin() + static_cast<ptrdiff_t>(n));
        took += n;
        if (n < sp.size()) break;
      }
      if (took == 0) break;
      s.wrote(took);
      c_.bytes_out += took;
      total += took;
    }
    if (tx_.empty()) {
      wants_write_ = false;
      return total;
    }
    ++c_.write_calls;
    if (!tls::send_pending(*tls_, tx_, tx_sent_, kTlsBatch / 2)) {
      down(cat({"send to ", peer_, ": ", tls_->error()}));
      return tl::unexpected(Errc::Closed);
    }
    if (!tx_.empty()) {  // the socket is full: wait for writability
      ++c_.would_block;
      wants_write_ = true;
      return total;
    }
  }
}

Result<size_t> TcpLink::transmit(link::Session& s) {
  if (state_ != link::LinkState::Up) return tl::unexpected(state_ == link::LinkState::Down ? Errc::Closed : Errc::WouldBlock);
  if (tls_) return transmit_tls(s);
  if (!tx_.empty()) {  // the token frame
    if (!tcp::send_pending(fd_, tx_, tx_sent_)) {
      down(cat({"send to ", peer_, ": ", std::strerror(errno)}));
      return tl::unexpected(Errc::Closed);
    }
    if (!tx_.empty()) {
      wants_write_ = true;
      return size_t{0};
    }
  }
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
      if (first_frame_) {
        first_frame_ = false;
        if (take_token_frame(*f)) continue;
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
  if (tls_) {
    ++c_.read_calls;
    auto r = tls::receive(*tls_, reader_, kTlsReadBudget);
    if (r) {
      c_.bytes_in += *r;
      if (auto d = drain(); !d) return tl::unexpected(d.error());
      return got;
    }
    if (r.error() == Errc::WouldBlock) return got;
    if (r.error() == Errc::Closed) {
      down(cat({"connection closed by ", peer_, reader_.pending() > 0 ? " mid-frame" : ""}));
    } else {
      down(cat({"receive from ", peer_, ": ", tls_->error()}));
    }
    return tl::unexpected(Errc::Closed);
  }
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
    if (errno == EMFILE || errno == ENFILE) return tl::unexpected(Errc::LimitReached);  // out of descriptors
    return tl::unexpected(errno == EAGAIN || errno == EWOULDBLOCK ? Errc::WouldBlock : Errc::System);
  }
}

}  // namespace bus::tcp
