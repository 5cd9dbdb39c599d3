#include "dgram/dgram_link.hpp"

namespace bus::dgram {
namespace {
constexpr size_t kBurst = 64;
}

DgramLink::DgramLink(std::unique_ptr<PacketIo> io, const ChannelOptions& o, uint32_t conn_id, Clock clock)
    : io_(std::move(io)), ch_(o, conn_id), clock_(clock) {
  in_.resize(kBurst);
  out_.reserve(kBurst);
  push(nullptr, clock_());  // the first Syn
}

DgramLink::~DgramLink() {
  ch_.release_all();
  give_back();
}

link::LinkState DgramLink::state() const noexcept {
  switch (ch_.state()) {
    case ChannelState::Connecting: return link::LinkState::Connecting;
    case ChannelState::Up: return link::LinkState::Up;
    case ChannelState::Down: return link::LinkState::Down;
  }
  return link::LinkState::Down;
}

void DgramLink::give_back() {
  auto& r = ch_.released();
  if (!r.empty()) io_->release(r.data(), r.size());
  r.clear();
}

void DgramLink::sync_counters() noexcept {
  const ChannelStats& st = ch_.stats();
  c_.retransmits = st.retransmits;
  c_.naks = st.naks_out;
  c_.datagrams_corrupt = st.corrupt;
  c_.datagrams_dropped = st.malformed + st.stale + st.beyond_window;
  c_.rtt_ns = st.srtt_ns;
}

void DgramLink::pull(std::vector<link::Frame>* out, size_t max, uint64_t now) {
  const size_t n = io_->rx_burst(in_.data(), in_.size());
  ++c_.read_calls;
  for (size_t i = 0; i < n; ++i) c_.bytes_in += in_[i].len;
  const size_t before = out != nullptr ? out->size() : 0;
  (void)ch_.receive(std::span<const RxPacket>(in_.data(), n), out, max, now);
  if (out != nullptr) c_.frames_in += out->size() - before;
  give_back();
  sync_counters();
}

void DgramLink::push(link::Session* s, uint64_t now) {
  out_.clear();
  ch_.collect(s, now, out_);
  if (out_.empty()) return;
  const size_t sent = io_->tx(out_);
  ++c_.write_calls;
  for (size_t i = 0; i < sent; ++i) c_.bytes_out += out_[i].size();
  c_.would_block += out_.size() - sent;  // lost here: the peer's NAK or the timeout resends
  sync_counters();
}

void DgramLink::finish_connect() {
  const uint64_t now = clock_();
  pull(nullptr, 0, now);
  push(nullptr, now);
}

Result<size_t> DgramLink::transmit(link::Session& s) {
  if (ch_.state() == ChannelState::Down) return tl::unexpected(Errc::Closed);
  const uint64_t before = c_.bytes_out;
  push(&s, clock_());
  if (ch_.state() == ChannelState::Down) return tl::unexpected(Errc::Closed);
  return static_cast<size_t>(c_.bytes_out - before);
}

Result<size_t> DgramLink::receive(std::vector<link::Frame>& out, size_t max) {
  const size_t before = out.size();
  pull(&out, max, clock_());
  if (ch_.state() == ChannelState::Down) {
    out.resize(before);
    return tl::unexpected(ch_.down_code());
  }
  return out.size() - before;
}

void DgramLink::close(const std::string& why) {
  ch_.close(why);
  push(nullptr, clock_());  // the Fin
}

}  // namespace bus::dgram
