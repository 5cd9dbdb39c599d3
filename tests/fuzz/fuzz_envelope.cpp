// Fuzz target: Envelope decoding (bus::EnvelopeView::verify, then every accessor).
// Properties: verify never reads outside the input; what it accepts, every accessor reads
// inside the input; an accepted envelope re-encodes (build_envelope and EnvelopeTemplate) to one
// that verifies and reads back the same; a size limit below the input's size gives TooLarge.
#include <cstdint>
#include <vector>

#include "bus/envelope.hpp"
#include "bus/limits.hpp"
#include "fuzz_check.hpp"

using namespace bus;
using bus::fuzz::inside;
using bus::fuzz::touch;
using bus::fuzz::touch_value;

namespace {

constexpr uint8_t kHasDeadline = static_cast<uint8_t>(wire::Flags::HasDeadline);
constexpr uint8_t kPayloadFb = static_cast<uint8_t>(wire::Flags::PayloadFlatBuffer);

// Reads everything a consumer of the view can read; checks it lies inside `whole`.
void read_all(const EnvelopeView& v, std::span<const std::byte> whole) {
  FUZZ_CHECK(v.bytes().data() == whole.data() && v.bytes().size() == whole.size());
  const wire::Header& h = v.header();
  FUZZ_CHECK(inside(&h, sizeof h, whole));
  FUZZ_CHECK(inside(&v.envelope(), sizeof(flatbuffers::soffset_t), whole));
  touch_value(h.msg_id());
  touch_value(h.correlation_id());
  touch_value(h.timestamp_ns());
  touch_value(h.deadline_budget_ns());
  touch_value(h.trace_id_hi());
  touch_value(h.trace_id_lo());
  touch_value(h.source_id());
  touch_value(h.flags());
  touch(errc_name(h.status()));               // any ushort, named or "Unknown"
  touch(std::string_view(wire::EnumNameKind(h.kind())));  // any ubyte
  for (uint8_t r : *h.reserved()) touch_value(r);
  touch_value(clock::deadline_of(v.stamp()));
  for (const std::string_view s : {v.subject(), v.reply_to(), v.source(), v.payload_type()}) {
    FUZZ_CHECK(s.empty() || inside(s.data(), s.size() + 1, whole));  // + the terminating 0
    FUZZ_CHECK(s.empty() || s.data()[s.size()] == '\0');
    touch(s);
  }
  const auto payload = v.payload();
  FUZZ_CHECK(payload.empty() || inside(payload.data(), payload.size(), whole));
  touch(payload);
}

MessageMeta meta_of(const wire::Header& h) {
  MessageMeta m;
  m.kind = h.kind();
  m.msg_id = h.msg_id();
  m.correlation_id = h.correlation_id();
  m.stamp = clock::Stamp{h.timestamp_ns(), h.deadline_budget_ns(),
                         (h.flags() & kHasDeadline) != 0};
  m.source_id = h.source_id();
  m.status = h.status();
  m.trace_hi = h.trace_id_hi();
  m.trace_lo = h.trace_id_lo();
  m.payload_is_flatbuffer = (h.flags() & kPayloadFb) != 0;
  return m;
}

// What survives a re-encode (fill_header recomputes flags and zeroes an unused budget).
void check_same(const EnvelopeView& a, const EnvelopeView& b) {
  FUZZ_CHECK(a.subject() == b.subject());
  FUZZ_CHECK(a.reply_to() == b.reply_to());
  FUZZ_CHECK(a.source() == b.source());
  FUZZ_CHECK(a.payload_type() == b.payload_type());
  FUZZ_CHECK(a.payload().size() == b.payload().size());
  FUZZ_CHECK(a.payload().empty() ||
             std::memcmp(a.payload().data(), b.payload().data(), a.payload().size()) == 0);
  const wire::Header& x = a.header();
  const wire::Header& y = b.header();
  FUZZ_CHECK(x.msg_id() == y.msg_id() && x.correlation_id() == y.correlation_id());
  FUZZ_CHECK(x.timestamp_ns() == y.timestamp_ns() && x.source_id() == y.source_id());
  FUZZ_CHECK(x.trace_id_hi() == y.trace_id_hi() && x.trace_id_lo() == y.trace_id_lo());
  FUZZ_CHECK(x.status() == y.status() && x.kind() == y.kind());
  FUZZ_CHECK(((x.flags() ^ y.flags()) & (kHasDeadline | kPayloadFb)) == 0);
  FUZZ_CHECK(clock::deadline_of(a.stamp()) == clock::deadline_of(b.stamp()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bus::fuzz::ExactCopy copy(data, size);
  const auto bytes = copy.bytes();

  if (size > 0) {
    auto small = EnvelopeView::verify(bytes, static_cast<uint32_t>(size - 1));
    FUZZ_CHECK(!small && small.error() == Errc::TooLarge);
  }
  auto v = EnvelopeView::verify(bytes, defaults::kMaxMessageSize);
  if (!v) {
    FUZZ_CHECK(v.error() == (size > defaults::kMaxMessageSize ? Errc::TooLarge : Errc::BadMessage));
    return 0;
  }
  read_all(*v, bytes);

  // Re-encode what was read, both ways, and read it back.
  const EnvelopeTemplate::Strings strings{v->subject(), v->reply_to(), v->source(),
                                          v->payload_type()};
  const MessageMeta meta = meta_of(v->header());
  const auto built = build_envelope(strings, v->payload(), meta);
  auto b = EnvelopeView::verify(built, UINT32_MAX);
  FUZZ_CHECK(b.has_value());
  read_all(*b, built);
  check_same(*v, *b);

  auto t = EnvelopeTemplate::make(strings);
  FUZZ_CHECK(t.has_value() == !strings.subject.empty());
  if (t) {
    const size_t n = t->size_for(v->payload().size());
    std::vector<uint64_t> words((n + 7) / 8);  // 8-byte aligned, as write() requires
    auto* out = reinterpret_cast<std::byte*>(words.data());
    t->write(out, v->payload(), meta);
    auto w = EnvelopeView::verify({out, n}, UINT32_MAX);
    FUZZ_CHECK(w.has_value());
    check_same(*v, *w);
    FUZZ_CHECK(reinterpret_cast<uintptr_t>(w->payload().data()) % 8 == 0);
  }
  return 0;
}
