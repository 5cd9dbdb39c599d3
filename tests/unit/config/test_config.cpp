#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "config/config.hpp"
#include "shm/layout.hpp"

// Not also `using namespace bus`: bus::defaults (limits.hpp) and config::defaults() would clash.
using namespace bus::config;
using bus::Errc;

namespace {

// Every key, none at its default.
constexpr std::string_view kFull = R"(# a deployment
[busd]
socket = "/run/busd/test.sock"
socket_mode = "0640"
socket_group = "busd"
shm_dir = "/dev/shm/busd"
log_level = "debug"
drain_timeout_ms = 500
heartbeat_interval_ms = 1_000
heartbeat_misses = 3
wait = "adaptive:50us"
verify_same_uid = false
acl_owner_all = false

[limits]
max_agents = 64
max_subscriptions_per_agent = 32
max_message_size = 65536
max_pending_requests_per_agent = 16
ring_capacity = 1048576

[cluster]
name = "prod-eu.1"
node = "node_a"
listen = "0.0.0.0:7401"
heartbeat_ms = 250
dead_after_ms = 1_000
handshake_ms = 3000
backoff_min_ms = 20
backoff_max_ms = 20
hold_bytes = 65536

[[acl]]
uid = 1000
gid = 100
name = "worker-?"
publish = ["svc.work.>"]
subscribe = ["svc.plan.*", "$bus.agents.>"]

[[acl]]
publish = ["metrics.>"]

[[links]]
kind = "tcp"
peer = "10.0.0.2:7400"

[[links]]
peer = "[fe80::1%eth0]:7400"
)";

// The one error line of parsing `text`, or "" when it parses.
std::string error_of(std::string_view text) {
  auto c = parse(text, "busd.toml");
  if (c) return {};
  CHECK(c.error().code() == Errc::InvalidArgument);
  return c.error().detail();
}

// parse() refuses `text` with one line that contains every string in `has`.
void refuses(std::string_view text, std::initializer_list<std::string_view> has) {
  const std::string e = error_of(text);
  INFO("document:\n" << text << "\nerror: " << e);
  REQUIRE_FALSE(e.empty());
  CHECK(e.find('\n') == std::string::npos);
  CHECK(e.starts_with("busd.toml"));
  for (std::string_view h : has) CHECK(e.find(h) != std::string::npos);
}

// A kind = "tcp" link to `peer` (the dpdk keys at their defaults).
LinkConfig tcp_link(std::string peer) {
  LinkConfig l;
  l.peer = std::move(peer);
  return l;
}

// A TOML basic string for `s` (the test strings need no escapes).
std::string detail_quote_for_test(std::string_view s) {
  std::string out(1, '"');
  out += s;
  out += '"';
  return out;
}

