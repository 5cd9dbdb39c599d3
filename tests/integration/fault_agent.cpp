// A publishing agent process for busctl_live.py (test_agent has subscribers and idlers):
//   fault_agent pub SUBJECT --count N [--name N] [--size BYTES]
// Publishes N messages of BYTES bytes on SUBJECT, prints "published N", then stays connected
// (dispatching nothing) until SIGTERM, and exits 0.
#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"

static bus::Client* g = nullptr;

int main(int argc, char** argv) {
  CLI::App app{"fault test agent"};
  std::string mode, subject, name = "publisher";
  uint64_t count = 0;
  size_t size = 16;
  app.add_option("mode", mode)->required();
  app.add_option("subject", subject)->required();
  app.add_option("--count", count)->required();
  app.add_option("--name", name);
  app.add_option("--size", size);
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (mode != "pub") return 2;

  bus::ClientOptions o;
  o.name = name;
  auto c = bus::Client::connect(o);
  if (!c) {
    std::printf("connect failed: %s\n", c.error().message().c_str());
    return 3;
  }
  g = c->get();
  std::signal(SIGTERM, [](int) { g->stop(); });
  const std::string payload(size, 'p');
  for (uint64_t i = 0; i < count; ++i) {
    if (auto r = (*c)->publish(subject, payload); !r) {
      std::printf("publish %llu failed: %s\n", static_cast<unsigned long long>(i),
                  std::string(bus::errc_name(r.error())).c_str());
      return 4;
    }
  }
  std::printf("published %llu\n", static_cast<unsigned long long>(count));
  (*c)->run();
  return 0;
}
