#include "link/wire.hpp"

#include <cstring>
#include <string>

namespace bus::link {
namespace {

uint64_t le64(const std::byte* p) noexcept {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

void put_le(std::byte* p, uint64_t v, int n) noexcept {
  for (int i = 0; i < n; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}

const char* type_name(uint8_t t) noexcept {
  switch (static_cast<FrameType>(t)) {
    case FrameType::Data: return "Data";
    case FrameType::Ack: return "Ack";
    case FrameType::Resume: return "Resume";
    case FrameType::Heartbeat: return "Heartbeat";
  }
  return "unknown";
}

}  // namespace

Expected<Frame> parse_frame(std::span<const std::byte> bytes) {
  if (bytes.size() < kHeaderBytes) {
    return fail(Errc::BadMessage, "link frame of " + std::to_string(bytes.size()) + " bytes is shorter than its " +
                                      std::to_string(kHeaderBytes) + "-byte header");
  }
  const auto type = static_cast<uint8_t>(bytes[0]);
  if (type < 1 || type > 4) return fail(Errc::BadMessage, "link frame of unknown type " + std::to_string(type));
  if (bytes[1] != std::byte{0} || bytes[2] != std::byte{0} || bytes[3] != std::byte{0}) {
    return fail(Errc::BadMessage, std::string("link frame ") + type_name(type) + " with flags or reserved bits set");
  }
  Frame f;
  f.type = static_cast<FrameType>(type);
  f.value = le64(bytes.data() + 4);
  f.body = bytes.subspan(kHeaderBytes);
  const size_t want = f.type == FrameType::Resume ? kResumeBodyBytes : 0;
  if (f.type != FrameType::Data && f.body.size() != want) {
    return fail(Errc::BadMessage, std::string("link frame ") + type_name(type) + " with a body of " +
                                      std::to_string(f.body.size()) + " bytes (wanted " + std::to_string(want) + ")");
  }
  if (f.type == FrameType::Data && f.body.empty()) return fail(Errc::BadMessage, "link Data frame without an envelope");
  if (f.type == FrameType::Data && f.value == 0) return fail(Errc::BadMessage, "link Data frame with sequence number 0");
  return f;
}

ResumeBody resume_body(const Frame& f) noexcept {
  if (f.body.size() < kResumeBodyBytes) return {};
  return ResumeBody{le64(f.body.data()), le64(f.body.data() + 8)};
}

void write_prefix(std::byte* out, FrameType type, uint64_t value, uint32_t body_len) noexcept {
  put_le(out, kHeaderBytes + body_len, 4);
  out[4] = static_cast<std::byte>(type);
  out[5] = out[6] = out[7] = std::byte{0};
  put_le(out + 8, value, 8);
}

void append_frame(std::vector<std::byte>& out, FrameType type, uint64_t value, std::span<const std::byte> body) {
  const size_t at = out.size();
  out.resize(at + kPrefixBytes + body.size());
  write_prefix(out.data() + at, type, value, static_cast<uint32_t>(body.size()));
  if (!body.empty()) std::memcpy(out.data() + at + kPrefixBytes, body.data(), body.size());
}

void append_resume(std::vector<std::byte>& out, uint64_t last_received, const ResumeBody& b) {
  std::byte body[kResumeBodyBytes];
  put_le(body, b.sender_session, 8);
  put_le(body + 8, b.seen_session, 8);
  append_frame(out, FrameType::Resume, last_received, body);
}

}  // namespace bus::link
