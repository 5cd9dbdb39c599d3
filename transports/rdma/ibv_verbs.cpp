#include "rdma/ibv_verbs.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <rdma/rdma_cma.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string_view>

namespace bus::rdma {

namespace {
constexpr int kResolveMs = 2000;

std::string cat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (auto p : parts) s.append(p);
  return s;
}

std::string errno_text(int e) {
  std::string s = std::strerror(e);
  s += " (errno ";
  s += std::to_string(e);
  if (const char* n = strerrorname_np(e); n != nullptr) {
    s += ", ";
    s += n;
  }
  s += ")";
  return s;
}

// Why a call failed, with a hint when the machine has no RDMA at all.
Error sys_fail(std::string_view what, int e) {
  std::string m = cat({what, ": ", errno_text(e)});
  if (const std::string p = device_problem(); !p.empty()) {
    m += "; ";
    m += p;
  }
  return Error(Errc::System, m);
}

bool set_nonblock(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

std::string address_text(const sockaddr* a) {
  if (a == nullptr) return "?";
  char buf[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (a->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(a);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    port = ntohs(in->sin_port);
  } else if (a->sa_family == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(a);
    ::inet_ntop(AF_INET6, &in->sin6_addr, buf, sizeof buf);
    port = ntohs(in->sin6_port);
  }
  return cat({buf, ":", std::to_string(port)});
}

// host:port to an address (names through getaddrinfo, which may block: set-up only).
Expected<sockaddr_storage> resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const std::string svc = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), svc.c_str(), &hints, &res); rc != 0) {
    return fail(Errc::InvalidArgument, cat({"cannot resolve '", host, "': ", ::gai_strerror(rc)}));
  }
  sockaddr_storage s{};
  std::memcpy(&s, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  return s;
}

// The host part of an address ("10.0.0.1", "fe80::1").
std::string host_text(const sockaddr* a) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (a != nullptr && a->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, buf, sizeof buf);
  } else if (a != nullptr && a->sa_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

bool gid_zero(const ibv_gid& g) {
  return std::all_of(std::begin(g.raw), std::end(g.raw), [](uint8_t b) { return b == 0; });
}

bool same_gid(const ibv_gid& a, const ibv_gid& b) { return std::memcmp(a.raw, b.raw, sizeof a.raw) == 0; }

std::string gid_text(const ibv_gid& g) {
  char buf[INET6_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET6, g.raw, buf, sizeof buf);
  return buf;
}

// The IPv4 address a RoCE GID stands for (IPv4-mapped: ::ffff:a.b.c.d), else "".
std::string mapped_ipv4(const ibv_gid& g) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(g.raw, kPrefix, sizeof kPrefix) != 0) return {};
  char buf[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, g.raw + 12, buf, sizeof buf);
  return buf;
}

rdma_conn_param conn_param(const std::array<std::byte, kWindowBytes>& w) {
  rdma_conn_param p{};
  p.private_data = w.data();
  p.private_data_len = static_cast<uint8_t>(w.size());
  p.responder_resources = 1;  // no RDMA READ is used; one is harmless
  p.initiator_depth = 1;
  p.retry_count = 7;
  p.rnr_retry_count = 7;      // credits make receiver-not-ready impossible; never give up on it
  return p;
}
}  // namespace

// ---------------------------------------------------------------- devices

std::string device_problem() {
  errno = 0;
  int n = 0;
  ibv_device** list = ::ibv_get_device_list(&n);
  if (list == nullptr) {
    const int e = errno;
    std::string m = cat({"ibv_get_device_list: ", errno_text(e)});
    if (e == ENOSYS) m += ": this kernel has no RDMA (InfiniBand) support, so no verbs device can exist";
    return m;
  }
  ::ibv_free_device_list(list);
  if (n == 0) return "no RDMA device: ibv_get_device_list() lists none (load a driver, or add Soft-RoCE: rdma link add rxe0 type rxe netdev eth0)";
  return {};
}

std::vector<std::string> device_names() {
  std::vector<std::string> names;
  int n = 0;
  ibv_device** list = ::ibv_get_device_list(&n);
  if (list == nullptr) return names;
  for (int i = 0; i < n; ++i) names.emplace_back(::ibv_get_device_name(list[i]));
  ::ibv_free_device_list(list);
  return names;
}

