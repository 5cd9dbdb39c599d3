// TLS and tokens for remote agents (bus::Client with "tls://host:port" or a token) against
// busd's [busd] tcp_listen with [tls] listen_agents and [[tokens]], on loopback, with a
// throw-away PKI (tls_certs.hpp). What works: pub/sub and request/reply over TLS, the client
// certificate's CN as the identity [[acl]] identity globs see. What is refused, each with the
// error the agent gets and busd's log line: a certificate of another CA, an expired certificate,
// a busd certificate the agent's CA does not know, a plaintext client on the TLS port, a wrong
// token, no token where one is required, a TLS handshake that does not finish in time.
// ~6 s in all.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "busd_fixture.hpp"
#include "loopback.hpp"
#include "tls_certs.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* kToken = "correct-horse-battery-staple-42";

std::string listen(uint16_t port) {
  return "[busd]\ntcp_listen = \"" + std::to_string(port) + "\"\n[cluster]\nhandshake_ms = 400\n";
}

// Remote agents with identity planner.* may use svc.> and feed.>; nobody else (remote) may do anything.
constexpr const char* kAcl =
    "[[acl]]\nidentity = \"planner.*\"\npublish = [\"svc.>\", \"feed.>\", \"_INBOX.>\"]\nsubscribe = [\"svc.>\", \"feed.>\"]\n";

ClientOptions tls_options(const Certs& pki, uint16_t port, const std::string& name, const std::string& who,
                          const std::string& ca = "ca.pem") {
  ClientOptions o;
  o.name = name;
  o.address = "tls://127.0.0.1:" + std::to_string(port);
  o.tls_ca = pki.path(ca);
  if (!who.empty()) {
    o.tls_cert = pki.path(who + ".pem");
    o.tls_key = pki.path(who + ".key");
  }
  o.connect_timeout = 3000ms;
  o.reconnect = false;
  return o;
}

std::string connect_error(const ClientOptions& o) {
  auto c = Client::connect(o);
  if (c) return "(connected)";
  return c.error().message();
}

}  // namespace

TEST_CASE("a remote agent over TLS: pub/sub and request/reply; its certificate is its identity", "[tls]") {
  Certs pki;
  REQUIRE(pki.ok());
  const uint16_t port = free_port();
  Busd d(listen(port) + pki.tls_table("server", true, false) + kAcl, "tls-ok");
  REQUIRE(d.started());
  auto local = d.client("local");
  REQUIRE(local);
  auto far = Client::connect(tls_options(pki, port, "remote-1", "agent"));
  if (!far) FAIL("tls connect: " << far.error().message());
  auto& r = **far;

  // Remote requester, local responder; then the other way.
  REQUIRE(local->subscribe("svc.local", [&](const Message& m) { (void)local->reply(m, std::string("L:").append(m.text())); }));
  REQUIRE(r.subscribe("svc.remote", [&](const Message& m) { (void)r.reply(m, std::string("R:").append(m.text())); }));
  std::atomic<bool> stop{false};
  std::thread serve([&] {
    while (!stop) (void)local->poll(1ms);
  });
  for (int i = 0; i < 200; ++i) {
    auto rep = r.request("svc.local", std::to_string(i), 2s);
    REQUIRE(rep);
    REQUIRE(rep->text() == "L:" + std::to_string(i));
  }
  stop = true;
  serve.join();
  std::atomic<bool> stop2{false};
  std::thread serve2([&] {
    while (!stop2) (void)r.poll(1ms);
  });
  for (int i = 0; i < 50; ++i) {
    auto rep = local->request("svc.remote", std::to_string(i), 2s);
    REQUIRE(rep);
    REQUIRE(rep->text() == "R:" + std::to_string(i));
  }
  stop2 = true;
  serve2.join();

  // Pub/sub both ways, in order, more than one TLS record's worth.
  std::vector<int> got;
  REQUIRE(r.subscribe("feed.down", [&](const Message& m) { got.push_back(std::stoi(std::string(m.text()))); }));
  for (int i = 1; i <= 3000; ++i) {
    while (!local->publish("feed.down", std::to_string(i))) (void)r.poll(0ms);
  }
  REQUIRE(pump_until(r, [&] { return got.size() >= 3000; }, 10000));
  for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == static_cast<int>(i) + 1);
  std::vector<int> up;
  REQUIRE(local->subscribe("feed.up", [&](const Message& m) { up.push_back(std::stoi(std::string(m.text()))); }));
  for (int i = 0; i < 3000; ++i) {
    while (!r.publish("feed.up", std::to_string(i))) (void)r.poll(0ms);
  }
  REQUIRE(pump_until(*local, [&] { return up.size() == 3000; }, 10000));
  for (size_t i = 0; i < up.size(); ++i) REQUIRE(up[i] == static_cast<int>(i));

  // The identity feeds the ACL: planner.* may not go beyond svc.> and feed.>.
  auto denied = r.subscribe("secret.x", [](const Message&) {});
  REQUIRE_FALSE(denied);
  CHECK(denied.error().code() == Errc::PermissionDenied);
  // ... and another identity gets none of it (its uid is nobody's: no rule grants it).
  auto other = Client::connect(tls_options(pki, port, "remote-2", "other"));
  if (!other) FAIL("tls connect (worker.remote): " << other.error().message());
  CHECK_FALSE((*other)->subscribe("feed.down", [](const Message&) {}));
  const std::string log = d.log();
  CHECK(log.find("tls_agent_connected") != std::string::npos);
  CHECK(log.find("planner.remote") != std::string::npos);
  CHECK(log.find("worker.remote") != std::string::npos);
}

