// Fuzz target: bus::links::parse_body, the bodies busd sends a peer busd inside link Data frames
// (routed messages, interest and presence updates).
//
// Properties: no crash or read outside the input (ASan); every error is BadMessage; a body that
// decodes encodes back to the same bytes (message_prefix + envelope, append_interest_*,
// append_presence*), so the decoder accepts exactly what the encoders write.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "links/body.hpp"

using namespace bus;
using namespace bus::links;
using bus::fuzz::touch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bus::fuzz::ExactCopy in(data, size);
  auto b = parse_body(in.bytes());
  if (!b) {
    FUZZ_CHECK(b.error().code() == Errc::BadMessage);
    return 0;
  }
  std::vector<std::byte> again;
  switch (b->kind) {
    case BodyKind::Message: {
      touch(b->envelope);
      std::vector<uint32_t> ids;
      for (size_t i = 0; i < b->id_count(); ++i) ids.push_back(b->route_id(i));
      std::byte prefix[kMaxMessagePrefix];
      const size_t n = message_prefix(ids, prefix);
      again.assign(prefix, prefix + n);
      again.insert(again.end(), b->envelope.begin(), b->envelope.end());
      break;
    }
    case BodyKind::Interest:
      switch (static_cast<InterestOp>(b->op)) {
        case InterestOp::Add: append_interest_add(again, b->id, b->pattern, b->group); break;
        case InterestOp::Remove: append_interest_remove(again, b->id); break;
        case InterestOp::Reset: append_interest_reset(again); break;
        case InterestOp::Synced: append_interest_synced(again); break;
      }
      break;
    case BodyKind::Presence:
      if (static_cast<PresenceOp>(b->op) == PresenceOp::Reset) {
        append_presence_reset(again);
      } else {
        std::vector<std::string> caps(b->capabilities.begin(), b->capabilities.end());
        append_presence(again, static_cast<PresenceOp>(b->op), b->id, b->name, caps);
      }
      break;
  }
  FUZZ_CHECK(again.size() == size);
  FUZZ_CHECK(size == 0 || std::memcmp(again.data(), in.bytes().data(), size) == 0);
  return 0;
}
