// bus::Client::wake(): another thread ends a poll()'s wait promptly, whatever the wait strategy
// (a sleep in poll(2) on the eventfds, the adaptive strategy's spin, a spinning one), through
// busd's ring alone or with lanes, locally or over TCP; the Client works on afterwards; a
// wake-up with nobody polling is owed to the next poll, once; none is lost when wake() races
// the poller going to sleep (2000 rounds); stop() from another thread ends run() promptly; a long
// poll() fails a send_request() over a lane at its deadline.
// About 2.5 s.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <thread>

#include "busd_fixture.hpp"
#include "loopback.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Another thread waits in c.poll(10 s); this one wakes it after `after`. Returns how long the
// poll took (ms) and what it returned.
struct Woken {
  double ms = 0;
  bool ok = false;
  size_t n = 99;
};
Woken wake_a_poll(Client& c, std::chrono::milliseconds after) {
  Woken w;
  std::atomic<bool> started{false};
  std::thread poller([&] {
    started = true;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = c.poll(10s);
    w.ms = ms_since(t0);
    w.ok = r.has_value();
    if (r) w.n = *r;
  });
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(after);
  c.wake();
  poller.join();
  return w;
}

// `sub` receives what `pub` publishes on wake.test (it has subscribed): the Client still works.
bool still_works(Client& pub, Client& sub, int& got) {
  const int before = got;
  if (!pub.publish("wake.test", std::string_view("after"))) return false;
  return pump_until(sub, [&] { return got > before; }, 5000);
}

}  // namespace

TEST_CASE("wake() ends another thread's poll(10 s) promptly, for every wait strategy", "[wake]") {
  // adaptive:500ms: woken during its spin phase (the flag); the others sleep in poll(2) (the
  // eventfd), except spin, which never sleeps (the flag in its loop).
  const std::string wait = GENERATE(as<std::string>{}, "block", "adaptive", "adaptive:500ms", "spin");
  const bool lanes = GENERATE(false, true);
  CAPTURE(wait, lanes);
  Busd d(lanes ? "" : "[busd]\nlanes = false\n", "wk");
  REQUIRE(d.started());
  auto sub = d.client("wake-sub", wait);
  auto pub = d.client("wake-pub");
  REQUIRE((sub && pub));
  int got = 0;
  uint32_t lane = 0;
  REQUIRE(sub->subscribe("wake.>", [&](const Message& m) {
    ++got;
    lane = m.lane();
  }));
  // With lanes, busd sets one up after a few messages: then the poll waits on it too.
  for (int i = 0; i < 500 && (lanes ? lane == 0 : i < 1); ++i) {
    REQUIRE(pub->publish("wake.warm", std::string_view("w")));
    (void)sub->poll(1ms);
    std::this_thread::sleep_for(1ms);
  }
  REQUIRE(pump_until(*sub, [&] { return got > 0; }));
  CHECK((lane != 0) == lanes);
  (void)sub->poll(20ms);

  for (int round = 0; round < 3; ++round) {
    const Woken w = wake_a_poll(*sub, 50ms);
    INFO("round " << round << ": poll returned after " << w.ms << " ms");
    CHECK(w.ok);
    CHECK(w.n == 0);
    CHECK(w.ms < 500);  // woken: not the 10 s timeout, nor the 1 s cap on one sleep
    REQUIRE(still_works(*pub, *sub, got));
  }
}

TEST_CASE("wake() with nobody polling is owed to the next poll, once", "[wake]") {
  Busd d("", "wo");
  REQUIRE(d.started());
  auto c = d.client("wake-owed", "block");
  REQUIRE(c);
  c->wake();
  c->wake();  // two before a poll takes them: one
  auto t0 = std::chrono::steady_clock::now();
  auto r = c->poll(5s);
  REQUIRE(r);
  CHECK(*r == 0);
  CHECK(ms_since(t0) < 1000);
  t0 = std::chrono::steady_clock::now();
  r = c->poll(50ms);  // taken: this one waits its whole timeout
  REQUIRE(r);
  CHECK(*r == 0);
  CHECK(ms_since(t0) >= 45);
  // A wake-up does not interrupt a request: it waits for its reply (busd answers NoResponders
  // at once here), and the wake-up stays owed to the next poll.
  c->wake();
  auto rq = c->request("nobody.here", std::string_view("x"), 200ms);
  REQUIRE_FALSE(rq);
  CHECK(rq.error().code() == Errc::NoResponders);
  t0 = std::chrono::steady_clock::now();
  r = c->poll(5s);
  REQUIRE(r);
  CHECK(ms_since(t0) < 1000);
}