std::string default_address() {
  if (const char* a = std::getenv("BUS_RDMA_ADDR"); a != nullptr && *a != '\0') return a;
  std::string out = "127.0.0.1";
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    if (::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf) == nullptr) {
      continue;
    }
    if (std::string_view(buf).starts_with("127.")) continue;
    out = buf;
    break;
  }
  ::freeifaddrs(ifs);
  return out;
}

// ---------------------------------------------------------------- port and GID checks

std::string check_resolved(const Options& o, const Resolved& r, const std::string& who) {
  const bool port_set = o.ib_port != 0;
  const bool gid_set = o.gid_index >= 0;
  if (!port_set && !gid_set) return {};
  // Where the source GID sits in the port's table (RoCE: once per RoCE version).
  std::vector<size_t> at;
  if (!gid_zero(r.sgid)) {
    for (size_t i = 0; i < r.gids.size(); ++i) {
      if (same_gid(r.gids[i], r.sgid)) at.push_back(i);
    }
  }
  const bool port_ok = !port_set || r.port == o.ib_port;
  const auto want = static_cast<size_t>(gid_set ? o.gid_index : 0);
  const bool gid_ok = !gid_set || std::find(at.begin(), at.end(), want) != at.end();
  if (port_ok && gid_ok) return {};

  // What rdma_cm chose.
  std::string m = who;
  m += ": rdma_cm resolved local ";
  m += r.local.empty() ? std::string("(any)") : r.local;
  m += " to ";
  m += r.device;
  m += " port ";
  m += std::to_string(r.port);
  if (gid_zero(r.sgid)) {
    m += " with no source GID (an iWARP device has none to check)";
  } else if (at.empty()) {
    m += " GID ";
    m += gid_text(r.sgid);
    m += " (not in that port's GID table of ";
    m += std::to_string(r.gids.size());
    m += " entries)";
  } else {
    m += at.size() == 1 ? " GID index " : " GID indices ";
    for (size_t i = 0; i < at.size(); ++i) {
      if (i > 0) m += i + 1 == at.size() ? " and " : ", ";
      m += std::to_string(at[i]);
    }
  }
  // What the config says, and what to do.
  if (!port_ok) {
    m += ", the config says ib_port = ";
    m += std::to_string(o.ib_port);
    m += ": set local to an address of the interface on port ";
    m += std::to_string(o.ib_port);
    m += " (or ib_port = 0 to take the port rdma_cm resolves)";
    return m;
  }
  m += ", the config says gid_index = ";
  m += std::to_string(o.gid_index);
  if (want >= r.gids.size()) {
    m += ", but that port's GID table has ";
    m += std::to_string(r.gids.size());
    m += " entries";
    if (!r.gids.empty()) {
      m += " (0..";
      m += std::to_string(r.gids.size() - 1);
      m += ")";
    }
    return m;
  }
  const ibv_gid& there = r.gids[want];
  if (gid_zero(there)) {
    m += ", an empty entry of that port's GID table: set local to an address whose GID the port lists, or "
         "gid_index = -1";
    return m;
  }
  m += ": set local to the address whose GID is at index ";
  m += std::to_string(want);
  const std::string v4 = mapped_ipv4(there);
  m += " (";
  m += v4.empty() ? "GID " + gid_text(there) : v4;
  m += ")";
  return m;
}

// ---------------------------------------------------------------- IbvConnection

IbvConnection::IbvConnection(const Options& o, std::string peer) : o_(o), peer_name_(std::move(peer)) {}

IbvConnection::~IbvConnection() {
  if (id_ != nullptr && connected_) ::rdma_disconnect(id_);
  if (id_ != nullptr && qp_) ::rdma_destroy_qp(id_);
  if (cq_ != nullptr) {
    if (unacked_events_ > 0) ::ibv_ack_cq_events(cq_, unacked_events_);
    ::ibv_destroy_cq(cq_);
  }
  if (comp_ != nullptr) ::ibv_destroy_comp_channel(comp_);
  for (Block& b : blocks_) {
    if (b.mr != nullptr) ::ibv_dereg_mr(b.mr);
    std::free(b.mem);
  }
  if (pd_ != nullptr) ::ibv_dealloc_pd(pd_);
  if (id_ != nullptr) ::rdma_destroy_id(id_);
  if (ch_ != nullptr) ::rdma_destroy_event_channel(ch_);
  if (epfd_ >= 0) ::close(epfd_);
}

