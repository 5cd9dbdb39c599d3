// Direct lanes (bus/daemon/lanes.cpp, agents/client/lanes.cpp): set-up and tear-down, order
// across the switch between busd's path and a lane, faults. A real busd per test case.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "bus/counters.hpp"
#include "busd_fixture.hpp"
#include "../support/scale.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;

namespace {

uint64_t seq_of(const Message& m) {
  uint64_t s = 0;
  if (m.payload().size() >= 8) std::memcpy(&s, m.payload().data(), 8);
  return s;
}

std::span<const std::byte> seq_bytes(const uint64_t& s) { return std::as_bytes(std::span(&s, 1)); }

/// Mappings of lane segments in this process (memfd "busd-lane-N" or similar).
int lane_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) {
    if (line.find("lane-") != std::string::npos) ++n;
  }
  return n;
}

/// A responder on its own thread: answers every request on `subject` with the request's bytes.
struct Echo {
  std::unique_ptr<Client> c;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> served{0}, over_lane{0};
  std::thread t;
  Echo(const Busd& d, const std::string& name, const std::string& subject) : c(d.client(name)) {
    REQUIRE(c);
    REQUIRE(c->subscribe(subject, [this](const Message& m) {
      if (m.lane() != 0) ++over_lane;
      ++served;
      (void)c->reply(m, m.payload());
    }));
    t = std::thread([this] {
      while (!stop.load()) (void)c->poll(5ms);
    });
  }
  ~Echo() {
    stop = true;
    t.join();
  }
};

counters::GlobalSnapshot globals(const Busd& d) {
  auto page = counters::open_counters(d.counters_path());
  REQUIRE(page);
  return page->globals();
}
using G = counters::Global;

}  // namespace

TEST_CASE("request/reply moves onto a lane after the first round trip", "[lanes]") {
  Busd d("[busd]\nlog_level = \"debug\"\n");
  REQUIRE(d.started());
  Echo echo(d, "echo", "svc.echo");
  auto req = d.client("requester");
  REQUIRE(req);
  uint64_t lane_replies = 0;
  for (uint64_t i = 0; i < 200; ++i) {
    auto r = req->request("svc.echo", seq_bytes(i), 2s);
    REQUIRE(r);
    REQUIRE(seq_of(*r) == i);
    if (r->lane() != 0) ++lane_replies;
  }
  INFO("opened " << req->stats().lanes_opened << " sent " << req->stats().lane_sent << " closed " << req->stats().lanes_closed);
  CHECK(lane_replies > 150);
  CHECK(echo.over_lane.load() > 150);
  CHECK(req->stats().lanes_open == 1);
  CHECK(req->stats().lane_sent > 150);
  const auto g = globals(d);
  CHECK(g[G::lanes_open] == 1);
  CHECK(g[G::lane_routes] >= 1);
  // busd saw the first messages only.
  CHECK(g[G::messages_in] < 100);
}

TEST_CASE("lanes = false: every message through busd", "[lanes]") {
  Busd d("[busd]\nlanes = false\n");
  REQUIRE(d.started());
  Echo echo(d, "echo", "svc.echo");
  auto req = d.client("requester");
  for (uint64_t i = 0; i < 50; ++i) {
    auto r = req->request("svc.echo", seq_bytes(i), 2s);
    REQUIRE(r);
    CHECK(r->lane() == 0);
  }
  CHECK(req->stats().lanes_opened == 0);
  CHECK(lane_mappings() == 0);
  CHECK(globals(d)[G::messages_in] >= 100);
}

