// A DPDK ethdev port carrying Ethernet/IPv4/UDP datagrams between the wire and busd's main
// thread. It knows nothing of the reliability protocol (dgram/): it moves opaque UDP payloads.
//
// Threads. Each Port runs one poll thread (std::thread, registered with EAL) that owns the
// ethdev queues: it receives frames, answers and sends ARP, checks IPv4/UDP, and hands each
// datagram to the Endpoint it belongs to through a single-producer/single-consumer rte_ring; in
// the other direction it drains the port's tx ring (filled by Endpoint::tx) into the NIC. Every
// Endpoint of a Port is driven by ONE other thread (busd's main thread): they share the port's
// single-producer tx ring. Endpoint calls never block, lock, allocate from the heap or make a
// system call per packet (the only system calls: an eventfd write to wake a sleeping poll thread,
// and the eventfd of Endpoint::disarm after the consumer slept).
//
// Demultiplexing. Several Endpoints (one per busd link) share a Port, keyed by (local IPv4,
// local UDP port); a datagram is delivered only when its source is the Endpoint's peer
// (IPv4, UDP port). Anything else is dropped and counted.
//
// Lifetime. attach/detach may run while the poll thread runs (slots with an acknowledgement from
// the poll thread, no lock on its side). Before destroying a Port: release every handle that
// rx_burst gave out (they are mbufs of the Port's pool, which the destructor frees).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bus/error.hpp"
#include "dgram/packet.hpp"

struct rte_mempool;
struct rte_ring;
struct rte_mbuf;

