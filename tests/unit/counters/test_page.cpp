// The writer (bus/counters/page.hpp) and the reader (bus/counters.hpp) together: round trips in
// one process, a reader in a forked child, slot reuse, the overflow pattern slot, lanes, stale
// pages.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "bus/clock.hpp"
#include "counters/page.hpp"
#include "temp_dir.hpp"

using namespace bus;
using namespace bus::counters;
using bus::test::TempDir;

namespace {

CountersView must_open(const std::string& path) {
  auto v = open_counters(path);
  INFO((v ? std::string() : v.error().message()));
  REQUIRE(v);
  return std::move(*v);
}

}  // namespace

TEST_CASE("a page written by busd reads back", "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  const uint64_t before = clock::real_ns();
  auto page = CountersPage::create(path, 8, 4, 2, 0640);
  REQUIRE(page);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  CHECK(static_cast<uint64_t>(st.st_size) == page_size(8, 4, 2));

  page->add(Global::messages_in, 41);
  page->add(Global::messages_in);
  page->add(Global::bytes_in, 1ull << 40);
  page->set(Global::agents_connected, 5);
  page->sub(Global::agents_connected, 2);
  page->sub(Global::config_reloads, 3);  // saturates at 0
  CHECK(page->get(Global::messages_in) == 42);

  AgentCounters* a = page->agent_open(17, "planner", 1234, 1000, 1001);
  REQUIRE(a != nullptr);
  message_in(*a, 100);
  message_in(*a, 50);
  message_out(*a, 7);
  bump(a->drops_slow_consumer, 2);
  bump(a->drops_acl, 3);
  bump(a->drops_too_large, 4);
  bump(a->drops_verify, 5);
  bump(a->subscriptions, 3);
  drop_by(a->subscriptions);
  bump(a->pending_requests);
  note_high_water(a->inbound_high_water, 4096);
  note_high_water(a->inbound_high_water, 100);  // lower: kept
  note_high_water(a->outbound_high_water, 65536);

  PatternCounters* p = page->pattern_open("svc.plan.>");
  REQUIRE(p != nullptr);
  delivered(*p, 64);
  delivered(*p, 36);
  bump(p->drops);
  CHECK(page->pattern_open("svc.plan.>") == p);  // a second subscriber shares the slot
  page->heartbeat(clock::real_ns());

  CountersView v = must_open(path);
  const PageInfo& info = v.info();
  CHECK(info.layout_version == kLayoutVersion);
  CHECK(info.pid == ::getpid());
  CHECK(info.start_time_ns >= before);
  CHECK(info.start_time_ns <= clock::real_ns());
  CHECK(info.busd_version == BUSD_VERSION_FOR_TEST);
  CHECK(info.max_agents == 8);
  CHECK(info.max_patterns == 4);
  CHECK(info.page_size == page_size(8, 4, 2));
  CHECK(v.live(clock::real_ns()));
  CHECK(v.generation() == 2);  // one agent slot, one pattern slot

  const GlobalSnapshot g = v.globals();
  CHECK(g[Global::messages_in] == 42);
  CHECK(g[Global::bytes_in] == (1ull << 40));
  CHECK(g[Global::agents_connected] == 3);
  CHECK(g[Global::config_reloads] == 0);
  CHECK(g[Global::limit_hits] == 0);

  const auto agents = v.agents();
  REQUIRE(agents.size() == 1);
  const AgentSnapshot& s = agents[0];
  CHECK(s.state == SlotState::Active);
  CHECK(s.agent_id == 17);
  CHECK(s.name == "planner");
  CHECK(s.pid == 1234);
  CHECK(s.uid == 1000);
  CHECK(s.gid == 1001);
  CHECK(s.opened_ns >= before);
  CHECK(s.messages_in == 2);
  CHECK(s.bytes_in == 150);
  CHECK(s.messages_out == 1);
  CHECK(s.bytes_out == 7);
  CHECK(s.drops_slow_consumer == 2);
  CHECK(s.drops_acl == 3);
  CHECK(s.drops_too_large == 4);
  CHECK(s.drops_verify == 5);
  CHECK(s.drops() == 14);
  CHECK(s.subscriptions == 2);
  CHECK(s.pending_requests == 1);
  CHECK(s.inbound_high_water == 4096);
  CHECK(s.outbound_high_water == 65536);
  CHECK(s.generation % 2 == 0);
  CHECK(s.generation > 0);

  const auto pats = v.patterns();
  REQUIRE(pats.size() == 1);
  CHECK(pats[0].pattern == "svc.plan.>");
  CHECK_FALSE(pats[0].overflow);
  CHECK(pats[0].subscribers == 2);
  CHECK(pats[0].messages == 2);
  CHECK(pats[0].bytes == 100);
  CHECK(pats[0].drops == 1);

  // The view reads the live page: later increments show without reopening.
  page->add(Global::messages_in, 8);
  CHECK(v.globals()[Global::messages_in] == 50);
}

