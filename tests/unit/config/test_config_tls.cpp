// [tls], [[tokens]], [[acl]] identity and the tcp-only [[links]] keys (tls, server_name,
// token, token_file): parsed, refused with a clear error, and round-tripped by render().
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

#include "config/config.hpp"

using namespace bus::config;

namespace {

std::string error_of(std::string_view doc) {
  auto c = parse(doc, "busd.toml");
  return c ? std::string("(parsed)") : c.error().detail();
}

constexpr std::string_view kTls = R"([cluster]
listen = "7400"
[tls]
cert = "/etc/busd/a.pem"
key = "/etc/busd/a.key"
ca = "/etc/busd/ca.pem"
verify_peer = false
listen_links = true
listen_agents = true

[[acl]]
identity = "planner.*"
publish = ["svc.>"]

[[tokens]]
identity = "worker.remote"
token = "0123456789abcdef-secret"

[[tokens]]
identity = "other"
token_file = "/etc/busd/other.token"

[[links]]
peer = "10.0.0.2:7400"
tls = true
server_name = "busd-b"
token = "abcdefghijklmnop-link"

[[links]]
peer = "10.0.0.3:7400"
token_file = "/etc/busd/c.token"
)";

}  // namespace

TEST_CASE("[tls], [[tokens]], acl identity and link security parse and round trip", "[config][tls]") {
  auto c = parse(kTls, "busd.toml");
  if (!c) FAIL(c.error().detail());
  CHECK(c->tls.cert == "/etc/busd/a.pem");
  CHECK(c->tls.key == "/etc/busd/a.key");
  CHECK(c->tls.ca == "/etc/busd/ca.pem");
  CHECK_FALSE(c->tls.verify_peer);
  CHECK(c->tls.listen_links);
  CHECK(c->tls.listen_agents);
  REQUIRE(c->acl.size() == 1);
  CHECK(c->acl[0].identity == std::optional<std::string>("planner.*"));
  REQUIRE(c->tokens.size() == 2);
  CHECK(c->tokens[0].identity == "worker.remote");
  CHECK(c->tokens[0].token == "0123456789abcdef-secret");
  CHECK(c->tokens[1].token_file == "/etc/busd/other.token");
  REQUIRE(c->links.size() == 2);
  CHECK(c->links[0].tls);
  CHECK(c->links[0].server_name == "busd-b");
  CHECK(c->links[0].token == "abcdefghijklmnop-link");
  CHECK_FALSE(c->links[1].tls);
  CHECK(c->links[1].token_file == "/etc/busd/c.token");

  auto back = parse(render(*c), "rendered.toml");
  if (!back) FAIL(back.error().detail() << "\n" << render(*c));
  CHECK(*back == *c);
  // The embedded default documents every [tls] key and the [[tokens]] table.
  const std::string_view def = default_config_text();
  for (std::string_view k : {"[tls]", "listen_links = false", "listen_agents = false", "verify_peer = true",
                             "[[tokens]]", "identity = ", "token_file", "server_name"}) {
    INFO(k);
    CHECK(def.find(k) != std::string_view::npos);
  }
  auto d = parse(def, "<default>");
  REQUIRE(d);
  CHECK(*d == defaults());

  // A change of tokens needs a restart; an acl identity change is live.
  Config other = *c;
  other.tokens[0].token = "a-different-secret-0000";
  other.acl[0].identity = "worker.*";
  std::vector<std::string> later;
  const auto live = reloadable_diff(*c, other, &later);
  CHECK(std::find(live.begin(), live.end(), "acl") != live.end());
  CHECK(std::find(later.begin(), later.end(), "tokens") != later.end());
}

TEST_CASE("bad [tls], [[tokens]] and link security keys are refused with the key named", "[config][tls]") {
  CHECK(error_of("[tls]\nlisten_agents = true\n") == "busd.toml:2: tls.listen_agents: a TLS listener needs tls.cert and tls.key");
  CHECK(error_of("[tls]\ncert = \"/a.pem\"\n") == "busd.toml:2: tls.cert: tls.cert and tls.key go together");
  CHECK(error_of("[tls]\ncert = \"a.pem\"\n").find("tls.cert: must be an absolute path") != std::string::npos);
  CHECK(error_of("[tls]\nverify_peer = 1\n").find("tls.verify_peer: must be true or false") != std::string::npos);
  CHECK(error_of("[tls]\nlisten = true\n").find("unknown key 'tls.listen'") != std::string::npos);
  CHECK(error_of("[[tokens]]\nidentity = \"x\"\ntoken = \"short\"\n").find("tokens[0].token: must be at least 16") !=
        std::string::npos);
  CHECK(error_of("[[tokens]]\ntoken = \"0123456789abcdef\"\n") ==
        "busd.toml:1: tokens[0]: identity is required (what [[acl]] identity globs see)");
  CHECK(error_of("[[tokens]]\nidentity = \"x\"\n") == "busd.toml:1: tokens[0]: give exactly one of token and token_file");
  CHECK(error_of("[[tokens]]\nidentity = \"x\"\ntoken = \"0123456789abcdef\"\ntoken_file = \"/t\"\n") ==
        "busd.toml:1: tokens[0]: give exactly one of token and token_file");
  CHECK(error_of("[[tokens]]\nidentity = \"a b\"\ntoken = \"0123456789abcdef\"\n").find("tokens[0].identity") !=
        std::string::npos);
  CHECK(error_of("[[tokens]]\nidentity = \"x\"\nsecret = \"0123456789abcdef\"\n").find("unknown key 'tokens[0].secret'") !=
        std::string::npos);
  CHECK(error_of("[[acl]]\nidentity = \"\"\npublish = [\"a\"]\n").find("acl[0].identity: must be a non-empty") !=
        std::string::npos);
  CHECK(error_of("[[links]]\npeer = \"h:1\"\ntls = \"yes\"\n").find("links[0].tls: must be true or false") != std::string::npos);
  CHECK(error_of("[[links]]\npeer = \"h:1\"\ntoken = \"x\"\n").find("links[0].token: must be at least 16") !=
        std::string::npos);
  CHECK(error_of("[[links]]\npeer = \"h:1\"\ntoken_file = \"rel\"\n").find("links[0].token_file: must be an absolute path") !=
        std::string::npos);
  CHECK(error_of("[[links]]\nkind = \"dpdk\"\ntls = true\npeer = \"10.0.0.2:9000\"\nlocal = \"10.0.0.1:9000\"\nport = \"p\"\n")
            .find("links[0].tls: only for kind = \"tcp\"") != std::string::npos);
}
