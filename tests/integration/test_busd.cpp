// busd with real agents: routing, request/reply, presence, faults, limits, ACL.
// The view-lifetime check of bus::Message is on here whatever the build type (one test uses it).
#define BUS_CHECK_VIEWS 1
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <csignal>

#include <sys/socket.h>
#include <sys/un.h>

#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>

#include "bus/control.hpp"
#include "bus/counters.hpp"
#include "bus/inplace.hpp"
#include "busd_fixture.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;

TEST_CASE("publish/subscribe with wildcards, in order", "[busd]") {
  // Through busd (no lanes): its counters per pattern and agent count every message.
  Busd d("[busd]\nlanes = false\n");
  REQUIRE(d.started());
  auto pub = d.client("publisher");
  auto exact = d.client("exact");
  auto star = d.client("star");
  auto tail = d.client("tail");
  REQUIRE(pub);
  REQUIRE(exact);
  REQUIRE(star);
  REQUIRE(tail);
  std::vector<uint64_t> seen_exact, seen_star, seen_tail;
  auto record = [](std::vector<uint64_t>& v) {
    return [&v](const Message& m) {
      uint64_t seq = 0;
      std::memcpy(&seq, m.payload().data(), 8);
      v.push_back(seq);
    };
  };
  REQUIRE(exact->subscribe("jobs.eu.new", record(seen_exact)));
  REQUIRE(star->subscribe("jobs.*.new", record(seen_star)));
  REQUIRE(tail->subscribe("jobs.>", record(seen_tail)));
  constexpr uint64_t kN = 500;
  for (uint64_t i = 0; i < kN; ++i) {
    REQUIRE(pub->publish(i % 2 ? "jobs.eu.new" : "jobs.us.done", std::as_bytes(std::span(&i, 1))));
  }
  REQUIRE(pump_until(*tail, [&] { return seen_tail.size() == kN; }));
  REQUIRE(pump_until(*star, [&] { return seen_star.size() == kN / 2; }));
  REQUIRE(pump_until(*exact, [&] { return seen_exact.size() == kN / 2; }));
  for (uint64_t i = 0; i < kN; ++i) CHECK(seen_tail[i] == i);
  for (uint64_t i = 0; i < kN / 2; ++i) {
    CHECK(seen_star[i] == 2 * i + 1);
    CHECK(seen_exact[i] == 2 * i + 1);
  }
  // The counters page shows it per pattern and per agent (what busctl reads).
  auto page = counters::open_counters(d.counters_path());
  REQUIRE(page);
  std::map<std::string, uint64_t> per_pattern;
  for (const auto& p : page->patterns()) per_pattern[p.pattern] = p.messages;
  CHECK(per_pattern["jobs.>"] == kN);
  CHECK(per_pattern["jobs.*.new"] == kN / 2);
  CHECK(per_pattern["jobs.eu.new"] == kN / 2);
  for (const auto& a : page->agents()) {
    if (a.name == "publisher") {
      CHECK(a.messages_in == kN);
      CHECK(a.inbound_high_water > 0);
    }
    // High-water marks are sampled once per routing pass: "exact" was not reading while busd
    // delivered (tail was, and consumes records as they are committed).
    if (a.name == "exact") CHECK(a.outbound_high_water > 0);
  }
  // A publish nobody subscribed to is not an error.
  CHECK(pub->publish("nobody.listens", "x"));
}

TEST_CASE("request/reply, queue-group fairness", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  auto requester = d.client("requester");
  std::vector<std::unique_ptr<Client>> workers;
  std::map<std::string, int> served;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(d.client("worker" + std::to_string(w)));
    REQUIRE(workers.back());
    Client* self = workers.back().get();
    REQUIRE(self->subscribe("svc.plan", [self](const Message& m) { (void)self->reply(m, self->name()); }, "planners"));
  }
  // Workers answer from a thread each (the requester blocks in request()).
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&done, c = w.get()] {
      while (!done) (void)c->poll(std::chrono::milliseconds(5));
    });
  }
  for (int i = 0; i < 300; ++i) {
    auto r = requester->request("svc.plan", "plan this", 2s);
    REQUIRE(r);
    ++served[std::string(r->text())];
  }
  done = true;
  for (auto& t : threads) t.join();
  REQUIRE(served.size() == 3);
  for (const auto& [name, n] : served) CHECK(n == 100);  // round-robin: exactly fair
}

