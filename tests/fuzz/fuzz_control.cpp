// Fuzz target: control messages (schemas/control.fbs, root ControlMessage, identifier "BUSC").
// Verification as a server would do it (tight verifier options, like agents/core/envelope.cpp),
// then a walk over the union body and every field. Properties: nothing reads outside the input;
// every string the walk sees is inside it and 0-terminated; what the tight verifier accepts, the
// default one accepts too.
#include <cstdint>

#include <flatbuffers/flatbuffers.h>

#include "bus/control.hpp"
#include "bus/error.hpp"
#include "control_generated.h"
#include "../../agents/core/verify_options.hpp"
#include "fuzz_check.hpp"

using namespace bus;
using bus::fuzz::inside;
using bus::fuzz::touch;
using bus::fuzz::touch_value;

namespace {

// The limits busd verifies with (agents/core/verify_options.hpp).
constexpr auto kVerifyOptions = bus::detail::kWireVerifyOptions;

struct Walker {
  std::span<const std::byte> whole;

  void str(const flatbuffers::String* s) const {
    if (s == nullptr) return;
    FUZZ_CHECK(inside(s->c_str(), s->size() + 1, whole));
    FUZZ_CHECK(s->c_str()[s->size()] == '\0');
    touch(s->string_view());
  }
  void strings(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) const {
    if (v == nullptr) return;
    FUZZ_CHECK(inside(v->Data(), size_t{v->size()} * sizeof(flatbuffers::uoffset_t), whole));
    for (const flatbuffers::String* s : *v) {
      FUZZ_CHECK(s != nullptr);
      str(s);
    }
  }
  template <class T>
  void table(const T* t) const {
    FUZZ_CHECK(t != nullptr);  // body() is set and body_type names T
    FUZZ_CHECK(inside(t, sizeof(flatbuffers::soffset_t), whole));
  }

  void walk(const control::ControlMessage& m) const {
    touch_value(m.seq());
    const control::Body type = m.body_type();
    touch(std::string_view(control::EnumNameBody(type)));  // any ubyte
    if (m.body() == nullptr) {
      // Verifies with any body_type: flatbuffers' VerifyTable(nullptr) is true, so e.g.
      // body_type Hello without a body passes VerifyControlMessageBuffer and body_as_Hello()
      // is null (also for Register/Subscribe, whose (required) fields are then never checked).
      // A handler must test body() for null after verification (seed hello_without_body).
      return;
    }
    switch (type) {
      case control::Body::NONE:
        break;
      case control::Body::Hello: {
        const auto* b = m.body_as_Hello();
        table(b);
        touch_value(b->protocol_version());
        touch_value(b->min_protocol_version());
        str(b->client());
        touch_value(b->pid());
        break;
      }
      case control::Body::Welcome: {
        const auto* b = m.body_as_Welcome();
        table(b);
        touch_value(b->protocol_version());
        str(b->server());
        touch_value(b->max_message_size());
        touch_value(b->heartbeat_interval_ms());
        break;
      }
      case control::Body::Register: {
        const auto* b = m.body_as_Register();
        table(b);
        FUZZ_CHECK(b->name() != nullptr);  // (required)
        str(b->name());
        strings(b->capabilities());
        break;
      }
      case control::Body::Registered: {
        const auto* b = m.body_as_Registered();
        table(b);
        touch_value(b->agent_id());
        str(b->name());
        break;
      }
      case control::Body::Subscribe: {
        const auto* b = m.body_as_Subscribe();
        table(b);
        touch_value(b->sid());
        FUZZ_CHECK(b->subject() != nullptr);  // (required)
        str(b->subject());
        str(b->queue_group());
        touch(std::string_view(control::EnumNameSlowPolicy(b->policy())));
        break;
      }
      case control::Body::Unsubscribe: {
        const auto* b = m.body_as_Unsubscribe();
        table(b);
        touch_value(b->sid());
        break;
      }
      case control::Body::Heartbeat: {
        const auto* b = m.body_as_Heartbeat();
        table(b);
        touch_value(b->seq());
        touch_value(b->timestamp_ns());
        break;
      }
      case control::Body::Presence: {
        const auto* b = m.body_as_Presence();
        table(b);
        touch(std::string_view(control::EnumNamePresenceEvent(b->event())));
        str(b->agent());
        touch_value(b->agent_id());
        strings(b->capabilities());
        break;
      }
      case control::Body::ErrorReply: {
        const auto* b = m.body_as_ErrorReply();
        table(b);
        touch(errc_name(b->code()));
        str(b->message());
        touch_value(b->ref_seq());
        break;
      }
      case control::Body::Ok:
        table(m.body_as_Ok());
        break;
      case control::Body::Goodbye: {
        const auto* b = m.body_as_Goodbye();
        table(b);
        str(b->reason());
        touch_value(b->drain_ms());
        break;
      }
      default:
        // A member added by a newer peer: the verifier lets it through unchecked (forward
        // compatibility), so its table must not be read. Only the type is known.
        break;
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bus::fuzz::ExactCopy copy(data, size);
  const auto* p = reinterpret_cast<const uint8_t*>(copy.bytes().data());

  flatbuffers::Verifier tight(p, size, kVerifyOptions);
  const bool ok = control::VerifyControlMessageBuffer(tight);
  flatbuffers::Verifier loose(p, size);
  const bool loose_ok = control::VerifyControlMessageBuffer(loose);
  FUZZ_CHECK(!ok || loose_ok);
  // The decoder busd uses: on top of the verifier, a known body type must carry its body.
  auto decoded = bus::verify_control(copy.bytes(), UINT32_MAX);
  FUZZ_CHECK(!decoded || ok);
  if (decoded) {
    const control::Body t = (*decoded)->body_type();
    FUZZ_CHECK(t != control::Body::NONE);
    FUZZ_CHECK(!bus::known_body(t) || (*decoded)->body() != nullptr);
  }
  if (!ok) return 0;
  FUZZ_CHECK(control::ControlMessageBufferHasIdentifier(p));
  const control::ControlMessage* m = control::GetControlMessage(p);
  FUZZ_CHECK(inside(m, sizeof(flatbuffers::soffset_t), copy.bytes()));
  Walker{copy.bytes()}.walk(*m);
  return 0;
}
