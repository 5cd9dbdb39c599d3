// busbench: the coordination-latency harness. Every scenario prints its baselines measured in
// the same run, medians over several runs, and how each side waited.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "scenarios.hpp"

namespace {

void add_common(CLI::App* app, bus::bench::CommonOptions& o) {
  app->add_option("--runs", o.runs, "repetitions; the table shows medians")->check(CLI::Range(1, 1000));
  app->add_option("--json", o.json, "also write the results as JSON to FILE");
  app->add_flag("--quiet", o.quiet, "no progress line on stderr (none unless stderr is a terminal)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"busbench: coordination latency and throughput of busd, with same-run baselines"};
  app.require_subcommand(1);

  bus::bench::RingOptions ring;
  std::string ring_wait = "spin";
  bool quick = false;
  auto* r = app.add_subcommand("ring", "shared-memory ring alone: round trip and streaming between two threads");
  add_common(r, ring);
  r->add_option("--hgrm", ring.hgrm_dir, "write HdrHistogram .hgrm percentile files into DIR");
  r->add_option("--payload", ring.payload, "record size in bytes")->check(CLI::Range(8u, 1u << 20));
  r->add_option("--rounds", ring.rounds, "round trips per run");
  r->add_option("--warmup", ring.warmup, "round trips before measuring");
  r->add_option("--stream", ring.stream, "records per streaming run (0: skip streaming)");
  r->add_option("--batch", ring.batch, "records per publish when streaming")->check(CLI::Range(1u, 4096u));
  r->add_option("--capacity", ring.capacity, "ring data bytes (power of two)");
  r->add_option("--wait", ring_wait, "spin | yield | adaptive[:<n>us] | block");
  r->add_option("--cpus", [&](const CLI::results_t& v) {
      if (v.size() != 2) return false;
      ring.cpu_ping = std::stoi(v[0]);
      ring.cpu_pong = std::stoi(v[1]);
      return true;
    }, "two CPUs to pin the two threads to (-1: no pinning)")->expected(2)->delimiter(',');
  r->add_flag("--quick", quick, "a short run: 3 runs of 20k round trips and 1M records");

  bus::bench::EnvelopeOptions env;
  auto* e = app.add_subcommand("envelope", "cost of building and verifying an Envelope per message");
  add_common(e, env);
  e->add_option("--payload", env.payload, "payload bytes")->check(CLI::Range(0u, 1u << 20));
  e->add_option("--iterations", env.iterations, "messages per run");

  CLI11_PARSE(app, argc, argv);
  // The progress line rewrites itself with \r: only on a terminal.
  if (::isatty(STDERR_FILENO) == 0) ring.quiet = env.quiet = true;
  try {
    if (r->parsed()) {
      auto ws = bus::shm::parse_wait_strategy(ring_wait);
      if (!ws) {
        std::fprintf(stderr, "busbench: --wait: %s\n", ws.error().message().c_str());
        return 2;
      }
      ring.wait = *ws;
      if (quick) {
        ring.runs = 3;
        ring.rounds = 20'000;
        ring.warmup = 2'000;
        ring.stream = 1'000'000;
      }
      return bus::bench::run_ring(ring);
    }
    if (e->parsed()) return bus::bench::run_envelope(env);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "busbench: %s\n", ex.what());
    return 1;
  }
  return 2;
}