TEST_CASE("hop timing: busd stamps its times into Timed messages only; batched publish", "[busd]") {
  Busd d("[busd]\nlanes = false\n");  // busd's hops: messages through busd
  REQUIRE(d.started());
  auto timed_opts = d.options("timed");
  timed_opts.hop_timing = true;
  auto timed = Client::connect(timed_opts);
  REQUIRE(timed);
  auto plain = d.client("plain");
  auto sub = d.client("sub");
  REQUIRE(plain);
  REQUIRE(sub);
  std::vector<std::optional<HopTiming>> seen;
  std::vector<uint64_t> stamps, arrivals;
  REQUIRE(sub->subscribe("t.>", [&](const Message& m) {
    seen.push_back(hop_timing(m.envelope().header()));
    stamps.push_back(m.envelope().header().timestamp_ns());
    arrivals.push_back(clock::mono_ns());
  }));
  REQUIRE((*timed)->publish("t.a", "x"));
  REQUIRE(plain->publish("t.b", "y"));
  REQUIRE(pump_until(*sub, [&] { return seen.size() == 2; }));
  REQUIRE(seen[0].has_value());
  CHECK_FALSE(seen[1].has_value());
  // Both hops lie inside the message's own journey from its timestamp to its arrival.
  const uint64_t journey = arrivals[0] - stamps[0];
  CHECK(uint64_t{seen[0]->to_busd_ns} + seen[0]->in_busd_ns <= journey);
  CHECK(seen[0]->in_busd_ns < 1'000'000'000u);

  // Batched: written without waking busd, all delivered in order after flush().
  seen.clear();
  for (uint32_t i = 0; i < 1000; ++i) REQUIRE(plain->publish("t.batch", std::as_bytes(std::span(&i, 1)), Flush::Later));
  plain->flush();
  REQUIRE(pump_until(*sub, [&] { return seen.size() == 1000; }));
}

TEST_CASE("no responders is an immediate error; deadline expiry a timeout", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  auto requester = d.client("requester");
  auto t0 = std::chrono::steady_clock::now();
  auto r = requester->request("svc.missing", "anyone?", 5s);
  const auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == Errc::NoResponders);
  CHECK(took < 500ms);  // not the 5 s deadline

  // Many answered requests first: busd rebuilds its deadline heap along the way (it keeps only
  // the live ones), and a deadline must still fire afterwards.
  auto echo = d.client("echo");
  REQUIRE(echo->subscribe("svc.echo", [&](const Message& m) { (void)echo->reply(m, m.payload()); }));
  std::atomic<bool> stop{false};
  std::thread server([&] {
    while (!stop) (void)echo->poll(std::chrono::milliseconds(5));
  });
  int answered = 0;
  for (int i = 0; i < 3000; ++i) answered += requester->request("svc.echo", "x", 2s).has_value();
  stop = true;
  server.join();
  CHECK(answered == 3000);

  auto silent = d.client("silent");
  REQUIRE(silent->subscribe("svc.slow", [](const Message&) {}));  // never replies
  t0 = std::chrono::steady_clock::now();
  r = requester->request("svc.slow", "hello", 100ms);
  const auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == Errc::Timeout);
  CHECK(waited >= 100ms);
  CHECK(waited < 2s);
}

