// Writes the seed corpora of fuzz_frames and fuzz_counters: OUTDIR/<target>/<seed>, each under
// 4 KiB (make_corpus.cpp writes the other targets').
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
    auto p = counters::CountersPage::create((dir / "empty").string(), 1, 2);
    require(p.has_value(), "creating a counters page");
    write_seed("fuzz_counters", "empty_page", with_mode(0, page_bytes((dir / "empty").string())));
  }
  {
    auto p = counters::CountersPage::create((dir / "busy").string(), 1, 2);
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
    const Bytes img = page_bytes((dir / "busy").string());
    write_seed("fuzz_counters", "one_agent_two_patterns", with_mode(0, img));
    write_seed("fuzz_counters", "one_agent_header_rewritten", with_mode(4, img));
  }
  {
    // A dead agent, a name of the full 64 bytes, the overflow pattern slot in use.
    auto p = counters::CountersPage::create((dir / "dead").string(), 2, 1);
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

}  // namespace

int main(int argc, char** argv) {
  return bus::corpus::run(argc, argv, "make_corpus_faults", [] {
    frames_seeds();
    counters_seeds();
  });
}
