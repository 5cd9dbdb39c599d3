#include "rdma/fake_verbs.hpp"

#include <cerrno>
#include <cstring>

namespace bus::rdma {

struct FakeVerbs::Shared {
  FakeVerbs* ends[2] = {nullptr, nullptr};
  uint32_t next_key = 0x1000;
};

std::pair<std::unique_ptr<FakeVerbs>, std::unique_ptr<FakeVerbs>> fake_pair(const Options& a, const Limits& la,
                                                                               const Options& b, const Limits& lb) {
  auto sh = std::make_shared<FakeVerbs::Shared>();
  auto x = std::make_unique<FakeVerbs>(sh, 0, a, la);
  auto y = std::make_unique<FakeVerbs>(sh, 1, b, lb);
  return {std::move(x), std::move(y)};
}

Limits fitting_limits(const Options& o, uint32_t max_inline) {
  Limits l;
  l.max_send_wr = o.send_depth;
  l.max_recv_wr = o.recv_depth;
  l.cq_depth = o.send_depth + o.recv_depth;
  l.max_inline = max_inline;
  l.max_msg = 1u << 30;
  return l;
}

FakeVerbs::FakeVerbs(std::shared_ptr<Shared> sh, int side, const Options& o, const Limits& l)
    : sh_(std::move(sh)), side_(side), o_(o), lim_(l) {
  sh_->ends[side_] = this;
  inbound_mem_.assign(size_t{o_.ring_bytes} + size_t{o_.recv_depth} * kCreditBytes, std::byte{0});
  const uint32_t key = sh_->next_key++;
  mrs_.push_back({inbound_mem_.data(), inbound_mem_.size(), key, true});
  inbound_ = {inbound_mem_.data(), inbound_mem_.size(), key, key};
}

FakeVerbs::~FakeVerbs() {
  disconnect();
  sh_->ends[side_] = nullptr;
}

FakeVerbs* FakeVerbs::other() const noexcept { return sh_->ends[1 - side_]; }

void FakeVerbs::violation(std::string what) {
  violations_.push_back((side_ == 0 ? "side a: " : "side b: ") + what);
}

ConnState FakeVerbs::progress() {
  if (disconnected_) return ConnState::Down;
  FakeVerbs* p = other();
  if (p == nullptr) {
    error_ = "RDMA_CM_EVENT_DISCONNECTED: the peer is gone";
    disconnected_ = true;
    return ConnState::Down;
  }
  peer_window_.ring_addr = reinterpret_cast<uintptr_t>(p->inbound_.addr);
  peer_window_.rkey = p->inbound_.rkey;
  peer_window_.ring_bytes = p->o_.ring_bytes;
  peer_window_.credit_addr = peer_window_.ring_addr + p->o_.ring_bytes;
  peer_window_.credit_slots = p->o_.recv_depth;
  peer_window_.max_frame = p->o_.max_frame;
  return ConnState::Up;
}

Expected<Region> FakeVerbs::register_local(size_t bytes) {
  local_mem_.push_back(std::make_unique<std::vector<std::byte>>(bytes));
  const uint32_t key = sh_->next_key++;
  mrs_.push_back({local_mem_.back()->data(), bytes, key, false});
  return Region{local_mem_.back()->data(), bytes, key, 0};
}

void FakeVerbs::disconnect() noexcept {
  if (disconnected_) return;
  disconnected_ = true;
  if (error_.empty()) error_ = "disconnected by this side";
  to_error();
  if (FakeVerbs* p = other(); p != nullptr && !p->disconnected_) {
    p->disconnected_ = true;
    p->error_ = "RDMA_CM_EVENT_DISCONNECTED: the peer disconnected";
    p->to_error();
  }
}

bool FakeVerbs::push_cq(const ibv_wc& wc, uint64_t send_idx) {
  if (cq_overrun_) return false;
  if (cq_.size() >= lim_.cq_depth) {
    violation("completion queue overrun (" + std::to_string(lim_.cq_depth) + " entries)");
    cq_overrun_ = true;
    to_error();
    return false;
  }
  cq_.push_back({wc, send_idx});
  if (cq_.size() > hw_cq_) hw_cq_ = cq_.size();
  return true;
}

void FakeVerbs::complete_send(const SendEntry& e, ibv_wc_status st, uint32_t len) {
  if (st == IBV_WC_SUCCESS && !e.signaled) return;  // errors and flushes complete unsignaled WRs too
  ibv_wc wc{};
  wc.wr_id = e.wr_id;
  wc.status = st;
  wc.opcode = (e.opcode == IBV_WR_SEND || e.opcode == IBV_WR_SEND_WITH_IMM) ? IBV_WC_SEND : IBV_WC_RDMA_WRITE;
  wc.byte_len = len;
  wc.qp_num = static_cast<uint32_t>(side_ + 1);
  wc.vendor_err = st == IBV_WC_SUCCESS || st == IBV_WC_WR_FLUSH_ERR ? 0 : 0x81;
  push_cq(wc, e.idx);
}

void FakeVerbs::to_error() {
  if (qp_error_) return;
  qp_error_ = true;
  // Everything outstanding completes with a flush error, signaled or not.
  while (executed_ < sq_.size()) complete_send(sq_[executed_++], IBV_WC_WR_FLUSH_ERR, 0);
  for (const RecvEntry& r : rq_) {
    ibv_wc wc{};
    wc.wr_id = r.wr_id;
    wc.status = IBV_WC_WR_FLUSH_ERR;
    wc.opcode = IBV_WC_RECV;
    wc.qp_num = static_cast<uint32_t>(side_ + 1);
    push_cq(wc, 0);
  }
  rq_.clear();
}

const FakeVerbs::Mr* FakeVerbs::find(uint32_t key, bool remote) const noexcept {
  for (const Mr& m : mrs_) {
    if (m.key == key && (!remote || m.remote_write)) return &m;
  }
  return nullptr;
}

int FakeVerbs::post_send(ibv_send_wr* wr, ibv_send_wr** bad) noexcept {
  ++doorbells_;
  for (ibv_send_wr* w = wr; w != nullptr; w = w->next) {
    auto refuse = [&](int err, std::string why) {
      violation(std::move(why));
      if (bad != nullptr) *bad = w;
      return err;
    };
    if (posted_ - retired_ + 1 > lim_.max_send_wr) {
      return refuse(ENOMEM, "ibv_post_send beyond the send queue (" + std::to_string(lim_.max_send_wr) + " WRs outstanding)");
    }
    if (w->num_sge < 0 || w->num_sge > 4) return refuse(EINVAL, "more scatter/gather entries than the QP has");
    if (w->opcode != IBV_WR_RDMA_WRITE && w->opcode != IBV_WR_RDMA_WRITE_WITH_IMM && w->opcode != IBV_WR_SEND &&
        w->opcode != IBV_WR_SEND_WITH_IMM) {
      return refuse(EINVAL, "an opcode the fake does not do");
    }
    SendEntry e;
    e.idx = posted_ + 1;
    e.wr_id = w->wr_id;
    e.opcode = w->opcode;
    e.signaled = (w->send_flags & IBV_SEND_SIGNALED) != 0;
    e.is_inline = (w->send_flags & IBV_SEND_INLINE) != 0;
    e.imm = w->imm_data;
    e.remote_addr = w->wr.rdma.remote_addr;
    e.rkey = w->wr.rdma.rkey;
    size_t total = 0;
    for (int i = 0; i < w->num_sge; ++i) total += w->sg_list[i].length;
    if (e.is_inline) {
      if (total > lim_.max_inline) {
        return refuse(EINVAL, "IBV_SEND_INLINE with " + std::to_string(total) + " bytes, above max_inline_data " +
                                  std::to_string(lim_.max_inline));
      }
      // Inline data is read at post time: the buffer may be reused at once.
      for (int i = 0; i < w->num_sge; ++i) {
        const auto* p = reinterpret_cast<const std::byte*>(w->sg_list[i].addr);
        e.inline_data.insert(e.inline_data.end(), p, p + w->sg_list[i].length);
      }
      ++inline_;
    } else {
      e.sge.assign(w->sg_list, w->sg_list + w->num_sge);
    }
    sq_.push_back(std::move(e));
    ++posted_;
    if (posted_ - retired_ > hw_outstanding_) hw_outstanding_ = static_cast<size_t>(posted_ - retired_);
    if (qp_error_) complete_send(sq_[executed_++], IBV_WC_WR_FLUSH_ERR, 0);
  }
  return 0;
}

int FakeVerbs::post_recv(ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept {
  for (ibv_recv_wr* w = wr; w != nullptr; w = w->next) {
    if (rq_.size() + 1 > lim_.max_recv_wr) {
      violation("ibv_post_recv beyond the receive queue (" + std::to_string(lim_.max_recv_wr) + " WRs)");
      if (bad != nullptr) *bad = w;
      return ENOMEM;
    }
    RecvEntry r{w->wr_id, std::vector<ibv_sge>(w->sg_list, w->sg_list + w->num_sge)};
    if (qp_error_) {
      ibv_wc wc{};
      wc.wr_id = r.wr_id;
      wc.status = IBV_WC_WR_FLUSH_ERR;
      wc.opcode = IBV_WC_RECV;
      push_cq(wc, 0);
      continue;
    }
    rq_.push_back(std::move(r));
  }
  return 0;
}

int FakeVerbs::poll_cq(int n, ibv_wc* wc) noexcept {
  if (cq_overrun_) return -1;
  int got = 0;
  while (got < n && !cq_.empty()) {
    const Cqe c = cq_.front();
    cq_.pop_front();
    wc[got++] = c.wc;
    if (c.send_idx > retired_) {
      // A send completion retires it and every WR before it.
      retired_ = c.send_idx;
      while (!sq_.empty() && sq_.front().idx <= retired_) {
        sq_.pop_front();
        if (executed_ > 0) --executed_;
      }
    }
  }
  return got;
}

bool FakeVerbs::gather(const SendEntry& e, std::vector<std::byte>& out) {
  out.clear();
  if (e.is_inline) {
    out = e.inline_data;
    return true;
  }
  for (const ibv_sge& g : e.sge) {
    const Mr* m = find(g.lkey, false);
    const auto* p = reinterpret_cast<const std::byte*>(g.addr);
    if (m == nullptr || p < m->addr || p + g.length > m->addr + m->len) return false;
    out.insert(out.end(), p, p + g.length);
  }
  return true;
}

void FakeVerbs::fail_next(ibv_wc_status status, size_t after) {
  fail_status_ = status;
  fail_after_ = after;
}

void FakeVerbs::overrun_cq() {
  cq_overrun_ = true;
  to_error();
}

size_t FakeVerbs::run(size_t max) {
  size_t ran = 0;
  while (ran < max && executed_ < sq_.size()) {
    const SendEntry& e = sq_[executed_++];
    ++ran;
    if (qp_error_) {
      complete_send(e, IBV_WC_WR_FLUSH_ERR, 0);
      continue;
    }
    if (fail_after_ != SIZE_MAX) {
      if (fail_after_ == 0) {
        fail_after_ = SIZE_MAX;
        complete_send(e, fail_status_, 0);
        if (fail_status_ == IBV_WC_REM_ACCESS_ERR || fail_status_ == IBV_WC_REM_INV_REQ_ERR) {
          if (FakeVerbs* p = other(); p != nullptr) p->to_error();  // the responder breaks too
        }
        to_error();
        continue;
      }
      --fail_after_;
    }
    FakeVerbs* p = other();
    if (p == nullptr || p->qp_error_) {  // nobody answers: the requester retries, then gives up
      complete_send(e, IBV_WC_RETRY_EXC_ERR, 0);
      to_error();
      continue;
    }
    if (!gather(e, scratch_)) {
      complete_send(e, IBV_WC_LOC_PROT_ERR, 0);
      to_error();
      continue;
    }
    const uint32_t len = static_cast<uint32_t>(scratch_.size());
    const bool with_imm = e.opcode == IBV_WR_RDMA_WRITE_WITH_IMM || e.opcode == IBV_WR_SEND_WITH_IMM;
    const bool needs_recv = e.opcode != IBV_WR_RDMA_WRITE;
    if (needs_recv && p->rq_.empty()) {
      violation("a message arrived with no receive posted at the peer (RNR)");
      complete_send(e, IBV_WC_RNR_RETRY_EXC_ERR, 0);
      to_error();
      continue;
    }
    if (e.opcode == IBV_WR_RDMA_WRITE || e.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
      const Mr* m = p->find(e.rkey, true);
      auto* dst = reinterpret_cast<std::byte*>(e.remote_addr);
      if (m == nullptr || dst < m->addr || dst + len > m->addr + m->len) {
        violation("an RDMA write outside the peer's registered region (remote access error)");
        complete_send(e, IBV_WC_REM_ACCESS_ERR, 0);
        p->to_error();
        to_error();
        continue;
      }
      if (len > 0) std::memcpy(dst, scratch_.data(), len);
      if (with_imm) {
        const RecvEntry r = p->rq_.front();
        p->rq_.pop_front();
        ibv_wc wc{};
        wc.wr_id = r.wr_id;
        wc.status = IBV_WC_SUCCESS;
        wc.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
        wc.byte_len = len;
        wc.imm_data = e.imm;
        wc.wc_flags = IBV_WC_WITH_IMM;
        wc.qp_num = static_cast<uint32_t>(p->side_ + 1);
        p->push_cq(wc, 0);
      }
    } else {  // SEND: scattered into the receive's buffers
      const RecvEntry r = p->rq_.front();
      p->rq_.pop_front();
      size_t room = 0;
      for (const ibv_sge& g : r.sge) room += g.length;
      ibv_wc wc{};
      wc.wr_id = r.wr_id;
      wc.opcode = IBV_WC_RECV;
      wc.qp_num = static_cast<uint32_t>(p->side_ + 1);
      if (room < len) {
        wc.status = IBV_WC_LOC_LEN_ERR;
        p->push_cq(wc, 0);
        p->to_error();
        complete_send(e, IBV_WC_REM_INV_REQ_ERR, 0);
        to_error();
        continue;
      }
      size_t off = 0;
      for (const ibv_sge& g : r.sge) {
        const Mr* m = p->find(g.lkey, false);
        auto* dst = reinterpret_cast<std::byte*>(g.addr);
        const size_t k = std::min<size_t>(g.length, len - off);
        if (k == 0) break;
        if (m == nullptr || dst < m->addr || dst + k > m->addr + m->len) {
          violation("a receive buffer outside the peer's registered memory");
          break;
        }
        std::memcpy(dst, scratch_.data() + off, k);
        off += k;
      }
      wc.status = IBV_WC_SUCCESS;
      wc.byte_len = len;
      if (with_imm) {
        wc.imm_data = e.imm;
        wc.wc_flags = IBV_WC_WITH_IMM;
      }
      p->push_cq(wc, 0);
    }
    complete_send(e, IBV_WC_SUCCESS, len);
  }
  return ran;
}

}  // namespace bus::rdma