TEST_CASE("an agent killed with -9: presence event, its pending requests fail fast, others undisturbed",
          "[busd]") {
  Busd d;
  REQUIRE(d.started());
  auto watcher = d.client("watcher");
  std::vector<std::string> left;
  REQUIRE(watcher->subscribe("$bus.agents.left", [&](const Message& m) {
    auto p = verify_control(m.payload(), 1 << 16);
    if (p && (*p)->body_as_Presence()) {
      const auto* pr = (*p)->body_as_Presence();
      left.push_back(pr->agent()->str() + ":" + control::EnumNamePresenceEvent(pr->event()));
    }
  }));
  // A responder process that never answers; a request is pending at it when it dies.
  const pid_t victim = d.agent_process({"serve", "svc.victim", "--name", "victim", "--no-reply"});
  auto requester = d.client("requester");
  REQUIRE(eventually([&] { return d.log().find("name=victim") != std::string::npos; }));
  std::this_thread::sleep_for(100ms);  // its subscription is acknowledged before "ready"
  std::thread killer([&] {
    std::this_thread::sleep_for(200ms);
    ::kill(victim, SIGKILL);
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto r = requester->request("svc.victim", "will you answer?", 10s);
  const auto took = std::chrono::steady_clock::now() - t0;
  killer.join();
  CHECK(reap(victim) == 128 + SIGKILL);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == Errc::NoResponders);
  CHECK(took < 3s);  // failed when it died, not at the 10 s deadline
  REQUIRE(pump_until(*watcher, [&] { return !left.empty(); }));
  CHECK(left.front() == "victim:Died");
  // Everyone else carries on.
  auto echo = d.client("echo");
  REQUIRE(echo->subscribe("svc.echo", [&](const Message& m) { (void)echo->reply(m, m.payload()); }));
  std::thread t([&] { pump_until(*echo, [] { return false; }, 1000); });
  auto ok = requester->request("svc.echo", "still there", 2s);
  t.join();
  REQUIRE(ok);
  CHECK(ok->text() == "still there");
}

TEST_CASE("busd SIGTERM drains to live subscribers and leaves no files", "[busd]") {
  auto d = std::make_unique<Busd>();
  REQUIRE(d->started());
  constexpr uint64_t kN = 2000;
  const pid_t sub = d->agent_process({"sub", "drain.test", "--name", "sink", "--count", std::to_string(kN)});
  REQUIRE(eventually([&] { return d->log().find("name=sink") != std::string::npos; }));
  std::this_thread::sleep_for(100ms);
  auto pub = d->client("source");
  for (uint64_t i = 0; i < kN; ++i) REQUIRE(pub->publish("drain.test", std::as_bytes(std::span(&i, 1))));
  // Stop busd right away: what was published must still reach the subscriber.
  CHECK(d->stop(SIGTERM) == 0);
  CHECK(reap(sub, 5000) == 0);  // the sink got all kN, in order
  CHECK(d->log().find("busd_draining") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(d->socket()));
  CHECK_FALSE(std::filesystem::exists(d->counters_path()));
}

TEST_CASE("busd killed and restarted: agents reconnect and resubscribe by themselves", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  const pid_t server = d.agent_process({"serve", "svc.durable", "--name", "durable"});
  auto requester = d.client("requester");
  REQUIRE(eventually([&] { return d.log().find("name=durable") != std::string::npos; }));
  std::this_thread::sleep_for(100ms);
  REQUIRE(requester->request("svc.durable", "before", 2s));
  std::vector<ConnectionState> states;
  requester->on_state_change([&](ConnectionState s, const Error*) { states.push_back(s); });

  CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
  CHECK(std::filesystem::exists(d.socket()));  // a killed busd leaves its socket behind
  d.start();                                    // ... which the next one reclaims
  REQUIRE(d.started());
  CHECK(eventually([&] { return d.log().find("stale_socket_removed") != std::string::npos; }));
  // The server process reconnects and resubscribes on its own; so does this requester.
  Expected<Message> r = fail(Errc::Closed);
  REQUIRE(eventually([&] {
    r = requester->request("svc.durable", "after", 500ms);
    return r.has_value();
  }, 10000));
  CHECK(r->text() == "durable");
  CHECK(std::find(states.begin(), states.end(), ConnectionState::Disconnected) != states.end());
  CHECK(states.back() == ConnectionState::Connected);
  ::kill(server, SIGTERM);
  CHECK(reap(server) == 0);
}

TEST_CASE("busd killed while a handler replies: the responder survives, reconnects and serves again", "[busd]") {
  // The handler's reply() finds busd gone and the connection is torn down under the dispatch
  // that called the handler (the soak test found libbus crashing there): the teardown must wait
  // for the dispatch, and the Message stay readable until the handler returns.
  Busd d;
  REQUIRE(d.started());
  std::atomic<bool> stop{false}, serving{false}, in_handler{false}, busd_dead{false};
  std::atomic<int> handled{0}, after_kill_ok{0};
  std::vector<ConnectionState> states;
  std::mutex mu;
  std::thread responder([&] {
    auto c = d.client("fragile", "block");
    REQUIRE(c);
    c->on_state_change([&](ConnectionState s, const Error*) {
      std::lock_guard lk(mu);
      states.push_back(s);
    });
    REQUIRE(c->subscribe("svc.fragile", [&](const Message& m) {
      in_handler = true;
      // Wait for busd to die (the first request only), then read the request and reply.
      while (handled == 0 && !busd_dead && !stop) std::this_thread::sleep_for(1ms);
      std::this_thread::sleep_for(20ms);  // past the SDK's 10 ms control check
      const std::string text(m.text());
      if (c->reply(m, text)) ++after_kill_ok;
      ++handled;
    }));
    serving = true;
    while (!stop) (void)c->poll(10ms);
  });
  REQUIRE(eventually([&] { return serving.load(); }));
  auto requester = d.client("asker");
  REQUIRE(requester);
  REQUIRE(requester->send_request("svc.fragile", "first", 5s));
  REQUIRE(eventually([&] { return in_handler.load(); }));
  CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
  busd_dead = true;
  REQUIRE(eventually([&] { return handled.load() >= 1; }));
  {
    std::lock_guard lk(mu);
    CHECK(std::find(states.begin(), states.end(), ConnectionState::Disconnected) != states.end());
  }
  d.start();
  REQUIRE(d.started());
  Expected<Message> r = fail(Errc::Closed);
  REQUIRE(eventually([&] {
    r = requester->request("svc.fragile", "second", 500ms);
    return r.has_value();
  }, 10000));
  CHECK(r->text() == "second");
  stop = true;
  responder.join();
  std::lock_guard lk(mu);
  CHECK(states.back() == ConnectionState::Connected);
}

namespace {
int raw_connect(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}
// Reads until EOF; returns everything received.
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}
}  // namespace

