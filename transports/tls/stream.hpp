// TLS over a non-blocking stream socket (OpenSSL), for poll loops: nothing here blocks or
// knows what the bytes mean. A Context holds the certificate, key and CA of one side; a Stream
// is one connection's TLS state over a descriptor the caller owns and waits on.
//
// Poll-loop rules the callers follow:
//   - handshake() until Done; WantRead / WantWrite name what to wait for. A deadline is the
//     caller's (busd: cluster.handshake_ms).
//   - Bytes OpenSSL already decrypted do not make the descriptor readable: after a read,
//     has_pending() says whether to read again without waiting.
//   - A read may need the socket writable and a write readable (TLS 1.3 key updates, tickets):
//     wants_write() says so after any call; such a caller waits for both.
//   - write(): the bytes not taken must be offered again, the same or more of them, from any
//     address (partial writes and moving buffers are enabled). Records are 16 KiB: hand it whole
//     batches, not one message at a time.
// No allocation per call: OpenSSL keeps one read and one write buffer per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/error.hpp"

using SSL_CTX = struct ssl_ctx_st;
using SSL = struct ssl_st;
using SSL_SESSION = struct ssl_session_st;

namespace bus::sock {
class FrameReader;
}

namespace bus::tls {

enum class Role : uint8_t { Server, Client };

struct ContextOptions {
  std::string cert;  // PEM certificate (chain) this side presents; "" = none (a client without one)
  std::string key;   // PEM private key of `cert`
  std::string ca;    // PEM CA bundle that verifies the other side; "" = the system's default paths
  /// Server: ask for a client certificate, refuse a connection without a valid one (mutual TLS).
  /// Client: verify the server's certificate against `ca` (and its name: Stream's server_name).
  bool verify_peer = true;
};

/// One side's TLS configuration (an SSL_CTX), shared by all its connections.
class Context {
 public:
  Context() = default;
  Context(Context&& o) noexcept : ctx_(o.ctx_), role_(o.role_), verify_(o.verify_) { o.ctx_ = nullptr; }
  Context& operator=(Context&& o) noexcept;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  /// Errors: InvalidArgument naming the file and OpenSSL's reason (missing file, not PEM, the
  /// key does not match the certificate, a server without a certificate).
  [[nodiscard]] static Expected<Context> create(Role role, const ContextOptions& o);
  [[nodiscard]] bool valid() const noexcept { return ctx_ != nullptr; }
  [[nodiscard]] Role role() const noexcept { return role_; }
  [[nodiscard]] bool verifies_peer() const noexcept { return verify_; }
  [[nodiscard]] SSL_CTX* get() const noexcept { return ctx_; }

 private:
  SSL_CTX* ctx_ = nullptr;
  Role role_ = Role::Server;
  bool verify_ = true;
};

enum class Step : uint8_t { Done, WantRead, WantWrite, Failed };

class Stream {
 public:
  /// A TLS connection over `fd` (connected, non-blocking; the caller keeps owning it). A client
  /// checks the server's certificate names `server_name` (a DNS name or IP address; "" = no
  /// name check) and sends it as SNI. Errors: System (out of memory).
  [[nodiscard]] static Expected<std::unique_ptr<Stream>> create(const Context& ctx, int fd, std::string_view server_name = {});
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();

  /// Advances the handshake. Failed: error() says why in one line, e.g.
  ///   "TLS handshake failed: certificate verify failed (certificate has expired)"
  ///   "TLS handshake failed: not TLS (wrong version number): a plaintext peer?"
  [[nodiscard]] Step handshake();
  [[nodiscard]] bool established() const noexcept { return established_; }
  /// Client, after handshake() is Done: whether the server accepted this side. In TLS 1.3 the
  /// server checks the client's certificate after the client's handshake is done, then sends
  /// a session ticket (accepted: Done) or an alert (Failed, error() says which, e.g. "TLS
  /// refused by the server: tlsv13 alert certificate required"). Reads no application data.
  /// Under TLS 1.2 (the server's verdict came within the handshake): Done at once.
  [[nodiscard]] Step confirm();
  /// (OpenSSL's new-session callback, for confirm().)
  static int on_ticket(SSL* ssl, SSL_SESSION* session);

  /// Decrypted bytes into `into`: how many (> 0). Errors: WouldBlock (wait: see wants_write()),
  /// Closed (the peer closed), BadMessage / System (see error()).
  [[nodiscard]] Result<size_t> read(std::span<std::byte> into);
  /// Encrypts and sends from `bytes`: how many it took (> 0). Errors: WouldBlock, Closed, System.
  [[nodiscard]] Result<size_t> write(std::span<const std::byte> bytes);
  /// Decrypted bytes wait inside OpenSSL (read again without waiting for the descriptor).
  [[nodiscard]] bool has_pending() const noexcept;
  /// The last call could not go on until the socket is writable.
  [[nodiscard]] bool wants_write() const noexcept { return want_write_; }
  /// Why the last call failed, one line.
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

  /// The other side's verified certificate's identity: its subject CN, else its first DNS,
  /// URI or e-mail subject alternative name; "" when it sent none (or it was not verified).
  [[nodiscard]] std::string peer_identity() const;
  /// "TLSv1.3 TLS_AES_256_GCM_SHA384", for logs.
  [[nodiscard]] std::string describe() const;

 private:
  Stream() = default;
  Result<size_t> failed(int rc, std::string_view what);

  SSL* ssl_ = nullptr;
  bool established_ = false;
  bool ticket_ = false;  // a session ticket arrived (confirm())
  bool want_write_ = false;
  bool verify_ = true;
  std::string error_;
};

/// Reads what arrived into `reader` (straight into its room) until the socket would block,
/// the reader has `budget` bytes more, or nothing fits: bytes read. Errors: WouldBlock (none
/// were there), Closed, BadMessage / System (stream.error()).
[[nodiscard]] Result<size_t> receive(Stream& s, sock::FrameReader& reader, size_t budget = 256 * 1024);
/// As tcp::send_pending: writes `out` past `sent` until the stream would block, then drops
/// what went (all: cleared; or the prefix past `compact_after`). False when the stream broke.
[[nodiscard]] bool send_pending(Stream& s, std::vector<std::byte>& out, size_t& sent, size_t compact_after = SIZE_MAX);

/// Constant-time equality of two secrets (tokens); the time depends only on their lengths.
[[nodiscard]] bool same_secret(std::string_view a, std::string_view b) noexcept;

/// OpenSSL's queued errors as one line ("" if none), and clears them.
[[nodiscard]] std::string take_errors();

}  // namespace bus::tls