TEST_CASE("a clean stop unlinks the page and marks it stopped for readers still mapping it",
          "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  std::optional<CountersView> v;
  {
    auto page = CountersPage::create(path, 2, 2, 1);
    REQUIRE(page);
    CountersPage moved = std::move(*page);  // the moved-from object owns nothing
    v = must_open(path);
    CHECK(v->live(clock::real_ns()));
  }
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(v->heartbeat_ns() == 0);
  CHECK_FALSE(v->live(clock::real_ns()));
  auto gone = open_counters(path);
  REQUIRE_FALSE(gone);
  CHECK(gone.error().code() == Errc::NotFound);
  CHECK_THAT(gone.error().message(), Catch::Contains(path));
}

TEST_CASE("the heartbeat tells a live busd from a stale page", "[counters][page]") {
  TempDir dir;
  auto page = CountersPage::create(dir.file("c"), 1, 1, 1);
  REQUIRE(page);
  CountersView v = must_open(dir.file("c"));
  const uint64_t t = 1'700'000'000'000'000'000ull;
  page->heartbeat(t);
  CHECK(v.heartbeat_ns() == t);
  CHECK(v.live(t));
  CHECK(v.live(t + kStaleAfterNs));
  CHECK_FALSE(v.live(t + kStaleAfterNs + 1));
  CHECK(v.live(t - 1'000'000'000));  // our clock behind busd's a little: still live
  CHECK_FALSE(v.live(t - kStaleAfterNs - 1));
}

TEST_CASE("create refuses an existing file and bad table sizes", "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto first = CountersPage::create(path, 4, 4, 1);
  REQUIRE(first);
  auto second = CountersPage::create(path, 4, 4, 1);
  REQUIRE_FALSE(second);
  CHECK(second.error().code() == Errc::AlreadyExists);
  CHECK(std::filesystem::exists(path));  // the failed create did not remove the live page

  struct Sizes {
    uint32_t agents, patterns, lanes;
  };
  for (auto [agents, patterns, lanes] :
       {Sizes{0, 4, 4}, {4, 0, 4}, {kMaxTableSlots + 1, 4, 4}, {4, 4, kMaxTableSlots + 1}}) {
    auto bad = CountersPage::create(dir.file("bad"), agents, patterns, lanes);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code() == Errc::InvalidArgument);
    CHECK_FALSE(std::filesystem::exists(dir.file("bad")));
  }
  auto nodir = CountersPage::create(dir.file("no/such/dir"), 1, 1, 1);
  REQUIRE_FALSE(nodir);
  CHECK(nodir.error().code() == Errc::NotFound);
}

TEST_CASE("reusing an agent slot changes its generation and resets its counters",
          "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("c");
  auto page = CountersPage::create(path, 1, 1, 1);
  REQUIRE(page);
  CountersView v = must_open(path);

  AgentCounters* a = page->agent_open(1, "first", 10, 0, 0);
  REQUIRE(a != nullptr);
  message_in(*a, 10);
  const auto g1 = v.generation();
  const auto s1 = v.agents();
  REQUIRE(s1.size() == 1);

  // Full: nullptr and a limit hit.
  CHECK(page->agent_open(2, "second", 11, 0, 0) == nullptr);
  CHECK(v.globals()[Global::limit_hits] == 1);

  page->agent_dead(a);
  const auto dead = v.agents();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].state == SlotState::Dead);
  CHECK(dead[0].messages_in == 1);  // counters kept while busd reclaims
  CHECK(dead[0].generation != s1[0].generation);

  page->agent_close(a);
  CHECK(v.agents().empty());
  page->agent_close(a);        // twice: ignored
  page->agent_close(nullptr);  // ignored

  AgentCounters* b = page->agent_open(2, "second", 11, 0, 0);
  REQUIRE(b == a);  // the same slot
  const auto s2 = v.agents();
  REQUIRE(s2.size() == 1);
  CHECK(s2[0].slot == s1[0].slot);
  CHECK(s2[0].name == "second");
  CHECK(s2[0].agent_id == 2);
  CHECK(s2[0].messages_in == 0);
  CHECK(s2[0].generation > dead[0].generation);
  CHECK(v.generation() == g1 + 3);  // dead, close, open
}