TEST_CASE("garbage, truncated and oversize control frames: clear error, that connection closed",
          "[busd]") {
  Busd d;
  REQUIRE(d.started());
  auto bystander = d.client("bystander");
  REQUIRE(bystander->subscribe("still.alive", [](const Message&) {}));
  SECTION("garbage") {
    const int fd = raw_connect(d.socket());
    REQUIRE(fd >= 0);
    const char junk[] = "\x10\x00\x00\x00this is not a flatbuffer";
    REQUIRE(::write(fd, junk, sizeof junk - 1) > 0);
    const std::string answer = read_all(fd);  // an ErrorReply, then EOF
    CHECK(answer.find("does not verify") != std::string::npos);
    ::close(fd);
  }
  SECTION("oversize frame") {
    const int fd = raw_connect(d.socket());
    REQUIRE(fd >= 0);
    const unsigned char huge[4] = {0xff, 0xff, 0xff, 0x7f};
    REQUIRE(::write(fd, huge, 4) == 4);
    CHECK(read_all(fd).find("control frame above") != std::string::npos);
    ::close(fd);
  }
  SECTION("truncated frame, then hang up") {
    const int fd = raw_connect(d.socket());
    REQUIRE(fd >= 0);
    const unsigned char part[6] = {100, 0, 0, 0, 1, 2};
    REQUIRE(::write(fd, part, 6) == 6);
    ::close(fd);
    CHECK(eventually([&] { return d.log().find("why=\"hung up mid-frame\"") != std::string::npos; }));
  }
  // Everyone else is still served.
  auto other = d.client("other");
  REQUIRE(other);
  int got = 0;
  REQUIRE(bystander->unsubscribe(1));
  REQUIRE(bystander->subscribe("still.alive", [&](const Message&) { ++got; }));
  REQUIRE(other->publish("still.alive", "yes"));
  CHECK(pump_until(*bystander, [&] { return got == 1; }));
}

TEST_CASE("a client of another protocol version gets an error naming both versions", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  const int fd = raw_connect(d.socket());
  REQUIRE(fd >= 0);
  flatbuffers::FlatBufferBuilder fbb;
  auto hello = control::CreateHelloDirect(fbb, 7, 5, "future-client", 1);
  control::FinishControlMessageBuffer(fbb, control::CreateControlMessage(fbb, 1, control::Body::Hello, hello.Union()));
  const uint32_t len = fbb.GetSize();
  REQUIRE(::write(fd, &len, 4) == 4);
  REQUIRE(::write(fd, fbb.GetBufferPointer(), len) == static_cast<ssize_t>(len));
  const std::string answer = read_all(fd);
  CHECK(answer.find("client speaks protocol 5..7, busd speaks 1") != std::string::npos);
  ::close(fd);
  CHECK(d.log().find("version_mismatch") != std::string::npos);
}

TEST_CASE("ACL: what the config does not grant is refused with a typed error", "[busd]") {
  Busd d(R"(
[busd]
acl_owner_all = false

[[acl]]
name = "planner"
publish = ["jobs.>"]
subscribe = ["results.*"]

[[acl]]
name = "worker*"
publish = ["results.>"]
subscribe = ["jobs.>"]
)");
  REQUIRE(d.started());
  auto planner = d.client("planner");
  auto worker = d.client("worker1");
  REQUIRE(planner);
  REQUIRE(worker);
  CHECK(planner->subscribe("results.eu", [](const Message&) {}));
  auto denied = planner->subscribe("jobs.>", [](const Message&) {});
  REQUIRE_FALSE(denied);
  CHECK(denied.error().code() == Errc::PermissionDenied);
  CHECK(worker->subscribe("jobs.>", [](const Message&) {}));
  // A request to a subject it may not publish to fails with PermissionDenied.
  auto r = worker->request("jobs.steal", "mine now", 1s);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == Errc::PermissionDenied);
  // System subjects are busd's.
  auto sys = planner->request("$bus.agents.joined", "fake", 1s);
  REQUIRE_FALSE(sys);
  CHECK(sys.error().code() == Errc::PermissionDenied);
}

