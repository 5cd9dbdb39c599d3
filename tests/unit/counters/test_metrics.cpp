// busd's Prometheus exposition (bus/daemon/metrics.hpp) over a counters page written by the
// real writer: every global as its GlobalInfo says, per-agent/pattern/lane/peer series with
// their labels, escaping (quote, backslash, newline, invalid UTF-8), the overflow pattern, a
// closed lane, an RTT not measured yet, a stalled loop; and the HTTP answers to request heads.
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <string_view>

#include "bus/clock.hpp"
#include "counters/page.hpp"
#include "daemon/metrics.hpp"
#include "temp_dir.hpp"

using namespace bus;
using namespace bus::counters;
using bus::test::TempDir;
namespace metrics = bus::daemon::metrics;

namespace {

CountersView must_open(const std::string& path) {
  auto v = open_counters(path);
  INFO((v ? std::string() : v.error().message()));
  REQUIRE(v);
  return std::move(*v);
}

bool has_line(const std::string& text, std::string_view line) {
  std::string l(line);
  l += '\n';
  return text.starts_with(l) || text.find("\n" + l) != std::string::npos;
}

std::string escaped(std::string_view v) {
  std::string out;
  metrics::append_label_value(out, v);
  return out;
}

}  // namespace

TEST_CASE("label values: backslash, quote and newline escaped, bad UTF-8 replaced", "[metrics]") {
  CHECK(escaped("plain.name-1") == "plain.name-1");
  CHECK(escaped("a\"b") == "a\\\"b");
  CHECK(escaped("a\\b") == "a\\\\b");
  CHECK(escaped("a\nb") == "a\\nb");
  CHECK(escaped("tab\tstays") == "tab\tstays");
  CHECK(escaped("caf\xC3\xA9 \xF0\x9F\x98\x80") == "caf\xC3\xA9 \xF0\x9F\x98\x80");
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(escaped("x\xFFy") == "x" + fffd + "y");
  CHECK(escaped("\xC0\xAF") == fffd + fffd);                      // overlong '/'
  CHECK(escaped("\xED\xA0\x80") == fffd + fffd + fffd);           // a surrogate
  CHECK(escaped("\xE2\x82") == fffd + fffd);                      // cut short
  CHECK(escaped("\xF4\x90\x80\x80") == fffd + fffd + fffd + fffd);  // above U+10FFFF
}

TEST_CASE("every global is one family with HELP and TYPE, as GlobalInfo says", "[metrics]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto page = CountersPage::create(path, 4, 4, 2, 0600, 2);
  REQUIRE(page);
  page->add(Global::messages_in, 42);
  page->set(Global::agents_connected, 3);
  page->add(Global::agents_total, 9);
  const CountersView v = must_open(path);
  const std::string text = metrics::render(v, clock::real_ns());

  CHECK(has_line(text, "busd_up 1"));
  CHECK(has_line(text, "busd_messages_in_total 42"));
  CHECK(has_line(text, "busd_agents_connected 3"));
  CHECK(has_line(text, "busd_agents_total 9"));  // _total once, not twice
  CHECK(has_line(text, "# TYPE busd_agents_connected gauge"));
  CHECK(has_line(text, "# TYPE busd_slow_waiting_bytes gauge"));
  CHECK(has_line(text, "# TYPE busd_messages_in_total counter"));
  CHECK(has_line(text, "# HELP busd_messages_in_total messages accepted from agents"));
  CHECK(text.find("busd_info{version=\"") != std::string::npos);
  for (const GlobalInfo& g : kGlobals) {
    std::string name = "busd_";
    name += g.name;
    if (!g.gauge && !g.name.ends_with("_total")) name += "_total";
    INFO(name);
    CHECK(has_line(text, "# TYPE " + name + (g.gauge ? " gauge" : " counter")));
  }

  // Structure: every family once, HELP then TYPE, counters end in _total, gauges do not; the
  // per-table families are there with no sample.
  std::set<std::string> families;
  size_t pos = 0;
  std::string last_help;
  while (pos < text.size()) {
    const size_t eol = text.find('\n', pos);
    REQUIRE(eol != std::string::npos);
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.starts_with("# HELP ")) {
      last_help = line.substr(7, line.find(' ', 7) - 7);
      CHECK(families.insert(last_help).second);
    } else if (line.starts_with("# TYPE ")) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      CHECK(name == last_help);
      CHECK(name.starts_with("busd_"));
      CHECK(line.ends_with(" counter") == name.ends_with("_total"));
    }
  }
  for (const char* f : {"busd_agent_messages_in_total", "busd_pattern_messages_total", "busd_lane_messages_total",
                        "busd_lane_up", "busd_peer_up", "busd_peer_rtt_seconds", "busd_heartbeat_age_seconds",
                        "busd_start_time_seconds"}) {
    INFO(f);
    CHECK(families.count(f) == 1);
  }

  // A loop that stopped storing its heartbeat: busd_up 0.
  const std::string later = metrics::render(v, clock::real_ns() + 10 * kStaleAfterNs);
  CHECK(has_line(later, "busd_up 0"));
}