TEST_CASE("long names are cut at 64 bytes on a UTF-8 boundary", "[counters][page]") {
  TempDir dir;
  auto page = CountersPage::create(dir.file("c"), 2, 2, 1);
  REQUIRE(page);
  const std::string exact(64, 'x');
  std::string utf8(63, 'y');
  utf8 += "\xC3\xA9";  // é straddles byte 64: dropped whole
  REQUIRE(page->agent_open(1, exact, 1, 0, 0) != nullptr);
  REQUIRE(page->agent_open(2, utf8, 1, 0, 0) != nullptr);
  const std::string long_pattern = std::string(200, 'p');
  (void)page->pattern_open(long_pattern);
  CountersView v = must_open(dir.file("c"));
  const auto agents = v.agents();
  REQUIRE(agents.size() == 2);
  CHECK(agents[0].name == exact);
  CHECK(agents[1].name == std::string(63, 'y'));
  const auto pats = v.patterns();
  REQUIRE(pats.size() == 1);
  CHECK(pats[0].pattern == std::string(128, 'p'));
}

TEST_CASE("patterns share slots, free them with the last subscriber, and overflow",
          "[counters][page]") {
  TempDir dir;
  auto page = CountersPage::create(dir.file("c"), 1, 2, 1);
  REQUIRE(page);
  CountersView v = must_open(dir.file("c"));

  PatternCounters* a = page->pattern_open("a.>");
  PatternCounters* b = page->pattern_open("b.*");
  CHECK(a != b);
  CHECK(v.patterns().size() == 2);  // the overflow slot is listed only once used

  PatternCounters* c = page->pattern_open("c");  // table full: the overflow slot
  PatternCounters* d = page->pattern_open("d");
  REQUIRE(c != nullptr);
  CHECK(c == d);
  CHECK(v.globals()[Global::limit_hits] == 2);
  delivered(*c, 10);
  auto pats = v.patterns();
  REQUIRE(pats.size() == 3);
  CHECK(pats[2].overflow);
  CHECK(pats[2].pattern.empty());
  CHECK(pats[2].subscribers == 2);
  CHECK(pats[2].messages == 1);

  // "c" stays in the overflow slot while subscribed, even once a slot frees.
  page->pattern_close("a.>");
  CHECK(page->pattern_open("c") == c);
  CHECK(v.patterns().size() == 2);  // b.* and overflow
  page->pattern_close("c");
  page->pattern_close("c");
  page->pattern_close("d");
  page->pattern_close("never-opened");  // ignored
  pats = v.patterns();
  REQUIRE(pats.size() == 2);
  CHECK(pats[1].overflow);
  CHECK(pats[1].subscribers == 0);
  CHECK(pats[1].messages == 1);  // what went through it stays counted

  // A freed slot is reused with fresh counters and a new generation.
  delivered(*b, 5);
  const uint64_t gen_b = pats[0].generation;
  page->pattern_close("b.*");
  PatternCounters* e = page->pattern_open("e");
  const auto after = v.patterns();
  REQUIRE(after.size() == 2);
  CHECK(after[0].pattern == "e");
  CHECK(after[0].messages == 0);
  CHECK(after[0].subscribers == 1);
  CHECK(after[0].generation != gen_b);
  CHECK((e == a || e == b));
}

