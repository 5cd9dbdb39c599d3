// busd: start-up, the poll loop, signals, timers and shutdown.
#include "daemon.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "bus/address.hpp"
#include "bus/clock.hpp"
#include "log.hpp"
#include "notify.hpp"
#include "metrics.hpp"

namespace bus::daemon {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kTickNs = 500 * kMs;  // timer: heartbeats, counters heartbeat

void raise_nofile() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

// The socket path: the config's, else the first of the lookup order clients use.
std::string choose_socket(const config::Config& cfg) {
  if (!cfg.socket.empty()) return cfg.socket;
  const auto c = default_socket_candidates();
  return c.empty() ? std::string("/run/busd/busd.sock") : c.front();
}

Expected<gid_t> group_id(const std::string& group) {
  if (group.empty()) return ::getegid();
  char* end = nullptr;
  const unsigned long n = std::strtoul(group.c_str(), &end, 10);
  if (end != group.c_str() && *end == '\0') return static_cast<gid_t>(n);
  struct group* g = ::getgrnam(group.c_str());
  if (g == nullptr) return fail(Errc::NotFound, "socket_group '" + group + "': no such group");
  return g->gr_gid;
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof addr.sun_path));
  return addr;
}

// Before anything else is created: the socket's directory exists, no live busd owns the path,
// and a socket file left by a killed busd (nobody accepts on it) is removed.
Expected<void> prepare_socket_path(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) return fail(Errc::InvalidArgument, "socket path too long: " + path);
  sockaddr_un addr = unix_address(path);
  const auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return fail(Errc::System, "creating " + dir.string() + ": " + ec.message());
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail(Errc::AlreadyExists, path + " exists and is not a socket");
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(probe);
    if (live) return fail(Errc::AlreadyExists, "another busd is running at " + path);
    ::unlink(path.c_str());
    log::warn("stale_socket_removed", {{"path", path}});
  }
  return {};
}

// Binds and listens, with the configured mode and group.
Expected<int> listen_at(const std::string& path, uint32_t mode, const std::string& group) {
  sockaddr_un addr = unix_address(path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return tl::unexpected(system_error("socket", errno));
  // bind() creates the file with the socket's mode less the umask: set the configured mode
  // first, so that no one outside it can connect before the chmod below.
  (void)::fchmod(fd, mode);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    const int e = errno;
    ::close(fd);
    return tl::unexpected(system_error("binding " + path, e));
  }
  auto gid = group_id(group);
  if (!gid) {
    ::close(fd);
    ::unlink(path.c_str());
    return tl::unexpected(gid.error());
  }
  if (::chmod(path.c_str(), mode) != 0 || (*gid != ::getegid() && ::chown(path.c_str(), -1, *gid) != 0)) {
    const int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return tl::unexpected(system_error("setting mode/group of " + path, e));
  }
  return fd;
}

// The counters page follows the socket: whoever may connect (write permission on the socket,
// for the group or for others) may read it; only busd writes it. 0660 gives 0640, 0600 gives
// 0600, 0666 gives 0644. Its group is the socket's.
mode_t counters_mode(uint32_t socket_mode) {
  return 0600 | ((socket_mode & 0020) != 0 ? 0040 : 0) | ((socket_mode & 0002) != 0 ? 0004 : 0);
}

}  // namespace

Daemon::Daemon(Options opts) : opts_(std::move(opts)) {}

Daemon::~Daemon() {
  peers_.clear();
  greeters_.clear();
  for (auto& [id, a] : agents_) {
    if (a->sock >= 0) ::close(a->sock);
  }
  if (listener_ >= 0) {
    ::close(listener_);
    ::unlink(socket_path_.c_str());
  }
  if (signal_fd_ >= 0) ::close(signal_fd_);
  if (timer_fd_ >= 0) ::close(timer_fd_);
  if (spare_fd_ >= 0) ::close(spare_fd_);
  if (epoll_ >= 0) ::close(epoll_);
}

