// busbench's processes: forked children that die with busbench, their CPU time and memory,
// and shared memory to talk to them.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <vector>

namespace bus::bench {

/// A forked child running `body`; its return value is the exit code. The child dies with
/// busbench (PR_SET_PDEATHSIG), never returns into the parent's code and never runs atexit
/// handlers. Destroying the handle kills (SIGKILL) and reaps a child still running. Fork only
/// while the process has one thread.
class Child {
 public:
  Child() = default;
  static Child fork(const std::function<int()>& body);
  Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { kill(); }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] bool running() const noexcept { return pid_ > 0; }
  /// Waits up to `ms`; returns the exit code (128+signal if killed), -1 on timeout (still running).
  int wait(int ms);
  /// True while the child has not exited (reaps it if it has).
  bool alive();
  void kill() noexcept;

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

/// CPU seconds (user + system, every thread) a process has used so far; -1 if unreadable.
double cpu_seconds(pid_t pid) noexcept;
/// This process's CPU seconds.
double self_cpu_seconds() noexcept;
/// Resident set size and its peak (VmRSS, VmHWM) in bytes; 0 if unreadable.
struct Memory {
  uint64_t rss = 0, peak = 0;
};
Memory memory_of(pid_t pid);

/// Pins the calling thread (cpu >= 0) or the process `pid` to one CPU. False if refused.
bool pin_thread(int cpu) noexcept;
bool pin_process(pid_t pid, int cpu) noexcept;
/// CPUs this process may run on.
int online_cpus() noexcept;

/// An anonymous shared mapping (survives fork, shared with children) holding `n` T's,
/// value-initialised. T must be trivially destructible or tolerate never being destroyed.
class SharedBytes {
 public:
  explicit SharedBytes(size_t bytes);
  ~SharedBytes();
  SharedBytes(const SharedBytes&) = delete;
  SharedBytes& operator=(const SharedBytes&) = delete;
  [[nodiscard]] void* data() const noexcept { return p_; }
  [[nodiscard]] size_t size() const noexcept { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

template <class T>
class Shared {
 public:
  explicit Shared(size_t n = 1) : mem_(sizeof(T) * n), n_(n) {
    for (size_t i = 0; i < n; ++i) new (static_cast<T*>(mem_.data()) + i) T();
  }
  T* operator->() const noexcept { return get(); }
  T& operator[](size_t i) const noexcept { return get()[i]; }
  [[nodiscard]] T* get() const noexcept { return static_cast<T*>(mem_.data()); }
  [[nodiscard]] size_t size() const noexcept { return n_; }

 private:
  SharedBytes mem_;
  size_t n_;
};

/// Copies `s` into a fixed char buffer, 0-terminated (for error text in shared memory).
template <size_t N>
void put_text(char (&buf)[N], const std::string& s) noexcept {
  const size_t n = s.size() < N - 1 ? s.size() : N - 1;
  for (size_t i = 0; i < n; ++i) buf[i] = s[i];
  buf[n] = '\0';
}

}  // namespace bus::bench