TEST_CASE("continuous publish while lanes open and close under it: nothing lost, doubled or reordered",
          "[lanes]") {
  Busd d;
  REQUIRE(d.started());
  const uint64_t kN = scaled(20000);
  auto pub = d.client("pub");
  auto steady = d.client("steady");
  auto churn = d.client("churn");
  auto grouped = d.client("grouped");
  REQUIRE((pub && steady && churn && grouped));
  // `steady` subscribes for the whole run and must see 0..kN-1 exactly, in order.
  std::vector<uint64_t> seen;
  seen.reserve(kN);
  REQUIRE(steady->subscribe("flow.x", [&](const Message& m) { seen.push_back(seq_of(m)); }));
  std::atomic<bool> done{false};
  std::atomic<uint64_t> churn_bad{0}, churn_got{0}, churn_rounds{0}, group_rounds{0};
  // `churn` subscribes and unsubscribes a wildcard over and over (each change moves the flow
  // off its lanes and back); what it gets while subscribed only goes up.
  std::thread churner([&] {
    uint64_t last = 0;
    bool any = false;
    while (!done.load()) {
      auto sid = churn->subscribe("flow.*", [&](const Message& m) {
        const uint64_t s = seq_of(m);
        if (any && s <= last) ++churn_bad;
        last = s;
        any = true;
        ++churn_got;
      });
      if (!sid) continue;
      pump_until(*churn, [] { return false; }, 15);
      (void)churn->unsubscribe(*sid);
      // Now and then a longer quiet spell, so that lanes get set up even in slow builds.
      pump_until(*churn, [] { return false; }, churn_rounds.load() % 4 == 3 ? 100 : 10);
      ++churn_rounds;
    }
  });
  // `grouped` joins a queue group now and then: while it is there, the subject cannot go over
  // lanes (busd picks the member per message) and the flow goes back through busd.
  std::thread grouper([&] {
    while (!done.load()) {
      auto sid = grouped->subscribe("flow.x", [](const Message&) {}, "g");
      if (!sid) continue;
      pump_until(*grouped, [] { return false; }, 20);
      (void)grouped->unsubscribe(*sid);
      pump_until(*grouped, [] { return false; }, group_rounds.load() % 3 == 2 ? 150 : 30);
      ++group_rounds;
    }
  });
  // At least kN messages, and for as long as it takes the others to come and go a few times
  // (sanitizer builds are slow), within 30 s.
  std::atomic<uint64_t> sent{UINT64_MAX};
  std::thread reader([&] {
    pump_until(*steady, [&] { return seen.size() >= sent.load(); }, 60000);
  });
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t n = 0;
  for (; n < kN || churn_rounds.load() < 4 || group_rounds.load() < 2 || pub->stats().lane_sent == 0; ++n) {
    if (std::chrono::steady_clock::now() - t0 > 30s) break;
    while (!pub->publish("flow.x", seq_bytes(n))) std::this_thread::sleep_for(1ms);
    if (n % 200 == 199) std::this_thread::sleep_for(1ms);  // let the others run on 2 cores
  }
  sent = n;
  reader.join();
  done = true;
  churner.join();
  grouper.join();
  REQUIRE(seen.size() == n);
  uint64_t wrong = 0;
  for (uint64_t i = 0; i < n; ++i) wrong += seen[i] != i;
  CHECK(wrong == 0);
  CHECK(churn_bad.load() == 0);
  CHECK(churn_got.load() > 0);
  INFO("lane_sent " << pub->stats().lane_sent << " opened " << pub->stats().lanes_opened << " churn rounds "
                    << churn_rounds.load() << " group rounds " << group_rounds.load());
  // Both paths carried part of the flow, and lanes came and went under it.
  CHECK(pub->stats().lane_sent > 0);
  CHECK(pub->stats().lane_sent < pub->stats().published + churn_got.load());
  CHECK(pub->stats().lanes_opened >= 2);
  CHECK(churn_rounds.load() >= 4);
}