TEST_CASE("no wake-up is lost when wake() races the poller going to sleep", "[wake]") {
  // 2000 rounds: the poller enters poll(10 s), the waker calls wake() after 0-30 us (a busy
  // wait: before, during and after the poller arms its sleep, a window of a few hundred ns).
  // A lost wake-up shows as a poll that waits out a whole sleep (1 s).
  const std::string wait = GENERATE(as<std::string>{}, "block", "adaptive");
  CAPTURE(wait);
  Busd d("", "wr");
  REQUIRE(d.started());
  auto c = d.client("wake-race", wait);
  REQUIRE(c);
  constexpr int kRounds = 2000;
  std::atomic<int> entered{0}, done{0};
  double worst = 0;
  int failed = 0;
  std::thread poller([&] {
    for (int i = 1; i <= kRounds; ++i) {
      entered.store(i, std::memory_order_release);
      const auto t0 = std::chrono::steady_clock::now();
      auto r = c->poll(10s);
      worst = std::max(worst, ms_since(t0));
      if (!r || *r != 0) ++failed;
      done.store(i, std::memory_order_release);
    }
  });
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> delay_ns(0, 30'000);
  for (int i = 1; i <= kRounds; ++i) {
    while (entered.load(std::memory_order_acquire) < i) std::this_thread::yield();
    const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(delay_ns(rng));
    while (std::chrono::steady_clock::now() < until) {
    }
    c->wake();
    while (done.load(std::memory_order_acquire) < i) std::this_thread::yield();
  }
  poller.join();
  INFO("slowest woken poll: " << worst << " ms");
  CHECK(failed == 0);
  CHECK(worst < 500);  // a lost wake-up waits out a whole sleep (1 s, poll()'s cap on one)
}

TEST_CASE("wake() over TCP (a remote agent: its rings are filled by libbus's proxy thread)", "[wake][remote]") {
  const uint16_t port = free_port();
  Busd d("[busd]\ntcp_listen = \"" + std::to_string(port) +
             "\"\n[[acl]]\nuid = 65534\nname = \"remote-*\"\npublish = [\">\"]\nsubscribe = [\">\"]\n",
         "wt");
  REQUIRE(d.started());
  ClientOptions o;
  o.name = "remote-wake";
  o.address = "tcp://127.0.0.1:" + std::to_string(port);
  o.wait = "block";
  auto far = Client::connect(o);
  REQUIRE(far);
  auto pub = d.client("wake-local");
  REQUIRE(pub);
  int got = 0;
  REQUIRE((*far)->subscribe("wake.>", [&](const Message&) { ++got; }));
  REQUIRE(still_works(*pub, **far, got));
  const Woken w = wake_a_poll(**far, 50ms);
  INFO("poll returned after " << w.ms << " ms");
  CHECK(w.ok);
  CHECK(w.n == 0);
  CHECK(w.ms < 500);
  REQUIRE(still_works(*pub, **far, got));
}

TEST_CASE("stop() from another thread ends run() promptly", "[wake]") {
  Busd d("", "ws");
  REQUIRE(d.started());
  auto c = d.client("wake-stop", "block");
  REQUIRE(c);
  std::atomic<bool> running{false};
  double ms = 0;
  std::thread runner([&] {
    running = true;
    c->run();
  });
  while (!running) std::this_thread::yield();
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  c->stop();
  runner.join();
  ms = ms_since(t0);
  INFO("run() returned " << ms << " ms after stop()");
  CHECK(ms < 150);  // without the wake-up: up to run()'s 200 ms poll
}

TEST_CASE("a long poll() ends a send_request() over a lane at its deadline", "[wake][lanes]") {
  // Over a lane busd does not time a request out: the requester's poll() does, and its sleep
  // ends by the first outstanding deadline (not at its own 1 s cap). The callback wake()s the
  // poll (from the polling thread itself), so the test does not wait out the poll's 5 s.
  Busd d("", "wl");
  REQUIRE(d.started());
  auto resp = d.client("wake-responder", "block");
  auto req = d.client("wake-requester", "block");
  REQUIRE((resp && req));
  REQUIRE(resp->subscribe("svc.maybe", [&](const Message& m) {
    if (m.text() == "answer") (void)resp->reply(m, std::string_view("ok"));
  }));
  std::atomic<bool> stop{false};
  std::thread serve([&] {
    while (!stop) (void)resp->poll(5ms);
  });
  uint32_t lane = 0;
  for (int i = 0; i < 200 && lane == 0; ++i) {
    auto r = req->request("svc.maybe", std::string_view("answer"), 2s);
    REQUIRE(r);
    lane = r->lane();
  }
  REQUIRE(lane != 0);  // the requests go over a lane now
  bool answered = false;
  Errc code = Errc::Ok;
  std::chrono::steady_clock::time_point at;
  req->on_reply([&](uint64_t, const Expected<Message>& r) {
    answered = true;
    at = std::chrono::steady_clock::now();
    if (!r) code = r.error().code();
    req->wake();
  });
  const uint64_t lane_sent = req->stats().lane_sent;
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(req->send_request("svc.maybe", std::string_view("ignore"), 50ms));
  CHECK(req->stats().lane_sent == lane_sent + 1);
  for (int i = 0; i < 3 && !answered; ++i) REQUIRE(req->poll(5s));
  stop = true;
  serve.join();
  REQUIRE(answered);
  CHECK(code == Errc::Timeout);
  const double ms = std::chrono::duration<double, std::milli>(at - t0).count();
  INFO("the timeout came " << ms << " ms after send_request (deadline 50 ms)");
  CHECK(ms >= 45);
  CHECK(ms < 500);  // before: up to the 1 s cap on one sleep
  CHECK(ms_since(t0) < 1000);  // and the poll returned: woken from the callback
}
