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

[[acl]]
uid = 1000
gid = 100
name = "worker-?"
publish = ["svc.work.>"]
subscribe = ["svc.plan.*", "$bus.agents.>"]

[[acl]]
publish = ["metrics.>"]
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
        "max_pending_requests_per_agent", "ring_capacity"}) {
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
