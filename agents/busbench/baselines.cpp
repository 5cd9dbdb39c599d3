// busbench baselines: see baselines.hpp.
//
// Patience. No wait here lasts forever: a spinning side reads the clock every 2^16 polls and
// gives up after 10 s; sockets carry SO_RCVTIMEO/SO_SNDTIMEO; the eventfd sides block in a plain
// read() (a timed poll() before each read would add a system call to the very floor being
// measured), so a watchdog thread in the parent wakes both of them with an abort value when no
// round trip completes for 10 s or when the child dies.
#include "baselines.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bus/clock.hpp"
#include "netns.hpp"
#include "proc.hpp"
#include "shm/layout.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "shm/wait.hpp"

namespace bus::bench {
namespace {

constexpr uint64_t kPatienceNs = 10'000'000'000ull;
constexpr time_t kPatienceSeconds = 10;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

[[noreturn]] void fail_errno(const std::string& what, int err) {
  throw std::runtime_error(what + ": " + std::strerror(err));
}

[[noreturn]] void fail_errno(const std::string& what) { fail_errno(what, errno); }

// Keeps the compiler from dropping work whose result is unused.
inline void keep(const void* p) noexcept { asm volatile("" : : "r"(p) : "memory"); }

// ---- affinity ----

cpu_set_t single_cpu(int cpu) noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
  return set;
}

/// Sets the calling thread's affinity (pid 0 is the calling thread, not the whole process).
bool apply_mask(const cpu_set_t& set) noexcept {
  return CPU_COUNT(&set) > 0 && ::sched_setaffinity(0, sizeof set, &set) == 0;
}

/// Pins the calling thread to `cpu` (cpu < 0: leaves it) and restores its affinity on
/// destruction. Threads and children started afterwards take mask_for(cpu): their own CPU, or
/// the affinity the caller had before it was pinned.
class ScopedPin {
 public:
  ScopedPin(int cpu, const char* who) {
    if (::sched_getaffinity(0, sizeof saved_, &saved_) != 0) {
      fail_errno(std::string(who) + ": sched_getaffinity");
    }
    if (cpu < 0) return;
    const cpu_set_t want = single_cpu(cpu);
    if (!apply_mask(want)) {
      fail_errno(std::string(who) + ": cannot pin the measuring side to cpu " + std::to_string(cpu),
                 CPU_COUNT(&want) == 0 ? EINVAL : errno);
    }
    pinned_ = true;
  }
  ~ScopedPin() {
    if (pinned_) (void)::sched_setaffinity(0, sizeof saved_, &saved_);
  }
  ScopedPin(const ScopedPin&) = delete;
  ScopedPin& operator=(const ScopedPin&) = delete;

  [[nodiscard]] cpu_set_t mask_for(int cpu) const noexcept { return cpu >= 0 ? single_cpu(cpu) : saved_; }

 private:
  cpu_set_t saved_{};
  bool pinned_ = false;
};

// ---- spinning with patience ----

/// Spins until `word` holds `want`. The clock is read only every 2^16 polls, which a waiting
/// round trip never reaches; gives up (false) after kPatienceNs of waiting or once `stop` is set.
inline bool spin_until(const std::atomic<uint64_t>& word, uint64_t want,
                       const std::atomic<bool>& stop) noexcept {
  uint32_t polls = 0;
  uint64_t give_up = 0;
  while (word.load(std::memory_order_acquire) != want) {
    shm::cpu_relax();
    if ((++polls & 0xFFFFu) == 0) [[unlikely]] {
      if (stop.load(std::memory_order_relaxed)) return false;
      const uint64_t now = clock::mono_ns();
      if (give_up == 0) {
        give_up = now + kPatienceNs;
      } else if (now > give_up) {
        return false;
      }
    }
  }
  return true;
}

/// Joins a thread on every path; `stop` (if any) is set first so that a spinning thread quits.
class Joiner {
 public:
  Joiner(std::thread& t, std::atomic<bool>* stop) noexcept : t_(t), stop_(stop) {}
  ~Joiner() { join(); }
  Joiner(const Joiner&) = delete;
  Joiner& operator=(const Joiner&) = delete;
  void join() noexcept {
    if (stop_ != nullptr) stop_->store(true, std::memory_order_relaxed);
    if (t_.joinable()) t_.join();
  }