namespace bus::dpdk {

using MacAddress = std::array<uint8_t, 6>;

/// "02:00:00:00:00:01"
[[nodiscard]] std::string format_mac(const MacAddress& mac);
/// Parses "02:00:00:00:00:01" (also "0200.0000.0001", as rte_ether_unformat_addr does).
[[nodiscard]] Expected<MacAddress> parse_mac(const std::string& text);

/// TEST ONLY: faults the poll thread injects into outgoing UDP packets (never into ARP), to
/// exercise the reliability layer over a lossless link such as memif. Each decision is drawn per
/// packet from a generator seeded with `seed` (runs repeat). All 0 = off (the default).
struct Impair {
  uint32_t loss_permille = 0;     // the packet is freed instead of sent
  uint32_t dup_permille = 0;      // a copy is sent right after it
  uint32_t reorder_permille = 0;  // held back, sent after the next packet (or after 1 ms alone)
  uint32_t corrupt_permille = 0;  // one random bit of the UDP payload is flipped
  uint64_t seed = 1;
};

struct PortOptions {
  /// The ethdev name for rte_eth_dev_get_port_by_name: "net_memif0", "net_af_packet0" (vdevs
  /// given to init_eal with --vdev) or a PCI address.
  std::string name;
  /// Pin the poll thread to this CPU; -1 lets it float.
  int cpu = -1;
  /// Busy: the poll thread never sleeps (a whole core, lowest latency). Adaptive: after spin_us
  /// with nothing received or sent it sleeps, from 1 us doubling up to sleep_max_us, woken early
  /// by Endpoint::tx (and by rx interrupts where the PMD has them; memif and af_packet do not,
  /// so their rx is seen at most sleep_max_us late).
  /// Inline: no thread of its own: the owner's loop calls poll() (busd's main loop, which then
  /// sleeps at most sleep_max_us). For machines with fewer cores than busy threads (two busd,
  /// their poll threads and the agents on 2 vCPUs): it saves two thread hand-offs per message.
  enum class Idle { Busy, Adaptive, Inline } idle = Idle::Adaptive;
  uint32_t spin_us = 20;
  uint32_t sleep_max_us = 100;
  /// Restart the device (stop, start) when its link has been down this long, and again as long
  /// as it stays down; 0 = never. A memif client needs it: it connects at start only, so after
  /// its server restarts it would stay down for good.
  uint32_t restart_down_ms = 0;
  uint32_t mbufs = 8191;      // mbufs in the port's pool (rx, tx, and those the consumer holds)
  uint32_t mbuf_cache = 256;  // per-lcore cache (clamped to what DPDK accepts for `mbufs`)
  uint16_t rx_desc = 1024, tx_desc = 1024;
  /// IP MTU. One frame of mtu + headers always fits in one mbuf segment. Set on the device where
  /// the PMD can; open fails where the device refuses it (af_packet in DPDK 22.11: at most 1500,
  /// its max_rx_pktlen is fixed at 1518). memif cannot set it (-ENOTSUP, ignored) and carries
  /// what its buffers hold: DPDK 22.11's memif duplicates and mangles frames that span several
  /// of its buffers, so above mtu 2034 give its vdev bsize= of at least mtu + 14 (default 2048).
  /// Payloads for Endpoint::tx: at most mtu - 28.
  uint16_t mtu = 1500;
  /// "" = the port's own MAC. Set on the device where the PMD can; memif cannot (-ENOTSUP): the
  /// port then uses it in software (source of its frames, the address it answers ARP with and
  /// accepts unicast for), which is all a point-to-point memif needs.
  std::string mac;
  Impair impair;
};

struct EndpointOptions {
  uint32_t local_ip = 0, peer_ip = 0;      // IPv4, host byte order
  uint16_t local_port = 0, peer_port = 0;  // UDP, host byte order
  /// Known peer MAC (static, never replaced); unset: learned by ARP (a request right away, then
  /// every 100 ms until an ARP request or reply from peer_ip tells it).
  std::optional<MacAddress> peer_mac;
  uint32_t rx_ring = 4096;  // datagrams that may wait for rx_burst (exactly; more are dropped)
};

/// Port-level counters (the poll thread writes them with relaxed atomics; a snapshot).
struct PortCounters {
  uint64_t rx_packets = 0, rx_bytes = 0;  // every frame the NIC gave us
  uint64_t rx_dropped_bad = 0;            // bad IPv4 header, checksum or lengths; truncated
  uint64_t rx_dropped_fragment = 0;       // IPv4 fragments (never reassembled)
  uint64_t rx_dropped_not_ours = 0;       // no endpoint for (dst, src), not UDP, other ethertype
  uint64_t rx_dropped_other_mac = 0;      // unicast to another MAC (af_packet sees the whole link)
  uint64_t arp_requests_rx = 0, arp_replies_rx = 0;
  uint64_t arp_requests_tx = 0, arp_replies_tx = 0;
  uint64_t tx_packets = 0, tx_bytes = 0;  // frames the NIC took
  uint64_t tx_dropped = 0;                // the NIC refused them too long, or no mbuf for ARP
  uint64_t impair_lost = 0, impair_duplicated = 0, impair_reordered = 0, impair_corrupted = 0;
  uint64_t polls = 0;   // poll loop iterations
  uint64_t sleeps = 0;  // times the poll thread slept (Adaptive)
  uint64_t restarts = 0;  // device restarts after its link stayed down (restart_down_ms)
};

/// Endpoint counters: rx_* written by the poll thread, tx_* by the consumer thread.
struct EndpointCounters {
  uint64_t rx_packets = 0, rx_bytes = 0;  // delivered to the endpoint's ring (payload bytes)
  uint64_t rx_dropped_ring_full = 0;      // the consumer did not keep up
  uint64_t tx_packets = 0, tx_bytes = 0;  // queued to the port (payload bytes)
  uint64_t tx_dropped = 0;                // pool or tx ring full, payload above max_payload()
  uint64_t tx_no_mac = 0;                 // not sent: the peer's MAC is not known yet
};

class Port;

/// One busd link's share of a Port. All calls from ONE thread (the same for every Endpoint of a
/// Port), none blocks.
class Endpoint {
 public:
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  ~Endpoint();

  /// Up to `max` received datagrams: data points at the UDP payload (Ethernet padding trimmed),
  /// handle is the rte_mbuf*. Give every handle back with release(), in any order.
  size_t rx_burst(dgram::RxPacket* out, size_t max) noexcept;
  /// Frees the mbufs of these handles (from rx_burst of any endpoint of any port). Static: it
  /// needs no endpoint, so handles held across a detach can still be given back.
  static void release(const uint64_t* handles, size_t n) noexcept;
  /// Queues one UDP datagram per payload to the peer. Returns how many were queued: the first
  /// that many; the rest are dropped and counted (mbuf pool or tx ring full, a payload above
  /// max_payload()). Nothing is queued while the peer's MAC is unknown (counted in tx_no_mac).
  size_t tx(std::span<const std::span<const std::byte>> payloads) noexcept;

  /// A datagram is waiting.
  [[nodiscard]] bool has_rx() const noexcept;
  /// Readable (eventfd, EFD_NONBLOCK) when datagrams arrived while armed.
  [[nodiscard]] int wait_fd() const noexcept { return efd_; }
  /// Announces that the consumer is about to sleep on wait_fd(). false: datagrams are waiting
  /// already, do not sleep. Call disarm() after waking (and after arm() returned false).
  [[nodiscard]] bool arm() noexcept;
  /// Clears the announcement and drains the eventfd.
  void disarm() noexcept;