struct TempFile {
  std::filesystem::path path;
  explicit TempFile(std::string_view text) {
    char name[] = "/tmp/busd-config-test-XXXXXX";
    const int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    ::close(fd);
    path = name;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

}  // namespace

TEST_CASE("the embedded default document parses to defaults()", "[config]") {
  const Config d = defaults();
  auto parsed = parse(default_config_text(), "<default>");
  REQUIRE(parsed.has_value());
  CHECK(*parsed == d);
  CHECK(parse("", "empty.toml").value() == d);  // every key is optional

  // Sizes come from bus/limits.hpp.
  CHECK(d.limits.max_message_size == bus::defaults::kMaxMessageSize);
  CHECK(d.limits.ring_capacity == bus::defaults::kRingCapacity);
  CHECK(d.socket_mode == 0660);
  CHECK(d.log_level == "info");
  CHECK(d.wait == "adaptive");
  CHECK(d.heartbeat_interval_ms == 5000);
  CHECK(d.heartbeat_misses == 6);
  CHECK(d.drain_timeout_ms == 2000);
  CHECK(d.verify_same_uid);
  CHECK(d.acl_owner_all);
  CHECK(d.acl.empty());

  // Every key is listed, with a comment line above it.
  const std::string_view text = default_config_text();
  for (std::string_view key :
       {"socket", "socket_mode", "socket_group", "shm_dir", "log_level", "drain_timeout_ms",
        "heartbeat_interval_ms", "heartbeat_misses", "wait", "verify_same_uid", "acl_owner_all",
        "max_agents", "max_subscriptions_per_agent", "max_message_size",
        "max_pending_requests_per_agent", "ring_capacity", "name", "node", "listen",
        "heartbeat_ms", "dead_after_ms", "handshake_ms", "backoff_min_ms", "backoff_max_ms",
        "hold_bytes"}) {
    std::string line = "\n";  // (not "\n" + string: GCC 12 -Wrestrict false positive)
    line += key;
    line += " = ";
    const size_t at = text.find(line);
    INFO(key);
    REQUIRE(at != std::string_view::npos);
    CHECK(text.substr(0, at).rfind("\n# ") != std::string_view::npos);
  }
  CHECK(text.find("socket_mode = \"0660\"") != std::string_view::npos);
  CHECK(text.find("# [[acl]]") != std::string_view::npos);
  CHECK(text.find("# uid = ") != std::string_view::npos);

  // [cluster] with its defaults; no links, but a commented-out example of one.
  CHECK(d.cluster.name == "default");
  CHECK(d.cluster.node.empty());
  CHECK(d.cluster.listen.empty());
  CHECK(d.cluster.heartbeat_ms == 500);
  CHECK(d.cluster.dead_after_ms == 2000);
  CHECK(d.cluster.handshake_ms == 2000);
  CHECK(d.cluster.backoff_min_ms == 50);
  CHECK(d.cluster.backoff_max_ms == 5000);
  CHECK(d.cluster.hold_bytes == 8u << 20);
  CHECK(d.links.empty());
  const size_t cluster = text.find("\n[cluster]\n");
  REQUIRE(cluster != std::string_view::npos);
  CHECK(cluster > text.find("\n[limits]\n"));
  CHECK(text.find("\nname = \"default\"\n", cluster) != std::string_view::npos);
  CHECK(text.find("\nhold_bytes = 8_388_608\n", cluster) != std::string_view::npos);
  CHECK(text.find("\nheartbeat_ms = 500\n", cluster) != std::string_view::npos);
  CHECK(text.find("[10, 600_000] (restart)\nheartbeat_ms") != std::string_view::npos);
  CHECK(text.find("\n# [[links]]\n# kind = \"tcp\"\n# peer = \"10.0.0.2:7400\"\n") !=
        std::string_view::npos);
  CHECK(text.find("\n[[links]]") == std::string_view::npos);
}

TEST_CASE("a full example sets every key", "[config]") {
  auto c = parse(kFull, "full.toml");
  REQUIRE(c.has_value());
  CHECK(c->socket == "/run/busd/test.sock");
  CHECK(c->socket_mode == 0640);
  CHECK(c->socket_group == "busd");
  CHECK(c->shm_dir == "/dev/shm/busd");
  CHECK(c->log_level == "debug");
  CHECK(c->drain_timeout_ms == 500);
  CHECK(c->heartbeat_interval_ms == 1000);
  CHECK(c->heartbeat_misses == 3);
  CHECK(c->wait == "adaptive:50us");
  CHECK_FALSE(c->verify_same_uid);
  CHECK_FALSE(c->acl_owner_all);
  CHECK(c->limits.max_agents == 64);
  CHECK(c->limits.max_subscriptions_per_agent == 32);
  CHECK(c->limits.max_message_size == 65536);
  CHECK(c->limits.max_pending_requests_per_agent == 16);
  CHECK(c->limits.ring_capacity == 1048576);
  REQUIRE(c->acl.size() == 2);
  CHECK(c->acl[0].uid == 1000u);
  CHECK(c->acl[0].gid == 100u);
  CHECK(c->acl[0].name == "worker-?");
  CHECK(c->acl[0].publish == std::vector<std::string>{"svc.work.>"});
  CHECK(c->acl[0].subscribe == std::vector<std::string>{"svc.plan.*", "$bus.agents.>"});
  CHECK_FALSE(c->acl[1].uid.has_value());
  CHECK_FALSE(c->acl[1].gid.has_value());
  CHECK(c->acl[1].name == "*");
  CHECK(c->acl[1].subscribe.empty());
  CHECK(c->cluster.name == "prod-eu.1");
  CHECK(c->cluster.node == "node_a");
  CHECK(c->cluster.listen == "0.0.0.0:7401");
  CHECK(c->cluster.heartbeat_ms == 250);
  CHECK(c->cluster.dead_after_ms == 1000);
  CHECK(c->cluster.handshake_ms == 3000);
  CHECK(c->cluster.backoff_min_ms == 20);
  CHECK(c->cluster.backoff_max_ms == 20);
  CHECK(c->cluster.hold_bytes == 65536);
  CHECK(c->links == std::vector<LinkConfig>{tcp_link("10.0.0.2:7400"),
                                            tcp_link("[fe80::1%eth0]:7400")});

  // render() writes it back as a document that parses to the same Config.
  const std::string again = render(*c);
  auto back = parse(again, "rendered.toml");
  INFO(again);
  REQUIRE(back.has_value());
  CHECK(*back == *c);
}

TEST_CASE("other accepted forms", "[config]") {
  for (std::string_view mode : {"\"0660\"", "\"660\"", "\"0o660\"", "0o660"}) {
    auto c = parse("[busd]\nsocket_mode = " + std::string(mode), "t");
    INFO(mode);
    REQUIRE(c.has_value());
    CHECK(c->socket_mode == 0660);
  }
  // ring_capacity 0 derives the smallest ring that takes max_message_size.
  auto c = parse("[limits]\nmax_message_size = 8_388_608\nring_capacity = 0", "t");
  REQUIRE(c.has_value());
  CHECK(c->limits.ring_capacity == bus::shm::capacity_for(8u << 20));
  CHECK(c->limits.ring_capacity == 32u << 20);
  // Left out, it derives too, so raising max_message_size alone is enough.
  c = parse("[limits]\nmax_message_size = 8_388_608", "t");
  REQUIRE(c.has_value());
  CHECK(c->limits.ring_capacity == 32u << 20);
  // Dotted keys and inline tables are TOML too.
  c = parse("busd.log_level = \"warn\"\nacl = [{ uid = 0, subscribe = [\"a\"] }]", "t");
  REQUIRE(c.has_value());
  CHECK(c->log_level == "warn");
  REQUIRE(c->acl.size() == 1);
  CHECK(c->acl[0].uid == 0u);
  CHECK(parse("acl = []", "t").has_value());
  CHECK(parse("[busd]\nsocket_group = \"4242\"\nwait = \"spin\"", "t").has_value());
}

TEST_CASE("each kind of error gives one line naming the key", "[config]") {
  SECTION("syntax, with line and column") {
    refuses("[busd]\nlog_level = \n", {"busd.toml:2:", "TOML syntax"});
    refuses("[busd\n", {"busd.toml:1:", "TOML syntax"});
    refuses("[busd]\nlog_level = \"a\"\nlog_level = \"b\"\n", {"busd.toml:3:", "TOML syntax"});
    refuses(std::string_view("a = \"\xff\"", 7), {"busd.toml:1:", "TOML syntax"});
  }
  SECTION("unknown key, with a suggestion") {
    CHECK(error_of("[limits]\nmax_agent = 5\n") ==
          "busd.toml:2: unknown key 'limits.max_agent' (did you mean 'max_agents'?)");
    refuses("[busd]\nlog_lvel = \"info\"", {":2:", "'busd.log_lvel'", "did you mean 'log_level'"});
    refuses("[busd]\nwiat = \"spin\"", {"'busd.wiat'", "did you mean 'wait'"});  // a swap
    refuses("[busd]\nmax_agents = 5", {"'busd.max_agents'", "it belongs in [limits]"});
    refuses("log_level = \"info\"", {"'log_level'", "it belongs in [busd]"});
    refuses("[busd]\nacl = []", {"'busd.acl'", "it belongs at the top level"});
    refuses("[busd]\ncompletely_else = 1", {"unknown key 'busd.completely_else'"});
    CHECK(error_of("[busd]\ncompletely_else = 1").find("did you mean") == std::string::npos);
    refuses("[limit]\nmax_agents = 5", {"busd.toml:1:", "unknown table 'limit'",
                                        "did you mean 'limits'"});
    refuses("[[acl]]\npublsh = [\"a\"]", {":2:", "'acl[0].publsh'", "did you mean 'publish'"});
  }
  SECTION("wrong type") {
    refuses("[busd]\nlog_level = 3", {":2:", "busd.log_level: must be a string, got 3"});
    refuses("[busd]\nverify_same_uid = \"yes\"", {"busd.verify_same_uid: must be true or false"});
    refuses("[limits]\nmax_agents = \"5\"", {"limits.max_agents: must be an integer", "got \"5\""});
    refuses("[limits]\nmax_agents = 5.5", {"limits.max_agents", "got 5.5"});
    refuses("busd = 5", {"busd: must be a table"});
    refuses("[acl]\nuid = 5", {"acl: must be an array of tables ([[acl]])"});
    refuses("[[acl]]\npublish = \"a.b\"", {"acl[0].publish: must be an array"});
    refuses("[[acl]]\npublish = [\"a\", 3]", {"acl[0].publish[1]: must be a string"});
  }
  SECTION("out of range") {
    CHECK(error_of("[limits]\n\nmax_agents = -3\n") ==
          "busd.toml:3: limits.max_agents: must be an integer in [1, 1000000], got -3");
    refuses("[limits]\nmax_message_size = 1000", {"limits.max_message_size", "[1024, 67108864]"});
    refuses("[limits]\nmax_message_size = 67108865", {"limits.max_message_size"});
    refuses("[busd]\nheartbeat_interval_ms = 99", {"busd.heartbeat_interval_ms", "[100, "});
    refuses("[busd]\nheartbeat_misses = 0", {"busd.heartbeat_misses"});
    refuses("[busd]\nlog_level = \"verbose\"", {"busd.log_level", "error, warn, info, debug"});
    refuses("[busd]\nsocket = \"busd.sock\"", {"busd.socket", "absolute path"});
    refuses("[busd]\nsocket = \"/" + std::string(200, 'x') + "\"", {"busd.socket", "at most 107"});
    refuses("[busd]\nshm_dir = \"shm\"", {"busd.shm_dir", "absolute path"});
    refuses("[busd]\nsocket_group = \"a b\"", {"busd.socket_group"});
    refuses("[busd]\nsocket_group = \"99999999999\"", {"busd.socket_group", "gid out of range"});
    refuses("[[acl]]\nuid = -1\npublish = [\"a\"]", {":2:", "acl[0].uid", "[0, 4294967294]"});
    refuses("[[acl]]\nname = \"\"\npublish = [\"a\"]", {"acl[0].name", "non-empty"});
    refuses("[[acl]]\npublish = [\"\"]", {"acl[0].publish[0]", "non-empty"});
    refuses("[[acl]]\nuid = 5", {"busd.toml:1:", "acl[0]: grants nothing"});
  }
  SECTION("bad octal mode") {
    refuses("[busd]\nsocket_mode = \"0968\"", {":2:", "busd.socket_mode", "octal", "\"0777\""});
    refuses("[busd]\nsocket_mode = \"01777\"", {"busd.socket_mode"});
    refuses("[busd]\nsocket_mode = 660", {"busd.socket_mode", "got 660"});  // decimal: refused
    refuses("[busd]\nsocket_mode = \"\"", {"busd.socket_mode"});
    refuses("[busd]\nsocket_mode = 0644", {"busd.toml:2:", "TOML syntax", "in quotes"});
    refuses("[busd]\nsocket_mode = \"rw-rw----\"", {"busd.socket_mode"});
  }
  SECTION("bad wait strategy") {
    refuses("[busd]\nwait = \"fast\"", {":2:", "busd.wait", "'fast'", "spin, yield, block"});
    refuses("[busd]\nwait = \"adaptive:20s\"", {"busd.wait"});
  }
  SECTION("ring too small for max message, or not a power of two") {
    refuses("[limits]\nmax_message_size = 1048576\nring_capacity = 1048576",
            {"busd.toml:3: limits.ring_capacity: 1048576 is too small for "
             "limits.max_message_size = 1048576 (needs at least 4194304"});
    refuses("[limits]\nring_capacity = 65536", {"limits.ring_capacity", "too small"});
    refuses("[limits]\nring_capacity = 5000000", {"limits.ring_capacity", "power of two"});
    refuses("[limits]\nring_capacity = 2048", {"limits.ring_capacity", "power of two in [4096"});
    refuses("[limits]\nring_capacity = -4096", {"limits.ring_capacity"});
  }
  SECTION("control characters never break the line") {
    refuses("[busd]\nlog_level = \"a\\nb\"", {"busd.log_level", "control characters", "\"a\\nb\""});
    refuses("[busd]\n\"x\\ny\" = 1", {"unknown key 'busd.x\\x0Ay'"});
    refuses("[[acl]]\nname = \"a\\u0000b\"\npublish = [\"a\"]", {"acl[0].name"});
  }
}

TEST_CASE("the first problem in the file is the one reported", "[config]") {
  // toml++ keeps keys sorted, not in file order; the lowest line wins.
  const std::string e = error_of("[limits]\nmax_agents = 0\n[busd]\nlog_level = 1\n"
                                 "[[acl]]\nuid = -1\n");
  CHECK(e.starts_with("busd.toml:2: limits.max_agents:"));
  CHECK(error_of("[busd]\nzzz = 1\naaa = 2\n").starts_with("busd.toml:2: unknown key 'busd.zzz'"));
}

TEST_CASE("load_file", "[config]") {
  SECTION("missing file: NotFound naming the path") {
    auto c = load_file("/nonexistent/busd.toml");
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code() == Errc::NotFound);
    CHECK(c.error().detail().find("/nonexistent/busd.toml") != std::string::npos);
  }
  SECTION("a good file") {
    TempFile f(kFull);
    auto c = load_file(f.path.string());
    REQUIRE(c.has_value());
    CHECK(*c == parse(kFull, "x").value());
  }
  SECTION("a bad file: errors start with its path and line") {
    TempFile f("[limits]\nmax_agents = -3\n");
    auto c = load_file(f.path.string());
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code() == Errc::InvalidArgument);
    CHECK(c.error().detail().starts_with(f.path.string() + ":2: limits.max_agents:"));
  }
  SECTION("unreadable file: PermissionDenied") {
    if (::geteuid() == 0) return;  // root reads anything
    TempFile f("");
    std::filesystem::permissions(f.path, std::filesystem::perms::none);
    auto c = load_file(f.path.string());
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code() == Errc::PermissionDenied);
  }
  SECTION("a directory or an endless file") {
    auto d = load_file("/tmp");
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().detail().find("/tmp") != std::string::npos);
    auto z = load_file("/dev/zero");
    REQUIRE_FALSE(z.has_value());
    CHECK(z.error().code() == Errc::TooLarge);
  }
}