TEST_CASE("TLS refusals: wrong CA, expired certificate, unknown busd, plaintext client, slow handshake", "[tls]") {
  Certs pki;
  REQUIRE(pki.ok());
  const uint16_t port = free_port();
  Busd d(listen(port) + pki.tls_table("server", true, false) + kAcl, "tls-no");
  REQUIRE(d.started());

  SECTION("a client certificate of another CA") {
    const std::string e = connect_error(tls_options(pki, port, "rogue", "rogue"));
    INFO(e);
    CHECK(e.find("TLS") != std::string::npos);
    CHECK(e.find("unknown ca") != std::string::npos);
    REQUIRE(eventually([&] { return d.log().find("unable to get local issuer certificate") != std::string::npos; }, 3000));
    CHECK(d.log().find("tls_agent_refused") != std::string::npos);
  }
  SECTION("an expired client certificate") {
    const std::string e = connect_error(tls_options(pki, port, "old", "expired"));
    INFO(e);
    CHECK(e.find("certificate expired") != std::string::npos);
    REQUIRE(eventually([&] { return d.log().find("certificate has expired") != std::string::npos; }, 3000));
  }
  SECTION("no client certificate where busd asks for one") {
    const std::string e = connect_error(tls_options(pki, port, "anon", ""));
    INFO(e);
    CHECK(e.find("certificate required") != std::string::npos);
    REQUIRE(eventually([&] { return d.log().find("peer did not return a certificate") != std::string::npos; }, 3000));
  }
  SECTION("the agent does not trust busd's certificate (its CA is another)") {
    const std::string e = connect_error(tls_options(pki, port, "doubt", "agent", "ca2.pem"));
    INFO(e);
    CHECK(e.find("certificate verify failed") != std::string::npos);
  }
  SECTION("busd's certificate does not name the host the agent asked for") {
    auto o = tls_options(pki, port, "named", "agent");
    o.tls_server_name = "busd.example.org";
    const std::string e = connect_error(o);
    INFO(e);
    CHECK(e.find("hostname mismatch") != std::string::npos);
  }
  SECTION("a plaintext client on the TLS port") {
    ClientOptions o;
    o.name = "plain";
    o.address = "tcp://127.0.0.1:" + std::to_string(port);
    o.reconnect = false;
    const std::string e = connect_error(o);
    INFO(e);
    CHECK(e.find("speaks TLS only") != std::string::npos);
    REQUIRE(eventually([&] { return d.log().find("not TLS") != std::string::npos; }, 3000));
  }
  SECTION("a connection that never finishes its handshake is dropped after cluster.handshake_ms") {
    const int fd = connect_loopback(port);
    REQUIRE(fd >= 0);
    REQUIRE(eventually([&] { return d.log().find("TLS handshake not finished within 400 ms") != std::string::npos; }, 3000));
    char b;
    CHECK(::recv(fd, &b, 1, 0) == 0);  // busd closed it
    ::close(fd);
  }
  // Whatever was refused, busd serves the next agent.
  auto ok = Client::connect(tls_options(pki, port, "after", "agent"));
  if (!ok) FAIL("tls connect after a refusal: " << ok.error().message());
  CHECK((*ok)->subscribe("feed.x", [](const Message&) {}));
}

