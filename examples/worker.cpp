// worker: a member of the "workers" queue group on tasks.plan. Each task is a list of numbers
// (text, space-separated); the worker answers with their sum and its own name.
//   worker --name worker1 [--count N]
#include <csignal>
#include <cstdio>
#include <sstream>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"

static bus::Client* g = nullptr;

int main(int argc, char** argv) {
  CLI::App app{"worker: answers tasks.plan as one member of the 'workers' queue group"};
  std::string name = "worker";
  uint64_t count = 0;
  app.add_option("--name", name, "agent name (unique per host)");
  app.add_option("--count", count, "exit after this many tasks (0: until SIGINT/SIGTERM)");
  CLI11_PARSE(app, argc, argv);

  bus::ClientOptions o;
  o.name = name;
  o.capabilities = {"plan"};
  bus::Client c{o};
  g = &c;
  std::signal(SIGINT, [](int) { g->stop(); });
  std::signal(SIGTERM, [](int) { g->stop(); });
  uint64_t done = 0;
  char answer[128];
  auto sub = c.subscribe("tasks.plan", [&](const bus::Message& m) {
    long long sum = 0;
    std::istringstream in{std::string(m.text())};
    for (long long x; in >> x;) sum += x;
    const int n = std::snprintf(answer, sizeof answer, "%lld by %s", sum, name.c_str());
    (void)c.reply(m, std::string_view(answer, static_cast<size_t>(n)));
    if (++done == count) c.stop();
  }, "workers");
  if (!sub) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), sub.error().message().c_str());
    return 1;
  }
  c.run();
  std::fprintf(stderr, "%s: %llu tasks done\n", name.c_str(), static_cast<unsigned long long>(done));
  return 0;
}
