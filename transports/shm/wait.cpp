#include "shm/wait.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <string>

#include "bus/clock.hpp"

namespace bus::shm {

Expected<WaitStrategy> parse_wait_strategy(std::string_view text) {
  if (text == "spin") return WaitStrategy::spin();
  if (text == "yield") return WaitStrategy::yield();
  if (text == "block") return WaitStrategy::block();
  if (text == "adaptive") return WaitStrategy::adaptive();
  constexpr std::string_view prefix = "adaptive:";
  if (text.starts_with(prefix)) {
    std::string_view rest = text.substr(prefix.size());
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    const std::string_view unit(end, static_cast<size_t>(rest.data() + rest.size() - end));
    uint64_t mult = 0;
    if (unit == "ns") mult = 1;
    if (unit == "us") mult = 1'000;
    if (unit == "ms") mult = 1'000'000;
    if (ec == std::errc{} && mult != 0 && n <= 10'000'000'000 / mult) {
      return WaitStrategy::adaptive(n * mult);
    }
  }
  return fail(Errc::InvalidArgument,
              "wait strategy '" + std::string(text) +
                  "': expected spin, yield, block, adaptive or adaptive:<n>ns|us|ms (<= 10 s)");
}

std::string to_string(const WaitStrategy& ws) {
  switch (ws.kind) {
    case WaitKind::Spin: return "spin";
    case WaitKind::Yield: return "yield";
    case WaitKind::Block: return "block";
    case WaitKind::Adaptive: break;
  }
  if (ws.spin_ns % 1'000 == 0) return "adaptive:" + std::to_string(ws.spin_ns / 1'000) + "us";
  return "adaptive:" + std::to_string(ws.spin_ns) + "ns";
}

EventFd& EventFd::operator=(EventFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

EventFd::~EventFd() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<EventFd> EventFd::create() {
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return tl::unexpected(system_error("eventfd", errno));
  return EventFd(fd);
}

uint64_t Deadline::resolve() noexcept {
  if (relative_) {
    const uint64_t now = clock::mono_ns();
    value_ = value_ > kForever - now ? kForever : now + value_;
    relative_ = false;
  }
  return value_;
}

namespace wake {

void signal(int fd) noexcept {
  const uint64_t one = 1;
  // EAGAIN only when the counter is at its maximum: the sleeper is awake already.
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void drain(int fd) noexcept {
  uint64_t count = 0;
  while (::read(fd, &count, sizeof count) < 0 && errno == EINTR) {
  }
}

bool sleep_until(int fd, uint64_t deadline_ns) noexcept {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    timespec ts{};
    const timespec* tsp = nullptr;
    if (deadline_ns != kForever) {
      const uint64_t now = clock::mono_ns();
      if (now >= deadline_ns) return false;
      const uint64_t left = deadline_ns - now;
      ts.tv_sec = static_cast<time_t>(left / 1'000'000'000u);
      ts.tv_nsec = static_cast<long>(left % 1'000'000'000u);
      tsp = &ts;
    }
    const int r = ::ppoll(&p, 1, tsp, nullptr);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

}  // namespace wake
}  // namespace bus::shm
