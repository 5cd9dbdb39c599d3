// Two DPDK processes exercising bus::dpdk::Port end to end (used by test_port.cpp over memif and
// test_port_af_packet.cpp over a veth pair). EAL is not fork-safe, so the Catch2 process never
// initialises it: it forks two children ("A" and "B"), each runs run_side() with its own EAL,
// and reports back through a pipe; the parent asserts.
//
// Side A (10.0.0.1) sets its own MAC and knows B's; side B (10.0.0.2) sets its own MAC and
// learns A's by ARP. Traffic:
//   ep1  10.0.0.x:7001 <-> :7001   `count` numbered payloads each way, sizes 16..MTU-28
//   ep2  10.0.0.x:7002 <-> :7002   count/2 each way; each endpoint must get only its own
//   B ep3  :7003 -> A:7999          strays: no endpoint on A (A counts them "not ours")
//   B ep4  :7004 -> A:7001          strays: A's ep1 takes only its peer's source port
// Optionally a second port pair (`impair_port`) where B's port impairs what it sends (loss, dup,
// reorder, corruption) and A counts what arrives: the two accounts must agree exactly.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdarg>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <rte_eal.h>

#include "dpdk/eal.hpp"
#include "dpdk/port.hpp"

namespace dpdk_test {

using namespace std::chrono_literals;
using bus::Expected;
using bus::dpdk::Endpoint;
using bus::dpdk::EndpointOptions;
using bus::dpdk::MacAddress;
using bus::dpdk::Port;
using bus::dpdk::PortOptions;
using Clock = std::chrono::steady_clock;

constexpr uint32_t ip(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return a << 24 | b << 16 | c << 8 | d; }
constexpr uint32_t kIpA = ip(10, 0, 0, 1), kIpB = ip(10, 0, 0, 2);
constexpr uint32_t kImpIpA = ip(10, 0, 1, 1), kImpIpB = ip(10, 0, 1, 2);
constexpr const char* kMacA = "02:00:00:00:00:01";
constexpr const char* kMacB = "02:00:00:00:00:02";
constexpr const char* kImpMacA = "02:00:00:00:01:01";
constexpr const char* kImpMacB = "02:00:00:00:01:02";
constexpr uint32_t kStrays = 10;  // per stray endpoint

struct SideSpec {
  char role = 'A';
  std::vector<std::string> eal_args;
  std::string port_name;
  std::string impair_port_name;  // "" = no impair phase
  std::string fail_port_name;    // a port whose open must fail in rte_eth_dev_start ("" = none)
  std::string netns;             // enter this network namespace before EAL ("" = stay)
  uint32_t count = 2000;         // ep1 payloads each way (ep2: count / 2)
  uint32_t pace_us = 100;        // between bursts of 16 per endpoint
  uint32_t impair_count = 2000;
  uint16_t mtu = 1500;
  PortOptions::Idle idle = PortOptions::Idle::Adaptive;
};

// Everything a child tells the parent (plain data through a pipe).
struct Report {
  int32_t ok = 0;
  char error[400] = {};
  char describe[300] = {};
  char runtime_dir[256] = {};  // EAL's (/var/run/dpdk/<file-prefix>): the parent removes it
  int32_t affinity_restored = 0;
  int32_t second_init_refused = 0;
  int32_t duplicate_attach_refused = 0;
  int32_t reattach_ok = 0;
  int32_t failed_open_retryable = 0;
  int32_t poll_thread_cpus = -1, main_thread_cpus = -1;  // CPUs each may run on (cpu = -1: all)
  int32_t peer_mac_matches = 0;  // B: learned A's MAC exactly
  uint64_t max_payload = 0;
  uint64_t sent[2] = {};          // queued by tx(), ep1 and ep2
  uint64_t got[2] = {};           // distinct good payloads received, ep1 and ep2
  uint64_t bad_content = 0, duplicates = 0, wrong_endpoint = 0;
  uint64_t strays_sent = 0;
  uint64_t wakeups = 0;           // consumer sleeps on wait_fd that ended with data
  bus::dpdk::PortCounters port{};
  bus::dpdk::EndpointCounters ep[2]{};
  // Impair phase.
  int32_t impair_ran = 0;
  uint64_t imp_sent = 0;          // B: queued
  bus::dpdk::PortCounters imp_port{};  // B: lost/duplicated/reordered/corrupted; A: rx
  uint64_t imp_received = 0, imp_good = 0, imp_corrupt = 0, imp_dups = 0, imp_out_of_order = 0;
  uint64_t imp_distinct = 0;
};

// ---------------------------------------------------------------- payloads

inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline size_t payload_size(uint32_t tag, uint32_t seq, size_t max) {
  static constexpr size_t kSizes[] = {16, 17, 64, 100, 255, 512, 1000, 1400, 100000};
  return std::min(kSizes[(seq * 7 + tag) % std::size(kSizes)], max);
}

// tag (4 bytes), seq (4 bytes), then bytes derived from a hash of both: a flipped bit anywhere
// (also in tag or seq) makes the check fail.
inline void fill_payload(std::byte* p, size_t len, uint32_t tag, uint32_t seq) {
  std::memcpy(p, &tag, 4);
  std::memcpy(p + 4, &seq, 4);
  const uint64_t h = mix(uint64_t{tag} << 32 | seq);
  for (size_t i = 8; i < len; ++i) p[i] = std::byte(static_cast<uint8_t>(mix(h + i / 8) >> ((i % 8) * 8)));
}

// true: intact; tag and seq are read either way (len >= 8).
inline bool check_payload(const std::byte* p, size_t len, size_t max, uint32_t* tag, uint32_t* seq) {
  if (len < 8) return false;
  std::memcpy(tag, p, 4);
  std::memcpy(seq, p + 4, 4);
  if (len != payload_size(*tag, *seq, max)) return false;
  const uint64_t h = mix(uint64_t{*tag} << 32 | *seq);
  for (size_t i = 8; i < len; ++i) {
    if (p[i] != std::byte(static_cast<uint8_t>(mix(h + i / 8) >> ((i % 8) * 8)))) return false;
  }
  return true;
}

// ---------------------------------------------------------------- child side

inline void say(char role, const char* fmt, ...) {
  char buf[600];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "[%c] %s\n", role, buf);
}

