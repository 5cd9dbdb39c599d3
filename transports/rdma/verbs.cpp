#include "rdma/verbs.hpp"

#include <cstring>

namespace bus::rdma {

namespace {
template <class T>
void put(std::byte*& p, T v) noexcept {
  for (size_t i = 0; i < sizeof(T); ++i) *p++ = static_cast<std::byte>(static_cast<uint64_t>(v) >> (8 * i));
}
template <class T>
T get(const std::byte*& p) noexcept {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(*p++) << (8 * i);
  return static_cast<T>(v);
}
}  // namespace

void encode_window(const Window& w, std::byte* out) noexcept {
  std::byte* p = out;
  put<uint32_t>(p, kWindowMagic);
  put<uint16_t>(p, kWindowVersion);
  put<uint16_t>(p, 0);
  put<uint64_t>(p, w.ring_addr);
  put<uint32_t>(p, w.rkey);
  put<uint32_t>(p, w.ring_bytes);
  put<uint64_t>(p, w.credit_addr);
  put<uint32_t>(p, w.credit_slots);
  put<uint32_t>(p, w.max_frame);
}

Expected<Window> decode_window(const void* data, size_t len) {
  if (data == nullptr || len < kWindowBytes) {
    return fail(Errc::BadMessage, "the peer's connect data is " + std::to_string(len) + " bytes, not an RDMA window of 40 (not a busd?)");
  }
  const auto* p = static_cast<const std::byte*>(data);
  if (get<uint32_t>(p) != kWindowMagic) return fail(Errc::BadMessage, "the peer's connect data lacks the busd RDMA magic");
  const uint16_t version = get<uint16_t>(p);
  if (version != kWindowVersion) {
    return fail(Errc::VersionMismatch, "the peer speaks RDMA window version " + std::to_string(version) + ", this busd 1");
  }
  if (get<uint16_t>(p) != 0) return fail(Errc::BadMessage, "the peer's RDMA window has flags this busd does not know");
  Window w;
  w.ring_addr = get<uint64_t>(p);
  w.rkey = get<uint32_t>(p);
  w.ring_bytes = get<uint32_t>(p);
  w.credit_addr = get<uint64_t>(p);
  w.credit_slots = get<uint32_t>(p);
  w.max_frame = get<uint32_t>(p);
  if (w.ring_bytes < 4096 || w.ring_bytes > (1u << 30)) {
    return fail(Errc::BadMessage, "the peer's RDMA ring of " + std::to_string(w.ring_bytes) + " bytes is outside 4 KiB..1 GiB");
  }
  if (w.credit_slots < 4 || w.credit_slots > 65536) {
    return fail(Errc::BadMessage, "the peer's RDMA receive depth " + std::to_string(w.credit_slots) + " is outside 4..65536");
  }
  return w;
}

Expected<void> check(const Options& o) {
  auto bad = [](const std::string& what) { return fail(Errc::InvalidArgument, what); };
  if (o.ring_bytes < 4096 || o.ring_bytes > (1u << 30)) return bad("rdma ring_bytes must be 4 KiB..1 GiB");
  if (o.max_frame < 64) return bad("rdma max_frame must be at least 64 bytes");
  if (uint64_t{o.max_frame} + 4 > o.ring_bytes / 4) {
    return bad("rdma ring_bytes (" + std::to_string(o.ring_bytes) + ") must be at least 4 x (max_frame + 4) = " +
               std::to_string(4 * (uint64_t{o.max_frame} + 4)));
  }
  if (o.send_depth < 4 || o.send_depth > 32768) return bad("rdma send_depth must be 4..32768");
  if (o.recv_depth < 4 || o.recv_depth > 32768) return bad("rdma recv_depth must be 4..32768");
  if (o.signal_every < 1 || o.signal_every > o.send_depth / 2) return bad("rdma signal_every must be 1..send_depth/2");
  if (o.batch_wrs < 1 || o.batch_wrs > o.send_depth) return bad("rdma batch_wrs must be 1..send_depth");
  if (o.inline_bytes > 1024) return bad("rdma inline_bytes must be at most 1024");
  return check_port_gid(o);
}

Expected<void> check_port_gid(const Options& o) {
  if (o.ib_port > 255) {
    return fail(Errc::InvalidArgument, "rdma ib_port must be 0 (any) or 1..255, got " + std::to_string(o.ib_port));
  }
  if (o.gid_index < -1 || o.gid_index > 255) {
    return fail(Errc::InvalidArgument, "rdma gid_index must be -1 (any) or 0..255, got " + std::to_string(o.gid_index));
  }
  return {};
}

}  // namespace bus::rdma
