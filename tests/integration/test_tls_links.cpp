// TLS, tokens and ACLs on busd-to-busd links: two busd on loopback, alpha listening
// ([tls] listen_links) and beta dialing ([[links]] tls = true), with a throw-away PKI
// (tls_certs.hpp; alpha's certificate says CN=busd-a, beta's CN=busd-b).
//   - a TLS link carries pub/sub and request/reply; each side logs the other's identity;
//   - refused, with alpha's log line: beta's certificate from another CA, a plaintext beta on
//     the TLS port, a wrong token, no token where one is required (plaintext link); the right
//     token gives the link its identity;
//   - ACL across the link: alpha's [[acl]] rule for identity "busd-b" lets beta subscribe to
//     "prices.*" and publish to "orders.>": allowed subjects cross; an interest outside the grant
//     is refused; one broader than it ("prices.>", "*.eur") is narrowed to what the grant
//     allows ("*" is one token: "prices.usd.eu" stays home); beta's messages outside "orders.>"
//     are dropped and counted, and a request among them is answered with an error.
// ~8 s in all.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "bus/counters.hpp"
#include "busd_fixture.hpp"
#include "counters_page.hpp"
#include "loopback.hpp"
#include "tls_certs.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;
using counters::Global;

namespace {

std::string cluster(const std::string& node, uint16_t listen) {
  std::string c = "[cluster]\nname = \"test\"\nnode = \"" + node +
                  "\"\nheartbeat_ms = 100\ndead_after_ms = 2000\nbackoff_min_ms = 20\nbackoff_max_ms = 200\nhandshake_ms = 1000\n";
  if (listen != 0) c += "listen = \"127.0.0.1:" + std::to_string(listen) + "\"\n";
  return c;
}

std::string dial(uint16_t port, const std::string& more) {
  return "[[links]]\nkind = \"tcp\"\npeer = \"127.0.0.1:" + std::to_string(port) + "\"\n" + more;
}

bool links_up(const Busd& d, uint64_t n) {
  auto v = counters::open_counters(d.counters_path());
  return v && v->globals()[Global::links_up] == n;
}

uint64_t global(const Busd& d, Global g) {
  auto v = counters::open_counters(d.counters_path());
  return v ? v->globals()[g] : 0;
}

// Publishes `subject` on `pub` until `got` moves (interest takes a moment to cross).
bool reaches(Client& pub, Client& sub, const std::string& subject, std::atomic<int>& got) {
  const int before = got.load();
  return eventually([&] {
    (void)pub.publish(subject, "probe");
    (void)sub.poll(2ms);
    return got.load() > before;
  }, 5000);
}

// Publishes `subject` for a while: `got` must not move.
bool stays_home(Client& pub, Client& sub, const std::string& subject, std::atomic<int>& got) {
  const int before = got.load();
  for (int i = 0; i < 30; ++i) {
    (void)pub.publish(subject, "x");
    (void)sub.poll(5ms);
  }
  return got.load() == before;
}

}  // namespace

TEST_CASE("a TLS link: pub/sub and request/reply; each side knows the other's identity", "[tls][links]") {
  Certs pki;
  REQUIRE(pki.ok());
  const uint16_t pa = free_port();
  Busd a(cluster("alpha", pa) + pki.tls_table("server", false, true), "tla");
  Busd b(cluster("beta", 0) + pki.tls_table("server_b", false, false) + dial(pa, "tls = true\nserver_name = \"busd-a\"\n"),
         "tlb");
  REQUIRE(a.started());
  REQUIRE(b.started());
  INFO(a.log() << b.log());
  REQUIRE(eventually([&] { return links_up(a, 1) && links_up(b, 1); }, 5000));
  CHECK(a.log().find("busd-b") != std::string::npos);  // tls_link_accepted, link_up
  CHECK(b.log().find("busd-a") != std::string::npos);

  auto sub = a.client("sub");
  auto pub = b.client("pub");
  REQUIRE(sub);
  REQUIRE(pub);
  std::atomic<int> probes{0};
  std::vector<int> seen;
  REQUIRE(sub->subscribe("t.>", [&](const Message& m) {
    if (m.text() == "probe") {
      ++probes;
    } else {
      seen.push_back(std::stoi(std::string(m.text())));
    }
  }));
  REQUIRE(reaches(*pub, *sub, "t.x", probes));
  const int n = 5000;
  for (int i = 1; i <= n; ++i) {
    while (!pub->publish("t.seq", std::to_string(i))) (void)pub->poll(0ms);
  }
  REQUIRE(pump_until(*sub, [&] { return seen.size() >= static_cast<size_t>(n); }, 10000));
  for (int i = 0; i < n; ++i) REQUIRE(seen[i] == i + 1);

  REQUIRE(sub->subscribe("svc.echo", [&](const Message& m) { (void)sub->reply(m, std::string("echo:").append(m.text())); }));
  std::atomic<bool> stop{false};
  std::thread serve([&] {
    while (!stop) (void)sub->poll(1ms);
  });
  bool first = eventually([&] { return pub->request("svc.echo", "0", 500ms).has_value(); }, 5000);
  bool all = first;
  for (int i = 0; all && i < 200; ++i) {
    auto r = pub->request("svc.echo", std::to_string(i), 2s);
    all = r && r->text() == "echo:" + std::to_string(i);
  }
  stop = true;
  serve.join();
  CHECK(first);
  CHECK(all);
}