TEST_CASE("lanes read back, both directions", "[counters][page][lanes]") {
  TempDir dir;
  const std::string path = dir.file("c");
  const uint64_t before = clock::real_ns();
  auto page = CountersPage::create(path, 4, 4, 4);
  REQUIRE(page);
  CountersView v = must_open(path);
  CHECK(v.info().max_lanes == 4);
  CHECK(v.lanes().empty());

  LaneCounters* l = page->lane_open(12, 3, "planner", 7, "worker");
  REQUIRE(l != nullptr);
  page->lane_set(l, 0, 100, 6400, 2);
  page->lane_set(l, 1, 99, 3200, 0);
  page->lane_set(l, 2, 1, 1, 1);   // no such side: ignored
  page->lane_set(l, -1, 1, 1, 1);  // ignored
  page->lane_set(nullptr, 0, 1, 1, 1);
  std::string utf8(63, 'y');
  utf8 += "\xC3\xA9";  // cut whole, as agent names are
  LaneCounters* m = page->lane_open(13, 3, std::string(64, 'x'), 9, utf8);
  REQUIRE(m != nullptr);
  CHECK(m != l);
  CHECK(v.generation() == 2);

  const auto lanes = v.lanes();
  REQUIRE(lanes.size() == 2);
  const LaneSnapshot& a = lanes[0];
  CHECK(a.open);
  CHECK(a.slot == 0);
  CHECK(a.lane_id == 12);
  CHECK(a.agent_id == std::array<uint32_t, 2>{3, 7});
  CHECK(a.name[0] == "planner");
  CHECK(a.name[1] == "worker");
  CHECK(a.opened_ns >= before);
  CHECK(a.opened_ns <= clock::real_ns());
  CHECK(a.messages == std::array<uint64_t, 2>{100, 99});
  CHECK(a.bytes == std::array<uint64_t, 2>{6400, 3200});
  CHECK(a.would_block == std::array<uint64_t, 2>{2, 0});
  CHECK(a.generation % 2 == 0);
  CHECK(a.generation > 0);
  CHECK(lanes[1].lane_id == 13);
  CHECK(lanes[1].name[0] == std::string(64, 'x'));
  CHECK(lanes[1].name[1] == std::string(63, 'y'));
  CHECK(lanes[1].messages == std::array<uint64_t, 2>{0, 0});

  // lane_open counts no global but lane_table_full: the rest are the caller's.
  const GlobalSnapshot g = v.globals();
  CHECK(g[Global::lanes_open] == 0);
  CHECK(g[Global::lanes_opened] == 0);
  CHECK(g[Global::lane_table_full] == 0);
  page->add(Global::lanes_opened, 2);
  page->set(Global::lanes_open, 2);
  page->add(Global::lane_routes, 5);
  CHECK(v.globals()[Global::lanes_opened] == 2);
  CHECK(v.globals()[Global::lanes_open] == 2);
  CHECK(v.globals()[Global::lane_routes] == 5);
}