Expected<void> IbvConnection::open_channel() {
  ch_ = ::rdma_create_event_channel();
  if (ch_ == nullptr) return tl::unexpected(sys_fail("rdma_create_event_channel", errno));
  if (!set_nonblock(ch_->fd)) return tl::unexpected(sys_fail("rdma event channel O_NONBLOCK", errno));
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return tl::unexpected(sys_fail("epoll_create1", errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = ch_->fd;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, ch_->fd, &ev) != 0) return tl::unexpected(sys_fail("epoll_ctl", errno));
  return {};
}

Expected<std::unique_ptr<IbvConnection>> IbvConnection::dial(const std::string& host, uint16_t port, const Options& o,
                                                             const std::string& bind) {
  if (auto ok = check(o); !ok) return tl::unexpected(ok.error());
  auto dst = resolve(host, port, false);
  if (!dst) return tl::unexpected(dst.error());
  std::unique_ptr<IbvConnection> c(new IbvConnection(o, cat({host, ":", std::to_string(port)})));
  if (auto ok = c->open_channel(); !ok) return tl::unexpected(ok.error());
  if (::rdma_create_id(c->ch_, &c->id_, c.get(), RDMA_PS_TCP) != 0) {
    c->id_ = nullptr;
    return tl::unexpected(sys_fail("rdma_create_id", errno));
  }
  sockaddr_storage src{};
  const bool has_src = !bind.empty();
  if (has_src) {
    auto s = resolve(bind, 0, true);
    if (!s) return tl::unexpected(s.error());
    src = *s;
  }
  if (::rdma_resolve_addr(c->id_, has_src ? reinterpret_cast<sockaddr*>(&src) : nullptr, reinterpret_cast<sockaddr*>(&*dst),
                          kResolveMs) != 0) {
    return tl::unexpected(sys_fail(cat({"rdma_resolve_addr ", host}), errno));
  }
  return c;
}

std::string IbvConnection::verify_resolved(const std::string& who) const {
  if (o_.ib_port == 0 && o_.gid_index < 0) return {};
  ibv_context* ctx = id_->verbs;
  if (ctx == nullptr) return cat({who, ": rdma_cm bound the connection to no device"});
  Resolved r;
  r.device = ::ibv_get_device_name(ctx->device);
  r.port = id_->port_num;
  r.sgid = id_->route.addr.addr.ibaddr.sgid;
  r.local = host_text(::rdma_get_local_addr(id_));
  ibv_port_attr pa{};
  if (::ibv_query_port(ctx, id_->port_num, &pa) != 0) {
    return cat({who, ": ibv_query_port ", r.device, " port ", std::to_string(r.port), ": ", errno_text(errno)});
  }
  r.gids.resize(static_cast<size_t>(std::max(pa.gid_tbl_len, 0)));
  for (size_t i = 0; i < r.gids.size(); ++i) {
    // An entry that cannot be read (unused RoCE slots may fail) counts as empty.
    if (::ibv_query_gid(ctx, id_->port_num, static_cast<int>(i), &r.gids[i]) != 0) r.gids[i] = ibv_gid{};
  }
  return check_resolved(o_, r, who);
}

void IbvConnection::down(std::string why) {
  if (state_ == ConnState::Down) return;
  state_ = ConnState::Down;
  error_ = std::move(why);
}

std::array<std::byte, kWindowBytes> IbvConnection::own_window() const {
  Window mine;
  mine.ring_addr = reinterpret_cast<uintptr_t>(inbound_.addr);
  mine.rkey = inbound_.rkey;
  mine.ring_bytes = o_.ring_bytes;
  mine.credit_addr = mine.ring_addr + o_.ring_bytes;
  mine.credit_slots = o_.recv_depth;
  mine.max_frame = o_.max_frame;
  std::array<std::byte, kWindowBytes> w{};
  encode_window(mine, w.data());
  return w;
}