Expected<void> Daemon::start() {
  const auto& cfg = opts_.config;
  uid_ = ::geteuid();
  log::set_level(cfg.log_level);
  raise_nofile();
  auto ws = shm::parse_wait_strategy(cfg.wait);
  if (!ws) return tl::unexpected(ws.error());
  wait_ = *ws;

  socket_path_ = choose_socket(cfg);
  if (auto p = prepare_socket_path(socket_path_); !p) return p;
  std::string counters_path = counters_path_for_socket(socket_path_);
  if (!cfg.shm_dir.empty()) {
    counters_path = (std::filesystem::path(cfg.shm_dir) / std::filesystem::path(counters_path).filename()).string();
  }
  if (auto stale = counters::CountersPage::remove_stale(counters_path); stale && *stale) {
    log::warn("stale_counters_removed", {{"path", counters_path}});
  }
  // Pattern and lane slots: four per agent (at least 256 patterns), within the table limit.
  const auto four_per_agent = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{cfg.limits.max_agents} * 4, counters::kMaxTableSlots));
  auto page = counters::CountersPage::create(counters_path, cfg.limits.max_agents, std::max<uint32_t>(256, four_per_agent),
                                             four_per_agent, counters_mode(cfg.socket_mode),
                                             std::min<uint32_t>(cfg.cluster.max_peers, counters::kMaxTableSlots));
  if (!page) return tl::unexpected(page.error().context("counters page"));
  if (auto gid = group_id(cfg.socket_group); gid && *gid != ::getegid() && ::chown(counters_path.c_str(), -1, *gid) != 0) {
    return tl::unexpected(system_error("setting the group of counters page " + counters_path, errno));
  }
  counters_ = std::move(*page);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  signal_fd_ = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // for shed_connection()
  epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (signal_fd_ < 0 || timer_fd_ < 0 || epoll_ < 0) return tl::unexpected(system_error("signalfd/timerfd/epoll", errno));
  itimerspec tick{{0, static_cast<long>(kTickNs)}, {0, static_cast<long>(kTickNs)}};
  ::timerfd_settime(timer_fd_, 0, &tick, nullptr);
  auto add = [&](int fd, Source s) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(s);
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
  };
  add(signal_fd_, Source::Signal);
  add(timer_fd_, Source::Timer);
  if (auto links = start_links(); !links) return links;
  if (auto remote = start_tcp_agents(); !remote) return remote;
  if (!cfg.metrics_listen.empty()) {
    // After the signal mask above (the thread inherits it) and the counters page.
    auto m = metrics::Server::start(cfg.metrics_listen, counters_.path());
    if (!m) return tl::unexpected(m.error());
    metrics_ = std::move(*m);
    log::info("metrics_listening", {{"address", metrics_->address()}, {"path", "/metrics"}});
  }
  // The control socket last: whoever finds it can count on the counters page (busctl) and on
  // every TCP listener (remote agents, peers) being up.
  auto l = listen_at(socket_path_, cfg.socket_mode, cfg.socket_group);
  if (!l) return tl::unexpected(l.error());
  listener_ = *l;
  add(listener_, Source::Listener);
  counters_.heartbeat(clock::real_ns());
  log::info("busd_started", {{"socket", socket_path_}, {"counters", counters_path},
                             {"pid", ::getpid()}, {"wait", shm::to_string(wait_)},
                             {"config", opts_.config_path.empty() ? "<default>" : opts_.config_path}});
  return {};
}

Expected<std::string> Daemon::listen_tcp(const std::string& text, std::string_view key, Source src,
                                         tcp::TcpListener& into) {
  auto ep = tcp::listen_endpoint(text);
  if (!ep) return tl::unexpected(ep.error().context(std::string(key)));
  auto l = tcp::TcpListener::listen(*ep);
  if (!l) return tl::unexpected(l.error().context(std::string(key).append(" ").append(ep->to_string())));
  into = std::move(*l);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag(src);
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, into.fd(), &ev);
  return ep->host + ":" + std::to_string(into.port());
}

Agent* Daemon::agent(uint32_t id) noexcept {
  auto it = agents_.find(id);
  return it == agents_.end() ? nullptr : it->second.get();
}