TEST_CASE("latency histograms as Prometheus histograms: cumulative, exact bounds, +Inf = count", "[metrics]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto page = CountersPage::create(path, 2, 2, 0, 0600, 1);
  REQUIRE(page);
  for (uint64_t ns : {500ull, 1023ull, 1024ull, 1500ull, 3'000'000'000ull}) page->record(Hist::request_reply, ns);
  const CountersView v = must_open(path);
  const std::string text = metrics::render(v, clock::real_ns());
  CHECK(has_line(text, "# TYPE busd_request_reply_seconds histogram"));
  CHECK(has_line(text, "# TYPE busd_link_rtt_seconds histogram"));
  CHECK(has_line(text, "# HELP busd_link_rtt_seconds busd-to-busd round trip of heartbeat echoes"));
  // Bounds are 2^k - 1 ns: 1023 ns is in the first, 1024 ns not.
  CHECK(has_line(text, "busd_request_reply_seconds_bucket{le=\"0.000001023\"} 2"));
  CHECK(has_line(text, "busd_request_reply_seconds_bucket{le=\"0.000002047\"} 4"));
  CHECK(has_line(text, "busd_request_reply_seconds_bucket{le=\"2.147483647\"} 4"));
  CHECK(has_line(text, "busd_request_reply_seconds_bucket{le=\"4.294967295\"} 5"));
  CHECK(has_line(text, "busd_request_reply_seconds_bucket{le=\"34.359738367\"} 5"));
  CHECK(has_line(text, "busd_request_reply_seconds_bucket{le=\"+Inf\"} 5"));
  CHECK(has_line(text, "busd_request_reply_seconds_count 5"));
  CHECK(has_line(text, "busd_request_reply_seconds_sum 3.000004047"));
  CHECK(has_line(text, "busd_link_rtt_seconds_bucket{le=\"+Inf\"} 0"));
  CHECK(has_line(text, "busd_link_rtt_seconds_count 0"));
  // Cumulative: never decreasing along the bounds.
  uint64_t last = 0;
  size_t at = 0, seen = 0;
  const std::string prefix = "busd_request_reply_seconds_bucket{le=\"";
  while ((at = text.find(prefix, at)) != std::string::npos) {
    const size_t sp = text.find(' ', at);
    const uint64_t n = std::stoull(text.substr(sp + 1));
    CHECK(n >= last);
    last = n;
    at = sp;
    ++seen;
  }
  CHECK(seen == 27);  // 26 bounds and +Inf
}

TEST_CASE("agents, patterns, lanes and peers with their labels", "[metrics]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto page = CountersPage::create(path, 4, 2, 2, 0600, 3);
  REQUIRE(page);

  AgentCounters* a = page->agent_open(7, "we\"ird\\na\nme", 100, 0, 0);
  AgentCounters* b = page->agent_open(9, "worker", 101, 0, 0);
  REQUIRE((a != nullptr && b != nullptr));
  message_in(*a, 100);
  message_in(*a, 50);
  bump(a->drops_acl, 2);
  bump(b->subscriptions, 3);
  b->outbound_depth.store(4096);
  b->slow_waiting_bytes.store(512);
  page->agent_dead(b);

  PatternCounters* p = page->pattern_open("svc.>");
  (void)page->pattern_open("svc.>");
  delivered(*p, 64);
  (void)page->pattern_open("x.one");
  (void)page->pattern_open("x.two");  // the table holds 2: this one goes to the overflow slot

  LaneCounters* l = page->lane_open(3, 7, "we\"ird\\na\nme", 9, "worker");
  REQUIRE(l != nullptr);
  page->lane_set(l, 0, 10, 1000, 1);
  page->lane_set(l, 1, 20, 2000, 0);
  LaneCounters* closed = page->lane_open(4, 7, "a", 9, "b");
  page->lane_close(closed);

  LinkCounters* k = page->link_open(LinkKind::Tcp, "", "10.0.0.2:7400");
  REQUIRE(k != nullptr);
  page->link_rename(k, "beta");
  k->up.store(1);
  bump(k->messages_out, 5);
  bump(k->retransmits, 4);
  k->rtt_ns.store(1'500'000);
  LinkCounters* k2 = page->link_open(LinkKind::Dpdk, "gamma", "10.0.0.3:9000");
  REQUIRE(k2 != nullptr);
  LinkCounters* k3 = page->link_open(LinkKind::Rdma, "delta", "10.0.0.4:7471");
  REQUIRE(k3 != nullptr);
  bump(k3->doorbells, 40);
  bump(k3->credit_stalls, 3);
  bump(k3->queue_stalls, 2);
  bump(k3->completion_errors, 1);

  const CountersView v = must_open(path);
  const std::string text = metrics::render(v, clock::real_ns());
  INFO(text);
  const std::string weird = "agent=\"we\\\"ird\\\\na\\nme\",id=\"7\"";
  CHECK(has_line(text, "busd_agent_messages_in_total{" + weird + "} 2"));
  CHECK(has_line(text, "busd_agent_bytes_in_total{" + weird + "} 150"));
  CHECK(has_line(text, "busd_agent_drops_total{" + weird + ",cause=\"acl\"} 2"));
  CHECK(has_line(text, "busd_agent_drops_total{" + weird + ",cause=\"verify\"} 0"));
  CHECK(has_line(text, "busd_agent_dead{" + weird + "} 0"));
  CHECK(has_line(text, "busd_agent_dead{agent=\"worker\",id=\"9\"} 1"));
  CHECK(has_line(text, "busd_agent_subscriptions{agent=\"worker\",id=\"9\"} 3"));
  CHECK(has_line(text, "busd_agent_outbound_queued_bytes{agent=\"worker\",id=\"9\"} 4096"));
  CHECK(has_line(text, "busd_agent_inbound_queued_bytes{agent=\"worker\",id=\"9\"} 0"));
  CHECK(has_line(text, "busd_agent_slow_waiting_bytes{agent=\"worker\",id=\"9\"} 512"));

  CHECK(has_line(text, "busd_pattern_subscribers{pattern=\"svc.>\"} 2"));
  CHECK(has_line(text, "busd_pattern_messages_total{pattern=\"svc.>\"} 1"));
  CHECK(has_line(text, "busd_pattern_bytes_total{pattern=\"svc.>\"} 64"));
  CHECK(has_line(text, "busd_pattern_subscribers{pattern=\"(other patterns)\"} 1"));

  const std::string lane_a = "lane=\"3\",direction=\"a_to_b\",from=\"we\\\"ird\\\\na\\nme\",to=\"worker\"";
  const std::string lane_b = "lane=\"3\",direction=\"b_to_a\",from=\"worker\",to=\"we\\\"ird\\\\na\\nme\"";
  CHECK(has_line(text, "busd_lane_messages_total{" + lane_a + "} 10"));
  CHECK(has_line(text, "busd_lane_bytes_total{" + lane_b + "} 2000"));
  CHECK(has_line(text, "busd_lane_would_block_total{" + lane_a + "} 1"));
  CHECK(has_line(text, "busd_lane_up{lane=\"3\",agent_a=\"we\\\"ird\\\\na\\nme\",agent_b=\"worker\"} 1"));
  CHECK(has_line(text, "busd_lane_up{lane=\"4\",agent_a=\"a\",agent_b=\"b\"} 0"));

  const std::string beta = "node=\"beta\",address=\"10.0.0.2:7400\",kind=\"tcp\"";
  const std::string gamma = "node=\"gamma\",address=\"10.0.0.3:9000\",kind=\"dpdk\"";
  CHECK(has_line(text, "busd_peer_up{" + beta + "} 1"));
  CHECK(has_line(text, "busd_peer_up{" + gamma + "} 0"));
  CHECK(has_line(text, "busd_peer_messages_out_total{" + beta + "} 5"));
  CHECK(has_line(text, "busd_peer_retransmits_total{" + beta + "} 4"));
  CHECK(has_line(text, "busd_peer_drops_total{" + beta + ",cause=\"held_full\"} 0"));
  CHECK(has_line(text, "busd_peer_rtt_seconds{" + beta + "} 0.001500000"));
  CHECK(text.find("busd_peer_rtt_seconds{" + gamma) == std::string::npos);  // not measured yet
  // Queue-pair series: the RDMA peer only.
  const std::string delta = "node=\"delta\",address=\"10.0.0.4:7471\",kind=\"rdma\"";
  CHECK(has_line(text, "busd_peer_rdma_doorbells_total{" + delta + "} 40"));
  CHECK(has_line(text, "busd_peer_rdma_stalls_total{" + delta + ",cause=\"credit\"} 3"));
  CHECK(has_line(text, "busd_peer_rdma_stalls_total{" + delta + ",cause=\"queue\"} 2"));
  CHECK(has_line(text, "busd_peer_rdma_completion_errors_total{" + delta + "} 1"));
  CHECK(text.find("busd_peer_rdma_doorbells_total{" + beta) == std::string::npos);
  CHECK(has_line(text, "busd_peer_up{" + delta + "} 0"));
}

TEST_CASE("HTTP: GET and HEAD of /metrics, 404, 405, 400", "[metrics]") {
  TempDir dir;
  const std::string path = dir.file("busd.counters");
  auto page = CountersPage::create(path, 2, 2, 0, 0600, 0);
  REQUIRE(page);
  const CountersView v = must_open(path);
  const uint64_t now = clock::real_ns();

  const auto get = metrics::answer("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", v, now);
  CHECK(get.status == 200);
  CHECK(get.bytes.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(get.bytes.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos);
  CHECK(get.bytes.find("\r\nConnection: close\r\n") != std::string::npos);
  const size_t body_at = get.bytes.find("\r\n\r\n") + 4;
  const std::string body = get.bytes.substr(body_at);
  CHECK(body.starts_with("# HELP busd_up "));
  CHECK(get.bytes.find("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n") != std::string::npos);

  const auto head = metrics::answer("HEAD /metrics HTTP/1.1\r\n\r\n", v, now);
  CHECK(head.status == 200);
  CHECK(head.bytes.ends_with("\r\n\r\n"));
  CHECK(head.bytes.find("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n") != std::string::npos);

  CHECK(metrics::answer("GET /metrics?name[]=x HTTP/1.0\n\n", v, now).status == 200);
  CHECK(metrics::answer("GET / HTTP/1.1\r\n\r\n", v, now).status == 404);
  CHECK(metrics::answer("GET /metricsx HTTP/1.1\r\n\r\n", v, now).status == 404);
  CHECK(metrics::answer("POST /nope HTTP/1.1\r\n\r\n", v, now).status == 404);
  const auto post = metrics::answer("POST /metrics HTTP/1.1\r\n\r\n", v, now);
  CHECK(post.status == 405);
  CHECK(post.bytes.find("\r\nAllow: GET, HEAD\r\n") != std::string::npos);
  for (const char* bad : {"\r\n\r\n", "GET\r\n\r\n", "GET /metrics\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
                          "get /metrics HTTP/1.1\r\n\r\n", "GET /metrics SPDY/3\r\n\r\n",
                          "GET /metrics HTTP/1.1 extra\r\n\r\n"}) {
    INFO(bad);
    CHECK(metrics::answer(bad, v, now).status == 400);
  }
  const auto e = metrics::error_answer(431, "too big");
  CHECK(e.bytes.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
  CHECK(e.bytes.ends_with("\r\n\r\ntoo big\n"));
}
