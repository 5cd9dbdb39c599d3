// Fuzz target: bus::config::parse (busd.toml, the one text busd reads from an operator).
// Properties: no crash, UB or escaping exception on any bytes; a refusal is InvalidArgument with
// one line that starts with the source name; an accepted Config holds every documented range
// and cross-table rule (dpdk links: their port, [dpdk] eal, one link per (port, local/peer)),
// renders (render()) to a document that parses back to the same Config, and has no reload diff
// against itself.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "fuzz_check.hpp"
#include "shm/layout.hpp"
#include "shm/wait.hpp"

using namespace bus::config;
using bus::Errc;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);  // exactly sized for ASan
  auto c = parse(text, "fuzz.toml");
  if (!c) {
    const std::string& line = c.error().detail();
    FUZZ_CHECK(c.error().code() == Errc::InvalidArgument);
    FUZZ_CHECK(line.starts_with("fuzz.toml") && line.size() > sizeof "fuzz.toml");
    FUZZ_CHECK(line.find('\n') == std::string::npos && line.find('\r') == std::string::npos);
    return 0;
  }
  const Limits& l = c->limits;
  FUZZ_CHECK(c->socket_mode <= 0777);
  FUZZ_CHECK(c->heartbeat_interval_ms >= 100 && c->heartbeat_misses >= 1);
  FUZZ_CHECK(c->log_level == "error" || c->log_level == "warn" || c->log_level == "info" ||
             c->log_level == "debug");
  FUZZ_CHECK(bus::shm::parse_wait_strategy(c->wait).has_value());
  FUZZ_CHECK(l.max_agents >= 1 && l.max_subscriptions_per_agent >= 1 &&
             l.max_pending_requests_per_agent >= 1);
  FUZZ_CHECK(l.max_message_size >= 1024 && l.max_message_size <= (64u << 20));
  FUZZ_CHECK((l.ring_capacity & (l.ring_capacity - 1)) == 0);
  FUZZ_CHECK(l.ring_capacity >= bus::shm::capacity_for(l.max_message_size));
  for (const AclRule& r : c->acl) {
    FUZZ_CHECK(!r.name.empty() && !(r.publish.empty() && r.subscribe.empty()));
    for (const auto* list : {&r.publish, &r.subscribe}) {
      for (const std::string& p : *list) FUZZ_CHECK(!p.empty());
    }
  }
  // Links: tcp or dpdk; a dpdk link names a port of [dpdk], which has an eal then, and its
  // (port, local) and (port, peer) are its own.
  bool dpdk_link = false;
  for (size_t i = 0; i < c->links.size(); ++i) {
    const LinkConfig& k = c->links[i];
    FUZZ_CHECK(k.kind == "tcp" || k.kind == "dpdk");
    FUZZ_CHECK(!k.peer.empty());
    if (k.kind == "tcp") {
      FUZZ_CHECK(k.port.empty() && k.local.empty() && k.peer_mac.empty() && k.window == 256 &&
                 k.rto_min_us == 1000);
      continue;
    }
    dpdk_link = true;
    FUZZ_CHECK(!k.local.empty() && (k.peer_mac.empty() || k.peer_mac.size() == 17));
    FUZZ_CHECK(k.window >= 16 && k.window <= 4096 && k.rto_min_us >= 50 &&
               k.rto_min_us <= 1'000'000);
    bool named = false;
    for (const DpdkPort& p : c->dpdk.ports) named = named || p.name == k.port;
    FUZZ_CHECK(named);
    for (size_t j = 0; j < i; ++j) {
      const LinkConfig& o = c->links[j];
      if (o.kind != "dpdk" || o.port != k.port) continue;
      FUZZ_CHECK(o.local != k.local && o.peer != k.peer);  // (their spellings differ at least)
    }
  }
  FUZZ_CHECK(!dpdk_link || !c->dpdk.eal.empty());
  FUZZ_CHECK(c->dpdk.eal.size() <= 64);
  for (const std::string& a : c->dpdk.eal) FUZZ_CHECK(!a.empty());
  for (size_t i = 0; i < c->dpdk.ports.size(); ++i) {
    const DpdkPort& p = c->dpdk.ports[i];
    FUZZ_CHECK(!p.name.empty() && p.name.size() <= 63);
    for (size_t j = 0; j < i; ++j) FUZZ_CHECK(c->dpdk.ports[j].name != p.name);
    FUZZ_CHECK(p.cpu >= -1 && p.cpu <= 1023 && (p.idle == "busy" || p.idle == "adaptive"));
    FUZZ_CHECK(p.spin_us <= 1'000'000 && p.sleep_max_us >= 1 && p.sleep_max_us <= 1'000'000);
    FUZZ_CHECK(p.mbufs >= 1023 && p.mbufs <= 1'048'575 && p.rx_desc >= 64 &&
               p.rx_desc <= 16384 && p.tx_desc >= 64 && p.tx_desc <= 16384);
    FUZZ_CHECK(p.mtu >= 576 && p.mtu <= 9000 && (p.mac.empty() || p.mac.size() == 17));
    FUZZ_CHECK(p.impair_loss <= 1000 && p.impair_dup <= 1000 && p.impair_reorder <= 1000 &&
               p.impair_corrupt <= 1000 && p.impair_seed <= uint64_t{INT64_MAX});
  }

  const std::string doc = render(*c);
  auto back = parse(doc, "rendered.toml");
  if (!back) std::fprintf(stderr, "%s\n", back.error().detail().c_str());
  FUZZ_CHECK(back.has_value());
  FUZZ_CHECK(*back == *c);
  std::vector<std::string> restart;
  FUZZ_CHECK(reloadable_diff(*c, *back, &restart).empty() && restart.empty());
  return 0;
}
