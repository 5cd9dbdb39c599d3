#include "links/peer.hpp"

#include <algorithm>

namespace bus::links {
namespace {
constexpr uint64_t kMs = 1'000'000;
}

const char* to_string(PeerState s) noexcept {
  switch (s) {
    case PeerState::Waiting: return "waiting";
    case PeerState::Connecting: return "connecting";
    case PeerState::Handshake: return "handshake";
    case PeerState::Up: return "up";
  }
  return "?";
}

Peer::Peer(PeerOptions o, uint64_t session_id, uint64_t seed)
    : o_(std::move(o)), session_(link::SessionOptions{o_.hold_bytes, 64}, session_id), rng_(seed) {
  local_.cluster = o_.cluster;
  local_.node = o_.node;
  (void)link::append_hello(hello_bytes_, local_);  // names are checked by the config
}

void Peer::start_link(std::unique_ptr<link::Link> l, uint64_t now_ns) {
  link_ = std::move(l);
  state_since_ = last_heard_ = last_sent_ = now_ns;
  if (link_->state() == link::LinkState::Connecting) {
    state_ = PeerState::Connecting;
    return;
  }
  state_ = PeerState::Handshake;
  ++c_.connects;
  session_.on_connected(hello_bytes_);
}

void Peer::fail(const std::string& why, uint64_t now_ns) {
  last_error_ = why;
  if (link_) {
    link_->close(why);
    retired_totals_.add(link_->counters());
  }
  retired_ = std::move(link_);  // receive()'s views into its buffer stay valid until the next call
  if (state_ == PeerState::Handshake || state_ == PeerState::Up) {
    ++c_.disconnects;
    session_.on_disconnected();
  }
  state_ = PeerState::Waiting;
  state_since_ = now_ns;
  // Exponential back-off with +-25% jitter, so that a mesh of busd that lost a switch does not
  // reconnect in lockstep.
  backoff_ms_ = backoff_ms_ == 0 ? o_.backoff_min_ms : std::min<uint64_t>(backoff_ms_ * 2, o_.backoff_max_ms);
  const uint64_t spread = backoff_ms_ / 2;
  const uint64_t jittered = backoff_ms_ - backoff_ms_ / 4 + (spread ? rng_() % (spread + 1) : 0);
  retry_at_ = now_ns + jittered * kMs;
}

void Peer::adopt(std::unique_ptr<link::Link> l, uint64_t now_ns) {
  if (link_) fail("replaced by a new connection from the peer", now_ns);
  start_link(std::move(l), now_ns);
}

void Peer::adopt_greeted(std::unique_ptr<link::Link> l, const link::Hello& hello,
                         std::span<const link::Frame> rest, uint64_t now_ns) {
  adopt(std::move(l), now_ns);
  remote_ = hello;
  state_ = PeerState::Up;
  backoff_ms_ = 0;
  for (const link::Frame& f : rest) {
    if (f.type == link::FrameType::Hello) {
      fail("a second Hello on one connection", now_ns);
      return;
    }
    auto in = session_.on_frame(f);
    if (!in) {
      fail(in.error().message(), now_ns);
      return;
    }
    if (*in != link::Session::Inbound::Control) {
      fail("Data before this side's Resume", now_ns);
      return;
    }
  }
}

void Peer::flush(uint64_t now_ns) {
  if (!link_ || link_->state() != link::LinkState::Up) return;
  const uint64_t before = link_->counters().bytes_out;
  if (auto t = link_->transmit(session_); !t) {
    fail(link_->error(), now_ns);
    return;
  }
  if (link_->counters().bytes_out != before) last_sent_ = now_ns;
}

void Peer::tick(uint64_t now_ns) {
  retired_.reset();
  switch (state_) {
    case PeerState::Waiting: {
      if (!o_.dial || now_ns < retry_at_) return;
      Expected<std::unique_ptr<link::Link>> l =
          o_.dialer ? o_.dialer()
                    : Expected<std::unique_ptr<link::Link>>(tcp::TcpLink::connect(o_.address, o_.max_frame, o_.security));
      if (!l) {
        fail(l.error().message(), now_ns);
        return;
      }
      start_link(std::move(*l), now_ns);
      if (link_->state() == link::LinkState::Down) fail(link_->error(), now_ns);
      return;
    }
    case PeerState::Connecting:
      link_->finish_connect();
      if (link_->state() == link::LinkState::Down) {
        fail(link_->error(), now_ns);
        return;
      }
      if (link_->state() != link::LinkState::Up) {
        if (now_ns - state_since_ > uint64_t{o_.handshake_ms} * kMs) {
          const auto* t = dynamic_cast<const tcp::TcpLink*>(link_.get());
          const std::string where = o_.target.empty() ? o_.address.to_string() : o_.target;
          if (t != nullptr && t->in_tls_handshake()) {
            ++c_.handshake_failures;
            fail("TLS handshake with " + where + " not finished within " + std::to_string(o_.handshake_ms) + " ms",
                 now_ns);
          } else {
            fail("connect to " + where + " timed out", now_ns);
          }
        }
        return;
      }
      state_ = PeerState::Handshake;
      state_since_ = last_heard_ = last_sent_ = now_ns;
      ++c_.connects;
      session_.on_connected(hello_bytes_);
      break;
    case PeerState::Handshake:
      if (now_ns - state_since_ > uint64_t{o_.handshake_ms} * kMs) {
        ++c_.handshake_failures;
        fail("no Hello within " + std::to_string(o_.handshake_ms) + " ms", now_ns);
        return;
      }
      break;
    case PeerState::Up:
      if (now_ns - last_heard_ > uint64_t{o_.dead_after_ms} * kMs) {
        fail("nothing heard for " + std::to_string(o_.dead_after_ms) + " ms (heartbeat timeout)", now_ns);
        return;
      }
      // A heartbeat when nothing else went out for heartbeat_ms, and one each heartbeat_ms in
      // any case: its echo measures the round trip.
      if (now_ns - last_sent_ >= uint64_t{o_.heartbeat_ms} * kMs || now_ns - last_probe_ >= uint64_t{o_.heartbeat_ms} * kMs) {
        session_.heartbeat(now_ns);
        last_probe_ = now_ns;
        ++c_.heartbeats_sent;
      }
      break;
  }
  flush(now_ns);
}

void Peer::receive(std::vector<std::span<const std::byte>>& out, uint64_t now_ns) {
  retired_.reset();
  if (!link_ || link_->state() != link::LinkState::Up || state_ == PeerState::Connecting) return;
  frames_.clear();
  auto got = link_->receive(frames_, 1024);
  if (!got) {
    fail(link_->error(), now_ns);
    return;
  }
  if (*got > 0) last_heard_ = now_ns;
  for (const link::Frame& f : frames_) {
    if (state_ == PeerState::Handshake) {
      if (f.type != link::FrameType::Hello) {
        ++c_.handshake_failures;
        fail("the peer's first frame is not a Hello", now_ns);
        return;
      }
      auto h = link::parse_hello(f);
      auto v = h ? link::negotiate(local_, *h) : tl::unexpected(h.error());
      if (!v) {
        ++c_.handshake_failures;
        fail(v.error().message(), now_ns);
        return;
      }
      remote_ = *h;
      state_ = PeerState::Up;
      backoff_ms_ = 0;  // a good connection resets the back-off
      continue;
    }
    auto in = session_.on_frame(f);
    if (!in) {
      fail(in.error().message(), now_ns);
      return;
    }
    if (*in == link::Session::Inbound::Deliver) out.push_back(f.body);
  }
  if (const uint64_t probe = session_.take_echo(); probe != 0 && probe <= now_ns) {
    const uint64_t sample = now_ns - probe;
    rtt_ns_ = rtt_ns_ == 0 ? sample : (7 * rtt_ns_ + sample) / 8;  // as TCP's SRTT (RFC 6298)
    rtt_sample_ = sample;
  }
  session_.flush_ack();  // written by the next tick()
}

Result<void> Peer::send(std::span<const std::byte> envelope) {
  const std::span<const std::byte> one[1] = {envelope};
  return send(std::span<const std::span<const std::byte>>(one));
}

Result<void> Peer::send(std::span<const std::span<const std::byte>> parts) {
  auto r = session_.offer(parts);
  if (!r) {
    if (r.error() == Errc::WouldBlock) ++c_.refused_held_full;
    return tl::unexpected(r.error());
  }
  return {};
}

}  // namespace bus::links
