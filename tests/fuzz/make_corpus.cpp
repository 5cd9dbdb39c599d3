// Writes the seed corpora of the fuzz targets: OUTDIR/<target>/<seed>, each under 4 KiB.
//   ninja -C <build> fuzz-corpus      (regenerates tests/fuzz/corpus/ in the source tree)
// Envelopes and control messages are built with the real encoders and checked with the real
// verifiers; ring images are states that a real producer and consumer left (ring_input.hpp).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "../support/heap_ring.hpp"
#include "bus/envelope.hpp"
#include "bus/limits.hpp"
#include "control_generated.h"
#include "envelope_next_generated.h"
#include "corpus_writer.hpp"
#include "ring_input.hpp"

using namespace bus;
namespace fs = std::filesystem;
using corpus::Bytes;

namespace {

using corpus::require;
using corpus::write_seed;

Bytes to_bytes(std::span<const std::byte> s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  return {p, p + s.size()};
}
Bytes to_bytes(const flatbuffers::FlatBufferBuilder& fbb) {
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::vector<std::byte> pattern(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(seed + i * 31);
  return v;
}

// ---------------------------------------------------------------- control messages

Bytes control_message(uint64_t seq, control::Body type, flatbuffers::Offset<void> body,
                      flatbuffers::FlatBufferBuilder& fbb) {
  control::FinishControlMessageBuffer(fbb, control::CreateControlMessage(fbb, seq, type, body));
  Bytes b = to_bytes(fbb);
  flatbuffers::Verifier v(b.data(), b.size());
  require(control::VerifyControlMessageBuffer(v), "a control seed does not verify");
  return b;
}

void control_seeds() {
  const std::string t = "fuzz_control";
  using namespace bus::control;
  const std::vector<std::string> caps{"plan", "act", "observe.v2"};
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "hello.busc", control_message(1, Body::Hello,
        CreateHelloDirect(f, kProtocolVersion, 1, "busd-sdk-cpp 0.1.0", 4242).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "welcome.busc", control_message(1, Body::Welcome,
        CreateWelcomeDirect(f, kProtocolVersion, "busd 0.1.0", defaults::kMaxMessageSize, 500)
            .Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    const auto c = f.CreateVectorOfStrings(caps);
    write_seed(t, "register.busc", control_message(2, Body::Register,
        CreateRegister(f, f.CreateString("planner"), c).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "registered.busc", control_message(2, Body::Registered,
        CreateRegisteredDirect(f, 17, "planner").Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "subscribe.busc", control_message(3, Body::Subscribe,
        CreateSubscribeDirect(f, 5, "svc.plan.>", "planners", SlowPolicy::DropOldest).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "subscribe_min.busc", control_message(3, Body::Subscribe,
        CreateSubscribeDirect(f, 0, "a.*").Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "unsubscribe.busc", control_message(4, Body::Unsubscribe,
        CreateUnsubscribe(f, 5).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "heartbeat.busc", control_message(5, Body::Heartbeat,
        CreateHeartbeat(f, 99, 123'456'789'000).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    const auto c = f.CreateVectorOfStrings(caps);
    write_seed(t, "presence.busc", control_message(6, Body::Presence,
        CreatePresence(f, PresenceEvent::Died, f.CreateString("actor"), 23, c).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "error_reply.busc", control_message(7, Body::ErrorReply,
        CreateErrorReplyDirect(f, Errc::VersionMismatch, "protocol 9 not supported (1..1)", 1)
            .Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "ok.busc", control_message(8, Body::Ok, CreateOk(f).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "goodbye.busc", control_message(9, Body::Goodbye,
        CreateGoodbyeDirect(f, "shutting down", 2000).Union(), f));
  }
  {
    flatbuffers::FlatBufferBuilder f;
    write_seed(t, "none.busc", control_message(10, Body::NONE, 0, f));
  }
  {
    // body_type Hello with no body: verifies (see fuzz_control.cpp), body_as_Hello() is null.
    flatbuffers::FlatBufferBuilder f;
    ControlMessageBuilder b(f);
    b.add_seq(11);
    b.add_body_type(Body::Hello);
    FinishControlMessageBuffer(f, b.Finish());
    const Bytes bytes = to_bytes(f);
    flatbuffers::Verifier v(bytes.data(), bytes.size());
    require(VerifyControlMessageBuffer(v), "hello_without_body does not verify");
    write_seed(t, "hello_without_body.busc", bytes);
  }
}

// ---------------------------------------------------------------- envelopes

void check_envelope(const Bytes& b) {
  const std::span<const std::byte> s(reinterpret_cast<const std::byte*>(b.data()), b.size());
  require(EnvelopeView::verify(s, defaults::kMaxMessageSize).has_value(),
          "an envelope seed does not verify");
}

void envelope_seeds() {
  const std::string t = "fuzz_envelope";
  MessageMeta m;
  m.kind = wire::Kind::Request;
  m.msg_id = 1001;
  m.stamp = clock::stamp(5'000'000'000, 250'000'000);
  m.source_id = 3;
  m.trace_hi = 0x0123456789ABCDEF;
  m.trace_lo = 0xFEDCBA9876543210;

  auto keep = [&](const std::string& name, std::vector<std::byte> e) {
    const Bytes b = to_bytes(e);
    check_envelope(b);
    write_seed(t, name, b);
  };
  keep("publish_min.busm", build_envelope({"a"}, {}, MessageMeta{}));
  keep("request_full.busm",
       build_envelope({"svc.plan.create", "_inbox.planner.42", "planner", "plan.v1"},
                      pattern(64, 1), m));
  {
    MessageMeta r = m;
    r.kind = wire::Kind::Error;
    r.status = Errc::Timeout;
    r.correlation_id = 1000;
    r.stamp = clock::stamp(6'000'000'000, 0);
    keep("error_reply.busm", build_envelope({"_inbox.planner.42"}, {}, r));
  }
  {
    MessageMeta e;
    e.kind = wire::Kind::Event;
    keep("event.busm", build_envelope({"$bus.presence.joined", {}, "busd"},
                                      pattern(200, 7), e));
  }
  {
    // A nested FlatBuffer payload (a control message), as PayloadFlatBuffer announces.
    flatbuffers::FlatBufferBuilder f;
    control::FinishControlMessageBuffer(
        f, control::CreateControlMessage(f, 1, control::Body::Ok, control::CreateOk(f).Union()));
    const auto nested = to_bytes(f);
    MessageMeta n = m;
    n.kind = wire::Kind::Publish;
    n.payload_is_flatbuffer = true;
    std::vector<std::byte> payload(nested.size());
    std::memcpy(payload.data(), nested.data(), nested.size());
    keep("nested_payload.busm", build_envelope({"svc.ctl", {}, {}, "BUSC"}, payload, n));
  }
  {
    // EnvelopeTemplate output (in-place header, payload last and 8-aligned), odd payload size.
    auto tpl = EnvelopeTemplate::make({"svc.sensor.temp", {}, "sensor-7", "f32x3"});
    require(tpl.has_value(), "template");
    const auto payload = pattern(13, 3);
    std::vector<uint64_t> words(tpl->size_for(payload.size()) / 8 + 1);
    auto* out = reinterpret_cast<std::byte*>(words.data());
    tpl->write(out, payload, m);
    keep("template_write.busm", std::vector<std::byte>(out, out + tpl->size_for(payload.size())));
  }
  keep("payload_1k.busm", build_envelope({"bulk.data", {}, {}, "raw"}, pattern(1000, 9), m));
  {
    // Written by a newer version: fields appended to Envelope (tests/schemas/envelope_next.fbs).
    namespace next = bus::wire::next;
    flatbuffers::FlatBufferBuilder f;
    const auto body = f.CreateVector(std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    const std::vector<std::string> hops{"host-a", "link-1"};
    const auto route = f.CreateVectorOfStrings(hops);
    const auto info = next::CreateNextInfoDirect(f, 2, "site-b");
    const auto subject = f.CreateString("svc.plan.next");
    const next::Header h(7, 0, 1, 0, 0, 0, 2, wire::Code::Ok, next::Kind::Publish, 0);
    next::EnvelopeBuilder eb(f);
    eb.add_header(&h);
    eb.add_subject(subject);
    eb.add_payload(body);
    eb.add_priority(9);
    eb.add_route(route);
    eb.add_extra(info);
    next::FinishEnvelopeBuffer(f, eb.Finish());
    const Bytes b = to_bytes(f);
    check_envelope(b);
    write_seed(t, "next_version.busm", b);
  }
  {
    // Refused: another file_identifier.
    auto e = build_envelope({"a.b"}, pattern(8, 1), m);
    std::memcpy(e.data() + 4, "BUSX", 4);
    write_seed(t, "bad_identifier.busm", to_bytes(e));
  }
}

// ---------------------------------------------------------------- ring images

using bus::fuzz::RingInput;
using Ops = std::vector<std::array<uint8_t, 2>>;

// Makes a fresh ring look as if `base` bytes (a multiple of the capacity) had passed through it;
// endpoints attached afterwards carry on from there (record commit words included).
void start_at(test::HeapRing& r, uint64_t base) {
  r.shared().cons.head.store(base);
  r.shared().prod.tail.store(base);
}

// The state a real producer/consumer pair left in `r`, as a fuzz_ring input.
RingInput capture(const test::HeapRing& r, uint8_t cap_shift, uint32_t max_record,
                  std::vector<uint8_t>& blob) {
  RingInput in;
  in.flags = cap_shift;
  in.max_record = max_record;
  const uint64_t cap = in.capacity();
  const uint64_t head = r.shared().cons.head.load();
  const uint64_t tail = r.shared().prod.tail.load();
  blob.clear();
  for (uint64_t i = head; i != tail; ++i) {
    blob.push_back(static_cast<uint8_t>(r.data()[i & (cap - 1)]));
  }
  in.head = head;
  in.tail = tail;
  return in;
}

void set_ops(RingInput& in, const Ops& ops) {
  for (size_t i = 0; i < ops.size() && i < RingInput::kOps; ++i) in.ops[i] = ops[i];
}

void ring_seed(const std::string& name, RingInput in, const std::vector<uint8_t>& blob,
               const Ops& ops) {
  set_ops(in, ops);
  in.blob = blob;
  write_seed("fuzz_ring", name, in.encode());
}

void ring_seeds() {
  using O = RingInput::Op;
  const Ops consume{{O::Peek, 0}, {O::Advance, 0}, {O::Peek, 0},    {O::ReadCopy, 8},
                    {O::Release, 0}, {O::Poll, 3},  {O::Readable, 0}, {O::Peek, 0},
                    {O::Advance, 0}, {O::Release, 0}};
  std::vector<uint8_t> blob;

  {  // empty ring
    test::HeapRing r(4096);
    ring_seed("empty.ring", capture(r, 0, 0, blob), blob, consume);
  }
  {  // a few records of assorted sizes and tags
    test::HeapRing r(4096);
    auto p = r.producer();
    for (uint32_t len : {0u, 1u, 7u, 8u, 100u, 300u}) {
      require(p.try_write(pattern(len, static_cast<uint8_t>(len)), len + 1).has_value(), "write");
    }
    ring_seed("records.ring", capture(r, 0, 0, blob), blob, consume);
  }
  // Records that wrapped: a pad record at the end of the buffer, the next record at 0; the
  // second time with indices that pass 2^64 there.
  for (const uint64_t base : {uint64_t{0}, ~uint64_t{0} - 4095}) {
    test::HeapRing r(4096);
    start_at(r, base);
    auto p = r.producer();
    auto c = r.consumer();
    require(test::move_to(p, c, 4096 - 64), "move_to");
    require(p.try_write(pattern(40, 1), 1).has_value(), "write");
    require(p.try_write(pattern(100, 2), 2).has_value(), "write (wraps)");
    require(p.try_write(pattern(20, 3), 3).has_value(), "write");
    ring_seed(base == 0 ? "wrapped_pad.ring" : "wrapped_u64.ring", capture(r, 0, 0, blob), blob,
              consume);
  }
  {  // a nearly full ring (a full one would not fit in a 4 KiB seed)
    test::HeapRing r(4096);
    auto p = r.producer();
    for (int i = 0; i < 7; ++i) require(p.try_write(pattern(500, 4), 9).has_value(), "write");
    ring_seed("nearly_full.ring", capture(r, 0, 0, blob), blob, {{O::Poll, 7}, {O::Poll, 7}});
  }
  {  // larger capacities: 8 KiB with records past the first 4 KiB, 32 KiB
    test::HeapRing r(8192);
    auto p = r.producer();
    auto c = r.consumer();
    require(test::move_to(p, c, 6000), "move_to");
    for (uint32_t len : {10u, 2000u, 30u}) {
      require(p.try_write(pattern(len, 5), 4).has_value(), "write");
    }
    ring_seed("records_8k.ring", capture(r, 1, 0, blob), blob, consume);
    test::HeapRing big(32768);
    auto q = big.producer();
    require(q.try_write(pattern(77, 6), 5).has_value(), "write");
    ring_seed("records_32k.ring", capture(big, 3, 0, blob), blob, consume);
  }
  {  // a small max_record: records above it must be refused as Corrupt
    test::HeapRing r(4096, 100);
    auto p = r.producer();
    require(p.try_write(pattern(100, 5), 1).has_value(), "write");
    require(p.try_write(pattern(64, 6), 2).has_value(), "write");
    ring_seed("max_record_100.ring", capture(r, 0, 100, blob), blob, consume);
  }
  {  // an honest producer keeps writing while the consumer reads (flags bit 6)
    test::HeapRing r(4096);
    auto p = r.producer();
    require(p.try_write(pattern(30, 7), 1).has_value(), "write");
    RingInput in = capture(r, 0, 0, blob);
    in.flags |= RingInput::kWithProducer;
    ring_seed("with_producer.ring", in, blob,
              {{O::ProducerWrite, 10}, {O::Peek, 0}, {O::Advance, 0}, {O::ProducerWrite, 200},
               {O::Poll, 4}, {O::ProducerWrite, 255}, {O::ProducerWrite, 255},
               {O::ProducerWrite, 255}, {O::Release, 0}, {O::ProducerWrite, 255},
               {O::Poll, 7}, {O::ProducerWrite, 1}, {O::ArmSleep, 0}, {O::Poll, 7}});
  }
  {  // a hostile producer: moves the tail and rewrites headers under the reader
    test::HeapRing r(4096);
    auto p = r.producer();
    for (int i = 0; i < 4; ++i) require(p.try_write(pattern(24, 8), 1).has_value(), "write");
    ring_seed("hostile_ops.ring", capture(r, 0, 0, blob), blob,
              {{O::Peek, 0}, {O::RewriteHeader, 200}, {O::Peek, 0}, {O::MoveTail, 130},
               {O::Poll, 2}, {O::MoveTail, 3}, {O::Readable, 0}, {O::RewriteHeader, 255},
               {O::Poll, 7}, {O::Release, 0}, {O::ForgeCommit, 6}, {O::WaitPeek, 0},
               {O::Poll, 7}, {O::ForgeCommit, 255}, {O::Poll, 7}});
  }
  // Broken descriptors or regions (RingInput::corrupt = 0xF0 | kind, see fuzz_ring.cpp).
  struct Bad {
    const char* name;
    uint8_t kind;
    uint32_t value;
  };
  for (const Bad& b : {Bad{"bad_magic.ring", 0, 1}, Bad{"bad_version.ring", 1, 2},
                       Bad{"bad_capacity.ring", 3, 4095}, Bad{"benign_reserved.ring", 6, 77},
                       Bad{"truncated.ring", 7, 100}, Bad{"capacity_doubled.ring", 8, 0},
                       Bad{"misaligned.ring", 11, 0}}) {
    test::HeapRing r(4096);
    auto p = r.producer();
    require(p.try_write(pattern(16, 9), 1).has_value(), "write");
    RingInput in = capture(r, 0, 0, blob);
    in.corrupt = static_cast<uint8_t>(0xF0 | b.kind);
    in.corrupt_value = b.value;
    ring_seed(b.name, in, blob, consume);
  }
}

// ---------------------------------------------------------------- wait strategies

void wait_seeds() {
  int i = 0;
  for (std::string_view s : {"spin", "yield", "block", "adaptive", "adaptive:20us", "adaptive:5ms",
                             "adaptive:750ns", "adaptive:10000000000ns", "adaptive:10001ms",
                             "adaptive:", "adaptive:12", "adaptive:-1us", "Spin"}) {
    write_seed("fuzz_wait_strategy", "seed" + std::to_string(i++) + ".txt", Bytes(s.begin(), s.end()));
  }
}

// ---------------------------------------------------------------- busd.toml

// (The other fuzz_config seeds are files written by hand, kept as they are.)
void config_seeds() {
  // [dpdk] with two ports, dpdk links sharing one of them (kind last in one), and a tcp link.
  constexpr std::string_view dpdk = R"([cluster]
listen = ":7400"

[[links]]
peer = "10.0.0.9:7400"

[[links]]
port = "net_memif0"
local = "10.0.0.1:9000"
peer = "10.0.0.2:9000"
peer_mac = "02:00:00:00:00:0B"
window = 4096
rto_min_us = 50
kind = "dpdk"

[[links]]
kind = "dpdk"
port = "net_memif0"
local = "10.0.0.1:9001"
peer = "10.0.0.3:9000"

[[links]]
kind = "dpdk"
port = "0000:03:00.0"
local = "192.168.1.1:9000"
peer = "192.168.1.2:9000"
peer_mac = ""
window = 16
rto_min_us = 1_000_000

[dpdk]
eal = ["-l", "0", "--no-huge", "-m", "512", "--file-prefix=busd",
       "--vdev=net_memif0,role=server,socket=/run/busd/memif.sock"]

[[dpdk.ports]]
name = "net_memif0"
cpu = 1023
idle = "busy"
spin_us = 0
sleep_max_us = 1_000_000
mbufs = 1023
rx_desc = 64
tx_desc = 16384
mtu = 9000
mac = "02:00:00:00:00:0a"
impair_loss = 1000
impair_dup = 1
impair_reorder = 2
impair_corrupt = 3
impair_seed = 9223372036854775807

[[dpdk.ports]]
name = "0000:03:00.0"
cpu = -1
idle = "adaptive"
)";
  write_seed("fuzz_config", "dpdk.toml", Bytes(dpdk.begin(), dpdk.end()));
}


// ---------------------------------------------------------------- handshakes (fuzz_handshake)

// Scripts of fuzz_handshake.cpp: a mode byte, then [op][n][n bytes] records (see its op tables).
void handshake_seeds() {
  using B = Bytes;
  auto cat = [](std::initializer_list<B> parts) {
    B out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  const B hello = {0, 6, 1, 1, 0, 0, 0, 1};       // Hello 1..1, pid 1 (not ours: a lie)
  const B reg = {2, 1, 6};                         // Register "fuzz-agent"
  const B sub = {3, 6, 1, 0, 0, 'a', '.', '>'};    // Subscribe sid 1 "a.>"
  const B find = {5, 1, '*'};
  const B beat = {6, 0};
  const B unsub = {4, 1, 1};
  // The control socket (mode 0).
  write_seed("fuzz_handshake", "unix_good", cat({{0}, hello, reg, sub, find, beat, unsub, find}));
  write_seed("fuzz_handshake", "unix_register_first", cat({{0}, {1, 3, 'a', 'b', 'c'}}));
  write_seed("fuzz_handshake", "unix_subscribe_first", cat({{0}, sub}));
  write_seed("fuzz_handshake", "unix_version_2", cat({{0}, {0, 2, 2, 2}}));
  write_seed("fuzz_handshake", "unix_name_taken", cat({{0}, hello, {2, 1, 0}}));
  write_seed("fuzz_handshake", "unix_name_remote_style", cat({{0}, hello, {2, 1, 1}}));
  write_seed("fuzz_handshake", "unix_hello_twice", cat({{0}, hello, reg, hello, find}));
  write_seed("fuzz_handshake", "unix_register_twice", cat({{0}, hello, reg, {1, 3, 'x', 'y', 'z'}}));
  write_seed("fuzz_handshake", "unix_garbage_frame", cat({{0}, {8, 5, 'h', 'e', 'l', 'l', 'o'}}));
  write_seed("fuzz_handshake", "unix_oversize", cat({{0}, {9, 4, 0xFF, 0xFF, 0xFF, 0x7F}}));
  write_seed("fuzz_handshake", "unix_goodbye", cat({{0}, hello, reg, {7, 0}}));
  // tcp_listen (mode 1): an envelope before Register, a token this busd does not know.
  write_seed("fuzz_handshake", "tcp_good", cat({{1}, hello, reg, sub, find}));
  write_seed("fuzz_handshake", "tcp_data_first", cat({{1}, hello, {8, 5, 1, 0, 0, 0, 0}}));
  write_seed("fuzz_handshake", "tcp_token", cat({{1}, {8, 5, 2, 't', 'o', 'k', 'n'}, hello}));
  write_seed("fuzz_handshake", "tcp_data_after", cat({{1}, hello, reg, {8, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0}, find}));
  // The link greeter (mode 2): Hello 1..1 "default" "fz0", then a heartbeat; refused ones.
  const B link_hello = {0, 4, 1, 1, 0, 0};
  write_seed("fuzz_handshake", "greeter_good", cat({{2}, link_hello, {1, 2, 4, 0}}));
  write_seed("fuzz_handshake", "greeter_heartbeat_first", cat({{2}, {1, 2, 4, 0}, link_hello}));
  write_seed("fuzz_handshake", "greeter_other_cluster", cat({{2}, {0, 4, 1, 1, 1, 0}}));
  write_seed("fuzz_handshake", "greeter_own_node", cat({{2}, {0, 4, 1, 1, 0, 4}}));
  write_seed("fuzz_handshake", "greeter_version_2", cat({{2}, {0, 4, 2, 2, 0, 1}}));
  // links::Peer (mode 3): Hello, receive, read its output, tick, send; a Heartbeat first; a
  // handshake that times out; a greeted connection whose next frame is Data.
  write_seed("fuzz_handshake", "peer_good",
             cat({{3, 0}, {5, 1, 1}, {6, 0}, link_hello, {4, 0}, {7, 1, 16}, {5, 1, 1}, {6, 0}}));
  write_seed("fuzz_handshake", "peer_heartbeat_first", cat({{3, 0}, {1, 2, 4, 0}, {4, 0}}));
  write_seed("fuzz_handshake", "peer_timeout", cat({{3, 0}, {5, 1, 60}, {5, 1, 60}}));
  write_seed("fuzz_handshake", "peer_greeted_data", cat({{3, 1}, {1, 4, 1, 1, 'x', 'y'}, {4, 0}, {5, 1, 1}, {6, 0}}));
}

}  // namespace

int main(int argc, char** argv) {
  return bus::corpus::run(argc, argv, "make_corpus", [] {
    envelope_seeds();
    control_seeds();
    ring_seeds();
    wait_seeds();
    config_seeds();
    handshake_seeds();
  });
}
