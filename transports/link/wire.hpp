// Link frames: what busd-to-busd links carry, above any link kind (TCP now; DPDK and RDMA later).
//
// On a stream link each link frame is one length-framed message (transports/socket/frame.hpp:
// a 4-byte little-endian length first), so that a Data frame is stored ready to send, length
// included, and many of them leave in one writev. A link frame is a 12-byte header, then a body:
//
//   u8 type | u8 flags (0) | u16 reserved (0) | u64 value (little-endian) | body
//
//   Data       value = sequence number (1, 2, ... per sending session)   body = one Envelope
//   Ack        value = cumulative: every Data up to it was received       body = empty
//   Resume     value = last sequence received from `seen_session`         body = u64 sender
//              session, u64 seen_session (the peer session it heard from last; 0: none)
//   Heartbeat  value = sender's clock (opaque)                            body = empty
//   Hello      value = 0; the first frame of a connection, before Resume (the link manager's,
//              not the session's): body = u32 protocol version, u32 oldest version spoken,
//              u8 cluster length, cluster name, u8 node length, node name (names: 1..255
//              bytes of [A-Za-z0-9._-])
//
// The decoder trusts nothing: unknown types, non-zero flags or reserved bits, a body where none
// belongs or of the wrong size are BadMessage with a reason. What the values mean for the
// session (an ack beyond what was sent, a gap in sequence numbers) is checked by link::Session.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/error.hpp"

namespace bus::link {

enum class FrameType : uint8_t { Data = 1, Ack = 2, Resume = 3, Heartbeat = 4, Hello = 5 };

/// The link protocol this code speaks (Hello), and the oldest it still accepts.
inline constexpr uint32_t kLinkProtocol = 1;
inline constexpr uint32_t kOldestLinkProtocol = 1;

inline constexpr size_t kLengthBytes = 4;         // the stream framing's length prefix
inline constexpr size_t kHeaderBytes = 12;        // the link frame header
inline constexpr size_t kResumeBodyBytes = 16;
inline constexpr size_t kPrefixBytes = kLengthBytes + kHeaderBytes;  // before a Data body

struct Frame {
  FrameType type = FrameType::Heartbeat;
  uint64_t value = 0;
  std::span<const std::byte> body;
};

struct ResumeBody {
  uint64_t sender_session = 0;
  uint64_t seen_session = 0;
};

struct Hello {
  uint32_t version = kLinkProtocol;
  uint32_t oldest = kOldestLinkProtocol;
  std::string cluster;
  std::string node;
};

/// Parses one link frame (the payload of a stream frame, without its length).
[[nodiscard]] Expected<Frame> parse_frame(std::span<const std::byte> bytes);
/// A Resume frame's body (parse_frame checked its size).
[[nodiscard]] ResumeBody resume_body(const Frame& f) noexcept;

/// Writes the length prefix and header of a frame with `body_len` body bytes into `out`
/// (kPrefixBytes bytes); the body goes right after.
void write_prefix(std::byte* out, FrameType type, uint64_t value, uint32_t body_len) noexcept;
/// A whole frame, length prefix included (control frames, tests).
void append_frame(std::vector<std::byte>& out, FrameType type, uint64_t value, std::span<const std::byte> body = {});
void append_resume(std::vector<std::byte>& out, uint64_t last_received, const ResumeBody& b);

/// A Hello frame's body. Errors: BadMessage (sizes, names), InvalidArgument (append: bad name).
[[nodiscard]] Expected<Hello> parse_hello(const Frame& f);
[[nodiscard]] Expected<void> append_hello(std::vector<std::byte>& out, const Hello& h);
/// Whether a link between `local` and `remote` may go up: the same cluster, and a protocol
/// version both speak. Returns that version; the error names both sides, e.g.
///   "peer 'b' speaks link protocol 2..3, this busd ('a') 1..1: no common version"
///   "peer 'b' is in cluster 'west', this busd ('a') in 'east'"
[[nodiscard]] Expected<uint32_t> negotiate(const Hello& local, const Hello& remote);
/// A cluster or node name: 1..255 bytes of [A-Za-z0-9._-].
[[nodiscard]] bool valid_name(std::string_view name) noexcept;

}  // namespace bus::link
