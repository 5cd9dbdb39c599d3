// The real verbs: one RC queue pair per connection over libibverbs, connected with librdmacm
// (InfiniBand, RoCE, Soft-RoCE alike). Set-up (address and route resolution, the queue pair,
// the completion queue and its channel, memory registration, the window exchange in the
// connect private data) happens in progress() as rdma_cm events arrive on a non-blocking
// event channel; the data path is ibv_post_send / ibv_post_recv / ibv_poll_cq passed through.
//
// wait_fd() is an epoll descriptor over the rdma_cm event channel and the CQ's completion
// channel, so that busd's poll loop sleeps on one descriptor per link.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rdma/verbs.hpp"

struct rdma_cm_id;
struct rdma_event_channel;

namespace bus::rdma {

/// "" when ibv_get_device_list() lists at least one device; otherwise why there is none, e.g.
/// "ibv_get_device_list: Function not implemented (errno 38, ENOSYS): this kernel has no RDMA
/// (InfiniBand) support" or "no RDMA device: ibv_get_device_list() lists none".
[[nodiscard]] std::string device_problem();
/// The names ibv_get_device_list() lists (empty when none or on error).
[[nodiscard]] std::vector<std::string> device_names();
/// The address an RDMA link on this host uses when none is given (tests, busbench): $BUS_RDMA_ADDR,
/// else the first non-loopback IPv4 address of this host (rdma_cm finds the device behind it;
/// Soft-RoCE sits on an ordinary interface), else 127.0.0.1.
[[nodiscard]] std::string default_address();

/// What rdma_cm resolved a connection's local address to (after RDMA_CM_EVENT_ADDR_RESOLVED on
/// the dialing side, with the CONNECT_REQUEST on the accepting side): the device, the cm_id's
/// port_num, that port's GID table (ibv_query_port's gid_tbl_len entries read with
/// ibv_query_gid; an entry that cannot be read is all zero) and the source GID the connection
/// uses (cm_id->route.addr.addr.ibaddr.sgid).
struct Resolved {
  std::string device;        // "rxe0", "mlx5_0"
  uint32_t port = 0;
  std::vector<ibv_gid> gids;
  ibv_gid sgid{};
  std::string local;         // the local address rdma_cm resolved ("10.0.0.1"), for the message
};
/// Whether Options::ib_port and Options::gid_index agree with what rdma_cm resolved: "" when
/// they do (or are 0 / -1: not checked), else one line for the log, naming what rdma_cm chose:
/// "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID index 1,
/// the config says gid_index = 3: set local to the address whose GID is at index 3 (10.0.0.3)".
/// `who` opens the line ("rdma link to 10.0.0.2:7471"). The source GID may sit at several
/// indices (RoCE lists each address once per RoCE version): any of them matches gid_index.
/// Pure: no verbs call (unit-tested without a device).
[[nodiscard]] std::string check_resolved(const Options& o, const Resolved& r, const std::string& who);

class IbvConnection final : public Verbs {
 public:
  /// Starts connecting to host:port (numeric or a name; the address of the peer's RDMA
  /// interface), optionally from the local address `bind` ("" = any). Non-blocking: call
  /// progress() until it is Up or Down.
  [[nodiscard]] static Expected<std::unique_ptr<IbvConnection>> dial(const std::string& host, uint16_t port,
                                                                    const Options& o, const std::string& bind = {});
  ~IbvConnection() override;
  IbvConnection(const IbvConnection&) = delete;
  IbvConnection& operator=(const IbvConnection&) = delete;

  ConnState progress() override;
  [[nodiscard]] const std::string& error() const noexcept override { return error_; }
  [[nodiscard]] const Limits& limits() const noexcept override { return lim_; }
  [[nodiscard]] const Region& inbound() const noexcept override { return inbound_; }
  [[nodiscard]] const Window& peer() const noexcept override { return peer_; }
  [[nodiscard]] Expected<Region> register_local(size_t bytes) override;
  void disconnect() noexcept override;
  int post_send(ibv_send_wr* wr, ibv_send_wr** bad) noexcept override;
  int post_recv(ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept override;
  int poll_cq(int n, ibv_wc* wc) noexcept override;
  [[nodiscard]] int wait_fd() const noexcept override { return epfd_; }
  void arm() noexcept override;
  void disarm() noexcept override;

  /// "mlx5_0 port 1" once the address is resolved.
  [[nodiscard]] const std::string& device() const noexcept { return device_; }
  /// The peer's address ("10.0.0.2:41234"): what dial() was given, or what accept() met.
  [[nodiscard]] const std::string& peer_name() const noexcept { return peer_name_; }

 private:
  friend class IbvListener;
  IbvConnection(const Options& o, std::string peer);
  Expected<void> open_channel();
  Expected<void> create_resources();  // PD, channel, CQ, QP, the inbound region (id_->verbs known)
  /// This side's window (its ring and credit slots, their key, max_frame) as the peer gets it
  /// in the connect request or the accept.
  [[nodiscard]] std::array<std::byte, kWindowBytes> own_window() const;
  void down(std::string why);
  /// After address resolution: "" or why the resolved port / GID is not what o_ asks
  /// (check_resolved; the port's GID table read here).
  [[nodiscard]] std::string verify_resolved(const std::string& who) const;
  void handle_event(int event, int status, const void* pdata, size_t plen);

  Options o_;
  std::string peer_name_;
  ConnState state_ = ConnState::Connecting;
  std::string error_;
  std::string device_;
  rdma_event_channel* ch_ = nullptr;
  rdma_cm_id* id_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* comp_ = nullptr;
  ibv_cq* cq_ = nullptr;
  bool qp_ = false;
  bool connected_ = false;
  bool have_peer_ = false;  // the passive side has the peer's window from the request
  int epfd_ = -1;
  unsigned unacked_events_ = 0;
  Limits lim_;
  Window peer_;
  Region inbound_;
  struct Block {
    void* mem = nullptr;
    ibv_mr* mr = nullptr;
  };
  std::vector<Block> blocks_;  // registered memory (freed with the connection)
};

/// Accepts RDMA connections on addr:port (rdma_cm listen). fd() turns readable on a request.
class IbvListener {
 public:
  IbvListener() = default;
  IbvListener(IbvListener&& o) noexcept;
  IbvListener& operator=(IbvListener&& o) noexcept;
  ~IbvListener();
  /// Port 0: rdma_cm picks one (see port()). Errors: no device, the address is not on one.
  [[nodiscard]] static Expected<IbvListener> listen(const std::string& addr, uint16_t port, const Options& o);
  [[nodiscard]] int fd() const noexcept;
  [[nodiscard]] uint16_t port() const noexcept { return port_; }
  /// The next connection request, accepted: a connection that is Connecting until rdma_cm says
  /// ESTABLISHED (progress()). WouldBlock: none pending. A request that fails (not a busd, no
  /// resources) is rejected and reported as an error; the listener goes on.
  [[nodiscard]] Expected<std::unique_ptr<IbvConnection>> accept();

 private:
  Options o_;
  rdma_event_channel* ch_ = nullptr;
  rdma_cm_id* id_ = nullptr;
  uint16_t port_ = 0;
};

}  // namespace bus::rdma
