// ping: sends requests to "demo.ping" and prints the round-trip percentiles.
//   ping [--count N] [--payload BYTES] [--timeout-ms MS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"
#include "bus/clock.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ping: request/reply round trips through busd (or a direct lane it sets up)"};
  std::string name = "ping";
  uint64_t count = 10000;
  size_t payload = 64;
  int timeout_ms = 1000;
  std::string wait = "adaptive";
  app.add_option("--name", name, "agent name");
  app.add_option("--count", count, "round trips");
  app.add_option("--payload", payload, "payload bytes");
  app.add_option("--timeout-ms", timeout_ms, "per-request timeout");
  app.add_option("--wait", wait, "spin | yield | adaptive[:<n>us] | block");
  CLI11_PARSE(app, argc, argv);

  bus::ClientOptions opts;
  opts.name = name;
  opts.wait = wait;
  auto c = bus::Client::connect(opts);
  if (!c) {
    std::fprintf(stderr, "ping: %s\n", c.error().message().c_str());
    return 1;
  }
  std::vector<std::byte> msg(payload, std::byte{'x'});
  std::vector<uint64_t> rtt;
  rtt.reserve(count);
  uint64_t errors = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t t0 = bus::clock::mono_ns();
    auto r = (*c)->request("demo.ping", msg, std::chrono::milliseconds(timeout_ms));
    const uint64_t t1 = bus::clock::mono_ns();
    if (!r) {
      if (++errors <= 3) std::fprintf(stderr, "ping: request %llu: %s\n", static_cast<unsigned long long>(i), r.error().message().c_str());
      continue;
    }
    if (r->payload().size() != payload) ++errors;
    rtt.push_back(t1 - t0);
  }
  if (rtt.empty()) {
    std::fprintf(stderr, "ping: no replies (%llu errors)\n", static_cast<unsigned long long>(errors));
    return 1;
  }
  std::sort(rtt.begin(), rtt.end());
  auto pct = [&](double p) { return rtt[std::min(rtt.size() - 1, static_cast<size_t>(p / 100.0 * rtt.size()))] / 1000.0; };
  // Over a direct lane (busd set one up to the responder) or through busd: say which.
  const auto& st = (*c)->stats();
  const char* path = st.lane_sent == 0 ? "through busd" : st.lane_sent >= st.requests ? "over a direct lane" : "over a lane and through busd";
  std::printf("ping: %zu round trips %s (%zu B, wait=%s): p50 %.1f us  p90 %.1f us  p99 %.1f us  max %.1f us  errors %llu\n",
              rtt.size(), path, payload, wait.c_str(), pct(50), pct(90), pct(99), rtt.back() / 1000.0,
              static_cast<unsigned long long>(errors));
  return errors == 0 ? 0 : 1;
}