 private:
  std::thread& t_;
  std::atomic<bool>* stop_;
};

// ---- file descriptors and shared pages ----

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

/// Anonymous MAP_SHARED memory: a fork()ed child sees the same pages.
class SharedPages {
 public:
  SharedPages(size_t bytes, const char* who) : size_(bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail_errno(std::string(who) + ": mmap of " + std::to_string(bytes) + " shared bytes");
    base_ = static_cast<std::byte*>(p);
    std::memset(base_, 0, bytes);  // fault the pages in now, not during the run
  }
  ~SharedPages() { ::munmap(base_, size_); }
  SharedPages(const SharedPages&) = delete;
  SharedPages& operator=(const SharedPages&) = delete;
  [[nodiscard]] std::byte* data() const noexcept { return base_; }

 private:
  std::byte* base_ = nullptr;
  size_t size_ = 0;
};

/// Heap bytes on cache lines of their own (128-byte aligned, size rounded up to 128): two
/// buffers used by two threads must not share a line, which neighbouring malloc chunks would.
class LineBuffer {
 public:
  explicit LineBuffer(size_t n, std::byte fill = std::byte{0})
      : size_((std::max<size_t>(n, 1) + kLine - 1) / kLine * kLine),
        p_(static_cast<std::byte*>(::operator new(size_, std::align_val_t{kLine}))) {
    std::memset(p_, static_cast<int>(fill), size_);
  }
  ~LineBuffer() { ::operator delete(p_, std::align_val_t{kLine}); }
  LineBuffer(const LineBuffer&) = delete;
  LineBuffer& operator=(const LineBuffer&) = delete;
  [[nodiscard]] std::byte* data() const noexcept { return p_; }

 private:
  static constexpr size_t kLine = shm::kFalseSharingRange;
  size_t size_;
  std::byte* p_;
};

size_t page_round(size_t n) {
  const long page = ::sysconf(_SC_PAGESIZE);
  const size_t ps = page > 0 ? static_cast<size_t>(page) : 4096;
  return std::max<size_t>(ps, (n + ps - 1) / ps * ps);
}

// ---- child processes ----

// Exit statuses of a baseline's child (Child::fork exits 125 when the parent was already gone
// and 1 when an exception escaped; a child killed by signal n reports 128 + n).
enum ChildExit : int {
  kChildOk = 0,
  kChildException = 1,
  kChildPinFailed = 90,
  kChildIoError,
  kChildTimeout,
  kChildPeerClosed,
  kChildAborted,
  kChildBadWake,
  kChildOrphaned = 125,
};

const char* child_exit_text(int code) noexcept {
  switch (code) {
    case kChildOk: return "finished";
    case kChildOrphaned: return "its parent was gone before it started";
    case kChildPinFailed: return "could not pin itself to its cpu";
    case kChildIoError: return "a read or write failed";
    case kChildTimeout: return "its peer did not answer within 10 s";
    case kChildPeerClosed: return "its peer closed the connection";
    case kChildAborted: return "stopped by the watchdog";
    case kChildBadWake: return "unexpected eventfd value";
    case kChildException: return "an exception escaped";
    default: return "unexpected exit status";
  }
}

std::string describe_exit(int code) {
  if (code >= 128) return "was killed by signal " + std::to_string(code - 128);
  return "exited with status " + std::to_string(code) + " (" + child_exit_text(code) + ")";
}

/// A baseline's peer process: a Child (proc.hpp: dies with busbench, leaves with _exit(),
/// killed and reaped when destroyed) whose exit status is told in errors.
class ChildProcess {
 public:
  template <class Body>
  ChildProcess(std::string who, Body&& body) : who_(std::move(who)), child_(Child::fork([&body] { return body(); })) {}