TEST_CASE("reloadable_diff splits changed keys by whether a reload applies them", "[config]") {
  const Config a = defaults();
  std::vector<std::string> restart;
  CHECK(reloadable_diff(a, a, &restart).empty());
  CHECK(restart.empty());

  Config b = a;
  b.log_level = "debug";
  b.limits.max_agents = 10;
  b.heartbeat_misses = 2;
  b.socket = "/run/other.sock";
  b.limits.ring_capacity = 8u << 20;
  b.wait = "spin";
  b.acl.push_back(AclRule{.uid = 1000, .gid = {}, .name = "*", .publish = {"a"}, .subscribe = {}});
  CHECK(reloadable_diff(a, b, &restart) ==
        std::vector<std::string>{"busd.log_level", "busd.heartbeat_misses", "limits.max_agents",
                                 "acl"});
  CHECK(restart == std::vector<std::string>{"busd.socket", "busd.wait", "limits.ring_capacity"});
  CHECK(reloadable_diff(a, b, nullptr).size() == 4);

  // From parsed documents, as on SIGHUP.
  auto before = parse(default_config_text(), "<default>").value();
  auto after = parse("[busd]\nsocket_mode = \"0600\"\ndrain_timeout_ms = 10", "busd.toml").value();
  restart.clear();
  CHECK(reloadable_diff(before, after, &restart) ==
        std::vector<std::string>{"busd.drain_timeout_ms"});
  CHECK(restart == std::vector<std::string>{"busd.socket_mode"});
}

TEST_CASE("[cluster] and [[links]]: accepted forms", "[config][cluster]") {
  // listen: "" (none), a port on the loopback address, host:port, [v6]:port.
  for (std::string_view listen : {"", "7400", ":7400", "1", "65535", "0.0.0.0:7400",
                                  "localhost:7400", "bus-1.example.org:1", "[::1]:7400",
                                  "[::]:65535", "[fe80::1%eth0]:7400", "[::ffff:10.0.0.1]:80"}) {
    auto c = parse("[cluster]\nlisten = " + detail_quote_for_test(listen), "t");
    INFO(listen);
    REQUIRE(c.has_value());
    CHECK(c->cluster.listen == listen);
  }
  // name and node: letters, digits, '.', '_' and '-'; node "" is the host name.
  auto c = parse("[cluster]\nname = \"A.b_c-9\"\nnode = \"\"", "t");
  REQUIRE(c.has_value());
  CHECK(c->cluster.name == "A.b_c-9");
  CHECK(c->cluster.node.empty());
  c = parse("[cluster]\nname = \"" + std::string(255, 'n') + "\"\nnode = \"" +
                std::string(255, 'x') + "\"",
            "t");
  REQUIRE(c.has_value());
  CHECK(c->cluster.node.size() == 255);
  // The bounds of every range, and the cross-field limits just met.
  c = parse("[cluster]\nheartbeat_ms = 10\ndead_after_ms = 30\nhandshake_ms = 10\n"
            "backoff_min_ms = 1\nbackoff_max_ms = 1\nhold_bytes = 65536",
            "t");
  REQUIRE(c.has_value());
  CHECK(c->cluster.heartbeat_ms == 10);
  CHECK(c->cluster.dead_after_ms == 30);
  CHECK(c->cluster.backoff_max_ms == 1);
  CHECK(c->cluster.hold_bytes == 65536);
  c = parse("[cluster]\nheartbeat_ms = 600_000\ndead_after_ms = 3_600_000\n"
            "handshake_ms = 600_000\nbackoff_min_ms = 600_000\nbackoff_max_ms = 600_000\n"
            "hold_bytes = 1_073_741_824",
            "t");
  REQUIRE(c.has_value());
  CHECK(c->cluster.dead_after_ms == 3'600'000);
  CHECK(c->cluster.hold_bytes == 1u << 30);
  c = parse("[cluster]\nheartbeat_ms = 999\ndead_after_ms = 1000", "t");
  REQUIRE(c.has_value());
  CHECK(c->cluster.dead_after_ms == 1000);

  // [[links]]: kind defaults to tcp; inline tables too; an empty array is no links.
  c = parse("[[links]]\npeer = \"b.example:7400\"\n\n[[links]]\nkind = \"tcp\"\n"
            "peer = \"[2001:db8::2]:7400\"\n",
            "t");
  REQUIRE(c.has_value());
  CHECK(c->links == std::vector<LinkConfig>{tcp_link("b.example:7400"),
                                            tcp_link("[2001:db8::2]:7400")});
  c = parse("links = [{ peer = \"a:1\" }, { peer = \"a:2\", kind = \"tcp\" }]", "t");
  REQUIRE(c.has_value());
  REQUIRE(c->links.size() == 2);
  CHECK(c->links[1].peer == "a:2");  // another port of one host is another peer
  c = parse("links = []", "t");
  REQUIRE(c.has_value());
  CHECK(c->links.empty());
}