TEST_CASE("unsubscribe tears the lane down at both ends", "[lanes]") {
  Busd d;
  REQUIRE(d.started());
  auto pub = d.client("pub");
  auto sub = d.client("sub");
  uint64_t got = 0;
  auto sid = sub->subscribe("t.x", [&](const Message& m) { got += m.lane() != 0; });
  REQUIRE(sid);
  for (uint64_t i = 0; i < 100; ++i) {
    REQUIRE(pub->publish("t.x", seq_bytes(i)));
    (void)sub->poll(1ms);
    std::this_thread::sleep_for(1ms);
  }
  REQUIRE(pump_until(*sub, [&] { return got > 0; }));
  REQUIRE(sub->stats().lanes_open == 1);
  CHECK(globals(d)[G::lanes_open] == 1);
  REQUIRE(sub->unsubscribe(*sid));
  CHECK(globals(d)[G::lanes_open] == 0);
  // The publisher ends its direction when it next looks; the subscriber frees the lane after
  // both ends are in.
  std::thread t([&] { pump_until(*pub, [&] { return pub->stats().lanes_open == 0; }, 3000); });
  CHECK(pump_until(*sub, [&] { return sub->stats().lanes_open == 0; }, 3000));
  t.join();
  CHECK(pub->stats().lanes_open == 0);
  CHECK(lane_mappings() == 0);
  // Publishing on goes through busd (nobody listens: not an error).
  CHECK(pub->publish("t.x", "after"));
}

TEST_CASE("a reload closes every lane; an ACL that no longer allows the flow refuses it", "[lanes]") {
  const std::string allow = "[busd]\nacl_owner_all = false\n[[acl]]\npublish = [\"svc.>\", \"_INBOX.>\"]\nsubscribe = [\">\"]\n";
  Busd d(allow);
  REQUIRE(d.started());
  Echo echo(d, "echo", "svc.echo");
  auto req = d.client("req");
  for (uint64_t i = 0; i < 50; ++i) REQUIRE(req->request("svc.echo", seq_bytes(i), 2s));
  auto r = req->request("svc.echo", "on a lane", 2s);
  REQUIRE(r);
  CHECK(r->lane() != 0);
  const uint64_t closed_before = globals(d)[G::lanes_closed];
  // The new config no longer lets anyone publish on svc.>.
  std::ofstream(d.dir() / "busd.toml") << "[busd]\nacl_owner_all = false\n[[acl]]\npublish = [\"_INBOX.>\"]\nsubscribe = [\">\"]\n";
  ::kill(d.pid(), SIGHUP);
  REQUIRE(eventually([&] { return globals(d)[G::lanes_closed] > closed_before; }));
  auto refused = req->request("svc.echo", "now?", 2s);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == Errc::PermissionDenied);
  CHECK(globals(d)[G::lanes_open] == 0);
}

TEST_CASE("kill -9 of the responder mid-stream: requests fail fast, the lane is reclaimed", "[lanes]") {
  Busd d("[busd]\nlog_level = \"debug\"\n");
  REQUIRE(d.started());
  const pid_t victim = d.agent_process({"serve", "svc.v", "--name", "victim"});
  auto req = d.client("req");
  REQUIRE(eventually([&] { return d.log().find("name=victim") != std::string::npos; }));
  std::this_thread::sleep_for(100ms);
  uint64_t lane = 0;
  for (int i = 0; i < 200 && lane == 0; ++i) {
    auto r = req->request("svc.v", "hi", 2s);
    REQUIRE(r);
    if (r->lane() != 0) lane = r->lane();
  }
  REQUIRE(lane != 0);
  std::thread killer([&] {
    std::this_thread::sleep_for(50ms);
    ::kill(victim, SIGKILL);
  });
  // Requests keep going until the responder is gone: none may hang.
  const auto t0 = std::chrono::steady_clock::now();
  Errc last = Errc::Ok;
  while (std::chrono::steady_clock::now() - t0 < 5s) {
    const auto s = std::chrono::steady_clock::now();
    auto r = req->request("svc.v", "still?", 10s);
    INFO("lanes_open " << req->stats().lanes_open << " closed " << req->stats().lanes_closed << " lane " << r.has_value());
    CHECK(std::chrono::steady_clock::now() - s < 3s);
    if (!r) {
      last = r.error().code();
      break;
    }
  }
  killer.join();
  CHECK(reap(victim) == 128 + SIGKILL);
  CHECK(last == Errc::NoResponders);
  CHECK(eventually([&] { return globals(d)[G::lanes_open] == 0; }));
  CHECK(pump_until(*req, [&] { return req->stats().lanes_open == 0; }, 3000));
  CHECK(lane_mappings() == 0);
}