Expected<void> IbvConnection::create_resources() {
  ibv_context* ctx = id_->verbs;
  if (ctx == nullptr) return fail(Errc::System, "rdma_cm bound the connection to no device");
  device_ = cat({::ibv_get_device_name(ctx->device), " port ", std::to_string(id_->port_num)});
  pd_ = ::ibv_alloc_pd(ctx);
  if (pd_ == nullptr) return tl::unexpected(sys_fail("ibv_alloc_pd", errno));
  comp_ = ::ibv_create_comp_channel(ctx);
  if (comp_ == nullptr) return tl::unexpected(sys_fail("ibv_create_comp_channel", errno));
  if (!set_nonblock(comp_->fd)) return tl::unexpected(sys_fail("completion channel O_NONBLOCK", errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = comp_->fd;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, comp_->fd, &ev) != 0) return tl::unexpected(sys_fail("epoll_ctl", errno));
  const int want_cqe = static_cast<int>(o_.send_depth + o_.recv_depth);
  cq_ = ::ibv_create_cq(ctx, want_cqe, nullptr, comp_, 0);
  if (cq_ == nullptr) return tl::unexpected(sys_fail("ibv_create_cq", errno));

  ibv_qp_init_attr qa{};
  qa.send_cq = cq_;
  qa.recv_cq = cq_;
  qa.qp_type = IBV_QPT_RC;
  qa.sq_sig_all = 0;  // selective signaling
  qa.cap.max_send_wr = o_.send_depth;
  qa.cap.max_recv_wr = o_.recv_depth;
  qa.cap.max_send_sge = 1;
  qa.cap.max_recv_sge = 1;
  qa.cap.max_inline_data = o_.inline_bytes;
  if (::rdma_create_qp(id_, pd_, &qa) != 0) {
    // Some devices refuse inline data of that size: ask for none rather than fail.
    const int e = errno;
    qa.cap.max_inline_data = 0;
    if (o_.inline_bytes == 0 || ::rdma_create_qp(id_, pd_, &qa) != 0) return tl::unexpected(sys_fail("rdma_create_qp", e));
  }
  qp_ = true;
  ibv_port_attr pa{};
  if (::ibv_query_port(ctx, id_->port_num, &pa) != 0) return tl::unexpected(sys_fail("ibv_query_port", errno));
  // The CQ was sized for o_.send_depth: more send WRs than that must not be outstanding.
  lim_.max_send_wr = std::min(qa.cap.max_send_wr, o_.send_depth);
  lim_.max_recv_wr = qa.cap.max_recv_wr;
  lim_.cq_depth = static_cast<uint32_t>(cq_->cqe);
  lim_.max_inline = qa.cap.max_inline_data;
  lim_.max_msg = pa.max_msg_sz;

  // The inbound region: the ring, then the credit slots; the peer writes both.
  const size_t len = size_t{o_.ring_bytes} + size_t{o_.recv_depth} * kCreditBytes;
  Block b;
  if (::posix_memalign(&b.mem, 4096, len) != 0) return fail(Errc::LimitReached, "cannot allocate the RDMA ring");
  std::memset(b.mem, 0, len);
  b.mr = ::ibv_reg_mr(pd_, b.mem, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (b.mr == nullptr) {
    const int e = errno;
    std::free(b.mem);
    return tl::unexpected(sys_fail(cat({"ibv_reg_mr of ", std::to_string(len), " bytes (RLIMIT_MEMLOCK?)"}), e));
  }
  blocks_.push_back(b);
  inbound_ = {static_cast<std::byte*>(b.mem), len, b.mr->lkey, b.mr->rkey};
  return {};
}

Expected<Region> IbvConnection::register_local(size_t bytes) {
  if (pd_ == nullptr) return fail(Errc::InvalidArgument, "register_local before the connection is up");
  Block b;
  if (::posix_memalign(&b.mem, 4096, bytes) != 0) return fail(Errc::LimitReached, "cannot allocate the RDMA staging area");
  std::memset(b.mem, 0, bytes);
  b.mr = ::ibv_reg_mr(pd_, b.mem, bytes, int{IBV_ACCESS_LOCAL_WRITE});  // int: the macro mixes enum types (clang)
  if (b.mr == nullptr) {
    const int e = errno;
    std::free(b.mem);
    return tl::unexpected(sys_fail(cat({"ibv_reg_mr of ", std::to_string(bytes), " bytes (RLIMIT_MEMLOCK?)"}), e));
  }
  blocks_.push_back(b);
  return Region{static_cast<std::byte*>(b.mem), bytes, b.mr->lkey, 0};
}

void IbvConnection::handle_event(int event, int status, const void* pdata, size_t plen) {
  const auto type = static_cast<rdma_cm_event_type>(event);
  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: {
      // ib_port / gid_index: check where rdma_cm resolved the local address before using it.
      if (std::string why = verify_resolved(cat({"rdma link to ", peer_name_})); !why.empty()) {
        down(std::move(why));
        return;
      }
      if (auto ok = create_resources(); !ok) {
        down(cat({"rdma connect to ", peer_name_, ": ", ok.error().message()}));
        return;
      }
      if (::rdma_resolve_route(id_, kResolveMs) != 0) down(cat({"rdma_resolve_route to ", peer_name_, ": ", errno_text(errno)}));
      return;
    }
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
      const std::array<std::byte, kWindowBytes> w = own_window();
      rdma_conn_param p = conn_param(w);
      if (::rdma_connect(id_, &p) != 0) down(cat({"rdma_connect to ", peer_name_, ": ", errno_text(errno)}));
      return;
    }
    case RDMA_CM_EVENT_ESTABLISHED: {
      if (!have_peer_) {  // the active side: the peer's window came with its reply
        auto w = decode_window(pdata, plen);
        if (!w) {
          down(cat({"rdma connect to ", peer_name_, ": ", w.error().message()}));
          return;
        }
        peer_ = *w;
        have_peer_ = true;
      }
      connected_ = true;
      state_ = ConnState::Up;
      return;
    }
    case RDMA_CM_EVENT_DISCONNECTED:
      connected_ = false;
      down(cat({"RDMA_CM_EVENT_DISCONNECTED: ", peer_name_, " disconnected"}));
      return;
    case RDMA_CM_EVENT_REJECTED:
      down(cat({"rdma connect to ", peer_name_, " rejected (status ", std::to_string(status),
                "): nobody listens there, or it refused the connection"}));
      return;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_CONNECT_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
      down(cat({"rdma connection with ", peer_name_, ": ", ::rdma_event_str(type), " (status ", std::to_string(status), ")"}));
      return;
    default:
      return;  // TIMEWAIT_EXIT, ADDR_CHANGE, ...: nothing to do
  }
}

