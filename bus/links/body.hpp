// What busd says to a peer busd inside the link session's Data frames (the session carries
// them opaque, in order, exactly once). Every body starts with an 8-byte prefix:
//
//   u8 kind | u8 a | u16 0 | u32 b                                  (little-endian)
//
//   Message   a = n, b = 0; then n x u32 interest ids (the receiver's own, from its Interest
//             Adds: the queue groups the sender chose the receiver for), zero-padded to 8 bytes;
//             then the Envelope (8-byte aligned in the body). Plain subscribers on the receiver
//             get every Message; its queue groups only those named.
//   Interest  a = op, b = interest id. Add: u16 pattern length, u8 group length, u8 0, the
//             pattern, the group name (0 bytes: no group). Remove: no more bytes. Reset (b = 0):
//             the receiver forgets every interest of the sender (an Add snapshot follows).
//             Synced (b = 0, no more bytes): ends the Add snapshot a sender sends first to a
//             peer it meets (a sender that just started sends it a while later, once its
//             agents had time to come back): the receiver forgets the interests of the
//             sender's earlier incarnation that it kept until then and no Add replaced.
//   Presence  a = event, b = agent id on the sender. Joined/Left/Died: u8 name length, the name,
//             u8 capability count, each capability as u8 length + bytes. Reset (b = 0): the
//             sender's agents are all gone (a Joined snapshot follows).
//
// The decoder trusts nothing: wrong kinds, ops and events, non-zero padding and reserved bytes,
// lengths past the end and trailing bytes are BadMessage with a reason; names and patterns are
// checked by the caller (the router's rules).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "bus/error.hpp"

namespace bus::links {

enum class BodyKind : uint8_t { Message = 1, Interest = 2, Presence = 3 };
enum class InterestOp : uint8_t { Add = 1, Remove = 2, Reset = 3, Synced = 4 };
enum class PresenceOp : uint8_t { Joined = 0, Left = 1, Died = 2, Reset = 3 };

inline constexpr size_t kBodyPrefix = 8;
inline constexpr size_t kMaxRouteIds = 255;

struct Body {
  BodyKind kind = BodyKind::Message;
  // Message
  std::span<const std::byte> ids;       // count x u32 little-endian (use id(i))
  std::span<const std::byte> envelope;
  // Interest / Presence
  uint8_t op = 0;
  uint32_t id = 0;
  std::string_view pattern, group;      // Interest Add
  std::string_view name;                // Presence
  std::vector<std::string_view> capabilities;

  [[nodiscard]] size_t id_count() const noexcept { return ids.size() / 4; }
  [[nodiscard]] uint32_t route_id(size_t i) const noexcept;
};

/// Decodes one body; views point into `bytes`.
[[nodiscard]] Expected<Body> parse_body(std::span<const std::byte> bytes);

/// The prefix of a Message body routed to the receiver's interests `ids` (at most
/// kMaxRouteIds; the caller sends at most that many): kBodyPrefix + 4n rounded up to 8 bytes,
/// written into `out` (room for kBodyPrefix + 4 * kMaxRouteIds + 4). Returns its length.
size_t message_prefix(std::span<const uint32_t> ids, std::byte* out) noexcept;
inline constexpr size_t kMaxMessagePrefix = kBodyPrefix + 4 * kMaxRouteIds + 4;

/// Interest and Presence bodies (cold path: they allocate).
void append_interest_add(std::vector<std::byte>& out, uint32_t id, std::string_view pattern, std::string_view group);
void append_interest_remove(std::vector<std::byte>& out, uint32_t id);
void append_interest_reset(std::vector<std::byte>& out);
void append_interest_synced(std::vector<std::byte>& out);
void append_presence(std::vector<std::byte>& out, PresenceOp op, uint32_t agent_id, std::string_view name,
                     std::span<const std::string> capabilities);
void append_presence_reset(std::vector<std::byte>& out);

}  // namespace bus::links
