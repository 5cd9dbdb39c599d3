// Remote agents: bus::Client with "tcp://host:port" against busd's [busd] tcp_listen on
// loopback, next to local agents on the Unix socket. The same API: request/reply both ways,
// subscriptions dispatched to the right handler, queue groups, presence; the ACL sees the
// remote agent as busd.tcp_agent_uid (nothing allowed until a rule grants it); busd restarting
// under a remote agent (it reconnects).
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>

#include "bus/counters.hpp"
#include "busd_fixture.hpp"
#include "counters_page.hpp"
#include "loopback.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;

namespace {

std::string config(uint16_t port, bool grant) {
  std::string c = "[busd]\ntcp_listen = \"" + std::to_string(port) + "\"\n";
  if (grant) c += "[[acl]]\nuid = 65534\nname = \"remote-*\"\npublish = [\">\"]\nsubscribe = [\">\"]\n";
  return c;
}

std::unique_ptr<Client> remote(uint16_t port, const std::string& name) {
  ClientOptions o;
  o.name = name;
  o.address = "tcp://127.0.0.1:" + std::to_string(port);
  auto c = Client::connect(o);
  if (!c) {
    UNSCOPED_INFO("remote connect: " << c.error().message());
    return nullptr;
  }
  return std::move(*c);
}

}  // namespace

TEST_CASE("a remote agent over TCP: request/reply both ways, subscriptions, queue groups", "[remote]") {
  const uint16_t port = free_port();
  Busd d(config(port, true), "ra");
  REQUIRE(d.started());
  auto local = d.client("local");
  auto far = remote(port, "remote-1");
  REQUIRE(local);
  REQUIRE(far);

  // Remote requester, local responder.
  REQUIRE(local->subscribe("svc.local", [&](const Message& m) { (void)local->reply(m, std::string("L:").append(m.text())); }));
  std::atomic<bool> stop{false};
  std::thread serve([&] {
    while (!stop) (void)local->poll(1ms);
  });
  for (int i = 0; i < 300; ++i) {
    auto r = far->request("svc.local", std::to_string(i), 2s);
    REQUIRE(r);
    REQUIRE(r->text() == "L:" + std::to_string(i));
  }
  stop = true;
  serve.join();

  // Two subscriptions on the remote agent: each message reaches the handler it matched.
  std::vector<std::string> a, b;
  REQUIRE(far->subscribe("feed.a", [&](const Message& m) { a.emplace_back(m.text()); }));
  REQUIRE(far->subscribe("feed.b", [&](const Message& m) { b.emplace_back(m.text()); }));
  for (int i = 0; i < 1000; ++i) REQUIRE(local->publish(i % 2 ? "feed.b" : "feed.a", std::to_string(i)));
  REQUIRE(pump_until(*far, [&] { return a.size() + b.size() == 1000; }, 10000));
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == std::to_string(2 * i));
  for (size_t i = 0; i < b.size(); ++i) REQUIRE(b[i] == std::to_string(2 * i + 1));

  // Remote publisher to a local subscriber, in order.
  std::vector<int> got;
  REQUIRE(local->subscribe("up.>", [&](const Message& m) { got.push_back(std::stoi(std::string(m.text()))); }));
  for (int i = 0; i < 5000; ++i) {
    while (!far->publish("up.x", std::to_string(i))) (void)far->poll(0ms);
  }
  far->flush();
  REQUIRE(pump_until(*local, [&] { return got.size() == 5000; }, 10000));
  for (int i = 0; i < 5000; ++i) REQUIRE(got[i] == i);

  // A queue group with a local and a remote member: each request answered once, both serve.
  auto far2 = remote(port, "remote-2");
  REQUIRE(far2);
  int by_local = 0, by_remote = 0;
  REQUIRE(local->subscribe("jobs", [&](const Message& m) { ++by_local; (void)local->reply(m, "local"); }, "g"));
  REQUIRE(far2->subscribe("jobs", [&](const Message& m) { ++by_remote; (void)far2->reply(m, "remote"); }, "g"));
  stop = false;
  std::thread serve2([&] {
    while (!stop) {
      (void)local->poll(1ms);
      (void)far2->poll(1ms);
    }
  });
  for (int i = 0; i < 200; ++i) REQUIRE(far->request("jobs", "x", 2s));
  stop = true;
  serve2.join();
  CHECK(by_local + by_remote == 200);
  CHECK(by_local > 20);
  CHECK(by_remote > 20);

  // Presence: the remote agents are listed like any other.
  auto found = local->find_agents("", "remote-*");
  REQUIRE(found);
  CHECK(found->size() == 2);
}

TEST_CASE("a remote agent gets nothing the ACL does not grant; garbage on the TCP port is refused", "[remote]") {
  const uint16_t port = free_port();
  Busd d(config(port, false), "rb");
  REQUIRE(d.started());
  auto far = remote(port, "remote-1");
  REQUIRE(far);
  auto s = far->subscribe("anything", [](const Message&) {});
  REQUIRE(!s);
  CHECK(s.error().code() == Errc::PermissionDenied);
  // A raw connection that sends garbage is dropped; busd carries on.
  const int fd = connect_loopback(port);
  REQUIRE(fd >= 0);
  const std::string junk("\x10\x00\x00\x00XXXXXXXXXXXXXXXX", 20);
  REQUIRE(::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(junk.size()));
  char buf[256];
  ::recv(fd, buf, sizeof buf, 0);  // the error reply, then EOF
  CHECK(eventually([&] { return ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 0; }, 3000));
  ::close(fd);
  CHECK(d.log().find("garbage on the TCP stream") != std::string::npos);
  auto local = d.client("local");
  REQUIRE(local);
}

TEST_CASE("busd restarts under a remote agent: it reconnects and works again", "[remote]") {
  const uint16_t port = free_port();
  Busd d(config(port, true), "rc");
  REQUIRE(d.started());
  auto far = remote(port, "remote-1");
  REQUIRE(far);
  d.stop(SIGKILL);
  d.start();
  REQUIRE(d.started());
  auto local = d.client("local");
  REQUIRE(local->subscribe("svc", [&](const Message& m) { (void)local->reply(m, "back"); }));
  std::atomic<bool> stop{false};
  std::thread serve([&] {
    while (!stop) (void)local->poll(1ms);
  });
  Expected<Message> r = tl::unexpected(Errc::Closed);
  CHECK(eventually([&] {
    r = far->request("svc", "again", 500ms);
    return r.has_value();
  }, 10000));
  stop = true;
  serve.join();
  if (r) CHECK(r->text() == "back");
}
