#include "commands.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <optional>
#include <string_view>

#include "bus/address.hpp"
#include "bus/clock.hpp"
#include "bus/counters.hpp"
#include "format.hpp"
#include "page_access.hpp"

namespace bus::ctl {
namespace {

using counters::CountersView;
using counters::Global;

// The page to read: --counters, else beside the first socket candidate whose page exists.
struct Located {
  std::string path;                // empty: none found
  std::vector<std::string> tried;  // for the message
};

bool remote(std::string_view address) {
  return address.starts_with("tcp://") || address.starts_with("tls://");
}

Located locate(const Options& o) {
  if (!o.counters.empty()) return {o.counters, {o.counters}};
  Located l;
  const std::vector<std::string> sockets =
      o.socket.empty() ? default_socket_candidates() : std::vector<std::string>{o.socket};
  for (const auto& sock : sockets) {
    std::string p = counters_path_for_socket(sock);
    struct stat st {};
    const bool there = ::stat(p.c_str(), &st) == 0 || errno != ENOENT;  // EACCES: say so on open
    l.tried.push_back(p);
    if (there) {
      l.path = std::move(p);
      break;
    }
  }
  return l;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

size_t active_patterns(const CountersView& v) {
  size_t n = 0;
  for (const auto& p : v.patterns()) n += p.overflow ? 0 : 1;
  return n;
}

// Open lanes (and closed ones with --all), by lane id.
std::vector<counters::LaneSnapshot> lanes_to_show(const CountersView& v, bool all) {
  auto lanes = v.lanes();
  if (!all) std::erase_if(lanes, [](const auto& l) { return !l.open; });
  std::sort(lanes.begin(), lanes.end(), [](const auto& a, const auto& b) { return a.lane_id < b.lane_id; });
  return lanes;
}

std::string lane_json(const counters::LaneSnapshot& l) {
  std::string agents = "[";
  for (size_t i = 0; i < 2; ++i) {
    if (i > 0) agents.append(", ");
    agents.append(JsonObject().num("id", uint64_t{l.agent_id[i]}).str("name", l.name[i]).done());
  }
  agents.append("]");
  // Direction i: from agents[i] to the other.
  auto direction = [&](size_t i) {
    JsonObject d;
    d.num("messages", l.messages[i]).num("bytes", l.bytes[i]).num("would_block", l.would_block[i]);
    return d.done();
  };
  JsonObject j;
  j.num("id", uint64_t{l.lane_id})
      .str("state", l.open ? "open" : "closed")
      .num("slot", uint64_t{l.slot})
      .num("generation", l.generation)
      .num("opened_ns", l.opened_ns)
      .raw("agents", agents)
      .raw("a_to_b", direction(0))
      .raw("b_to_a", direction(1));
  return j.done();
}


// Active patterns by pattern text, the overflow slot ("other patterns") last.
std::vector<counters::PatternSnapshot> patterns_to_show(const CountersView& v) {
  auto p = v.patterns();
  std::stable_sort(p.begin(), p.end(), [](const auto& a, const auto& b) {
    if (a.overflow != b.overflow) return b.overflow;
    return a.pattern < b.pattern;
  });
  return p;
}

// Known peers (and forgotten ones with --all), by node then slot.
std::vector<counters::LinkSnapshot> links_to_show(const CountersView& v, bool all) {
  auto links = v.links();
  if (!all) std::erase_if(links, [](const auto& k) { return !k.open; });
  std::stable_sort(links.begin(), links.end(), [](const auto& a, const auto& b) {
    if (a.node != b.node) return a.node < b.node;
    return a.slot < b.slot;
  });
  return links;
}

std::string link_json(const counters::LinkSnapshot& k) {
  JsonObject drops;
  drops.num("held_full", k.drops_held_full).num("acl", k.drops_acl).num("total", k.drops_held_full + k.drops_acl);
  JsonObject j;
  j.str("node", k.node)
      .str("kind", counters::to_string(k.kind))
      .str("address", k.address)
      .str("state", link_state(k))
      .boolean("up", k.open && k.up)
      .num("slot", uint64_t{k.slot})
      .num("generation", k.generation)
      .num("opened_ns", k.opened_ns)
      .num("messages_in", k.messages_in)
      .num("messages_out", k.messages_out)
      .num("bytes_in", k.bytes_in)
      .num("bytes_out", k.bytes_out)
      .raw("drops", drops.done())
      .num("held_bytes", k.held_bytes)
      .num("held_high_water", k.held_high_water)
      .num("connects", k.connects)
      .num("disconnects", k.disconnects)
      .num("rtt_ns", k.rtt_ns)
      .num("retransmits", k.retransmits)
      .num("naks", k.naks)
      .num("datagrams_corrupt", k.datagrams_corrupt)
      .num("datagrams_dropped", k.datagrams_dropped)
      .num("interests", k.interests)
      .num("remote_agents", k.remote_agents);
  if (k.kind == counters::LinkKind::Rdma) {
    JsonObject r;
    r.num("doorbells", k.doorbells)
        .num("credit_stalls", k.credit_stalls)
        .num("queue_stalls", k.queue_stalls)
        .num("completion_errors", k.completion_errors);
    j.raw("rdma", r.done());
  }
  return j.done();
}

}  // namespace

std::string link_state(const counters::LinkSnapshot& k) {
  if (!k.open) return "closed";
  return k.up ? "up" : "down";
}

JsonObject& agent_queues_json(JsonObject& j, const counters::AgentSnapshot& a) {
  return j.num("pending_requests", a.pending_requests)
      .num("inbound_queued", a.inbound_depth)
      .num("outbound_queued", a.outbound_depth)
      .num("slow_waiting_bytes", a.slow_waiting_bytes)
      .num("inbound_high_water", a.inbound_high_water)
      .num("outbound_high_water", a.outbound_high_water);
}

JsonObject& histogram_json(JsonObject& j, const counters::HistogramSnapshot& h, bool buckets) {
  j.num("count", h.count).num("mean_ns", h.mean_ns());
  for (const auto& [label, q] : kQuantiles) {
    std::string key(label);
    std::erase(key, '.');  // p99.9 -> p999_ns
    j.num(key + "_ns", h.quantile(q));
  }
  j.num("max_ns", h.max_ns);
  if (buckets) {
    std::string b = "[";
    for (uint32_t i = 0; i < counters::kHistBucketsUsed; ++i) {
      if (h.buckets[i] == 0) continue;
      if (b.size() > 1) b += ",";
      b.append("[").append(std::to_string(counters::hist_bucket_low(i))).append(",");
      b.append(std::to_string(counters::hist_bucket_high(i))).append(",");
      b.append(std::to_string(h.buckets[i])).append("]");
    }
    j.raw("buckets", b + "]");
  }
  return j;
}

std::vector<std::string> histogram_row(const counters::HistogramSnapshot& h) {
  std::vector<std::string> row{h.name, human_count(h.count)};
  for (const auto& [label, q] : kQuantiles) row.push_back(human_latency(h.quantile(q)));
  row.push_back(human_latency(h.max_ns));
  row.push_back(human_latency(h.mean_ns()));
  return row;
}

std::optional<CountersView> open_page(const Options& o, std::string& path) {
  if (o.counters.empty() && remote(o.socket)) {
    std::fprintf(stderr,
                 "busctl: %s is a remote busd: its counters page is on its host "
                 "(run busctl there, or give --counters PATH)\n",
                 o.socket.c_str());
    return std::nullopt;
  }
  Located l = locate(o);
  if (l.path.empty()) {
    std::fprintf(stderr,
                 "busctl: busd is not running: no counters page at %s "
                 "(set --counters PATH or %s)\n",
                 joined(l.tried).c_str(), std::string(kSocketEnv).c_str());
    return std::nullopt;
  }
  auto v = counters::open_counters(l.path);
  if (!v) {
    if (v.error().code() == Errc::NotFound) {
      std::fprintf(stderr, "busctl: busd is not running: no counters page at %s\n", l.path.c_str());
    } else {
      std::fprintf(stderr, "busctl: %s\n", v.error().message().c_str());
    }
    return std::nullopt;
  }
  path = std::move(l.path);
  return std::move(*v);
}

Liveness liveness(const CountersView& v) {
  Liveness l;
  l.now = clock::real_ns();
  l.heartbeat = v.heartbeat_ns();
  l.pid_alive = counters::process_alive(v.info().pid);
  // A fresh heartbeat from a pid that is gone: busd died in the last few seconds.
  l.live = v.live(l.now) && l.pid_alive;
  l.heartbeat_age = l.heartbeat != 0 && l.now > l.heartbeat ? l.now - l.heartbeat : 0;
  const uint64_t end = l.live ? l.now : l.heartbeat;
  l.uptime = end > v.info().start_time_ns ? end - v.info().start_time_ns : 0;
  return l;
}

std::string status_line(const CountersView& v, const Liveness& l) {
  std::string s;
  if (l.live) {
    s = "live (heartbeat " + human_duration(l.heartbeat_age) + " ago)";
  } else if (l.heartbeat == 0) {
    s = "NOT RUNNING (stopped)";
  } else {
    s = "NOT RUNNING (last heartbeat " + human_duration(l.heartbeat_age) + " ago, pid " +
        std::to_string(v.info().pid) + (l.pid_alive ? " exists" : " gone") + ")";
  }
  return s;
}

int finish(const CountersView& v, const Liveness& l, const std::string& path) {
  if (l.live) return kExitOk;
  std::fprintf(stderr, "busctl: busd (pid %d) is not running; %s holds its last counters\n",
               v.info().pid, path.c_str());
  return kExitNotRunning;
}

int run_status(const Options& o) {
  std::string path;
  auto v = open_page(o, path);
  if (!v) return kExitNotRunning;
  const auto g = v->globals();
  const Liveness l = liveness(*v);
  const auto& info = v->info();
  const size_t agents = v->agents().size();
  const size_t patterns = active_patterns(*v);
  const size_t lanes = lanes_to_show(*v, false).size();
  const auto all_links = v->links();
  const size_t links = static_cast<size_t>(
      std::count_if(all_links.begin(), all_links.end(), [](const auto& k) { return k.open; }));
  const size_t links_up = static_cast<size_t>(
      std::count_if(all_links.begin(), all_links.end(), [](const auto& k) { return k.open && k.up; }));

  if (o.json) {
    JsonObject c;
    for (size_t i = 0; i < counters::kGlobalCount; ++i) c.num(counters::kGlobals[i].name, g.values[i]);
    JsonObject j;
    j.str("page", path)
        .boolean("live", l.live)
        .num("pid", int64_t{info.pid})
        .boolean("pid_alive", l.pid_alive)
        .str("busd_version", info.busd_version)
        .num("layout_version", uint64_t{info.layout_version})
        .num("start_time_ns", info.start_time_ns)
        .num("uptime_ns", l.uptime)
        .num("heartbeat_ns", l.heartbeat)
        .num("heartbeat_age_ns", l.heartbeat_age)
        .num("generation", v->generation())
        .num("max_agents", uint64_t{info.max_agents})
        .num("max_patterns", uint64_t{info.max_patterns})
        .num("max_lanes", uint64_t{info.max_lanes})
        .num("max_links", uint64_t{info.max_links})
        .num("agents_listed", uint64_t{agents})
        .num("patterns_listed", uint64_t{patterns})
        .num("lanes_listed", uint64_t{lanes})
        .num("links_listed", uint64_t{links})
        .num("links_listed_up", uint64_t{links_up})
        .raw("counters", c.done());
    JsonObject hj;
    for (const auto& h : v->histograms()) {
      JsonObject one;
      hj.raw(h.name, histogram_json(one, h, true).done());
    }
    j.raw("latency", hj.done());
    std::printf("%s\n", j.done().c_str());
    return finish(*v, l, path);
  }

  std::printf("busd %s  pid %d  up %s  %s\n", printable(info.busd_version).c_str(), info.pid,
              human_duration(l.uptime).c_str(), status_line(*v, l).c_str());
  std::printf("page %s  layout %u  agent slots %zu/%u  pattern slots %zu/%u  lane slots %zu/%u  "
              "link slots %zu/%u (%zu up)\n\n",
              printable(path).c_str(), info.layout_version, agents, info.max_agents, patterns,
              info.max_patterns, lanes, info.max_lanes, links, info.max_links, links_up);
  Table t({{"COUNTER", Table::Align::Left}, {"VALUE", Table::Align::Right}, {"", Table::Align::Left}});
  for (size_t i = 0; i < counters::kGlobalCount; ++i) {
    const auto& gi = counters::kGlobals[i];
    t.row({std::string(gi.name), gi.bytes ? human_bytes(g.values[i]) : human_count(g.values[i]),
           std::string(gi.help)});
  }
  std::fputs(t.render().c_str(), stdout);
  if (const auto hists = v->histograms(); !hists.empty()) {
    // Quantiles are bucket bounds: at most 25% above the true value.
    std::printf("\nLATENCY (since busd started; quantiles within 25%%)\n");
    Table lt({{"HISTOGRAM", Table::Align::Left}, {"COUNT", Table::Align::Right}, {"P50", Table::Align::Right},
              {"P90", Table::Align::Right}, {"P99", Table::Align::Right}, {"P99.9", Table::Align::Right},
              {"MAX", Table::Align::Right}, {"MEAN", Table::Align::Right}, {"", Table::Align::Left}});
    for (size_t i = 0; i < hists.size(); ++i) {
      auto row = histogram_row(hists[i]);
      row.emplace_back(i < counters::kHistCount ? counters::kHists[i].help : "");
      lt.row(row);
    }
    std::fputs(lt.render().c_str(), stdout);
  }
  return finish(*v, l, path);
}

int run_agents(const Options& o) {
  std::string path;
  auto v = open_page(o, path);
  if (!v) return kExitNotRunning;
  const auto agents = v->agents();
  const Liveness l = liveness(*v);

  if (o.json) {
    JsonArray list;
    for (const auto& a : agents) {
      JsonObject drops;
      drops.num("slow_consumer", a.drops_slow_consumer)
          .num("acl", a.drops_acl)
          .num("too_large", a.drops_too_large)
          .num("verify", a.drops_verify)
          .num("total", a.drops());
      JsonObject j;
      j.num("id", uint64_t{a.agent_id})
          .str("name", a.name)
          .str("state", a.state == counters::SlotState::Dead ? "dead" : "active")
          .num("pid", int64_t{a.pid})
          .num("uid", uint64_t{a.uid})
          .num("gid", uint64_t{a.gid})
          .num("slot", uint64_t{a.slot})
          .num("generation", a.generation)
          .num("connected_ns", a.opened_ns)
          .num("subscriptions", a.subscriptions)
          .num("messages_in", a.messages_in)
          .num("messages_out", a.messages_out)
          .num("bytes_in", a.bytes_in)
          .num("bytes_out", a.bytes_out)
          .raw("drops", drops.done());
      list.raw(agent_queues_json(j, a).done());
    }
    JsonObject j;
    j.str("page", path).boolean("live", l.live).num("pid", int64_t{v->info().pid}).raw("agents", list.done());
    std::printf("%s\n", j.done().c_str());
    return finish(*v, l, path);
  }

  std::printf("busd pid %d  %s  %zu agent%s\n", v->info().pid, status_line(*v, l).c_str(),
              agents.size(), agents.size() == 1 ? "" : "s");
  if (agents.empty()) return finish(*v, l, path);
  std::printf("\n");
  using A = Table::Align;
  Table t({{"ID", A::Right}, {"NAME", A::Left}, {"STATE", A::Left}, {"PID", A::Right},
           {"UID", A::Right}, {"SUBS", A::Right}, {"MSGS_IN", A::Right}, {"MSGS_OUT", A::Right},
           {"BYTES_IN", A::Right}, {"BYTES_OUT", A::Right}, {"DROPS", A::Right},
           {"PENDING", A::Right}, {"IN_HWM", A::Right}, {"OUT_HWM", A::Right}});
  for (const auto& a : agents) {
    t.row({std::to_string(a.agent_id), printable(a.name),
           a.state == counters::SlotState::Dead ? "dead" : "active", std::to_string(a.pid),
           std::to_string(a.uid), human_count(a.subscriptions), human_count(a.messages_in),
           human_count(a.messages_out), human_bytes(a.bytes_in), human_bytes(a.bytes_out),
           human_count(a.drops()), human_count(a.pending_requests), human_bytes(a.inbound_high_water),
           human_bytes(a.outbound_high_water)});
  }
  std::fputs(t.render().c_str(), stdout);
  return finish(*v, l, path);
}

int run_lanes(const Options& o) {
  std::string path;
  auto v = open_page(o, path);
  if (!v) return kExitNotRunning;
  const auto lanes = lanes_to_show(*v, o.all);
  const Liveness l = liveness(*v);
  const uint64_t left_out = v->globals()[Global::lane_table_full];

  if (o.json) {
    JsonArray list;
    for (const auto& lane : lanes) list.raw(lane_json(lane));
    JsonObject j;
    j.str("page", path)
        .boolean("live", l.live)
        .num("pid", int64_t{v->info().pid})
        .num("max_lanes", uint64_t{v->info().max_lanes})
        .num("lane_table_full", left_out)
        .raw("lanes", list.done());
    std::printf("%s\n", j.done().c_str());
    return finish(*v, l, path);
  }

  const auto open =
      static_cast<size_t>(std::count_if(lanes.begin(), lanes.end(), [](const auto& x) { return x.open; }));
  std::printf("busd pid %d  %s  %zu lane%s open", v->info().pid, status_line(*v, l).c_str(), open,
              open == 1 ? "" : "s");
  if (o.all) std::printf(", %zu closed", lanes.size() - open);
  if (left_out > 0) std::printf("  (%s left out: lane table full)", human_count(left_out).c_str());
  std::printf("\n");
  if (lanes.empty()) return finish(*v, l, path);
  std::printf("\n");
  using A = Table::Align;
  std::vector<Table::Column> columns{{"LANE", A::Right}, {"AGENTS", A::Left}};
  if (o.all) columns.push_back({"STATE", A::Left});
  for (const char* c : {"MSGS_AB", "BYTES_AB", "BLOCKED_AB", "MSGS_BA", "BYTES_BA", "BLOCKED_BA", "AGE"}) {
    columns.push_back({c, A::Right});
  }
  Table t(std::move(columns));
  for (const auto& lane : lanes) {
    auto agent = [&](size_t i) {
      return printable(lane.name[i]) + "(" + std::to_string(lane.agent_id[i]) + ")";
    };
    std::vector<std::string> row{std::to_string(lane.lane_id), agent(0) + " → " + agent(1)};
    if (o.all) row.emplace_back(lane.open ? "open" : "closed");
    for (size_t i = 0; i < 2; ++i) {
      row.push_back(human_count(lane.messages[i]));
      row.push_back(human_bytes(lane.bytes[i]));
      row.push_back(human_count(lane.would_block[i]));
    }
    row.push_back(human_duration(l.now > lane.opened_ns ? l.now - lane.opened_ns : 0));
    t.row(std::move(row));
  }
  std::fputs(t.render().c_str(), stdout);
  return finish(*v, l, path);
}

int run_subjects(const Options& o) {
  std::string path;
  auto v = open_page(o, path);
  if (!v) return kExitNotRunning;
  const auto patterns = patterns_to_show(*v);
  const Liveness l = liveness(*v);

  if (o.json) {
    JsonArray list;
    for (const auto& p : patterns) {
      JsonObject j;
      j.str("pattern", p.pattern)
          .boolean("overflow", p.overflow)
          .num("slot", uint64_t{p.slot})
          .num("generation", p.generation)
          .num("subscribers", p.subscribers)
          .num("messages", p.messages)
          .num("bytes", p.bytes)
          .num("drops", p.drops);
      list.raw(j.done());
    }
    JsonObject j;
    j.str("page", path)
        .boolean("live", l.live)
        .num("pid", int64_t{v->info().pid})
        .num("max_patterns", uint64_t{v->info().max_patterns})
        .raw("subjects", list.done());
    std::printf("%s\n", j.done().c_str());
    return finish(*v, l, path);
  }

  const size_t active = active_patterns(*v);
  std::printf("busd pid %d  %s  %zu pattern%s subscribed (slots %u)\n", v->info().pid,
              status_line(*v, l).c_str(), active, active == 1 ? "" : "s", v->info().max_patterns);
  if (patterns.empty()) return finish(*v, l, path);
  std::printf("\n");
  using A = Table::Align;
  Table t({{"PATTERN", A::Left}, {"SUBSCRIBERS", A::Right}, {"MESSAGES", A::Right},
           {"BYTES", A::Right}, {"DROPS", A::Right}});
  for (const auto& p : patterns) {
    t.row({p.overflow ? "(other patterns: pattern table full)" : printable(p.pattern), human_count(p.subscribers),
           human_count(p.messages), human_bytes(p.bytes), human_count(p.drops)});
  }
  std::fputs(t.render().c_str(), stdout);
  return finish(*v, l, path);
}

int run_links(const Options& o) {
  std::string path;
  auto v = open_page(o, path);
  if (!v) return kExitNotRunning;
  const auto links = links_to_show(*v, o.all);
  const Liveness l = liveness(*v);

  if (o.json) {
    JsonArray list;
    for (const auto& k : links) list.raw(link_json(k));
    JsonObject j;
    j.str("page", path)
        .boolean("live", l.live)
        .num("pid", int64_t{v->info().pid})
        .num("max_links", uint64_t{v->info().max_links})
        .raw("links", list.done());
    std::printf("%s\n", j.done().c_str());
    return finish(*v, l, path);
  }

  size_t up = 0, down = 0, closed = 0;
  for (const auto& k : links) (k.open ? (k.up ? up : down) : closed) += 1;
  std::printf("busd pid %d  %s  %zu link%s up, %zu down", v->info().pid, status_line(*v, l).c_str(), up,
              up == 1 ? "" : "s", down);
  if (o.all) std::printf(", %zu closed", closed);
  std::printf("\n");
  if (links.empty()) return finish(*v, l, path);
  std::printf("\n");
  using A = Table::Align;
  std::vector<Table::Column> cols{{"NODE", A::Left}, {"KIND", A::Left}, {"ADDRESS", A::Left}, {"STATE", A::Left},
           {"MSGS_IN", A::Right}, {"MSGS_OUT", A::Right}, {"BYTES_IN", A::Right}, {"BYTES_OUT", A::Right},
           {"DROPS", A::Right}, {"HELD", A::Right}, {"HELD_HWM", A::Right}, {"RTT", A::Right},
           {"RETRANS", A::Right}, {"NAKS", A::Right}, {"INTERESTS", A::Right}, {"REMOTE_AGENTS", A::Right}};
  // RDMA links: their queue-pair figures in three more columns (shown when there is one).
  const bool rdma = std::any_of(links.begin(), links.end(), [](const auto& k) { return k.kind == counters::LinkKind::Rdma; });
  if (rdma) {
    for (const char* c : {"DOORBELLS", "STALLS", "WC_ERRORS"}) cols.push_back({c, A::Right});
  }
  Table t(cols);
  for (const auto& k : links) {
    std::vector<std::string> row{k.node.empty() ? "-" : printable(k.node), counters::to_string(k.kind),
           k.address.empty() ? "-" : printable(k.address), link_state(k), human_count(k.messages_in),
           human_count(k.messages_out), human_bytes(k.bytes_in), human_bytes(k.bytes_out),
           human_count(k.drops_held_full + k.drops_acl), human_bytes(k.held_bytes),
           human_bytes(k.held_high_water), human_latency(k.rtt_ns), human_count(k.retransmits),
           human_count(k.naks), human_count(k.interests), human_count(k.remote_agents)};
    if (rdma) {
      const bool qp = k.kind == counters::LinkKind::Rdma;
      row.push_back(qp ? human_count(k.doorbells) : "-");
      row.push_back(qp ? human_count(k.credit_stalls + k.queue_stalls) : "-");
      row.push_back(qp ? human_count(k.completion_errors) : "-");
    }
    t.row(std::move(row));
  }
  std::fputs(t.render().c_str(), stdout);
  return finish(*v, l, path);
}

}  // namespace bus::ctl
