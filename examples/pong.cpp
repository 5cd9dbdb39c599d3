// pong: answers every request on "demo.ping" with the same payload.
//   pong [--name NAME] [--count N]   (N requests answered, then exit; 0 = until SIGINT)
#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"

static bus::Client* g_client = nullptr;

int main(int argc, char** argv) {
  CLI::App app{"pong: answers requests on demo.ping"};
  std::string name = "pong";
  uint64_t count = 0;
  app.add_option("--name", name, "agent name");
  app.add_option("--count", count, "exit after this many requests (0: run until SIGINT)");
  CLI11_PARSE(app, argc, argv);

  bus::Client c{name};
  g_client = &c;
  std::signal(SIGINT, [](int) { g_client->stop(); });
  std::signal(SIGTERM, [](int) { g_client->stop(); });
  uint64_t answered = 0;
  auto sub = c.subscribe("demo.ping", [&](const bus::Message& m) {
    (void)c.reply(m, m.payload());
    if (++answered == count) c.stop();
  }, "pong");  // a queue group: run several pongs and each request reaches one of them
  if (!sub) {
    std::fprintf(stderr, "pong: %s\n", sub.error().message().c_str());
    return 1;
  }
  std::fprintf(stderr, "pong: ready (agent %u)\n", c.agent_id());
  c.run();
  std::fprintf(stderr, "pong: answered %llu requests\n", static_cast<unsigned long long>(answered));
  return 0;
}