TEST_CASE("[cluster] and [[links]]: each error is one exact line", "[config][cluster]") {
  SECTION("name and node") {
    CHECK(error_of("[cluster]\nname = \"a b\"") ==
          "busd.toml:2: cluster.name: must be 1 to 255 characters of A-Z a-z 0-9 . _ -, "
          "got \"a b\"");
    CHECK(error_of("[cluster]\nname = \"\"") ==
          "busd.toml:2: cluster.name: must be 1 to 255 characters of A-Z a-z 0-9 . _ -, got \"\"");
    CHECK(error_of("[cluster]\nname = \"" + std::string(256, 'n') + "\"") ==
          "busd.toml:2: cluster.name: must be at most 255 characters, got 256");
    CHECK(error_of("[cluster]\n\nnode = \"x/y\"") ==
          "busd.toml:3: cluster.node: must be \"\" (the host name) or 1 to 255 characters of "
          "A-Z a-z 0-9 . _ -, got \"x/y\"");
    CHECK(error_of("[cluster]\nnode = \"" + std::string(300, 'x') + "\"") ==
          "busd.toml:2: cluster.node: must be at most 255 characters, got 300");
    CHECK(error_of("[cluster]\nnode = 7") == "busd.toml:2: cluster.node: must be a string, got 7");
  }
  SECTION("listen") {
    CHECK(error_of("[cluster]\nlisten = \"x\"") ==
          "busd.toml:2: cluster.listen: must be \"\" (no listener), a port (loopback), "
          "\"host:port\" or \"[v6]:port\", got \"x\"");
    for (std::string_view bad : {"host:", "host:http", "::1:7400", "[::1]7400", "[::1]:",
                                 "[]:7400", "[zz::1]:7400", "[::1", ":", " 7400", "7400 ",
                                 "a b:7400", "host:+80", "*:7400", "1.2.3.4:7400:1"}) {
      INFO(bad);
      CHECK(error_of("[cluster]\nlisten = " + detail_quote_for_test(bad)) ==
            "busd.toml:2: cluster.listen: must be \"\" (no listener), a port (loopback), "
            "\"host:port\" or \"[v6]:port\", got " + detail_quote_for_test(bad));
    }
    for (std::string_view bad : {"0", ":0", "65536", "host:0", "host:70000", "[::1]:65536"}) {
      INFO(bad);
      CHECK(error_of("[cluster]\nlisten = " + detail_quote_for_test(bad)) ==
            "busd.toml:2: cluster.listen: port must be in [1, 65535], got " +
                detail_quote_for_test(bad));
    }
  }
  SECTION("timings and hold_bytes: ranges") {
    CHECK(error_of("[cluster]\nheartbeat_ms = 9") ==
          "busd.toml:2: cluster.heartbeat_ms: must be an integer in [10, 600000], got 9");
    CHECK(error_of("[cluster]\nheartbeat_ms = 600001") ==
          "busd.toml:2: cluster.heartbeat_ms: must be an integer in [10, 600000], got 600001");
    CHECK(error_of("[cluster]\ndead_after_ms = 29") ==
          "busd.toml:2: cluster.dead_after_ms: must be an integer in [30, 3600000], got 29");
    CHECK(error_of("[cluster]\ndead_after_ms = 3600001") ==
          "busd.toml:2: cluster.dead_after_ms: must be an integer in [30, 3600000], got 3600001");
    CHECK(error_of("[cluster]\nhandshake_ms = 9") ==
          "busd.toml:2: cluster.handshake_ms: must be an integer in [10, 600000], got 9");
    CHECK(error_of("[cluster]\nhandshake_ms = 600001") ==
          "busd.toml:2: cluster.handshake_ms: must be an integer in [10, 600000], got 600001");
    CHECK(error_of("[cluster]\nbackoff_min_ms = 0") ==
          "busd.toml:2: cluster.backoff_min_ms: must be an integer in [1, 600000], got 0");
    CHECK(error_of("[cluster]\nbackoff_max_ms = 600001") ==
          "busd.toml:2: cluster.backoff_max_ms: must be an integer in [1, 600000], got 600001");
    CHECK(error_of("[cluster]\nhold_bytes = 65535") ==
          "busd.toml:2: cluster.hold_bytes: must be an integer in [65536, 1073741824], got 65535");
    CHECK(error_of("[cluster]\nhold_bytes = 1073741825") ==
          "busd.toml:2: cluster.hold_bytes: must be an integer in [65536, 1073741824], "
          "got 1073741825");
    CHECK(error_of("[cluster]\nhold_bytes = -1") ==
          "busd.toml:2: cluster.hold_bytes: must be an integer in [65536, 1073741824], got -1");
    CHECK(error_of("[cluster]\nheartbeat_ms = \"500\"") ==
          "busd.toml:2: cluster.heartbeat_ms: must be an integer in [10, 600000], got \"500\"");
  }
  SECTION("dead_after_ms > heartbeat_ms and backoff_max_ms >= backoff_min_ms") {
    // At dead_after_ms's line when the file gives it, else at heartbeat_ms's; both named.
    CHECK(error_of("[cluster]\nheartbeat_ms = 500\ndead_after_ms = 500") ==
          "busd.toml:3: cluster.dead_after_ms: 500 must be greater than "
          "cluster.heartbeat_ms = 500");
    CHECK(error_of("[cluster]\ndead_after_ms = 100\nheartbeat_ms = 200") ==
          "busd.toml:2: cluster.dead_after_ms: 100 must be greater than "
          "cluster.heartbeat_ms = 200");
    CHECK(error_of("[cluster]\ndead_after_ms = 400") ==
          "busd.toml:2: cluster.dead_after_ms: 400 must be greater than "
          "cluster.heartbeat_ms = 500");
    CHECK(error_of("[cluster]\nheartbeat_ms = 3000") ==
          "busd.toml:2: cluster.heartbeat_ms: 3000 must be less than cluster.dead_after_ms = 2000");
    CHECK(error_of("[cluster]\nbackoff_min_ms = 100\nbackoff_max_ms = 99") ==
          "busd.toml:3: cluster.backoff_max_ms: 99 must be at least cluster.backoff_min_ms = 100");
    CHECK(error_of("[cluster]\nbackoff_max_ms = 49") ==
          "busd.toml:2: cluster.backoff_max_ms: 49 must be at least cluster.backoff_min_ms = 50");
    CHECK(error_of("[cluster]\nbackoff_min_ms = 6000") ==
          "busd.toml:2: cluster.backoff_min_ms: 6000 must be at most "
          "cluster.backoff_max_ms = 5000");
    // A problem of its own comes first.
    CHECK(error_of("[cluster]\nheartbeat_ms = 3000\nhold_bytes = 1") ==
          "busd.toml:3: cluster.hold_bytes: must be an integer in [65536, 1073741824], got 1");
  }
  SECTION("unknown keys and tables, with suggestions") {
    CHECK(error_of("[cluster]\nhold_byte = 65536") ==
          "busd.toml:2: unknown key 'cluster.hold_byte' (did you mean 'hold_bytes'?)");
    CHECK(error_of("[busd]\nlisten = \":7400\"") ==
          "busd.toml:2: unknown key 'busd.listen' (it belongs in [cluster])");
    CHECK(error_of("heartbeat_ms = 100") ==
          "busd.toml:1: unknown key 'heartbeat_ms' (it belongs in [cluster])");
    CHECK(error_of("[clustr]\nname = \"a\"") ==
          "busd.toml:1: unknown table 'clustr' (did you mean 'cluster'?)");
    CHECK(error_of("[[link]]\npeer = \"a:1\"") ==
          "busd.toml:1: unknown table 'link' (did you mean 'links'?)");
    CHECK(error_of("[cluster]\nlinks = []") ==
          "busd.toml:2: unknown key 'cluster.links' (it belongs at the top level, before any "
          "[table])");
    CHECK(error_of("[[links]]\npeer = \"a:1\"\nkinf = \"tcp\"") ==
          "busd.toml:3: unknown key 'links[0].kinf' (did you mean 'kind'?)");
    CHECK(error_of("[[links]]\npeer = \"a:1\"\n[[links]]\npeer = \"b:1\"\npeers = \"c:1\"") ==
          "busd.toml:5: unknown key 'links[1].peers' (did you mean 'peer'?)");
    CHECK(error_of("[[links]]\npeer = \"a:1\"\nlisten = \"b:1\"") ==
          "busd.toml:3: unknown key 'links[0].listen' (it belongs in [cluster])");
  }
  SECTION("wrong table types") {
    CHECK(error_of("cluster = 5") == "busd.toml:1: cluster: must be a table ([cluster]), got 5");
    CHECK(error_of("links = 5") ==
          "busd.toml:1: links: must be an array of tables ([[links]]), got 5");
    CHECK(error_of("links = [\"a:1\"]") ==
          "busd.toml:1: links: must be an array of tables ([[links]]), got an array");
    refuses("[links]\npeer = \"a:1\"",
            {"links: must be an array of tables ([[links]]), got a table"});
  }
  SECTION("link kind") {
    // (kind = "dpdk" is accepted: see the [dpdk] tests.)
    // kind = "rdma" is accepted too (test_config_rdma.cpp).
    CHECK(error_of("[[links]]\npeer = \"a:1\"\n\n[[links]]\nkind = \"rdma\"\npeer = \"b:1\"").empty());
    CHECK(error_of("[[links]]\nkind = \"udp\"\npeer = \"a:1\"") ==
          "busd.toml:2: links[0].kind: must be one of tcp, dpdk, rdma, got \"udp\"");
    CHECK(error_of("[[links]]\nkind = \"TCP\"\npeer = \"a:1\"") ==
          "busd.toml:2: links[0].kind: must be one of tcp, dpdk, rdma, got \"TCP\"");
    CHECK(error_of("[[links]]\nkind = 1\npeer = \"a:1\"") ==
          "busd.toml:2: links[0].kind: must be a string, got 1");
  }
  SECTION("link peer") {
    CHECK(error_of("[[links]]\nkind = \"tcp\"") ==
          "busd.toml:1: links[0]: peer is required (\"host:port\" or \"[v6]:port\" of the peer "
          "busd's [cluster] listen)");
    CHECK(error_of("links = [{ kind = \"tcp\" }]")
              .starts_with("busd.toml:1: links[0]: peer is required"));
    // A port alone is a listen form only: a peer needs its host.
    for (std::string_view bad : {"7400", ":7400", "", "host", "::1:7400", "[::1]7400",
                                 "host:port", "a/b:1", "[x]:1"}) {
      INFO(bad);
      CHECK(error_of("[[links]]\npeer = " + detail_quote_for_test(bad)) ==
            "busd.toml:2: links[0].peer: must be \"host:port\" or \"[v6]:port\", got " +
                detail_quote_for_test(bad));
    }
    CHECK(error_of("[[links]]\npeer = \"a:0\"") ==
          "busd.toml:2: links[0].peer: port must be in [1, 65535], got \"a:0\"");
    CHECK(error_of("[[links]]\npeer = \"[::1]:65536\"") ==
          "busd.toml:2: links[0].peer: port must be in [1, 65535], got \"[::1]:65536\"");
    CHECK(error_of("[[links]]\npeer = 7400") ==
          "busd.toml:2: links[0].peer: must be a string, got 7400");
    // A bad peer is reported as that, not also as a missing one.
    CHECK(error_of("[[links]]\npeer = \"a\\nb:1\"") ==
          "busd.toml:2: links[0].peer: must not contain control characters, got \"a\\nb:1\"");
  }
  SECTION("one link per peer") {
    CHECK(error_of("[[links]]\npeer = \"10.0.0.2:7400\"\n[[links]]\npeer = \"10.0.0.3:7400\"\n"
                   "[[links]]\npeer = \"10.0.0.2:7400\"") ==
          "busd.toml:6: links[2].peer: \"10.0.0.2:7400\" is already the peer of links[0] "
          "(one link per peer)");
    // Host names are case-insensitive and a port is a number.
    CHECK(error_of("[[links]]\npeer = \"Node-A:7400\"\n[[links]]\npeer = \"node-a:07400\"") ==
          "busd.toml:4: links[1].peer: \"node-a:07400\" is already the peer of links[0] "
          "(one link per peer)");
    CHECK(error_of("links = [{ peer = \"[::1]:1\" }, { peer = \"[::1]:1\" }]") ==
          "busd.toml:1: links[1].peer: \"[::1]:1\" is already the peer of links[0] "
          "(one link per peer)");
  }
}

TEST_CASE("render() round trips [cluster] and [[links]]", "[config][cluster]") {
  Config c = defaults();
  c.cluster = Cluster{.name = "c-1",
                      .node = "n.2",
                      .listen = "[::1]:7400",
                      .heartbeat_ms = 100,
                      .dead_after_ms = 101,
                      .handshake_ms = 10,
                      .backoff_min_ms = 7,
                      .backoff_max_ms = 600'000,
                      .hold_bytes = (1ull << 30) - 1};
  c.links = {tcp_link("10.0.0.2:7400"),
             tcp_link("[fe80::2%eth0]:7401"),
             tcp_link("peer.example:1")};
  const std::string doc = render(c);
  INFO(doc);
  auto back = parse(doc, "rendered.toml");
  REQUIRE(back.has_value());
  CHECK(*back == c);
  CHECK(doc.find("\n[[links]]\nkind = \"tcp\"\npeer = \"10.0.0.2:7400\"\n") != std::string::npos);
  CHECK(doc.find("\nlisten = \"[::1]:7400\"\n") != std::string::npos);
  CHECK(doc.find("\nhold_bytes = 1_073_741_823\n") != std::string::npos);
  CHECK(doc.find("# [[links]]") == std::string::npos);  // no example when there are links

  // With [[acl]] rules too: the links still come after them and parse back.
  c.acl.push_back(AclRule{.uid = {}, .gid = 7, .name = "*", .publish = {}, .subscribe = {"a"}});
  const std::string doc2 = render(c);
  auto back2 = parse(doc2, "rendered.toml");
  INFO(doc2);
  REQUIRE(back2.has_value());
  CHECK(*back2 == c);
  CHECK(doc2.find("\n[[acl]]\n") < doc2.find("\n[[links]]\n"));

  // A listen of "" and a node of "" render as such and come back.
  c.cluster.listen = ":7400";
  c.links.clear();
  auto back3 = parse(render(c), "rendered.toml");
  REQUIRE(back3.has_value());
  CHECK(*back3 == c);
  CHECK(back3->cluster.listen == ":7400");
}

