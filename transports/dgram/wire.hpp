// The datagram layer's packets: what a DPDK link (or any UDP transport) puts in each UDP
// payload. All integers little-endian. A 38-byte header, then a payload by type:
//
//   off size
//    0   2   magic "bD" (0x62 0x44)
//    2   1   version (1)
//    3   1   type: Syn 1, Data 2, Ack 3, Fin 4
//    4   4   CRC32C (Castagnoli) of the whole packet, this field taken as zero
//    8   4   src_conn: the sender's connection id (random per link, never 0)
//   12   4   dst_conn: the receiver's connection id as the sender knows it (0: not yet)
//   16   8   seq: Data: the packet's sequence number (1, 2, ... per connection); else 0
//   24   8   ack: cumulative: every Data packet up to it has arrived
//   32   4   window: the sender accepts Data packets up to ack + window
//   36   2   payload length (the packet is exactly header + payload)
//
//   Syn   u32 largest packet the sender takes, u32 0. Sent until the peer answers with this
//         side's id in dst_conn (a three-way handshake: each side learns the other's id, and a
//         side is up once the peer has named it).
//   Data  chunks, each: u16 length, u8 flags (First 1 | Last 2), u8 0, then `length` bytes of a
//         link frame (link/wire.hpp, without the stream length prefix), zero-padded so the next
//         chunk starts 8 bytes further on (the last chunk's padding may be cut off). A frame that
//         fits in one packet is one chunk, First|Last; a larger one is split over consecutive
//         packets: First, middle chunks (no flag), Last.
//   Ack   u16 n, u16 0, then n ranges (u64 first missing seq, u32 count): the packets after
//         `ack` that have not arrived although later ones have (selective NAKs).
//   Fin   empty: the sender closed this connection.
//
// Alignment: the header is 38 bytes, so a chunk starts at 6 mod 8 within the UDP payload, its
// frame at 2 mod 8 and the frame's body at 6 mod 8. Behind Ethernet + IPv4 + UDP (42 bytes)
// in an mbuf whose data starts 8-byte aligned, the body is 8-byte aligned: the envelope inside
// it is handed to the router where it lies. (A transport that puts the payload elsewhere still
// works; the router then copies.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "bus/error.hpp"

namespace bus::dgram {

enum class PacketType : uint8_t { Syn = 1, Data = 2, Ack = 3, Fin = 4 };

inline constexpr uint8_t kMagic0 = 0x62, kMagic1 = 0x44;  // "bD"
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 38;
inline constexpr size_t kChunkHeader = 4;
inline constexpr size_t kSynBody = 8;
inline constexpr size_t kNakRangeBytes = 12;
inline constexpr size_t kMinPacket = 256;  // a transport must carry at least this much
inline constexpr uint8_t kFirst = 1, kLast = 2;
/// Offset of the CRC field.
inline constexpr size_t kCrcAt = 4;

struct Header {
  PacketType type = PacketType::Data;
  uint32_t src_conn = 0, dst_conn = 0;
  uint64_t seq = 0, ack = 0;
  uint32_t window = 0;
  uint16_t payload_len = 0;
};

struct NakRange {
  uint64_t first = 0;
  uint32_t count = 0;
};

/// CRC32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2.
[[nodiscard]] uint32_t crc32c(const std::byte* p, size_t n, uint32_t crc = 0) noexcept;

/// Writes the header (CRC field zero) into `out` (kHeaderBytes).
void write_header(std::byte* out, const Header& h) noexcept;
/// Rewrites the ack and window fields of a packet already built (a retransmission carries fresh ones).
void set_ack(std::byte* packet, uint64_t ack, uint32_t window) noexcept;
/// Computes and stores the CRC of the `len`-byte packet at `p` (the header is in place).
void seal(std::byte* p, size_t len) noexcept;

/// Why a packet was refused (counted by cause).
enum class Reject : uint8_t { None, Short, Magic, Version, Crc, Type, Length, Body };
[[nodiscard]] const char* to_string(Reject r) noexcept;

/// Checks a received packet: size, magic, version, CRC, type, the payload length against the
/// datagram's, and the fixed-size bodies (Syn, Fin, Ack's range count). Returns None and fills
/// `h`, or the reason.
[[nodiscard]] Reject parse_header(std::span<const std::byte> packet, Header& h) noexcept;

/// The n-th NAK range of a checked Ack packet's payload.
[[nodiscard]] NakRange nak_range(std::span<const std::byte> payload, size_t i) noexcept;
[[nodiscard]] size_t nak_count(std::span<const std::byte> payload) noexcept;

inline uint64_t load_le(const std::byte* p, int n) noexcept {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}
inline void store_le(std::byte* p, uint64_t v, int n) noexcept {
  for (int i = 0; i < n; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
/// Bytes a chunk of `len` frame bytes takes, padding included.
[[nodiscard]] constexpr size_t chunk_stride(size_t len) noexcept { return (kChunkHeader + len + 7) & ~size_t{7}; }

}  // namespace bus::dgram