TEST_CASE("kill -9 of the publisher mid-stream: the subscriber keeps what came, in order, and moves on",
          "[lanes]") {
  Busd d;
  REQUIRE(d.started());
  auto sub = d.client("sub");
  std::vector<uint64_t> seen;
  uint64_t over_lane = 0;
  REQUIRE(sub->subscribe("feed.x", [&](const Message& m) {
    seen.push_back(seq_of(m));
    over_lane += m.lane() != 0;
  }));
  const pid_t victim = d.agent_process({"pub", "feed.x", "--name", "feeder", "--count", "100000000", "--delay-ms", "1"});
  REQUIRE(pump_until(*sub, [&] { return over_lane > 1000; }, 10000));
  ::kill(victim, SIGKILL);
  CHECK(reap(victim) == 128 + SIGKILL);
  CHECK(pump_until(*sub, [&] { return sub->stats().lanes_open == 0; }, 5000));
  for (size_t i = 0; i < seen.size(); ++i) {
    if (seen[i] != i) {
      FAIL_CHECK("message " << i << " is seq " << seen[i]);
      break;
    }
  }
  CHECK(lane_mappings() == 0);
  CHECK(globals(d)[G::lanes_open] == 0);
  // Nothing of the lanes is left in /dev/shm (they are memfds) and busd serves on.
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    CHECK(e.path().filename().string().find("lane") == std::string::npos);
  }
  Echo echo(d, "echo", "svc.e");
  CHECK(sub->request("svc.e", "x", 2s));
}

TEST_CASE("one publisher, two subjects, one on a lane and one through busd: the receiver sees them in order",
          "[lanes]") {
  Busd d;
  REQUIRE(d.started());
  auto pub = d.client("pub");
  auto rcv = d.client("rcv");
  std::vector<uint64_t> seen;
  std::atomic<uint64_t> over_lane{0};
  auto record = [&](const Message& m) {
    seen.push_back(seq_of(m));
    if (m.lane() != 0) ++over_lane;
  };
  REQUIRE(rcv->subscribe("mix.lane", record));
  REQUIRE(rcv->subscribe("mix.busd", record, "g"));  // a queue group: always through busd
  std::atomic<uint64_t> total{UINT64_MAX};
  std::thread t([&] { pump_until(*rcv, [&] { return seen.size() >= total.load(); }, 60000); });
  // First on mix.lane alone until its lane carries it (busd sets it up after the first ones),
  // then runs of each subject, so that the flow keeps switching between the two paths.
  uint64_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (over_lane.load() == 0 && std::chrono::steady_clock::now() - t0 < 10s) {
    REQUIRE(pub->publish("mix.lane", seq_bytes(i)));
    ++i;
    std::this_thread::sleep_for(100us);
  }
  const uint64_t warm = i, lane_before = over_lane.load();
  const uint64_t kN = warm + scaled(20000);
  for (; i < kN; ++i) {
    const bool lane = ((i - warm) / 7) % 2 == 0;
    while (!pub->publish(lane ? "mix.lane" : "mix.busd", seq_bytes(i))) std::this_thread::sleep_for(1ms);
  }
  total = kN;
  t.join();
  REQUIRE(seen.size() == kN);
  uint64_t wrong = 0;
  for (uint64_t k = 0; k < kN; ++k) wrong += seen[k] != k;
  CHECK(wrong == 0);
  CHECK(lane_before > 0);
  CHECK(over_lane.load() > lane_before);  // the lane carried its runs after the switch too
  CHECK(over_lane.load() < kN);
}