TEST_CASE("reloadable_diff: cluster keys and links need a restart", "[config][cluster]") {
  const Config a = defaults();
  std::vector<std::string> restart;
  Config b = a;
  b.log_level = "warn";
  b.cluster.listen = ":7400";
  b.cluster.heartbeat_ms = 100;
  b.cluster.hold_bytes = 1u << 20;
  b.links.push_back(tcp_link("h:1"));
  CHECK(reloadable_diff(a, b, &restart) == std::vector<std::string>{"busd.log_level"});
  CHECK(restart == std::vector<std::string>{"cluster.listen", "cluster.heartbeat_ms",
                                            "cluster.hold_bytes", "links"});
  CHECK(reloadable_diff(a, b, nullptr) == std::vector<std::string>{"busd.log_level"});

  // Every [cluster] key, one at a time. (Strings by assign(): GCC 12 -Wrestrict false positive
  // on `s = "x"` here at -O3.)
  for (const auto& [key, change] :
       std::initializer_list<std::pair<std::string_view, void (*)(Cluster&)>>{
           {"cluster.name", [](Cluster& c) { c.name.assign(1, 'x'); }},
           {"cluster.node", [](Cluster& c) { c.node.assign(1, 'x'); }},
           {"cluster.listen", [](Cluster& c) { c.listen.assign(1, '1'); }},
           {"cluster.heartbeat_ms", [](Cluster& c) { c.heartbeat_ms = 11; }},
           {"cluster.dead_after_ms", [](Cluster& c) { c.dead_after_ms = 31; }},
           {"cluster.handshake_ms", [](Cluster& c) { c.handshake_ms = 11; }},
           {"cluster.backoff_min_ms", [](Cluster& c) { c.backoff_min_ms = 2; }},
           {"cluster.backoff_max_ms", [](Cluster& c) { c.backoff_max_ms = 6000; }},
           {"cluster.hold_bytes", [](Cluster& c) { c.hold_bytes = 65536; }}}) {
    Config d = a;
    change(d.cluster);
    restart.clear();
    INFO(key);
    CHECK(reloadable_diff(a, d, &restart).empty());
    CHECK(restart == std::vector<std::string>{std::string(key)});
  }

  // A changed peer, a changed order, one link fewer: "links" once.
  auto before = parse("[[links]]\npeer = \"a:1\"\n[[links]]\npeer = \"b:1\"", "busd.toml").value();
  for (std::string_view text : {"[[links]]\npeer = \"a:1\"\n[[links]]\npeer = \"b:2\"",
                                "[[links]]\npeer = \"b:1\"\n[[links]]\npeer = \"a:1\"",
                                "[[links]]\npeer = \"a:1\"", ""}) {
    auto after = parse(text, "busd.toml").value();
    restart.clear();
    INFO(text);
    CHECK(reloadable_diff(before, after, &restart).empty());
    CHECK(restart == std::vector<std::string>{"links"});
  }
  restart.clear();
  CHECK(reloadable_diff(before, before, &restart).empty());
  CHECK(restart.empty());
}

namespace {

// kind = "dpdk" links and [dpdk] with every key, none at its default (but one port left at the
// defaults); kind after the other keys in one link.
constexpr std::string_view kDpdk = R"([cluster]
listen = ":7400"

[[links]]
peer = "10.0.0.9:7400"

[[links]]
port = "net_memif0"
local = "10.0.0.1:9000"
peer = "10.0.0.2:9000"
peer_mac = "02:00:00:00:00:0B"
window = 4096
rto_min_us = 50
kind = "dpdk"

[[links]]
kind = "dpdk"
port = "net_memif0"
local = "10.0.0.1:9001"
peer = "10.0.0.3:9000"
window = 16
rto_min_us = 1_000_000

[[links]]
kind = "dpdk"
port = "0000:03:00.0"
local = "10.0.0.1:9000"
peer = "10.0.0.2:9000"
peer_mac = ""

[dpdk]
eal = ["-l", "0", "--no-huge", "-m", "512", "--file-prefix=busd",
       "--vdev=net_memif0,role=server,socket=/run/busd/memif.sock", "a \"quoted\" \\ one"]

[[dpdk.ports]]
name = "net_memif0"
cpu = 1023
idle = "busy"
spin_us = 0
sleep_max_us = 1_000_000
mbufs = 1023
rx_desc = 64
tx_desc = 16384
mtu = 9000
mac = "02:00:00:00:00:0a"
impair_loss = 1000
impair_dup = 1
impair_reorder = 2
impair_corrupt = 3
impair_seed = 9223372036854775807

[[dpdk.ports]]
name = "0000:03:00.0"
)";

// A document with [dpdk] eal and a port "p0", after `links` (the [[links]] tables under test).
std::string with_dpdk(std::string_view links) {
  std::string doc(links);
  doc += "\n[dpdk]\neal = [\"-l\", \"0\"]\n\n[[dpdk.ports]]\nname = \"p0\"\n";
  return doc;
}

// A kind = "dpdk" link table on port p0, its keys one a line from line 2, then `more` lines.
std::string dpdk_link(std::string_view local, std::string_view peer, std::string_view more = "") {
  std::string t = "[[links]]\nkind = \"dpdk\"\nport = \"p0\"\nlocal = \"";
  t += local;
  t += "\"\npeer = \"";
  t += peer;
  t += "\"\n";
  t += more;
  return t;
}

}  // namespace

TEST_CASE("[dpdk] and kind = \"dpdk\" links: a full example", "[config][dpdk]") {
  auto c = parse(kDpdk, "dpdk.toml");
  INFO((c ? std::string() : c.error().detail()));
  REQUIRE(c.has_value());
  CHECK(c->cluster.listen == ":7400");
  REQUIRE(c->links.size() == 4);
  CHECK(c->links[0] == tcp_link("10.0.0.9:7400"));
  CHECK(c->links[1] == LinkConfig{.kind = "dpdk",
                                  .peer = "10.0.0.2:9000",
                                  .port = "net_memif0",
                                  .local = "10.0.0.1:9000",
                                  .peer_mac = "02:00:00:00:00:0B",  // as given
                                  .window = 4096,
                                  .rto_min_us = 50});
  CHECK(c->links[2] == LinkConfig{.kind = "dpdk",
                                  .peer = "10.0.0.3:9000",
                                  .port = "net_memif0",
                                  .local = "10.0.0.1:9001",
                                  .peer_mac = "",
                                  .window = 16,
                                  .rto_min_us = 1'000'000});
  CHECK(c->links[3] == LinkConfig{.kind = "dpdk",
                                  .peer = "10.0.0.2:9000",
                                  .port = "0000:03:00.0",
                                  .local = "10.0.0.1:9000",
                                  .peer_mac = "",
                                  .window = 256,
                                  .rto_min_us = 1000});
  CHECK(c->dpdk.eal == std::vector<std::string>{
                           "-l", "0", "--no-huge", "-m", "512", "--file-prefix=busd",
                           "--vdev=net_memif0,role=server,socket=/run/busd/memif.sock",
                           "a \"quoted\" \\ one"});
  REQUIRE(c->dpdk.ports.size() == 2);
  CHECK(c->dpdk.ports[0] == DpdkPort{.name = "net_memif0",
                                     .cpu = 1023,
                                     .idle = "busy",
                                     .spin_us = 0,
                                     .sleep_max_us = 1'000'000,
                                     .mbufs = 1023,
                                     .rx_desc = 64,
                                     .tx_desc = 16384,
                                     .mtu = 9000,
                                     .mac = "02:00:00:00:00:0a",
                                     .impair_loss = 1000,
                                     .impair_dup = 1,
                                     .impair_reorder = 2,
                                     .impair_corrupt = 3,
                                     .impair_seed = uint64_t{INT64_MAX}});
  DpdkPort plain;
  plain.name = "0000:03:00.0";
  CHECK(c->dpdk.ports[1] == plain);
  CHECK(plain.cpu == -1);
  CHECK(plain.idle == "adaptive");
  CHECK(plain.mbufs == 8191);
  CHECK(plain.mtu == 1500);
  CHECK(plain.impair_seed == 1);

  // render() writes it back as a document that parses to the same Config.
  const std::string doc = render(*c);
  INFO(doc);
  auto back = parse(doc, "rendered.toml");
  INFO((back ? std::string() : back.error().detail()));
  REQUIRE(back.has_value());
  CHECK(*back == *c);
  CHECK(doc.find("\n[[links]]\nkind = \"dpdk\"\nport = \"net_memif0\"\nlocal = \"10.0.0.1:9000\"\n"
                 "peer = \"10.0.0.2:9000\"\npeer_mac = \"02:00:00:00:00:0B\"\nwindow = 4096\n"
                 "rto_min_us = 50\n") != std::string::npos);
  CHECK(doc.find("\n[[links]]\nkind = \"tcp\"\npeer = \"10.0.0.9:7400\"\n") != std::string::npos);
  CHECK(doc.find("\n[dpdk]\neal = [\"-l\", \"0\", ") != std::string::npos);
  CHECK(doc.find("\"a \\\"quoted\\\" \\\\ one\"]\n") != std::string::npos);
  CHECK(doc.find("\n[[dpdk.ports]]\nname = \"net_memif0\"\n") != std::string::npos);
  CHECK(doc.find("\nimpair_seed = 9_223_372_036_854_775_807\n") != std::string::npos);
  CHECK(doc.find("\ncpu = -1\n") != std::string::npos);
  CHECK(doc.find("# [dpdk]") == std::string::npos);  // no examples when there is a [dpdk]
  CHECK(doc.find("# [[links]]") == std::string::npos);
  CHECK(doc.find("\n[[links]]") < doc.find("\n[dpdk]\n"));

  // Loaded from a file, the same.
  TempFile f(kDpdk);
  auto loaded = load_file(f.path.string());
  REQUIRE(loaded.has_value());
  CHECK(*loaded == *c);
}