TEST_CASE("tokens: the right one gives an identity, a wrong one or none is refused", "[tls]") {
  Certs pki;
  REQUIRE(pki.ok());
  const uint16_t port = free_port();
  const std::string tokens = std::string("[[tokens]]\nidentity = \"planner.tok\"\ntoken = \"") + kToken + "\"\n";
  SECTION("over plain TCP") {
    Busd d(listen(port) + tokens + kAcl, "tok");
    REQUIRE(d.started());
    ClientOptions o;
    o.name = "tok";
    o.address = "tcp://127.0.0.1:" + std::to_string(port);
    o.reconnect = false;
    o.token = "correct-horse-battery-staple-43";
    std::string e = connect_error(o);
    INFO(e);
    CHECK(e.find("token refused") != std::string::npos);
    REQUIRE(eventually([&] { return d.log().find("tcp_agent_refused") != std::string::npos; }, 3000));
    o.token.clear();
    e = connect_error(o);
    CHECK(e.find("requires a token") != std::string::npos);
    o.token = kToken;
    auto c = Client::connect(o);
    if (!c) FAIL("with the right token: " << c.error().message());
    CHECK((*c)->subscribe("feed.x", [](const Message&) {}));   // planner.tok: granted
    CHECK_FALSE((*c)->subscribe("secret", [](const Message&) {}));
    CHECK(d.log().find("planner.tok") != std::string::npos);
  }
  SECTION("from a token_file, and for $BUS_TOKEN") {
    std::ofstream(pki.path("agent.token")) << kToken << "\n";  // a trailing newline is cut
    Busd d(listen(port) + "[[tokens]]\nidentity = \"planner.file\"\ntoken_file = \"" + pki.path("agent.token") + "\"\n" +
               kAcl,
           "tokf");
    REQUIRE(d.started());
    ClientOptions o;
    o.name = "tokf";
    o.address = "tcp://127.0.0.1:" + std::to_string(port);
    o.reconnect = false;
    ::setenv("BUS_TOKEN", kToken, 1);
    auto c = Client::connect(o);
    ::unsetenv("BUS_TOKEN");
    if (!c) FAIL("with $BUS_TOKEN: " << c.error().message());
    CHECK((*c)->subscribe("feed.x", [](const Message&) {}));
    CHECK(d.log().find("planner.file") != std::string::npos);
  }
  SECTION("over TLS without client certificates") {
    Busd d(listen(port) + pki.tls_table("server", true, false, false) + tokens + kAcl, "tok-tls");
    REQUIRE(d.started());
    auto o = tls_options(pki, port, "tok-tls", "");
    o.token = "not-the-token-at-all-0000";
    const std::string e = connect_error(o);
    INFO(e);
    CHECK(e.find("token refused") != std::string::npos);
    o.token = kToken;
    auto c = Client::connect(o);
    if (!c) FAIL("with the right token over TLS: " << c.error().message());
    REQUIRE((*c)->subscribe("feed.x", [](const Message&) {}));
  }
}