  [[nodiscard]] pid_t pid() const noexcept { return child_.pid(); }

  /// For error messages: if the child exits within `patience_ns`, reaps it and returns
  /// " (the child process exited with ...)"; otherwise "" (and the destructor kills it).
  std::string exit_note(uint64_t patience_ns) noexcept {
    try {
      const int code = child_.wait(static_cast<int>(patience_ns / 1'000'000));
      if (code >= 0) return " (the child process " + describe_exit(code) + ")";
    } catch (...) {
    }
    return {};
  }

  /// Waits (up to 10 s) for the child to exit by itself and reaps it; throws unless it
  /// finished cleanly.
  void join() {
    const int code = child_.wait(static_cast<int>(kPatienceNs / 1'000'000));
    if (code < 0) fail(who_ + ": the child process did not exit within 10 s");
    if (code != kChildOk) fail(who_ + ": the child process " + describe_exit(code));
  }

 private:
  std::string who_;
  Child child_;
};

// ---- blocking I/O helpers (no exceptions: the child uses them too) ----

enum class Io { Ok, Timeout, Closed, Error };

bool read_word(int fd, uint64_t* v) noexcept {
  for (;;) {
    const ssize_t r = ::read(fd, v, sizeof *v);
    if (r == static_cast<ssize_t>(sizeof *v)) return true;
    if (r < 0 && errno == EINTR) continue;
    return false;
  }
}

bool write_word(int fd, uint64_t v) noexcept {
  for (;;) {
    const ssize_t r = ::write(fd, &v, sizeof v);
    if (r == static_cast<ssize_t>(sizeof v)) return true;
    if (r < 0 && errno == EINTR) continue;
    return false;
  }
}

Io recv_all(int fd, std::byte* p, size_t n) noexcept {
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r == 0) {
      return Io::Closed;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Io::Timeout;  // SO_RCVTIMEO expired
    } else if (errno != EINTR) {
      return Io::Error;
    }
  }
  return Io::Ok;
}

Io send_all(int fd, const std::byte* p, size_t n) noexcept {
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);  // a dead peer is an error, not SIGPIPE
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return Io::Timeout;  // SO_SNDTIMEO expired
    } else if (r < 0 && errno == EPIPE) {
      return Io::Closed;
    } else if (r < 0 && errno != EINTR) {
      return Io::Error;
    }
  }
  return Io::Ok;
}

int child_status(Io io) noexcept {
  switch (io) {
    case Io::Ok: return kChildOk;
    case Io::Timeout: return kChildTimeout;
    case Io::Closed: return kChildPeerClosed;
    case Io::Error: break;
  }
  return kChildIoError;
}

/// "the peer closed the connection", ...; reads errno for Io::Error.
std::string io_text(Io io) {
  switch (io) {
    case Io::Ok: return "ok";
    case Io::Timeout: return "the peer did not answer within 10 s";
    case Io::Closed: return "the peer closed the connection";
    case Io::Error: break;
  }
  return std::strerror(errno);
}

// ---- watchdog for the blocking eventfd round trip ----

/// Any eventfd value other than 1 tells a side of rtt_eventfd to stop.
constexpr uint64_t kAbortWake = uint64_t{1} << 40;

struct alignas(shm::kFalseSharingRange) Progress {
  std::atomic<uint64_t> rounds{0};
};

