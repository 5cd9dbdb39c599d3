// The TCP link: link frames over a non-blocking TCP connection (TCP_NODELAY), the reference
// every other link kind is measured against. Output leaves in one sendmsg per batch (the
// session's ready spans as one iovec array); input is read 64 KiB at a time and split into
// frames in place.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "link/link.hpp"
#include "socket/endpoint.hpp"
#include "socket/frame.hpp"

namespace bus::tcp {

class TcpLink final : public link::Link {
 public:
  /// Starts a non-blocking connect (Connecting; wait_fd() turns writable when it is done).
  /// Errors: the name does not resolve, no socket.
  [[nodiscard]] static Expected<std::unique_ptr<TcpLink>> connect(const Endpoint& peer, uint32_t max_frame);
  /// Takes a connected socket (from TcpListener::accept).
  [[nodiscard]] static std::unique_ptr<TcpLink> adopt(int fd, uint32_t max_frame, std::string peer);

  TcpLink(const TcpLink&) = delete;
  TcpLink& operator=(const TcpLink&) = delete;
  ~TcpLink() override;

  [[nodiscard]] link::LinkState state() const noexcept override { return state_; }
  [[nodiscard]] const std::string& error() const noexcept override { return error_; }
  [[nodiscard]] int wait_fd() const noexcept override { return fd_; }
  [[nodiscard]] bool wants_write() const noexcept override { return wants_write_ || state_ == link::LinkState::Connecting; }
  void finish_connect() override;
  Result<size_t> transmit(link::Session& s) override;
  Result<size_t> receive(std::vector<link::Frame>& out, size_t max) override;
  void close(const std::string& why) override;
  [[nodiscard]] const link::LinkCounters& counters() const noexcept override { return c_; }
  /// The peer's address, "10.0.0.2:7400".
  [[nodiscard]] const std::string& peer() const noexcept { return peer_; }

 private:
  TcpLink(int fd, uint32_t max_frame, std::string peer, link::LinkState st);
  void down(const std::string& why);

  int fd_ = -1;
  link::LinkState state_;
  std::string error_;
  std::string peer_;
  sock::FrameReader reader_;
  bool wants_write_ = false;
  link::LinkCounters c_;
};

/// A listening TCP socket (non-blocking, SO_REUSEADDR). busd binds links to loopback unless the
/// config says otherwise.
class TcpListener {
 public:
  TcpListener() = default;
  TcpListener(TcpListener&& o) noexcept : fd_(o.fd_), port_(o.port_) { o.fd_ = -1; }
  TcpListener& operator=(TcpListener&& o) noexcept;
  ~TcpListener();
  /// Port 0 picks a free one (see port()).
  [[nodiscard]] static Expected<TcpListener> listen(const Endpoint& local);
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] uint16_t port() const noexcept { return port_; }
  /// One pending connection: a connected, non-blocking, TCP_NODELAY socket and the peer's
  /// address; WouldBlock when none is pending.
  [[nodiscard]] Result<int> accept(std::string* peer);

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace bus::tcp
