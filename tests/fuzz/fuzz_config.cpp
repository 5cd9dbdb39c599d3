// Fuzz target: bus::config::parse (busd.toml, the one text busd reads from an operator).
// Properties: no crash, UB or escaping exception on any bytes; a refusal is InvalidArgument with
// one line that starts with the source name; an accepted Config holds every documented range,
// renders (render()) to a document that parses back to the same Config, and has no reload diff
// against itself.
#include <cstdint>
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

  const std::string doc = render(*c);
  auto back = parse(doc, "rendered.toml");
  if (!back) std::fprintf(stderr, "%s\n", back.error().detail().c_str());
  FUZZ_CHECK(back.has_value());
  FUZZ_CHECK(*back == *c);
  std::vector<std::string> restart;
  FUZZ_CHECK(reloadable_diff(*c, *back, &restart).empty() && restart.empty());
  return 0;
}
