// Writes the seed corpora of fuzz_frames, fuzz_counters, fuzz_link, fuzz_link_body, fuzz_agent_stream and fuzz_dgram: OUTDIR/<target>/<seed>, each under
// 16 KiB: a counters page with its 43 globals, a few slots and its histograms is ~11 KiB (make_corpus.cpp writes the other targets').
//   ninja -C <build> fuzz-corpus-faults      (regenerates them in the source tree)
// Counters pages are written by the real writer (bus/counters/page.hpp) and checked with the
// reader; frame streams by sock::append_frame around real control messages.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bus/control.hpp"
#include "corpus_writer.hpp"
#include "bus/counters.hpp"
#include "counters/page.hpp"
#include "dgram/channel.hpp"
#include "dgram/wire.hpp"
#include "link/wire.hpp"
#include "links/body.hpp"
#include "socket/endpoint.hpp"
#include "socket/frame.hpp"

using namespace bus;
namespace fs = std::filesystem;
using corpus::Bytes;

namespace {

using corpus::require;
using corpus::write_seed;

// ---- fuzz_frames: [max u16][methods][k][codes...][stream]

Bytes frames_input(uint16_t max, uint8_t methods, const Bytes& codes, const std::vector<std::byte>& stream) {
  Bytes b{uint8_t(max), uint8_t(max >> 8), methods, uint8_t(codes.size())};
  b.insert(b.end(), codes.begin(), codes.end());
  for (std::byte x : stream) b.push_back(static_cast<uint8_t>(x));
  return b;
}

void frame(std::vector<std::byte>& s, const std::string& text) {
  sock::append_frame(s, std::as_bytes(std::span(text.data(), text.size())));
}

std::vector<std::byte> control_stream() {
  std::vector<std::byte> s;
  flatbuffers::FlatBufferBuilder fbb;
  auto add = [&](control::Body t, flatbuffers::Offset<void> body, uint64_t seq) {
    control::FinishControlMessageBuffer(fbb, control::CreateControlMessage(fbb, seq, t, body));
    sock::append_frame(s, {reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()), fbb.GetSize()});
    fbb.Clear();
  };
  add(control::Body::Hello, control::CreateHelloDirect(fbb, 1, 1, "libbus/0.1", 42).Union(), 1);
  add(control::Body::Register, control::CreateRegisterDirect(fbb, "planner").Union(), 2);
  add(control::Body::Subscribe, control::CreateSubscribeDirect(fbb, 1, "jobs.>").Union(), 3);
  add(control::Body::Heartbeat, control::CreateHeartbeat(fbb, 1, 123456789).Union(), 4);
  return s;
}

void frames_seeds() {
  std::vector<std::byte> s;
  frame(s, "hello");
  frame(s, "");
  frame(s, "a longer frame of text");
  write_seed("fuzz_frames", "three_frames_feed", frames_input(64, 0x00, {}, s));
  write_seed("fuzz_frames", "three_frames_direct_1_5_63", frames_input(64, 0xFF, {1, 5, 63}, s));
  write_seed("fuzz_frames", "three_frames_mixed_bytewise", frames_input(64, 0x5A, {1}, s));

  // A frame above the maximum after one that fits: TooLarge, sticky.
  std::vector<std::byte> big;
  frame(big, "12345678");
  const std::byte over[4] = {std::byte{0xE8}, std::byte{0x03}, std::byte{0}, std::byte{0}};  // 1000
  big.insert(big.end(), over, over + 4);
  big.resize(big.size() + 40, std::byte{'x'});
  write_seed("fuzz_frames", "too_large_after_one", frames_input(16, 0x0F, {3, 0, 7}, big));

  // A stream cut inside a frame: pending bytes at the end.
  std::vector<std::byte> cut;
  frame(cut, "complete");
  frame(cut, "this one is cut short");
  cut.resize(cut.size() - 6);
  write_seed("fuzz_frames", "cut_mid_frame", frames_input(100, 0x33, {2, 9}, cut));

  // One large frame in large chunks (code 0x80 | n: n * 64 bytes).
  std::vector<std::byte> large;
  frame(large, std::string(3000, 'L'));
  frame(large, "tail");
  write_seed("fuzz_frames", "large_frame_chunks", frames_input(4096, 0xC3, {0x80 | 20, 0x41, 0x80 | 63}, large));

  // Real control messages, maximum 65535.
  write_seed("fuzz_frames", "control_messages", frames_input(65535, 0xAA, {0x41, 0x02, 0x80 | 1}, control_stream()));

  // Maximum 0: only empty frames.
  std::vector<std::byte> empties;
  frame(empties, "");
  frame(empties, "");
  frame(empties, "x");
  write_seed("fuzz_frames", "max_zero", frames_input(0, 0x01, {4, 1}, empties));
}

