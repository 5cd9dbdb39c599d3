// Two private busd linked, for `busbench --transport tcp|dpdk|rdma`: on this host's loopback or,
// with --netns (tcp, dpdk), each in a network namespace of its own (NetnsPair; the pairs of one
// run share it).
//   tcp   busd A listens, busd B dials it (the [[links]] table is on B's side only); loopback
//         (127.0.0.1, a port each) or A listening on its veth address.
//   dpdk  a DPDK port each, and both list the link (both dial; the datagram handshake meets in
//         the middle): memif between the two on this host (A the memif server on EAL lcore 0, B
//         the client on lcore 1), or net_af_packet on each side's veth, the link's addresses on a
//         subnet the kernels do not have (they see its frames too, and ignore them).
//   rdma  busd A's [cluster] rdma_listen on the address of this host's RDMA interface (--rdma-addr,
//         $BUS_RDMA_ADDR, else its first non-loopback IPv4 address), busd B dials it from the same
//         address (a [[links]] kind = "rdma" table on B's side only): rdma_cm picks the device by
//         the address, and both ends sit on one port of it (loopback through the device).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "baselines.hpp"
#include "netns.hpp"
#include "scenarios.hpp"
#include "target.hpp"

namespace bus::bench {

enum Side : int { kSideA = 0, kSideB = 1 };

enum class LinkKind { tcp, dpdk, rdma };
[[nodiscard]] const char* kind_name(LinkKind k) noexcept;

class LinkedPair {
 public:
  /// Starts busd A, then busd B, and waits until both count the link up. `ns`: the namespaces to
  /// start them in (nullptr: this host's own; --dpdk af_packet needs them). `beside`: another
  /// pair runs next to this one and busbench measures them in turn (each sits idle meanwhile, see
  /// idle()). Throws std::runtime_error with the reason (and the busd logs); removes what it made.
  LinkedPair(const BusOptions& o, LinkKind kind, std::shared_ptr<NetnsPair> ns, bool beside);
  ~LinkedPair();
  LinkedPair(const LinkedPair&) = delete;
  LinkedPair& operator=(const LinkedPair&) = delete;

  [[nodiscard]] LinkKind kind() const noexcept { return kind_; }
  [[nodiscard]] BusTarget& busd(Side s) noexcept { return *busd_[s]; }
  /// Moves the calling thread into side s's network namespace (nothing on loopback): a forked
  /// child before it runs an agent on that side, or busbench itself.
  void enter(Side s) const;
  /// The raw TCP baselines' path: the listening socket on `listener`'s side (its kernel
  /// address, its namespace), the connecting one on the other side.
  [[nodiscard]] TcpPath tcp_path(Side listener) const;
  /// The link's address on side s (a DPDK link's own, not the kernel's; an RDMA link's interface).
  [[nodiscard]] const std::string& ip(Side s) const noexcept { return ip_[s]; }
  /// The kernel's address on side s: 127.0.0.1, or its veth's (where the raw TCP baselines run).
  [[nodiscard]] std::string host_ip(Side s) const;
  /// One line: where the link runs ("loopback: busd B dials busd A at 127.0.0.1:40123", "memif
  /// between two busd on this host: ...").
  [[nodiscard]] std::string where() const;
  /// How the DPDK ports' poll threads wait, one line ("" for a tcp link).
  [[nodiscard]] std::string poll_threads() const;
  /// While something else is measured (`on`) and back for its own runs. A DPDK pair beside
  /// another is stopped (SIGSTOP) meanwhile: its poll threads never sleep (busy) or wake every
  /// 100 us at most (adaptive: no rx interrupts), both costly on a small machine (its
  /// dead_after_ms is 1 h, so that the pause is not taken for a dead link). A TCP pair just sits
  /// idle (busd sleeps).
  void idle(bool on);
  /// Throws unless both busd are alive and the link is up (after a run: it must not have
  /// broken under it).
  void check(const std::string& when);

 private:
  /// What busbench appends to side s's busd config: [cluster], [dpdk], [[links]].
  [[nodiscard]] std::string config(Side s) const;

  LinkKind kind_;
  std::shared_ptr<NetnsPair> ns_;
  std::unique_ptr<BusTarget> busd_[2];
  std::string ip_[2];
  uint16_t port_[2] = {0, 0};
  int lcore_[2] = {0, 1};       // dpdk: EAL -l, and the CPU of a busy poll thread
  std::string eal_prefix_[2];   // dpdk: EAL --file-prefix (its runtime directory goes at the end)
  bool memif_ = false;          // dpdk: --dpdk memif (else af_packet on the veth pair)
  bool inline_ = false;  // --dpdk-idle inline: no poll threads, busd's loop polls the port
  bool busy_ = false;           // dpdk: --dpdk-idle busy
  bool pauses_ = false;         // dpdk beside another pair: stopped while that one is measured
  bool stopped_ = false;        // idle(true) stopped both busd
};

}  // namespace bus::bench
