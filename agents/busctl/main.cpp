// busctl: the operator's tool. status, agents, subjects, links, lanes and top read the counters
// page busd keeps in shared memory (bus/counters.hpp): no message to busd, no lock, no system call
// on its side. pub, sub and req join the bus as an ordinary agent (libbus). config check parses
// a busd.toml as busd would. completion prints a shell completion script.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "extras.hpp"
#include "pubsub.hpp"

#ifndef BUS_VERSION
#define BUS_VERSION "unknown"
#endif

namespace {

constexpr const char* kFooter = R"(Exit codes:
  0  ok
  1  busd is not running (no counters page, a stale page, no socket to connect to)
  2  usage: a bad command line
  3  timeout: req got no reply in time; sub --timeout ended before --count messages
     (before any message without --count); pub: busd did not take the message in time
  4  no responders: req found nobody subscribed to the subject
  5  invalid input: a bad subject, DATA that is not valid JSON for --schema/--type, a schema
     that does not parse, a payload too large, a received payload that does not decode
  6  config invalid: config check refused the file (the reason on stderr)
  7  refused: busd or the responder refused (ACL, limits, an error reply, the name is taken)

Where busd is: --socket, else $BUS_SOCKET, else $XDG_RUNTIME_DIR/busd.sock, else
/run/busd/busd.sock; its counters page is beside the socket (busd.sock -> busd.counters).
)";

void add_json_payload(CLI::App* c, bus::ctl::BusOptions& b, bool with_output) {
  c->add_flag("--json", b.json,
              with_output ? "DATA is JSON for --type (sent as a FlatBuffer); payloads received are printed as JSON"
                          : "DATA is JSON for --type, sent as a FlatBuffer");
  c->add_option("--schema", b.schema, "FlatBuffers schema (.fbs) for --json")->type_name("FILE");
  c->add_option("--type", b.type, "root table of --schema for --json (e.g. demo.Order)");
  c->add_option("--name", b.name, "agent name on the bus (default busctl-<pid>)");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace bus::ctl;
  CLI::App app{"busctl: look at and talk to a running busd", "busctl"};
  app.require_subcommand(1);
  app.fallthrough();  // global options are accepted after the subcommand too
  app.set_version_flag("--version", BUS_VERSION);
  app.footer(kFooter);

  Options o;
  app.add_option("--counters", o.counters,
                 "counters page to read (default: beside busd's socket, .sock -> .counters)")
      ->type_name("FILE");
  app.add_option("--socket", o.socket,
                 "busd's socket path, or tcp://host:port / tls://host:port for pub/sub/req "
                 "(default: $BUS_SOCKET, $XDG_RUNTIME_DIR/busd.sock, /run/busd/busd.sock)")
      ->type_name("PATH");

  auto* status = app.add_subcommand("status", "busd's version, pid, uptime, liveness and global counters");
  status->alias("stat");
  status->add_flag("--json", o.json, "one JSON object instead of a table");
  auto* agents = app.add_subcommand("agents", "one row per connected agent");
  agents->add_flag("--json", o.json, "one JSON object instead of a table");
  auto* subjects = app.add_subcommand("subjects", "one row per subscribed pattern (and the overflow row)");
  subjects->add_flag("--json", o.json, "one JSON object instead of a table");
  auto* links = app.add_subcommand("links", "one row per peer busd (cluster links)");
  links->add_flag("--json", o.json, "one JSON object instead of a table");
  links->add_flag("--all", o.all, "forgotten peers too (kept until their slot is reused)");
  auto* lanes = app.add_subcommand("lanes", "one row per open direct lane between two agents");
  lanes->add_flag("--json", o.json, "one JSON object instead of a table");
  lanes->add_flag("--all", o.all, "closed lanes too (kept until their slot is reused)");

  TopOptions t;
  auto* top = app.add_subcommand("top", "a live view: rates, drops, slow consumers, agents, links, subjects");
  top->add_option("--interval", t.interval, "time between refreshes (default 1s; 100ms to 1h)")->type_name("DURATION");
  top->add_option("--iterations", t.iterations, "stop after this many refreshes (default: until q or Ctrl-C)");
  top->add_option("--rows", t.rows, "rows per table (default: all; on a terminal, what fits)");
  top->add_flag("--json", o.json, "one JSON object per refresh, one a line");

  BusOptions b;
  std::string subject, data;
  auto* pub = app.add_subcommand("pub", "publish DATA on SUBJECT");
  pub->add_option("subject", subject, "subject to publish on")->required();
  pub->add_option("data", data, "payload text ('-': read standard input)")->required();
  pub->add_option("--count", b.count, "publish it this many times (default 1)");
  add_json_payload(pub, b, false);

  std::vector<std::string> patterns;
  auto* sub = app.add_subcommand("sub", "print messages on SUBJECT... (patterns: * one token, > the rest)");
  sub->add_option("subject", patterns, "subject patterns (one or more)")->required();
  sub->add_option("--count", b.count, "exit after this many messages");
  sub->add_option("--timeout", b.timeout, "give up after this long (e.g. 5s): exit 3 before --count messages")
      ->type_name("DURATION");
  sub->add_option("--queue", b.queue, "join this queue group (one member gets each message)");
  sub->add_option("--reply", b.reply, "answer every request with this DATA (JSON with --json)");
  add_json_payload(sub, b, true);

  auto* req = app.add_subcommand("req", "send a request and print the reply");
  req->add_option("subject", subject, "subject of the request")->required();
  req->add_option("data", data, "payload text ('-': read standard input)")->required();
  req->add_option("--timeout", b.timeout, "how long to wait for the reply (default 1s)")->type_name("DURATION");
  add_json_payload(req, b, true);

  auto* config = app.add_subcommand("config", "busd configuration files");
  config->require_subcommand(1);
  std::string config_file;
  auto* check = config->add_subcommand("check", "parse and validate FILE as busd would: OK, or the error");
  check->add_option("file", config_file, "a busd.toml")->required()->type_name("FILE");

  auto* completion = app.add_subcommand("completion", "print a shell completion script");
  completion->require_subcommand(1);
  auto* bash = completion->add_subcommand("bash", "bash: source it, or install it as "
                                                  "share/bash-completion/completions/busctl");

  try {
    app.parse(argc, argv);
    b.has_reply = sub->count("--reply") > 0;
    if (b.json && (b.schema.empty() || b.type.empty())) {
      throw CLI::ValidationError("--json", "needs --schema FILE.fbs and --type NAME");
    }
    if (!b.json && (!b.schema.empty() || !b.type.empty())) {
      throw CLI::ValidationError("--schema/--type", "only with --json");
    }
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help, version or the error
    return rc == 0 ? kExitOk : kExitUsage;
  }
  b.socket = o.socket;
  try {
    if (status->parsed()) return run_status(o);
    if (agents->parsed()) return run_agents(o);
    if (subjects->parsed()) return run_subjects(o);
    if (links->parsed()) return run_links(o);
    if (lanes->parsed()) return run_lanes(o);
    if (top->parsed()) return run_top(o, t);
    if (pub->parsed()) return run_pub(b, subject, data);
    if (sub->parsed()) return run_sub(b, patterns);
    if (req->parsed()) return run_req(b, subject, data);
    if (check->parsed()) return run_config_check(config_file);
    if (bash->parsed()) {
      std::fputs(bash_completion(app).c_str(), stdout);
      return kExitOk;
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "busctl: %s\n", ex.what());
    return kExitNotRunning;
  }
  return kExitUsage;
}
