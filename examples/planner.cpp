// planner: finds the workers (by capability), hands out tasks to their queue group with many
// requests in flight, and gathers the results.
//   planner [--tasks N] [--in-flight K]
#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"
#include "bus/clock.hpp"

int main(int argc, char** argv) {
  CLI::App app{"planner: scatters tasks to the 'workers' queue group and gathers the results"};
  uint64_t tasks = 1000;
  uint64_t in_flight = 16;
  app.add_option("--tasks", tasks, "tasks to hand out");
  app.add_option("--in-flight", in_flight, "requests outstanding at once");
  CLI11_PARSE(app, argc, argv);

  bus::Client c{"planner"};
  auto workers = c.find_agents("plan");
  if (!workers || workers->empty()) {
    std::fprintf(stderr, "planner: no agent with capability 'plan' (start some workers)\n");
    return 1;
  }
  std::printf("planner: %zu workers: ", workers->size());
  for (const auto& w : *workers) std::printf("%s ", w.name.c_str());
  std::printf("\n");

  std::map<std::string, uint64_t> by_worker;
  uint64_t sent = 0, answered = 0, failed = 0;
  long long total = 0;
  c.on_reply([&](uint64_t, const bus::Expected<bus::Message>& r) {
    ++answered;
    if (!r) {
      ++failed;
      return;
    }
    const std::string_view text = r->text();  // "<sum> by <worker>"
    const size_t by = text.find(" by ");
    total += std::stoll(std::string(text.substr(0, by)));
    ++by_worker[std::string(text.substr(by + 4))];
  });
  const uint64_t t0 = bus::clock::mono_ns();
  while (answered < tasks) {
    while (sent < tasks && sent - answered < in_flight) {
      const std::string task = std::to_string(sent) + " " + std::to_string(sent * 2) + " 1";
      if (!c.send_request("tasks.plan", task, std::chrono::seconds(5))) {
        std::fprintf(stderr, "planner: could not send a task\n");
        return 1;
      }
      ++sent;
    }
    (void)c.poll(std::chrono::milliseconds(100));
  }
  const double secs = static_cast<double>(bus::clock::mono_ns() - t0) / 1e9;
  // Each task i sums i + 2i + 1.
  const long long expect = static_cast<long long>(3 * (tasks * (tasks - 1) / 2) + tasks);
  std::printf("planner: %llu tasks in %.3f s (%.0f tasks/s), %llu failed, sum %lld (%s)\n",
              static_cast<unsigned long long>(tasks), secs, static_cast<double>(tasks) / secs,
              static_cast<unsigned long long>(failed), total, total == expect ? "correct" : "WRONG");
  for (const auto& [w, n] : by_worker) std::printf("  %-12s %llu\n", w.c_str(), static_cast<unsigned long long>(n));
  return failed == 0 && total == expect ? 0 : 1;
}
