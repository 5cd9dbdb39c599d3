// An agent for the multi-host link tests (links_netns.sh): sequenced publishers and a checking
// subscriber, a responder and a requester. BUS_SOCKET picks the busd.
//   link_agent pub SUBJECT --publisher P --count N [--rate R]   N messages, paced at R/s (0: flat out)
//   link_agent check SUBJECT --publishers K --count N [--timeout-s T] [--print-ids M]
//        exit 0 when every publisher's 1..N arrived exactly once, in order, with intact payloads;
//        --print-ids: "id SUBJECT MSG_ID" for the first M messages (dpdk_netns.sh matches them
//        with envelopes decoded from a packet capture)
//   link_agent serve SUBJECT [--group G] [--name NAME] [--silent]  replies with its name (or never)
//   link_agent ping SUBJECT --count N [--timeout-ms MS]         requests; prints who answered
// A payload is [u32 publisher][u32 0][u64 sequence][u64 hash of both][40 bytes derived from the
// hash]: a message damaged, duplicated, lost or reordered on the way is told apart.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"
#include "bus/clock.hpp"
#include "support/mix.hpp"

namespace {

constexpr size_t kPayload = 64;

using bus::test::mix64;

void fill(std::byte* p, uint32_t publisher, uint64_t seq) {
  std::memset(p, 0, kPayload);
  const uint64_t h = mix64((uint64_t{publisher} << 40) ^ seq);
  std::memcpy(p, &publisher, 4);
  std::memcpy(p + 8, &seq, 8);
  std::memcpy(p + 16, &h, 8);
  for (size_t i = 24; i < kPayload; ++i) p[i] = static_cast<std::byte>(h >> (i % 8 * 8));
}

bool intact(std::span<const std::byte> b, uint32_t& publisher, uint64_t& seq) {
  if (b.size() != kPayload) return false;
  std::memcpy(&publisher, b.data(), 4);
  std::memcpy(&seq, b.data() + 8, 8);
  std::byte want[kPayload];
  fill(want, publisher, seq);
  return std::memcmp(want, b.data(), kPayload) == 0;
}

bus::Client* g = nullptr;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"link test agent"};
  std::string mode, subject, group, name;
  uint32_t publisher = 1, publishers = 1;
  uint64_t count = 1000;
  double rate = 0, timeout_s = 60;
  int timeout_ms = 2000;
  bool silent = false;
  uint64_t print_ids = 0;
  app.add_option("mode", mode)->required();
  app.add_option("subject", subject)->required();
  app.add_option("--publisher", publisher);
  app.add_option("--publishers", publishers);
  app.add_option("--count", count);
  app.add_option("--rate", rate);
  app.add_option("--timeout-s", timeout_s);
  app.add_option("--timeout-ms", timeout_ms);
  app.add_option("--group", group);
  app.add_option("--name", name);
  app.add_flag("--silent", silent, "serve: never reply (a request then stays pending)");
  app.add_option("--print-ids", print_ids, "check: print the subject and message id of the first M messages");
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  bus::ClientOptions o;
  o.name = name.empty() ? mode + "-" + std::to_string(::getpid()) : name;
  auto c = bus::Client::connect(o);
  if (!c) {
    std::printf("connect failed: %s\n", c.error().message().c_str());
    return 3;
  }
  g = c->get();
  std::signal(SIGTERM, [](int) { g->stop(); });
  bus::Client& cl = **c;

  if (mode == "pub") {
    std::byte p[kPayload];
    const uint64_t t0 = bus::clock::mono_ns();
    uint64_t blocked = 0;
    for (uint64_t seq = 1; seq <= count; ++seq) {
      if (rate > 0) {
        const uint64_t due = t0 + static_cast<uint64_t>(static_cast<double>(seq - 1) * 1e9 / rate);
        while (bus::clock::mono_ns() < due) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      fill(p, publisher, seq);
      while (!cl.publish(subject, std::span<const std::byte>(p, kPayload))) {
        ++blocked;
        (void)cl.poll(std::chrono::milliseconds(1));
      }
    }
    cl.flush();
    std::printf("published %llu (blocked %llu times)\n", static_cast<unsigned long long>(count),
                static_cast<unsigned long long>(blocked));
    return 0;
  }
  if (mode == "check") {
    std::map<uint32_t, uint64_t> last;
    std::atomic<uint64_t> got{0};  // the timer thread reads it
    uint64_t dup = 0, gaps = 0, bad = 0, late = 0;
    const uint64_t want = uint64_t{publishers} * count;
    uint64_t printed = 0;
    auto s = cl.subscribe(subject, [&](const bus::Message& m) {
      if (printed < print_ids) {
        ++printed;
        std::printf("id %.*s %llu\n", static_cast<int>(m.subject().size()), m.subject().data(),
                    static_cast<unsigned long long>(m.id()));
      }
      uint32_t pub = 0;
      uint64_t seq = 0;
      if (!intact(m.payload(), pub, seq) || pub == 0 || pub > publishers || seq == 0 || seq > count) {
        ++bad;
        return;
      }
      uint64_t& l = last[pub];
      if (seq <= l) {
        ++dup;  // again, or older than one already seen
      } else {
        if (seq != l + 1) {
          ++gaps;  // lost (or reordered: the missing ones then count as dup/late)
          late += seq - l - 1;
        }
        l = seq;
        ++got;
      }
      if (got == want) cl.stop();
    });
    if (!s) {
      std::printf("subscribe failed: %s\n", s.error().message().c_str());
      return 4;
    }
    std::printf("ready\n");
    std::thread timer([&] {
      const uint64_t end = bus::clock::mono_ns() + static_cast<uint64_t>(timeout_s * 1e9);
      while (got < want && bus::clock::mono_ns() < end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      cl.stop();
    });
    cl.run();
    timer.join();
    (void)cl.poll(std::chrono::milliseconds(200));  // duplicates right behind the last one
    std::printf("received %llu of %llu: duplicates %llu gaps %llu (missing %llu) damaged %llu\n",
                static_cast<unsigned long long>(got.load()), static_cast<unsigned long long>(want),
                static_cast<unsigned long long>(dup), static_cast<unsigned long long>(gaps),
                static_cast<unsigned long long>(late), static_cast<unsigned long long>(bad));
    return got == want && dup == 0 && gaps == 0 && bad == 0 ? 0 : 5;
  }
  if (mode == "serve") {
    auto s = cl.subscribe(subject, [&](const bus::Message& m) {
      if (!silent) (void)cl.reply(m, o.name);
    }, group);
    if (!s) return 4;
    std::printf("ready\n");
    cl.run();
    return 0;
  }
  if (mode == "ping") {
    std::map<std::string, uint64_t> by;
    uint64_t errors = 0;
    std::map<std::string, uint64_t> why;
    for (uint64_t i = 0; i < count; ++i) {
      auto r = cl.request(subject, "ping", std::chrono::milliseconds(timeout_ms));
      if (r) {
        ++by[std::string(r->text())];
      } else {
        ++errors;
        ++why[std::string(bus::errc_name(r.error().code()))];
      }
    }
    std::printf("replies");
    for (const auto& [k, v] : by) std::printf(" %s=%llu", k.c_str(), static_cast<unsigned long long>(v));
    std::printf(" errors=%llu", static_cast<unsigned long long>(errors));
    for (const auto& [k, v] : why) std::printf(" %s=%llu", k.c_str(), static_cast<unsigned long long>(v));
    std::printf("\n");
    return errors == 0 ? 0 : 6;
  }
  return 2;
}
