#include "dgram/wire.hpp"

#include <array>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace bus::dgram {
namespace {

// Software CRC32C, a byte at a time from a table (reflected polynomial 0x82F63B78): for CPUs
// without SSE4.2 and as the reference the tests compare the hardware path with.
constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kTable = make_table();

uint32_t crc_soft(const std::byte* p, size_t n, uint32_t crc) noexcept {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = kTable[(crc ^ static_cast<uint8_t>(p[i])) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc_hw(const std::byte* p, size_t n, uint32_t crc) noexcept {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, static_cast<uint8_t>(*p++));
    --n;
  }
  return ~c32;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t crc32c(const std::byte* p, size_t n, uint32_t crc) noexcept {
#if defined(__x86_64__)
  if (kHaveSse42) return crc_hw(p, n, crc);
#endif
  return crc_soft(p, n, crc);
}

void write_header(std::byte* out, const Header& h) noexcept {
  out[0] = std::byte{kMagic0};
  out[1] = std::byte{kMagic1};
  out[2] = std::byte{kVersion};
  out[3] = static_cast<std::byte>(h.type);
  store_le(out + 4, 0, 4);
  store_le(out + 8, h.src_conn, 4);
  store_le(out + 12, h.dst_conn, 4);
  store_le(out + 16, h.seq, 8);
  store_le(out + 24, h.ack, 8);
  store_le(out + 32, h.window, 4);
  store_le(out + 36, h.payload_len, 2);
}

void set_ack(std::byte* packet, uint64_t ack, uint32_t window) noexcept {
  store_le(packet + 24, ack, 8);
  store_le(packet + 32, window, 4);
}

void seal(std::byte* p, size_t len) noexcept {
  store_le(p + kCrcAt, 0, 4);
  store_le(p + kCrcAt, crc32c(p, len), 4);
}

const char* to_string(Reject r) noexcept {
  switch (r) {
    case Reject::None: return "ok";
    case Reject::Short: return "shorter than the header";
    case Reject::Magic: return "not a busd datagram (magic)";
    case Reject::Version: return "unknown version";
    case Reject::Crc: return "checksum mismatch";
    case Reject::Type: return "unknown packet type";
    case Reject::Length: return "payload length disagrees with the datagram";
    case Reject::Body: return "malformed body";
  }
  return "?";
}

Reject parse_header(std::span<const std::byte> packet, Header& h) noexcept {
  if (packet.size() < kHeaderBytes) return Reject::Short;
  const std::byte* p = packet.data();
  if (p[0] != std::byte{kMagic0} || p[1] != std::byte{kMagic1}) return Reject::Magic;
  if (p[2] != std::byte{kVersion}) return Reject::Version;
  // The CRC over the packet with its own field as zero: the sum of the parts before, the four
  // zero bytes, and the rest.
  const std::byte zero[4] = {};
  uint32_t crc = crc32c(p, kCrcAt);
  crc = crc32c(zero, 4, crc);
  crc = crc32c(p + kCrcAt + 4, packet.size() - kCrcAt - 4, crc);
  if (crc != static_cast<uint32_t>(load_le(p + kCrcAt, 4))) return Reject::Crc;
  const auto type = static_cast<uint8_t>(p[3]);
  if (type < 1 || type > 4) return Reject::Type;
  h.type = static_cast<PacketType>(type);
  h.src_conn = static_cast<uint32_t>(load_le(p + 8, 4));
  h.dst_conn = static_cast<uint32_t>(load_le(p + 12, 4));
  h.seq = load_le(p + 16, 8);
  h.ack = load_le(p + 24, 8);
  h.window = static_cast<uint32_t>(load_le(p + 32, 4));
  h.payload_len = static_cast<uint16_t>(load_le(p + 36, 2));
  if (kHeaderBytes + h.payload_len != packet.size()) return Reject::Length;
  const auto payload = packet.subspan(kHeaderBytes);
  switch (h.type) {
    case PacketType::Syn:
      if (payload.size() != kSynBody || h.src_conn == 0 || h.seq != 0) return Reject::Body;
      break;
    case PacketType::Fin:
      if (!payload.empty() || h.seq != 0) return Reject::Body;
      break;
    case PacketType::Ack:
      if (payload.size() < 4 || h.seq != 0 || payload.size() != 4 + nak_count(payload) * kNakRangeBytes) return Reject::Body;
      break;
    case PacketType::Data:
      if (payload.empty() || h.seq == 0) return Reject::Body;
      break;
  }
  return Reject::None;
}

size_t nak_count(std::span<const std::byte> payload) noexcept {
  return payload.size() < 4 ? 0 : static_cast<size_t>(load_le(payload.data(), 2));
}

NakRange nak_range(std::span<const std::byte> payload, size_t i) noexcept {
  const std::byte* r = payload.data() + 4 + i * kNakRangeBytes;
  return NakRange{load_le(r, 8), static_cast<uint32_t>(load_le(r + 8, 4))};
}

}  // namespace bus::dgram
