// A stand-in busd for the busctl test (tests/integration/busctl_counters.py): writes a counters
// page with known numbers, prints "ready", keeps the heartbeat going until stdin closes, then
// stops cleanly (the page is removed). With --leave it exits at once without cleaning up, the
// heartbeat a minute old: the page of a busd that died. --crash: the same with a fresh heartbeat
// (busd died a moment ago: the pid tells).
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "bus/clock.hpp"
#include "counters/page.hpp"

using namespace bus;
using namespace bus::counters;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: counters_fixture PATH [--leave | --crash]\n");
    return 2;
  }
  const bool crash = argc > 2 && std::strcmp(argv[2], "--crash") == 0;
  const bool leave = crash || (argc > 2 && std::strcmp(argv[2], "--leave") == 0);
  auto page = CountersPage::create(argv[1], 8, 16, 4, 0644, 2);
  if (!page) {
    std::fprintf(stderr, "counters_fixture: %s\n", page.error().message().c_str());
    return 1;
  }
  // Global i holds 1000 * (i + 1) + i; two get values that show units.
  for (size_t i = 0; i < kGlobalCount; ++i) page->set(static_cast<Global>(i), 1000 * (i + 1) + i);
  page->set(Global::messages_in, 1'234'567);
  page->set(Global::bytes_in, 987'654'321);

  AgentCounters* a = page->agent_open(7, "planner", ::getpid(), ::getuid(), ::getgid());
  AgentCounters* b = page->agent_open(9, "worker \"q\" caf\xC3\xA9", 4242, 1001, 1002);
  AgentCounters* gone = page->agent_open(11, "gone", 1, 0, 0);
  if (a == nullptr || b == nullptr || gone == nullptr) return 1;
  page->agent_close(gone);
  a->messages_in.store(100);
  a->messages_out.store(200);
  a->bytes_in.store(3000);
  a->bytes_out.store(4000);
  a->drops_slow_consumer.store(1);
  a->drops_acl.store(2);
  a->drops_too_large.store(3);
  a->drops_verify.store(4);
  a->subscriptions.store(5);
  a->pending_requests.store(6);
  a->inbound_high_water.store(7000);
  a->outbound_high_water.store(8000);
  message_in(*b, 10);
  page->agent_dead(b);
  (void)page->pattern_open("svc.>");
  (void)page->pattern_open("svc.>");
  // Lanes: 3 (7 -> 9) open, 4 (7 -> 11) closed.
  LaneCounters* l = page->lane_open(3, 7, "planner", 9, "worker \"q\" caf\xC3\xA9");
  LaneCounters* closed = page->lane_open(4, 7, "planner", 11, "gone");
  if (l == nullptr || closed == nullptr) return 1;
  page->lane_set(l, 0, 1500, 2'000'000, 2);
  page->lane_set(l, 1, 1499, 64'000, 0);
  page->lane_set(closed, 0, 5, 50, 0);
  page->lane_close(closed);
  // Links: beta over TCP (up), delta over RDMA (down) with its queue-pair figures.
  LinkCounters* beta = page->link_open(LinkKind::Tcp, "beta", "10.0.0.2:7400");
  LinkCounters* delta = page->link_open(LinkKind::Rdma, "delta", "10.0.0.4:7471");
  if (beta == nullptr || delta == nullptr) return 1;
  beta->up.store(1);
  beta->messages_out.store(12);
  beta->rtt_ns.store(85'000);
  delta->messages_out.store(3000);
  delta->doorbells.store(250);
  delta->credit_stalls.store(7);
  delta->queue_stalls.store(2);
  delta->completion_errors.store(1);
  // Latency: request_reply 1..10 µs, one each; link_rtt one echo of 85 µs.
  for (uint64_t us = 1; us <= 10; ++us) page->record(Hist::request_reply, us * 1000);
  page->record(Hist::link_rtt, 85'000);

  if (leave) {
    page->heartbeat(clock::real_ns() - (crash ? 0 : 60'000'000'000ull));
    std::printf("ready\n");
    std::fflush(stdout);
    ::_exit(0);  // no destructor: the page stays, as after a crash
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) {
    page->heartbeat(clock::real_ns());
    pollfd p{STDIN_FILENO, POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      char buf[64];
      if (::read(STDIN_FILENO, buf, sizeof buf) <= 0) break;  // EOF: stop cleanly
    }
  }
  return 0;
}