TEST_CASE("limits: agents, subscriptions, message size, pending requests", "[busd]") {
  Busd d(R"(
[limits]
max_agents = 3
max_subscriptions_per_agent = 2
max_pending_requests_per_agent = 1
max_message_size = 4096
)");
  REQUIRE(d.started());
  auto a = d.client("a");
  auto b = d.client("b");
  auto c = d.client("c");
  REQUIRE((a && b && c));
  auto o = d.options("d");
  auto fourth = Client::connect(o);
  REQUIRE_FALSE(fourth);
  CHECK(fourth.error().code() == Errc::LimitReached);

  CHECK(a->subscribe("one", [](const Message&) {}));
  CHECK(a->subscribe("two", [](const Message&) {}));
  auto third = a->subscribe("three", [](const Message&) {});
  REQUIRE_FALSE(third);
  CHECK(third.error().code() == Errc::LimitReached);

  const std::vector<std::byte> big(5000);
  CHECK(b->publish("one", big).error() == Errc::TooLarge);

  // One pending request allowed: the second, sent while the first waits, is refused at once;
  // the first times out at its deadline.
  REQUIRE(c->subscribe("slow", [](const Message&) {}));  // never answers
  std::vector<std::pair<uint64_t, Errc>> answers;
  b->on_reply([&](uint64_t id, const Expected<Message>& r) {
    answers.emplace_back(id, r ? Errc::Ok : r.error().code());
  });
  auto first = b->send_request("slow", "1", 300ms);
  auto second = b->send_request("slow", "2", 300ms);
  REQUIRE(first);
  REQUIRE(second);
  REQUIRE(pump_until(*b, [&] { return answers.size() == 2; }));
  CHECK(answers[0] == std::make_pair(*second, Errc::LimitReached));
  CHECK(answers[1] == std::make_pair(*first, Errc::Timeout));
}

TEST_CASE("discovery by capability", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  auto o = d.options("gpu-worker");
  o.capabilities = {"gpu", "plan"};
  auto w = Client::connect(o);
  REQUIRE(w);
  auto other = d.client("cpu-worker");
  auto found = other->find_agents("gpu");
  REQUIRE(found);
  REQUIRE(found->size() == 1);
  CHECK(found->front().name == "gpu-worker");
  CHECK(found->front().capabilities == std::vector<std::string>{"gpu", "plan"});
  CHECK(other->find_agents("quantum")->empty());
  CHECK(other->find_agents("", "*-worker")->size() == 2);
}

TEST_CASE("a second agent with the same name is refused", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  auto first = d.client("unique");
  REQUIRE(first);
  auto second = Client::connect(d.options("unique"));
  REQUIRE_FALSE(second);
  CHECK(second.error().code() == Errc::AlreadyExists);
}

TEST_CASE("a frozen agent (socket open, no answers) is declared dead by the heartbeat fallback",
          "[busd]") {
  Busd d(R"(
[busd]
heartbeat_interval_ms = 100
heartbeat_misses = 3
)");
  REQUIRE(d.started());
  auto watcher = d.client("watcher");
  int left = 0;
  REQUIRE(watcher->subscribe("$bus.agents.left", [&](const Message&) { ++left; }));
  const pid_t frozen = d.agent_process({"idle", "--name", "frozen"});
  REQUIRE(eventually([&] { return d.log().find("name=frozen") != std::string::npos; }));
  ::kill(frozen, SIGSTOP);  // alive, socket open, but it answers nothing
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(pump_until(*watcher, [&] { return left == 1; }, 5000));
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(d.log().find("why=\"heartbeat timeout\"") != std::string::npos);
  CHECK(took < 2s);  // 3 missed 100 ms heartbeats, plus a 500 ms timer tick
  ::kill(frozen, SIGKILL);
  reap(frozen);
}

TEST_CASE("after busd restarts, a subscription the ACL no longer allows is dropped, not fatal",
          "[busd]") {
  const std::string allow_both = R"(
[busd]
acl_owner_all = false
[[acl]]
name = "*"
publish = [">"]
subscribe = ["a.>", "b.>"]
)";
  Busd d(allow_both);
  REQUIRE(d.started());
  auto c = d.client("subscriber");
  auto pub = d.client("publisher");
  int got_a = 0, got_b = 0;
  REQUIRE(c->subscribe("a.>", [&](const Message&) { ++got_a; }));
  REQUIRE(c->subscribe("b.>", [&](const Message&) { ++got_b; }));
  std::vector<std::string> errors;
  c->on_state_change([&](ConnectionState, const Error* e) {
    if (e != nullptr) errors.push_back(e->message());
  });
  // Revoke a.> in the file (the running busd keeps it until a reload); restart busd with it.
  std::ofstream(d.dir() / "busd.toml") << R"(
