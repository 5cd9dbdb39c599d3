// TLS over a non-blocking socket with OpenSSL (see stream.hpp).
#include "tls/stream.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>

#include "socket/frame.hpp"

namespace bus::tls {
namespace {

std::string join(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (auto p : parts) s.append(p);
  return s;
}

// A reason of OpenSSL's that means the other side does not speak TLS at all.
bool not_tls(unsigned long e) {
  if (ERR_GET_LIB(e) != ERR_LIB_SSL) return false;
  const int r = ERR_GET_REASON(e);
  return r == SSL_R_WRONG_VERSION_NUMBER || r == SSL_R_PACKET_LENGTH_TOO_LONG || r == SSL_R_HTTP_REQUEST ||
         r == SSL_R_HTTPS_PROXY_REQUEST || r == SSL_R_UNKNOWN_PROTOCOL || r == SSL_R_RECORD_LENGTH_MISMATCH;
}

bool printable(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

std::string text_of(const ASN1_STRING* s) {
  if (s == nullptr) return {};
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, s);
  if (n < 0) return {};
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

bool is_ip(std::string_view name) {
  unsigned char buf[16];
  const std::string n(name);
  return ::inet_pton(AF_INET, n.c_str(), buf) == 1 || ::inet_pton(AF_INET6, n.c_str(), buf) == 1;
}

}  // namespace

std::string take_errors() {
  std::string s;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    const char* r = ERR_reason_error_string(e);
    if (!s.empty()) s += "; ";
    s += r != nullptr ? r : "error " + std::to_string(ERR_GET_REASON(e));
  }
  return s;
}

// ---------------------------------------------------------------- Context

Context& Context::operator=(Context&& o) noexcept {
  if (this != &o) {
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    ctx_ = o.ctx_;
    role_ = o.role_;
    verify_ = o.verify_;
    o.ctx_ = nullptr;
  }
  return *this;
}

Context::~Context() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

Expected<Context> Context::create(Role role, const ContextOptions& o) {
  ERR_clear_error();
  Context c;
  c.role_ = role;
  c.verify_ = o.verify_peer;
  c.ctx_ = SSL_CTX_new(role == Role::Server ? TLS_server_method() : TLS_client_method());
  if (c.ctx_ == nullptr) return fail(Errc::System, "TLS: cannot make a context: " + take_errors());
  SSL_CTX_set_min_proto_version(c.ctx_, TLS1_2_VERSION);
  SSL_CTX_set_mode(c.ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(c.ctx_, SSL_OP_NO_RENEGOTIATION);
  if (role == Role::Server) {
    // One ticket, sent once the client's certificate is verified: the client's sign that this
    // side accepted it (Stream::confirm()). Nobody resumes with it.
    SSL_CTX_set_num_tickets(c.ctx_, 1);
    SSL_CTX_set_session_cache_mode(c.ctx_, SSL_SESS_CACHE_OFF);
  } else {
    SSL_CTX_set_session_cache_mode(c.ctx_, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c.ctx_, &Stream::on_ticket);
  }
  auto bad = [&](std::string_view what, const std::string& path) {
    return fail(Errc::InvalidArgument, join({"TLS ", what, " '", path, "': ", take_errors()}));
  };
  if (role == Role::Server && o.cert.empty()) {
    return fail(Errc::InvalidArgument, "TLS: a listener needs a certificate and key (tls.cert, tls.key)");
  }
  if (o.cert.empty() != o.key.empty()) {
    return fail(Errc::InvalidArgument, "TLS: a certificate needs its key and a key its certificate");
  }
  if (!o.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(c.ctx_, o.cert.c_str()) != 1) return bad("certificate", o.cert);
    if (SSL_CTX_use_PrivateKey_file(c.ctx_, o.key.c_str(), SSL_FILETYPE_PEM) != 1) return bad("key", o.key);
    if (SSL_CTX_check_private_key(c.ctx_) != 1) return bad("key does not match the certificate: key", o.key);
  }
  if (!o.ca.empty()) {
    if (SSL_CTX_load_verify_locations(c.ctx_, o.ca.c_str(), nullptr) != 1) return bad("CA file", o.ca);
    if (role == Role::Server) {
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.ca.c_str());
      if (names != nullptr) SSL_CTX_set_client_CA_list(c.ctx_, names);
      ERR_clear_error();
    }
  } else if (o.verify_peer) {
    SSL_CTX_set_default_verify_paths(c.ctx_);
  }
  if (o.verify_peer) {
    SSL_CTX_set_verify(c.ctx_, role == Role::Server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                       nullptr);
  } else {
    SSL_CTX_set_verify(c.ctx_, SSL_VERIFY_NONE, nullptr);
  }
  return c;
}

