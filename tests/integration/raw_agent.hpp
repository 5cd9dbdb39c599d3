// A busd agent without libbus, for fault tests: it speaks the control protocol itself (Hello,
// Register; Registered with the segment and 4 eventfds as SCM_RIGHTS), maps the segment and
// attaches a RingProducer to its ring towards busd, so that it can write anything there: records
// that are not envelopes, envelopes above the limit, or a broken ring (raw access to the bytes).
// Only the transport pieces are used (shm/, socket/): none of the SDK's client logic.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bus/clock.hpp"
#include "bus/control.hpp"
#include "bus/envelope.hpp"
#include "bus/limits.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "socket/frame.hpp"

namespace bus::test {

class RawAgent {
 public:
  struct Reply {
    control::Body type = control::Body::NONE;
    Errc code = Errc::Ok;  // ErrorReply only
    std::string message;   // ErrorReply only
    uint64_t ref = 0;      // ErrorReply / Ok / AgentList
  };

  RawAgent() = default;
  RawAgent(const RawAgent&) = delete;
  RawAgent& operator=(const RawAgent&) = delete;
  ~RawAgent() { close(); }

  /// Handshake; on failure returns false and `error()` says why.
  bool connect(const std::string& socket_path, const std::string& name) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof a.sun_path) return failed("socket path too long");
    std::memcpy(a.sun_path, socket_path.c_str(), socket_path.size() + 1);
    sock_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock_ < 0 || ::connect(sock_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      return failed(std::string("connect: ") + std::strerror(errno));
    }
    auto hello = control::CreateHelloDirect(fbb_, kProtocolVersion, kProtocolVersion, "raw-agent", ::getpid());
    if (!send(control::Body::Hello, hello.Union())) return false;
    auto w = next([](const control::ControlMessage& m) {
      return m.body_type() == control::Body::Welcome || m.body_type() == control::Body::ErrorReply;
    });
    if (!w || w->body_type() != control::Body::Welcome) return failed("no Welcome");
    max_message_ = w->body_as_Welcome()->max_message_size();

