// The TCP link: link frames over a non-blocking TCP connection (TCP_NODELAY), the reference
// every other link kind is measured against. Output leaves in one sendmsg per batch (the
// session's ready spans as one iovec array); input is read 64 KiB at a time and split into
// frames in place.
//
// Security (optional): TLS over the socket (tls/stream.hpp) and a token. A link with TLS stays
// Connecting until its handshake is done (wants_write() and the descriptor drive it, as for the
// TCP connect); then output is gathered into one buffer and encrypted as a batch, and input
// decrypted into the frame reader (has_input(): bytes OpenSSL holds already). A token goes out
// as the connection's first stream frame ("BUSTOKEN" + the secret) before any link frame; the
// accepting side takes such a frame off the stream and keeps it for its owner
// (presented_token()). Neither knows what identities mean.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "link/link.hpp"
#include "socket/endpoint.hpp"
#include "socket/frame.hpp"
#include "tls/stream.hpp"

namespace bus::tcp {

/// How a link protects itself: TLS (a context of the right role; null = plaintext), the name
/// the server's certificate must carry (client side; "" = no name check) and a token to present
/// (client side; "" = none).
struct LinkSecurity {
  const tls::Context* tls = nullptr;
  std::string server_name;
  std::string token;
};

/// The marker of a token frame: the first stream frame of a connection may be "BUSTOKEN" then
/// the token (no link frame starts with 'B').
inline constexpr std::string_view kTokenMagic = "BUSTOKEN";
inline constexpr size_t kMaxToken = 1024;

class TcpLink final : public link::Link {
 public:
  /// Starts a non-blocking connect (Connecting; wait_fd() turns writable when it is done).
  /// Errors: the name does not resolve, no socket.
  [[nodiscard]] static Expected<std::unique_ptr<TcpLink>> connect(const Endpoint& peer, uint32_t max_frame,
                                                                  const LinkSecurity& sec = {});
  /// Takes a connected socket (from TcpListener::accept). With `tls` (a server context) it is
  /// Connecting until the TLS handshake is done (call finish_connect() when it is ready).
  [[nodiscard]] static std::unique_ptr<TcpLink> adopt(int fd, uint32_t max_frame, std::string peer,
                                                      const tls::Context* tls = nullptr);

  TcpLink(const TcpLink&) = delete;
  TcpLink& operator=(const TcpLink&) = delete;
  ~TcpLink() override;

  [[nodiscard]] link::LinkState state() const noexcept override { return state_; }
  [[nodiscard]] const std::string& error() const noexcept override { return error_; }
  [[nodiscard]] int wait_fd() const noexcept override { return fd_; }
  [[nodiscard]] bool wants_write() const noexcept override;
  [[nodiscard]] bool has_input() const noexcept override { return tls_ != nullptr && tls_->has_pending(); }
  [[nodiscard]] bool arm() noexcept override { return !has_input(); }
  void finish_connect() override;
  Result<size_t> transmit(link::Session& s) override;
  Result<size_t> receive(std::vector<link::Frame>& out, size_t max) override;
  void close(const std::string& why) override;
  [[nodiscard]] const link::LinkCounters& counters() const noexcept override { return c_; }
  /// The peer's address, "10.0.0.2:7400".
  [[nodiscard]] const std::string& peer() const noexcept { return peer_; }
  /// Whether the connection is (to be) encrypted.
  [[nodiscard]] bool secure() const noexcept { return tls_ != nullptr || tls_ctx_ != nullptr; }
  /// The other side's verified certificate identity ("" = none; see tls::Stream::peer_identity()).
  [[nodiscard]] std::string peer_identity() const { return tls_ ? tls_->peer_identity() : std::string(); }
  /// The token the other side presented as its first frame ("" = none).
  [[nodiscard]] const std::string& presented_token() const noexcept { return presented_token_; }
  /// Whether the TCP connect is done and only the TLS handshake is left (for messages).
  [[nodiscard]] bool in_tls_handshake() const noexcept { return tcp_up_ && tls_ctx_ != nullptr && state_ == link::LinkState::Connecting; }

 private:
  TcpLink(int fd, uint32_t max_frame, std::string peer, link::LinkState st);
  void down(const std::string& why);
  void connected();  // TCP is up: TLS next, or Up
  Result<size_t> transmit_tls(link::Session& s);
  bool take_token_frame(std::span<const std::byte> f);

  int fd_ = -1;
  link::LinkState state_;
  std::string error_;
  std::string peer_;
  sock::FrameReader reader_;
  bool wants_write_ = false;
  link::LinkCounters c_;
  // Security.
  const tls::Context* tls_ctx_ = nullptr;  // TLS wanted (set until the handshake starts)
  std::unique_ptr<tls::Stream> tls_;
  std::string server_name_;
  std::string token_out_;        // to present first
  std::string presented_token_;  // what the other side presented
  bool tcp_up_ = false;
  bool first_frame_ = true;      // the next frame in is the connection's first
  std::vector<std::byte> tx_;    // TLS: gathered output, encrypted as one batch (capacity kept)
  size_t tx_sent_ = 0;
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
  /// address; WouldBlock when none is pending, LimitReached when the process is out of file
  /// descriptors (EMFILE/ENFILE: the connection stays pending).
  [[nodiscard]] Result<int> accept(std::string* peer);

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace bus::tcp