ConnState IbvConnection::progress() {
  while (state_ != ConnState::Down && ch_ != nullptr) {
    rdma_cm_event* ev = nullptr;
    if (::rdma_get_cm_event(ch_, &ev) != 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) down(cat({"rdma_get_cm_event: ", errno_text(errno)}));
      break;
    }
    // Copy what is needed, then acknowledge at once (rdma_destroy_id waits for every ack).
    const int event = ev->event;
    const int status = ev->status;
    std::array<std::byte, 256> pdata{};
    const size_t plen = std::min<size_t>(ev->param.conn.private_data_len, pdata.size());
    if (ev->param.conn.private_data != nullptr && plen > 0) std::memcpy(pdata.data(), ev->param.conn.private_data, plen);
    ::rdma_ack_cm_event(ev);
    handle_event(event, status, plen > 0 ? pdata.data() : nullptr, plen);
  }
  return state_;
}

void IbvConnection::disconnect() noexcept {
  if (id_ != nullptr && connected_) ::rdma_disconnect(id_);  // the QP flushes; the peer sees DISCONNECTED
  connected_ = false;
  if (state_ != ConnState::Down) {
    state_ = ConnState::Down;
    if (error_.empty()) error_ = "disconnected by this side";
  }
}

int IbvConnection::post_send(ibv_send_wr* wr, ibv_send_wr** bad) noexcept {
  return ::ibv_post_send(id_->qp, wr, bad);
}