namespace {

/// Fan-out of kN messages from one publisher to `readers` subscribers of fan.x over a
/// broadcast log; one reader (index 0) is slow when `slow`. Returns the log's byte count from
/// the counters page.
uint64_t fan_out(uint32_t readers, bool slow, uint64_t n) {
  // Slow: small rings (and logs), so that the log fills up behind the slow reader.
  Busd d(slow ? "[limits]\nmax_message_size = 8192\nring_capacity = 65536\n" : "");
  REQUIRE(d.started());
  auto pub = d.client("pub");
  std::vector<std::unique_ptr<Client>> subs;
  std::vector<std::vector<uint64_t>> seen(readers);
  std::vector<uint32_t> via(readers, 0);
  std::vector<std::atomic<uint32_t>> via_seen(readers);  // read by the publishing thread
  std::atomic<uint64_t> total{UINT64_MAX};
  for (uint32_t i = 0; i < readers; ++i) {
    subs.push_back(d.client("sub" + std::to_string(i)));
    REQUIRE(subs.back());
    REQUIRE(subs.back()->subscribe("fan.x", [&, i](const Message& m) {
      seen[i].push_back(seq_of(m));
      via[i] = m.lane();
      via_seen[i].store(m.lane());
      if (slow && i == 0 && seen[i].size() % 64 == 0) std::this_thread::sleep_for(1ms);
    }));
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (uint32_t i = 0; i < readers; ++i) {
    ts.emplace_back([&, i] {
      const auto end = std::chrono::steady_clock::now() + 60s;
      while (!stop.load() && seen[i].size() < total.load() && std::chrono::steady_clock::now() < end) {
        (void)subs[i]->poll(5ms);
      }
    });
  }
  // Until every reader gets them over the log (busd sets it up after the first messages), then
  // n more: all of these are written into the log once.
  uint64_t s = 0;
  auto publish_one = [&] {
    while (!pub->publish("fan.x", seq_bytes(s))) std::this_thread::sleep_for(1ms);
    ++s;
  };
  const auto t0 = std::chrono::steady_clock::now();
  for (bool all = false; !all && std::chrono::steady_clock::now() - t0 < 10s;) {
    publish_one();
    std::this_thread::sleep_for(100us);
    all = true;
    for (uint32_t i = 0; i < readers; ++i) all = all && via_seen[i].load() != 0;
  }
  const uint64_t warm = s;
  const uint64_t lane_before = pub->stats().lane_sent;
  while (s < warm + n) publish_one();
  total = s;
  for (auto& t : ts) t.join();
  n = total;
  CHECK(pub->stats().lane_sent - lane_before == total - warm);  // all of them over the log
  for (uint32_t i = 0; i < readers; ++i) {
    REQUIRE(seen[i].size() == n);
    uint64_t wrong = 0;
    for (uint64_t k = 0; k < n; ++k) wrong += seen[i][k] != k;
    CHECK(wrong == 0);
    CHECK(via[i] != 0);      // the last ones came over the log
    CHECK(via[i] == via[0]);  // one log for all of them
  }
  auto page = counters::open_counters(d.counters_path());
  REQUIRE(page);
  uint64_t bytes = 0, messages = 0, blocked = 0;
  for (const auto& l : page->lanes()) {
    if (l.lane_id == via[0]) {
      bytes = l.bytes[0];
      messages = l.messages[0];
      blocked = l.would_block[0];
    }
  }
  // Counters are copied from the log once per busd tick: wait for the last copy.
  for (int i = 0; i < 300 && messages + 10 < pub->stats().lane_sent; ++i) {
    std::this_thread::sleep_for(10ms);
    for (const auto& l : counters::open_counters(d.counters_path())->lanes()) {
      if (l.lane_id == via[0]) {
        bytes = l.bytes[0];
        messages = l.messages[0];
        blocked = l.would_block[0];
      }
    }
  }
  INFO("readers " << readers << " log messages " << messages << " bytes " << bytes << " blocked " << blocked);
  CHECK(messages == pub->stats().lane_sent);  // each message written once, whatever the readers
  CHECK(messages >= n - warm);
  if (slow) CHECK(blocked > 0);  // block policy: the slow reader held the publisher back
  return bytes / std::max<uint64_t>(messages, 1);
}

}  // namespace

TEST_CASE("fan-out: one broadcast log, each message written once for every reader", "[lanes]") {
  const uint64_t n = scaled(20000);
  const uint64_t per_msg_2 = fan_out(2, false, n);
  const uint64_t per_msg_4 = fan_out(4, false, n);
  CHECK(per_msg_2 > 0);
  CHECK(per_msg_2 == per_msg_4);  // bytes written per message do not grow with the readers
}

TEST_CASE("fan-out with one slow reader (block policy): the writer waits, nobody loses a message", "[lanes]") {
  (void)fan_out(3, true, scaled(20000));
}

TEST_CASE("kill -9 of one reader of a broadcast log: the writer goes on, the other reader misses nothing",
          "[lanes]") {
  Busd d("[limits]\nmax_message_size = 8192\nring_capacity = 65536\n");  // small: the dead reader would fill it
  REQUIRE(d.started());
  auto pub = d.client("pub");
  auto sub = d.client("sub");
  std::vector<uint64_t> seen;
  std::atomic<uint64_t> count{0};  // read by this thread while the reader thread appends
  std::vector<uint32_t> paths;
  REQUIRE(sub->subscribe("logk.x", [&](const Message& m) {
    seen.push_back(seq_of(m));
    paths.push_back(m.lane());
    ++count;
  }));
  const pid_t victim = d.agent_process({"sub", "logk.x", "--name", "victim", "--count", "1000000000"});
  REQUIRE(eventually([&] { return d.log().find("name=victim") != std::string::npos; }));
  std::this_thread::sleep_for(100ms);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) (void)sub->poll(5ms);
  });
  const uint64_t n = scaled(40000);
  bool killed = false;
  for (uint64_t s = 0; s < n; ++s) {
    REQUIRE(pub->publish("logk.x", seq_bytes(s)));  // never stuck behind the dead reader
    if (!killed && s == n / 4) {
      ::kill(victim, SIGKILL);
      killed = true;
    }
  }
  CHECK(reap(victim) == 128 + SIGKILL);
  CHECK(eventually([&] { return count.load() >= n; }, 10000));
  done = true;
  reader.join();
  {
    uint64_t brokered = 0;
    for (uint32_t pth : paths) brokered += pth == 0;
    uint64_t busd_out = 0, pub_in = 0;
    for (const auto& a : counters::open_counters(d.counters_path())->agents()) {
      if (a.name == "sub") busd_out = a.messages_out;
      if (a.name == "pub") pub_in = a.messages_in;
    }
    INFO("brokered deliveries seen " << brokered << ", busd counted out to sub " << busd_out << ", in from pub " << pub_in
         << ", pub published " << pub->stats().published << " lane_sent " << pub->stats().lane_sent);
    CHECK(brokered == busd_out);
  }
  for (size_t k = 0; k < seen.size(); ++k) {
    if (seen[k] != k) {
      INFO("first out of place: index " << k << " holds " << seen[k] << (k > 0 ? ", before it " : "") << (k > 0 ? seen[k - 1] : 0)
                                         << " paths " << (k > 0 ? paths[k - 1] : 0) << " then " << paths[k]);
      CHECK(seen[k] == k);
      break;
    }
  }
  REQUIRE(seen.size() == n);
  uint64_t wrong = 0;
  for (uint64_t s = 0; s < n; ++s) wrong += seen[s] != s;
  CHECK(wrong == 0);
  CHECK(pub->stats().lane_sent > 0);
  // The log with the dead reader was closed at the writer too (a lane to the survivor took over).
  for (int i = 0; i < 100 && pub->stats().lanes_closed == 0; ++i) (void)pub->poll(10ms);
  CHECK(pub->stats().lanes_closed >= 1);
}