    auto reg = control::CreateRegisterDirect(fbb_, name.c_str());
    if (!send(control::Body::Register, reg.Union())) return false;
    auto r = next([](const control::ControlMessage& m) {
      return m.body_type() == control::Body::Registered || m.body_type() == control::Body::ErrorReply;
    });
    if (!r || r->body_type() != control::Body::Registered) return failed("no Registered");
    const auto* g = r->body_as_Registered();
    agent_id_ = g->agent_id();
    const uint64_t seg_size = g->segment_size();
    to_busd_ = g->to_busd_offset();
    to_agent_ = g->to_agent_offset();
    if (fds_.size() != 5) return failed("got " + std::to_string(fds_.size()) + " descriptors, expected 5");
    for (int i = 0; i < 4; ++i) events_[i] = shm::EventFd(fds_[1 + i]);
    auto seg = shm::Segment::attach_fd(fds_[0], seg_size);
    fds_.clear();
    if (!seg) return failed("attach_fd: " + seg.error().message());
    segment_ = std::move(*seg);
    if (to_busd_ >= segment_.size() || to_agent_ >= segment_.size()) return failed("ring offsets outside the segment");
    auto o = shm::RingProducer::attach(segment_.bytes().subspan(to_busd_), {events_[0].fd(), events_[1].fd()});
    if (!o) return failed("attach producer: " + o.error().message());
    out_ = std::move(*o);
    return true;
  }

  void close() {
    out_ = {};
    segment_ = {};
    for (auto& e : events_) e = shm::EventFd();
    for (int f : fds_) ::close(f);
    fds_.clear();
    if (sock_ >= 0) ::close(sock_);
    sock_ = -1;
  }

  /// Writes one record (tag 1, as libbus does) into the ring to busd and publishes it, waiting up
  /// to `ms` while the ring is full.
  Result<void> write(std::span<const std::byte> rec, int ms = 5000) {
    return out_.write(rec, shm::WaitStrategy::yield(), shm::Deadline::after(uint64_t(ms) * 1'000'000), 1);
  }

  /// A valid envelope from this agent.
  std::vector<std::byte> envelope(std::string_view subject, std::string_view text, size_t pad_to = 0) {
    MessageMeta meta;
    meta.msg_id = ++msg_id_;
    meta.source_id = agent_id_;
    meta.stamp = clock::stamp(clock::mono_ns(), 0);
    std::string payload(text);
    if (payload.size() < pad_to) payload.resize(pad_to, '.');
    return build_envelope({subject}, std::as_bytes(std::span(payload.data(), payload.size())), meta);
  }

  bool subscribe(uint32_t sid, const std::string& pattern) {
    auto s = control::CreateSubscribeDirect(fbb_, sid, pattern.c_str());
    if (!send(control::Body::Subscribe, s.Union())) return false;
    const uint64_t want = seq_;
    auto r = wait_reply([&](const Reply& x) { return x.ref == want; }, 5000);
    return r && r->type == control::Body::Ok;
  }

  /// FindAgents round trip: proves the control connection is alive and served.
  bool ping() {
    auto f = control::CreateFindAgentsDirect(fbb_, "", "*");
    if (!send(control::Body::FindAgents, f.Union())) return false;
    const uint64_t want = seq_;
    auto r = wait_reply([&](const Reply& x) { return x.ref == want; }, 5000);
    return r && r->type == control::Body::AgentList;
  }

  /// The next ErrorReply / Ok / AgentList that `pred` accepts (others are skipped, heartbeats
  /// answered), within `ms`. nullopt on timeout or when busd closed the connection (closed()).
  template <class Pred>
  std::optional<Reply> wait_reply(Pred&& pred, int ms) {
    const uint64_t deadline = clock::mono_ns() + uint64_t(ms) * 1'000'000;
    for (;;) {
      while (!pending_.empty()) {
        Reply r = pending_.front();
        pending_.erase(pending_.begin());
        if (pred(r)) return r;
      }
      if (!pump(deadline)) return std::nullopt;
    }
  }
  std::optional<Reply> next_error(int ms) {
    return wait_reply([](const Reply& r) { return r.type == control::Body::ErrorReply; }, ms);
  }

  /// Reads and discards replies until none arrives for `quiet_ms`; returns how many.
  size_t drain_replies(int quiet_ms) {
    size_t n = 0;
    while (wait_reply([](const Reply&) { return true; }, quiet_ms)) ++n;
    return n;
  }

  /// True once busd closed the control connection (EOF seen).
  bool closed() const noexcept { return eof_; }
  /// Waits up to `ms` for busd to close the connection.
  bool wait_closed(int ms) {
    const uint64_t deadline = clock::mono_ns() + uint64_t(ms) * 1'000'000;
    while (!eof_ && pump(deadline)) {
      pending_.clear();
    }
    return eof_;
  }

  // Raw access, for corrupting the ring.
  std::span<std::byte> ring_to_busd() const noexcept { return segment_.bytes().subspan(to_busd_); }
  std::span<std::byte> ring_to_agent() const noexcept { return segment_.bytes().subspan(to_agent_); }
  int data_fd() const noexcept { return events_[0].fd(); }  // wakes busd
  shm::RingProducer& producer() noexcept { return out_; }
  uint32_t agent_id() const noexcept { return agent_id_; }
  uint32_t max_message() const noexcept { return max_message_; }
  int socket() const noexcept { return sock_; }
  const std::string& error() const noexcept { return error_; }

 private:
  bool failed(std::string why) {
    error_ = std::move(why);
    return false;
  }

  bool send(control::Body type, flatbuffers::Offset<void> body) {
    auto msg = control::CreateControlMessage(fbb_, ++seq_, type, body);
    control::FinishControlMessageBuffer(fbb_, msg);
    auto r = sock::send_frame(sock_, {reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()), fbb_.GetSize()});
    fbb_.Clear();
    if (!r) return failed("send: " + r.error().message());
    return true;
  }

  // Reads what is there (waiting up to the deadline for something); queues replies. False on
  // timeout or EOF.
  bool pump(uint64_t deadline_ns) {
    for (;;) {
      for (;;) {
        auto f = reader_.next();
        if (!f) break;
        auto m = verify_control(*f, 1u << 20);
        if (!m) continue;
        const auto* msg = *m;
        Reply r;
        r.type = msg->body_type();
        switch (r.type) {
          case control::Body::ErrorReply:
            r.code = msg->body_as_ErrorReply()->code();
            r.ref = msg->body_as_ErrorReply()->ref_seq();
            if (msg->body_as_ErrorReply()->message() != nullptr) r.message = msg->body_as_ErrorReply()->message()->str();
            break;
          case control::Body::Ok: r.ref = msg->body_as_Ok()->ref_seq(); break;
          case control::Body::AgentList: r.ref = msg->body_as_AgentList()->ref_seq(); break;
          case control::Body::Heartbeat: {
            auto hb = control::CreateHeartbeat(fbb_, msg->body_as_Heartbeat()->seq(), clock::mono_ns());
            (void)send(control::Body::Heartbeat, hb.Union());
            continue;
          }
          case control::Body::Welcome:
          case control::Body::Registered:
            handshake_.assign(f->begin(), f->end());
            got_handshake_ = true;
            continue;
          default: continue;
        }
        pending_.push_back(std::move(r));
      }
      if (!pending_.empty() || (handshaking_ && got_handshake_)) return true;
      if (eof_) return false;
      const uint64_t now = clock::mono_ns();
      if (now >= deadline_ns) return false;
      pollfd p{sock_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<uint64_t>((deadline_ns - now) / 1'000'000 + 1, 100)));
      if (p.revents == 0) continue;
      auto r = sock::receive(sock_, reader_, &fds_);
      if (!r && r.error() != Errc::WouldBlock) eof_ = true;
    }
  }

  // The next Welcome/Registered (or an ErrorReply during the handshake), within 5 s.
  template <class Pred>
  const control::ControlMessage* next(Pred&& pred) {
    const uint64_t deadline = clock::mono_ns() + 5'000'000'000ull;
    for (;;) {
      got_handshake_ = false;
      pending_.clear();
      handshaking_ = true;
      const bool ok = pump(deadline);
      handshaking_ = false;
      if (!ok) return nullptr;
      if (!got_handshake_) return nullptr;  // an ErrorReply instead
      auto m = verify_control(handshake_, 1u << 20);
      if (m && pred(**m)) return *m;
    }
  }

  int sock_ = -1;
  sock::FrameReader reader_{1u << 20};
  std::vector<int> fds_;
  shm::EventFd events_[4];  // to_busd.data, to_busd.space, to_agent.data, to_agent.space
  shm::Segment segment_;
  shm::RingProducer out_;
  uint64_t to_busd_ = 0, to_agent_ = 0;
  uint32_t agent_id_ = 0;
  uint32_t max_message_ = 0;
  uint64_t seq_ = 0;
  uint64_t msg_id_ = 0;
  bool eof_ = false;
  bool got_handshake_ = false;
  bool handshaking_ = false;
  std::vector<std::byte> handshake_;
  std::vector<Reply> pending_;
  flatbuffers::FlatBufferBuilder fbb_{1024};
  std::string error_;
};

}  // namespace bus::test