TEST_CASE("TLS link refusals: another CA, a plaintext peer, a wrong token", "[tls][links]") {
  Certs pki;
  REQUIRE(pki.ok());
  const uint16_t pa = free_port();
  SECTION("beta's certificate is from another CA") {
    Busd a(cluster("alpha", pa) + pki.tls_table("server", false, true), "tra");
    std::string rogue = "[tls]\ncert = \"" + pki.path("rogue.pem") + "\"\nkey = \"" + pki.path("rogue.key") + "\"\nca = \"" +
                        pki.path("ca.pem") + "\"\n";
    Busd b(cluster("beta", 0) + rogue + dial(pa, "tls = true\nserver_name = \"busd-a\"\n"), "trb");
    REQUIRE(a.started());
    REQUIRE(b.started());
    REQUIRE(eventually([&] { return a.log().find("unable to get local issuer certificate") != std::string::npos; }, 5000));
    CHECK(a.log().find("link_refused") != std::string::npos);
    REQUIRE(eventually([&] { return b.log().find("link_dial_failed") != std::string::npos; }, 5000));
    CHECK_FALSE(links_up(a, 1));
  }
  SECTION("a plaintext peer on the TLS port") {
    Busd a(cluster("alpha", pa) + pki.tls_table("server", false, true), "tpa");
    Busd b(cluster("beta", 0) + dial(pa, ""), "tpb");
    REQUIRE(a.started());
    REQUIRE(b.started());
    REQUIRE(eventually([&] { return a.log().find("not TLS") != std::string::npos; }, 5000));
    CHECK(a.log().find("link_refused") != std::string::npos);
    CHECK_FALSE(links_up(a, 1));
  }
  SECTION("a wrong token (TLS without client certificates)") {
    const std::string tokens = "[[tokens]]\nidentity = \"busd-b\"\ntoken = \"link-secret-0123456789abcdef\"\n";
    Busd a(cluster("alpha", pa) + pki.tls_table("server", false, true, false) + tokens, "tka");
    Busd b(cluster("beta", 0) + "[tls]\nca = \"" + pki.path("ca.pem") + "\"\n" +
               dial(pa, "tls = true\nserver_name = \"busd-a\"\ntoken = \"link-secret-0123456789abcdeX\"\n"),
           "tkb");
    REQUIRE(a.started());
    REQUIRE(b.started());
    REQUIRE(eventually([&] { return a.log().find("token refused") != std::string::npos; }, 5000));
    CHECK_FALSE(links_up(a, 1));
  }
  SECTION("tokens on a plaintext link: none is refused, the right one is taken") {
    const std::string tokens = "[[tokens]]\nidentity = \"busd-b\"\ntoken = \"link-secret-0123456789abcdef\"\n";
    Busd a(cluster("alpha", pa) + tokens, "pta");
    {
      Busd b(cluster("beta", 0) + dial(pa, ""), "ptb");
      REQUIRE(a.started());
      REQUIRE(b.started());
      REQUIRE(eventually([&] { return a.log().find("requires a token") != std::string::npos; }, 5000));
      CHECK_FALSE(links_up(a, 1));
    }
    Busd b2(cluster("beta", 0) + dial(pa, "token = \"link-secret-0123456789abcdef\"\n"), "ptc");
    REQUIRE(b2.started());
    REQUIRE(eventually([&] { return links_up(a, 1) && links_up(b2, 1); }, 5000));
    CHECK(a.log().find("identity=busd-b") != std::string::npos);
  }
  SECTION("the right token gives the link its identity") {
    const std::string tokens = "[[tokens]]\nidentity = \"busd-b\"\ntoken = \"link-secret-0123456789abcdef\"\n";
    Busd a(cluster("alpha", pa) + pki.tls_table("server", false, true, false) + tokens, "tga");
    Busd b(cluster("beta", 0) + "[tls]\nca = \"" + pki.path("ca.pem") + "\"\n" +
               dial(pa, "tls = true\nserver_name = \"busd-a\"\ntoken = \"link-secret-0123456789abcdef\"\n"),
           "tgb");
    REQUIRE(a.started());
    REQUIRE(b.started());
    REQUIRE(eventually([&] { return links_up(a, 1) && links_up(b, 1); }, 5000));
    CHECK(a.log().find("busd-b") != std::string::npos);
  }
}