TEST_CASE("[dpdk] and kind = \"dpdk\" links: other accepted forms", "[config][dpdk]") {
  // Inline tables and dotted keys; ports without links and an eal without ports are fine.
  auto c = parse("dpdk = { eal = [\"-l\", \"0\"], ports = [{ name = \"p0\" }, { name = \"p1\" }] }\n"
                 "links = [{ kind = \"dpdk\", port = \"p1\", local = \"1.2.3.4:1\", "
                 "peer = \"1.2.3.5:65535\" }]",
                 "t");
  REQUIRE(c.has_value());
  REQUIRE(c->dpdk.ports.size() == 2);
  CHECK(c->dpdk.ports[1].name == "p1");
  REQUIRE(c->links.size() == 1);
  CHECK(c->links[0].port == "p1");
  CHECK(c->links[0].peer == "1.2.3.5:65535");
  c = parse("dpdk.eal = [\"x\"]", "t");
  REQUIRE(c.has_value());
  CHECK(c->dpdk.eal == std::vector<std::string>{"x"});
  CHECK(c->dpdk.ports.empty());
  c = parse("[dpdk]\neal = []\nports = []", "t");
  REQUIRE(c.has_value());
  CHECK(c->dpdk == Dpdk{});
  c = parse("[[dpdk.ports]]\nname = \"a.B_c:0-9\"\nmac = \"\"\ncpu = 0", "t");
  REQUIRE(c.has_value());
  CHECK(c->dpdk.ports[0].name == "a.B_c:0-9");
  CHECK(c->dpdk.ports[0].cpu == 0);
  c = parse("[[dpdk.ports]]\nname = \"" + std::string(63, 'n') + "\"\nmac = \"AA:bb:CC:dd:EE:ff\"",
            "t");
  REQUIRE(c.has_value());
  CHECK(c->dpdk.ports[0].mac == "AA:bb:CC:dd:EE:ff");  // as given
  // 64 EAL arguments.
  std::string eal = "[dpdk]\neal = [";
  for (int i = 0; i < 64; ++i) eal += "\"a\", ";
  eal += "]";
  c = parse(eal, "t");
  REQUIRE(c.has_value());
  CHECK(c->dpdk.eal.size() == 64);

  // Endpoints: the edges of a dotted quad and of a port; a leading zero in the port is a number.
  for (std::string_view peer : {"0.0.0.0:1", "255.255.255.255:65535", "10.0.0.2:09000"}) {
    c = parse(with_dpdk(dpdk_link("10.0.0.1:9000", peer)), "t");
    INFO(peer);
    REQUIRE(c.has_value());
    CHECK(c->links[0].peer == peer);
  }
  // Links that share a port: each its own local end and peer; on another port the same ends
  // are another link. A tcp link and a dpdk link to one address are two links.
  c = parse(with_dpdk(dpdk_link("10.0.0.1:1", "10.0.0.2:1") + dpdk_link("10.0.0.1:2", "10.0.0.2:2") +
                      dpdk_link("10.0.0.3:1", "10.0.0.2:3") + "[[links]]\npeer = \"10.0.0.2:1\"\n" +
                      "[[links]]\nkind = \"dpdk\"\nport = \"p1\"\nlocal = \"10.0.0.1:1\"\n"
                      "peer = \"10.0.0.2:1\"\n[[dpdk.ports]]\nname = \"p1\"\n"),
            "t");
  INFO((c ? std::string() : c.error().detail()));
  REQUIRE(c.has_value());
  CHECK(c->links.size() == 5);
}

