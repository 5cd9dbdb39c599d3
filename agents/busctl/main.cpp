// busctl: reads busd's state without disturbing it. `stat`, `agents` and `lanes` read the
// counters page busd keeps in shared memory (bus/counters.hpp): no message to busd, no lock, no
// system call on its side.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.hpp"

#ifndef BUS_VERSION
#define BUS_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  CLI::App app{"busctl: look at a running busd (counters read from its shared-memory page)"};
  app.require_subcommand(1);
  app.fallthrough();  // global options are accepted after the subcommand too
  app.set_version_flag("--version", BUS_VERSION);

  bus::ctl::Options o;
  app.add_option("--counters", o.counters,
                 "counters page to read (default: beside busd's socket: $BUS_SOCKET, else "
                 "$XDG_RUNTIME_DIR/busd.sock, else /run/busd/busd.sock, with .sock -> .counters)");

  auto* stat = app.add_subcommand("stat", "global counters, uptime and whether busd is live");
  stat->add_flag("--json", o.json, "one JSON object instead of a table");
  auto* agents = app.add_subcommand("agents", "one row per connected agent");
  agents->add_flag("--json", o.json, "one JSON object instead of a table");
  auto* lanes = app.add_subcommand("lanes", "one row per open direct lane between two agents");
  lanes->add_flag("--json", o.json, "one JSON object instead of a table");
  lanes->add_flag("--all", o.all, "closed lanes too (kept until their slot is reused)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help, version or the error
    return rc == 0 ? bus::ctl::kExitOk : bus::ctl::kExitUsage;
  }
  try {
    if (stat->parsed()) return bus::ctl::run_stat(o);
    if (agents->parsed()) return bus::ctl::run_agents(o);
    if (lanes->parsed()) return bus::ctl::run_lanes(o);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "busctl: %s\n", ex.what());
    return bus::ctl::kExitNotRunning;
  }
  return bus::ctl::kExitUsage;
}
