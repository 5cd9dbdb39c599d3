#include "notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace bus::daemon::notify {

static_assert(sizeof(sockaddr_un) <= 112, "Notifier::addr_ holds a sockaddr_un");

namespace {

// A decimal number that fills the whole of `text`.
bool parse_u64(std::string_view text, uint64_t& out) {
  if (text.empty()) return false;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), out);
  return r.ec == std::errc() && r.ptr == text.data() + text.size();
}

}  // namespace

Notifier Notifier::from_env() {
  Notifier n;
  const char* env = std::getenv("NOTIFY_SOCKET");
  if (env == nullptr || *env == '\0') return n;
  const std::string_view name(env);
  auto* sa = reinterpret_cast<sockaddr_un*>(n.addr_);
  sa->sun_family = AF_UNIX;
  if (name.front() != '/' && name.front() != '@') {
    // systemd also knows "vsock:..." (a VM's manager); busd only ever runs under a local one.
    n.error_ = "NOTIFY_SOCKET '" + std::string(name) + "' is neither an absolute path nor @abstract";
    return n;
  }
  if (name.size() > sizeof sa->sun_path - (name.front() == '/' ? 1 : 0)) {
    n.error_ = "NOTIFY_SOCKET is too long for a unix socket address";
    return n;
  }
  std::memcpy(sa->sun_path, name.data(), name.size());
  size_t len = offsetof(sockaddr_un, sun_path) + name.size();
  if (name.front() == '@') {
    sa->sun_path[0] = '\0';  // abstract: the name is the bytes after the NUL, no terminator
  } else {
    len += 1;  // the path's terminating NUL (already zero)
  }
  n.fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (n.fd_ < 0) {
    n.error_ = std::string("socket(AF_UNIX, SOCK_DGRAM): ") + std::strerror(errno);
    return n;
  }
  n.addr_len_ = static_cast<uint32_t>(len);

  // The watchdog applies to the process named by WATCHDOG_PID (when set), sd_watchdog_enabled(3).
  if (const char* usec = std::getenv("WATCHDOG_USEC"); usec != nullptr && *usec != '\0') {
    uint64_t v = 0;
    if (!parse_u64(usec, v) || v == 0) {
      n.error_ = "WATCHDOG_USEC '" + std::string(usec) + "' is not a positive number: no watchdog";
    } else if (const char* pid = std::getenv("WATCHDOG_PID"); pid != nullptr && *pid != '\0') {
      uint64_t p = 0;
      if (parse_u64(pid, p) && p == static_cast<uint64_t>(::getpid())) n.watchdog_usec_ = v;
    } else {
      n.watchdog_usec_ = v;
    }
  }
  return n;
}

Notifier::~Notifier() {
  if (fd_ >= 0) ::close(fd_);
}

Notifier::Notifier(Notifier&& o) noexcept { *this = std::move(o); }

Notifier& Notifier::operator=(Notifier&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    addr_len_ = std::exchange(o.addr_len_, 0);
    std::memcpy(addr_, o.addr_, sizeof addr_);
    watchdog_usec_ = std::exchange(o.watchdog_usec_, 0);
    error_ = std::move(o.error_);
  }
  return *this;
}

bool Notifier::send(std::string_view state, bool wait) noexcept {
  if (addr_len_ == 0 || fd_ < 0) return false;
  for (;;) {
    const ssize_t n = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT),
                               reinterpret_cast<const sockaddr*>(addr_), addr_len_);
    if (n >= 0) return static_cast<size_t>(n) == state.size();
    if (errno != EINTR) return false;
  }
}

bool Notifier::ready(std::string_view status) {
  if (status.empty()) return send("READY=1");
  // Cold, once per start: the allocation does not matter.
  std::string msg = "READY=1\nSTATUS=";
  msg += status;
  return send(msg);
}

Notifier& systemd() {
  static Notifier n = Notifier::from_env();
  return n;
}

}  // namespace bus::daemon::notify