void Daemon::handle_events(uint64_t timeout_ns) {
  epoll_event evs[64];
  // epoll_pwait2: a timeout finer than a millisecond (a datagram link's ack and retransmission
  // timers are in tens of microseconds).
  const timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000), static_cast<long>(timeout_ns % 1'000'000'000)};
  const int n = ::epoll_pwait2(epoll_, evs, 64, &ts, nullptr);
  for (int i = 0; i < n; ++i) {
    const auto src = static_cast<Source>(evs[i].data.u64 >> 32);
    const auto id = static_cast<uint32_t>(evs[i].data.u64);
    switch (src) {
      case Source::Listener: accept_agents(); break;
      case Source::Signal: {
        signalfd_siginfo si{};
        while (::read(signal_fd_, &si, sizeof si) == sizeof si) {
          if (si.ssi_signo == SIGHUP) {
            reload();
          } else if (stopping_) {
            stop_now_ = true;  // a second SIGINT/SIGTERM: stop without draining
          } else {
            begin_shutdown();
          }
        }
        break;
      }
      case Source::Timer: {
        uint64_t ticks = 0;
        (void)!::read(timer_fd_, &ticks, sizeof ticks);
        counters_.heartbeat(clock::real_ns());
        notify::systemd().watchdog();  // WatchdogSec=: the loop still turns
        heartbeats();
        sync_lanes();
        sync_link_counters();
        break;
      }
      case Source::AgentSocket:
        if (Agent* a = agent(id)) on_agent_socket(*a, evs[i].events);
        break;
      case Source::LinkListener: accept_links(); break;
      case Source::Link:
        if (id < peers_.size()) peers_[id]->readable = true;
        break;
      case Source::Greeter: on_greeter(id); break;
      case Source::TcpAgentListener: accept_tcp_agents(); break;
      case Source::AgentData:
      case Source::AgentSpace:
        // The ring itself is polled by the loop; the eventfd only woke us. disarm drains it.
        break;
    }
  }
}

// Announces the sleep on every ring busd waits for, then sleeps in epoll. False when a ring
// turned out to be ready while arming (do not sleep: loop again).
bool Daemon::sleep_until_ready(uint64_t timeout_ns) {
  bool ready = false;
  size_t armed_from = 0;
  for (; armed_from < active_.size() && !ready; ++armed_from) {
    Agent* a = active_[armed_from];
    if (a->phase != Agent::Phase::Active) continue;
    if (a->stalled()) {
      // Waits for room in the rings it owes deliveries to, not for its own ring.
      for (const auto& t : a->owed) {
        Agent* dst = agent(t.agent);
        if (dst != nullptr && !dst->to.arm_space(dst->to.max_record())) ready = true;
      }
    } else if (!a->from.arm_sleep()) {
      ready = true;
    }
  }
  // Slow consumers: wake when they take something (their buffers flush, recovery is noticed).
  size_t armed_slow = 0;
  for (; armed_slow < slow_agents_.size() && !ready; ++armed_slow) {
    Agent* a = slow_agents_[armed_slow];
    if (a->slow_cut || !a->to.arm_space(a->to.max_record())) ready = true;
  }
  const bool links_armed = !ready;  // the links too announce the sleep, unless a ring is ready
  if (links_armed && !arm_links()) ready = true;
  if (!ready) handle_events(std::min<uint64_t>(timeout_ns, 1000 * kMs));
  if (links_armed) disarm_links();
  for (size_t i = 0; i < armed_slow && i < slow_agents_.size(); ++i) slow_agents_[i]->to.disarm_space();
  for (size_t i = 0; i < armed_from && i < active_.size(); ++i) {
    Agent* a = active_[i];
    if (a->phase != Agent::Phase::Active) continue;
    a->from.disarm();
    for (const auto& t : a->owed) {
      if (Agent* dst = agent(t.agent)) dst->to.disarm_space();
    }
  }
  return !ready;
}