TEST_CASE("busd: a message held for a full subscriber that then goes away is not delivered twice to the others",
          "[lanes]") {
  // Through busd only: a message waits at the head of the publisher's ring for a subscriber
  // whose ring is full; when that subscriber leaves, the message is done (the others have it).
  Busd d("[busd]\nlanes = false\n[limits]\nmax_message_size = 8192\nring_capacity = 65536\n");
  REQUIRE(d.started());
  auto o = d.options("pub");
  o.publish_timeout = std::chrono::milliseconds(0);
  auto pub = Client::connect(o);
  REQUIRE(pub);
  auto fast = d.client("fast");
  auto stuck = d.client("stuck");  // subscribes, never reads: its ring fills up
  std::vector<uint64_t> seen;
  REQUIRE(fast->subscribe("held.x", [&](const Message& m) { seen.push_back(seq_of(m)); }));
  REQUIRE(stuck->subscribe("held.x", [](const Message&) {}));
  uint64_t s = 0;
  // Until busd holds a message for `stuck` and the publisher's own ring is full behind it.
  for (int spins = 0; spins < 20000; ++spins) {
    if (!(*pub)->publish("held.x", seq_bytes(s))) break;
    ++s;
    if (s % 64 == 0) (void)fast->poll(std::chrono::milliseconds(0));
  }
  REQUIRE(s > 0);
  stuck.reset();  // leaves: what busd held for it is done
  const uint64_t n = s + 100;
  while (s < n) {
    if ((*pub)->publish("held.x", seq_bytes(s))) {
      ++s;
    } else {
      (void)fast->poll(1ms);
    }
  }
  REQUIRE(pump_until(*fast, [&] { return seen.size() >= n; }));
  (void)fast->poll(50ms);
  REQUIRE(seen.size() == n);
  uint64_t wrong = 0;
  for (uint64_t k = 0; k < n; ++k) wrong += seen[k] != k;
  CHECK(wrong == 0);
}

