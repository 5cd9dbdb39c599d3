#include "link/wire.hpp"

#include <cstring>
#include <algorithm>
#include <string>

namespace bus::link {
namespace {

uint64_t le64(const std::byte* p) noexcept {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

void put_le(std::byte* p, uint64_t v, int n) noexcept {
  for (int i = 0; i < n; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}

const char* type_name(uint8_t t) noexcept {
  switch (static_cast<FrameType>(t)) {
    case FrameType::Data: return "Data";
    case FrameType::Ack: return "Ack";
    case FrameType::Resume: return "Resume";
    case FrameType::Heartbeat: return "Heartbeat";
    case FrameType::Hello: return "Hello";
  }
  return "unknown";
}

}  // namespace

Expected<Frame> parse_frame(std::span<const std::byte> bytes) {
  if (bytes.size() < kHeaderBytes) {
    return fail(Errc::BadMessage, "link frame of " + std::to_string(bytes.size()) + " bytes is shorter than its " +
                                      std::to_string(kHeaderBytes) + "-byte header");
  }
  const auto type = static_cast<uint8_t>(bytes[0]);
  if (type < 1 || type > 5) return fail(Errc::BadMessage, "link frame of unknown type " + std::to_string(type));
  if (bytes[1] != std::byte{0} || bytes[2] != std::byte{0} || bytes[3] != std::byte{0}) {
    return fail(Errc::BadMessage, std::string("link frame ") + type_name(type) + " with flags or reserved bits set");
  }
  Frame f;
  f.type = static_cast<FrameType>(type);
  f.value = le64(bytes.data() + 4);
  f.body = bytes.subspan(kHeaderBytes);
  const size_t want = f.type == FrameType::Resume ? kResumeBodyBytes : 0;
  if (f.type == FrameType::Hello) {
    if (f.value != 0) return fail(Errc::BadMessage, "link Hello with a non-zero value");
    return f;  // its body is checked by parse_hello
  }
  if (f.type != FrameType::Data && f.body.size() != want) {
    return fail(Errc::BadMessage, std::string("link frame ") + type_name(type) + " with a body of " +
                                      std::to_string(f.body.size()) + " bytes (wanted " + std::to_string(want) + ")");
  }
  if (f.type == FrameType::Data && f.body.empty()) return fail(Errc::BadMessage, "link Data frame without an envelope");
  if (f.type == FrameType::Data && f.value == 0) return fail(Errc::BadMessage, "link Data frame with sequence number 0");
  return f;
}

ResumeBody resume_body(const Frame& f) noexcept {
  if (f.body.size() < kResumeBodyBytes) return {};
  return ResumeBody{le64(f.body.data()), le64(f.body.data() + 8)};
}

void write_prefix(std::byte* out, FrameType type, uint64_t value, uint32_t body_len) noexcept {
  put_le(out, kHeaderBytes + body_len, 4);
  out[4] = static_cast<std::byte>(type);
  out[5] = out[6] = out[7] = std::byte{0};
  put_le(out + 8, value, 8);
}

void append_frame(std::vector<std::byte>& out, FrameType type, uint64_t value, std::span<const std::byte> body) {
  const size_t at = out.size();
  out.resize(at + kPrefixBytes + body.size());
  write_prefix(out.data() + at, type, value, static_cast<uint32_t>(body.size()));
  if (!body.empty()) std::memcpy(out.data() + at + kPrefixBytes, body.data(), body.size());
}

void append_resume(std::vector<std::byte>& out, uint64_t last_received, const ResumeBody& b) {
  std::byte body[kResumeBodyBytes];
  put_le(body, b.sender_session, 8);
  put_le(body + 8, b.seen_session, 8);
  append_frame(out, FrameType::Resume, last_received, body);
}

bool valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Expected<Hello> parse_hello(const Frame& f) {
  const auto b = f.body;
  auto bad = [](const std::string& why) { return fail(Errc::BadMessage, "link Hello: " + why); };
  if (f.type != FrameType::Hello) return bad("not a Hello frame");
  if (b.size() < 10) return bad("body of " + std::to_string(b.size()) + " bytes is too short");
  Hello h;
  h.version = static_cast<uint32_t>(le64(b.data()) & 0xFFFFFFFFu);
  h.oldest = static_cast<uint32_t>(le64(b.data()) >> 32);
  if (h.oldest > h.version) return bad("oldest version " + std::to_string(h.oldest) + " above version " + std::to_string(h.version));
  size_t at = 8;
  auto name = [&](std::string& out, const char* what) -> Expected<void> {
    if (at >= b.size()) return bad(std::string("no ") + what);
    const size_t n = static_cast<uint8_t>(b[at++]);
    if (b.size() - at < n) return bad(std::string(what) + " runs past the frame");
    out.assign(reinterpret_cast<const char*>(b.data() + at), n);
    at += n;
    if (!valid_name(out)) return bad(std::string(what) + " is not 1..255 bytes of [A-Za-z0-9._-]");
    return {};
  };
  if (auto c = name(h.cluster, "cluster name"); !c) return tl::unexpected(c.error());
  if (auto n = name(h.node, "node name"); !n) return tl::unexpected(n.error());
  if (at != b.size()) return bad(std::to_string(b.size() - at) + " bytes after the node name");
  return h;
}

Expected<void> append_hello(std::vector<std::byte>& out, const Hello& h) {
  if (!valid_name(h.cluster) || !valid_name(h.node)) {
    return fail(Errc::InvalidArgument, "cluster and node names must be 1..255 bytes of [A-Za-z0-9._-]");
  }
  std::vector<std::byte> body(8);
  put_le(body.data(), uint64_t{h.version} | uint64_t{h.oldest} << 32, 8);
  for (const std::string* s : {&h.cluster, &h.node}) {
    body.push_back(static_cast<std::byte>(s->size()));
    for (char c : *s) body.push_back(static_cast<std::byte>(c));
  }
  append_frame(out, FrameType::Hello, 0, body);
  return {};
}

Expected<uint32_t> negotiate(const Hello& local, const Hello& remote) {
  if (local.cluster != remote.cluster) {
    return fail(Errc::PermissionDenied, "peer '" + remote.node + "' is in cluster '" + remote.cluster + "', this busd ('" +
                                            local.node + "') in '" + local.cluster + "'");
  }
  const uint32_t v = std::min(local.version, remote.version);
  if (v < local.oldest || v < remote.oldest) {
    return fail(Errc::Unsupported, "peer '" + remote.node + "' speaks link protocol " + std::to_string(remote.oldest) + ".." +
                                       std::to_string(remote.version) + ", this busd ('" + local.node + "') " +
                                       std::to_string(local.oldest) + ".." + std::to_string(local.version) +
                                       ": no common version");
  }
  return v;
}

}  // namespace bus::link