[busd]
acl_owner_all = false
[[acl]]
name = "*"
publish = [">"]
subscribe = ["b.>"]
)";
  CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
  d.start();
  REQUIRE(d.started());
  // Both agents reconnect; the subscriber keeps b.> and reports a.> as refused.
  REQUIRE(eventually([&] {
    (void)c->poll(std::chrono::milliseconds(5));
    (void)pub->publish("b.x", "hello");
    return got_b > 0;
  }, 10000));
  CHECK(c->state() == ConnectionState::Connected);
  CHECK(c->stats().resubscribe_failures == 1);
  REQUIRE_FALSE(errors.empty());
  CHECK(errors.back().find("resubscribing to 'a.>' (dropped)") != std::string::npos);
  REQUIRE(pub->publish("a.x", "nobody"));
  (void)c->poll(std::chrono::milliseconds(50));
  CHECK(got_a == 0);
  // It connected once, not in a loop.
  const std::string log = d.log();
  size_t joins = 0;
  for (size_t at = 0; (at = log.find("name=subscriber", at)) != std::string::npos; ++at) ++joins;
  CHECK(joins <= 3);  // before the restart, after it (and the agent_left line)
}

TEST_CASE("a bad config: one error line naming the key, non-zero exit; --check-config", "[busd]") {
  const auto dir = std::filesystem::temp_directory_path() / ("busd-badcfg-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string cfg = (dir / "busd.toml").string();
  const std::string out = (dir / "out.log").string();
  std::ofstream(cfg) << "[limits]\nmax_agents = -3\n";
  pid_t p = spawn({env_or_die("BUSD_BIN"), "--config", cfg}, (dir / "s.sock").string(), out);
  CHECK(reap(p) == 1);
  std::string text = slurp(out);
  CHECK(text.find("limits.max_agents") != std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
  CHECK_FALSE(std::filesystem::exists(dir / "s.sock"));  // never started
  std::ofstream(cfg) << "[limits]\nmax_agents = 10\n";
  std::filesystem::remove(out);
  p = spawn({env_or_die("BUSD_BIN"), "--config", cfg, "--check-config"}, (dir / "s.sock").string(), out);
  CHECK(reap(p) == 0);
  CHECK(slurp(out).find(": ok") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("zero copy: reserve() a payload in ring memory, commit() what was written; misuse is refused", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  auto pub = d.client("zc-publisher");
  auto sub = d.client("zc-subscriber");
  REQUIRE(pub);
  REQUIRE(sub);
  std::vector<std::string> got;
  REQUIRE(sub->subscribe("zc.>", [&](const Message& m) { got.emplace_back(m.text()); }));

  // Misuse first: each is refused and leaves the client working.
  CHECK(pub->commit(1).error() == Errc::InvalidArgument);  // commit without reserve
  auto too_big = pub->reserve("zc.x", size_t{64} << 20);
  REQUIRE(!too_big);
  CHECK(too_big.error().code() == Errc::TooLarge);
  CHECK(pub->reserve("zc.*", 8).error().code() == Errc::InvalidArgument);  // not a subject

  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const std::string text = "message " + std::to_string(i);
    auto room = pub->reserve("zc.seq", 256);
    REQUIRE(room);
    REQUIRE(room->size() == 256);
    CHECK(reinterpret_cast<uintptr_t>(room->data()) % 8 == 0);
    if (i == 0) {
      // While a reservation is open: no second one, no other send, no commit beyond it.
      CHECK(pub->reserve("zc.seq", 8).error().code() == Errc::InvalidArgument);
      CHECK(pub->publish("zc.other", "x").error() == Errc::InvalidArgument);
      CHECK(pub->commit(257).error() == Errc::InvalidArgument);
    }
    std::memcpy(room->data(), text.data(), text.size());
    REQUIRE(pub->commit(text.size(), i % 16 == 15 ? Flush::Now : Flush::Later));
  }
  pub->flush();
  // abandon(): nothing is sent, and the next message goes out as usual.
  auto dropped = pub->reserve("zc.seq", 16);
  REQUIRE(dropped);
  std::memcpy(dropped->data(), "never sent", 10);
  pub->abandon();
  CHECK(pub->commit(10).error() == Errc::InvalidArgument);
  REQUIRE(pub->publish("zc.last", "last"));
  REQUIRE(pump_until(*sub, [&] { return got.size() == static_cast<size_t>(n + 1); }, 10000));
  (void)sub->poll(50ms);
  REQUIRE(got.size() == static_cast<size_t>(n + 1));
  for (int i = 0; i < n; ++i) REQUIRE(got[i] == "message " + std::to_string(i));
  CHECK(got.back() == "last");
}

namespace {
// A ControlMessage(Presence) with `caps` capabilities: a real schema's table, of varying size.
flatbuffers::Offset<control::ControlMessage> presence(flatbuffers::FlatBufferBuilder& fbb, uint64_t seq, size_t caps) {
  std::vector<flatbuffers::Offset<flatbuffers::String>> names;
  for (size_t i = 0; i < caps; ++i) names.push_back(fbb.CreateString("cap-" + std::to_string(seq) + "-" + std::to_string(i)));
  const auto agent = fbb.CreateString("agent-" + std::to_string(seq));
  const auto p = control::CreatePresence(fbb, control::PresenceEvent::Joined, agent, static_cast<uint32_t>(seq),
                                         fbb.CreateVector(names));
  return control::CreateControlMessage(fbb, seq, control::Body::Presence, p.Union());
}
}  // namespace

TEST_CASE("zero copy: a FlatBuffer built in the reserved room is sent where it lies; misuse is refused", "[busd]") {
  // Through busd, and over a lane.
  const bool lanes = GENERATE(false, true);
  Busd d(lanes ? "" : "[busd]\nlanes = false\n");
  REQUIRE(d.started());
  auto pub = d.client("fb-publisher");
  auto sub = d.client("fb-subscriber");
  REQUIRE((pub && sub));
  struct Got {
    uint64_t seq;
    std::string agent;
    uint32_t caps;
    bool flagged;
    bool aligned;
    uint32_t lane;
  };
  std::vector<Got> got;
  std::vector<std::string> texts;
  size_t bad = 0;
  REQUIRE(sub->subscribe("fb.>", [&](const Message& m) {
    if (m.subject() != "fb.presence") {
      texts.emplace_back(m.text());
      return;
    }
    // The payload is exactly the FlatBuffer: verified and read in place.
    const auto p = m.payload();
    flatbuffers::Verifier v(reinterpret_cast<const uint8_t*>(p.data()), p.size());
    const auto* c = control::VerifyControlMessageBuffer(v) ? control::GetControlMessage(p.data()) : nullptr;
    const auto* pr = c != nullptr ? c->body_as_Presence() : nullptr;
    if (pr == nullptr || pr->agent() == nullptr || pr->capabilities() == nullptr) {
      ++bad;
      return;
    }
    got.push_back({c->seq(), pr->agent()->str(), pr->capabilities()->size(),
                   (m.envelope().header().flags() & static_cast<uint8_t>(wire::Flags::PayloadFlatBuffer)) != 0,
                   reinterpret_cast<uintptr_t>(p.data()) % 8 == 0, m.lane()});
  }));
  // With lanes: until the route is there, so that the messages below go over the lane.
  if (lanes) {
    REQUIRE(eventually([&] {
      (void)pub->publish("fb.warm", "w");
      (void)sub->poll(1ms);
      return sub->stats().lane_received > 0;
    }, 5000));
  }

  // Misuse: commit_built without a reservation, with a builder over other memory, unfinished.
  alignas(8) std::array<std::byte, 512> elsewhere{};
  {
    InPlaceBuilder other(elsewhere);
    control::FinishControlMessageBuffer(other, presence(other, 1, 1));
    CHECK(pub->commit_built(other).error() == Errc::InvalidArgument);  // nothing reserved
    auto room = pub->reserve("fb.presence", 512);
    REQUIRE(room);
    CHECK(pub->commit_built(other).error() == Errc::InvalidArgument);  // not in the room
    InPlaceBuilder unfinished(*room);
    (void)presence(unfinished, 1, 1);
    CHECK(pub->commit_built(unfinished).error() == Errc::InvalidArgument);  // no Finish()
    pub->abandon();
  }

  // Many, of varying sizes in rooms of varying sizes: ~9 MB, so the 4 MiB rings wrap.
  constexpr uint64_t kN = 12000;
  for (uint64_t i = 0; i < kN; ++i) {
    const size_t caps = i % 17;
    auto room = pub->reserve("fb.presence", 256 + caps * 48 + (i % 5) * 8 + (i % 3));
    REQUIRE(room);
    InPlaceBuilder fbb(*room);
    control::FinishControlMessageBuffer(fbb, presence(fbb, i, caps));
    REQUIRE(fbb.built().data() + fbb.built().size() <= room->data() + room->size());
    REQUIRE(pub->commit_built(fbb, i % 8 == 7 ? Flush::Now : Flush::Later));
    if (i % 256 == 255) {
      REQUIRE(pump_until(*sub, [&] { return got.size() == i + 1; }));
    }
  }
  pub->flush();
  REQUIRE(pump_until(*sub, [&] { return got.size() == kN; }, 10000));
  CHECK(bad == 0);
  size_t over_lane = 0;
  for (uint64_t i = 0; i < kN; ++i) {
    INFO("message " << i);
    REQUIRE(got[i].seq == i);
    CHECK(got[i].agent == "agent-" + std::to_string(i));
    CHECK(got[i].caps == i % 17);
    CHECK(got[i].flagged);
    CHECK(got[i].aligned);
    over_lane += got[i].lane != 0;
  }
  // (The first ones on the subject go through busd while its route is asked for.)
  CHECK((lanes ? over_lane > kN / 2 : over_lane == 0));

  // Outgrowing the room: ClientError(TooLarge) naming the room; the reservation stays open.
  for (bool retry : {true, false}) {
    auto room = pub->reserve("fb.presence", 256);
    REQUIRE(room);
    try {
      InPlaceBuilder fbb(*room);
      control::FinishControlMessageBuffer(fbb, presence(fbb, 99, 40));
      FAIL("a FlatBuffer larger than its room was built");
    } catch (const ClientError& e) {
      CHECK(e.error().code() == Errc::TooLarge);
      CHECK(std::string(e.what()).find("256 bytes") != std::string::npos);
    }
    CHECK(pub->reserve("fb.presence", 8).error().code() == Errc::InvalidArgument);  // still open
    if (retry) {
      // A new attempt in the same room.
      InPlaceBuilder fbb(*room);
      control::FinishControlMessageBuffer(fbb, presence(fbb, kN, 1));
      REQUIRE(pub->commit_built(fbb));
    } else {
      pub->abandon();
      REQUIRE(pub->publish("fb.text", "after abandon"));
    }
  }
  REQUIRE(pump_until(*sub, [&] { return got.size() == kN + 1 && texts.size() >= 1 && texts.back() == "after abandon"; }));
  CHECK(got.back().seq == kN);
  CHECK(bad == 0);

  // A reservation lost to a disconnect: Closed, as commit() says.
  auto room = pub->reserve("fb.presence", 512);
  REQUIRE(room);
  InPlaceBuilder fbb(*room);
  control::FinishControlMessageBuffer(fbb, presence(fbb, kN + 1, 2));
  CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
  REQUIRE(eventually([&] {
    (void)pub->poll(1ms);
    return pub->state() != ConnectionState::Connected;
  }));
  CHECK(pub->commit_built(fbb).error() == Errc::Closed);
  CHECK(pub->commit_built(fbb).error() == Errc::InvalidArgument);  // gone: nothing to commit
}

TEST_CASE("a Message kept past its handler: stale(), and a debug build aborts naming the misuse", "[busd]") {
  Busd d;
  REQUIRE(d.started());
  // In this process: the kept copy says it is stale (its accessors would abort here).
  {
    auto pub = d.client("view-pub");
    auto sub = d.client("view-sub");
    Message kept;
    bool fresh_inside = false;
    REQUIRE(sub->subscribe("view.x", [&](const Message& m) {
      fresh_inside = !m.stale() && m.text() == "hello";
      kept = m;
    }));
    REQUIRE(pub->publish("view.x", "hello"));
    REQUIRE(pump_until(*sub, [&] { return kept.valid(); }));
    CHECK(fresh_inside);
    CHECK(kept.stale());
    // A reply stays good until the next call on its Client.
    REQUIRE(sub->subscribe("view.svc", [&](const Message& m) { (void)sub->reply(m, "answer"); }));
    std::thread t([&] { pump_until(*sub, [] { return false; }, 500); });
    auto r = pub->request("view.svc", "q", 2s);
    REQUIRE(r);
    CHECK_FALSE(r->stale());
    CHECK(r->text() == "answer");
    auto r2 = pub->request("view.svc", "q2", 2s);
    t.join();
    REQUIRE(r2);
    CHECK(r->stale());
  }
  // In a child: using the kept copy aborts with a message that says what went wrong.
  int err[2];
  REQUIRE(::pipe(err) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The abort is this child's only way out: Catch's handler must not report it as a failure
    // on the stdout it shares with the parent.
    std::signal(SIGABRT, SIG_DFL);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(err[1], 2);
    auto pub = d.client("view-pub-child");
    auto sub = d.client("view-sub-child");
    Message kept;
    if (!pub || !sub || !sub->subscribe("view.y", [&](const Message& m) { kept = m; })) ::_exit(3);
    (void)pub->publish("view.y", "hello");
    for (int i = 0; i < 400 && !kept.valid(); ++i) (void)sub->poll(5ms);
    if (!kept.valid()) ::_exit(4);
    volatile size_t n = kept.payload().size();  // aborts
    (void)n;
    ::_exit(0);
  }
  ::close(err[1]);
  std::string text;
  char buf[512];
  for (ssize_t k; (k = ::read(err[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(k));
  ::close(err[0]);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK(text.find("used after its handler returned") != std::string::npos);
}
