// bus/daemon/notify: the sd_notify datagrams, checked byte for byte on a socket the test binds
// (a path and an abstract name), and how $NOTIFY_SOCKET / $WATCHDOG_USEC / $WATCHDOG_PID are read.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "daemon/notify.hpp"

using bus::daemon::notify::Notifier;

namespace {

// A datagram socket bound to `name` ("/path" or "@abstract"), as systemd's would be.
struct Receiver {
  int fd = -1;
  std::string path;
  explicit Receiver(const std::string& name) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, name.data(), name.size());
    socklen_t len = offsetof(sockaddr_un, sun_path) + name.size();
    if (name[0] == '@') {
      sa.sun_path[0] = '\0';
    } else {
      path = name;
      ::unlink(name.c_str());
      len += 1;
    }
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) == 0);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Receiver() {
    ::close(fd);
    if (!path.empty()) ::unlink(path.c_str());
  }
  std::string next() {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    REQUIRE(n >= 0);
    return std::string(buf, static_cast<size_t>(n));
  }
  bool empty() {
    char buf[16];
    return ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN;
  }
};

void clear_env() {
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
}

std::string abstract_name() { return "@busd-test-notify-" + std::to_string(::getpid()); }

}  // namespace

TEST_CASE("without NOTIFY_SOCKET every call is a no-op") {
  clear_env();
  Notifier n = Notifier::from_env();
  CHECK_FALSE(n.enabled());
  CHECK(n.error().empty());
  CHECK_FALSE(n.ready());
  CHECK_FALSE(n.stopping());
  CHECK_FALSE(n.watchdog());
}

TEST_CASE("READY, STATUS and STOPPING reach a socket at a path, exactly") {
  clear_env();
  char dir[] = "/tmp/busd-notify-XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/notify";
  {
    Receiver r(path);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
    Notifier n = Notifier::from_env();
    REQUIRE(n.enabled());
    CHECK(n.error().empty());
    CHECK(n.watchdog_usec() == 0);
    CHECK(n.ready());
    CHECK(r.next() == "READY=1");
    CHECK(n.ready("accepting agents on /run/busd/busd.sock"));
    CHECK(r.next() == "READY=1\nSTATUS=accepting agents on /run/busd/busd.sock");
    CHECK(n.stopping());
    CHECK(r.next() == "STOPPING=1");
    CHECK_FALSE(n.watchdog());  // no WATCHDOG_USEC: nothing sent
    CHECK(r.empty());
    // Moved: the new owner sends, the old one is disabled.
    Notifier m = std::move(n);
    CHECK(m.send("STATUS=moved"));
    CHECK(r.next() == "STATUS=moved");
    CHECK_FALSE(n.enabled());  // NOLINT(bugprone-use-after-move): checked on purpose
  }
  // The receiver is gone: a send fails, it does not hang or crash.
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  Notifier gone = Notifier::from_env();
  CHECK_FALSE(gone.ready());
  ::rmdir(dir);
  clear_env();
}

TEST_CASE("an abstract socket name (@name) is reached without its '@' or a terminating NUL") {
  clear_env();
  const std::string name = abstract_name();
  Receiver r(name);
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  Notifier n = Notifier::from_env();
  REQUIRE(n.enabled());
  CHECK(n.ready());
  // Sent with a trailing NUL (as a path is), the address would name another abstract socket,
  // where nobody listens: the send would fail and nothing would arrive here.
  CHECK(r.next() == "READY=1");
  clear_env();
}

TEST_CASE("WATCHDOG_USEC enables WATCHDOG=1, for this process only") {
  clear_env();
  const std::string name = abstract_name();
  Receiver r(name);
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);

  ::setenv("WATCHDOG_USEC", "2000000", 1);
  {
    Notifier n = Notifier::from_env();
    CHECK(n.watchdog_usec() == 2'000'000);
    CHECK(n.watchdog());
    CHECK(r.next() == "WATCHDOG=1");
  }
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  {
    Notifier n = Notifier::from_env();
    CHECK(n.watchdog_usec() == 2'000'000);
    CHECK(n.watchdog());
    CHECK(r.next() == "WATCHDOG=1");
  }
  ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);  // meant for another process
  {
    Notifier n = Notifier::from_env();
    CHECK(n.watchdog_usec() == 0);
    CHECK_FALSE(n.watchdog());
    CHECK(r.empty());
    CHECK(n.ready());  // notifications still go
    CHECK(r.next() == "READY=1");
  }
  ::unsetenv("WATCHDOG_PID");
  for (const char* bad : {"soon", "0", "12x", "-5"}) {
    ::setenv("WATCHDOG_USEC", bad, 1);
    Notifier n = Notifier::from_env();
    CHECK(n.watchdog_usec() == 0);
    CHECK(n.error().find("WATCHDOG_USEC") != std::string::npos);
    CHECK_FALSE(n.watchdog());
    CHECK(r.empty());
  }
  clear_env();
}

TEST_CASE("a NOTIFY_SOCKET that is not an address disables notification and says why") {
  clear_env();
  for (const std::string& bad : {std::string("relative/notify"), std::string("vsock:2:1234"),
                                "/" + std::string(200, 'x')}) {
    ::setenv("NOTIFY_SOCKET", bad.c_str(), 1);
    Notifier n = Notifier::from_env();
    CHECK_FALSE(n.enabled());
    CHECK(n.error().find("NOTIFY_SOCKET") != std::string::npos);
    CHECK_FALSE(n.ready());
  }
  clear_env();
}