int IbvConnection::post_recv(ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept {
  return ::ibv_post_recv(id_->qp, wr, bad);
}

int IbvConnection::poll_cq(int n, ibv_wc* wc) noexcept { return cq_ != nullptr ? ::ibv_poll_cq(cq_, n, wc) : 0; }

void IbvConnection::arm() noexcept {
  if (cq_ != nullptr) ::ibv_req_notify_cq(cq_, 0);
}

void IbvConnection::disarm() noexcept {
  if (comp_ == nullptr) return;
  ibv_cq* cq = nullptr;
  void* ctx = nullptr;
  while (::ibv_get_cq_event(comp_, &cq, &ctx) == 0) ++unacked_events_;  // non-blocking channel
  if (unacked_events_ > 0) {
    ::ibv_ack_cq_events(cq_, unacked_events_);
    unacked_events_ = 0;
  }
}

// ---------------------------------------------------------------- IbvListener

IbvListener::IbvListener(IbvListener&& o) noexcept : o_(o.o_), ch_(o.ch_), id_(o.id_), port_(o.port_) {
  o.ch_ = nullptr;
  o.id_ = nullptr;
}

IbvListener& IbvListener::operator=(IbvListener&& o) noexcept {
  if (this != &o) {
    if (id_ != nullptr) ::rdma_destroy_id(id_);
    if (ch_ != nullptr) ::rdma_destroy_event_channel(ch_);
    o_ = o.o_;
    ch_ = o.ch_;
    id_ = o.id_;
    port_ = o.port_;
    o.ch_ = nullptr;
    o.id_ = nullptr;
  }
  return *this;
}

IbvListener::~IbvListener() {
  if (id_ != nullptr) ::rdma_destroy_id(id_);
  if (ch_ != nullptr) ::rdma_destroy_event_channel(ch_);
  id_ = nullptr;
  ch_ = nullptr;
}

int IbvListener::fd() const noexcept { return ch_ != nullptr ? ch_->fd : -1; }

Expected<IbvListener> IbvListener::listen(const std::string& addr, uint16_t port, const Options& o) {
  if (auto ok = check(o); !ok) return tl::unexpected(ok.error());
  auto a = resolve(addr, port, true);
  if (!a) return tl::unexpected(a.error());
  IbvListener l;
  l.o_ = o;
  l.ch_ = ::rdma_create_event_channel();
  if (l.ch_ == nullptr) return tl::unexpected(sys_fail("rdma_create_event_channel", errno));
  if (!set_nonblock(l.ch_->fd)) return tl::unexpected(sys_fail("rdma event channel O_NONBLOCK", errno));
  if (::rdma_create_id(l.ch_, &l.id_, nullptr, RDMA_PS_TCP) != 0) {
    l.id_ = nullptr;
    return tl::unexpected(sys_fail("rdma_create_id", errno));
  }
  if (::rdma_bind_addr(l.id_, reinterpret_cast<sockaddr*>(&*a)) != 0) {
    return tl::unexpected(sys_fail(cat({"rdma_bind_addr ", addr, ":", std::to_string(port), " (an address of an RDMA interface?)"}), errno));
  }
  if (::rdma_listen(l.id_, 16) != 0) return tl::unexpected(sys_fail("rdma_listen", errno));
  l.port_ = ntohs(::rdma_get_src_port(l.id_));
  return l;
}

Expected<std::unique_ptr<IbvConnection>> IbvListener::accept() {
  if (ch_ == nullptr) return fail(Errc::Closed, "the RDMA listener is closed");
  rdma_cm_event* ev = nullptr;
  if (::rdma_get_cm_event(ch_, &ev) != 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return fail(Errc::WouldBlock);
    return tl::unexpected(sys_fail("rdma_get_cm_event", errno));
  }
  const auto type = ev->event;
  rdma_cm_id* child = ev->id;
  std::array<std::byte, 256> pdata{};
  const size_t plen = std::min<size_t>(ev->param.conn.private_data_len, pdata.size());
  if (ev->param.conn.private_data != nullptr && plen > 0) std::memcpy(pdata.data(), ev->param.conn.private_data, plen);
  ::rdma_ack_cm_event(ev);
  if (type != RDMA_CM_EVENT_CONNECT_REQUEST) {
    if (type == RDMA_CM_EVENT_DEVICE_REMOVAL) return fail(Errc::Closed, "the RDMA device of the listener was removed");
    return fail(Errc::WouldBlock);
  }
  std::unique_ptr<IbvConnection> c(new IbvConnection(o_, address_text(::rdma_get_peer_addr(child))));
  c->id_ = child;  // owned from here: destroyed with the connection (a rejected one too)
  child->context = c.get();
  auto refuse = [&](Error e) -> Expected<std::unique_ptr<IbvConnection>> {
    ::rdma_reject(child, nullptr, 0);
    return tl::unexpected(e.context(cat({"rdma connection from ", c->peer_name_})));
  };
  auto w = decode_window(plen > 0 ? pdata.data() : nullptr, plen);
  if (!w) return refuse(w.error());
  // The listener's ib_port / gid_index against where rdma_cm put this connection.
  if (std::string why = c->verify_resolved(cat({"rdma connection from ", c->peer_name_})); !why.empty()) {
    ::rdma_reject(child, nullptr, 0);
    return fail(Errc::InvalidArgument, why);
  }
  c->peer_ = *w;
  c->have_peer_ = true;
  if (auto ok = c->open_channel(); !ok) return refuse(ok.error());
  // The connection's own events (ESTABLISHED, DISCONNECTED) go to its own channel.
  if (::rdma_migrate_id(child, c->ch_) != 0) return refuse(sys_fail("rdma_migrate_id", errno));
  if (auto ok = c->create_resources(); !ok) return refuse(ok.error());
  const std::array<std::byte, kWindowBytes> mine = c->own_window();
  rdma_conn_param p = conn_param(mine);
  if (::rdma_accept(child, &p) != 0) return tl::unexpected(sys_fail("rdma_accept", errno));
  return c;
}

}  // namespace bus::rdma