TEST_CASE("closed lanes keep their counters until the slot is reused, oldest first; a full table",
          "[counters][page][lanes]") {
  TempDir dir;
  const std::string path = dir.file("c");
  auto page = CountersPage::create(path, 1, 1, 2);
  REQUIRE(page);
  CountersView v = must_open(path);

  LaneCounters* a = page->lane_open(1, 1, "a", 2, "b");
  LaneCounters* b = page->lane_open(2, 1, "a", 3, "c");
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  page->lane_set(a, 0, 10, 100, 1);

  // Full: nullptr, lane_table_full counted (not limit_hits: the lane may still open).
  CHECK(page->lane_open(3, 2, "b", 3, "c") == nullptr);
  CHECK(v.globals()[Global::lane_table_full] == 1);
  CHECK(v.globals()[Global::limit_hits] == 0);

  const auto g0 = v.generation();
  const auto open_a = v.lanes().at(0);
  page->lane_close(a);
  auto lanes = v.lanes();
  REQUIRE(lanes.size() == 2);
  CHECK_FALSE(lanes[0].open);
  CHECK(lanes[0].lane_id == 1);
  CHECK(lanes[0].messages[0] == 10);  // the last counters stay
  CHECK(lanes[0].generation != open_a.generation);
  CHECK(lanes[1].open);
  CHECK(v.generation() == g0 + 1);
  page->lane_close(a);  // twice: ignored
  page->lane_close(nullptr);
  LaneCounters elsewhere{};
  page->lane_close(&elsewhere);  // not a slot of this page: ignored
  CHECK(v.generation() == g0 + 1);

  // b closes after a: the next open takes a's slot (closed longest ago), b stays listed.
  page->lane_close(b);
  LaneCounters* c = page->lane_open(4, 5, "e", 6, "f");
  CHECK(c == a);
  lanes = v.lanes();
  REQUIRE(lanes.size() == 2);
  CHECK(lanes[0].open);
  CHECK(lanes[0].lane_id == 4);
  CHECK(lanes[0].name[0] == "e");
  CHECK(lanes[0].messages[0] == 0);  // fresh counters
  CHECK(lanes[0].generation > open_a.generation);
  CHECK_FALSE(lanes[1].open);
  CHECK(lanes[1].lane_id == 2);
  CHECK(page->lane_open(5, 5, "e", 7, "g") == b);
  CHECK(page->lane_open(6, 5, "e", 8, "h") == nullptr);
  CHECK(v.globals()[Global::lane_table_full] == 2);
  CHECK(v.generation() == g0 + 4);  // close a, close b, open, open
}

TEST_CASE("a page without a lane table", "[counters][page][lanes]") {
  TempDir dir;
  auto page = CountersPage::create(dir.file("c"), 1, 1, 0);
  REQUIRE(page);
  CountersView v = must_open(dir.file("c"));
  CHECK(v.info().max_lanes == 0);
  CHECK(v.info().page_size == page_size(1, 1, 0));
  CHECK(page->lane_open(1, 1, "a", 2, "b") == nullptr);
  CHECK(v.globals()[Global::lane_table_full] == 1);
  page->lane_close(nullptr);
  CHECK(v.lanes().empty());
}