inline bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly n bytes within `timeout`; false on timeout or EOF.
inline bool read_all(int fd, void* p, size_t n, std::chrono::milliseconds timeout) {
  char* c = static_cast<char*>(p);
  const auto end = Clock::now() + timeout;
  while (n > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (left <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    const ssize_t got = ::read(fd, c, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    c += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit) {
  const auto end = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

struct Receiver {
  size_t max;
  std::vector<uint8_t> seen[2];
  Report* r;

  void take(Endpoint* ep, int which, uint32_t want_tag) {
    bus::dgram::RxPacket pk[64];
    uint64_t handles[64];
    size_t n;
    while ((n = ep->rx_burst(pk, 64)) > 0) {
      for (size_t i = 0; i < n; ++i) {
        handles[i] = pk[i].handle;
        uint32_t tag = 0, seq = 0;
        if (!check_payload(pk[i].data, pk[i].len, max, &tag, &seq)) {
          ++r->bad_content;
        } else if (tag != want_tag) {
          ++r->wrong_endpoint;
        } else if (seq >= seen[which].size()) {
          ++r->bad_content;
        } else if (seen[which][seq]++ != 0) {
          ++r->duplicates;
        } else {
          ++r->got[which];
        }
      }
      ep->release(handles, n);
    }
  }
};

// Sleeps on the endpoints' eventfds (arm / poll / disarm) for at most `ms`.
inline void wait_rx(Endpoint* const* eps, size_t n, int ms, Report& r) {
  bool armed_all = true;
  size_t armed = 0;
  for (; armed < n; ++armed) {
    if (!eps[armed]->arm()) {
      armed_all = false;
      ++armed;
      break;
    }
  }
  if (armed_all) {
    pollfd pfd[4];
    for (size_t i = 0; i < n; ++i) pfd[i] = pollfd{eps[i]->wait_fd(), POLLIN, 0};
    if (::poll(pfd, static_cast<nfds_t>(n), ms) > 0) ++r.wakeups;
  }
  for (size_t i = 0; i < armed; ++i) eps[i]->disarm();
}

// How many CPUs the thread named `comm` may run on (-1: no such thread).
inline int thread_cpus(const std::string& comm) {
  const std::string dir = "/proc/self/task/";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  int cpus = -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char name[64] = {};
    const int fd = ::open((dir + e->d_name + "/comm").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    const ssize_t n = ::read(fd, name, sizeof name - 1);
    ::close(fd);
    if (n <= 0 || std::string(name, static_cast<size_t>(n)) != comm + "\n") continue;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(std::atoi(e->d_name), sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
  }
  ::closedir(d);
  return cpus;
}

inline Expected<std::unique_ptr<Port>> open_port(const PortOptions& po) {
  // A memif client cannot start until its server listens: try again for a while.
  const auto end = Clock::now() + 15s;
  for (;;) {
    auto p = Port::open(po);
    if (p || Clock::now() > end) return p;
    std::this_thread::sleep_for(50ms);
  }
}

inline PortOptions impair_port_options(const SideSpec& s) {
  PortOptions po;
  po.name = s.impair_port_name;
  po.mac = s.role == 'A' ? kImpMacA : kImpMacB;
  if (s.role == 'B') po.impair = bus::dpdk::Impair{50, 50, 50, 50, 7};
  return po;
}

inline Expected<Endpoint*> attach_impair(const SideSpec& s, Port& p) {
  const bool a = s.role == 'A';
  EndpointOptions eo;
  eo.local_ip = a ? kImpIpA : kImpIpB;
  eo.peer_ip = a ? kImpIpB : kImpIpA;
  eo.local_port = 8001;
  eo.peer_port = 8001;
  eo.peer_mac = *bus::dpdk::parse_mac(a ? kImpMacB : kImpMacA);  // static: no ARP here
  return p.attach(eo);
}

// B sends impair_count payloads through its impairing port; A counts what arrives.
inline void impair_phase(const SideSpec& s, Port& p, Endpoint* e, Report& r) {
  const bool a = s.role == 'A';
  const size_t max = e->max_payload();
  if (a) {
    std::vector<uint8_t> seen(s.impair_count);
    int64_t highest = -1;
    // B starts sending once it has closed its main port: wait up to 10 s for the first
    // datagram, then until 2 s pass without one.
    auto last = Clock::now() + 8s;
    const auto end = Clock::now() + 25s;
    while (Clock::now() < end && Clock::now() - last < 2s) {
      bus::dgram::RxPacket pk[64];
      uint64_t handles[64];
      const size_t n = e->rx_burst(pk, 64);
      if (n == 0) {
        Endpoint* eps[1] = {e};
        wait_rx(eps, 1, 5, r);
        continue;
      }
      last = Clock::now();
      for (size_t i = 0; i < n; ++i) {
        handles[i] = pk[i].handle;
        ++r.imp_received;
        uint32_t tag = 0, seq = 0;
        if (!check_payload(pk[i].data, pk[i].len, max, &tag, &seq) || tag != 3 || seq >= seen.size()) {
          ++r.imp_corrupt;
          continue;
        }
        ++r.imp_good;
        if (seen[seq]++ != 0) {
          ++r.imp_dups;
        } else {
          ++r.imp_distinct;
        }
        if (static_cast<int64_t>(seq) < highest) ++r.imp_out_of_order;
        highest = std::max<int64_t>(highest, seq);
      }
      e->release(handles, n);
    }
  } else {
    for (uint32_t seq = 0; seq < s.impair_count;) {
      std::vector<std::vector<std::byte>> store;
      std::vector<std::span<const std::byte>> spans;
      for (uint32_t k = 0; k < 16 && seq < s.impair_count; ++k, ++seq) {
        const size_t len = payload_size(3, seq, max);
        store.emplace_back(len);
        fill_payload(store.back().data(), len, 3, seq);
      }
      for (auto& v : store) spans.emplace_back(v.data(), v.size());
      r.imp_sent += e->tx(spans);
      std::this_thread::sleep_for(std::chrono::microseconds(s.pace_us));
    }
    std::this_thread::sleep_for(1500ms);  // the held (reordered) packet leaves within 1 ms
  }
  r.imp_port = p.counters();
  r.impair_ran = 1;
}

// The child's whole life; returns its exit status (0: it reported; the parent judges).
inline int run_side(const SideSpec& s, int report_fd, int control_fd) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The child inherited Catch2's fatal-signal handlers: a crash here must be a plain crash (the
  // parent reports the exit status), not a second Catch2 report.
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE, SIGTERM, SIGINT}) ::signal(sig, SIG_DFL);
  static Report r;  // large: keep it off the stack
  r = Report{};
  r.ok = 1;
  const char role = s.role;
  const bool a = role == 'A';
  auto report_done = [&](int code) {
    const char t = 'D';
    write_all(report_fd, &t, 1);
    write_all(report_fd, &r, sizeof r);
    return code;
  };
  auto failed = [&](const std::string& why) {
    std::snprintf(r.error, sizeof r.error, "%s", why.c_str());
    r.ok = 0;
    say(role, "FAILED: %s", why.c_str());
    return report_done(1);
  };
  // Closing a memif port while the peer closes its own can crash DPDK 22.11's memif: its
  // interrupt thread handles the peer's disconnect while rte_eth_dev_close frees the device. So
  // the ports close one side at a time (the parent says when), both having stopped polling; B
  // waits until its interrupt thread has seen A's disconnect (link down) before closing.
  const bool memif = s.port_name.rfind("net_memif", 0) == 0;
  auto close_port = [&](std::unique_ptr<Port>& port) {
    char turn = 0;
    if (!read_all(control_fd, &turn, 1, 60s) || turn != 'C') return false;
    if (!a && memif) wait_until([&] { return !port->link_up(); }, 3s);
    port.reset();
    const char closed = 'c';
    write_all(report_fd, &closed, 1);
    return true;
  };

  if (!s.netns.empty()) {
    const std::string path = "/var/run/netns/" + s.netns;
    const int nfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (nfd < 0 || ::setns(nfd, CLONE_NEWNET) != 0) return failed("entering netns " + s.netns + ": " + std::strerror(errno));
    ::close(nfd);
  }

  cpu_set_t before, after;
  CPU_ZERO(&before);
  CPU_ZERO(&after);
  ::sched_getaffinity(0, sizeof before, &before);
  if (auto e = bus::dpdk::init_eal(s.eal_args); !e) return failed(e.error().message());
  std::snprintf(r.runtime_dir, sizeof r.runtime_dir, "%s", ::rte_eal_get_runtime_dir());
  {
    // Tell the parent now: it removes the directory even if this child dies later.
    const char t = 'E';
    write_all(report_fd, &t, 1);
    write_all(report_fd, r.runtime_dir, sizeof r.runtime_dir);
  }
  ::sched_getaffinity(0, sizeof after, &after);
  r.affinity_restored = CPU_EQUAL(&before, &after) ? 1 : 0;
  if (auto again = bus::dpdk::init_eal(s.eal_args); !again) {
    r.second_init_refused = again.error().detail().find("already") != std::string::npos ? 1 : 0;
  }

  if (!s.fail_port_name.empty()) {
    // A memif client whose server is absent: open fails in rte_eth_dev_start, and fails the same
    // way again (the device was not closed and removed by the first failure: busd may retry).
    PortOptions po;
    po.name = s.fail_port_name;
    auto first = Port::open(po);
    auto second = Port::open(po);
    r.failed_open_retryable = !first && !second && first.error().detail().find("rte_eth_dev_start") != std::string::npos &&
                                      second.error().detail().find("rte_eth_dev_start") != std::string::npos
                                  ? 1
                                  : 0;
    if (!r.failed_open_retryable) {
      say(role, "open without a memif server: %s / %s", first ? "opened?!" : first.error().message().c_str(),
          second ? "opened?!" : second.error().message().c_str());
    }
  }

  // A (the memif server) opens its ports first; B only when the parent says A's are up.
  if (!a) {
    char start = 0;
    if (!read_all(control_fd, &start, 1, 60s) || start != 'S') return failed("no start from the parent");
  }
  std::unique_ptr<Port> imp;
  Endpoint* imp_ep = nullptr;
  std::unique_ptr<Port> main_port;
  {
    PortOptions po;
    po.name = s.port_name;
    po.mac = a ? kMacA : kMacB;
    po.mtu = s.mtu;
    po.idle = s.idle;
    auto opened = open_port(po);
    if (!opened) return failed(opened.error().message());
    main_port = std::move(*opened);
    Port& p = *main_port;
    if (!s.impair_port_name.empty()) {
      auto o2 = open_port(impair_port_options(s));
      if (!o2) return failed("impair port: " + o2.error().message());
      imp = std::move(*o2);
      say(role, "%s", imp->describe().c_str());
      auto e = attach_impair(s, *imp);
      if (!e) return failed("impair attach: " + e.error().message());
      imp_ep = *e;
    }
    if (a) {
      const char opened_msg = 'P';
      write_all(report_fd, &opened_msg, 1);
    }
    if (!wait_until([&] { return p.link_up(); }, 10s)) return failed("link not up after 10 s: " + p.describe());
    std::snprintf(r.describe, sizeof r.describe, "%s", p.describe().c_str());
    say(role, "%s", p.describe().c_str());
    // Neither EAL (for the main thread) nor rte_thread_register (poll thread) may pin them.
    r.poll_thread_cpus = thread_cpus("dpdk-poll-" + std::to_string(p.port_id()));
    r.main_thread_cpus = CPU_COUNT(&after);

    EndpointOptions eo;
    eo.local_ip = a ? kIpA : kIpB;
    eo.peer_ip = a ? kIpB : kIpA;
    if (a) eo.peer_mac = *bus::dpdk::parse_mac(kMacB);
    Endpoint* ep[4] = {};
    for (int i = 0; i < 2; ++i) {
      eo.local_port = eo.peer_port = static_cast<uint16_t>(7001 + i);
      auto e = p.attach(eo);
      if (!e) return failed("attach: " + e.error().message());
      ep[i] = *e;
    }
    if (a) {
      // A duplicate (local IP, port) is refused; detach + attach works while the port runs.
      eo.local_port = eo.peer_port = 7001;
      auto dup = p.attach(eo);
      r.duplicate_attach_refused = !dup && dup.error().code() == bus::Errc::AlreadyExists ? 1 : 0;
      p.detach(ep[1]);
      eo.local_port = eo.peer_port = 7002;
      auto again = p.attach(eo);
      r.reattach_ok = again ? 1 : 0;
      if (!again) return failed("re-attach: " + again.error().message());
      ep[1] = *again;
    } else {
      eo.local_port = 7003;
      eo.peer_port = 7999;
      auto e3 = p.attach(eo);
      eo.local_port = 7004;
      eo.peer_port = 7001;
      auto e4 = p.attach(eo);
      if (!e3 || !e4) return failed("attach strays");
      ep[2] = *e3;
      ep[3] = *e4;
    }
    const int n_eps = a ? 2 : 4;
    if (!wait_until([&] {
          for (int i = 0; i < n_eps; ++i) {
            if (!ep[i]->peer_mac_known()) return false;
          }
          return true;
        }, 5s)) {
      return failed("peer MAC not learned within 5 s (ARP)");
    }
    if (imp && !wait_until([&] { return imp->link_up(); }, 10s)) return failed("impair port: link not up after 10 s");
    const auto learned = ep[0]->peer_mac();
    r.peer_mac_matches = learned && *learned == *bus::dpdk::parse_mac(a ? kMacB : kMacA) ? 1 : 0;
    r.max_payload = ep[0]->max_payload();

    // Ready; wait for the parent's go (both sides attached and resolved).
    const char ready = 'R';
    write_all(report_fd, &ready, 1);
    char go = 0;
    if (!read_all(control_fd, &go, 1, 60s) || go != 'G') return failed("no go from the parent");

    const size_t max = ep[0]->max_payload();
    if (!a) {
      // Strays first: memif and the veth keep order, so A has counted them by the time the
      // main traffic is in.
      std::vector<std::byte> buf(64);
      std::vector<std::span<const std::byte>> spans(kStrays, std::span<const std::byte>(buf.data(), buf.size()));
      r.strays_sent = ep[2]->tx(spans) + ep[3]->tx(spans);
    }

    Receiver rx{max, {std::vector<uint8_t>(s.count), std::vector<uint8_t>(s.count / 2)}, &r};
    const uint32_t total[2] = {s.count, s.count / 2};
    uint32_t next[2] = {0, 0};
    auto last_rx = Clock::now();
    const auto end = Clock::now() + 20s;
    std::vector<std::byte> bufs[16];
    for (auto& b : bufs) b.resize(max);
    while (Clock::now() < end) {
      const bool sending = next[0] < total[0] || next[1] < total[1];
      for (int k = 0; k < 2; ++k) {
        if (next[k] >= total[k]) continue;
        std::span<const std::byte> spans[16];
        size_t n = 0;
        for (; n < 16 && next[k] + n < total[k]; ++n) {
          const uint32_t seq = next[k] + static_cast<uint32_t>(n);
          const size_t len = payload_size(static_cast<uint32_t>(k + 1), seq, max);
          fill_payload(bufs[n].data(), len, static_cast<uint32_t>(k + 1), seq);
          spans[n] = std::span<const std::byte>(bufs[n].data(), len);
        }
        r.sent[k] += ep[k]->tx(std::span<const std::span<const std::byte>>(spans, n));
        next[k] += static_cast<uint32_t>(n);
      }
      const uint64_t before_rx = r.got[0] + r.got[1] + r.bad_content + r.duplicates + r.wrong_endpoint;
      rx.take(ep[0], 0, 1);
      rx.take(ep[1], 1, 2);
      if (r.got[0] + r.got[1] + r.bad_content + r.duplicates + r.wrong_endpoint != before_rx) last_rx = Clock::now();
      if (r.got[0] == total[0] && r.got[1] == total[1] && !sending) break;
      if (sending) {
        std::this_thread::sleep_for(std::chrono::microseconds(s.pace_us));
      } else {
        if (Clock::now() - last_rx > 1500ms) break;  // the peer is done; some were lost
        wait_rx(ep, 2, 10, r);
      }
    }
    if (a) {
      // B's strays arrived before its ep1 traffic; give the counter a moment anyway.
      wait_until([&] { return p.counters().rx_dropped_not_ours >= 2 * kStrays; }, 1s);
    }
    // Stay until the peer has its datagrams too: the parent says when.
    r.port = p.counters();
    r.ep[0] = ep[0]->counters();
    r.ep[1] = ep[1]->counters();
    say(role, "main phase: sent %llu/%llu, got %llu/%llu, bad %llu, dup %llu, wrong endpoint %llu, wakeups %llu",
        (unsigned long long)r.sent[0], (unsigned long long)r.sent[1], (unsigned long long)r.got[0],
        (unsigned long long)r.got[1], (unsigned long long)r.bad_content, (unsigned long long)r.duplicates,
        (unsigned long long)r.wrong_endpoint, (unsigned long long)r.wakeups);
    // Detach (while the poll thread runs), stop polling, and close only when the peer has
    // stopped polling too: a memif peer that closes unmaps the rings under a running poll.
    for (int i = 0; i < n_eps; ++i) p.detach(ep[i]);
    p.stop();
    const char half = 'H';
    write_all(report_fd, &half, 1);
  }
  if (!close_port(main_port)) return failed("no turn to close the port from the parent");

  if (imp) {
    impair_phase(s, *imp, imp_ep, r);
    imp->detach(imp_ep);
    imp->stop();
  }
  const int code = report_done(0);
  if (imp) close_port(imp);
  char bye = 0;
  read_all(control_fd, &bye, 1, 60s);
  bus::dpdk::cleanup_eal();
  return code;
}

// ---------------------------------------------------------------- parent side

struct Child {
  pid_t pid = -1;
  int report_fd = -1;   // parent reads
  int control_fd = -1;  // parent writes
};

inline Child spawn(const SideSpec& s) {
  int up[2], down[2];
  if (::pipe(up) != 0 || ::pipe(down) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(up[0]);
    ::close(down[1]);
    const int code = run_side(s, up[1], down[0]);
    std::fflush(stderr);
    ::_exit(code);
  }
  ::close(up[1]);
  ::close(down[0]);
  return Child{pid, up[0], down[1]};
}

// Waits for the child to exit (kills it after `limit`); its exit status or -1.
inline int reap(Child& c, std::chrono::milliseconds limit) {
  if (c.pid <= 0) return -1;
  const auto end = Clock::now() + limit;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(c.pid, &status, WNOHANG);
    if (w == c.pid) break;
    if (Clock::now() > end) {
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, &status, 0);
      c.pid = -1;
      return -1;
    }
    std::this_thread::sleep_for(5ms);
  }
  c.pid = -1;
  if (c.report_fd >= 0) ::close(c.report_fd);
  if (c.control_fd >= 0) ::close(c.control_fd);
  c.report_fd = c.control_fd = -1;
  if (WIFSIGNALED(status)) return 1000 + WTERMSIG(status);  // 1011: SIGSEGV
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// One message from a child: 'R' ready, 'H' main phase over, or 'D' + Report (done or failed).
inline char next_message(Child& c, Report& r, std::chrono::milliseconds limit) {
  char t = 0;
  if (!read_all(c.report_fd, &t, 1, limit)) return 0;
  if (t == 'D' && !read_all(c.report_fd, &r, sizeof r, 5s)) return 0;
  return t;
}

struct Outcome {
  Report a, b;
  std::string problem;
};

// Runs both sides through the protocol (A = the memif server):
//   A 'P' (ports open) -> B 'S' -> both 'R' (attached, MACs known) -> both 'G' -> both 'H' (main
//   phase over, polling stopped) -> A 'C'/'c', then B 'C'/'c' (close the main port in turn) ->
//   both 'D' + Report -> [impair port: A 'C'/'c', then B] -> both 'X' (exit).
// A child that fails sends 'D' early and exits; the parent then leaves it out.
inline Outcome run_pair(const SideSpec& sa, const SideSpec& sb) {
  ::signal(SIGPIPE, SIG_IGN);  // a child that died closes its pipe: an error, not our death
  Outcome out;
  struct Side {
    Child c;
    Report* r;
    char name;
    bool dead = false;
  };
  Side A{spawn(sa), &out.a, 'A'};
  Side B{spawn(sb), &out.b, 'B'};
  std::vector<std::string> runtime_dirs;
  auto expect = [&](Side& x, char want) {
    if (x.dead) return;
    char t = next_message(x.c, *x.r, 60s);
    if (t == 'E') {  // EAL is up: where its runtime files are (removed at the end)
      char dir[sizeof(Report::runtime_dir)] = {};
      if (read_all(x.c.report_fd, dir, sizeof dir, 5s) && dir[0] == '/') runtime_dirs.emplace_back(dir);
      t = next_message(x.c, *x.r, 60s);
    }
    if (t == want) return;
    x.dead = true;
    out.problem += std::string("side ") + x.name + (t == 'D' ? " stopped early; " : " broke the protocol (waiting for '" + std::string(1, want) + "'); ");
  };
  auto tell = [&](Side& x, char m) {
    if (!x.dead) write_all(x.c.control_fd, &m, 1);
  };
  expect(A, 'P');
  tell(B, 'S');
  expect(A, 'R');
  expect(B, 'R');
  tell(A, 'G');
  tell(B, 'G');
  expect(A, 'H');
  expect(B, 'H');
  tell(A, 'C');
  expect(A, 'c');
  tell(B, 'C');
  expect(B, 'c');
  expect(A, 'D');
  expect(B, 'D');
  if (!sa.impair_port_name.empty()) {
    tell(A, 'C');
    expect(A, 'c');
    tell(B, 'C');
    expect(B, 'c');
  }
  tell(A, 'X');
  tell(B, 'X');
  const int xa = reap(A.c, 20s), xb = reap(B.c, 20s);
  // EAL leaves its runtime directory behind (a few MB each, in /var/run: memory).
  for (const auto& d : runtime_dirs) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
  if (xa != 0) out.problem += "side A exit status " + std::to_string(xa) + " (1000 + n: signal n); ";
  if (xb != 0) out.problem += "side B exit status " + std::to_string(xb) + " (1000 + n: signal n); ";
  return out;
}

inline std::string summary(const char* name, const Report& r) {
  char b[1200];
  std::snprintf(b, sizeof b,
                "%s: ok %d error '%s'\n  %s\n  sent %llu/%llu got %llu/%llu bad %llu dup %llu wrong-endpoint %llu "
                "strays sent %llu wakeups %llu\n  port rx %llu bad %llu frag %llu not-ours %llu other-mac %llu "
                "arp req rx %llu rep rx %llu req tx %llu rep tx %llu tx %llu dropped %llu polls %llu sleeps %llu",
                name, r.ok, r.error, r.describe, (unsigned long long)r.sent[0], (unsigned long long)r.sent[1],
                (unsigned long long)r.got[0], (unsigned long long)r.got[1], (unsigned long long)r.bad_content,
                (unsigned long long)r.duplicates, (unsigned long long)r.wrong_endpoint, (unsigned long long)r.strays_sent,
                (unsigned long long)r.wakeups, (unsigned long long)r.port.rx_packets,
                (unsigned long long)r.port.rx_dropped_bad, (unsigned long long)r.port.rx_dropped_fragment,
                (unsigned long long)r.port.rx_dropped_not_ours, (unsigned long long)r.port.rx_dropped_other_mac,
                (unsigned long long)r.port.arp_requests_rx, (unsigned long long)r.port.arp_replies_rx,
                (unsigned long long)r.port.arp_requests_tx, (unsigned long long)r.port.arp_replies_tx,
                (unsigned long long)r.port.tx_packets, (unsigned long long)r.port.tx_dropped,
                (unsigned long long)r.port.polls, (unsigned long long)r.port.sleeps);
  std::string out = b;
  if (r.impair_ran) {
    std::snprintf(b, sizeof b,
                  "\n  impair: sent %llu lost %llu dup %llu reordered %llu corrupted %llu | received %llu good %llu "
                  "corrupt %llu dups %llu out-of-order %llu distinct %llu",
                  (unsigned long long)r.imp_sent, (unsigned long long)r.imp_port.impair_lost,
                  (unsigned long long)r.imp_port.impair_duplicated, (unsigned long long)r.imp_port.impair_reordered,
                  (unsigned long long)r.imp_port.impair_corrupted, (unsigned long long)r.imp_received,
                  (unsigned long long)r.imp_good, (unsigned long long)r.imp_corrupt, (unsigned long long)r.imp_dups,
                  (unsigned long long)r.imp_out_of_order, (unsigned long long)r.imp_distinct);
    out += b;
  }
  return out;
}

// The assertions both tests share. min_percent: of what the peer queued, how much must arrive.
inline void check_main(const Outcome& out, const SideSpec& sa, uint32_t min_percent) {
  const Report& a = out.a;
  const Report& b = out.b;
  const std::string text = summary("A", a) + "\n" + summary("B", b);
  INFO(text);
  std::fprintf(stderr, "%s\n", text.c_str());
  REQUIRE(out.problem.empty());
  REQUIRE(a.ok == 1);
  REQUIRE(b.ok == 1);

  // EAL: the caller's affinity is back; a second init is refused.
  CHECK(a.affinity_restored == 1);
  CHECK(b.affinity_restored == 1);
  CHECK(a.second_init_refused == 1);
  CHECK(b.second_init_refused == 1);
  CHECK(a.poll_thread_cpus == a.main_thread_cpus);  // floats (PortOptions::cpu = -1)
  CHECK(b.poll_thread_cpus == b.main_thread_cpus);
  // attach/detach.
  CHECK(a.duplicate_attach_refused == 1);
  CHECK(a.reattach_ok == 1);
  CHECK(a.max_payload == sa.mtu - 28u);
  // (1) ARP: B learned A's MAC (A's is configured, it never asks).
  CHECK(b.peer_mac_matches == 1);
  CHECK(a.peer_mac_matches == 1);
  CHECK(b.port.arp_requests_tx >= 1);
  CHECK(b.port.arp_replies_rx >= 1);
  CHECK(a.port.arp_requests_rx >= 1);
  CHECK(a.port.arp_replies_tx >= 1);
  CHECK(a.port.arp_requests_tx == 0);
  // (2) + (3) every datagram that arrived is intact, once, on its own endpoint.
  for (const Report* r : {&a, &b}) {
    CHECK(r->bad_content == 0);
    CHECK(r->duplicates == 0);
    CHECK(r->wrong_endpoint == 0);
    CHECK(r->ep[0].rx_dropped_ring_full == 0);
    CHECK(r->ep[1].rx_dropped_ring_full == 0);
    CHECK(r->ep[0].tx_no_mac == 0);
    CHECK(r->port.rx_dropped_bad == 0);
    CHECK(r->port.rx_dropped_fragment == 0);
  }
  const uint64_t total[2] = {sa.count, sa.count / 2};
  for (int k = 0; k < 2; ++k) {
    CHECK(a.sent[k] == total[k]);
    CHECK(b.sent[k] == total[k]);
    CHECK(a.got[k] <= b.sent[k]);
    CHECK(b.got[k] <= a.sent[k]);
    CHECK(a.got[k] * 100 >= b.sent[k] * min_percent);
    CHECK(b.got[k] * 100 >= a.sent[k] * min_percent);
  }
  // (4) strays: to a port without an endpoint, and from the wrong source port.
  CHECK(b.strays_sent == 2 * kStrays);
  CHECK(a.port.rx_dropped_not_ours >= 2 * kStrays);
}

inline void check_impair(const Outcome& out) {
  const Report& a = out.a;
  const Report& b = out.b;
  REQUIRE(a.impair_ran == 1);
  REQUIRE(b.impair_ran == 1);
  const auto& c = b.imp_port;
  CHECK(c.impair_lost > 0);
  CHECK(c.impair_duplicated > 0);
  CHECK(c.impair_reordered > 0);
  CHECK(c.impair_corrupted > 0);
  CHECK(a.imp_port.impair_lost == 0);  // A's port is not impaired
  // memif loses nothing else: the two accounts agree exactly.
  CHECK(a.imp_received == b.imp_sent - c.impair_lost + c.impair_duplicated);
  CHECK(a.imp_corrupt == c.impair_corrupted);
  CHECK(a.imp_good == a.imp_received - a.imp_corrupt);
  CHECK(a.imp_distinct + a.imp_dups == a.imp_good);
  CHECK(a.imp_out_of_order >= 1);
}

}  // namespace dpdk_test