TEST_CASE("ACL across a link: allow, deny, and wildcards broader than the grant", "[tls][links][acl]") {
  Certs pki;
  REQUIRE(pki.ok());
  const uint16_t pa = free_port();
  const std::string acl =
      "[[acl]]\nidentity = \"busd-b\"\nsubscribe = [\"prices.*\"]\npublish = [\"orders.>\"]\n";
  Busd a(cluster("alpha", pa) + pki.tls_table("server", false, true) + acl, "aca");
  Busd b(cluster("beta", 0) + pki.tls_table("server_b", false, false) + dial(pa, "tls = true\nserver_name = \"busd-a\"\n"),
         "acb");
  REQUIRE(a.started());
  REQUIRE(b.started());
  REQUIRE(eventually([&] { return links_up(a, 1) && links_up(b, 1); }, 5000));
  auto ca = a.client("alpha-agent");
  auto cb = b.client("beta-agent");
  REQUIRE(ca);
  REQUIRE(cb);
  const uint64_t acl_drops = global(a, Global::drops_acl);

  // alpha -> beta: what beta's identity may subscribe to.
  std::atomic<int> eur{0}, wide{0}, star{0}, secret{0};
  REQUIRE(cb->subscribe("prices.eur", [&](const Message&) { ++eur; }));
  REQUIRE(cb->subscribe("prices.>", [&](const Message&) { ++wide; }));
  REQUIRE(cb->subscribe("*.gbp", [&](const Message&) { ++star; }));
  REQUIRE(cb->subscribe("secret.>", [&](const Message&) { ++secret; }));
  CHECK(reaches(*ca, *cb, "prices.eur", eur));                 // allowed: inside prices.*
  CHECK(reaches(*ca, *cb, "prices.usd", wide));                // prices.> narrowed to prices.*
  CHECK(stays_home(*ca, *cb, "prices.usd.eu", wide));          // '*' is one token: not granted
  CHECK(reaches(*ca, *cb, "prices.gbp", star));                // *.gbp narrowed to prices.gbp
  CHECK(stays_home(*ca, *cb, "bonds.gbp", star));              // ... and nothing else
  CHECK(stays_home(*ca, *cb, "secret.plans", secret));         // denied: refused at once
  CHECK(a.log().find("link_interest_refused") != std::string::npos);
  CHECK(a.log().find("link_interest_narrowed") != std::string::npos);

  // beta -> alpha: what beta's identity may publish.
  std::atomic<int> orders{0}, admin{0};
  REQUIRE(ca->subscribe("orders.>", [&](const Message&) { ++orders; }));
  REQUIRE(ca->subscribe("admin.>", [&](const Message&) { ++admin; }));
  REQUIRE(ca->subscribe("admin.svc", [&](const Message& m) { (void)ca->reply(m, "should not happen"); }));
  CHECK(reaches(*cb, *ca, "orders.new", orders));  // allowed
  // Denied: wait until beta would send it (alpha's interest crossed), then it must not arrive.
  REQUIRE(eventually([&] {
    (void)cb->publish("admin.reset", "x");
    (void)ca->poll(2ms);
    return a.log().find("link_message_refused") != std::string::npos;
  }, 5000));
  CHECK(stays_home(*cb, *ca, "admin.reset", admin));
  CHECK(admin.load() == 0);
  auto r = cb->request("admin.svc", "go", 2s);
  REQUIRE_FALSE(r);
  CHECK(r.error().message().find("not allowed") != std::string::npos);
  CHECK(global(a, Global::drops_acl) > acl_drops);
}