TEST_CASE("links read back; renamed, closed, reused oldest first; a full table", "[counters][page][links]") {
  TempDir dir;
  const std::string path = dir.file("c");
  auto page = CountersPage::create(path, 1, 1, 1, 0600, 2);
  REQUIRE(page);
  CountersView v = must_open(path);
  CHECK(v.info().max_links == 2);
  CHECK(v.info().page_size == page_size(1, 1, 1, 2));
  CHECK(v.links().empty());

  LinkCounters* a = page->link_open(LinkKind::Tcp, "", "10.0.0.2:7400");
  LinkCounters* b = page->link_open(LinkKind::Dpdk, "c", "10.0.0.3:9000");
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  CHECK(page->link_open(LinkKind::Tcp, "d", "x") == nullptr);  // full
  bump(a->messages_out, 5);
  bump(a->bytes_out, 500);
  a->up.store(1);
  a->rtt_ns.store(42'000);
  auto links = v.links();
  REQUIRE(links.size() == 2);
  CHECK(links[0].open);
  CHECK(links[0].kind == LinkKind::Tcp);
  CHECK(links[0].node.empty());
  CHECK(links[0].address == "10.0.0.2:7400");
  CHECK(links[0].up);
  CHECK(links[0].messages_out == 5);
  CHECK(links[0].bytes_out == 500);
  CHECK(links[0].rtt_ns == 42'000);
  CHECK(links[1].kind == LinkKind::Dpdk);
  CHECK(std::string(to_string(links[1].kind)) == "dpdk");
  CHECK(links[1].node == "c");
  CHECK_FALSE(links[1].up);

  const auto g0 = v.generation();
  page->link_rename(a, "b");
  CHECK(v.links().at(0).node == "b");
  CHECK(v.generation() == g0 + 1);
  page->link_close(a);
  links = v.links();
  CHECK_FALSE(links.at(0).open);
  CHECK_FALSE(links.at(0).up);  // a forgotten peer is not up
  CHECK(links.at(0).messages_out == 5);  // the last counters stay
  page->link_close(a);  // twice, null, not ours: ignored
  page->link_close(nullptr);
  LinkCounters elsewhere{};
  page->link_close(&elsewhere);
  page->link_rename(&elsewhere, "x");
  CHECK(v.generation() == g0 + 2);
  LinkCounters* c = page->link_open(LinkKind::Tcp, "e", "10.0.0.5:7400");
  CHECK(c == a);  // the closed slot, reused with fresh counters
  CHECK(v.links().at(0).messages_out == 0);
  CHECK(v.links().at(0).node == "e");
}

TEST_CASE("a reader in another process sees the writer's increments", "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto page = CountersPage::create(path, 4, 4, 1);
  REQUIRE(page);
  int ready[2], go[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(go) == 0);
  constexpr uint64_t kN = 100'000;

  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // No Catch2 here: report through the exit status only.
    auto v = open_counters(path);
    if (!v) ::_exit(10);
    char c = 'r';
    if (::write(ready[1], &c, 1) != 1) ::_exit(11);
    if (::read(go[0], &c, 1) != 1) ::_exit(12);
    // The parent is done writing: everything must be visible now.
    const auto g = v->globals();
    if (g[Global::messages_in] != kN || g[Global::bytes_in] != 64 * kN) ::_exit(13);
    const auto agents = v->agents();
    if (agents.size() != 1 || agents[0].name != "remote" || agents[0].messages_out != kN) ::_exit(14);
    if (!v->live(clock::real_ns())) ::_exit(15);
    const auto lanes = v->lanes();
    if (lanes.size() != 1 || !lanes[0].open || lanes[0].name[1] != "peer" || lanes[0].messages[1] != kN ||
        lanes[0].bytes[1] != 64 * kN) {
      ::_exit(16);
    }
    ::_exit(0);
  }
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  AgentCounters* a = page->agent_open(3, "remote", ::getpid(), ::getuid(), ::getgid());
  REQUIRE(a != nullptr);
  LaneCounters* l = page->lane_open(1, 3, "remote", 4, "peer");
  REQUIRE(l != nullptr);
  for (uint64_t i = 0; i < kN; ++i) {
    page->add(Global::messages_in);
    page->add(Global::bytes_in, 64);
    message_out(*a, 64);
    page->lane_set(l, 1, i + 1, 64 * (i + 1), 0);
  }
  REQUIRE(::write(go[1], &c, 1) == 1);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  for (int fd : {ready[0], ready[1], go[0], go[1]}) ::close(fd);
}

TEST_CASE("a reader in another process watches counters grow while busd writes",
          "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto page = CountersPage::create(path, 1, 1, 1);
  REQUIRE(page);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto v = open_counters(path);
    if (!v) ::_exit(10);
    uint64_t last = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      const uint64_t now = v->globals()[Global::messages_out];
      if (now < last) ::_exit(11);  // a single writer's counter never goes back
      last = now;
      if (now == 1'000'000) ::_exit(0);
    }
    ::_exit(12);
  }
  for (int i = 0; i < 1'000'000; ++i) page->add(Global::messages_out);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("remove_stale removes a dead busd's page and nothing else", "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");

  SECTION("no file: nothing to do") {
    auto r = CountersPage::remove_stale(path);
    REQUIRE(r);
    CHECK_FALSE(*r);
  }
  SECTION("a page of a running busd (here: a live child) stays") {
    int ready[2], done[2];
    REQUIRE(::pipe(ready) == 0);
    REQUIRE(::pipe(done) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      auto page = CountersPage::create(path, 1, 1, 1);
      char c = page ? 'y' : 'n';
      if (::write(ready[1], &c, 1) != 1) ::_exit(1);
      if (::read(done[0], &c, 1) != 1) ::_exit(2);
      ::_exit(0);  // leaves the page behind, as a crash would
    }
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    REQUIRE(c == 'y');
    auto running = CountersPage::remove_stale(path);
    REQUIRE_FALSE(running);
    CHECK(running.error().code() == Errc::AlreadyExists);
    CHECK_THAT(running.error().message(), Catch::Contains(std::to_string(child)));
    CHECK(std::filesystem::exists(path));
    auto refused = CountersPage::create(path, 1, 1, 1);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code() == Errc::AlreadyExists);

    // The child dies without cleaning up: its page is stale now.
    REQUIRE(::write(done[1], &c, 1) == 1);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(std::filesystem::exists(path));
    auto stale = CountersPage::remove_stale(path);
    REQUIRE(stale);
    CHECK(*stale);
    CHECK_FALSE(std::filesystem::exists(path));
    CHECK(CountersPage::create(path, 1, 1, 1));
    for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
  }
  SECTION("a page recording our own pid is stale (a restart that got the same pid)") {
    auto page = CountersPage::create(path, 1, 1, 1);
    REQUIRE(page);
    auto r = CountersPage::remove_stale(path);
    REQUIRE(r);
    CHECK(*r);
    CHECK_FALSE(std::filesystem::exists(path));
  }
  SECTION("a file that is not a page is never removed") {
    std::ofstream(path) << "not a counters page, but somebody's file\n";
    auto r = CountersPage::remove_stale(path);
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == Errc::Corrupt);
    CHECK(std::filesystem::exists(path));
  }
}