// ---------------------------------------------------------------- Stream

Expected<std::unique_ptr<Stream>> Stream::create(const Context& ctx, int fd, std::string_view server_name) {
  ERR_clear_error();
  std::unique_ptr<Stream> s(new Stream());
  s->verify_ = ctx.verifies_peer();
  s->ssl_ = SSL_new(ctx.get());
  if (s->ssl_ == nullptr || SSL_set_fd(s->ssl_, fd) != 1) return fail(Errc::System, "TLS: " + take_errors());
  SSL_set_app_data(s->ssl_, s.get());
  if (ctx.role() == Role::Server) {
    SSL_set_accept_state(s->ssl_);
  } else {
    SSL_set_connect_state(s->ssl_);
    if (!server_name.empty()) {
      const std::string name(server_name);
      if (is_ip(name)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl_), name.c_str());
      } else {
        SSL_set_tlsext_host_name(s->ssl_, name.c_str());
        SSL_set1_host(s->ssl_, name.c_str());
      }
    }
  }
  return s;
}

Stream::~Stream() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

Step Stream::handshake() {
  if (established_) return Step::Done;
  ERR_clear_error();
  errno = 0;
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    established_ = true;
    want_write_ = false;
    return Step::Done;
  }
  const int e = SSL_get_error(ssl_, rc);
  if (e == SSL_ERROR_WANT_READ) {
    want_write_ = false;
    return Step::WantRead;
  }
  if (e == SSL_ERROR_WANT_WRITE) {
    want_write_ = true;
    return Step::WantWrite;
  }
  const int sys = errno;
  const unsigned long first = ERR_peek_error();
  const long verify = SSL_get_verify_result(ssl_);
  std::string why = take_errors();
  if (verify != X509_V_OK) {
    why += join({" (", X509_verify_cert_error_string(verify), ")"});
  } else if (not_tls(first)) {
    why += ": not TLS: a plaintext peer?";
  } else if (why.empty()) {
    why = sys != 0 ? std::strerror(sys) : "the peer closed the connection (it refused this side's certificate or does not speak TLS?)";
  }
  error_ = "TLS handshake failed: " + why;
  return Step::Failed;
}

int Stream::on_ticket(SSL* ssl, SSL_SESSION* /*session*/) {
  auto* s = static_cast<Stream*>(SSL_get_app_data(ssl));
  if (s != nullptr) s->ticket_ = true;
  return 0;  // not kept
}

Step Stream::confirm() {
  if (ticket_ || SSL_version(ssl_) < TLS1_3_VERSION) return Step::Done;
  ERR_clear_error();
  errno = 0;
  std::byte b[1];
  size_t n = 0;
  const int rc = SSL_peek_ex(ssl_, b, 1, &n);
  if (rc == 1 || ticket_) return Step::Done;  // (data: the server spoke, so it accepted)
  auto r = failed(rc, "refused by the server");
  if (!r && r.error() == Errc::WouldBlock) return want_write_ ? Step::WantWrite : Step::WantRead;
  if (error_.find("the peer closed") != std::string::npos) {
    error_ = "TLS: the server closed the connection after the handshake (it refused this side's certificate?)";
  }
  return Step::Failed;
}