int Daemon::run() {
  uint64_t last_events = clock::mono_ns();
  uint64_t idle_since = 0;
  uint32_t spins = 0;
  // With links, sockets are looked at every 20 us while busy and on every idle poll, so that
  // a message from a peer does not wait for the millisecond check.
  const bool linked = clustered() || tcp_agents_listener_.fd() >= 0;
  const uint64_t events_every = linked ? 20'000 : kMs;
  while (!stop_now_) {
    reap();
    size_t moved = route_all(256);
    if (linked) moved += poll_links();
    if (!slow_agents_.empty()) [[unlikely]] service_slow(clock::mono_ns());
    publish_dirty();
    if (!tcp_agents_.empty()) flush_tcp_agents();
    if (linked) flush_links(clock::mono_ns());
    if (poll_ports_ && poll_ports_()) ++moved;  // inline DPDK ports: tx what flush_links queued, rx
    for (uint32_t id : condemned_) {
      if (Agent* a = agent(id)) remove_agent(*a, "corrupt ring", false);
    }
    condemned_.clear();
    for (uint32_t id : lost_) {
      if (Agent* a = agent(id)) remove_agent(*a, "connection lost", false);
    }
    lost_.clear();
    const uint64_t now = clock::mono_ns();
    expire_requests(now);
    if (!leaving_.empty()) finish_leaving(now);
    if (stopping_) {
      bool empty = true;
      for (Agent* a : active_) empty &= !a->from.readable() && !a->stalled() && !a->slow_waiting;
      if (empty || now >= drain_deadline_ns_) break;
    }
    if (moved > 0) {
      idle_since = 0;
      // Busy: look at sockets and signals once a millisecond, not per message.
      if (now - last_events >= events_every) {
        handle_events(0);
        last_events = now;
      }
      continue;
    }
    // Idle: spin (polling the rings) per the wait strategy, then sleep in epoll.
    if (idle_since == 0) idle_since = now;
    const bool may_sleep = wait_.kind == shm::WaitKind::Block ||
                           (wait_.kind == shm::WaitKind::Adaptive && now - idle_since >= wait_.spin_ns);
    if (!may_sleep) {
      // Adaptive spins politely (a yield every 64 polls), as the rings' waits do: a woken
      // agent on this CPU then runs at once instead of after the whole spin phase.
      if (wait_.kind == shm::WaitKind::Yield || (wait_.kind == shm::WaitKind::Adaptive && (++spins & 63) == 0)) {
        sched_yield();
      } else {
        shm::cpu_relax();
      }
      if (linked || now - last_events >= kMs) {
        handle_events(0);
        last_events = now;
      }
      continue;
    }
    uint64_t timeout = std::min(kTickNs, link_timeout_ns(now));
    if (!deadlines_.empty()) timeout = deadlines_.top().first > now ? std::min(timeout, deadlines_.top().first - now) : 0;
    if (stopping_) timeout = std::min<uint64_t>(timeout, 10 * kMs);
    sleep_until_ready(timeout);
    last_events = clock::mono_ns();
    idle_since = 0;
  }
  // Stop: tell everyone, close everything, leave nothing behind.
  for (Agent* a : std::vector<Agent*>(active_)) remove_agent(*a, "busd stopping");
  reap();
  stop_links();
  if (metrics_) metrics_->stop();
  log::info("busd_stopped", {{"messages_in", counters_.get(counters::Global::messages_in)},
                             {"messages_out", counters_.get(counters::Global::messages_out)}});
  return 0;
}

void Daemon::begin_shutdown() {
  if (stopping_) return;
  stopping_ = true;
  notify::systemd().stopping();
  drain_deadline_ns_ = clock::mono_ns() + uint64_t{opts_.config.drain_timeout_ms} * kMs;
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_, nullptr);
  ::close(listener_);
  listener_ = -1;
  ::unlink(socket_path_.c_str());
  log::info("busd_draining", {{"agents", active_.size()}, {"drain_ms", opts_.config.drain_timeout_ms}});
  for (Agent* a : active_) {
    auto body = control::CreateGoodbyeDirect(fbb_, "busd is stopping", opts_.config.drain_timeout_ms);
    send_control(*a, control::Body::Goodbye, body.Union());
  }
}

}  // namespace bus::daemon