  [[nodiscard]] bool peer_mac_known() const noexcept;
  [[nodiscard]] std::optional<MacAddress> peer_mac() const noexcept;
  [[nodiscard]] EndpointCounters counters() const noexcept;
  [[nodiscard]] const EndpointOptions& options() const noexcept { return opt_; }
  /// Largest payload tx() takes: the port's MTU - 28 (IPv4 and UDP headers).
  [[nodiscard]] size_t max_payload() const noexcept { return max_payload_; }

 private:
  friend class Port;
  Endpoint(Port& port, const EndpointOptions& opt);
  void build_template(uint64_t mac_word) noexcept;

  // Set at attach, read-only afterwards.
  Port& port_;
  EndpointOptions opt_;
  uint32_t local_ip_be_ = 0, peer_ip_be_ = 0;
  uint16_t local_port_be_ = 0, peer_port_be_ = 0;
  size_t max_payload_ = 0;
  rte_ring* rx_ring_ = nullptr;
  int efd_ = -1;
  bool static_mac_ = false;

  // The peer's MAC and a "known" bit (see port.cpp): written by the poll thread (ARP).
  alignas(64) std::atomic<uint64_t> peer_mac_{0};

  // Written by the consumer (arm/disarm), exchanged by the poll thread when it wakes it.
  alignas(64) std::atomic<bool> armed_{false};

  // Poll thread only.
  alignas(64) std::atomic<uint64_t> rx_packets_{0};
  std::atomic<uint64_t> rx_bytes_{0};
  std::atomic<uint64_t> rx_dropped_ring_full_{0};
  uint64_t next_arp_tsc_ = 0;

  // Consumer thread only.
  alignas(64) std::atomic<uint64_t> tx_packets_{0};
  std::atomic<uint64_t> tx_bytes_{0};
  std::atomic<uint64_t> tx_dropped_{0};
  std::atomic<uint64_t> tx_no_mac_{0};
  uint64_t template_mac_ = 0;  // the peer MAC word the header template was built for
  uint16_t ip_id_ = 0;
  alignas(8) std::array<uint8_t, 42> template_{};  // Ethernet + IPv4 + UDP headers
};

class Port {
 public:
  static constexpr size_t kMaxEndpoints = 64;

  /// Finds the ethdev, creates its mbuf pool, configures one rx and one tx queue, sets MTU and
  /// MAC where the PMD can, starts it and starts the poll thread. init_eal first. A failed open
  /// leaves the device stopped but not closed, so it can be tried again: a memif client's start
  /// fails (System, "rte_eth_dev_start") until its server's socket exists.
  [[nodiscard]] static Expected<std::unique_ptr<Port>> open(const PortOptions& opt);

  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;
  /// Stops the poll thread, frees every endpoint, stops and closes the device, frees the pool.
  ~Port();

  /// Stops the poll thread (idempotent; the destructor does it too): what Endpoint::tx queued
  /// still goes to the NIC (for at most 20 ms), then nothing moves any more; endpoints stay
  /// attached. Call from the thread that attaches and detaches.
  ///
  /// memif (DPDK 22.11) between two processes: stop both sides before either destroys its Port,
  /// and destroy them one after the other. memif's interrupt thread unmaps the shared rings as
  /// soon as the peer disconnects, with no lock against a concurrent rte_eth_rx_burst (the poll
  /// thread checks the link before each burst: that narrows the window, it cannot close it), and
  /// rte_eth_dev_close racing the peer's own close crashed in that thread here.
  void stop();

  /// A new endpoint (owned by the Port until detach). AlreadyExists for a (local_ip, local_port)
  /// already attached; LimitReached beyond kMaxEndpoints.
  /// Idle::Inline only, from the one thread that drives the endpoints: one round of what the
  /// poll thread does (rx burst and hand-off, ARP, tx burst). True when it moved something.
  bool poll() noexcept;
  [[nodiscard]] bool is_inline() const noexcept { return opt_.idle == PortOptions::Idle::Inline; }
  [[nodiscard]] Expected<Endpoint*> attach(const EndpointOptions& opt);
  /// Removes and frees the endpoint (its waiting datagrams too). Waits until the poll thread no
  /// longer uses it (one poll loop). Handles the consumer still holds stay valid until given to
  /// Endpoint::release (static).
  void detach(Endpoint* ep);