Result<size_t> Stream::failed(int rc, std::string_view what) {
  const int e = SSL_get_error(ssl_, rc);
  switch (e) {
    case SSL_ERROR_WANT_READ: want_write_ = false; return tl::unexpected(Errc::WouldBlock);
    case SSL_ERROR_WANT_WRITE: want_write_ = true; return tl::unexpected(Errc::WouldBlock);
    case SSL_ERROR_ZERO_RETURN:
      error_ = "closed by the peer";
      return tl::unexpected(Errc::Closed);
    case SSL_ERROR_SYSCALL: {
      const int sys = errno;
      error_ = join({"TLS ", what, ": ", sys != 0 ? std::strerror(sys) : "the peer closed the connection"});
      ERR_clear_error();
      return tl::unexpected(sys == 0 || sys == ECONNRESET || sys == EPIPE ? Errc::Closed : Errc::System);
    }
    default: {
      const unsigned long first = ERR_peek_error();
      const bool eof = ERR_GET_LIB(first) == ERR_LIB_SSL && ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
      error_ = join({"TLS ", what, ": ", take_errors()});
      return tl::unexpected(eof ? Errc::Closed : Errc::BadMessage);
    }
  }
}

Result<size_t> Stream::read(std::span<std::byte> into) {
  ERR_clear_error();
  errno = 0;
  size_t n = 0;
  const int rc = SSL_read_ex(ssl_, into.data(), into.size(), &n);
  if (rc == 1) {
    want_write_ = false;
    return n;
  }
  return failed(rc, "read");
}

Result<size_t> Stream::write(std::span<const std::byte> bytes) {
  if (bytes.empty()) return size_t{0};
  ERR_clear_error();
  errno = 0;
  size_t n = 0;
  const int rc = SSL_write_ex(ssl_, bytes.data(), bytes.size(), &n);
  if (rc == 1) {
    want_write_ = false;
    return n;
  }
  return failed(rc, "write");
}

bool Stream::has_pending() const noexcept { return ssl_ != nullptr && SSL_pending(ssl_) > 0; }

std::string Stream::peer_identity() const {
  if (!established_ || !verify_) return {};
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (cert == nullptr || SSL_get_verify_result(ssl_) != X509_V_OK) return {};
  if (const X509_NAME* subject = X509_get_subject_name(cert); subject != nullptr) {
    const int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (at >= 0) {
      std::string cn = text_of(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
      if (printable(cn)) return cn;
    }
  }
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::string found;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names) && found.empty(); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL) {
      std::string v = text_of(g->d.ia5);
      if (printable(v)) found = std::move(v);
    }
  }
  if (names != nullptr) GENERAL_NAMES_free(names);
  return found;
}

std::string Stream::describe() const {
  if (!established_) return "handshake";
  const char* cipher = SSL_get_cipher_name(ssl_);
  return join({SSL_get_version(ssl_), " ", cipher != nullptr ? cipher : "?"});
}

// ---------------------------------------------------------------- helpers

Result<size_t> receive(Stream& s, sock::FrameReader& reader, size_t budget) {
  size_t total = 0;
  while (total < budget) {
    auto room = reader.room(16 * 1024);
    auto r = s.read(room);
    if (!r) {
      if (r.error() == Errc::WouldBlock && total > 0) return total;
      return tl::unexpected(r.error());
    }
    reader.commit(*r);
    total += *r;
  }
  return total;
}

bool send_pending(Stream& s, std::vector<std::byte>& out, size_t& sent, size_t compact_after) {
  bool ok = true;
  while (sent < out.size()) {
    auto w = s.write(std::span<const std::byte>(out).subspan(sent));
    if (!w) {
      ok = w.error() == Errc::WouldBlock;
      break;
    }
    sent += *w;
  }
  sock::drop_sent(out, sent, compact_after);
  return ok;
}

bool same_secret(std::string_view a, std::string_view b) noexcept {
  // Compare every byte of the longer one (the length itself is not secret).
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace bus::tls