TEST_CASE("[dpdk] and kind = \"dpdk\" links: each error is one exact line", "[config][dpdk]") {
  SECTION("the dpdk keys on a tcp link") {
    CHECK(error_of("[[links]]\npeer = \"a:1\"\nwindow = 64") ==
          "busd.toml:3: links[0].window: only for kind = \"dpdk\" (this link has no kind: "
          "\"tcp\")");
    CHECK(error_of("[[links]]\nkind = \"tcp\"\npeer = \"a:1\"\nport = \"p0\"") ==
          "busd.toml:4: links[0].port: only for kind = \"dpdk\" (this link is kind = \"tcp\")");
    for (std::string_view key : {"port = \"p0\"", "local = \"1.2.3.4:1\"",
                                 "peer_mac = \"02:00:00:00:00:01\"", "window = 64",
                                 "rto_min_us = 100"}) {
      std::string doc = "[[links]]\npeer = \"a:1\"\n";
      doc += key;
      doc += "\nkind = \"tcp\"";
      INFO(key);
      std::string expected = "busd.toml:3: links[0].";
      expected += key.substr(0, key.find(' '));
      expected += ": only for kind = \"dpdk\" (this link is kind = \"tcp\")";
      CHECK(error_of(doc) == expected);
    }
  }
  SECTION("peer and local") {
    for (std::string_view bad : {"host:1", "1.2.3:1", "1.2.3.4.5:1", "1.2.3.256:1", "01.2.3.4:1",
                                 "1..3.4:1", "1.2.3.4", "1.2.3.4:", "1.2.3.4:x", "[::1]:1",
                                 " 1.2.3.4:1", "1.2.3.4:+1", "", "1.2.3.4:1:2"}) {
      INFO(bad);
      CHECK(error_of(with_dpdk(dpdk_link("10.0.0.1:1", bad))) ==
            "busd.toml:5: links[0].peer: must be \"a.b.c.d:port\" (an IPv4 address and a UDP "
            "port), got " + detail_quote_for_test(bad));
      CHECK(error_of(with_dpdk(dpdk_link(bad, "10.0.0.1:1"))) ==
            "busd.toml:4: links[0].local: must be \"a.b.c.d:port\" (an IPv4 address and a UDP "
            "port), got " + detail_quote_for_test(bad));
    }
    CHECK(error_of(with_dpdk(dpdk_link("10.0.0.1:0", "10.0.0.2:1"))) ==
          "busd.toml:4: links[0].local: port must be in [1, 65535], got \"10.0.0.1:0\"");
    CHECK(error_of(with_dpdk(dpdk_link("10.0.0.1:1", "10.0.0.2:65536"))) ==
          "busd.toml:5: links[0].peer: port must be in [1, 65535], got \"10.0.0.2:65536\"");
    CHECK(error_of(with_dpdk("[[links]]\nkind = \"dpdk\"\nport = \"p0\"\nlocal = 1\n"
                             "peer = \"1.2.3.4:1\"")) ==
          "busd.toml:4: links[0].local: must be a string, got 1");
  }
  SECTION("required keys") {
    CHECK(error_of(with_dpdk("[[links]]\nkind = \"dpdk\"\nlocal = \"1.2.3.4:1\"\n"
                             "peer = \"1.2.3.5:1\"")) ==
          "busd.toml:1: links[0]: port is required for kind = \"dpdk\" (the name of a "
          "[[dpdk.ports]] table)");
    CHECK(error_of(with_dpdk("[[links]]\npeer = \"1.2.3.5:1\"\nport = \"p0\"\nkind = \"dpdk\"")) ==
          "busd.toml:1: links[0]: local is required for kind = \"dpdk\" (\"a.b.c.d:port\": this "
          "side's IPv4 address and UDP port)");
    CHECK(error_of(with_dpdk("[[links]]\n\n[[links]]\nkind = \"dpdk\"\nport = \"p0\"\n"
                             "local = \"1.2.3.4:1\"")) ==
          "busd.toml:1: links[0]: peer is required (\"host:port\" or \"[v6]:port\" of the peer "
          "busd's [cluster] listen)");
    CHECK(error_of(with_dpdk("[[links]]\npeer = \"a:1\"\n[[links]]\nkind = \"dpdk\"\n"
                             "port = \"p0\"\nlocal = \"1.2.3.4:1\"")) ==
          "busd.toml:3: links[1]: peer is required for kind = \"dpdk\" (\"a.b.c.d:port\": the "
          "IPv4 address and UDP port of the peer's end of the link)");
    // A bad key is reported as that, not also as a missing one.
    CHECK(error_of(with_dpdk("[[links]]\nkind = \"dpdk\"\nlocal = \"x\"")) ==
          "busd.toml:3: links[0].local: must be \"a.b.c.d:port\" (an IPv4 address and a UDP "
          "port), got \"x\"");
  }
  SECTION("peer_mac, window and rto_min_us") {
    for (std::string_view bad : {"02:00:00:00:00", "02:00:00:00:00:0g", "02-00-00-00-00-01",
                                 "0200.0000.0001", "02:00:00:00:00:001", " 02:00:00:00:00:01",
                                 "2:0:0:0:0:1"}) {
      INFO(bad);
      std::string more = "peer_mac = ";
      more += detail_quote_for_test(bad);
      CHECK(error_of(with_dpdk(dpdk_link("1.2.3.4:1", "1.2.3.5:1", more))) ==
            "busd.toml:6: links[0].peer_mac: must be \"aa:bb:cc:dd:ee:ff\" (six hex bytes) or "
            "\"\" (learn it by ARP), got " + detail_quote_for_test(bad));
    }
    CHECK(error_of(with_dpdk(dpdk_link("1.2.3.4:1", "1.2.3.5:1", "window = 15"))) ==
          "busd.toml:6: links[0].window: must be an integer in [16, 4096], got 15");
    CHECK(error_of(with_dpdk(dpdk_link("1.2.3.4:1", "1.2.3.5:1", "window = 4097"))) ==
          "busd.toml:6: links[0].window: must be an integer in [16, 4096], got 4097");
    CHECK(error_of(with_dpdk(dpdk_link("1.2.3.4:1", "1.2.3.5:1", "window = \"64\""))) ==
          "busd.toml:6: links[0].window: must be an integer in [16, 4096], got \"64\"");
    CHECK(error_of(with_dpdk(dpdk_link("1.2.3.4:1", "1.2.3.5:1", "rto_min_us = 49"))) ==
          "busd.toml:6: links[0].rto_min_us: must be an integer in [50, 1000000], got 49");
    CHECK(error_of(with_dpdk(dpdk_link("1.2.3.4:1", "1.2.3.5:1", "rto_min_us = 1000001"))) ==
          "busd.toml:6: links[0].rto_min_us: must be an integer in [50, 1000000], got 1000001");
    CHECK(error_of(with_dpdk(dpdk_link("1.2.3.4:1", "1.2.3.5:1", "rto_min_us = 1.5"))) ==
          "busd.toml:6: links[0].rto_min_us: must be an integer in [50, 1000000], got 1.5");
  }
  SECTION("one link per (port, local) and per (port, peer)") {
    CHECK(error_of(with_dpdk(dpdk_link("10.0.0.1:9000", "10.0.0.2:9000") +
                             dpdk_link("10.0.0.1:09000", "10.0.0.3:9000"))) ==
          "busd.toml:9: links[1].local: \"10.0.0.1:09000\" is already the local end of links[0] "
          "on port \"p0\" (each link on a port needs its own local address and UDP port)");
    CHECK(error_of(with_dpdk(dpdk_link("10.0.0.1:9000", "10.0.0.2:9000") +
                             dpdk_link("10.0.0.1:9001", "10.0.0.2:9000"))) ==
          "busd.toml:10: links[1].peer: \"10.0.0.2:9000\" is already the peer of links[0] on "
          "port \"p0\" (one link per peer)");
    // tcp peers keep their rule, apart from the dpdk ones.
    CHECK(error_of(with_dpdk("[[links]]\npeer = \"10.0.0.2:9000\"\n" +
                             dpdk_link("10.0.0.1:9000", "10.0.0.2:9000") +
                             "[[links]]\npeer = \"10.0.0.2:9000\"\n")) ==
          "busd.toml:9: links[2].peer: \"10.0.0.2:9000\" is already the peer of links[0] "
          "(one link per peer)");
  }
  SECTION("port names a [[dpdk.ports]] table, after the whole file") {
    CHECK(error_of("[[links]]\nkind = \"dpdk\"\nport = \"p9\"\nlocal = \"1.2.3.4:1\"\n"
                   "peer = \"1.2.3.5:1\"\n[dpdk]\neal = [\"x\"]\n[[dpdk.ports]]\nname = \"p0\"\n"
                   "[[dpdk.ports]]\nname = \"net_memif1\"") ==
          "busd.toml:3: links[0].port: no [[dpdk.ports]] table has name = \"p9\" (the ports: "
          "\"p0\", \"net_memif1\")");
    CHECK(error_of("[dpdk]\neal = [\"x\"]\n[[links]]\nkind = \"dpdk\"\nport = \"p0\"\n"
                   "local = \"1.2.3.4:1\"\npeer = \"1.2.3.5:1\"") ==
          "busd.toml:5: links[0].port: no [[dpdk.ports]] table has name = \"p0\" (there are no "
          "[[dpdk.ports]] tables)");
    // Names are compared exactly.
    CHECK(error_of("[[links]]\nkind = \"dpdk\"\nport = \"P0\"\nlocal = \"1.2.3.4:1\"\n"
                   "peer = \"1.2.3.5:1\"\n[dpdk]\neal = [\"x\"]\n[[dpdk.ports]]\nname = \"p0\"") ==
          "busd.toml:3: links[0].port: no [[dpdk.ports]] table has name = \"P0\" (the ports: "
          "\"p0\")");
    std::string many = dpdk_link("1.2.3.4:1", "1.2.3.5:1");
    many.replace(many.find("p0"), 2, "zz");
    many += "[dpdk]\neal = [\"x\"]\n";
    for (int i = 0; i < 10; ++i) many += "[[dpdk.ports]]\nname = \"p" + std::to_string(i) + "\"\n";
    CHECK(error_of(many) ==
          "busd.toml:3: links[0].port: no [[dpdk.ports]] table has name = \"zz\" (the ports: "
          "\"p0\", \"p1\", \"p2\", \"p3\", \"p4\", \"p5\", \"p6\", \"p7\" and 2 more)");
  }
  SECTION("a dpdk link needs [dpdk] eal") {
    CHECK(error_of("[[links]]\npeer = \"a:1\"\n" + dpdk_link("1.2.3.4:1", "1.2.3.5:1") +
                   "[[dpdk.ports]]\nname = \"p0\"") ==
          "busd.toml:4: links[1].kind: \"dpdk\" needs [dpdk] eal = [...] (the EAL arguments)");
    CHECK(error_of(dpdk_link("1.2.3.4:1", "1.2.3.5:1") +
                   "[dpdk]\neal = []\n[[dpdk.ports]]\nname = \"p0\"") ==
          "busd.toml:2: links[0].kind: \"dpdk\" needs [dpdk] eal = [...] (the EAL arguments)");
  }
  SECTION("kind") {
    // kind = "rdma" is accepted too (test_config_rdma.cpp).
    CHECK(error_of("[[links]]\npeer = \"a:1\"\n\n[[links]]\nkind = \"rdma\"\npeer = \"b:1\"").empty());
    // A bad kind: the keys that depend on it are not checked (it may come last).
    CHECK(error_of("[[links]]\npeer = \"x\"\nport = \"p0\"\nkind = \"dpdkk\"") ==
          "busd.toml:4: links[0].kind: must be one of tcp, dpdk, rdma, got \"dpdkk\"");
  }
  SECTION("[dpdk]") {
    CHECK(error_of("dpdk = 5") == "busd.toml:1: dpdk: must be a table ([dpdk]), got 5");
    CHECK(error_of("[dpdk]\neal = \"-l 0\"") ==
          "busd.toml:2: dpdk.eal: must be an array of strings (the EAL arguments), got \"-l 0\"");
    CHECK(error_of("[dpdk]\neal = [\"-l\", \"\"]") ==
          "busd.toml:2: dpdk.eal[1]: must be a non-empty argument");
    CHECK(error_of("[dpdk]\neal = [\"-l\",\n  3]") ==
          "busd.toml:3: dpdk.eal[1]: must be a string, got 3");
    CHECK(error_of("[dpdk]\neal = [\"a\\tb\"]") ==
          "busd.toml:2: dpdk.eal[0]: must not contain control characters, got \"a\\tb\"");
    std::string eal = "[dpdk]\neal = [";
    for (int i = 0; i < 65; ++i) eal += "\"a\", ";
    eal += "]";
    CHECK(error_of(eal) == "busd.toml:2: dpdk.eal: must have at most 64 arguments, got 65");
    CHECK(error_of("[dpdk]\nports = 5") ==
          "busd.toml:2: dpdk.ports: must be an array of tables ([[dpdk.ports]]), got 5");
    CHECK(error_of("[dpdk.ports]\nname = \"p0\"") ==
          "busd.toml:1: dpdk.ports: must be an array of tables ([[dpdk.ports]]), got a table");
  }
  SECTION("[[dpdk.ports]]") {
    CHECK(error_of("[[dpdk.ports]]\ncpu = 1") ==
          "busd.toml:1: dpdk.ports[0]: name is required (the ethdev name: a --vdev name such as "
          "\"net_memif0\" or a PCI address)");
    for (const std::string& bad : {std::string(), std::string("a b"), std::string("a/b"),
                                   std::string("é"), std::string(64, 'n')}) {
      INFO(bad);
      std::string expected =
          "busd.toml:2: dpdk.ports[0].name: must be 1 to 63 characters of A-Z a-z 0-9 . _ : - "
          "(an ethdev name), got ";
      expected += bad.size() > 40 ? detail_quote_for_test(bad.substr(0, 40)) + "..."
                                  : detail_quote_for_test(bad);
      CHECK(error_of("[[dpdk.ports]]\nname = " + detail_quote_for_test(bad)) == expected);
    }
    CHECK(error_of("[[dpdk.ports]]\nname = \"p\"\n[[dpdk.ports]]\nname = \"q\"\n"
                   "[[dpdk.ports]]\nname = \"p\"") ==
          "busd.toml:6: dpdk.ports[2].name: \"p\" is already the name of dpdk.ports[0]");
    CHECK(error_of("[[dpdk.ports]]\nname = \"p\"\nidle = \"spin\"") ==
          "busd.toml:3: dpdk.ports[0].idle: must be one of busy, adaptive, inline, got \"spin\"");
    CHECK(error_of("[[dpdk.ports]]\nname = \"p\"\nmac = \"02:00:00:00:00:0g\"") ==
          "busd.toml:3: dpdk.ports[0].mac: must be \"aa:bb:cc:dd:ee:ff\" (six hex bytes) or \"\" "
          "(the port's own), got \"02:00:00:00:00:0g\"");
    struct Range {
      std::string_view key;
      std::string_view range;
      std::string_view below, above;  // "" = none (the type's limit)
    };
    for (const Range& r : {Range{"cpu", "[-1, 1023]", "-2", "1024"},
                           Range{"spin_us", "[0, 1000000]", "-1", "1000001"},
                           Range{"sleep_max_us", "[1, 1000000]", "0", "1000001"},
                           Range{"mbufs", "[1023, 1048575]", "1022", "1048576"},
                           Range{"rx_desc", "[64, 16384]", "63", "16385"},
                           Range{"tx_desc", "[64, 16384]", "63", "16385"},
                           Range{"mtu", "[576, 9000]", "575", "9001"},
                           Range{"impair_loss", "[0, 1000]", "-1", "1001"},
                           Range{"impair_dup", "[0, 1000]", "-1", "1001"},
                           Range{"impair_reorder", "[0, 1000]", "-1", "1001"},
                           Range{"impair_corrupt", "[0, 1000]", "-1", "1001"},
                           Range{"impair_seed", "[0, 9223372036854775807]", "-1", ""}}) {
      for (const std::string_view v : {r.below, r.above, std::string_view("\"5\"")}) {
        if (v.empty()) continue;
        std::string doc = "[[dpdk.ports]]\nname = \"p\"\n\n";
        doc += r.key;
        doc += " = ";
        doc += v;
        std::string expected = "busd.toml:4: dpdk.ports[0].";
        expected += r.key;
        expected += ": must be an integer in ";
        expected += r.range;
        expected += ", got ";
        expected += v;
        INFO(doc);
        CHECK(error_of(doc) == expected);
      }
    }
  }
  SECTION("unknown keys, with suggestions and where they belong") {
    CHECK(error_of("[dpdk]\nel = []") == "busd.toml:2: unknown key 'dpdk.el' (did you mean 'eal'?)");
    CHECK(error_of("[dpdk]\nport = []") ==
          "busd.toml:2: unknown key 'dpdk.port' (did you mean 'ports'?)");
    CHECK(error_of("[dpdk]\nname = \"p0\"") ==
          "busd.toml:2: unknown key 'dpdk.name' (it belongs in a [[dpdk.ports]] table)");
    CHECK(error_of("[dpdk]\nwindow = 64") ==
          "busd.toml:2: unknown key 'dpdk.window' (it belongs in a [[links]] table with kind = "
          "\"dpdk\")");
    CHECK(error_of("[[dpdk.port]]\nname = \"p0\"") ==
          "busd.toml:1: unknown table 'dpdk.port' (did you mean 'ports'?)");
    CHECK(error_of("[[dpdk.ports]]\nname = \"p\"\nimpare_loss = 1") ==
          "busd.toml:3: unknown key 'dpdk.ports[0].impare_loss' (did you mean 'impair_loss'?)");
    CHECK(error_of("[[dpdk.ports]]\nname = \"p\"\neal = []") ==
          "busd.toml:3: unknown key 'dpdk.ports[0].eal' (it belongs in [dpdk])");
    CHECK(error_of("[[dpdk.ports]]\nname = \"p\"\nlisten = \":1\"") ==
          "busd.toml:3: unknown key 'dpdk.ports[0].listen' (it belongs in [cluster])");
    CHECK(error_of("eal = []") == "busd.toml:1: unknown key 'eal' (it belongs in [dpdk])");
    CHECK(error_of("[[links]]\npeer = \"a:1\"\nmtu = 1500") ==
          "busd.toml:3: unknown key 'links[0].mtu' (it belongs in a [[dpdk.ports]] table)");
    CHECK(error_of("[[links]]\npeer = \"a:1\"\nports = 1") ==
          "busd.toml:3: unknown key 'links[0].ports' (did you mean 'port'?)");
    CHECK(error_of("[[links]]\npeer = \"a:1\"\nrto_min_ms = 1") ==
          "busd.toml:3: unknown key 'links[0].rto_min_ms' (did you mean 'rto_min_us'?)");
    CHECK(error_of("[busd]\ndpdk = 1") ==
          "busd.toml:2: unknown key 'busd.dpdk' (it belongs at the top level, before any "
          "[table])");
    CHECK(error_of("[dpdks]\neal = []") ==
          "busd.toml:1: unknown table 'dpdks' (did you mean 'dpdk'?)");
  }
}