// ---- fuzz_counters: [mode][page image]

Bytes page_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  Bytes b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  require(!b.empty(), "empty counters page");
  // Check it with the reader it seeds.
  auto v = counters::open_counters(path);
  require(v.has_value(), "the reader refuses a page the writer wrote");
  return b;
}

Bytes with_mode(uint8_t mode, const Bytes& img) {
  Bytes b{mode};
  b.insert(b.end(), img.begin(), img.end());
  return b;
}

void counters_seeds() {
  const fs::path dir = fs::temp_directory_path() / ("make-corpus-faults-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    auto p = counters::CountersPage::create((dir / "empty").string(), 1, 2, 1);
    require(p.has_value(), "creating a counters page");
    Bytes img = page_bytes((dir / "empty").string());
    write_seed("fuzz_counters", "empty_page", with_mode(0, img));
    // As a busd from before lanes wrote it: max_lanes, lanes_offset and lane_stride all 0.
    using H = counters::PageHeader;
    auto zero = [&](size_t off, size_t n) { std::fill_n(img.begin() + static_cast<std::ptrdiff_t>(off), n, 0); };
    zero(offsetof(H, max_lanes), sizeof(H::max_lanes));
    zero(offsetof(H, lanes_offset), sizeof(H::lanes_offset));
    zero(offsetof(H, lane_stride), sizeof(H::lane_stride));
    write_seed("fuzz_counters", "no_lane_table", with_mode(0, img));
  }
  {
    auto p = counters::CountersPage::create((dir / "busy").string(), 1, 2, 2, 0644, 2);
    require(p.has_value(), "creating a counters page");
    p->add(counters::Global::messages_in, 1234);
    p->add(counters::Global::verify_failures, 7);
    p->set(counters::Global::agents_connected, 1);
    counters::AgentCounters* a = p->agent_open(7, "planner", 4242, 1000, 1000);
    require(a != nullptr, "agent slot");
    counters::message_in(*a, 300);
    counters::bump(a->drops_verify, 2);
    counters::PatternCounters* j = p->pattern_open("jobs.>");
    counters::delivered(*j, 99);
    (void)p->pattern_open("svc.*.plan");
    // Two lanes fill the table (a third finds it full); then one closes (its counters kept).
    counters::LaneCounters* l = p->lane_open(1, 7, "planner", 8, "worker");
    counters::LaneCounters* closed = p->lane_open(2, 7, "planner", 9, std::string(64, 'w'));
    require(l != nullptr && closed != nullptr, "lane slots");
    require(p->lane_open(3, 8, "worker", 9, "full") == nullptr, "a full lane table");
    p->lane_set(l, 0, 10, 640, 1);
    p->lane_set(l, 1, 9, 576, 0);
    p->lane_set(closed, 1, 3, 30, 3);
    p->lane_close(closed);
    // Two peer busds: one up with traffic and a round trip, one forgotten (closed).
    counters::LinkCounters* k = p->link_open(counters::LinkKind::Tcp, "beta", "10.0.0.2:7400");
    counters::LinkCounters* gone = p->link_open(counters::LinkKind::Dpdk, "", std::string(64, 'a'));
    require(k != nullptr && gone != nullptr, "link slots");
    k->up.store(1);
    counters::bump(k->messages_out, 12);
    k->rtt_ns.store(85'000);
    for (uint64_t ns : {900ull, 12'000ull, 13'500ull, 2'000'000ull}) p->record(counters::Hist::request_reply, ns);
    p->record(counters::Hist::link_rtt, 85'000);
    p->link_close(gone);
    const Bytes img = page_bytes((dir / "busy").string());
    write_seed("fuzz_counters", "one_agent_two_patterns", with_mode(0, img));
    write_seed("fuzz_counters", "one_agent_header_rewritten", with_mode(4, img));
  }
  {
    // A dead agent, a name of the full 64 bytes, the overflow pattern slot in use.
    auto p = counters::CountersPage::create((dir / "dead").string(), 2, 1, 1);
    require(p.has_value(), "creating a counters page");
    counters::AgentCounters* a = p->agent_open(9, std::string(64, 'n'), 1, 2, 3);
    require(a != nullptr, "agent slot");
    p->agent_dead(a);
    (void)p->pattern_open("only.one");
    (void)p->pattern_open("overflow.>");
    write_seed("fuzz_counters", "dead_agent_overflow_pattern", with_mode(0, page_bytes((dir / "dead").string())));
  }
  fs::remove_all(dir);

  // Shaped headers around junk, and a forced magic.
  Bytes junk(300);
  for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<uint8_t>(i * 37 + 11);
  write_seed("fuzz_counters", "shaped_junk", with_mode(2, junk));
  write_seed("fuzz_counters", "shaped_junk_rewritten", with_mode(6, junk));
  write_seed("fuzz_counters", "magic_junk", with_mode(1, junk));
  write_seed("fuzz_counters", "short", with_mode(0, Bytes(100, 0xAB)));
}

// ---- fuzz_link: [hold code] then [op][arg lo][arg hi] records (see fuzz_link.cpp)
struct LinkScript {
  Bytes b;
  explicit LinkScript(uint8_t hold) { b.push_back(hold); }
  void op(uint8_t o, size_t arg) {
    b.push_back(o);
    b.push_back(static_cast<uint8_t>(arg));
    b.push_back(static_cast<uint8_t>(arg >> 8));
  }
  void offer(size_t n) { op(0, n); }
  void output(size_t n7) { op(1, n7); }
  // A frame from the peer (without the stream's length prefix).
  void peer(link::FrameType t, uint64_t value, size_t body_len = 0) {
    std::vector<std::byte> f;
    link::append_frame(f, t, value, std::vector<std::byte>(body_len, std::byte{0x42}));
    emit(f);
  }
  void peer_resume(uint64_t last, uint64_t sender, uint64_t seen) {
    std::vector<std::byte> f;
    link::append_resume(f, last, link::ResumeBody{sender, seen});
    emit(f);
  }
  void emit(const std::vector<std::byte>& f) {
    const size_t n = f.size() - link::kLengthBytes;
    op(2, n);
    for (size_t i = link::kLengthBytes; i < f.size(); ++i) b.push_back(static_cast<uint8_t>(f[i]));
  }
};

void link_seeds() {
  {  // a clean conversation: resume, data both ways, acks
    LinkScript s(2);
    s.peer_resume(0, 77, 0);
    for (int i = 0; i < 5; ++i) s.offer(40 + i);
    s.output(1000);
    for (uint64_t q = 1; q <= 4; ++q) s.peer(link::FrameType::Data, q, 30);
    s.op(3, 0);
    s.output(1000);
    s.peer(link::FrameType::Ack, 3);
    s.peer(link::FrameType::Heartbeat, 123);
    write_seed("fuzz_link", "conversation", s.b);
  }
  {  // a break mid-frame, then a resume that says what the peer got
    LinkScript s(0);
    s.peer_resume(0, 77, 0);
    for (int i = 0; i < 8; ++i) s.offer(300);
    s.output(20);
    s.op(5, 0);
    s.peer_resume(2, 77, 0x5EED);
    s.output(2000);
    s.peer(link::FrameType::Ack, 8);
    write_seed("fuzz_link", "break_and_resume", s.b);
  }
  {  // the peer restarts (new session) and its stream starts at a new base
    LinkScript s(1);
    s.peer_resume(0, 77, 0);
    s.peer(link::FrameType::Data, 1, 10);
    s.peer(link::FrameType::Data, 2, 10);
    s.op(5, 0);
    s.peer_resume(0, 78, 0);
    s.peer(link::FrameType::Data, 40, 10);
    s.peer(link::FrameType::Data, 41, 10);
    write_seed("fuzz_link", "peer_restart", s.b);
  }
  {  // protocol violations: data before resume, a gap, an ack beyond what was sent, junk
    LinkScript s(3);
    s.peer(link::FrameType::Data, 1, 10);
    s.peer_resume(0, 9, 0);
    s.peer(link::FrameType::Data, 1, 10);
    s.peer(link::FrameType::Data, 3, 10);
    s.peer_resume(0, 9, 0);
    s.peer(link::FrameType::Ack, 99);
    s.op(2, 5);
    for (int i = 0; i < 5; ++i) s.b.push_back(0xFF);
    write_seed("fuzz_link", "violations", s.b);
  }
  {  // a Hello (the link manager's), then a conversation
    LinkScript s(1);
    std::vector<std::byte> f;
    require(link::append_hello(f, link::Hello{1, 1, "east", "host-a"}).has_value(), "hello");
    s.emit(f);
    s.peer_resume(0, 7, 0);
    s.peer(link::FrameType::Data, 1, 16);
    write_seed("fuzz_link", "hello", s.b);
  }
  {  // a small hold buffer filled, wrapped and drained
    LinkScript s(0);
    s.peer_resume(0, 5, 0);
    for (int round = 0; round < 6; ++round) {
      for (int i = 0; i < 12; ++i) s.offer(200 + 37 * i);
      s.output(600);
      s.peer(link::FrameType::Ack, static_cast<uint64_t>(12 * (round + 1)));
    }
    write_seed("fuzz_link", "wraps", s.b);
  }
}

// ---- fuzz_link_body: one body as busd's encoders write it

Bytes of(const std::vector<std::byte>& v) {
  Bytes b;
  for (std::byte x : v) b.push_back(static_cast<uint8_t>(x));
  return b;
}

void link_body_seeds() {
  std::vector<std::byte> v;
  links::append_interest_add(v, 7, "orders.*.created", "billing");
  write_seed("fuzz_link_body", "interest_add", of(v));
  v.clear();
  links::append_interest_add(v, 1, "svc.>", "");
  write_seed("fuzz_link_body", "interest_add_plain", of(v));
  v.clear();
  links::append_interest_remove(v, 7);
  write_seed("fuzz_link_body", "interest_remove", of(v));
  v.clear();
  links::append_interest_reset(v);
  write_seed("fuzz_link_body", "interest_reset", of(v));
  v.clear();
  links::append_interest_synced(v);
  write_seed("fuzz_link_body", "interest_synced", of(v));
  v.clear();
  const std::string caps[] = {"plan", "gpu"};
  links::append_presence(v, links::PresenceOp::Joined, 42, "planner", caps);
  write_seed("fuzz_link_body", "presence_joined", of(v));
  v.clear();
  links::append_presence_reset(v);
  write_seed("fuzz_link_body", "presence_reset", of(v));
  const uint32_t ids[] = {3, 9, 11};
  std::byte prefix[links::kMaxMessagePrefix];
  const size_t n = links::message_prefix(ids, prefix);
  v.assign(prefix, prefix + n);
  const std::string env = "BUSE-shaped bytes: the envelope is verified by the caller";
  for (char c : env) v.push_back(static_cast<std::byte>(c));
  write_seed("fuzz_link_body", "message", of(v));
}

// ---- fuzz_agent_stream: [max frame / 64] then a remote agent's stream

void agent_stream_seeds() {
  std::vector<std::byte> s;
  const std::string env = "an envelope's bytes (busd verifies them after the stream)";
  tcp::append_chan(s, tcp::kChanData, 0, std::as_bytes(std::span(env.data(), env.size())));
  tcp::append_chan(s, tcp::kChanData, 7, std::as_bytes(std::span(env.data(), env.size())));
  const std::string ctl = "a control message";
  tcp::append_chan(s, tcp::kChanControl, 0, std::as_bytes(std::span(ctl.data(), ctl.size())));
  Bytes b{4};
  for (std::byte x : s) b.push_back(static_cast<uint8_t>(x));
  write_seed("fuzz_agent_stream", "frames", b);
  Bytes bad{1, 12, 0, 0, 0, 'X', 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
  write_seed("fuzz_agent_stream", "bad_channel", bad);
}

// ---- fuzz_dgram: [options] then [op][len lo][len hi][datagram] records (see fuzz_dgram.cpp)
// The datagrams are what a real Channel (connection 0x1111, peer 0x2222) sends for a real link
// session's frames.
struct DgramScript {
  Bytes b;
  explicit DgramScript(uint8_t options) { b.push_back(options); }
  void rec(uint8_t op, std::span<const std::byte> pkt) {
    b.push_back(op);
    b.push_back(static_cast<uint8_t>(pkt.size()));
    b.push_back(static_cast<uint8_t>(pkt.size() >> 8));
    for (std::byte x : pkt) b.push_back(static_cast<uint8_t>(x));
  }
};

// Data packets from a sender whose session offers `sizes` (envelope bytes each).
std::vector<Bytes> dgram_packets(const dgram::ChannelOptions& o, const std::vector<size_t>& sizes) {
  dgram::Channel a(o, 0x1111);
  // The peer's Syn naming a: a is up (as the fuzz target's channel will be with it).
  std::vector<std::byte> syn(dgram::kHeaderBytes + dgram::kSynBody);
  dgram::Header h;
  h.type = dgram::PacketType::Syn;
  h.src_conn = 0x2222;
  h.dst_conn = 0x1111;
  h.window = 64;
  h.payload_len = dgram::kSynBody;
  dgram::write_header(syn.data(), h);
  dgram::store_le(syn.data() + dgram::kHeaderBytes, o.max_packet, 4);
  dgram::seal(syn.data(), syn.size());
  const dgram::RxPacket in{syn.data(), static_cast<uint32_t>(syn.size()), 1};
  require(a.receive(std::span(&in, 1), nullptr, 0, 1000).has_value(), "dgram handshake");
  link::Session s(link::SessionOptions{1u << 16, 64}, 0xAB);
  s.on_connected();
  link::Frame resume;
  std::vector<std::byte> rb;
  link::append_resume(rb, 0, link::ResumeBody{0xCD, 0});
  resume = *link::parse_frame(std::span(rb).subspan(link::kLengthBytes));
  require(s.on_frame(resume).has_value(), "session resume");
  for (size_t n : sizes) {
    std::vector<std::byte> env(n, std::byte{0x5A});
    require(s.offer(env).has_value(), "offer");
  }
  std::vector<std::span<const std::byte>> out;
  a.collect(&s, 2000, out);
  std::vector<Bytes> pkts;
  for (auto p : out) {
    dgram::Header ph;
    if (dgram::parse_header(p, ph) == dgram::Reject::None && ph.type == dgram::PacketType::Data) {
      pkts.emplace_back(reinterpret_cast<const uint8_t*>(p.data()), reinterpret_cast<const uint8_t*>(p.data() + p.size()));
    }
  }
  return pkts;
}

void dgram_seeds() {
  dgram::ChannelOptions o;
  auto as_span = [](const Bytes& x) { return std::as_bytes(std::span(x)); };
  {  // small frames, several to a packet, delivered in order
    DgramScript d(3);
    for (const Bytes& p : dgram_packets(o, {40, 100, 60, 200, 30})) d.rec(16 | 4, as_span(p));
    write_seed("fuzz_dgram", "in_order", d.b);
  }
  {  // a frame in fragments (a small MTU), the packets reordered and one duplicated
    dgram::ChannelOptions small = o;
    small.max_packet = 256;
    DgramScript d(0x80 | 14);  // packets of 256 bytes, window 16, frames up to 4 KiB
    auto pk = dgram_packets(small, {900, 50});
    require(pk.size() >= 4, "fragments");
    std::swap(pk[1], pk[2]);
    for (const Bytes& p : pk) d.rec(16 | 4, as_span(p));
    d.rec(16 | 4, as_span(pk[0]));
    write_seed("fuzz_dgram", "fragments_reordered", d.b);
  }
  {  // a hole (NAKed), then filled; a burst of two
    DgramScript d(4);
    auto pk = dgram_packets(o, {1400, 1400, 1400, 20});
    require(pk.size() >= 4, "hole");
    d.rec(16 | 4, as_span(pk[0]));
    d.rec(16 | 4, as_span(pk[2]));
    d.rec(16 | 8, as_span(pk[1]));
    d.rec(16 | 4, as_span(pk[3]));
    write_seed("fuzz_dgram", "hole_and_burst", d.b);
  }
  {  // a corrupted packet (CRC), then the good one; then a Fin
    DgramScript d(2);
    auto pk = dgram_packets(o, {300});
    Bytes bad = pk[0];
    bad[bad.size() / 2] ^= 0x10;
    d.rec(16 | 4, as_span(bad));
    d.rec(16 | 4, as_span(pk[0]));
    std::vector<std::byte> fin(dgram::kHeaderBytes);
    dgram::Header h;
    h.type = dgram::PacketType::Fin;
    h.src_conn = 0x1111;
    h.dst_conn = 0x2222;
    dgram::write_header(fin.data(), h);
    dgram::seal(fin.data(), fin.size());
    d.rec(4, fin);
    write_seed("fuzz_dgram", "corrupt_then_fin", d.b);
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bus::corpus::run(argc, argv, "make_corpus_faults", [] {
    frames_seeds();
    counters_seeds();
    link_seeds();
    link_body_seeds();
    agent_stream_seeds();
    dgram_seeds();
  });
}
