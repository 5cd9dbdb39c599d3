#include "dpdk/eal.hpp"

#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <vector>

namespace bus::dpdk {
namespace {

enum class EalState : int { None, Ready, Failed, Cleaned };

std::mutex g_init_mutex;
std::atomic<EalState> g_state{EalState::None};

// rte_eal_init may keep pointers into argv (it reorders it, and some drivers keep their
// arguments): the strings live as long as the process.
std::vector<std::string>& argv_storage() {
  static std::vector<std::string> storage;
  return storage;
}

std::string joined(std::span<const std::string> args) {
  std::string out = "busd";
  for (const auto& a : args) {
    out += ' ';
    out += a;
  }
  return out;
}

}  // namespace

Expected<void> init_eal(std::span<const std::string> args) {
  std::lock_guard lock(g_init_mutex);
  switch (g_state.load()) {
    case EalState::None: break;
    case EalState::Ready:
      return fail(Errc::InvalidArgument, "DPDK EAL already initialised in this process (once per process)");
    case EalState::Failed:
      return fail(Errc::InvalidArgument, "DPDK EAL initialisation already failed once in this process (it cannot be retried)");
    case EalState::Cleaned:
      return fail(Errc::InvalidArgument, "DPDK EAL was cleaned up; it cannot be initialised again in this process");
  }

  auto& storage = argv_storage();
  storage.clear();
  storage.emplace_back("busd");
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(storage.size() + 1);
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);

  // EAL pins this thread to its main lcore. Save the affinity to give it back afterwards.
  cpu_set_t saved;
  CPU_ZERO(&saved);
  const bool have_saved = ::sched_getaffinity(0, sizeof saved, &saved) == 0;

  const int rc = ::rte_eal_init(static_cast<int>(storage.size()), argv.data());
  if (rc < 0) {
    const int err = rte_errno;
    g_state.store(EalState::Failed);
    if (have_saved) (void)::sched_setaffinity(0, sizeof saved, &saved);
    return fail(err == EACCES ? Errc::PermissionDenied : Errc::System,
                "rte_eal_init: " + std::string(::rte_strerror(err)) + " (arguments: " + joined(args) + ")");
  }
  if (have_saved && ::sched_setaffinity(0, sizeof saved, &saved) != 0) {
    // Not fatal: the thread is pinned to the main lcore, which still works, only slower when
    // that CPU is busy.
    const int err = errno;
    g_state.store(EalState::Ready);
    return fail(Errc::System, std::string("EAL is up, but restoring the main thread's CPU affinity failed: ") +
                                  std::strerror(err));
  }
  g_state.store(EalState::Ready);
  return {};
}

bool eal_ready() noexcept { return g_state.load(std::memory_order_acquire) == EalState::Ready; }

void cleanup_eal() {
  std::lock_guard lock(g_init_mutex);
  if (g_state.load() != EalState::Ready) return;
  // The EAL keeps its runtime files (/var/run/dpdk/<file-prefix>: config, memory segment
  // lists, a few MB on tmpfs) after rte_eal_cleanup. This process is the only one of its prefix
  // (busd runs no secondaries): they go with it.
  const std::string dir = ::rte_eal_get_runtime_dir();
  (void)::rte_eal_cleanup();
  g_state.store(EalState::Cleaned);
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);
}

Expected<void> register_thread() {
  if (!eal_ready()) return fail(Errc::InvalidArgument, "rte_thread_register: EAL is not initialised");
  if (::rte_lcore_id() != LCORE_ID_ANY) return {};  // an EAL thread, or registered already
  if (::rte_thread_register() != 0) {
    return fail(Errc::LimitReached, std::string("rte_thread_register: ") + ::rte_strerror(rte_errno));
  }
  return {};
}

void unregister_thread() noexcept {
  if (eal_ready()) ::rte_thread_unregister();
}

std::vector<MemifVdev> memif_vdevs(std::span<const std::string> args) {
  std::vector<MemifVdev> out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string dev = args[i];
    if (dev == "--vdev" && i + 1 < args.size()) {
      dev = args[i + 1];
    } else if (dev.rfind("--vdev=", 0) == 0) {
      dev = dev.substr(7);
    } else {
      continue;
    }
    if (dev.rfind("net_memif", 0) != 0) continue;
    MemifVdev m;
    size_t at = dev.find(',');
    m.name = dev.substr(0, at);
    while (at != std::string::npos) {
      const size_t next = dev.find(',', at + 1);
      const std::string kv = dev.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) {
        const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
        if (k == "socket") m.path = v;
        if (k == "role") m.role = v;
        if (k == "socket-abstract") m.abstract = v;
      }
      at = next;
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<std::string> remove_stale_memif_sockets(std::span<const std::string> args) {
  std::vector<std::string> removed;
  for (const MemifVdev& m : memif_vdevs(args)) {
    const std::string& path = m.path;
    if (m.role != "server" || m.abstract != "no" || path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) continue;
    if (::access(path.c_str(), F_OK) != 0) continue;
    const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    const bool refused = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno == ECONNREFUSED;
    ::close(fd);
    if (refused && ::unlink(path.c_str()) == 0) removed.push_back(path);
  }
  return removed;
}

}  // namespace bus::dpdk
