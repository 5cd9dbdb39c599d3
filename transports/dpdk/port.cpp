#include "dpdk/port.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_ring.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>

#include "dpdk/eal.hpp"

namespace bus::dpdk {
namespace {

// A full fence (the Dekker pairs below: a flag stored, then a DPDK ring looked at, against the
// ring written, then the flag looked at). GCC's ThreadSanitizer refuses std::atomic_thread_fence
// (-Wtsan); TSan cannot see DPDK's rings anyway, so its build uses the instruction itself.
inline void full_fence() noexcept {
#if defined(__SANITIZE_THREAD__)
  asm volatile("mfence" ::: "memory");
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// ---------------------------------------------------------------- wire layout

constexpr uint32_t kEthHdr = 14;
constexpr uint32_t kIpHdr = 20;   // what we send: IHL 5, no options
constexpr uint32_t kUdpHdr = 8;
constexpr uint32_t kHeaders = kEthHdr + kIpHdr + kUdpHdr;  // 42
constexpr uint32_t kArpLen = 28;
constexpr uint32_t kMinFrame = 60;  // Ethernet minimum without FCS (ARP frames are padded to it)
constexpr uint16_t kEtherIpv4 = 0x0800;
constexpr uint16_t kEtherArp = 0x0806;
constexpr uint8_t kProtoUdp = 17;

constexpr uint32_t kRxBurst = 32;
constexpr uint32_t kTxChunk = 32;
constexpr uint32_t kTxRingSize = 4096;  // busd thread -> poll thread
constexpr size_t kTxSlots = 64;         // frames waiting for the NIC in the poll thread
// Frames the NIC does not take (memif whose peer is gone or not reading, a NIC whose link is
// down) are retried every poll round and dropped when no frame left for this many rounds AND
// this long: a peer descheduled for a few milliseconds costs nothing, a dead link only a while.
constexpr uint32_t kTxStuckRounds = 1024;
constexpr uint64_t kTxStuckMs = 20;
constexpr uint64_t kStopFlushMs = 20;
constexpr uint64_t kArpIntervalMs = 100;
constexpr uint64_t kReorderHoldUs = 1000;
constexpr uint64_t kHousekeepingUs = 1000;

// A MAC in the low 48 bits of a word (byte 0 lowest); bit 63 = "known" in Endpoint::peer_mac_.
constexpr uint64_t kMacKnown = uint64_t{1} << 63;
constexpr uint64_t kMacMask = (uint64_t{1} << 48) - 1;
constexpr uint64_t kBroadcastWord = kMacMask;

uint64_t mac_word(const uint8_t* p) noexcept {
  uint64_t w = 0;
  std::memcpy(&w, p, 6);  // little-endian host: byte 0 in the low bits; only equality matters
  return w;
}
uint64_t mac_word(const MacAddress& m) noexcept { return mac_word(m.data()); }
MacAddress mac_of(uint64_t w) noexcept {
  MacAddress m{};
  std::memcpy(m.data(), &w, 6);
  return m;
}

// Header fields are read and written with memcpy: frames are only 2-byte aligned and the DPDK
// header structs are packed. Values named *_be stay in network byte order.
uint16_t load16(const uint8_t* p) noexcept {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t load32(const uint8_t* p) noexcept {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint16_t load_be16(const uint8_t* p) noexcept { return rte_be_to_cpu_16(load16(p)); }
void store16(uint8_t* p, uint16_t v) noexcept { std::memcpy(p, &v, 2); }
void store32(uint8_t* p, uint32_t v) noexcept { std::memcpy(p, &v, 4); }
void store_be16(uint8_t* p, uint16_t v) noexcept { store16(p, rte_cpu_to_be_16(v)); }

// Single-writer counters: a plain add published with a relaxed store (no locked instruction).
void bump(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

std::string ip_text(uint32_t host_order) {
  char b[16];
  std::snprintf(b, sizeof b, "%u.%u.%u.%u", host_order >> 24, (host_order >> 16) & 255,
                (host_order >> 8) & 255, host_order & 255);
  return b;
}

std::string rte_error_text(int err) { return ::rte_strerror(err < 0 ? -err : err); }

// Drivers known (DPDK 22.11) to have no rx queue interrupts: asking for them makes
// rte_eth_dev_configure fail or log warnings. memif registers rx_queue_intr_enable but it
// returns an error ("Interrupt mode not supported"); af_packet, ring and null have none.
bool rx_intr_unsupported(const char* driver) {
  static constexpr const char* kNone[] = {"net_memif", "net_af_packet", "net_ring", "net_null"};
  for (const char* d : kNone) {
    if (std::strcmp(driver, d) == 0) return true;
  }
  return false;
}

std::atomic<uint32_t> g_name_seq{0};

}  // namespace

std::string format_mac(const MacAddress& m) {
  char b[18];
  std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

Expected<MacAddress> parse_mac(const std::string& text) {
  rte_ether_addr a;
  if (::rte_ether_unformat_addr(text.c_str(), &a) != 0) {
    return fail(Errc::InvalidArgument, "not a MAC address: '" + text + "' (want xx:xx:xx:xx:xx:xx)");
  }
  MacAddress m{};
  std::memcpy(m.data(), a.addr_bytes, 6);
  return m;
}

// ---------------------------------------------------------------- poll thread state

struct Port::PollState {
  // Frames for the NIC (ARP and UDP), oldest first, with their lengths for the byte counter.
  rte_mbuf* txq[kTxSlots] = {};
  uint32_t txlen[kTxSlots] = {};
  size_t tx_n = 0;
  uint32_t stuck_rounds = 0;
  uint64_t stuck_since = 0;  // TSC of the last round in which the NIC took a frame

  // Impair.
  bool impair = false;
  uint64_t rng = 1;
  rte_mbuf* held = nullptr;  // reordered: sent after the next packet or at held_deadline
  uint64_t held_deadline = 0;

  // Time in TSC cycles.
  uint64_t hz = 0;
  uint64_t spin_cycles = 0, arp_interval = 0, hold_cycles = 0, housekeeping_interval = 0, stuck_cycles = 0;
  uint64_t last_work = 0;
  uint64_t next_housekeeping = 0;
  bool arp_pending = false;  // some endpoint waits for its peer's MAC
  uint64_t sleep_ns = 1000;
  uint64_t sleep_max_ns = 100000;

  // The endpoints as this loop iteration sees them (loaded at most once per iteration).
  Endpoint* eps[kMaxEndpoints] = {};
  size_t n_eps = 0;
  bool eps_loaded = false;

  uint64_t polls = 0;
  uint64_t down_since = 0;  // tsc when the link was first seen down (0: up), for restart_down_ms

  uint64_t next_random() noexcept {  // splitmix64: fast, good enough for fault injection
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  bool roll(uint32_t permille) noexcept { return permille != 0 && next_random() % 1000 < permille; }
  uint64_t cycles_to_ns(uint64_t c) const noexcept {
    return static_cast<uint64_t>(static_cast<double>(c) * 1e9 / static_cast<double>(hz));
  }
};

// ---------------------------------------------------------------- Endpoint

Endpoint::Endpoint(Port& port, const EndpointOptions& opt)
    : port_(port),
      opt_(opt),
      local_ip_be_(rte_cpu_to_be_32(opt.local_ip)),
      peer_ip_be_(rte_cpu_to_be_32(opt.peer_ip)),
      local_port_be_(rte_cpu_to_be_16(opt.local_port)),
      peer_port_be_(rte_cpu_to_be_16(opt.peer_port)),
      max_payload_(port.max_payload()),
      static_mac_(opt.peer_mac.has_value()) {
  if (static_mac_) peer_mac_.store(mac_word(*opt.peer_mac) | kMacKnown, std::memory_order_relaxed);
}

Endpoint::~Endpoint() {
  if (rx_ring_ != nullptr) {
    rte_mbuf* m[64];
    unsigned n;
    while ((n = rte_ring_sc_dequeue_burst(rx_ring_, reinterpret_cast<void**>(m), 64, nullptr)) > 0) {
      rte_pktmbuf_free_bulk(m, n);
    }
    rte_ring_free(rx_ring_);
  }
  if (efd_ >= 0) ::close(efd_);
}

size_t Endpoint::rx_burst(dgram::RxPacket* out, size_t max) noexcept {
  size_t got = 0;
  while (got < max) {
    rte_mbuf* m[kRxBurst];
    const unsigned want = static_cast<unsigned>(std::min<size_t>(max - got, kRxBurst));
    const unsigned k = rte_ring_sc_dequeue_burst(rx_ring_, reinterpret_cast<void**>(m), want, nullptr);
    for (unsigned i = 0; i < k; ++i) {
      // The poll thread cut the mbuf down to the UDP payload (one segment).
      out[got + i] = dgram::RxPacket{rte_pktmbuf_mtod(m[i], const std::byte*), m[i]->data_len,
                                     static_cast<uint64_t>(reinterpret_cast<uintptr_t>(m[i]))};
    }
    got += k;
    if (k < want) break;
  }
  return got;
}

void Endpoint::release(const uint64_t* handles, size_t n) noexcept {
  rte_mbuf* m[64];
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    if (handles[i] == 0) continue;
    m[k++] = reinterpret_cast<rte_mbuf*>(static_cast<uintptr_t>(handles[i]));
    if (k == 64) {
      rte_pktmbuf_free_bulk(m, 64);
      k = 0;
    }
  }
  if (k > 0) rte_pktmbuf_free_bulk(m, static_cast<unsigned>(k));
}

void Endpoint::build_template(uint64_t mac_word_known) noexcept {
  uint8_t* h = template_.data();
  std::memset(h, 0, template_.size());
  const MacAddress peer = mac_of(mac_word_known & kMacMask);
  std::memcpy(h, peer.data(), 6);
  std::memcpy(h + 6, port_.mac_.data(), 6);
  store_be16(h + 12, kEtherIpv4);
  uint8_t* ip = h + kEthHdr;
  ip[0] = 0x45;                                // version 4, IHL 5
  store_be16(ip + 6, RTE_IPV4_HDR_DF_FLAG);    // don't fragment: we never send fragments
  ip[8] = 64;                                  // TTL
  ip[9] = kProtoUdp;
  store32(ip + 12, local_ip_be_);
  store32(ip + 16, peer_ip_be_);
  uint8_t* udp = ip + kIpHdr;
  store16(udp + 0, local_port_be_);
  store16(udp + 2, peer_port_be_);
  template_mac_ = mac_word_known;
}

size_t Endpoint::tx(std::span<const std::span<const std::byte>> payloads) noexcept {
  const size_t n = payloads.size();
  if (n == 0) return 0;
  const uint64_t mac = peer_mac_.load(std::memory_order_acquire);
  if ((mac & kMacKnown) == 0) {
    bump(tx_no_mac_, n);
    return 0;
  }
  if (mac != template_mac_) build_template(mac);

  rte_mempool* pool = port_.pool_;
  size_t queued = 0;
  uint64_t bytes = 0;
  while (queued < n) {
    rte_mbuf* m[kTxChunk];
    unsigned k = static_cast<unsigned>(std::min<size_t>(n - queued, kTxChunk));
    if (rte_pktmbuf_alloc_bulk(pool, m, k) != 0) {
      // All or nothing: take what is left one by one.
      unsigned got = 0;
      while (got < k && (m[got] = rte_pktmbuf_alloc(pool)) != nullptr) ++got;
      k = got;
      if (k == 0) break;
    }
    unsigned built = 0;
    for (; built < k; ++built) {
      const auto p = payloads[queued + built];
      if (p.size() > max_payload_) break;
      uint8_t* f = rte_pktmbuf_mtod(m[built], uint8_t*);
      std::memcpy(f, template_.data(), kHeaders);
      uint8_t* ip = f + kEthHdr;
      store_be16(ip + 2, static_cast<uint16_t>(kIpHdr + kUdpHdr + p.size()));
      store_be16(ip + 4, ip_id_++);
      const uint16_t csum = rte_ipv4_cksum(reinterpret_cast<const rte_ipv4_hdr*>(ip));
      store16(ip + 10, csum);
      // UDP checksum 0 (none, allowed for IPv4): every datagram layer packet carries its own
      // CRC32C, which also covers what a UDP checksum would.
      store_be16(ip + kIpHdr + 4, static_cast<uint16_t>(kUdpHdr + p.size()));
      if (!p.empty()) std::memcpy(f + kHeaders, p.data(), p.size());
      const uint32_t len = static_cast<uint32_t>(kHeaders + p.size());
      m[built]->data_len = static_cast<uint16_t>(len);
      m[built]->pkt_len = len;
      bytes += p.size();
    }
    const unsigned enq = built == 0 ? 0 : rte_ring_sp_enqueue_burst(port_.tx_ring_, reinterpret_cast<void* const*>(m), built, nullptr);
    if (enq < k) rte_pktmbuf_free_bulk(m + enq, k - enq);
    if (enq < built) {
      for (unsigned i = enq; i < built; ++i) bytes -= payloads[queued + i].size();
    }
    queued += enq;
    if (enq < k) break;  // pool or ring full, or a payload above max_payload()
  }
  if (queued > 0) {
    bump(tx_packets_, queued);
    bump(tx_bytes_, bytes);
    port_.wake_if_sleeping();
  }
  if (queued < n) bump(tx_dropped_, n - queued);
  return queued;
}

bool Endpoint::has_rx() const noexcept { return rte_ring_empty(rx_ring_) == 0; }

bool Endpoint::arm() noexcept {
  armed_.store(true, std::memory_order_relaxed);
  // Pairs with the poll thread's fence between its enqueue and its load of armed_: either it
  // sees the flag and writes the eventfd, or we see its datagrams here.
  full_fence();
  return rte_ring_empty(rx_ring_) != 0;
}

void Endpoint::disarm() noexcept {
  armed_.store(false, std::memory_order_relaxed);
  uint64_t v;
  (void)!::read(efd_, &v, sizeof v);  // EAGAIN when the poll thread did not write
}

bool Endpoint::peer_mac_known() const noexcept {
  return (peer_mac_.load(std::memory_order_acquire) & kMacKnown) != 0;
}

std::optional<MacAddress> Endpoint::peer_mac() const noexcept {
  const uint64_t w = peer_mac_.load(std::memory_order_acquire);
  if ((w & kMacKnown) == 0) return std::nullopt;
  return mac_of(w & kMacMask);
}

EndpointCounters Endpoint::counters() const noexcept {
  constexpr auto r = std::memory_order_relaxed;
  return EndpointCounters{rx_packets_.load(r), rx_bytes_.load(r), rx_dropped_ring_full_.load(r),
                          tx_packets_.load(r), tx_bytes_.load(r), tx_dropped_.load(r),
                          tx_no_mac_.load(r)};
}

// ---------------------------------------------------------------- Port: open and close

Port::Port(const PortOptions& opt) : opt_(opt) {}

Expected<std::unique_ptr<Port>> Port::open(const PortOptions& opt) {
  std::unique_ptr<Port> port(new Port(opt));
  auto r = port->setup();
  if (r) port->opened_ = true;
  if (!r) {
    Error e = r.error();
    e.context("opening DPDK port '" + opt.name + "'");
    return tl::unexpected(std::move(e));
  }
  return port;
}

Expected<void> Port::setup() {
  if (!eal_ready()) return fail(Errc::InvalidArgument, "DPDK EAL is not initialised (init_eal first)");
  if (opt_.mtu < 68 || opt_.mtu > 9600) {
    return fail(Errc::InvalidArgument, "mtu " + std::to_string(opt_.mtu) + " outside 68..9600");
  }
  if (opt_.mbufs < 63) return fail(Errc::InvalidArgument, "mbufs must be at least 63");
  if (opt_.cpu >= CPU_SETSIZE) return fail(Errc::InvalidArgument, "cpu " + std::to_string(opt_.cpu) + " out of range");
  for (uint32_t p : {opt_.impair.loss_permille, opt_.impair.dup_permille, opt_.impair.reorder_permille,
                     opt_.impair.corrupt_permille}) {
    if (p > 1000) return fail(Errc::InvalidArgument, "impair permille above 1000");
  }
  if (opt_.sleep_max_us == 0) opt_.sleep_max_us = 1;

  if (::rte_eth_dev_get_port_by_name(opt_.name.c_str(), &port_id_) != 0) {
    std::string known;
    uint16_t pid;
    RTE_ETH_FOREACH_DEV(pid) {
      char n[RTE_ETH_NAME_MAX_LEN];
      if (::rte_eth_dev_get_name_by_port(pid, n) == 0) {
        if (!known.empty()) known += ", ";
        known += n;
      }
    }
    return fail(Errc::NotFound, "no such ethdev (ports: " + (known.empty() ? std::string("none") : known) + ")");
  }

  rte_eth_dev_info info;
  if (int rc = ::rte_eth_dev_info_get(port_id_, &info); rc != 0) {
    return fail(Errc::System, "rte_eth_dev_info_get: " + rte_error_text(rc));
  }
  driver_ = info.driver_name != nullptr ? info.driver_name : "?";

  std::optional<MacAddress> want_mac;
  if (!opt_.mac.empty()) {
    auto m = parse_mac(opt_.mac);
    if (!m) return tl::unexpected(m.error());
    want_mac = *m;
  }

  // The pool: one frame of mtu + Ethernet header (+ a VLAN tag of slack) in one segment, and at
  // least DPDK's default data room (af_packet insists on its 2 KiB frames fitting).
  const uint32_t frame = uint32_t{opt_.mtu} + RTE_ETHER_HDR_LEN + 4;
  uint32_t room = std::max<uint32_t>(RTE_MBUF_DEFAULT_DATAROOM, (frame + 63) & ~63u);
  room = std::max<uint32_t>(room, info.min_rx_bufsize);
  room += RTE_PKTMBUF_HEADROOM;
  const uint32_t cache = std::min<uint32_t>({opt_.mbuf_cache, RTE_MEMPOOL_CACHE_MAX_SIZE, opt_.mbufs / 2});
  int socket = ::rte_eth_dev_socket_id(port_id_);
  if (socket < 0) socket = SOCKET_ID_ANY;
  const uint32_t seq = g_name_seq.fetch_add(1);
  char pool_name[RTE_MEMPOOL_NAMESIZE];
  std::snprintf(pool_name, sizeof pool_name, "bus_p%u_%u", port_id_, seq);
  pool_ = ::rte_pktmbuf_pool_create(pool_name, opt_.mbufs, cache, 0, static_cast<uint16_t>(room), socket);
  if (pool_ == nullptr) {
    return fail(Errc::LimitReached, "rte_pktmbuf_pool_create(" + std::to_string(opt_.mbufs) + " mbufs of " +
                                        std::to_string(room) + " bytes): " + rte_error_text(rte_errno) +
                                        " (EAL memory: -m)");
  }

  // Configure: one rx and one tx queue. The device's MTU at configure time must fit its
  // max_rx_pktlen (1518 for memif and af_packet); a larger one is asked for below.
  uint32_t overhead = RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN;
  if (info.max_mtu != UINT16_MAX && info.max_rx_pktlen > info.max_mtu) overhead = info.max_rx_pktlen - info.max_mtu;
  uint32_t conf_mtu = opt_.mtu;
  if (info.max_rx_pktlen > overhead) conf_mtu = std::min<uint32_t>(conf_mtu, info.max_rx_pktlen - overhead);
  conf_mtu = std::min<uint32_t>(conf_mtu, info.max_mtu);
  conf_mtu = std::max<uint32_t>(conf_mtu, info.min_mtu);

  rte_eth_conf conf;
  std::memset(&conf, 0, sizeof conf);
  conf.rxmode.mtu = conf_mtu;
  const bool try_intr = !rx_intr_unsupported(driver_.c_str());
  conf.intr_conf.rxq = try_intr ? 1 : 0;
  int rc = ::rte_eth_dev_configure(port_id_, 1, 1, &conf);
  if (rc != 0 && try_intr) {
    conf.intr_conf.rxq = 0;
    rc = ::rte_eth_dev_configure(port_id_, 1, 1, &conf);
  }
  if (rc != 0) return fail(Errc::System, "rte_eth_dev_configure: " + rte_error_text(rc));
  configured_ = true;

  rc = ::rte_eth_dev_set_mtu(port_id_, opt_.mtu);
  if (rc != 0 && rc != -ENOTSUP) {
    return fail(Errc::InvalidArgument, "rte_eth_dev_set_mtu(" + std::to_string(opt_.mtu) + "): " + rte_error_text(rc) +
                                           " (device: MTU " + std::to_string(info.min_mtu) + ".." +
                                           std::to_string(info.max_mtu) + ", frames up to " +
                                           std::to_string(info.max_rx_pktlen) + " bytes with " +
                                           std::to_string(overhead) + " of overhead)");
  }

  uint16_t nb_rxd = opt_.rx_desc, nb_txd = opt_.tx_desc;
  if (rc = ::rte_eth_dev_adjust_nb_rx_tx_desc(port_id_, &nb_rxd, &nb_txd); rc != 0) {
    return fail(Errc::System, "rte_eth_dev_adjust_nb_rx_tx_desc: " + rte_error_text(rc));
  }
  if (rc = ::rte_eth_rx_queue_setup(port_id_, 0, nb_rxd, static_cast<unsigned>(socket), nullptr, pool_); rc != 0) {
    return fail(Errc::System, "rte_eth_rx_queue_setup: " + rte_error_text(rc));
  }
  if (rc = ::rte_eth_tx_queue_setup(port_id_, 0, nb_txd, static_cast<unsigned>(socket), nullptr); rc != 0) {
    return fail(Errc::System, "rte_eth_tx_queue_setup: " + rte_error_text(rc));
  }

  rte_ether_addr addr;
  if (want_mac) {
    std::memcpy(addr.addr_bytes, want_mac->data(), 6);
    rc = ::rte_eth_dev_default_mac_addr_set(port_id_, &addr);
    if (rc == -ENOTSUP) {
      mac_in_software_ = true;  // memif: frames carry it, we answer ARP with it
    } else if (rc != 0) {
      return fail(Errc::System, "setting MAC " + opt_.mac + ": " + rte_error_text(rc));
    }
  }
  if (mac_in_software_) {
    mac_ = *want_mac;
  } else {
    if (rc = ::rte_eth_macaddr_get(port_id_, &addr); rc != 0) {
      return fail(Errc::System, "rte_eth_macaddr_get: " + rte_error_text(rc));
    }
    std::memcpy(mac_.data(), addr.addr_bytes, 6);
  }
  mac_word_ = mac_word(mac_);

  if (rc = ::rte_eth_dev_start(port_id_); rc != 0) {
    return fail(Errc::System, "rte_eth_dev_start: " + rte_error_text(rc));
  }
  started_ = true;

  if (conf.intr_conf.rxq != 0) {
    const int fd = ::rte_eth_dev_rx_intr_ctl_q_get_fd(port_id_, 0);
    if (fd >= 0 && ::rte_eth_dev_rx_intr_enable(port_id_, 0) == 0) {
      (void)::rte_eth_dev_rx_intr_disable(port_id_, 0);
      rx_intr_fd_ = fd;  // owned by the PMD: never closed here
    }
  }

  char ring_name[RTE_RING_NAMESIZE];
  std::snprintf(ring_name, sizeof ring_name, "bus_tx%u_%u", port_id_, seq);
  tx_ring_ = ::rte_ring_create(ring_name, kTxRingSize, socket, RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ);
  if (tx_ring_ == nullptr) return fail(Errc::LimitReached, "rte_ring_create(tx): " + rte_error_text(rte_errno));

  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return tl::unexpected(system_error("eventfd", errno));
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return tl::unexpected(system_error("epoll_create1", errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = 0;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) return tl::unexpected(system_error("epoll_ctl", errno));
  if (rx_intr_fd_ >= 0) {
    ev.data.u32 = 1;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, rx_intr_fd_, &ev) != 0) rx_intr_fd_ = -1;  // poll with timeouts
  }

  ps_ = std::make_unique<PollState>();
  auto& ps = *ps_;
  ps.hz = ::rte_get_tsc_hz();
  ps.spin_cycles = ps.hz * opt_.spin_us / 1000000;
  ps.arp_interval = ps.hz * kArpIntervalMs / 1000;
  ps.hold_cycles = ps.hz * kReorderHoldUs / 1000000;
  ps.housekeeping_interval = ps.hz * kHousekeepingUs / 1000000;
  ps.stuck_cycles = ps.hz * kTxStuckMs / 1000;
  check_link_ = driver_ == "net_memif";
  ps.sleep_max_ns = uint64_t{opt_.sleep_max_us} * 1000;
  ps.sleep_ns = std::min<uint64_t>(1000, ps.sleep_max_ns);
  const Impair& im = opt_.impair;
  ps.impair = im.loss_permille + im.dup_permille + im.reorder_permille + im.corrupt_permille > 0;
  ps.rng = im.seed;

  if (opt_.idle == PortOptions::Idle::Inline) {
    ps.last_work = rte_rdtsc();
    return {};  // the owner's loop calls poll()
  }
  // The poll thread: it reports whether it could pin itself before open() returns.
  std::promise<std::string> started;
  auto status = started.get_future();
  thread_ = std::thread([this, &started] {
    char tname[16];
    std::snprintf(tname, sizeof tname, "dpdk-poll-%u", port_id_);
    ::pthread_setname_np(::pthread_self(), tname);
    // Sleeps of a few microseconds: without this the kernel's default 50 us timer slack makes
    // every adaptive sleep at least that long.
    (void)::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    if (opt_.cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(opt_.cpu, &set);
      if (::sched_setaffinity(0, sizeof set, &set) != 0) {
        started.set_value("pinning the poll thread to CPU " + std::to_string(opt_.cpu) + ": " + std::strerror(errno));
        return;
      }
    }
    // An lcore id gives the thread its mempool cache; without one it still works.
    (void)register_thread();
    started.set_value({});
    poll_loop();
    unregister_thread();
  });
  thread_running_ = true;
  std::string err = status.get();
  if (!err.empty()) {
    thread_.join();
    thread_running_ = false;
    return fail(Errc::System, err);
  }
  return {};
}

Port::~Port() {
  stop();
  if (ps_) {
    for (size_t i = 0; i < ps_->tx_n; ++i) rte_pktmbuf_free(ps_->txq[i]);
    if (ps_->held != nullptr) rte_pktmbuf_free(ps_->held);
  }
  if (tx_ring_ != nullptr) {
    rte_mbuf* m[64];
    unsigned n;
    while ((n = rte_ring_sc_dequeue_burst(tx_ring_, reinterpret_cast<void**>(m), 64, nullptr)) > 0) {
      rte_pktmbuf_free_bulk(m, n);
    }
    ::rte_ring_free(tx_ring_);
  }
  for (auto& e : owned_) e.reset();
  graveyard_.clear();
  // A port that failed to open is stopped but not closed, so that open can be tried again (a
  // memif client's start fails until its server listens); closing would remove a vdev for good.
  if (started_) (void)::rte_eth_dev_stop(port_id_);
  if (configured_ && opened_) (void)::rte_eth_dev_close(port_id_);
  if (pool_ != nullptr) ::rte_mempool_free(pool_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

// ---------------------------------------------------------------- attach / detach

Expected<Endpoint*> Port::attach(const EndpointOptions& opt) {
  if (opt.local_ip == 0 || opt.peer_ip == 0 || opt.local_port == 0 || opt.peer_port == 0) {
    return fail(Errc::InvalidArgument, "endpoint needs local and peer IPv4 addresses and UDP ports");
  }
  if (opt.rx_ring == 0 || opt.rx_ring > (1u << 24)) return fail(Errc::InvalidArgument, "rx_ring outside 1..2^24");
  const std::string what = ip_text(opt.local_ip) + ":" + std::to_string(opt.local_port);

  std::lock_guard lock(control_mutex_);
  size_t slot = kMaxEndpoints;
  for (size_t i = 0; i < kMaxEndpoints; ++i) {
    const auto& e = owned_[i];
    if (e && e->opt_.local_ip == opt.local_ip && e->opt_.local_port == opt.local_port) {
      return fail(Errc::AlreadyExists, "an endpoint on " + what + " is attached to " + opt_.name + " already");
    }
    if (!e && slot == kMaxEndpoints && slots_[i].load(std::memory_order_relaxed) == nullptr) slot = i;
  }
  if (slot == kMaxEndpoints) {
    return fail(Errc::LimitReached, opt_.name + " has " + std::to_string(kMaxEndpoints) + " endpoints already");
  }

  std::unique_ptr<Endpoint> ep(new Endpoint(*this, opt));
  char ring_name[RTE_RING_NAMESIZE];
  std::snprintf(ring_name, sizeof ring_name, "bus_ep%u", g_name_seq.fetch_add(1));
  ep->rx_ring_ = ::rte_ring_create(ring_name, opt.rx_ring, ::rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ);
  if (ep->rx_ring_ == nullptr) {
    return fail(Errc::LimitReached, "rte_ring_create(" + std::to_string(opt.rx_ring) + ") for " + what + ": " +
                                        rte_error_text(rte_errno));
  }
  ep->efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ep->efd_ < 0) return tl::unexpected(system_error("eventfd", errno));

  Endpoint* raw = ep.get();
  owned_[slot] = std::move(ep);
  slots_[slot].store(raw, std::memory_order_release);
  if (slots_hi_.load(std::memory_order_relaxed) < slot + 1) {
    slots_hi_.store(static_cast<uint32_t>(slot + 1), std::memory_order_release);
  }
  if (!raw->static_mac_) arp_kick_.store(true, std::memory_order_release);
  wake_poll_thread();
  return raw;
}

void Port::detach(Endpoint* ep) {
  if (ep == nullptr) return;
  std::lock_guard lock(control_mutex_);
  size_t slot = kMaxEndpoints;
  for (size_t i = 0; i < kMaxEndpoints; ++i) {
    if (owned_[i].get() == ep) slot = i;
  }
  if (slot == kMaxEndpoints) return;
  slots_[slot].store(nullptr, std::memory_order_seq_cst);
  if (thread_running_) {
    // The poll thread loads the slots after advancing quiescent_ (both seq_cst): once it moved
    // past the value read here, the iteration that might have seen `ep` is over.
    const uint64_t seen = quiescent_.load(std::memory_order_seq_cst);
    wake_poll_thread();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (quiescent_.load(std::memory_order_seq_cst) == seen) {
      if (std::chrono::steady_clock::now() > deadline) {
        // The poll thread is stuck (in a PMD call?): keep the endpoint alive until ~Port.
        graveyard_.push_back(std::move(owned_[slot]));
        return;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  owned_[slot].reset();
}

// ---------------------------------------------------------------- accessors

bool Port::link_up() const noexcept {
  rte_eth_link link;
  std::memset(&link, 0, sizeof link);
  if (::rte_eth_link_get_nowait(port_id_, &link) != 0) return false;
  return link.link_status == RTE_ETH_LINK_UP;
}

PortCounters Port::counters() const noexcept {
  constexpr auto r = std::memory_order_relaxed;
  return PortCounters{c_.rx_packets.load(r), c_.rx_bytes.load(r), c_.rx_dropped_bad.load(r),
                      c_.rx_dropped_fragment.load(r), c_.rx_dropped_not_ours.load(r),
                      c_.rx_dropped_other_mac.load(r), c_.arp_requests_rx.load(r), c_.arp_replies_rx.load(r),
                      c_.arp_requests_tx.load(r), c_.arp_replies_tx.load(r), c_.tx_packets.load(r),
                      c_.tx_bytes.load(r), c_.tx_dropped.load(r), c_.impair_lost.load(r),
                      c_.impair_duplicated.load(r), c_.impair_reordered.load(r), c_.impair_corrupted.load(r),
                      c_.polls.load(r), c_.sleeps.load(r), c_.restarts.load(r)};
}

std::string Port::describe() const {
  rte_eth_link link;
  std::memset(&link, 0, sizeof link);
  // (rte_eth_link_to_str is still experimental in 22.11.)
  std::string link_text = "link unknown";
  if (::rte_eth_link_get_nowait(port_id_, &link) == 0) {
    if (link.link_status != RTE_ETH_LINK_UP) {
      link_text = "link down";
    } else {
      link_text = "link up";
      if (link.link_speed != RTE_ETH_SPEED_NUM_NONE && link.link_speed != RTE_ETH_SPEED_NUM_UNKNOWN) {
        link_text += " " + std::to_string(link.link_speed) + " Mbps";
      }
      link_text += link.link_duplex == RTE_ETH_LINK_FULL_DUPLEX ? " full duplex" : " half duplex";
    }
  }
  std::string out = opt_.name + ": driver " + driver_ + ", MAC " + format_mac(mac_);
  if (mac_in_software_) out += " (in software: the PMD cannot set it)";
  out += ", MTU " + std::to_string(opt_.mtu) + ", " + link_text + ", rx interrupts ";
  out += rx_intr_fd_ >= 0 ? "yes" : "no";
  if (opt_.idle == PortOptions::Idle::Busy) {
    out += ", idle busy";
  } else if (opt_.idle == PortOptions::Idle::Inline) {
    out += ", polled inline by its owner (no thread; sleeps at most ";
    out += std::to_string(opt_.sleep_max_us);
    out += " us)";
  } else {
    out += ", idle adaptive (max sleep ";
    out += std::to_string(opt_.sleep_max_us);
    out += " us)";
  }
  if (opt_.cpu >= 0) out += ", poll thread on CPU " + std::to_string(opt_.cpu);
  if (ps_ && ps_->impair) out += ", IMPAIRED (test)";
  return out;
}

// ---------------------------------------------------------------- poll thread

void Port::wake_poll_thread() noexcept {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void Port::wake_if_sleeping() noexcept {
  // After the enqueue (release); pairs with the fence in sleep_once.
  full_fence();
  if (poll_sleeping_.load(std::memory_order_relaxed) && poll_sleeping_.exchange(false, std::memory_order_acq_rel)) {
    wake_poll_thread();
  }
}

size_t Port::load_endpoints(Endpoint** eps) noexcept {
  auto& ps = *ps_;
  if (!ps.eps_loaded) {
    const uint32_t hi = slots_hi_.load(std::memory_order_acquire);
    size_t n = 0;
    for (uint32_t i = 0; i < hi; ++i) {
      // seq_cst: ordered after this iteration's quiescent_ store (see detach); a plain load on x86.
      Endpoint* e = slots_[i].load(std::memory_order_seq_cst);
      if (e != nullptr) ps.eps[n++] = e;
    }
    ps.n_eps = n;
    ps.eps_loaded = true;
  }
  if (eps != ps.eps) std::copy_n(ps.eps, ps.n_eps, eps);
  return ps.n_eps;
}

void Port::queue_arp(uint16_t op, const MacAddress& target_mac, uint32_t target_ip_be, uint32_t sender_ip_be) noexcept {
  auto& ps = *ps_;
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (m == nullptr || ps.tx_n == kTxSlots) {
    if (m != nullptr) rte_pktmbuf_free(m);
    bump(c_.tx_dropped);
    return;
  }
  uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
  std::memset(f, 0, kMinFrame);
  if (op == RTE_ARP_OP_REQUEST) {
    std::memset(f, 0xff, 6);
  } else {
    std::memcpy(f, target_mac.data(), 6);
  }
  std::memcpy(f + 6, mac_.data(), 6);
  store_be16(f + 12, kEtherArp);
  uint8_t* a = f + kEthHdr;
  store_be16(a + 0, RTE_ARP_HRD_ETHER);
  store_be16(a + 2, kEtherIpv4);
  a[4] = 6;
  a[5] = 4;
  store_be16(a + 6, op);
  std::memcpy(a + 8, mac_.data(), 6);
  store32(a + 14, sender_ip_be);
  if (op != RTE_ARP_OP_REQUEST) std::memcpy(a + 18, target_mac.data(), 6);
  store32(a + 24, target_ip_be);
  m->data_len = kMinFrame;
  m->pkt_len = kMinFrame;
  ps.txq[ps.tx_n] = m;
  ps.txlen[ps.tx_n] = kMinFrame;
  ++ps.tx_n;
  bump(op == RTE_ARP_OP_REQUEST ? c_.arp_requests_tx : c_.arp_replies_tx);
}

void Port::handle_arp(rte_mbuf* m, Endpoint* const* eps, size_t n) noexcept {
  const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
  if (m->data_len < kEthHdr + kArpLen) {
    bump(c_.rx_dropped_bad);
    return;
  }
  const uint8_t* a = f + kEthHdr;
  if (load_be16(a) != RTE_ARP_HRD_ETHER || load_be16(a + 2) != kEtherIpv4 || a[4] != 6 || a[5] != 4) {
    bump(c_.rx_dropped_not_ours);
    return;
  }
  const uint16_t op = load_be16(a + 6);
  if (op == RTE_ARP_OP_REQUEST) {
    bump(c_.arp_requests_rx);
  } else if (op == RTE_ARP_OP_REPLY) {
    bump(c_.arp_replies_rx);
  } else {
    bump(c_.rx_dropped_not_ours);
    return;
  }
  const uint64_t sender_mac = mac_word(a + 8);
  const uint32_t sender_ip = load32(a + 14);
  const uint32_t target_ip = load32(a + 24);

  // Learn: any ARP from an endpoint's peer IP tells its MAC (not for a configured MAC).
  if (sender_ip != 0 && sender_mac != 0 && sender_mac != kBroadcastWord) {
    for (size_t i = 0; i < n; ++i) {
      Endpoint* e = eps[i];
      if (e->static_mac_ || e->peer_ip_be_ != sender_ip) continue;
      const uint64_t w = sender_mac | kMacKnown;
      if (e->peer_mac_.load(std::memory_order_relaxed) != w) e->peer_mac_.store(w, std::memory_order_release);
    }
  }
  if (op == RTE_ARP_OP_REQUEST) {
    for (size_t i = 0; i < n; ++i) {
      if (eps[i]->local_ip_be_ == target_ip) {
        queue_arp(RTE_ARP_OP_REPLY, mac_of(sender_mac), sender_ip, target_ip);
        break;
      }
    }
  }
}

bool Port::process_rx() noexcept {
  rte_mbuf* pkts[kRxBurst];
  const uint16_t nb = ::rte_eth_rx_burst(port_id_, 0, pkts, kRxBurst);
  if (nb == 0) return false;

  auto& ps = *ps_;
  const size_t n_eps = load_endpoints(ps.eps);
  Endpoint* const* eps = ps.eps;

  uint64_t rx_bytes = 0, bad = 0, frag = 0, not_ours = 0, other_mac = 0;
  // Datagrams for one endpoint in a row go to its ring in one enqueue.
  Endpoint* cur = nullptr;
  rte_mbuf* batch[kRxBurst];
  uint32_t batch_n = 0;
  uint64_t batch_bytes = 0;
  Endpoint* got[kRxBurst];
  size_t got_n = 0;

  auto flush = [&] {
    if (batch_n == 0) return;
    const unsigned enq = rte_ring_sp_enqueue_burst(cur->rx_ring_, reinterpret_cast<void* const*>(batch), batch_n, nullptr);
    if (enq < batch_n) {
      for (uint32_t i = enq; i < batch_n; ++i) batch_bytes -= batch[i]->data_len;
      rte_pktmbuf_free_bulk(batch + enq, batch_n - enq);
      bump(cur->rx_dropped_ring_full_, batch_n - enq);
    }
    if (enq > 0) {
      bump(cur->rx_packets_, enq);
      bump(cur->rx_bytes_, batch_bytes);
      if (got_n == 0 || got[got_n - 1] != cur) got[got_n++] = cur;
    }
    batch_n = 0;
    batch_bytes = 0;
  };

  for (uint16_t i = 0; i < nb; ++i) {
    rte_mbuf* m = pkts[i];
    if (i + 1 < nb) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
    rx_bytes += m->pkt_len;
    const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
    const uint32_t len = m->data_len;
    Endpoint* to = nullptr;
    uint32_t payload = 0, cut = 0;

    if (m->nb_segs != 1 || len < kEthHdr) {
      ++bad;  // our pool holds any frame of our MTU in one segment: longer ones are not ours
    } else if (const uint64_t dst = mac_word(f); dst != mac_word_ && dst != kBroadcastWord) {
      ++other_mac;
    } else if (const uint16_t type = load_be16(f + 12); type == kEtherArp) {
      handle_arp(m, eps, n_eps);
    } else if (type != kEtherIpv4) {
      ++not_ours;
    } else if (len < kEthHdr + kIpHdr) {
      ++bad;
    } else {
      const uint8_t* ip = f + kEthHdr;
      const uint32_t ihl = uint32_t{ip[0] & 0x0fu} * 4;
      const uint16_t total = load_be16(ip + 2);
      const uint16_t frag_field = load_be16(ip + 6);
      if ((ip[0] >> 4) != 4 || ihl < kIpHdr || len < kEthHdr + ihl) {
        ++bad;
      } else if (rte_raw_cksum(ip, ihl) != 0xffff) {
        ++bad;  // the header's sum including its checksum field must be all ones
      } else if (total < ihl || kEthHdr + total > len) {
        ++bad;  // a frame may be longer (Ethernet padding), never shorter
      } else if ((frag_field & (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0) {
        ++frag;
      } else if (ip[9] != kProtoUdp) {
        ++not_ours;
      } else if (total < ihl + kUdpHdr) {
        ++bad;
      } else {
        const uint8_t* udp = ip + ihl;
        const uint16_t udp_len = load_be16(udp + 4);
        if (udp_len < kUdpHdr || udp_len > total - ihl) {
          ++bad;
        } else {
          const uint32_t dst_ip = load32(ip + 16);
          const uint16_t dst_port = load16(udp + 2);
          Endpoint* e = nullptr;
          if (cur != nullptr && cur->local_ip_be_ == dst_ip && cur->local_port_be_ == dst_port) {
            e = cur;
          } else {
            for (size_t k = 0; k < n_eps; ++k) {
              if (eps[k]->local_ip_be_ == dst_ip && eps[k]->local_port_be_ == dst_port) {
                e = eps[k];
                break;
              }
            }
          }
          if (e == nullptr || e->peer_ip_be_ != load32(ip + 12) || e->peer_port_be_ != load16(udp)) {
            ++not_ours;
          } else {
            to = e;
            cut = kEthHdr + ihl + kUdpHdr;
            payload = udp_len - kUdpHdr;
          }
        }
      }
    }

    if (to == nullptr) {
      rte_pktmbuf_free(m);
      continue;
    }
    // Cut the mbuf down to the UDP payload: rx_burst hands out data_off..data_len as is.
    (void)rte_pktmbuf_adj(m, static_cast<uint16_t>(cut));
    (void)rte_pktmbuf_trim(m, static_cast<uint16_t>(m->data_len - payload));
    if (to != cur) {
      flush();
      cur = to;
    }
    batch[batch_n++] = m;
    batch_bytes += payload;
  }
  flush();

  if (got_n > 0) {
    // After the enqueues (release); pairs with the fence in Endpoint::arm.
    full_fence();
    for (size_t i = 0; i < got_n; ++i) {
      Endpoint* e = got[i];
      if (e->armed_.load(std::memory_order_relaxed) && e->armed_.exchange(false, std::memory_order_acq_rel)) {
        const uint64_t one = 1;
        (void)!::write(e->efd_, &one, sizeof one);
      }
    }
  }

  bump(c_.rx_packets, nb);
  bump(c_.rx_bytes, rx_bytes);
  if (bad) bump(c_.rx_dropped_bad, bad);
  if (frag) bump(c_.rx_dropped_fragment, frag);
  if (not_ours) bump(c_.rx_dropped_not_ours, not_ours);
  if (other_mac) bump(c_.rx_dropped_other_mac, other_mac);
  return true;
}

void Port::housekeeping(uint64_t now) noexcept {
  auto& ps = *ps_;
  const bool kicked = arp_kick_.load(std::memory_order_relaxed);
  if (!kicked && now < ps.next_housekeeping) return;
  if (kicked) arp_kick_.store(false, std::memory_order_relaxed);
  ps.next_housekeeping = now + ps.housekeeping_interval;

  const size_t n = load_endpoints(ps.eps);
  bool pending = false;
  for (size_t i = 0; i < n; ++i) {
    Endpoint* e = ps.eps[i];
    if (e->static_mac_ || (e->peer_mac_.load(std::memory_order_relaxed) & kMacKnown) != 0) continue;
    pending = true;
    if (now < e->next_arp_tsc_) continue;
    e->next_arp_tsc_ = now + ps.arp_interval;
    // One request per (local IP, peer IP) per round, however many endpoints share the pair.
    bool sent = false;
    for (size_t k = 0; k < i && !sent; ++k) {
      Endpoint* o = ps.eps[k];
      sent = o->next_arp_tsc_ == e->next_arp_tsc_ && o->peer_ip_be_ == e->peer_ip_be_ && o->local_ip_be_ == e->local_ip_be_;
    }
    if (!sent) queue_arp(RTE_ARP_OP_REQUEST, MacAddress{}, e->peer_ip_be_, e->local_ip_be_);
  }
  ps.arp_pending = pending;
}

bool Port::process_tx(uint64_t now, bool link) noexcept {
  auto& ps = *ps_;
  auto push = [&](rte_mbuf* m) {
    if (ps.tx_n == kTxSlots) {
      rte_pktmbuf_free(m);
      bump(c_.tx_dropped);
      return;
    }
    ps.txq[ps.tx_n] = m;
    ps.txlen[ps.tx_n] = m->pkt_len;
    ++ps.tx_n;
  };

  if (ps.held != nullptr && now >= ps.held_deadline) {
    push(ps.held);
    ps.held = nullptr;
  }

  unsigned dequeued = 0;
  const size_t space = kTxSlots - ps.tx_n;
  // With impair one packet may become three (itself, the held one, a duplicate).
  const size_t want = std::min<size_t>(ps.impair ? space / 3 : space, kTxChunk);
  if (want > 0) {
    rte_mbuf* in[kTxChunk];
    dequeued = rte_ring_sc_dequeue_burst(tx_ring_, reinterpret_cast<void**>(in), static_cast<unsigned>(want), nullptr);
    const Impair& im = opt_.impair;
    for (unsigned i = 0; i < dequeued; ++i) {
      rte_mbuf* m = in[i];
      if (!ps.impair) {
        push(m);
        continue;
      }
      if (ps.roll(im.loss_permille)) {
        rte_pktmbuf_free(m);
        bump(c_.impair_lost);
        continue;
      }
      rte_mbuf* copy = nullptr;
      if (ps.roll(im.dup_permille)) {
        copy = rte_pktmbuf_copy(m, pool_, 0, UINT32_MAX);
        if (copy != nullptr) bump(c_.impair_duplicated);
      }
      if (ps.roll(im.corrupt_permille) && m->data_len > kHeaders) {
        const uint64_t bit = ps.next_random() % (uint64_t{m->data_len - kHeaders} * 8);
        uint8_t* p = rte_pktmbuf_mtod_offset(m, uint8_t*, kHeaders + bit / 8);
        *p = static_cast<uint8_t>(*p ^ (1u << (bit % 8)));
        bump(c_.impair_corrupted);
      }
      if (ps.held != nullptr) {
        push(m);
        push(ps.held);
        ps.held = nullptr;
      } else if (ps.roll(im.reorder_permille)) {
        ps.held = m;
        ps.held_deadline = now + ps.hold_cycles;
        bump(c_.impair_reordered);
      } else {
        push(m);
      }
      if (copy != nullptr) push(copy);
    }
  }

  if (ps.tx_n == 0) return dequeued > 0;
  const uint16_t sent = link ? ::rte_eth_tx_burst(port_id_, 0, ps.txq, static_cast<uint16_t>(ps.tx_n)) : 0;
  if (sent > 0 || ps.stuck_rounds == 0) ps.stuck_since = now;
  if (sent > 0) {
    uint64_t bytes = 0;
    for (uint16_t i = 0; i < sent; ++i) bytes += ps.txlen[i];
    bump(c_.tx_packets, sent);
    bump(c_.tx_bytes, bytes);
    const size_t left = ps.tx_n - sent;
    std::memmove(ps.txq, ps.txq + sent, left * sizeof(ps.txq[0]));
    std::memmove(ps.txlen, ps.txlen + sent, left * sizeof(ps.txlen[0]));
    ps.tx_n = left;
    ps.stuck_rounds = 0;
  } else if (++ps.stuck_rounds > kTxStuckRounds && now - ps.stuck_since > ps.stuck_cycles) {
    rte_pktmbuf_free_bulk(ps.txq, static_cast<unsigned>(ps.tx_n));
    bump(c_.tx_dropped, ps.tx_n);
    ps.tx_n = 0;
    ps.stuck_rounds = 0;
  }
  return sent > 0 || dequeued > 0;
}

void Port::sleep_once(uint64_t now) noexcept {
  auto& ps = *ps_;
  poll_sleeping_.store(true, std::memory_order_relaxed);
  // Pairs with the fence in wake_if_sleeping: either Endpoint::tx sees the flag, or we see its
  // packets here.
  full_fence();
  if (rte_ring_empty(tx_ring_) == 0 || arp_kick_.load(std::memory_order_relaxed) || stop_.load(std::memory_order_relaxed)) {
    poll_sleeping_.store(false, std::memory_order_relaxed);
    return;
  }
  uint64_t timeout_ns = ps.sleep_ns;
  if (ps.held != nullptr) timeout_ns = std::min(timeout_ns, ps.held_deadline > now ? ps.cycles_to_ns(ps.held_deadline - now) : 0);
  if (ps.arp_pending) {
    timeout_ns = std::min(timeout_ns, ps.next_housekeeping > now ? ps.cycles_to_ns(ps.next_housekeeping - now) : 0);
  }
  if (rx_intr_fd_ >= 0) (void)::rte_eth_dev_rx_intr_enable(port_id_, 0);

  epoll_event ev[2];
  timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
  int n = ::epoll_pwait2(epoll_fd_, ev, 2, &ts, nullptr);
  if (n < 0 && errno == ENOSYS) {  // kernel before 5.11: millisecond timeouts
    n = ::epoll_wait(epoll_fd_, ev, 2, static_cast<int>((timeout_ns + 999999) / 1000000));
  }
  poll_sleeping_.store(false, std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) {
    uint64_t v;
    if (ev[i].data.u32 == 0) {
      (void)!::read(wake_fd_, &v, sizeof v);
    } else {
      (void)!::read(rx_intr_fd_, &v, sizeof v);  // the PMD's interrupt eventfd: readable, so no wait
    }
  }
  if (rx_intr_fd_ >= 0) (void)::rte_eth_dev_rx_intr_disable(port_id_, 0);
  bump(c_.sleeps);
  ps.sleep_ns = std::min(ps.sleep_ns * 2, ps.sleep_max_ns);
}

bool Port::link_ok() const noexcept {
  if (!check_link_) return true;
  // memif's link_update does nothing in a primary process: this reads the status its interrupt
  // thread keeps (set down before it unmaps the rings).
  rte_eth_link link;
  if (::rte_eth_link_get_nowait(port_id_, &link) != 0) return false;
  return link.link_status == RTE_ETH_LINK_UP;
}

void Port::restart_if_down(uint64_t now) noexcept {
  auto& ps = *ps_;
  if (ps.down_since == 0) {
    ps.down_since = now;
    return;
  }
  if (now - ps.down_since < ps.hz * opt_.restart_down_ms / 1000) return;
  // This thread owns the queues, so it may stop and start the device between bursts. A memif
  // client connects again at start (and fails quietly while its server is not there yet).
  (void)::rte_eth_dev_stop(port_id_);
  (void)::rte_eth_dev_start(port_id_);
  bump(c_.restarts);
  ps.down_since = rte_rdtsc();
}

void Port::stop() {
  if (is_inline() && ps_ && !stop_.exchange(true)) {
    // What Endpoint::tx queued still leaves, as the poll thread does when it stops.
    auto& ps = *ps_;
    const uint64_t flush_end = rte_rdtsc() + ps.hz * kStopFlushMs / 1000;
    for (uint64_t now = rte_rdtsc(); now < flush_end; now = rte_rdtsc()) {
      ps.held_deadline = 0;
      (void)process_tx(now, link_ok());
      if (ps.tx_n == 0 && ps.held == nullptr && rte_ring_empty(tx_ring_) != 0) break;
    }
    return;
  }
  if (!thread_running_) return;
  stop_.store(true, std::memory_order_relaxed);
  wake_poll_thread();
  thread_.join();
  thread_running_ = false;
}

bool Port::poll_round(uint64_t now) noexcept {
  auto& ps = *ps_;
  ps.eps_loaded = false;
  const bool link = link_ok();
  if (!link && opt_.restart_down_ms != 0) restart_if_down(now);
  if (link) ps.down_since = 0;
  bool work = link && process_rx();
  housekeeping(now);
  work = process_tx(now, link) || work;
  c_.polls.store(++ps.polls, std::memory_order_relaxed);
  return work;
}

bool Port::poll() noexcept {
  if (!is_inline() || !ps_) return false;
  return poll_round(rte_rdtsc());
}

void Port::poll_loop() {
  auto& ps = *ps_;
  const bool adaptive = opt_.idle == PortOptions::Idle::Adaptive;
  ps.last_work = rte_rdtsc();
  uint64_t q = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    quiescent_.store(++q, std::memory_order_seq_cst);  // see detach()
    const uint64_t now = rte_rdtsc();
    const bool work = poll_round(now);
    if (work) {
      ps.last_work = now;
      ps.sleep_ns = std::min<uint64_t>(1000, ps.sleep_max_ns);
      continue;
    }
    if (!adaptive) continue;
    if (now - ps.last_work < ps.spin_cycles) {
      rte_pause();
      continue;
    }
    sleep_once(now);
  }

  // Stopping: what Endpoint::tx queued still leaves (for at most kStopFlushMs: a dead link must
  // not hold up the stop); nothing is received any more.
  const uint64_t flush_end = rte_rdtsc() + ps.hz * kStopFlushMs / 1000;
  for (uint64_t now = rte_rdtsc(); now < flush_end; now = rte_rdtsc()) {
    ps.held_deadline = 0;  // a reordered packet goes now
    (void)process_tx(now, link_ok());
    if (ps.tx_n == 0 && ps.held == nullptr && rte_ring_empty(tx_ring_) != 0) break;
  }
}

}  // namespace bus::dpdk
