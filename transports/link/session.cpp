#include "link/session.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace bus::link {
namespace {

uint64_t le(const std::byte* p, int n) noexcept {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

std::string num(uint64_t v) { return std::to_string(v); }

}  // namespace

Session::Session(const SessionOptions& o, uint64_t session_id)
    : o_(o), id_(session_id), cap_(std::max<uint64_t>(o.hold_bytes, 4096)), buf_(cap_) {
  if (o_.ack_every == 0) o_.ack_every = 1;
}

uint32_t Session::record_len(uint64_t p) const noexcept {
  return static_cast<uint32_t>(kLengthBytes + le(at(p), 4));
}

uint64_t Session::record_seq(uint64_t p) const noexcept { return le(at(p) + kLengthBytes + 4, 8); }

// ---------------------------------------------------------------- sending

Result<uint64_t> Session::offer(std::span<const std::byte> envelope) {
  const std::span<const std::byte> one[1] = {envelope};
  return offer(std::span<const std::span<const std::byte>>(one));
}

bool Session::can_offer(size_t body) const noexcept {
  const uint64_t need = kPrefixBytes + body;
  if (need > cap_ || held_ == 0) return need <= cap_;
  uint64_t start = tail_;
  if (tail_ % cap_ + need > cap_) start = lap_end(tail_);
  return start + need - head_ <= cap_;
}

Result<uint64_t> Session::offer(std::span<const std::span<const std::byte>> parts) {
  size_t body = 0;
  for (const auto& p : parts) body += p.size();
  const uint64_t need = kPrefixBytes + body;
  if (need > cap_ || body == 0 || body > UINT32_MAX - kHeaderBytes) {
    return tl::unexpected(body == 0 ? Errc::InvalidArgument : Errc::TooLarge);
  }
  uint64_t start = tail_;
  if (tail_ % cap_ + need > cap_) start = lap_end(tail_);  // would straddle the end: next lap
  if (start + need - head_ > cap_) {
    ++stats_.refused_full;
    return tl::unexpected(Errc::WouldBlock);
  }
  if (held_ == 0) {
    // Empty: the positions restart at this record (no gap to remember).
    head_ = send_ = frame_end_ = start;
    has_gap_ = false;
  } else if (start != tail_) {
    has_gap_ = true;
    gap_ = tail_;
  }
  const uint64_t seq = next_seq_++;
  std::byte* out = buf_.data() + start % cap_;
  write_prefix(out, FrameType::Data, seq, static_cast<uint32_t>(body));
  out += kPrefixBytes;
  for (const auto& p : parts) {
    if (!p.empty()) std::memcpy(out, p.data(), p.size());
    out += p.size();
  }
  tail_ = start + need;
  ++held_;
  ++stats_.offered;
  stats_.held_high_water = std::max<uint64_t>(stats_.held_high_water, tail_ - head_);
  return seq;
}

void Session::build_control() {
  if (ctl_sent_ < ctl_.size()) return;  // the previous ones are still going out
  ctl_.clear();
  ctl_sent_ = 0;
  if (!connected_) return;
  if (want_resume_) {
    append_resume(ctl_, last_delivered_, ResumeBody{id_, peer_session_});
    want_resume_ = false;
  }
  if (want_ack_ && resumed_) {
    append_frame(ctl_, FrameType::Ack, last_delivered_);
    want_ack_ = false;
    unacked_in_ = 0;
    ++stats_.acks_sent;
  }
  if (want_heartbeat_) {
    append_frame(ctl_, FrameType::Heartbeat, heartbeat_stamp_ & ~kEchoBit);
    want_heartbeat_ = false;
  }
  if (want_echo_) {
    append_frame(ctl_, FrameType::Heartbeat, echo_stamp_);
    want_echo_ = false;
  }
}

std::span<const std::span<const std::byte>> Session::next_output() {
  build_control();
  size_t n = 0;
  // Data only after this side's own Resume is on its way (it may wait behind a first frame
  // such as the Hello; the peer's Resume may have come first).
  const bool data = connected_ && resumed_ && !want_resume_;
  // The rest of a Data frame already started: control frames only go between frames.
  if (data && frame_end_ > send_) out_[n++] = {at(send_), static_cast<size_t>(frame_end_ - send_)};
  if (ctl_sent_ < ctl_.size()) out_[n++] = std::span<const std::byte>(ctl_).subspan(ctl_sent_);
  if (data) {
    // At most two spans: to the gap or the end of this lap (a record may end exactly there
    // without a gap), then from the start of the next lap.
    const uint64_t p = skip_gap(std::max(send_, frame_end_));
    if (p < tail_) {
      const bool gap_ahead = has_gap_ && gap_ > p && gap_ < tail_;
      const uint64_t end1 = gap_ahead ? gap_ : std::min(tail_, lap_end(p));
      out_[n++] = {at(p), static_cast<size_t>(end1 - p)};
      const uint64_t q = gap_ahead ? lap_end(gap_) : end1;
      if (q < tail_) out_[n++] = {at(q), static_cast<size_t>(tail_ - q)};
    }
  }
  return {out_.data(), n};
}

void Session::wrote(size_t n) noexcept {
  // Data only after this side's own Resume is on its way (it may wait behind a first frame
  // such as the Hello; the peer's Resume may have come first).
  const bool data = connected_ && resumed_ && !want_resume_;
  if (data && frame_end_ > send_) {
    const uint64_t k = std::min<uint64_t>(n, frame_end_ - send_);
    send_ += k;
    n -= static_cast<size_t>(k);
    if (send_ < frame_end_) return;
  }
  if (ctl_sent_ < ctl_.size()) {
    const size_t k = std::min(n, ctl_.size() - ctl_sent_);
    ctl_sent_ += k;
    n -= k;
    if (ctl_sent_ < ctl_.size()) return;
  }
  while (n > 0 && data) {
    send_ = skip_gap(send_);
    if (send_ >= tail_) break;  // more than was offered: a transport bug, ignore the excess
    const uint64_t seq = record_seq(send_);
    frame_end_ = send_ + record_len(send_);
    if (seq <= max_sent_) {
      ++stats_.frames_resent;
    } else {
      ++stats_.frames_sent;
      max_sent_ = seq;
    }
    const uint64_t k = std::min<uint64_t>(n, frame_end_ - send_);
    send_ += k;
    n -= static_cast<size_t>(k);
  }
  if (send_ == frame_end_) send_ = frame_end_ = skip_gap(send_);
}

void Session::free_through(uint64_t seq) noexcept {
  while (held_ > 0) {
    if (has_gap_ && head_ == gap_) {
      head_ = lap_end(gap_);
      has_gap_ = false;
    }
    const uint64_t p = head_;
    if (record_seq(p) > seq) break;
    const uint64_t end = p + record_len(p);
    if (send_ > p && send_ < end) break;  // being written: never free under the writer
    head_ = end;
    --held_;
  }
  if (held_ == 0) {
    // Nothing held: whatever was sent is acknowledged; the next offer restarts the positions.
    head_ = tail_;
    has_gap_ = false;
  }
  if (send_ < head_) send_ = frame_end_ = head_;
}

void Session::rewind_to_after(uint64_t seq) noexcept {
  uint64_t p = head_;
  for (size_t i = 0; i < held_; ++i) {
    p = skip_gap(p);
    if (record_seq(p) > seq) break;
    p += record_len(p);
  }
  send_ = frame_end_ = p;
}

// ---------------------------------------------------------------- receiving

Expected<Session::Inbound> Session::on_frame(const Frame& f) {
  switch (f.type) {
    case FrameType::Data: {
      if (!resumed_) return fail(Errc::BadMessage, "link Data frame before the peer's Resume");
      const uint64_t seq = f.value;
      if (base_unknown_) {  // a new peer session: its first frame sets the base
        base_unknown_ = false;
        last_delivered_ = seq - 1;
      }
      if (seq <= last_delivered_) {
        ++stats_.duplicates;
        return Inbound::Duplicate;
      }
      if (seq != last_delivered_ + 1) {
        return fail(Errc::BadMessage, "link Data frame " + num(seq) + " after " + num(last_delivered_) + " (a gap)");
      }
      last_delivered_ = seq;
      ++stats_.delivered;
      if (++unacked_in_ >= o_.ack_every) want_ack_ = true;
      return Inbound::Deliver;
    }
    case FrameType::Ack: {
      if (!resumed_) return fail(Errc::BadMessage, "link Ack before the peer's Resume");
      if (f.value > max_sent_) {
        return fail(Errc::BadMessage, "link Ack of " + num(f.value) + " beyond the last frame sent (" + num(max_sent_) + ")");
      }
      ++stats_.acks_received;
      if (f.value > acked_) {
        acked_ = f.value;
        free_through(acked_);
      }
      return Inbound::Control;
    }
    case FrameType::Resume: {
      const ResumeBody b = resume_body(f);
      if (b.sender_session == 0) return fail(Errc::BadMessage, "link Resume with session id 0");
      if (resumed_) return fail(Errc::BadMessage, "a second link Resume on one connection");
      ++stats_.resumes;
      // A new incarnation of the peer (or the first): what it reports having received counts
      // from its own start, not from what the previous one acknowledged. Resend everything held.
      const bool new_peer = b.sender_session != peer_session_;
      if (new_peer) {
        if (peer_session_ != 0) ++stats_.peer_restarts;
        peer_session_ = b.sender_session;
        last_delivered_ = 0;
        base_unknown_ = true;
        unacked_in_ = 0;
        want_ack_ = false;
      }
      if (b.seen_session == id_ && !new_peer) {
        if (f.value > max_sent_) {
          return fail(Errc::BadMessage, "link Resume from " + num(f.value) + " beyond the last frame sent (" + num(max_sent_) + ")");
        }
        if (f.value < acked_) {
          return fail(Errc::BadMessage, "link Resume from " + num(f.value) + " below what the peer acknowledged (" + num(acked_) + ")");
        }
        acked_ = f.value;
        free_through(acked_);
        rewind_to_after(acked_);
      } else {
        rewind_to_after(0);  // the peer does not know this session: everything held again
      }
      resumed_ = true;
      return Inbound::Control;
    }
    case FrameType::Heartbeat:
      if ((f.value & kEchoBit) != 0) {
        echoed_ = f.value & ~kEchoBit;
      } else if (f.value != 0) {
        want_echo_ = true;  // answered with the next output
        echo_stamp_ = f.value | kEchoBit;
      }
      return Inbound::Control;
    case FrameType::Hello:
      return fail(Errc::BadMessage, "link Hello after the handshake");
  }
  return fail(Errc::BadMessage, "link frame of unknown type");
}

void Session::flush_ack() noexcept {
  if (unacked_in_ > 0) want_ack_ = true;
}

void Session::heartbeat(uint64_t stamp) noexcept {
  want_heartbeat_ = true;
  heartbeat_stamp_ = stamp;
}

// ---------------------------------------------------------------- connection

void Session::on_connected(std::span<const std::byte> first) {
  connected_ = true;
  resumed_ = false;
  want_resume_ = true;
  want_ack_ = false;
  want_heartbeat_ = want_echo_ = false;
  echoed_ = 0;
  ctl_.assign(first.begin(), first.end());  // the Resume follows once these are written
  ctl_sent_ = 0;
  rewind_to_after(0);
}

void Session::on_disconnected() noexcept {
  connected_ = false;
  resumed_ = false;
  want_resume_ = want_ack_ = want_heartbeat_ = want_echo_ = false;
  echoed_ = 0;
  unacked_in_ = 0;
  ctl_.clear();
  ctl_sent_ = 0;
  rewind_to_after(0);
}

}  // namespace bus::link