/// Looks every 20 ms at the parent's round count and at the child (without reaping it). When
/// no round trip completes for 10 s, or the child ended other than cleanly, it writes kAbortWake
/// to both eventfds, which wakes whichever side is blocked in read().
class Watchdog {
 public:
  Watchdog(pid_t child, int parent_fd, int child_fd, const Progress& progress, cpu_set_t mask)
      : child_(child), parent_fd_(parent_fd), child_fd_(child_fd), progress_(progress), mask_(mask) {
    thread_ = std::thread([this] { run(); });
  }
  ~Watchdog() { stop(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void stop() noexcept {
    {
      const std::lock_guard<std::mutex> lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  /// Why it fired (after stop()); empty if it did not.
  [[nodiscard]] const std::string& reason() const noexcept { return reason_; }

 private:
  void run() {
    (void)apply_mask(mask_);  // not on the measuring side's cpu
    std::unique_lock<std::mutex> lk(mu_);
    uint64_t last = progress_.rounds.load(std::memory_order_relaxed);
    uint64_t last_change = clock::mono_ns();
    while (!done_) {
      cv_.wait_for(lk, std::chrono::milliseconds(20));
      if (done_) break;
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(child_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == child_) {
        const bool exited = info.si_code == CLD_EXITED;
        if (!exited || info.si_status != kChildOk) {
          fire("the child process " + describe_exit(exited ? info.si_status : 128 + info.si_status));
          return;
        }
      }
      const uint64_t now = clock::mono_ns();
      const uint64_t cur = progress_.rounds.load(std::memory_order_relaxed);
      if (cur != last) {
        last = cur;
        last_change = now;
      } else if (now - last_change > kPatienceNs) {
        fire("no round trip completed for 10 s (the peer does not answer)");
        return;
      }
    }
  }

  void fire(std::string why) noexcept {
    reason_ = std::move(why);
    (void)write_word(parent_fd_, kAbortWake);
    (void)write_word(child_fd_, kAbortWake);
  }

  pid_t child_;
  int parent_fd_;
  int child_fd_;
  const Progress& progress_;
  cpu_set_t mask_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string reason_;
  std::thread thread_;
};

// ---- TCP setup ----

void set_int_option(int fd, int level, int name, int value, const char* what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) fail_errno(std::string("rtt_tcp: ") + what);
}

void set_timeouts(int fd) {
  const timeval tv{kPatienceSeconds, 0};
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    fail_errno("rtt_tcp: setting socket timeouts");
  }
}

/// Two connected, blocking TCP sockets: the first made in path.connect_netns, the second
/// accepted from a listener made in path.listen_netns on path.listen_ip (ephemeral port, closed
/// once the connection is accepted). TCP_NODELAY, 10 s send/receive timeouts. Loopback
/// (127.0.0.1 in the caller's namespace) by default.
std::pair<Fd, Fd> tcp_pair(const TcpPath& path) {
  Fd listener(socket_in_netns(path.listen_netns, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, "rtt_tcp"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (::inet_pton(AF_INET, path.listen_ip.c_str(), &addr.sin_addr) != 1) fail("rtt_tcp: not an IPv4 address: " + path.listen_ip);
  addr.sin_port = 0;
  socklen_t alen = sizeof addr;
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    fail_errno("rtt_tcp: bind " + path.listen_ip + ":0");
  }
  if (::listen(listener.get(), 1) != 0) fail_errno("rtt_tcp: listen");
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
    fail_errno("rtt_tcp: getsockname");
  }
  set_timeouts(listener.get());  // SO_RCVTIMEO bounds accept()

  Fd a(socket_in_netns(path.connect_netns, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, "rtt_tcp"));
  set_timeouts(a.get());  // SO_SNDTIMEO bounds connect()
  while (::connect(a.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINTR) fail_errno("rtt_tcp: connect to " + path.listen_ip + ":" + std::to_string(ntohs(addr.sin_port)));
  }
  Fd b;
  for (;;) {
    b = Fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (b.valid()) break;
    if (errno != EINTR) fail_errno("rtt_tcp: accept");
  }
  set_timeouts(b.get());
  for (const Fd* s : {&a, &b}) set_int_option(s->get(), IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  return {std::move(a), std::move(b)};
}

// ---- cache line ----

struct alignas(shm::kFalseSharingRange) PingLine {
  std::atomic<uint64_t> word{0};
};

// Written only on failure and at the end: read by the spinners only in their slow path.
struct alignas(shm::kFalseSharingRange) PingControl {
  std::atomic<bool> stop{false};
  std::atomic<int> pong_error{0};  // 1: could not pin, 2: timed out
};

struct PingShared {
  PingLine line;
  PingControl control;
};

}  // namespace

double rtt_cacheline(const RttParams& p, const Clock& clk, Histogram& h) {
  const ScopedPin pin(p.cpu_a, "rtt_cacheline");
  auto shared = std::make_unique<PingShared>();
  const uint64_t total = p.warmup + p.rounds;
  // The other thread captures by value: reading the measuring thread's live stack frame per
  // iteration would share its cache lines (it costs ~30 ns a round trip).
  std::thread pong([s = shared.get(), total, mask = pin.mask_for(p.cpu_b)] {
    if (!apply_mask(mask)) {
      s->control.pong_error.store(1);
      s->control.stop.store(true);
      return;
    }
    for (uint64_t i = 0; i < total; ++i) {
      const uint64_t want = 2 * i + 1;
      if (!spin_until(s->line.word, want, s->control.stop)) {
        if (!s->control.stop.load()) s->control.pong_error.store(2);
        s->control.stop.store(true);
        return;
      }
      s->line.word.store(want + 1, std::memory_order_release);
    }
  });
  Joiner joiner(pong, &shared->control.stop);
  std::atomic<uint64_t>& line = shared->line.word;
  bool ok = true;
  uint64_t t_start = clock::mono_ns();
  for (uint64_t i = 0; i < total; ++i) {
    if (i == p.warmup) t_start = clock::mono_ns();
    const uint64_t t0 = clk.now();
    line.store(2 * i + 1, std::memory_order_release);
    if (!spin_until(line, 2 * i + 2, shared->control.stop)) [[unlikely]] {
      ok = false;
      break;
    }
    const uint64_t t1 = clk.now();
    if (i >= p.warmup) h.record(clk.to_ns(t1 - t0));
  }
  const double seconds = static_cast<double>(clock::mono_ns() - t_start) / 1e9;
  joiner.join();
  if (!ok) {
    switch (shared->control.pong_error.load()) {
      case 1:
        fail("rtt_cacheline: cannot pin the pong thread to cpu " + std::to_string(p.cpu_b));
      case 2: fail("rtt_cacheline: the ping thread stopped answering for 10 s");
      default: fail("rtt_cacheline: the pong thread did not answer within 10 s");
    }
  }
  return seconds;
}

double rtt_eventfd(const RttParams& p, const Clock& clk, Histogram& h) {
  const std::string who = "rtt_eventfd";
  const uint32_t len = p.payload;
  const uint64_t total = p.warmup + p.rounds;
  const size_t area = page_round(len);
  SharedPages pages(2 * area, "rtt_eventfd");
  std::byte* const request = pages.data();
  std::byte* const reply = pages.data() + area;
  // Blocking (no EFD_NONBLOCK): each side sleeps in read() until the other writes.
  Fd ping(::eventfd(0, EFD_CLOEXEC));  // parent -> child: a request is in `request`
  Fd pong(::eventfd(0, EFD_CLOEXEC));  // child -> parent: the reply is in `reply`
  if (!ping.valid() || !pong.valid()) fail_errno(who + ": eventfd");
  // At least one byte each: memcpy() wants valid pointers even for 0 bytes.
  std::vector<std::byte> src(std::max<size_t>(len, 1), std::byte{0x5a});
  std::vector<std::byte> dst(std::max<size_t>(len, 1));

  const ScopedPin pin(p.cpu_a, "rtt_eventfd");
  ChildProcess child(who, [&, mask = pin.mask_for(p.cpu_b)]() noexcept -> int {
    if (!apply_mask(mask)) return kChildPinFailed;
    for (uint64_t i = 0; i < total; ++i) {
      uint64_t v = 0;
      if (!read_word(ping.get(), &v)) return kChildIoError;
      if (v != 1) return v >= kAbortWake ? kChildAborted : kChildBadWake;
      std::memcpy(reply, request, len);
      if (!write_word(pong.get(), 1)) return kChildIoError;
    }
    return kChildOk;
  });
  Progress progress;
  Watchdog dog(child.pid(), pong.get(), ping.get(), progress, pin.mask_for(-1));

  const size_t stamp = std::min<size_t>(sizeof(uint64_t), len);
  uint64_t t_start = clock::mono_ns();
  for (uint64_t i = 0; i < total; ++i) {
    if (i == p.warmup) t_start = clock::mono_ns();
    std::memcpy(src.data(), &i, stamp);  // each request carries its round number
    const uint64_t t0 = clk.now();
    std::memcpy(request, src.data(), len);
    if (!write_word(ping.get(), 1)) fail_errno(who + ": write to eventfd");
    uint64_t v = 0;
    if (!read_word(pong.get(), &v)) fail_errno(who + ": read from eventfd");
    if (v != 1) [[unlikely]] {
      dog.stop();
      fail(who + ": " + (dog.reason().empty() ? "unexpected eventfd value " + std::to_string(v) : dog.reason()));
    }
    std::memcpy(dst.data(), reply, len);
    const uint64_t t1 = clk.now();
    if (std::memcmp(dst.data(), &i, stamp) != 0) fail(who + ": the reply does not carry the request's payload");
    if (i >= p.warmup) h.record(clk.to_ns(t1 - t0));
    progress.rounds.store(i + 1, std::memory_order_relaxed);
  }
  const double seconds = static_cast<double>(clock::mono_ns() - t_start) / 1e9;
  dog.stop();
  child.join();
  return seconds;
}

double rtt_tcp(const RttParams& p, const Clock& clk, Histogram& h) {
  const std::string who = "rtt_tcp";
  if (p.payload == 0) fail(who + ": payload must be at least 1 byte");
  const uint32_t len = p.payload;
  const uint64_t total = p.warmup + p.rounds;
  auto sockets = tcp_pair(p.tcp);
  Fd& mine = sockets.first;     // the parent's end
  Fd& theirs = sockets.second;  // the child's end
  std::vector<std::byte> src(len, std::byte{0x5a});
  std::vector<std::byte> dst(len);
  std::vector<std::byte> echo(len);  // the child's buffer, allocated before fork()

  const ScopedPin pin(p.cpu_a, "rtt_tcp");
  ChildProcess child(who, [&, mask = pin.mask_for(p.cpu_b)]() noexcept -> int {
    mine.reset();  // the parent's end: closed here so that the parent alone holds it
    if (!apply_mask(mask)) return kChildPinFailed;
    for (uint64_t i = 0; i < total; ++i) {
      if (const Io r = recv_all(theirs.get(), echo.data(), len); r != Io::Ok) return child_status(r);
      if (const Io r = send_all(theirs.get(), echo.data(), len); r != Io::Ok) return child_status(r);
    }
    return kChildOk;
  });
  theirs.reset();  // the child's end: once the child is gone, reads here see end of file

  const size_t stamp = std::min<size_t>(sizeof(uint64_t), len);
  uint64_t t_start = clock::mono_ns();
  for (uint64_t i = 0; i < total; ++i) {
    if (i == p.warmup) t_start = clock::mono_ns();
    std::memcpy(src.data(), &i, stamp);
    const uint64_t t0 = clk.now();
    if (const Io r = send_all(mine.get(), src.data(), len); r != Io::Ok) [[unlikely]] {
      const std::string text = io_text(r);
      fail(who + ": send: " + text + child.exit_note(1'000'000'000));
    }
    if (const Io r = recv_all(mine.get(), dst.data(), len); r != Io::Ok) [[unlikely]] {
      const std::string text = io_text(r);
      fail(who + ": receive: " + text + child.exit_note(1'000'000'000));
    }
    const uint64_t t1 = clk.now();
    if (std::memcmp(dst.data(), &i, stamp) != 0) fail(who + ": the reply does not carry the request's payload");
    if (i >= p.warmup) h.record(clk.to_ns(t1 - t0));
  }
  const double seconds = static_cast<double>(clock::mono_ns() - t_start) / 1e9;
  child.join();
  return seconds;
}

double stream_tcp(uint32_t record_bytes, uint64_t records, uint32_t batch) {
  return stream_tcp_on(record_bytes, records, batch, TcpPath{}).msgs_per_s;
}

StreamResult stream_tcp_on(uint32_t record_bytes, uint64_t records, uint32_t batch, const TcpPath& path) {
  const std::string who = "stream_tcp";
  if (record_bytes == 0 || records == 0 || batch == 0) fail(who + ": record size, count and batch must be positive");
  auto sockets = tcp_pair(path);
  Fd& mine = sockets.first;
  Fd& theirs = sockets.second;
  const size_t chunk = size_t{record_bytes} * batch;
  std::vector<std::byte> out(chunk, std::byte{0x5a});  // the child's batch, allocated before fork()
  SharedPages sender_cpu(page_round(sizeof(double)), "stream_tcp");  // the child writes its CPU seconds here
  auto* const sender_cpu_s = reinterpret_cast<double*>(sender_cpu.data());
  ChildProcess child(who, [&]() noexcept -> int {
    mine.reset();
    const double cpu0 = self_cpu_seconds();
    for (uint64_t sent = 0; sent < records; sent += batch) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(batch, records - sent)) * record_bytes;
      if (const Io r = send_all(theirs.get(), out.data(), n); r != Io::Ok) return child_status(r);
    }
    *sender_cpu_s = self_cpu_seconds() - cpu0;
    return kChildOk;
  });
  theirs.reset();
  std::vector<std::byte> in(64 * 1024);
  const uint64_t want = records * record_bytes;
  uint64_t got = 0;
  timespec c0{}, c1{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
  const uint64_t t0 = clock::mono_ns();
  while (got < want) {
    const ssize_t n = ::recv(mine.get(), in.data(), in.size(), 0);
    if (n > 0) {
      got += static_cast<uint64_t>(n);
      keep(in.data());
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    fail(who + ": receive after " + std::to_string(got) + " of " + std::to_string(want) + " bytes: " +
         (n == 0 ? std::string("closed") : std::string(std::strerror(errno))) + child.exit_note(1'000'000'000));
  }
  const double secs = static_cast<double>(clock::mono_ns() - t0) / 1e9;
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
  child.join();
  StreamResult r;
  r.msgs_per_s = static_cast<double>(records) / secs;
  r.sender_cpu_s = *sender_cpu_s;
  r.receiver_cpu_s = static_cast<double>(c1.tv_sec - c0.tv_sec) + static_cast<double>(c1.tv_nsec - c0.tv_nsec) / 1e9;
  return r;
}

double stream_ring_copy(uint32_t record_bytes, uint64_t records, uint32_t batch, int cpu_producer,
                        int cpu_consumer) {
  const std::string who = "stream_ring_copy";
  if (batch == 0) fail(who + ": batch must be at least 1");
  if (records == 0) fail(who + ": records must be at least 1");
  if (record_bytes > shm::max_record_for(shm::kMaxCapacity)) {
    fail(who + ": records of " + std::to_string(record_bytes) + " bytes are too large for a ring");
  }
  const uint64_t capacity = std::max<uint64_t>(uint64_t{1} << 20, shm::capacity_for(record_bytes));
  auto seg = shm::Segment::create_memfd("busbench-baseline", shm::ring_bytes(capacity));
  if (!seg) fail(who + ": " + seg.error().message());
  if (auto f = shm::format_ring(seg->bytes(), capacity); !f) fail(who + ": " + f.error().message());
  auto prod = shm::RingProducer::attach(seg->bytes());  // no eventfds: neither side sleeps
  auto cons = shm::RingConsumer::attach(seg->bytes());
  if (!prod || !cons) fail(who + ": " + (prod ? cons.error() : prod.error()).message());

  const uint32_t len = record_bytes;
  const shm::WaitStrategy ws = shm::WaitStrategy::spin();
  const LineBuffer src(len, std::byte{0x33});  // read by the producer
  const LineBuffer dst(len);                    // written by the consumer

  struct alignas(shm::kFalseSharingRange) Control {
    std::atomic<uint64_t> go{0};  // 1: the consumer has started its clock
    std::atomic<bool> stop{false};
    std::atomic<int> producer_error{0};  // -1: could not pin, 1: claim failed
  };
  Control ctl;

  const ScopedPin pin(cpu_consumer, "stream_ring_copy");
  std::thread producer([&ring = *prod, &ctl, src = src.data(), records, batch, len, ws,
                        mask = pin.mask_for(cpu_producer)] {
    if (!apply_mask(mask)) {
      ctl.producer_error.store(-1);
      return;
    }
    if (!spin_until(ctl.go, 1, ctl.stop)) return;
    const auto patience = shm::Deadline::after(kPatienceNs);
    for (uint64_t i = 0; i < records;) {
      const uint64_t end = std::min<uint64_t>(records, i + batch);
      for (; i < end; ++i) {
        auto c = ring.claim(len, ws, patience);
        if (!c) [[unlikely]] {
          // Not c.error(): reading it here makes GCC 12 keep `c` in memory (a byte store
          // followed by a wider load, a failed store forward): 5x fewer records per second.
          // Why it failed is told by ring.corruption() after the join.
          ctl.producer_error.store(1);
          return;
        }
        std::memcpy(c->data(), src, len);
        ring.commit(len);
      }
      ring.publish();
    }
  });
  Joiner joiner(producer, &ctl.stop);

  bool bad_length = false;
  std::byte* const out = dst.data();
  const uint64_t t0 = clock::mono_ns();
  ctl.go.store(1, std::memory_order_release);
  uint64_t got = 0;
  std::string error;
  uint64_t idle_since = 0;  // when the current wait began, once it has lasted a slice
  while (got < records) {
    // Waits in 50 ms slices, so that a producer that failed is noticed at once.
    if (!cons->wait_readable(ws, shm::Deadline::after(50'000'000))) {
      if (ctl.producer_error.load(std::memory_order_relaxed) != 0) break;
      const uint64_t now = clock::mono_ns();
      if (idle_since == 0) idle_since = now;
      if (now - idle_since > kPatienceNs) {
        error = "the producer published nothing for 10 s";
        break;
      }
      continue;
    }
    idle_since = 0;
    auto k = cons->poll(
        [&](const shm::Record& rec) {
          if (rec.data.size() != len) [[unlikely]] {
            bad_length = true;
            return;
          }
          std::memcpy(out, rec.data.data(), len);
          keep(out);
        },
        256);
    if (!k) {
      error = "ring error: " + std::string(cons->corruption());
      break;
    }
    got += *k;
  }
  const double seconds = static_cast<double>(clock::mono_ns() - t0) / 1e9;
  joiner.join();
  if (const int pe = ctl.producer_error.load(); pe != 0) {
    if (pe < 0) fail(who + ": cannot pin the producer thread to cpu " + std::to_string(cpu_producer));
    fail(who + ": the producer " +
         (prod->corruption().empty() ? std::string("found no room for 10 s (the consumer stopped)")
                                     : "found the ring corrupt: " + prod->corruption()));
  }
  if (!error.empty()) fail(who + ": " + error);
  if (bad_length) fail(who + ": a record came out with the wrong length");
  return static_cast<double>(records) / seconds;
}

}  // namespace bus::bench
