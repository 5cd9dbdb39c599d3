#include "proc.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "bus/clock.hpp"

namespace bus::bench {

Child Child::fork(const std::function<int()>& body) {
  const pid_t parent = ::getpid();
  std::fflush(nullptr);  // the child must not flush the parent's buffered output again
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(125);  // the parent died before prctl
    int rc = 1;
    try {
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "busbench child %d: %s\n", ::getpid(), e.what());
    } catch (...) {
      std::fprintf(stderr, "busbench child %d: unknown exception\n", ::getpid());
    }
    std::fflush(stderr);
    ::_exit(rc);
  }
  Child c;
  c.pid_ = pid;
  return c;
}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    kill();
    pid_ = o.pid_;
    o.pid_ = -1;
  }
  return *this;
}

int Child::wait(int ms) {
  if (pid_ <= 0) return status_;
  const uint64_t end = clock::mono_ns() + static_cast<uint64_t>(ms) * 1'000'000u;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      status_ = r == pid_ ? (WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)) : -1;
      pid_ = -1;
      return status_;
    }
    if (clock::mono_ns() >= end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool Child::alive() {
  if (pid_ <= 0) return false;
  return wait(0) == -1 && pid_ > 0;
}

void Child::kill() noexcept {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  status_ = 128 + SIGKILL;
  pid_ = -1;
}

double cpu_seconds(pid_t pid) noexcept {
  clockid_t id{};
  if (::clock_getcpuclockid(pid, &id) != 0) return -1;
  timespec ts{};
  if (::clock_gettime(id, &ts) != 0) return -1;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double self_cpu_seconds() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

Memory memory_of(pid_t pid) {
  Memory m;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  uint64_t kb = 0;
  std::string line;
  while (std::getline(f, line)) {
    if (std::sscanf(line.c_str(), "VmRSS: %lu", &kb) == 1) m.rss = kb * 1024;
    if (std::sscanf(line.c_str(), "VmHWM: %lu", &kb) == 1) m.peak = kb * 1024;
  }
  return m;
}

bool pin_thread(int cpu) noexcept {
  if (cpu < 0) return true;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set) == 0;
}

bool pin_process(pid_t pid, int cpu) noexcept {
  if (cpu < 0) return true;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(pid, sizeof set, &set) == 0;
}

int online_cpus() noexcept {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set);
}

SharedBytes::SharedBytes(size_t bytes) : n_(bytes) {
  p_ = ::mmap(nullptr, bytes == 0 ? 1 : bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p_ == MAP_FAILED) {
    p_ = nullptr;
    throw std::runtime_error(std::string("mmap shared: ") + std::strerror(errno));
  }
}

SharedBytes::~SharedBytes() {
  if (p_ != nullptr) ::munmap(p_, n_ == 0 ? 1 : n_);
}

}  // namespace bus::bench
