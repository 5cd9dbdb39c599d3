// An agent process for integration tests (spawned by busd_fixture.hpp).
//   test_agent serve SUBJECT [--group G] [--name N] [--no-reply] [--delay-ms D]
//   test_agent sub SUBJECT --count N [--name N]        exit 0 after N messages (in order: seq)
//   test_agent idle [--name N]                          connect and wait
//   test_agent pub SUBJECT --count N [--delay-ms D]     publish seq 0..N-1 (8-byte payloads),
//                                                       D ms apart every 100, then wait
// Prints "ready" on stdout once subscribed, and every connection state change.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"

static bus::Client* g = nullptr;

int main(int argc, char** argv) {
  CLI::App app{"test agent"};
  std::string mode, subject, group, name = "agent";
  bool no_reply = false;
  int delay_ms = 0;
  uint64_t count = 0;
  app.add_option("mode", mode)->required();
  app.add_option("subject", subject);
  app.add_option("--group", group);
  app.add_option("--name", name);
  app.add_flag("--no-reply", no_reply);
  app.add_option("--delay-ms", delay_ms);
  app.add_option("--count", count);
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  bus::ClientOptions o;
  o.name = name;
  auto c = bus::Client::connect(o);
  if (!c) {
    std::printf("connect failed: %s\n", c.error().message().c_str());
    return 3;
  }
  g = c->get();
  std::signal(SIGTERM, [](int) { g->stop(); });
  (*c)->on_state_change([](bus::ConnectionState s, const bus::Error* e) {
    std::printf("state %s%s%s\n", std::string(bus::to_string(s)).c_str(), e ? ": " : "",
                e ? e->message().c_str() : "");
  });
  bus::Client& cl = **c;
  uint64_t got = 0;
  uint64_t out_of_order = 0;
  if (mode == "serve") {
    auto s = cl.subscribe(subject, [&](const bus::Message& m) {
      if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      if (!no_reply) (void)cl.reply(m, name);  // replies with its own name
    }, group);
    if (!s) return 4;
  } else if (mode == "sub") {
    auto s = cl.subscribe(subject, [&](const bus::Message& m) {
      uint64_t seq = 0;
      if (m.payload().size() >= 8) std::memcpy(&seq, m.payload().data(), 8);
      if (seq != got) ++out_of_order;
      if (++got == count) cl.stop();
    });
    if (!s) return 4;
  } else if (mode == "pub") {
    std::printf("ready\n");
    for (uint64_t i = 0; i < count; ++i) {
      while (!cl.publish(subject, std::as_bytes(std::span(&i, 1)))) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (delay_ms > 0 && i % 100 == 99) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    }
    std::printf("published %llu\n", static_cast<unsigned long long>(count));
  } else if (mode != "idle") {
    return 2;
  }
  if (mode != "pub") std::printf("ready\n");
  cl.run();
  if (mode == "sub") {
    std::printf("received %llu out_of_order %llu\n", static_cast<unsigned long long>(got),
                static_cast<unsigned long long>(out_of_order));
    return got == count && out_of_order == 0 ? 0 : 5;
  }
  return 0;
}
