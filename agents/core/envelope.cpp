#include "bus/envelope.hpp"

#include <cstring>

#include <flatbuffers/flatbuffers.h>

#include "verify_options.hpp"

namespace bus {
namespace {

std::string_view view(const flatbuffers::String* s) noexcept {
  return s == nullptr ? std::string_view{} : std::string_view(s->c_str(), s->size());
}

flatbuffers::Offset<flatbuffers::String> maybe_string(flatbuffers::FlatBufferBuilder& fbb,
                                                      std::string_view s) {
  return s.empty() ? 0 : fbb.CreateString(s.data(), s.size());
}

// Builds an envelope whose payload vector is the first object created, hence the last in the
// finished buffer, with its data 8-byte aligned (relative to the buffer start).
std::vector<std::byte> build(const EnvelopeTemplate::Strings& s, std::span<const std::byte> payload,
                             const MessageMeta& meta) {
  flatbuffers::FlatBufferBuilder fbb(256 + payload.size());
  fbb.ForceVectorAlignment(payload.size(), 1, 8);
  fbb.StartVector(payload.size(), 1);
  if (!payload.empty()) {
    fbb.PushBytes(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  }
  const flatbuffers::Offset<flatbuffers::Vector<uint8_t>> body(
      fbb.EndVector(payload.size()));
  const auto type = maybe_string(fbb, s.payload_type);
  const auto source = maybe_string(fbb, s.source);
  const auto reply = maybe_string(fbb, s.reply_to);
  const auto subject = fbb.CreateString(s.subject.data(), s.subject.size());
  wire::Header h;
  fill_header(h, meta);
  wire::EnvelopeBuilder eb(fbb);
  eb.add_header(&h);
  eb.add_subject(subject);
  if (!reply.IsNull()) eb.add_reply_to(reply);
  if (!source.IsNull()) eb.add_source(source);
  if (!type.IsNull()) eb.add_payload_type(type);
  eb.add_payload(body);
  wire::FinishEnvelopeBuffer(fbb, eb.Finish());
  const auto* p = reinterpret_cast<const std::byte*>(fbb.GetBufferPointer());
  return std::vector<std::byte>(p, p + fbb.GetSize());
}

}  // namespace

void fill_header(wire::Header& h, const MessageMeta& m) noexcept {
  uint8_t flags = 0;
  if (m.stamp.has_deadline) flags |= static_cast<uint8_t>(wire::Flags::HasDeadline);
  if (m.payload_is_flatbuffer) flags |= static_cast<uint8_t>(wire::Flags::PayloadFlatBuffer);
  if ((m.trace_hi | m.trace_lo) != 0) flags |= static_cast<uint8_t>(wire::Flags::Traced);
  if (m.timed) flags |= static_cast<uint8_t>(wire::Flags::Timed);
  h.mutate_msg_id(m.msg_id);
  h.mutate_correlation_id(m.correlation_id);
  h.mutate_timestamp_ns(m.stamp.timestamp_ns);
  h.mutate_deadline_budget_ns(m.stamp.has_deadline ? m.stamp.budget_ns : 0);
  h.mutate_trace_id_hi(m.trace_hi);
  h.mutate_trace_id_lo(m.trace_lo);
  h.mutate_source_id(m.source_id);
  h.mutate_status(m.status);
  h.mutate_kind(m.kind);
  h.mutate_flags(flags);
}

std::optional<HopTiming> hop_timing(const wire::Header& h) noexcept {
  if ((h.flags() & static_cast<uint8_t>(wire::Flags::Timed)) == 0) return std::nullopt;
  const auto* r = h.reserved();
  auto u32 = [&](int at) {
    return static_cast<uint32_t>(r->Get(at)) | static_cast<uint32_t>(r->Get(at + 1)) << 8 |
           static_cast<uint32_t>(r->Get(at + 2)) << 16 | static_cast<uint32_t>(r->Get(at + 3)) << 24;
  };
  return HopTiming{u32(0), u32(4)};
}

void set_hop_timing(wire::Header& h, HopTiming t) noexcept {
  auto* r = h.mutable_reserved();
  for (int i = 0; i < 4; ++i) {
    r->Mutate(i, static_cast<uint8_t>(t.to_busd_ns >> (8 * i)));
    r->Mutate(4 + i, static_cast<uint8_t>(t.in_busd_ns >> (8 * i)));
  }
}

Expected<EnvelopeTemplate> EnvelopeTemplate::make(const Strings& s) {
  if (s.subject.empty()) return fail(Errc::InvalidArgument, "envelope subject is empty");
  EnvelopeTemplate t;
  t.prefix_ = build(s, {}, MessageMeta{});
  const auto* base = reinterpret_cast<const uint8_t*>(t.prefix_.data());
  const wire::Envelope* env = wire::GetEnvelope(base);
  t.header_offset_ =
      static_cast<uint32_t>(reinterpret_cast<const uint8_t*>(env->header()) - base);
  // The layout this class relies on; FlatBufferBuilder places the first-created object last.
  if (env->payload() == nullptr || env->payload()->data() != base + t.prefix_.size() ||
      t.prefix_.size() % 8 != 0 || t.header_offset_ % 8 != 0) {
    return fail(Errc::Unsupported, "FlatBufferBuilder did not put the payload last");
  }
  return t;
}

wire::Header* EnvelopeTemplate::write_prefix(std::byte* out, uint32_t payload_len) const noexcept {
  std::memcpy(out, prefix_.data(), prefix_.size());
  flatbuffers::WriteScalar<uint32_t>(out + prefix_.size() - sizeof(uint32_t), payload_len);
  return reinterpret_cast<wire::Header*>(out + header_offset_);
}

wire::Header* EnvelopeTemplate::write_prefix_with_gap(std::byte* out, uint32_t payload_len,
                                                      size_t gap) const noexcept {
  // [root offset]["BUSE"] | gap: zeros | [vtable, table, strings ... len] [payload]
  constexpr size_t kHead = sizeof(uint32_t) + flatbuffers::kFileIdentifierLength;
  std::memcpy(out, prefix_.data(), kHead);
  std::memset(out + kHead, 0, gap);
  std::memcpy(out + kHead + gap, prefix_.data() + kHead, prefix_.size() - kHead);
  const auto root = flatbuffers::ReadScalar<uint32_t>(prefix_.data());
  flatbuffers::WriteScalar<uint32_t>(out, static_cast<uint32_t>(root + gap));
  flatbuffers::WriteScalar<uint32_t>(out + gap + prefix_.size() - sizeof(uint32_t), payload_len);
  return reinterpret_cast<wire::Header*>(out + gap + header_offset_);
}

void EnvelopeTemplate::write(std::byte* out, std::span<const std::byte> payload,
                             const MessageMeta& meta) const noexcept {
  wire::Header* h = write_prefix(out, static_cast<uint32_t>(payload.size()));
  if (!payload.empty()) std::memcpy(out + prefix_.size(), payload.data(), payload.size());
  fill_header(*h, meta);
}

std::vector<std::byte> build_envelope(const EnvelopeTemplate::Strings& s,
                                      std::span<const std::byte> payload,
                                      const MessageMeta& meta) {
  return build(s, payload, meta);
}

Result<EnvelopeView> EnvelopeView::verify(std::span<const std::byte> bytes,
                                          uint32_t max_size) noexcept {
  if (bytes.size() > max_size) return tl::unexpected(Errc::TooLarge);
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  flatbuffers::Verifier v(p, bytes.size(), detail::kWireVerifyOptions);
  if (!wire::VerifyEnvelopeBuffer(v)) return tl::unexpected(Errc::BadMessage);
  return EnvelopeView(wire::GetEnvelope(p), bytes);
}

EnvelopeView::EnvelopeView() noexcept {
  // Built once; an Envelope whose subject is "" (required fields present, so accessors work).
  static const std::vector<std::byte> empty = build({"-"}, {}, MessageMeta{});
  env_ = wire::GetEnvelope(empty.data());
  bytes_ = empty;
}

EnvelopeView EnvelopeView::trusted(std::span<const std::byte> bytes) noexcept {
  return EnvelopeView(wire::GetEnvelope(bytes.data()), bytes);
}

std::string_view EnvelopeView::subject() const noexcept { return view(env_->subject()); }
std::string_view EnvelopeView::reply_to() const noexcept { return view(env_->reply_to()); }
std::string_view EnvelopeView::source() const noexcept { return view(env_->source()); }
std::string_view EnvelopeView::payload_type() const noexcept {
  return view(env_->payload_type());
}

std::span<const std::byte> EnvelopeView::payload() const noexcept {
  const auto* v = env_->payload();
  if (v == nullptr) return {};
  return {reinterpret_cast<const std::byte*>(v->data()), v->size()};
}

clock::Stamp EnvelopeView::stamp() const noexcept {
  const wire::Header& h = header();
  const bool has = (h.flags() & static_cast<uint8_t>(wire::Flags::HasDeadline)) != 0;
  return clock::Stamp{h.timestamp_ns(), h.deadline_budget_ns(), has};
}

}  // namespace bus
