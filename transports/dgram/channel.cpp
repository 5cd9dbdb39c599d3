#include "dgram/channel.hpp"

#include <algorithm>
#include <cstring>

namespace bus::dgram {
namespace {

// Reassembly buffers start with this many unused bytes, so that a reassembled frame's body
// (12 bytes into the frame) is 8-byte aligned like one that arrived whole.
constexpr size_t kAsmLead = 4;
constexpr size_t kMaxNakRanges = 32;
constexpr uint32_t kRtoBurst = 8;  // packets resent when the retransmission timer fires

std::string num(uint64_t v) { return std::to_string(v); }

}  // namespace

Channel::Channel(const ChannelOptions& o, uint32_t conn_id) : o_(o), id_(conn_id) {
  o_.max_packet = std::clamp<uint32_t>(o_.max_packet, kMinPacket, 65535);
  o_.window = std::max<uint32_t>(o_.window, 4);
  o_.ack_every = std::max<uint32_t>(o_.ack_every, 1);
  o_.rto_min_ns = std::max<uint64_t>(o_.rto_min_ns, 1000);
  o_.rto_max_ns = std::max(o_.rto_max_ns, o_.rto_min_ns);
  send_max_ = o_.max_packet;
  tx_mem_.resize(size_t{o_.window} * o_.max_packet);
  tx_.resize(o_.window);
  rx_.resize(o_.window);
  rto_ = std::clamp<uint64_t>(5'000'000, o_.rto_min_ns, o_.rto_max_ns);
  peer_limit_ = 0;
  for (auto& b : asm_) b.reserve(64 * 1024);
  for (auto& c : ctl_) c.resize(o_.max_packet);
  released_.reserve(2 * size_t{o_.window});
  delivering_.reserve(o_.window);
  st_.rto_ns = rto_;
}

void Channel::down(Errc code, std::string why) {
  if (state_ == ChannelState::Down) return;
  state_ = ChannelState::Down;
  down_code_ = code;
  error_ = std::move(why);
  // Packets waiting in the window are never delivered now; the ones delivered last stay
  // until the caller is done with their views (release_all()).
  for (RxSlot& s : rx_) {
    if (s.seq != 0) released_.push_back(s.pkt.handle);
    s.seq = 0;
  }
}

void Channel::release_all() {
  for (const RxPacket& p : delivering_) released_.push_back(p.handle);
  delivering_.clear();
  for (RxSlot& s : rx_) {
    if (s.seq != 0) released_.push_back(s.pkt.handle);
    s.seq = 0;
  }
}

void Channel::close(const std::string& why) {
  if (state_ == ChannelState::Down) return;
  fin_owed_ = peer_ != 0;
  down(Errc::Closed, why);
}

// ---------------------------------------------------------------- receiving

Result<size_t> Channel::receive(std::span<const RxPacket> in, std::vector<link::Frame>* out, size_t max,
                                uint64_t now) {
  // The views handed out by the previous call are no longer used: their packets go back.
  for (const RxPacket& p : delivering_) released_.push_back(p.handle);
  delivering_.clear();
  reassembled_ = false;
  for (const RxPacket& p : in) {
    if (state_ == ChannelState::Down) {
      released_.push_back(p.handle);
      continue;
    }
    on_packet(p, now);
  }
  if (state_ == ChannelState::Down) return tl::unexpected(down_code_);
  if (out == nullptr || state_ != ChannelState::Up) return 0;
  const size_t before = out->size();
  deliver(*out, max);
  if (state_ == ChannelState::Down) return tl::unexpected(down_code_);
  return out->size() - before;
}

bool Channel::pending() const noexcept {
  if (state_ != ChannelState::Up) return false;
  const RxSlot& s = rx_[(delivered_ + 1) % o_.window];
  return s.seq == delivered_ + 1;
}

void Channel::on_packet(const RxPacket& p, uint64_t now) {
  ++st_.packets_in;
  st_.bytes_in += p.len;
  const std::span<const std::byte> bytes(p.data, p.len);
  Header h;
  const Reject r = parse_header(bytes, h);
  if (r != Reject::None) {
    ++(r == Reject::Crc ? st_.corrupt : st_.malformed);
    released_.push_back(p.handle);
    return;
  }
  const auto payload = bytes.subspan(kHeaderBytes);
  switch (h.type) {
    case PacketType::Syn: {
      released_.push_back(p.handle);
      const auto peer_max = static_cast<uint32_t>(load_le(payload.data(), 4));
      if (peer_max < kMinPacket) {
        ++st_.malformed;
        return;
      }
      if (peer_ != 0 && h.src_conn != peer_ && state_ == ChannelState::Up) {
        // The peer started over (restarted, or gave up on this connection): what is in flight
        // here belongs to a connection it no longer has. The session resumes on a new one.
        down(Errc::Closed, "the peer started a new connection (it restarted or redialed)");
        return;
      }
      peer_ = h.src_conn;
      send_max_ = std::min(o_.max_packet, peer_max);
      peer_limit_ = std::max(peer_limit_, h.ack + h.window);
      if (h.dst_conn == id_) {
        // The peer knows this side: up. An Ack tells the peer that this side knows it too.
        state_ = ChannelState::Up;
        ack_now_ = true;
      } else {
        syn_owed_ = true;  // it does not know this side (yet, or any more): answer
      }
      return;
    }
    case PacketType::Fin:
      released_.push_back(p.handle);
      if (peer_ != 0 && h.src_conn == peer_ && h.dst_conn == id_) {
        down(Errc::Closed, "the peer closed the link");
      } else {
        ++st_.stale;
      }
      return;
    case PacketType::Ack:
    case PacketType::Data:
      break;
  }
  if (peer_ == 0 || h.src_conn != peer_ || h.dst_conn != id_) {
    ++st_.stale;
    released_.push_back(p.handle);
    return;
  }
  // A packet of this connection naming this side: the peer got our Syn.
  if (state_ == ChannelState::Connecting) state_ = ChannelState::Up;
  on_ack(h.ack, h.window, now);
  if (state_ == ChannelState::Down) {
    released_.push_back(p.handle);
    return;
  }
  if (h.type == PacketType::Ack) {
    released_.push_back(p.handle);
    const size_t n = nak_count(payload);
    for (size_t i = 0; i < n; ++i) {
      const NakRange nr = nak_range(payload, i);
      ++st_.naks_in;
      // Only what is still in flight; the count is bounded by the window whatever it says.
      const uint64_t from = std::max(nr.first, acked_ + 1);
      const uint64_t to = std::min<uint64_t>(nr.first + std::min<uint64_t>(nr.count, o_.window), next_seq_);
      for (uint64_t seq = from; seq < to; ++seq) {
        TxSlot& s = tx_[seq % o_.window];
        if (!s.nak) {
          s.nak = true;
          ++naks_pending_;
        }
      }
    }
    return;
  }
  // Data.
  ++st_.data_in;
  const uint64_t seq = h.seq;
  if (seq <= delivered_) {
    ++st_.duplicates;
    ack_now_ = true;  // the peer may have missed our ack
    released_.push_back(p.handle);
    return;
  }
  if (seq > delivered_ + o_.window) {
    ++st_.beyond_window;
    released_.push_back(p.handle);
    return;
  }
  RxSlot& slot = rx_[seq % o_.window];
  if (slot.seq == seq) {
    ++st_.duplicates;
    ack_now_ = true;
    released_.push_back(p.handle);
    return;
  }
  slot.seq = seq;
  slot.pkt = p;
  if (seq != contig_ + 1) ++st_.out_of_order;
  if (seq > std::max(highest_in_, contig_) + 1) nak_now_ = true;  // a new hole
  highest_in_ = std::max(highest_in_, seq);
  while (rx_[(contig_ + 1) % o_.window].seq == contig_ + 1) ++contig_;
  if (ack_due_ == 0) ack_due_ = now + o_.ack_delay_ns;
  if (++unacked_in_ >= o_.ack_every) ack_now_ = true;
}

void Channel::on_ack(uint64_t ack, uint32_t window, uint64_t now) {
  if (ack > next_seq_ - 1) {
    down(Errc::BadMessage, "datagram ack of packet " + num(ack) + " beyond the last one sent (" + num(next_seq_ - 1) + ")");
    return;
  }
  peer_limit_ = std::max(peer_limit_, ack + window);
  if (ack <= acked_) return;
  // One RTT sample per ack, from the newest packet it covers, if that was sent once (Karn).
  const TxSlot& newest = tx_[ack % o_.window];
  if (newest.sends == 1 && now >= newest.last_sent) {
    const uint64_t r = now - newest.last_sent;
    if (srtt_ == 0) {
      srtt_ = r;
      rttvar_ = r / 2;
    } else {
      const uint64_t d = r > srtt_ ? r - srtt_ : srtt_ - r;
      rttvar_ = (3 * rttvar_ + d) / 4;
      srtt_ = (7 * srtt_ + r) / 8;
    }
    st_.srtt_ns = srtt_;
    st_.rttvar_ns = rttvar_;
  }
  for (uint64_t seq = acked_ + 1; seq <= ack; ++seq) {
    TxSlot& s = tx_[seq % o_.window];
    if (s.nak) --naks_pending_;
    s = TxSlot{};
  }
  acked_ = ack;
  // Progress: the timer restarts, its back-off ends.
  rto_ = std::clamp<uint64_t>(srtt_ + std::max<uint64_t>(4 * rttvar_, 100'000), o_.rto_min_ns, o_.rto_max_ns);
  st_.rto_ns = rto_;
  rto_armed_at_ = now;
}

void Channel::deliver(std::vector<link::Frame>& out, size_t max) {
  for (;;) {
    RxSlot& slot = rx_[(delivered_ + 1) % o_.window];
    if (slot.seq != delivered_ + 1 || reassembled_ || out.size() >= max) return;
    const RxPacket p = slot.pkt;
    slot.seq = 0;
    ++delivered_;
    delivering_.push_back(p);  // its views are out: released at the next receive()
    if (!deliver_packet(p, out)) return;
  }
}

bool Channel::deliver_packet(const RxPacket& p, std::vector<link::Frame>& out) {
  const std::span<const std::byte> pay(p.data + kHeaderBytes, p.len - kHeaderBytes);
  auto bad = [&](const std::string& why) {
    down(Errc::BadMessage, "datagram " + num(delivered_) + ": " + why);
    return false;
  };
  size_t at = 0;
  while (at < pay.size()) {
    if (pay.size() - at < kChunkHeader) return bad("a chunk header cut off");
    const auto len = static_cast<size_t>(load_le(pay.data() + at, 2));
    const auto flags = static_cast<uint8_t>(pay[at + 2]);
    if ((flags & ~(kFirst | kLast)) != 0 || pay[at + 3] != std::byte{0}) return bad("chunk flags or reserved bits set");
    if (len == 0 || len > pay.size() - at - kChunkHeader) return bad("a chunk longer than its packet");
    const auto bytes = pay.subspan(at + kChunkHeader, len);
    std::vector<std::byte>& buf = asm_[asm_cur_];
    if ((flags & kFirst) != 0) {
      if (assembling_) return bad("a frame starts inside a fragmented one");
      // The bound holds for whole frames too, not only reassembled ones (a peer that sends
      // larger packets than it announced could otherwise pass a larger frame).
      if (len > o_.max_frame) return bad("a frame above the largest allowed (" + num(o_.max_frame) + " bytes)");
      if ((flags & kLast) != 0) {
        auto f = link::parse_frame(bytes);
        if (!f) return bad(f.error().message());
        out.push_back(*f);
        ++st_.frames_in;
      } else {
        buf.assign(kAsmLead, std::byte{0});
        buf.insert(buf.end(), bytes.begin(), bytes.end());
        assembling_ = true;
      }
    } else {
      if (!assembling_) return bad("a fragment without its first part");
      if (buf.size() - kAsmLead + len > o_.max_frame) {
        return bad("a frame above the largest allowed (" + num(o_.max_frame) + " bytes)");
      }
      buf.insert(buf.end(), bytes.begin(), bytes.end());
      if ((flags & kLast) != 0) {
        assembling_ = false;
        auto f = link::parse_frame(std::span<const std::byte>(buf).subspan(kAsmLead));
        if (!f) return bad(f.error().message());
        out.push_back(*f);
        ++st_.frames_in;
        ++st_.reassembled;
        reassembled_ = true;  // its buffer is in use until the next receive(): stop after this packet
        asm_cur_ ^= 1;
      }
    }
    at += chunk_stride(len);
  }
  return true;
}

// ---------------------------------------------------------------- sending

uint32_t Channel::window_field() const noexcept {
  return static_cast<uint32_t>(delivered_ + o_.window - contig_);
}

uint64_t Channel::send_limit() const noexcept { return std::min(acked_ + o_.window, peer_limit_); }

std::byte* Channel::control_packet(PacketType t, size_t payload_len, std::vector<std::span<const std::byte>>& out) {
  std::vector<std::byte>& c = ctl_[ctl_used_++];
  Header h;
  h.type = t;
  h.src_conn = id_;
  h.dst_conn = peer_;
  h.ack = t == PacketType::Syn ? 0 : contig_;
  h.window = t == PacketType::Syn ? o_.window : window_field();
  h.payload_len = static_cast<uint16_t>(payload_len);
  write_header(c.data(), h);
  out.emplace_back(c.data(), kHeaderBytes + payload_len);
  ++st_.packets_out;
  st_.bytes_out += kHeaderBytes + payload_len;
  return c.data() + kHeaderBytes;
}

void Channel::build_ack(std::vector<std::span<const std::byte>>& out, uint64_t now) {
  const size_t max_ranges = std::min(kMaxNakRanges, (send_max_ - kHeaderBytes - 4) / kNakRangeBytes);
  std::array<NakRange, kMaxNakRanges> ranges{};
  size_t n = 0;
  for (uint64_t seq = contig_ + 1; seq <= highest_in_ && n < max_ranges; ++seq) {
    if (rx_[seq % o_.window].seq == seq) continue;
    if (n > 0 && ranges[n - 1].first + ranges[n - 1].count == seq) {
      ++ranges[n - 1].count;
    } else {
      ranges[n++] = NakRange{seq, 1};
    }
  }
  std::byte* body = control_packet(PacketType::Ack, 4 + n * kNakRangeBytes, out);
  store_le(body, n, 2);
  store_le(body + 2, 0, 2);
  for (size_t i = 0; i < n; ++i) {
    store_le(body + 4 + i * kNakRangeBytes, ranges[i].first, 8);
    store_le(body + 4 + i * kNakRangeBytes + 8, ranges[i].count, 4);
  }
  seal(body - kHeaderBytes, kHeaderBytes + 4 + n * kNakRangeBytes);
  ++st_.acks_out;
  if (n > 0) {
    st_.naks_out += n;
    last_nak_ = now;
  }
  acked_out();
  nak_now_ = false;
}

void Channel::acked_out() noexcept {
  ack_now_ = false;
  ack_due_ = 0;
  unacked_in_ = 0;
}

void Channel::send_slot(uint64_t seq, uint64_t now, std::vector<std::span<const std::byte>>& out) {
  TxSlot& s = tx_[seq % o_.window];
  std::byte* p = tx_slot(seq);
  set_ack(p, contig_, window_field());
  seal(p, s.len);
  out.emplace_back(p, s.len);
  if (s.nak) {
    s.nak = false;
    --naks_pending_;
  }
  if (++s.sends > 1) ++st_.retransmits;
  s.last_sent = now;
  ++st_.packets_out;
  st_.bytes_out += s.len;
  acked_out();  // every Data packet carries the cumulative ack
}

void Channel::finish_packet(uint64_t now, std::vector<std::span<const std::byte>>& out) {
  const uint64_t seq = next_seq_++;
  Header h;
  h.type = PacketType::Data;
  h.src_conn = id_;
  h.dst_conn = peer_;
  h.seq = seq;
  h.payload_len = static_cast<uint16_t>(build_len_ - kHeaderBytes);
  write_header(tx_slot(seq), h);
  TxSlot& s = tx_[seq % o_.window];
  s = TxSlot{};
  s.len = build_len_;
  if (seq == acked_ + 1) rto_armed_at_ = now;  // the first in flight: its timer starts
  ++st_.data_out;
  send_slot(seq, now, out);
  building_ = false;
}

void Channel::pack(link::Session& s, uint64_t now, std::vector<std::span<const std::byte>>& out) {
  const size_t max_chunk = send_max_ - kHeaderBytes - kChunkHeader;  // a frame up to this fits one packet
  size_t consumed = 0;
  bool stopped = false;
  bool counted_full = false;
  for (const auto& span : s.next_output()) {
    size_t off = 0;
    while (off < span.size() && !stopped) {
      if (frame_left_ == 0) {
        // The next frame's 4-byte length prefix (stream framing: see link/wire.hpp).
        while (len_have_ < 4 && off < span.size()) {
          len_buf_[len_have_++] = span[off++];
          ++consumed;
        }
        if (len_have_ < 4) break;
        len_have_ = 0;
        frame_left_ = static_cast<uint32_t>(load_le(len_buf_.data(), 4));
        frame_started_ = false;
        continue;
      }
      if (!building_) {
        if (next_seq_ > send_limit()) {
          if (!counted_full) ++st_.window_full;
          counted_full = true;
          stopped = true;
          break;
        }
        building_ = true;
        build_len_ = kHeaderBytes;
      }
      const size_t room = send_max_ - build_len_;
      if (room < kChunkHeader + 8) {
        finish_packet(now, out);
        continue;
      }
      const size_t avail = room - kChunkHeader;
      if (!frame_started_ && frame_left_ <= max_chunk && frame_left_ > avail) {
        // It fits in a packet of its own but not in what is left of this one: a new packet,
        // so that the receiver gets it whole (zero copy) rather than in two parts.
        finish_packet(now, out);
        continue;
      }
      const size_t take = std::min({size_t{frame_left_}, avail, span.size() - off});
      const uint8_t flags = static_cast<uint8_t>((frame_started_ ? 0 : kFirst) | (take == frame_left_ ? kLast : 0));
      std::byte* c = tx_slot(next_seq_) + build_len_;
      store_le(c, take, 2);
      c[2] = static_cast<std::byte>(flags);
      c[3] = std::byte{0};
      std::memcpy(c + kChunkHeader, span.data() + off, take);
      const size_t stride = std::min(chunk_stride(take), room);
      std::memset(c + kChunkHeader + take, 0, stride - kChunkHeader - take);
      build_len_ += static_cast<uint32_t>(stride);
      if (!frame_started_ && (flags & kLast) == 0) ++st_.fragmented;
      frame_started_ = true;
      frame_left_ -= static_cast<uint32_t>(take);
      if (frame_left_ == 0) ++st_.frames_out;
      off += take;
      consumed += take;
    }
    if (stopped) break;
  }
  if (building_) finish_packet(now, out);
  if (consumed > 0) s.wrote(consumed);
}

void Channel::collect(link::Session* s, uint64_t now, std::vector<std::span<const std::byte>>& out) {
  ctl_used_ = 0;
  if (state_ == ChannelState::Down) {
    if (fin_owed_) {
      fin_owed_ = false;
      seal(control_packet(PacketType::Fin, 0, out) - kHeaderBytes, kHeaderBytes);
      ++st_.fins_out;
    }
    return;
  }
  if (syn_owed_ || (state_ == ChannelState::Connecting && now - last_syn_ >= o_.syn_every_ns)) {
    std::byte* body = control_packet(PacketType::Syn, kSynBody, out);
    store_le(body, o_.max_packet, 4);
    store_le(body + 4, 0, 4);
    seal(body - kHeaderBytes, kHeaderBytes + kSynBody);
    syn_owed_ = false;
    last_syn_ = now;
    ++st_.syns_out;
  }
  if (state_ != ChannelState::Up) return;
  // Repairs first: what the peer named missing (at most once a round trip per packet: a NAK
  // older than the resend is stale), then the oldest packets when acks stopped coming.
  if (naks_pending_ > 0) {
    for (uint64_t seq = acked_ + 1; seq < next_seq_ && naks_pending_ > 0; ++seq) {
      const TxSlot& t = tx_[seq % o_.window];
      if (t.nak && now - t.last_sent >= srtt_) send_slot(seq, now, out);
    }
  }
  if (in_flight() > 0 && now - rto_armed_at_ >= rto_) {
    ++st_.rto_fires;
    const uint64_t end = std::min<uint64_t>(acked_ + 1 + kRtoBurst, next_seq_);
    for (uint64_t seq = acked_ + 1; seq < end; ++seq) send_slot(seq, now, out);
    rto_ = std::min(rto_ * 2, o_.rto_max_ns);
    st_.rto_ns = rto_;
    rto_armed_at_ = now;
  }
  if (s != nullptr) pack(*s, now, out);
  const bool holes = highest_in_ > contig_;
  if (ack_now_ || nak_now_ || (ack_due_ != 0 && now >= ack_due_) || (holes && now - last_nak_ >= o_.nak_every_ns)) {
    build_ack(out, now);
  }
}

uint64_t Channel::next_timer_ns() const noexcept {
  if (state_ == ChannelState::Down) return fin_owed_ ? 0 : UINT64_MAX;
  if (syn_owed_ || ack_now_ || nak_now_) return 0;
  uint64_t t = UINT64_MAX;
  if (state_ == ChannelState::Connecting) t = last_syn_ + o_.syn_every_ns;
  if (ack_due_ != 0) t = std::min(t, ack_due_);
  if (highest_in_ > contig_) t = std::min(t, last_nak_ + o_.nak_every_ns);
  if (in_flight() > 0) t = std::min(t, rto_armed_at_ + rto_);
  if (naks_pending_ > 0) {
    for (uint64_t seq = acked_ + 1; seq < next_seq_; ++seq) {
      const TxSlot& s = tx_[seq % o_.window];
      if (s.nak) t = std::min(t, s.last_sent + srtt_);
    }
  }
  return t;
}

}  // namespace bus::dgram