TEST_CASE("histograms: recorded durations read back; quantiles within a bucket; since()", "[counters][page]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto page = CountersPage::create(path, 2, 2, 0, 0644, 1);
  REQUIRE(page);
  auto v = must_open(path);
  REQUIRE(v.info().histogram_count == kHistCount);
  auto h = v.histograms();
  REQUIRE(h.size() == kHistCount);
  CHECK(h[0].name == "request_reply");
  CHECK(h[1].name == "link_rtt");
  CHECK(h[0].count == 0);
  CHECK(h[0].quantile(0.5) == 0);  // empty

  // request_reply: 1..1000 µs, one each; link_rtt: untouched.
  uint64_t sum = 0;
  for (uint64_t us = 1; us <= 1000; ++us) {
    page->record(Hist::request_reply, us * 1000);
    sum += us * 1000;
  }
  h = v.histograms();
  const HistogramSnapshot& r = h[0];
  CHECK(r.count == 1000);
  CHECK(r.total() == 1000);
  CHECK(r.sum_ns == sum);
  CHECK(r.max_ns == 1'000'000);
  CHECK(r.mean_ns() == sum / 1000);
  CHECK(h[1].count == 0);
  // The quantile is the upper bound of the bucket holding it: at or above the true value, at
  // most 25% above; max caps it.
  for (double q : {0.01, 0.5, 0.9, 0.99, 0.999}) {
    INFO("q " << q);
    const auto exact = static_cast<uint64_t>(q * 1000 + 0.5) * 1000;
    const uint64_t got = r.quantile(q);
    CHECK(got >= exact);
    CHECK(got <= exact + exact / 4);
  }
  CHECK(r.quantile(1.0) == 1'000'000);
  CHECK(r.quantile(0.0) == 1023);  // the smallest value, 1000, is in bucket [896, 1023]
  CHECK(r.quantile(2.0) == r.quantile(1.0));      // clamped

  // since(): only what came after the earlier snapshot.
  const HistogramSnapshot before = r;
  page->record(Hist::request_reply, 5'000'000);
  page->record(Hist::request_reply, 7);
  const HistogramSnapshot d = v.histograms()[0].since(before);
  CHECK(d.count == 2);
  CHECK(d.total() == 2);
  CHECK(d.sum_ns == 5'000'007);
  CHECK(d.quantile(0.5) == 7);
  CHECK(d.max_ns == 5'000'000);
  CHECK(d.quantile(1.0) == 5'000'000);
  CHECK(v.histograms()[0].since(v.histograms()[0]).total() == 0);
}
