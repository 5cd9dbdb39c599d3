// Fake verbs for tests: two queue pairs connected in memory, with the limits of real ones.
//
// What it enforces (a breach is refused as the device would refuse it, and recorded in
// violations(), which tests assert empty):
//   - send WRs outstanding (posted, not retired by a polled completion of it or a later
//     signaled one) <= max_send_wr: ibv_post_send fails with ENOMEM beyond;
//   - receive WRs posted <= max_recv_wr: ENOMEM;
//   - IBV_SEND_INLINE with more than max_inline bytes: EINVAL;
//   - a WRITE WITH IMMEDIATE or SEND finds a posted receive at the peer, else it fails with
//     IBV_WC_RNR_RETRY_EXC_ERR (a real QP would retry, then fail the same way);
//   - a completion queue holds cq_depth completions: one more overruns it (ibv_poll_cq fails
//     from then on, as a real CQ in error does);
//   - local keys and ranges (IBV_WC_LOC_PROT_ERR), remote keys, ranges and access rights
//     (IBV_WC_REM_ACCESS_ERR, both QPs go to the error state).
// Send WRs are not executed at post time: the test moves them with run() (any number at a
// time, as a wire would), so completions come late and in bursts. Injected failures
// (fail_next) complete a WR with the given status; a QP in error completes everything
// outstanding, signaled or not, with IBV_WC_WR_FLUSH_ERR. disconnect() (or the peer's) is what
// rdma_cm's DISCONNECTED event is to a real connection: progress() says Down.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rdma/verbs.hpp"

namespace bus::rdma {

class FakeVerbs;

/// Two connected fake endpoints. `a`/`b`: the options each side's link will use (its ring and
/// receive depth); `la`/`lb`: the limits each QP and CQ have.
std::pair<std::unique_ptr<FakeVerbs>, std::unique_ptr<FakeVerbs>> fake_pair(const Options& a, const Limits& la,
                                                                               const Options& b, const Limits& lb);
/// Limits that fit `o` exactly (CQ = send + receive depth), with `max_inline` inline bytes.
Limits fitting_limits(const Options& o, uint32_t max_inline = 64);

class FakeVerbs final : public Verbs {
 public:
  struct Shared;
  FakeVerbs(std::shared_ptr<Shared> sh, int side, const Options& o, const Limits& l);
  ~FakeVerbs() override;

  ConnState progress() override;
  [[nodiscard]] const std::string& error() const noexcept override { return error_; }
  [[nodiscard]] const Limits& limits() const noexcept override { return lim_; }
  [[nodiscard]] const Region& inbound() const noexcept override { return inbound_; }
  [[nodiscard]] const Window& peer() const noexcept override { return peer_window_; }
  [[nodiscard]] Expected<Region> register_local(size_t bytes) override;
  void disconnect() noexcept override;
  int post_send(ibv_send_wr* wr, ibv_send_wr** bad) noexcept override;
  int post_recv(ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept override;
  int poll_cq(int n, ibv_wc* wc) noexcept override;
  [[nodiscard]] int wait_fd() const noexcept override { return -1; }
  void arm() noexcept override { ++arms_; }
  void disarm() noexcept override {}

  // ---- the test's hands
  /// Executes up to `max` posted send WRs in order (the wire). Returns how many ran.
  size_t run(size_t max = SIZE_MAX);
  /// The send WR that runs `after` WRs from now completes with `status`; the QP goes to error.
  void fail_next(ibv_wc_status status, size_t after = 0);
  /// The completion queue overruns now (as if completions had been lost): ibv_poll_cq fails
  /// from then on and the QP goes to error.
  void overrun_cq();
  [[nodiscard]] size_t pending_sends() const noexcept { return sq_.size() - executed_; }
  [[nodiscard]] size_t outstanding_sends() const noexcept { return static_cast<size_t>(posted_ - retired_); }
  [[nodiscard]] size_t posted_recvs() const noexcept { return rq_.size(); }
  [[nodiscard]] size_t cq_size() const noexcept { return cq_.size(); }
  [[nodiscard]] bool qp_error() const noexcept { return qp_error_; }
  [[nodiscard]] const std::vector<std::string>& violations() const noexcept { return violations_; }
  // High-water marks: what the link ever had outstanding / in the CQ.
  [[nodiscard]] size_t max_outstanding_seen() const noexcept { return hw_outstanding_; }
  [[nodiscard]] size_t max_cq_seen() const noexcept { return hw_cq_; }
  [[nodiscard]] uint64_t inline_posted() const noexcept { return inline_; }
  [[nodiscard]] uint64_t doorbells() const noexcept { return doorbells_; }
  [[nodiscard]] uint64_t arms() const noexcept { return arms_; }

 private:
  struct Mr {
    std::byte* addr;
    size_t len;
    uint32_t key;
    bool remote_write;
  };
  struct SendEntry {
    uint64_t idx;  // 1, 2, ... (the fake's own numbering)
    uint64_t wr_id;
    ibv_wr_opcode opcode;
    bool signaled, is_inline;
    uint32_t imm;
    uint64_t remote_addr;
    uint32_t rkey;
    std::vector<ibv_sge> sge;
    std::vector<std::byte> inline_data;
  };
  struct RecvEntry {
    uint64_t wr_id;
    std::vector<ibv_sge> sge;
  };
  struct Cqe {
    ibv_wc wc;
    uint64_t send_idx;  // 0 for a receive
  };

  FakeVerbs* other() const noexcept;
  void violation(std::string what);
  bool push_cq(const ibv_wc& wc, uint64_t send_idx);
  void to_error();                      // the QP goes to error: flush everything outstanding
  void complete_send(const SendEntry& e, ibv_wc_status st, uint32_t len);
  const Mr* find(uint32_t key, bool remote) const noexcept;
  bool gather(const SendEntry& e, std::vector<std::byte>& out);

  std::shared_ptr<Shared> sh_;
  int side_;
  Options o_;
  Limits lim_;
  std::string error_;
  bool disconnected_ = false;
  std::vector<std::byte> inbound_mem_;
  std::vector<std::unique_ptr<std::vector<std::byte>>> local_mem_;
  Region inbound_;
  Window peer_window_;
  std::vector<Mr> mrs_;

  std::deque<SendEntry> sq_;  // posted, not yet retired
  size_t executed_ = 0;       // of sq_, how many ran
  uint64_t posted_ = 0, retired_ = 0;
  std::deque<RecvEntry> rq_;
  std::deque<Cqe> cq_;
  bool cq_overrun_ = false;
  bool qp_error_ = false;
  size_t fail_after_ = SIZE_MAX;
  ibv_wc_status fail_status_ = IBV_WC_SUCCESS;
  std::vector<std::string> violations_;
  size_t hw_outstanding_ = 0, hw_cq_ = 0;
  uint64_t inline_ = 0, doorbells_ = 0, arms_ = 0;
  std::vector<std::byte> scratch_;
};

}  // namespace bus::rdma