  [[nodiscard]] const MacAddress& mac() const noexcept { return mac_; }
  /// The PMD could not set PortOptions::mac (memif): the port uses it in software.
  [[nodiscard]] bool mac_in_software() const noexcept { return mac_in_software_; }
  [[nodiscard]] const std::string& name() const noexcept { return opt_.name; }
  [[nodiscard]] uint16_t port_id() const noexcept { return port_id_; }
  [[nodiscard]] uint16_t mtu() const noexcept { return opt_.mtu; }
  [[nodiscard]] size_t max_payload() const noexcept { return size_t{opt_.mtu} - 28; }
  /// rte_eth_link_get_nowait.
  [[nodiscard]] bool link_up() const noexcept;
  /// The poll thread sleeps on the rx queue's interrupt (false for memif and af_packet).
  [[nodiscard]] bool rx_interrupts() const noexcept { return rx_intr_fd_ >= 0; }
  [[nodiscard]] PortCounters counters() const noexcept;
  [[nodiscard]] rte_mempool* pool() const noexcept { return pool_; }
  /// One line: name, driver, MAC, MTU, link status, rx interrupts.
  [[nodiscard]] std::string describe() const;

 private:
  friend class Endpoint;
  struct PollState;  // the poll thread's private state (port.cpp)

  explicit Port(const PortOptions& opt);
  Expected<void> setup();
  void poll_loop();
  void wake_poll_thread() noexcept;  // unconditionally (attach, detach, stop)
  void wake_if_sleeping() noexcept;  // from Endpoint::tx
  size_t load_endpoints(Endpoint** eps) noexcept;
  void handle_arp(rte_mbuf* m, Endpoint* const* eps, size_t n) noexcept;
  void queue_arp(uint16_t op, const MacAddress& dst_mac, uint32_t target_ip_be, uint32_t sender_ip_be) noexcept;
  void housekeeping(uint64_t now) noexcept;
  bool process_rx() noexcept;
  bool process_tx(uint64_t now, bool link) noexcept;
  bool link_ok() const noexcept;
  void restart_if_down(uint64_t now) noexcept;  // restart_down_ms
  bool poll_round(uint64_t now) noexcept;        // one round of the poll loop (or of poll())
  void sleep_once(uint64_t now) noexcept;

  PortOptions opt_;
  uint16_t port_id_ = 0;
  MacAddress mac_{};
  uint64_t mac_word_ = 0;  // mac_ packed as the poll thread compares it
  bool mac_in_software_ = false;
  bool check_link_ = false;  // memif: no rx/tx burst while the link is down (see stop())
  std::string driver_;
  bool configured_ = false, started_ = false, opened_ = false;
  rte_mempool* pool_ = nullptr;
  rte_ring* tx_ring_ = nullptr;
  int wake_fd_ = -1, epoll_fd_ = -1, rx_intr_fd_ = -1;
  std::unique_ptr<PollState> ps_;
  std::thread thread_;
  bool thread_running_ = false;
  std::atomic<bool> stop_{false};

  // Wake-up handshake with Endpoint::tx: the poll thread sets it, fences, re-checks the tx ring
  // and only then sleeps; tx enqueues, fences, and writes wake_fd_ only when it is set.
  alignas(64) std::atomic<bool> poll_sleeping_{false};
  // The poll thread's quiescent point, advanced (seq_cst) at the top of every loop iteration:
  // an endpoint taken out of its slot is no longer used once this has moved past the value read
  // after the removal.
  alignas(64) std::atomic<uint64_t> quiescent_{0};
  std::atomic<bool> arp_kick_{false};  // a new endpoint wants its first ARP request now

  // Endpoint slots: the control thread writes, the poll thread reads them once per iteration.
  std::array<std::atomic<Endpoint*>, kMaxEndpoints> slots_{};
  std::atomic<uint32_t> slots_hi_{0};  // 1 + the highest slot ever used

  // Control side (attach/detach), under control_mutex_.
  std::mutex control_mutex_;
  std::array<std::unique_ptr<Endpoint>, kMaxEndpoints> owned_{};
  std::vector<std::unique_ptr<Endpoint>> graveyard_;  // detached but not acknowledged in time

  // Counters, written by the poll thread only.
  struct Counters {
    std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, rx_dropped_bad{0}, rx_dropped_fragment{0},
        rx_dropped_not_ours{0}, rx_dropped_other_mac{0}, arp_requests_rx{0}, arp_replies_rx{0},
        arp_requests_tx{0}, arp_replies_tx{0}, tx_packets{0}, tx_bytes{0}, tx_dropped{0},
        impair_lost{0}, impair_duplicated{0}, impair_reordered{0}, impair_corrupted{0}, polls{0},
        sleeps{0}, restarts{0};
  };
  alignas(64) Counters c_;
};

}  // namespace bus::dpdk
