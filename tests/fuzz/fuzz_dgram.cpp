// Fuzz target: the datagram link decoder (bus::dgram::parse_header + Channel: handshake,
// acks and NAKs, reordering, chunks, fragments and reassembly) fed by a hostile peer.
//
// Input: [options u8] then records [op u8][len lo][len hi][len bytes]:
//   op bit 0   seal: recompute the CRC after the edits below (else the bytes go as they are,
//              so the CRC check itself is fuzzed too)
//   op bit 1   address: write the peer's connection ids into src/dst (the fuzzer cannot guess them)
//   op bit 2   collect(): the channel answers (Syn, Ack with NAKs, Fin), every byte read
//   op bit 3   hold: keep this packet and hand it over with the next one (a burst of two)
//   op bit 4   deliver into a frame vector with max = 1 + op >> 5 (else handshake-only receive)
//   the record's bytes are one datagram.
// Before the records, a real handshake brings the channel up with peer connection 0x1111.
// Properties: no crash, no read outside a packet or a reassembly buffer (every frame's bytes
// are read: ASan); each handle is released at most once and, after release_all(), every
// handle given was released; a frame handed out parses as a link frame; a Down channel stays
// Down and takes packets without delivering.
#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

#include "dgram/channel.hpp"
#include "dgram/wire.hpp"
#include "fuzz_check.hpp"
#include "link/wire.hpp"

using namespace bus;
using namespace bus::dgram;
using bus::fuzz::touch;

namespace {

constexpr uint32_t kMe = 0x2222, kPeer = 0x1111;

struct Harness {
  Channel ch;
  std::map<uint64_t, std::vector<std::byte>> held;  // handle -> bytes the channel may still read
  uint64_t next = 1;
  uint64_t now = 1'000'000;
  std::vector<std::span<const std::byte>> out;

  explicit Harness(const ChannelOptions& o) : ch(o, kMe) {}

  void give_back() {
    for (uint64_t h : ch.released()) {
      auto it = held.find(h);
      FUZZ_CHECK(it != held.end());  // released once, and only what was given
      held.erase(it);
    }
    ch.released().clear();
  }
  RxPacket take(std::vector<std::byte> bytes) {
    const uint64_t h = next++;
    auto& b = held[h] = std::move(bytes);
    return RxPacket{b.data(), static_cast<uint32_t>(b.size()), h};
  }
  void collect() {
    out.clear();
    ch.collect(nullptr, now, out);
    for (auto p : out) {
      FUZZ_CHECK(p.size() >= kHeaderBytes && p.size() <= ch.max_packet());
      Header h;
      FUZZ_CHECK(parse_header(p, h) == Reject::None);  // what it sends is well-formed
      touch(p);
    }
  }
};

std::vector<std::byte> syn_from_peer() {
  std::vector<std::byte> p(kHeaderBytes + kSynBody);
  Header h;
  h.type = PacketType::Syn;
  h.src_conn = kPeer;
  h.dst_conn = kMe;
  h.window = 64;
  h.payload_len = kSynBody;
  write_header(p.data(), h);
  store_le(p.data() + kHeaderBytes, 1472, 4);
  seal(p.data(), p.size());
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  ChannelOptions o;
  o.window = 4u << (data[0] % 5);              // 4 .. 64
  o.max_frame = 256u << (data[0] / 5 % 6);     // 256 B .. 8 KiB
  o.max_packet = data[0] & 0x80 ? 256 : 1472;
  Harness hx(o);
  const RxPacket syn = hx.take(syn_from_peer());
  (void)hx.ch.receive(std::span(&syn, 1), nullptr, 0, hx.now);
  hx.give_back();
  FUZZ_CHECK(hx.ch.state() == ChannelState::Up);
  hx.collect();

  std::vector<RxPacket> burst;
  std::vector<link::Frame> frames;
  size_t at = 1;
  while (at + 3 <= size) {
    const uint8_t op = data[at];
    const size_t len = data[at + 1] | size_t{data[at + 2]} << 8;
    at += 3;
    const size_t n = std::min(len, size - at);
    std::vector<std::byte> pkt(reinterpret_cast<const std::byte*>(data + at), reinterpret_cast<const std::byte*>(data + at + n));
    at += n;
    if ((op & 2) != 0 && pkt.size() >= 16) {
      store_le(pkt.data() + 8, kPeer, 4);
      store_le(pkt.data() + 12, kMe, 4);
    }
    if ((op & 1) != 0 && pkt.size() >= kHeaderBytes) seal(pkt.data(), pkt.size());
    burst.push_back(hx.take(std::move(pkt)));
    if ((op & 8) != 0 && burst.size() < 2) continue;
    const bool was_down = hx.ch.state() == ChannelState::Down;
    frames.clear();
    auto r = hx.ch.receive(burst, (op & 16) != 0 ? &frames : nullptr, 1 + (op >> 5), hx.now);
    burst.clear();
    if (was_down) FUZZ_CHECK(!r && frames.empty());
    if (!r) {
      FUZZ_CHECK(hx.ch.state() == ChannelState::Down);
      FUZZ_CHECK(r.error() == Errc::BadMessage || r.error() == Errc::Closed);
      FUZZ_CHECK(!hx.ch.error().empty());
    }
    for (const link::Frame& f : frames) {
      FUZZ_CHECK(f.body.size() + link::kHeaderBytes <= o.max_frame);  // whole or reassembled
      touch(f.body);
    }
    hx.give_back();
    if ((op & 4) != 0) hx.collect();
    hx.now += 1000 + op * 977;
  }
  if (!burst.empty()) {
    (void)hx.ch.receive(burst, nullptr, 0, hx.now);
    hx.give_back();
  }
  hx.ch.release_all();
  hx.give_back();
  FUZZ_CHECK(hx.held.empty());  // every packet given came back
  return 0;
}
