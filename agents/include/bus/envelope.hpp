// Building and reading Envelopes (schemas/envelope.fbs) without a table build per message.
//
// Building a FlatBuffers table costs ~50 ns here, more than a ring hop. A publisher sends many
// messages on few subjects, so EnvelopeTemplate builds the envelope of a subject once, with an
// empty payload vector as the last object of the buffer. Per message it copies that prefix,
// rewrites the fixed-layout Header in place, stores the payload length and appends the payload:
// the result is byte-for-byte a valid Envelope that any FlatBuffers reader (flatc too) accepts.
//
//   prefix (built once)                                              per message
//   [root off][ "BUSE" ][vtable][table: Header(64 B) | offsets][strings][len]  [payload ...]
//                                ^ written in place                      ^ len  ^ 8-aligned
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "bus/clock.hpp"
#include "bus/error.hpp"
#include "envelope_generated.h"

namespace bus {

/// The per-message values of a Header.
struct MessageMeta {
  wire::Kind kind = wire::Kind::Publish;
  uint64_t msg_id = 0;
  uint64_t correlation_id = 0;
  clock::Stamp stamp{};
  uint32_t source_id = 0;
  Errc status = Errc::Ok;
  uint64_t trace_hi = 0;
  uint64_t trace_lo = 0;
  bool payload_is_flatbuffer = false;
  bool timed = false;  // Flags::Timed: busd writes its hop times into the Header (hop_timing)
};

/// Writes meta into a Header (in place, inside an encoded envelope).
void fill_header(wire::Header& h, const MessageMeta& meta) noexcept;

/// Hop timing of a message sent with Flags::Timed (busbench's per-hop breakdown): busd writes,
/// into the copy it delivers, how long the message took from its timestamp_ns to busd reading
/// it, and how long busd held it until it wrote the copy. Both in ns, saturating at UINT32_MAX.
struct HopTiming {
  uint32_t to_busd_ns = 0;
  uint32_t in_busd_ns = 0;
};
/// The timing busd wrote; nullopt when the message was not sent with Flags::Timed.
[[nodiscard]] std::optional<HopTiming> hop_timing(const wire::Header& h) noexcept;
/// busd's side: stores the times into a Header (inside the delivered copy).
void set_hop_timing(wire::Header& h, HopTiming t) noexcept;

class EnvelopeTemplate {
 public:
  struct Strings {
    std::string_view subject;
    std::string_view reply_to{};
    std::string_view source{};
    std::string_view payload_type{};
  };

  /// Builds the prefix. Fails with InvalidArgument on an empty subject.
  static Expected<EnvelopeTemplate> make(const Strings& s);

  /// Bytes before the payload; the payload starts at this offset, which is a multiple of 8.
  [[nodiscard]] size_t prefix_size() const noexcept { return prefix_.size(); }
  /// Encoded size of a message with `payload_len` payload bytes.
  [[nodiscard]] size_t size_for(size_t payload_len) const noexcept {
    return prefix_.size() + payload_len;
  }

  /// Writes the prefix and the payload length into `out` (8-byte aligned, at least
  /// size_for(payload_len) bytes) and returns the Header to fill; the caller writes the payload
  /// at out + prefix_size() (zero-copy from a ring claim). No allocation, no table build.
  wire::Header* write_prefix(std::byte* out, uint32_t payload_len) const noexcept;

  /// write_prefix for a payload that starts `gap` bytes later, at out + prefix_size() + gap (a
  /// FlatBuffer built in place ends at the end of its room: bus/inplace.hpp sends it where it
  /// lies). `gap` is a multiple of 8. The root offset and "BUSE" stay at out[0, 8) (the root
  /// offset grows by `gap`), the rest of the prefix moves up by `gap` (its offsets are relative),
  /// and out[8, 8 + gap) is zero filler that no field points into. The message is then
  /// size_for(payload_len) + gap bytes, an ordinary verifiable Envelope; with gap 0 this is
  /// write_prefix.
  wire::Header* write_prefix_with_gap(std::byte* out, uint32_t payload_len, size_t gap) const noexcept;

  /// write_prefix + copy of the payload + fill_header.
  void write(std::byte* out, std::span<const std::byte> payload,
             const MessageMeta& meta) const noexcept;

 private:
  EnvelopeTemplate() = default;
  std::vector<std::byte> prefix_;
  uint32_t header_offset_ = 0;
};

/// Builds a whole Envelope with FlatBufferBuilder (the slow, general way; for tools and tests,
/// and the reference EnvelopeTemplate is checked against).
std::vector<std::byte> build_envelope(const EnvelopeTemplate::Strings& s,
                                      std::span<const std::byte> payload,
                                      const MessageMeta& meta);

/// Read access to an encoded Envelope.
class EnvelopeView {
 public:
  /// An empty envelope (subject "", no payload): a safe placeholder, never a message.
  EnvelopeView() noexcept;

  /// Verifies bytes from outside the process: size limit, FlatBuffers verifier (bounds,
  /// required fields, file_identifier "BUSE"). Errors: TooLarge, BadMessage.
  /// The bytes must stay unchanged while the view is used: copy a record out of memory that
  /// another process can write before verifying it.
  [[nodiscard]] static Result<EnvelopeView> verify(std::span<const std::byte> bytes,
                                                   uint32_t max_size) noexcept;

  /// No verification: for bytes this process wrote itself.
  [[nodiscard]] static EnvelopeView trusted(std::span<const std::byte> bytes) noexcept;

  [[nodiscard]] const wire::Envelope& envelope() const noexcept { return *env_; }
  [[nodiscard]] const wire::Header& header() const noexcept { return *env_->header(); }
  [[nodiscard]] std::string_view subject() const noexcept;
  [[nodiscard]] std::string_view reply_to() const noexcept;
  [[nodiscard]] std::string_view source() const noexcept;
  [[nodiscard]] std::string_view payload_type() const noexcept;
  [[nodiscard]] std::span<const std::byte> payload() const noexcept;
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }
  [[nodiscard]] clock::Stamp stamp() const noexcept;

 private:
  EnvelopeView(const wire::Envelope* env, std::span<const std::byte> bytes) noexcept
      : env_(env), bytes_(bytes) {}
  const wire::Envelope* env_;
  std::span<const std::byte> bytes_;
};

}  // namespace bus
