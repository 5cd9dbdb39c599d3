#include "rdma/rdma_link.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string_view>

namespace bus::rdma {

namespace {
constexpr uint32_t kCreditBit = 1u << 31;
constexpr uint32_t kWrapBit = 1u << 30;
constexpr uint32_t kLenMask = (1u << 30) - 1;
constexpr uint64_t kRecvTag = uint64_t{1} << 63;  // receive WRs' wr_id; send WRs carry their index

std::string cat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (auto p : parts) s.append(p);
  return s;
}

uint32_t load32(const std::byte* p) noexcept {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}
uint64_t load64(const std::byte* p) noexcept { return load32(p) | static_cast<uint64_t>(load32(p + 4)) << 32; }
void store64(std::byte* p, uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
}  // namespace

RdmaLink::RdmaLink(std::unique_ptr<Verbs> v, const Options& o, std::string peer)
    : v_(std::move(v)), o_(o), peer_(std::move(peer)) {
  if (auto ok = check(o_); !ok) {
    down(ok.error().message());
    return;
  }
  finish_connect();
}

RdmaLink::~RdmaLink() = default;

void RdmaLink::down(std::string why) {
  if (state_ == link::LinkState::Down) return;
  state_ = link::LinkState::Down;
  error_ = std::move(why);
  stalled_ = kick_ = false;
}

void RdmaLink::finish_connect() {
  if (state_ != link::LinkState::Connecting) return;
  switch (v_->progress()) {
    case ConnState::Connecting: return;
    case ConnState::Down: down(v_->error()); return;
    case ConnState::Up: setup(); return;
  }
}

void RdmaLink::setup() {
  lim_ = v_->limits();
  pw_ = v_->peer();
  in_ = v_->inbound();
  const std::string with = cat({"rdma link with ", peer_, ": "});
  if (uint64_t{o_.max_frame} + 4 > pw_.ring_bytes / 4) {
    down(cat({with, "the peer's ring of ", std::to_string(pw_.ring_bytes), " bytes is below 4 x (max_frame + 4) = ",
              std::to_string(4 * (uint64_t{o_.max_frame} + 4)), " (configure the same ring_bytes and max_frame on both sides)"}));
    return;
  }
  if (in_.addr == nullptr || in_.len < uint64_t{o_.ring_bytes} + uint64_t{o_.recv_depth} * kCreditBytes) {
    down(cat({with, "the inbound region is smaller than the ring and its credit slots"}));
    return;
  }
  if (lim_.max_send_wr < 2 || lim_.max_recv_wr < o_.recv_depth) {
    down(cat({with, "the queue pair has ", std::to_string(lim_.max_send_wr), " send and ", std::to_string(lim_.max_recv_wr),
              " receive WRs; ", std::to_string(o_.recv_depth), " receive WRs are needed"}));
    return;
  }
  if (uint64_t{lim_.cq_depth} < uint64_t{lim_.max_send_wr} + o_.recv_depth) {
    down(cat({with, "a completion queue of ", std::to_string(lim_.cq_depth), " entries cannot hold ",
              std::to_string(lim_.max_send_wr), " send and ", std::to_string(o_.recv_depth), " receive completions"}));
    return;
  }
  if (lim_.max_msg < 4096) {
    down(cat({with, "the port moves at most ", std::to_string(lim_.max_msg), " bytes per work request"}));
    return;
  }
  sig_every_ = std::clamp<uint32_t>(o_.signal_every, 1, std::max<uint32_t>(1, lim_.max_send_wr / 2));
  auto r = v_->register_local(size_t{pw_.ring_bytes} + size_t{lim_.max_send_wr} * kCreditBytes);
  if (!r) {
    down(cat({with, r.error().message()}));
    return;
  }
  out_ = *r;
  const size_t batch = std::min<size_t>(o_.batch_wrs, lim_.max_send_wr);
  wr_.assign(batch, ibv_send_wr{});
  sge_.assign(batch, ibv_sge{});
  rwr_.assign(o_.recv_depth, ibv_recv_wr{});
  for (size_t i = 0; i < rwr_.size(); ++i) {
    rwr_[i].wr_id = kRecvTag | i;
    rwr_[i].sg_list = nullptr;  // the immediates need no buffer: the data is written into the ring
    rwr_[i].num_sge = 0;
  }
  to_repost_ = o_.recv_depth;
  state_ = link::LinkState::Up;
  if (!repost()) return;
}

// ---------------------------------------------------------------- completions

bool RdmaLink::peek() const noexcept {
  if (wc_i_ < wc_n_) return true;
  if (state_ != link::LinkState::Up) return false;
  wc_i_ = 0;
  wc_n_ = v_->poll_cq(kPoll, wc_.data());
  if (wc_n_ < 0) {
    wc_n_ = 0;
    cq_broken_ = true;
    return true;
  }
  return wc_n_ > 0;
}

bool RdmaLink::reap() {
  for (int round = 0; round < 16; ++round) {  // bounded: the CQ may refill as fast as it drains
    if (wc_i_ == wc_n_ && !peek()) break;
    if (cq_broken_) {
      ++rc_.wc_errors;
      down(cat({"rdma link with ", peer_, ": polling the completion queue failed (overrun?)"}));
      return false;
    }
    ++c_.read_calls;
    const bool full = wc_n_ == kPoll;
    while (wc_i_ < wc_n_) {
      if (!handle(wc_[static_cast<size_t>(wc_i_++)])) return false;
    }
    wc_i_ = wc_n_ = 0;
    if (!full) break;
  }
  return repost();
}

bool RdmaLink::handle(const ibv_wc& wc) {
  const bool recv = (wc.wr_id & kRecvTag) != 0;
  if (wc.status != IBV_WC_SUCCESS) {
    ++rc_.wc_errors;
    char code[64];
    std::snprintf(code, sizeof code, " (status %d, vendor error 0x%x)", static_cast<int>(wc.status), wc.vendor_err);
    down(cat({"rdma ", recv ? "receive from " : "write to ", peer_, ": ", ibv_wc_status_str(wc.status), code}));
    return false;
  }
  if (!recv) {
    // A signaled write: it and every write before it are done (retired from the send queue).
    if (wc.wr_id > retired_ && wc.wr_id <= posted_) retired_ = wc.wr_id;
    if (stalled_) kick_ = true;
    return true;
  }
  if (wc.opcode != IBV_WC_RECV_RDMA_WITH_IMM || (wc.wc_flags & IBV_WC_WITH_IMM) == 0) {
    down(cat({"rdma link with ", peer_, ": a receive without an immediate (the peer does not speak busd's RDMA link)"}));
    return false;
  }
  ++msgs_done_;
  ++to_repost_;
  const uint32_t imm = ntohl(wc.imm_data);
  return (imm & kCreditBit) != 0 ? on_credit(imm) : on_data(imm);
}

bool RdmaLink::on_data(uint32_t imm) {
  const uint64_t n = o_.ring_bytes;
  const uint32_t len = imm & kLenMask;
  if (len == 0) {
    down(cat({"rdma link with ", peer_, ": ", "an empty data write"}));
    return false;
  }
  if ((imm & kWrapBit) != 0) {
    if (rx_tail_ % n == 0 || has_gap_) {
      down(cat({"rdma link with ", peer_, ": ", "a wrap to the next lap where none can be"}));
      return false;
    }
    has_gap_ = true;
    gap_at_ = rx_tail_;
    rx_tail_ = lap_end(rx_tail_, n);
  }
  if (rx_tail_ % n + len > n) {
    down(cat({"rdma link with ", peer_, ": ", "a write across the end of the ring"}));
    return false;
  }
  rx_tail_ += len;
  if (rx_tail_ - rx_head_ > n) {
    down(cat({"rdma link with ", peer_, ": ", "the peer wrote beyond the credit it had (ring overrun)"}));
    return false;
  }
  c_.bytes_in += len;
  return true;
}

bool RdmaLink::on_credit(uint32_t imm) {
  if ((imm & kLenMask) != (credits_in_ & kLenMask)) {
    down(cat({"rdma link with ", peer_, ": a credit return out of sequence"}));
    return false;
  }
  const std::byte* slot = in_.addr + o_.ring_bytes + (credits_in_ % o_.recv_depth) * kCreditBytes;
  ++credits_in_;
  const uint64_t head = load64(slot);
  const uint64_t msgs = load64(slot + 8);
  if (head < peer_head_ || head > tx_tail_ || msgs < peer_msgs_done_ || msgs > msgs_sent_) {
    down(cat({"rdma link with ", peer_, ": a credit return beyond what was sent"}));
    return false;
  }
  peer_head_ = head;
  peer_msgs_done_ = msgs;
  ++rc_.credit_returns_received;
  if (stalled_) kick_ = true;
  return true;
}

bool RdmaLink::repost() {
  if (to_repost_ == 0) return true;
  const uint32_t n = to_repost_;
  for (uint32_t i = 0; i < n; ++i) rwr_[i].next = i + 1 < n ? &rwr_[i + 1] : nullptr;
  ibv_recv_wr* bad = nullptr;
  if (const int rc = v_->post_recv(&rwr_[0], &bad); rc != 0) {
    down(cat({"rdma link with ", peer_, ": ibv_post_recv: ", std::strerror(rc)}));
    return false;
  }
  rc_.recvs_posted += n;
  to_repost_ = 0;
  return true;
}

// ---------------------------------------------------------------- sending

void RdmaLink::fill_wr(size_t i, uint64_t start, uint32_t len, bool wrap) {
  const uint64_t off = start % pw_.ring_bytes;
  ibv_sge& g = sge_[i];
  g.addr = reinterpret_cast<uintptr_t>(out_.addr + off);
  g.length = len;
  g.lkey = out_.lkey;
  ibv_send_wr& w = wr_[i];
  w = ibv_send_wr{};
  const uint64_t idx = posted_ + i + 1;
  w.wr_id = idx;
  w.sg_list = &g;
  w.num_sge = 1;
  w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  w.imm_data = htonl((wrap ? kWrapBit : 0) | len);
  w.wr.rdma.remote_addr = pw_.ring_addr + off;
  w.wr.rdma.rkey = pw_.rkey;
  w.send_flags = send_flags(idx, len);
}

unsigned RdmaLink::send_flags(uint64_t idx, uint32_t len) noexcept {
  unsigned flags = 0;
  if (len <= lim_.max_inline) {
    flags |= IBV_SEND_INLINE;
    ++rc_.wrs_inline;
  }
  // Every Nth request, and the one that fills the send queue: a completion will retire them.
  if (idx - last_signaled_ >= sig_every_ || idx - retired_ >= lim_.max_send_wr) {
    flags |= IBV_SEND_SIGNALED;
    last_signaled_ = idx;
    ++rc_.wrs_signaled;
  }
  return flags;
}

bool RdmaLink::post(size_t n) {
  for (size_t i = 0; i < n; ++i) wr_[i].next = i + 1 < n ? &wr_[i + 1] : nullptr;
  ibv_send_wr* bad = nullptr;
  if (const int rc = v_->post_send(&wr_[0], &bad); rc != 0) {
    down(cat({"rdma link with ", peer_, ": ibv_post_send: ", std::strerror(rc)}));
    return false;
  }
  posted_ += n;
  msgs_sent_ += n;
  rc_.wrs_posted += n;
  ++rc_.doorbells;
  ++c_.write_calls;
  return true;
}

bool RdmaLink::credit_due(uint64_t head) const noexcept {
  if (state_ != link::LinkState::Up) return false;
  return head - reported_head_ >= o_.ring_bytes / 4 || msgs_done_ - reported_msgs_ >= o_.recv_depth / 2;
}

bool RdmaLink::can_credit() const noexcept {
  return msgs_sent_ - peer_msgs_done_ < pw_.credit_slots && posted_ - retired_ < lim_.max_send_wr;
}

bool RdmaLink::maybe_credit() {
  if (!credit_due(rx_head_) || !can_credit()) return true;
  // What is reported: the ring consumed up to rx_head_, and the receive WRs reposted (all
  // handled ones: reap() reposts before returning).
  const uint64_t msgs = msgs_done_ - to_repost_;
  std::byte* scratch = out_.addr + pw_.ring_bytes + (credits_out_ % lim_.max_send_wr) * kCreditBytes;
  store64(scratch, rx_head_);
  store64(scratch + 8, msgs);
  ibv_sge& g = sge_[0];
  g.addr = reinterpret_cast<uintptr_t>(scratch);
  g.length = kCreditBytes;
  g.lkey = out_.lkey;
  ibv_send_wr& w = wr_[0];
  w = ibv_send_wr{};
  const uint64_t idx = posted_ + 1;
  w.wr_id = idx;
  w.sg_list = &g;
  w.num_sge = 1;
  w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  w.imm_data = htonl(kCreditBit | static_cast<uint32_t>(credits_out_ & kLenMask));
  w.wr.rdma.remote_addr = pw_.credit_addr + (credits_out_ % pw_.credit_slots) * kCreditBytes;
  w.wr.rdma.rkey = pw_.rkey;
  w.send_flags = send_flags(idx, kCreditBytes);
  if (!post(1)) return false;
  ++credits_out_;
  ++rc_.credit_returns_sent;
  reported_head_ = rx_head_;
  reported_msgs_ = msgs;
  return true;
}

Result<size_t> RdmaLink::transmit(link::Session& s) {
  if (state_ != link::LinkState::Up) {
    return tl::unexpected(state_ == link::LinkState::Down ? Errc::Closed : Errc::WouldBlock);
  }
  kick_ = false;
  if (!reap() || !maybe_credit()) return tl::unexpected(Errc::Closed);
  const uint64_t n = pw_.ring_bytes;
  const uint64_t max_rec = uint64_t{std::min(o_.max_frame, pw_.max_frame)} + link::kLengthBytes;
  const uint64_t wr_cap = std::min<uint64_t>({lim_.max_msg, kLenMask, n});
  size_t total = 0;
  stalled_ = false;
  for (;;) {
    const auto spans = s.next_output();
    if (spans.empty()) break;
    size_t nwr = 0;
    uint64_t wr_start = 0;
    uint64_t wr_len = 0;
    bool wr_wrap = false;
    bool stop = false;  // this chain is full, or the peer/queue has no room
    size_t took = 0;
    for (const auto& sp : spans) {
      size_t off = 0;
      while (off < sp.size()) {
        if (sp.size() - off < link::kLengthBytes) {
          down(cat({"rdma link with ", peer_, ": ", "the session's output is not whole frames"}));
          return tl::unexpected(Errc::Closed);
        }
        const uint64_t rec = link::kLengthBytes + load32(sp.data() + off);
        if (rec > max_rec) {
          down(cat({"rdma link with ", peer_, ": ", "a link frame of ", std::to_string(rec - link::kLengthBytes), " bytes, above the ",
                    std::to_string(max_rec - link::kLengthBytes), " both sides accept"}));
          return tl::unexpected(Errc::Closed);
        }
        if (off + rec > sp.size()) {
          down(cat({"rdma link with ", peer_, ": ", "the session's output is not whole frames"}));
          return tl::unexpected(Errc::Closed);
        }
        const uint64_t pos = tx_tail_ % n;
        const uint64_t skip = pos + rec > n ? n - pos : 0;  // a record never straddles the end
        if (n - (tx_tail_ - peer_head_) < skip + rec) {
          ++rc_.ring_stalls;
          stalled_ = stop = true;
          break;
        }
        // A WR is contiguous in the peer's ring: a new one at the start of a lap, too.
        if (wr_len == 0 || skip > 0 || pos == 0 || wr_len + rec > wr_cap) {
          if (wr_len > 0) {
            fill_wr(nwr++, wr_start, static_cast<uint32_t>(wr_len), wr_wrap);
            wr_len = 0;
          }
          if (nwr == wr_.size()) {  // this chain is full: post it, then go on
            stop = true;
            break;
          }
          if ((posted_ - retired_) + nwr + 1 > lim_.max_send_wr) {
            ++rc_.sq_stalls;
            stalled_ = stop = true;
            break;
          }
          // The peer's last receive WR is kept for a credit return.
          if ((msgs_sent_ - peer_msgs_done_) + nwr + 1 > pw_.credit_slots - 1) {
            ++rc_.recv_credit_stalls;
            stalled_ = stop = true;
            break;
          }
          wr_start = tx_tail_ + skip;
          wr_wrap = skip > 0;
        }
        std::memcpy(out_.addr + (tx_tail_ + skip) % n, sp.data() + off, rec);
        tx_tail_ += skip + rec;
        wr_len += rec;
        off += rec;
        took += rec;
      }
      if (stop) break;
    }
    if (wr_len > 0) fill_wr(nwr++, wr_start, static_cast<uint32_t>(wr_len), wr_wrap);
    if (took > 0) {
      s.wrote(took);
      c_.bytes_out += took;
      total += took;
    }
    if (nwr > 0 && !post(nwr)) return tl::unexpected(Errc::Closed);
    if (stalled_) {
      ++c_.would_block;
      break;
    }
    if (!stop) break;  // the session's output is all out (more may come from a later call)
    if (!reap()) return tl::unexpected(Errc::Closed);  // the chain was full: room for the next
  }
  if (!maybe_credit()) return tl::unexpected(Errc::Closed);
  return total;
}

// ---------------------------------------------------------------- receiving

bool RdmaLink::parse(std::vector<link::Frame>& out, size_t max) {
  const uint64_t n = o_.ring_bytes;
  const std::string_view who = peer_;
  size_t got = 0;
  while (got < max) {
    if (has_gap_ && rx_parse_ == gap_at_) {
      rx_parse_ = lap_end(gap_at_, n);
      has_gap_ = false;
    }
    const uint64_t limit = has_gap_ && gap_at_ > rx_parse_ ? gap_at_ : rx_tail_;
    const uint64_t avail = limit - rx_parse_;
    if (avail == 0) break;
    const uint64_t off = rx_parse_ % n;
    const std::byte* p = in_.addr + off;
    if (avail < link::kLengthBytes) {
      down(cat({"rdma link with ", who, ": a write ends mid-frame"}));
      return false;
    }
    const uint32_t len = load32(p);
    if (len > o_.max_frame) {
      down(cat({"rdma link with ", who, ": a link frame of ", std::to_string(len), " bytes, above the maximum ",
                std::to_string(o_.max_frame), " (garbage?)"}));
      return false;
    }
    if (link::kLengthBytes + uint64_t{len} > avail) {
      down(cat({"rdma link with ", who, ": a write ends mid-frame"}));
      return false;
    }
    auto f = link::parse_frame({p + link::kLengthBytes, len});
    if (!f) {
      down(cat({"from ", who, ": ", f.error().message()}));
      return false;
    }
    out.push_back(*f);
    ++got;
    ++c_.frames_in;
    rx_parse_ += link::kLengthBytes + len;
  }
  return true;
}

Result<size_t> RdmaLink::receive(std::vector<link::Frame>& out, size_t max) {
  if (state_ != link::LinkState::Up) return tl::unexpected(Errc::Closed);
  rx_head_ = rx_parse_;  // what the last call handed out is consumed: its ring space is free
  // The connection's own events (a disconnect) cost a system call: looked at now and then
  // (and after every wake-up, in disarm()); completion errors say the rest at once.
  if ((++calls_ & 4095) == 0 && v_->progress() == ConnState::Down) {
    down(cat({"rdma link with ", peer_, ": ", v_->error()}));
    return tl::unexpected(Errc::Closed);
  }
  if (!reap()) return tl::unexpected(Errc::Closed);
  const size_t before = out.size();
  if (!parse(out, max)) return tl::unexpected(Errc::BadMessage);
  if (!maybe_credit()) return tl::unexpected(Errc::Closed);
  return out.size() - before;
}

const link::LinkCounters& RdmaLink::counters() const noexcept {
  c_.doorbells = rc_.doorbells;
  c_.credit_stalls = rc_.ring_stalls + rc_.recv_credit_stalls;
  c_.queue_stalls = rc_.sq_stalls;
  c_.completion_errors = rc_.wc_errors;
  return c_;
}

bool RdmaLink::has_input() const noexcept {
  if (state_ != link::LinkState::Up) return false;
  if (rx_parse_ != rx_tail_) return true;  // frames arrived (a write holds whole frames)
  if (credit_due(rx_parse_) && can_credit()) return true;  // the next receive() returns credit
  return peek();
}

bool RdmaLink::arm() noexcept {
  if (state_ != link::LinkState::Up) return true;
  if (has_input() || kick_) return false;
  v_->arm();
  return !peek();  // a completion that came before the request raises no event
}

void RdmaLink::disarm() noexcept {
  v_->disarm();
  if (state_ == link::LinkState::Up && v_->progress() == ConnState::Down) down(cat({"rdma link with ", peer_, ": ", v_->error()}));
}

std::string RdmaLink::debug_state() const {
  char b[512];
  std::snprintf(b, sizeof b,
                "tx tail %llu peer head %llu msgs sent %llu peer done %llu | rx tail %llu parse %llu head %llu gap %d@%llu "
                "msgs done %llu reported %llu/%llu credits in %llu out %llu | posted %llu retired %llu stalled %d",
                (unsigned long long)tx_tail_, (unsigned long long)peer_head_, (unsigned long long)msgs_sent_,
                (unsigned long long)peer_msgs_done_, (unsigned long long)rx_tail_, (unsigned long long)rx_parse_,
                (unsigned long long)rx_head_, has_gap_ ? 1 : 0, (unsigned long long)gap_at_, (unsigned long long)msgs_done_,
                (unsigned long long)reported_head_, (unsigned long long)reported_msgs_, (unsigned long long)credits_in_,
                (unsigned long long)credits_out_, (unsigned long long)posted_, (unsigned long long)retired_, stalled_ ? 1 : 0);
  return b;
}

void RdmaLink::close(const std::string& why) {
  down(why);
  v_->disconnect();
}

}  // namespace bus::rdma
