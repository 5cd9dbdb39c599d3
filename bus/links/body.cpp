#include "links/body.hpp"

#include <cstring>
#include <string>

namespace bus::links {
namespace {

uint32_t load32(const std::byte* p) noexcept {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint16_t load16(const std::byte* p) noexcept {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) | (static_cast<uint8_t>(p[1]) << 8));
}
void put32(std::byte* p, uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
void append_prefix(std::vector<std::byte>& out, BodyKind kind, uint8_t a, uint32_t b) {
  const size_t at = out.size();
  out.resize(at + kBodyPrefix);
  out[at] = static_cast<std::byte>(kind);
  out[at + 1] = static_cast<std::byte>(a);
  put32(out.data() + at + 4, b);
}
void append_bytes(std::vector<std::byte>& out, std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}

Error bad(std::string why) { return Error(Errc::BadMessage, "link body: " + why); }

// Reads length-prefixed strings from a body, remembering the first problem.
struct Cursor {
  std::span<const std::byte> b;
  size_t at;
  bool take(size_t n, std::string_view& out) {
    if (b.size() - at < n) return false;
    out = std::string_view(reinterpret_cast<const char*>(b.data() + at), n);
    at += n;
    return true;
  }
  bool u8(size_t& out) {
    if (at >= b.size()) return false;
    out = static_cast<uint8_t>(b[at++]);
    return true;
  }
};

}  // namespace

uint32_t Body::route_id(size_t i) const noexcept { return load32(ids.data() + 4 * i); }

size_t message_prefix(std::span<const uint32_t> ids, std::byte* out) noexcept {
  const size_t n = ids.size() < kMaxRouteIds ? ids.size() : kMaxRouteIds;
  const size_t len = (kBodyPrefix + 4 * n + 7) & ~size_t{7};
  std::memset(out, 0, len);
  out[0] = static_cast<std::byte>(BodyKind::Message);
  out[1] = static_cast<std::byte>(n);
  for (size_t i = 0; i < n; ++i) put32(out + kBodyPrefix + 4 * i, ids[i]);
  return len;
}

Expected<Body> parse_body(std::span<const std::byte> bytes) {
  if (bytes.size() < kBodyPrefix) return tl::unexpected(bad("shorter than its 8-byte prefix"));
  Body b;
  const uint8_t kind = static_cast<uint8_t>(bytes[0]);
  const uint8_t a = static_cast<uint8_t>(bytes[1]);
  const uint32_t word = load32(bytes.data() + 4);
  if (bytes[2] != std::byte{0} || bytes[3] != std::byte{0}) return tl::unexpected(bad("reserved bytes are not zero"));
  switch (kind) {
    case static_cast<uint8_t>(BodyKind::Message): {
      b.kind = BodyKind::Message;
      if (word != 0) return tl::unexpected(bad("message prefix: reserved word is not zero"));
      const size_t ids_end = kBodyPrefix + 4 * size_t{a};
      const size_t padded = (ids_end + 7) & ~size_t{7};
      if (bytes.size() <= padded) return tl::unexpected(bad("message without an envelope"));
      for (size_t i = ids_end; i < padded; ++i) {
        if (bytes[i] != std::byte{0}) return tl::unexpected(bad("message padding is not zero"));
      }
      b.ids = bytes.subspan(kBodyPrefix, 4 * size_t{a});
      b.envelope = bytes.subspan(padded);
      return b;
    }
    case static_cast<uint8_t>(BodyKind::Interest): {
      b.kind = BodyKind::Interest;
      b.op = a;
      b.id = word;
      if (a == static_cast<uint8_t>(InterestOp::Reset) || a == static_cast<uint8_t>(InterestOp::Remove) ||
          a == static_cast<uint8_t>(InterestOp::Synced)) {
        if (bytes.size() != kBodyPrefix) return tl::unexpected(bad("interest reset/remove/synced with trailing bytes"));
        if (a != static_cast<uint8_t>(InterestOp::Remove) && word != 0) return tl::unexpected(bad("interest reset/synced with an id"));
        if (a == static_cast<uint8_t>(InterestOp::Remove) && word == 0) return tl::unexpected(bad("interest id 0"));
        return b;
      }
      if (a != static_cast<uint8_t>(InterestOp::Add)) return tl::unexpected(bad("unknown interest op " + std::to_string(a)));
      if (word == 0) return tl::unexpected(bad("interest id 0"));
      if (bytes.size() < kBodyPrefix + 4) return tl::unexpected(bad("interest add without lengths"));
      const size_t plen = load16(bytes.data() + kBodyPrefix);
      const size_t glen = static_cast<uint8_t>(bytes[kBodyPrefix + 2]);
      if (bytes[kBodyPrefix + 3] != std::byte{0}) return tl::unexpected(bad("interest add: reserved byte is not zero"));
      if (bytes.size() != kBodyPrefix + 4 + plen + glen) return tl::unexpected(bad("interest add: lengths do not match the body"));
      if (plen == 0) return tl::unexpected(bad("interest add: empty pattern"));
      const char* s = reinterpret_cast<const char*>(bytes.data() + kBodyPrefix + 4);
      b.pattern = std::string_view(s, plen);
      b.group = std::string_view(s + plen, glen);
      return b;
    }
    case static_cast<uint8_t>(BodyKind::Presence): {
      b.kind = BodyKind::Presence;
      b.op = a;
      b.id = word;
      if (a == static_cast<uint8_t>(PresenceOp::Reset)) {
        if (bytes.size() != kBodyPrefix || word != 0) return tl::unexpected(bad("presence reset with trailing bytes or an id"));
        return b;
      }
      if (a > static_cast<uint8_t>(PresenceOp::Died)) return tl::unexpected(bad("unknown presence event " + std::to_string(a)));
      Cursor c{bytes, kBodyPrefix};
      size_t n = 0;
      if (!c.u8(n) || n == 0 || !c.take(n, b.name)) return tl::unexpected(bad("presence: bad agent name"));
      size_t caps = 0;
      if (!c.u8(caps)) return tl::unexpected(bad("presence: no capability count"));
      b.capabilities.reserve(caps);
      for (size_t i = 0; i < caps; ++i) {
        std::string_view cap;
        if (!c.u8(n) || !c.take(n, cap)) return tl::unexpected(bad("presence: capability past the end"));
        b.capabilities.push_back(cap);
      }
      if (c.at != bytes.size()) return tl::unexpected(bad("presence: trailing bytes"));
      return b;
    }
    default: return tl::unexpected(bad("unknown kind " + std::to_string(kind)));
  }
}

void append_interest_add(std::vector<std::byte>& out, uint32_t id, std::string_view pattern, std::string_view group) {
  append_prefix(out, BodyKind::Interest, static_cast<uint8_t>(InterestOp::Add), id);
  const size_t at = out.size();
  out.resize(at + 4);
  out[at] = static_cast<std::byte>(pattern.size() & 0xFF);
  out[at + 1] = static_cast<std::byte>(pattern.size() >> 8);
  out[at + 2] = static_cast<std::byte>(group.size());
  append_bytes(out, pattern);
  append_bytes(out, group);
}

void append_interest_remove(std::vector<std::byte>& out, uint32_t id) {
  append_prefix(out, BodyKind::Interest, static_cast<uint8_t>(InterestOp::Remove), id);
}

void append_interest_reset(std::vector<std::byte>& out) {
  append_prefix(out, BodyKind::Interest, static_cast<uint8_t>(InterestOp::Reset), 0);
}

void append_interest_synced(std::vector<std::byte>& out) {
  append_prefix(out, BodyKind::Interest, static_cast<uint8_t>(InterestOp::Synced), 0);
}

void append_presence(std::vector<std::byte>& out, PresenceOp op, uint32_t agent_id, std::string_view name,
                     std::span<const std::string> capabilities) {
  append_prefix(out, BodyKind::Presence, static_cast<uint8_t>(op), agent_id);
  const size_t n = std::min<size_t>(name.size(), 255);
  out.push_back(static_cast<std::byte>(n));
  append_bytes(out, name.substr(0, n));
  const size_t caps = std::min<size_t>(capabilities.size(), 255);
  out.push_back(static_cast<std::byte>(caps));
  for (size_t i = 0; i < caps; ++i) {
    const std::string_view c = std::string_view(capabilities[i]).substr(0, 255);
    out.push_back(static_cast<std::byte>(c.size()));
    append_bytes(out, c);
  }
}

void append_presence_reset(std::vector<std::byte>& out) {
  append_prefix(out, BodyKind::Presence, static_cast<uint8_t>(PresenceOp::Reset), 0);
}

}  // namespace bus::links
