// The DPDK Environment Abstraction Layer, once per process. busd starts it before opening any
// DPDK port; everything in bus::dpdk needs it.
//
// EAL is not fork-safe: fork before init_eal, never after (tests fork their DPDK processes
// first). EAL pins the thread that calls rte_eal_init to its main lcore; init_eal puts the
// caller's CPU affinity back, because busd's main thread must float (the poll threads are the
// ones that may be pinned, see PortOptions::cpu).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "bus/error.hpp"

namespace bus::dpdk {

/// Runs rte_eal_init with argv = {"busd", args...}, e.g. {"-l", "0", "--no-huge", "-m", "512",
/// "--file-prefix=busd1", "--vdev=net_memif0,role=server,..."}. Once per process: a second call
/// fails (InvalidArgument, "already initialised"), also after cleanup_eal (DPDK cannot start
/// again in the same process). Errors carry rte_strerror(rte_errno) and the arguments. One error
/// leaves EAL up (eal_ready() true): the caller's CPU affinity could not be restored.
[[nodiscard]] Expected<void> init_eal(std::span<const std::string> args);

/// True between a successful init_eal and cleanup_eal.
[[nodiscard]] bool eal_ready() noexcept;

/// rte_eal_cleanup. Close every Port first.
void cleanup_eal();

/// Registers the calling (non-EAL) thread with EAL so that it gets an lcore id, and with it the
/// per-lcore mempool cache: mbuf allocations and frees then stay thread-local instead of going to
/// the pool's shared ring. Optional for busd's main thread (it works without, one compare-and-
/// swap per burst); the ports' poll threads do it themselves. Fails when EAL is not ready or all
/// RTE_MAX_LCORE ids are taken; the thread then keeps working without the cache.
[[nodiscard]] Expected<void> register_thread();
/// Gives the lcore id back (threads that called register_thread, before they exit).
void unregister_thread() noexcept;

/// A memif vdev of the EAL arguments (--vdev=net_memifN,...): memif's defaults where a key is
/// missing (role server, abstract socket).
struct MemifVdev {
  std::string name, path, role = "server", abstract = "yes";
};
[[nodiscard]] std::vector<MemifVdev> memif_vdevs(std::span<const std::string> args);

/// A memif server with a file-system socket (socket-abstract=no) does not start while the
/// socket file of an earlier run is there ("Address already in use"), as after a kill -9. Such
/// a file is removed when nothing listens on it; one somebody listens on is left alone (the EAL
/// then reports the conflict). Abstract sockets (memif's default) vanish with their owner.
/// Returns the paths removed. Call before init_eal().
std::vector<std::string> remove_stale_memif_sockets(std::span<const std::string> args);

}  // namespace bus::dpdk
