#include "socket/frame.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace bus::sock {

void FrameReader::compact() {
  if (begin_ == 0) return;
  std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
}

size_t FrameReader::feed(std::span<const std::byte> bytes) {
  if (bytes.empty()) return 0;
  const auto r = room(bytes.size());
  const size_t n = std::min(r.size(), bytes.size());  // room() may offer less than asked
  std::memcpy(r.data(), bytes.data(), n);
  commit(n);
  return n;
}

std::span<std::byte> FrameReader::room(size_t at_least) {
  compact();
  // Never more than one maximal frame (plus its header) buffered: a peer cannot make us grow.
  // (Callers take every complete frame with next() between reads, so what stays buffered is
  // less than one frame and this bound holds.)
  const size_t cap_limit = size_t{max_frame_} + kFrameHeader;
  size_t want = std::min(end_ + at_least, cap_limit);
  if (want <= end_) want = end_ + at_least;
  if (buf_.size() < want) buf_.resize(want);
  return {buf_.data() + end_, buf_.size() - end_};
}

Result<std::span<const std::byte>> FrameReader::next() noexcept {
  const size_t avail = end_ - begin_;
  if (avail < kFrameHeader) return tl::unexpected(Errc::WouldBlock);
  const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + begin_);
  const uint32_t len = uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 |
                       uint32_t{p[3]} << 24;
  if (len > max_frame_) return tl::unexpected(Errc::TooLarge);
  if (avail - kFrameHeader < len) return tl::unexpected(Errc::WouldBlock);
  const std::span<const std::byte> frame(buf_.data() + begin_ + kFrameHeader, len);
  begin_ += kFrameHeader + len;
  return frame;
}

void append_frame(std::vector<std::byte>& out, std::span<const std::byte> payload) {
  const auto len = static_cast<uint32_t>(payload.size());
  const std::byte hdr[4] = {std::byte(len), std::byte(len >> 8), std::byte(len >> 16),
                            std::byte(len >> 24)};
  out.insert(out.end(), hdr, hdr + 4);
  out.insert(out.end(), payload.begin(), payload.end());
}

Expected<void> send_frame(int fd, std::span<const std::byte> payload, std::span<const int> fds) {
  if (fds.size() > kMaxFds) return fail(Errc::InvalidArgument, "too many descriptors for one frame");
  const auto len = static_cast<uint32_t>(payload.size());
  uint8_t hdr[4] = {uint8_t(len), uint8_t(len >> 8), uint8_t(len >> 16), uint8_t(len >> 24)};
  iovec iov[2] = {{hdr, 4}, {const_cast<std::byte*>(payload.data()), payload.size()}};
  size_t total = 4 + payload.size();
  size_t sent = 0;
  bool fds_sent = fds.empty();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  while (sent < total) {
    // Rebuild the iovec past what was sent.
    iovec cur[2];
    int n = 0;
    size_t skip = sent;
    for (const auto& v : iov) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      cur[n++] = {static_cast<char*>(v.iov_base) + skip, v.iov_len - skip};
      skip = 0;
    }
    msghdr msg{};
    msg.msg_iov = cur;
    msg.msg_iovlen = static_cast<size_t>(n);
    if (!fds_sent) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t r = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, 1000) < 0 && errno != EINTR) return tl::unexpected(system_error("poll", errno));
        if (p.revents & (POLLHUP | POLLERR)) return fail(Errc::Closed, "peer closed the socket");
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) return fail(Errc::Closed, "peer closed the socket");
      return tl::unexpected(system_error("sendmsg", errno));
    }
    fds_sent = true;
    sent += static_cast<size_t>(r);
  }
  return {};
}

Result<size_t> receive(int fd, FrameReader& reader, std::vector<int>* fds) {
  auto r = reader.room();
  iovec iov{r.data(), r.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return tl::unexpected(Errc::WouldBlock);
    return tl::unexpected(errno == ECONNRESET ? Errc::Closed : Errc::System);
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int passed;
      std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (fds != nullptr && fds->size() < kMaxFds) {
        fds->push_back(passed);
      } else {
        ::close(passed);  // nobody asked for it: do not leak it
      }
    }
  }
  if (n == 0) return tl::unexpected(Errc::Closed);
  reader.commit(static_cast<size_t>(n));
  return static_cast<size_t>(n);
}

void drop_sent(std::vector<std::byte>& out, size_t& sent, size_t compact_after) noexcept {
  if (sent == out.size()) {
    out.clear();
    sent = 0;
  } else if (sent > compact_after) {
    out.erase(out.begin(), out.begin() + static_cast<ptrdiff_t>(sent));
    sent = 0;
  }
}

}  // namespace bus::sock