TEST_CASE("a subject on a broadcast log: publishes go over the log, requests through busd", "[lanes]") {
  Busd d;
  REQUIRE(d.started());
  auto a = d.client("resp-a");
  auto b = d.client("resp-b");
  std::atomic<uint64_t> log_msgs{0}, requests{0};
  auto serve = [&](Client& c) {
    return [&](const Message& m) {
      if (m.is_request()) {
        ++requests;
        (void)c.reply(m, "answer");
      } else if (m.lane() != 0) {
        ++log_msgs;
      }
    };
  };
  REQUIRE(a->subscribe("both.x", serve(*a)));
  REQUIRE(b->subscribe("both.x", serve(*b)));
  std::atomic<bool> stop{false};
  std::thread ta([&] { while (!stop.load()) (void)a->poll(5ms); });
  std::thread tb([&] { while (!stop.load()) (void)b->poll(5ms); });
  auto pub = d.client("pub");
  for (int i = 0; i < 2000 && log_msgs.load() < 100; ++i) {
    REQUIRE(pub->publish("both.x", "p"));
    std::this_thread::sleep_for(100us);
  }
  CHECK(log_msgs.load() >= 100);  // both readers get them over one log
  for (int i = 0; i < 20; ++i) {
    auto r = pub->request("both.x", "q", 2s);
    REQUIRE(r);
    CHECK(r->text() == "answer");
    CHECK(r->lane() == 0);  // through busd, which gathers the responders' answers
  }
  stop = true;
  ta.join();
  tb.join();
  CHECK(requests.load() >= 20);
}
