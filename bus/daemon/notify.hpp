// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per state change
// to the AF_UNIX socket named by $NOTIFY_SOCKET ("/path", or "@name" for an abstract name).
// busd sends READY=1 once its socket and listeners accept, STOPPING=1 when it starts draining
// and, when $WATCHDOG_USEC is set (WatchdogSec= in the unit), WATCHDOG=1 from its loop's timer.
// Not under systemd ($NOTIFY_SOCKET unset) every call is a no-op.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace bus::daemon::notify {

class Notifier {
 public:
  /// Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID. A NOTIFY_SOCKET that is neither an
  /// absolute path nor "@name", or too long, disables it (error() says why).
  static Notifier from_env();
  Notifier() = default;
  ~Notifier();
  Notifier(Notifier&& o) noexcept;
  Notifier& operator=(Notifier&& o) noexcept;
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  /// Whether a notification socket is configured (and valid).
  [[nodiscard]] bool enabled() const noexcept { return addr_len_ != 0; }
  /// The watchdog period systemd asked for, in microseconds; 0: no watchdog.
  [[nodiscard]] uint64_t watchdog_usec() const noexcept { return watchdog_usec_; }
  /// Why $NOTIFY_SOCKET or $WATCHDOG_USEC was not usable ("" if it was, or was unset).
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

  /// Sends `state` as one datagram ("READY=1\nSTATUS=...": newline-separated assignments).
  /// False when disabled or the send failed.
  /// `wait`: false sends without blocking (a full receive queue drops the datagram: the loop's
  /// watchdog ping never stalls busd; the next tick sends another).
  bool send(std::string_view state, bool wait = true) noexcept;
  bool ready(std::string_view status = {});
  bool stopping() noexcept { return send("STOPPING=1"); }
  /// WATCHDOG=1 when a watchdog is configured (no-op otherwise).
  bool watchdog() noexcept { return watchdog_usec_ != 0 && send("WATCHDOG=1", false); }

 private:
  int fd_ = -1;
  uint32_t addr_len_ = 0;     // 0: disabled
  alignas(8) char addr_[112] = {};  // a sockaddr_un, as bytes: keeps <sys/un.h> out of here
  uint64_t watchdog_usec_ = 0;
  std::string error_;
};

/// busd's notifier, read from the environment on first use.
Notifier& systemd();

}  // namespace bus::daemon::notify