TEST_CASE("render() round trips [dpdk] and dpdk links built by hand", "[config][dpdk]") {
  Config c = defaults();
  c.dpdk.eal = {"--vdev=net_memif0,socket-abstract=no", "-l", "3"};
  c.dpdk.ports = {DpdkPort{.name = "net_memif0",
                           .cpu = -1,
                           .idle = "adaptive",
                           .spin_us = 1'000'000,
                           .sleep_max_us = 1,
                           .mbufs = 1'048'575,
                           .rx_desc = 16384,
                           .tx_desc = 64,
                           .mtu = 576,
                           .mac = "AA:BB:CC:DD:EE:FF",
                           .impair_loss = 0,
                           .impair_dup = 1000,
                           .impair_reorder = 0,
                           .impair_corrupt = 999,
                           .impair_seed = 0}};
  c.links = {LinkConfig{.kind = "dpdk",
                        .peer = "192.168.0.2:1",
                        .port = "net_memif0",
                        .local = "192.168.0.1:65535",
                        .peer_mac = "",
                        .window = 16,
                        .rto_min_us = 50},
             tcp_link("h:1")};
  const std::string doc = render(c);
  INFO(doc);
  auto back = parse(doc, "rendered.toml");
  INFO((back ? std::string() : back.error().detail()));
  REQUIRE(back.has_value());
  CHECK(*back == c);

  // Ports and no eal (no dpdk link): [dpdk] with eal = [].
  c.links.pop_back();
  c.links.clear();
  c.dpdk.eal.clear();
  const std::string doc2 = render(c);
  CHECK(doc2.find("\n[dpdk]\neal = []\n") != std::string::npos);
  auto back2 = parse(doc2, "rendered.toml");
  REQUIRE(back2.has_value());
  CHECK(*back2 == c);
}

TEST_CASE("the default document: no [dpdk], a commented example of it", "[config][dpdk]") {
  const Config d = defaults();
  CHECK(d.dpdk.eal.empty());
  CHECK(d.dpdk.ports.empty());
  CHECK(parse(default_config_text(), "<default>").value() == d);
  const std::string_view text = default_config_text();
  CHECK(text.find("\n[dpdk]") == std::string_view::npos);
  CHECK(text.find("\n[[dpdk.ports]]") == std::string_view::npos);
  const size_t link = text.find("\n# [[links]]\n# kind = \"dpdk\"\n# port = \"net_memif0\"");
  REQUIRE(link != std::string_view::npos);
  CHECK(text.find("\n# local = \"10.0.0.1:9000\"", link) != std::string_view::npos);
  CHECK(text.find("\n# window = 256 ", link) != std::string_view::npos);
  CHECK(text.find("\n# rto_min_us = 1000 ", link) != std::string_view::npos);
  const size_t dpdk = text.find("\n# [dpdk]\n# eal = [\"-l\", \"0\"");
  REQUIRE(dpdk != std::string_view::npos);
  CHECK(dpdk > link);
  const size_t port = text.find("\n# [[dpdk.ports]]\n# name = \"net_memif0\" ", dpdk);
  REQUIRE(port != std::string_view::npos);
  for (std::string_view key : {"cpu = -1 ", "idle = \"adaptive\" ", "spin_us = 20 ",
                               "sleep_max_us = 100 ", "mbufs = 8191 ", "rx_desc = 1024 ",
                               "tx_desc = 1024 ", "mtu = 1500 ", "mac = \"\" ", "impair_loss = 0 ",
                               "impair_dup = 0 ", "impair_reorder = 0 ", "impair_corrupt = 0 ",
                               "impair_seed = 1 "}) {
    std::string line = "\n# ";
    line += key;
    INFO(key);
    CHECK(text.find(line, port) != std::string_view::npos);
  }
  // The commented example, uncommented, is a valid document (with its [dpdk] and a port).
  std::string uncommented;
  for (size_t at = link + 1; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.starts_with("# [[") || line.starts_with("# [dpdk]") ||
        (line.starts_with("# ") && line.find(" = ") != std::string_view::npos &&
         line.find(" = ") < line.find(' ', 2) + 1)) {
      uncommented += line.substr(2);
      uncommented += '\n';
    }
  }
  INFO(uncommented);
  auto example = parse(uncommented, "example.toml");
  INFO((example ? std::string() : example.error().detail()));
  REQUIRE(example.has_value());
  REQUIRE(example->links.size() == 1);
  CHECK(example->links[0].kind == "dpdk");
  REQUIRE(example->dpdk.ports.size() == 1);
  CHECK(example->dpdk.ports[0].cpu == -1);
}

TEST_CASE("reloadable_diff: [dpdk] needs a restart", "[config][dpdk]") {
  const Config a = parse(kDpdk, "busd.toml").value();
  std::vector<std::string> restart;
  CHECK(reloadable_diff(a, a, &restart).empty());
  CHECK(restart.empty());
  for (const auto& change : std::initializer_list<void (*)(Dpdk&)>{
           [](Dpdk& d) { d.eal.pop_back(); },
           [](Dpdk& d) { d.ports[0].impair_loss = 5; },
           [](Dpdk& d) { d.ports[1].mac.assign("02:00:00:00:00:01"); },
           [](Dpdk& d) { d.ports.pop_back(); }}) {
    Config b = a;
    change(b.dpdk);
    restart.clear();
    CHECK(reloadable_diff(a, b, &restart).empty());
    CHECK(restart == std::vector<std::string>{"dpdk"});
  }
  // A dpdk link's keys: "links"; both: in document order.
  Config b = a;
  b.links[1].window = 17;
  b.dpdk.eal.clear();
  b.log_level.assign("warn");
  restart.clear();
  CHECK(reloadable_diff(a, b, &restart) == std::vector<std::string>{"busd.log_level"});
  CHECK(restart == std::vector<std::string>{"links", "dpdk"});
  CHECK(reloadable_diff(a, b, nullptr) == std::vector<std::string>{"busd.log_level"});
}
