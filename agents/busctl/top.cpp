// busctl top: a refreshing view of busd's counters page. Rates are the difference of two
// snapshots over the time between them. It only maps the page read-only and copies it once per
// refresh (a few microseconds), so busd never notices it.
//
// On a terminal: the alternate screen, redrawn in place with ANSI escapes (no curses), q or
// Ctrl-C quits. Otherwise (a pipe, a file): plain snapshots one after the other, no escapes, or
// with --json one JSON object per line per refresh.
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bus/clock.hpp"
#include "bus/counters.hpp"
#include "commands.hpp"
#include "format.hpp"
#include "page_access.hpp"

namespace bus::ctl {
namespace {

using counters::CountersView;
using counters::Global;

volatile std::sig_atomic_t g_quit = 0;
extern "C" void on_quit_signal(int) { g_quit = 1; }

struct Snapshot {
  uint64_t mono = 0;
  Liveness live;
  counters::GlobalSnapshot g;
  std::vector<counters::AgentSnapshot> agents;
  std::vector<counters::LinkSnapshot> links;
  std::vector<counters::PatternSnapshot> patterns;
  std::vector<counters::HistogramSnapshot> hists;
  size_t lanes_open = 0;
};

Snapshot take(const CountersView& v) {
  Snapshot s;
  s.mono = clock::mono_ns();
  s.live = liveness(v);
  s.g = v.globals();
  s.agents = v.agents();
  s.links = v.links();
  std::erase_if(s.links, [](const auto& k) { return !k.open; });
  s.patterns = v.patterns();
  for (const auto& l : v.lanes()) s.lanes_open += l.open ? 1 : 0;
  s.hists = v.histograms();
  return s;
}

// A slot is the same agent (link, pattern) in two snapshots when it was taken at the same time
// (patterns: holds the same text); otherwise the slot was reused and there is no rate yet.
template <class T, class Key>
const T* previous(const std::vector<T>& before, const T& now, Key key) {
  for (const auto& b : before) {
    if (key(b) == key(now)) return &b;
  }
  return nullptr;
}

struct Rate {
  std::optional<double> v;  // nullopt: no earlier reading of this slot
  [[nodiscard]] std::string text(bool bytes = false) const {
    return v ? human_rate(*v, bytes) + (bytes ? "/s" : "") : "-";
  }
  void json(JsonObject& j, std::string_view key) const {
    if (v) {
      j.real(key, *v);
    } else {
      j.null(key);
    }
  }
};

template <class T>
Rate rate_of(const T* before, uint64_t T::*field, const T& now, uint64_t dt) {
  if (before == nullptr) return {};
  return {per_second(before->*field, now.*field, dt)};
}

struct AgentRow {
  const counters::AgentSnapshot* a;
  Rate in, out, bytes_in, bytes_out, drops;
};
struct LinkRow {
  const counters::LinkSnapshot* k;
  Rate in, out, bytes_in, bytes_out, retransmits, naks, drops;
};
struct SubjectRow {
  const counters::PatternSnapshot* p;
  Rate messages, bytes, drops;
};

struct Model {
  uint64_t dt = 0;
  std::array<double, counters::kGlobalCount> rate{};
  std::vector<AgentRow> agents;
  std::vector<LinkRow> links;
  std::vector<SubjectRow> subjects;
  std::vector<counters::HistogramSnapshot> latency;  // recorded during the interval
};

double key_rate(const Rate& r) { return r.v.value_or(0.0); }

Model model(const Snapshot& a, const Snapshot& b) {
  Model m;
  m.dt = b.mono > a.mono ? b.mono - a.mono : 0;
  for (size_t i = 0; i < counters::kGlobalCount; ++i) m.rate[i] = per_second(a.g.values[i], b.g.values[i], m.dt);
  using AS = counters::AgentSnapshot;
  for (const auto& x : b.agents) {
    const AS* p = previous(a.agents, x, [](const AS& s) { return std::pair(s.slot, s.opened_ns); });
    AgentRow r{&x, rate_of(p, &AS::messages_in, x, m.dt), rate_of(p, &AS::messages_out, x, m.dt),
               rate_of(p, &AS::bytes_in, x, m.dt), rate_of(p, &AS::bytes_out, x, m.dt), {}};
    if (p != nullptr) r.drops = {per_second(p->drops(), x.drops(), m.dt)};
    m.agents.push_back(r);
  }
  std::stable_sort(m.agents.begin(), m.agents.end(), [](const AgentRow& l, const AgentRow& r) {
    return key_rate(l.in) + key_rate(l.out) > key_rate(r.in) + key_rate(r.out);
  });
  using LS = counters::LinkSnapshot;
  for (const auto& x : b.links) {
    const LS* p = previous(a.links, x, [](const LS& s) { return std::pair(s.slot, s.opened_ns); });
    LinkRow r{&x,
              rate_of(p, &LS::messages_in, x, m.dt),
              rate_of(p, &LS::messages_out, x, m.dt),
              rate_of(p, &LS::bytes_in, x, m.dt),
              rate_of(p, &LS::bytes_out, x, m.dt),
              rate_of(p, &LS::retransmits, x, m.dt),
              rate_of(p, &LS::naks, x, m.dt),
              {}};
    if (p != nullptr) {
      r.drops = {per_second(p->drops_held_full + p->drops_acl, x.drops_held_full + x.drops_acl, m.dt)};
    }
    m.links.push_back(r);
  }
  std::stable_sort(m.links.begin(), m.links.end(),
                   [](const LinkRow& l, const LinkRow& r) { return l.k->node < r.k->node; });
  using PS = counters::PatternSnapshot;
  for (const auto& x : b.patterns) {
    const PS* p = previous(a.patterns, x, [](const PS& s) { return std::pair(s.slot, s.pattern); });
    m.subjects.push_back({&x, rate_of(p, &PS::messages, x, m.dt), rate_of(p, &PS::bytes, x, m.dt),
                          rate_of(p, &PS::drops, x, m.dt)});
  }
  std::stable_sort(m.subjects.begin(), m.subjects.end(), [](const SubjectRow& l, const SubjectRow& r) {
    return key_rate(l.messages) > key_rate(r.messages);
  });
  for (size_t i = 0; i < b.hists.size(); ++i) {
    m.latency.push_back(i < a.hists.size() ? b.hists[i].since(a.hists[i]) : b.hists[i]);
  }
  return m;
}

// ---- plain text (a terminal or a pipe) ----

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t nl = text.find('\n', at);
    const size_t end = nl == std::string::npos ? text.size() : nl;
    out.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

// Adds a table's lines, at most `rows` data rows (0: all), saying how many were left out.
void add_table(std::vector<std::string>& out, const Table& t, size_t shown, size_t total) {
  for (auto& l : lines_of(t.render())) out.push_back(std::move(l));
  if (shown < total) out.push_back("  ... " + std::to_string(total - shown) + " more");
}

std::vector<std::string> render_text(const CountersView& v, const Snapshot& s, const Model& m,
                                     const std::string& interval, size_t rows, bool tty) {
  const auto r = [&](Global g) { return human_rate(m.rate[static_cast<size_t>(g)]); };
  const auto rb = [&](Global g) { return human_rate(m.rate[static_cast<size_t>(g)], true) + "/s"; };
  const auto n = [&](Global g) { return human_count(s.g[g]); };
  std::vector<std::string> out;
  std::string head = "busd " + printable(v.info().busd_version) + "  pid " + std::to_string(v.info().pid) +
                     "  up " + human_duration(s.live.uptime) + "  " + status_line(v, s.live) + "  every " +
                     interval;
  if (tty) head += "  (q quits)";
  out.push_back(head);
  out.push_back("messages  in " + r(Global::messages_in) + "/s  out " + r(Global::messages_out) +
                "/s   bytes in " + rb(Global::bytes_in) + "  out " + rb(Global::bytes_out) + "   agents " +
                n(Global::agents_connected) + "  lanes " + std::to_string(s.lanes_open) + "  links up " +
                n(Global::links_up));
  out.push_back("drops     slow " + r(Global::drops_slow_consumer) + "/s (" + n(Global::drops_slow_consumer) +
                ")  acl " + r(Global::drops_acl) + "/s (" + n(Global::drops_acl) + ")  too_large " +
                r(Global::drops_too_large) + "/s (" + n(Global::drops_too_large) + ")  verify " +
                r(Global::verify_failures) + "/s (" + n(Global::verify_failures) + ")  no_subscribers " +
                r(Global::published_no_subscribers) + "/s");
  out.push_back("requests  " + r(Global::requests) + "/s  no_responders " + r(Global::no_responders) +
                "/s (" + n(Global::no_responders) + ")  timeouts " + r(Global::request_timeouts) + "/s (" +
                n(Global::request_timeouts) + ")");
  out.push_back("slow      drop_oldest " + r(Global::slow_drops_oldest) + "/s (" + n(Global::slow_drops_oldest) +
                ")  drop_newest " + r(Global::slow_drops_newest) + "/s (" + n(Global::slow_drops_newest) +
                ")  disconnects " + n(Global::slow_disconnects) + "  events " + n(Global::slow_events) +
                "  waiting " + human_bytes(s.g[Global::slow_waiting_bytes]));
  out.push_back("links     in " + r(Global::link_messages_in) + "/s  out " + r(Global::link_messages_out) +
                "/s  retransmits " + r(Global::link_retransmits) + "/s (" + n(Global::link_retransmits) +
                ")  naks " + r(Global::link_naks) + "/s (" + n(Global::link_naks) + ")  held_full drops " +
                n(Global::link_drops_held_full) + "  refused " + n(Global::link_refused));
  if (!m.latency.empty()) {
    // This interval's values only; "-" when there were none.
    std::string line = "latency";
    for (const auto& h : m.latency) {
      line += "   " + h.name + " ";
      if (h.count == 0) {
        line += "-";
        continue;
      }
      line += human_rate(per_second(0, h.count, m.dt)) + "/s  p50 " + human_latency(h.quantile(0.5)) + "  p99 " +
              human_latency(h.quantile(0.99)) + "  max " + human_latency(h.max_ns);
    }
    out.push_back(line);
  }

  using A = Table::Align;
  const auto cap = [&](size_t total) { return rows == 0 ? total : std::min(rows, total); };

  out.emplace_back();
  out.push_back("AGENTS " + std::to_string(m.agents.size()) + " (busiest first)");
  if (!m.agents.empty()) {
    Table t({{"ID", A::Right}, {"NAME", A::Left}, {"MSGS_IN/s", A::Right}, {"MSGS_OUT/s", A::Right},
             {"BYTES_IN/s", A::Right}, {"BYTES_OUT/s", A::Right}, {"DROPS/s", A::Right}, {"DROPS", A::Right},
             {"SUBS", A::Right}, {"PENDING", A::Right}, {"IN_Q", A::Right}, {"OUT_Q", A::Right},
             {"SLOW_Q", A::Right}, {"IN_HWM", A::Right}, {"OUT_HWM", A::Right}});
    const size_t shown = cap(m.agents.size());
    for (size_t i = 0; i < shown; ++i) {
      const auto& row = m.agents[i];
      const auto& a = *row.a;
      t.row({std::to_string(a.agent_id),
             printable(a.name) + (a.state == counters::SlotState::Dead ? " (dead)" : ""), row.in.text(),
             row.out.text(), row.bytes_in.text(true), row.bytes_out.text(true), row.drops.text(),
             human_count(a.drops()), human_count(a.subscriptions), human_count(a.pending_requests),
             human_bytes(a.inbound_depth), human_bytes(a.outbound_depth), human_bytes(a.slow_waiting_bytes),
             human_bytes(a.inbound_high_water), human_bytes(a.outbound_high_water)});
    }
    add_table(out, t, shown, m.agents.size());
  }

  if (v.info().max_links > 0) {
    out.emplace_back();
    out.push_back("LINKS " + std::to_string(m.links.size()));
    if (!m.links.empty()) {
      Table t({{"NODE", A::Left}, {"KIND", A::Left}, {"STATE", A::Left}, {"MSGS_IN/s", A::Right},
               {"MSGS_OUT/s", A::Right}, {"BYTES_IN/s", A::Right}, {"BYTES_OUT/s", A::Right}, {"RTT", A::Right},
               {"RETRANS/s", A::Right}, {"NAKS/s", A::Right}, {"DROPS/s", A::Right}, {"HELD", A::Right},
               {"HELD_HWM", A::Right}});
      const size_t shown = cap(m.links.size());
      for (size_t i = 0; i < shown; ++i) {
        const auto& row = m.links[i];
        const auto& k = *row.k;
        t.row({k.node.empty() ? printable(k.address) : printable(k.node), counters::to_string(k.kind),
               link_state(k), row.in.text(), row.out.text(), row.bytes_in.text(true), row.bytes_out.text(true),
               human_latency(k.rtt_ns), row.retransmits.text(), row.naks.text(), row.drops.text(),
               human_bytes(k.held_bytes), human_bytes(k.held_high_water)});
      }
      add_table(out, t, shown, m.links.size());
    }
  }

  out.emplace_back();
  out.push_back("SUBJECTS " + std::to_string(m.subjects.size()) + " (busiest first)");
  if (!m.subjects.empty()) {
    Table t({{"PATTERN", A::Left}, {"SUBS", A::Right}, {"MSGS/s", A::Right}, {"BYTES/s", A::Right},
             {"DROPS/s", A::Right}, {"DROPS", A::Right}});
    const size_t shown = cap(m.subjects.size());
    for (size_t i = 0; i < shown; ++i) {
      const auto& row = m.subjects[i];
      const auto& p = *row.p;
      t.row({p.overflow ? "(other patterns)" : printable(p.pattern), human_count(p.subscribers),
             row.messages.text(), row.bytes.text(true), row.drops.text(), human_count(p.drops)});
    }
    add_table(out, t, shown, m.subjects.size());
  }
  return out;
}

// ---- JSON, one object per refresh ----

std::string render_json(const CountersView& v, const Snapshot& s, const Model& m, uint64_t frame) {
  JsonObject rates, totals;
  for (size_t i = 0; i < counters::kGlobalCount; ++i) {
    const auto& gi = counters::kGlobals[i];
    totals.num(gi.name, s.g.values[i]);
    if (!gi.gauge) rates.real(gi.name, m.rate[i]);
  }
  JsonArray agents;
  for (const auto& row : m.agents) {
    const auto& a = *row.a;
    JsonObject j;
    j.num("id", uint64_t{a.agent_id}).str("name", a.name).str("state", a.state == counters::SlotState::Dead ? "dead" : "active");
    row.in.json(j, "messages_in_per_s");
    row.out.json(j, "messages_out_per_s");
    row.bytes_in.json(j, "bytes_in_per_s");
    row.bytes_out.json(j, "bytes_out_per_s");
    row.drops.json(j, "drops_per_s");
    j.num("messages_in", a.messages_in)
        .num("messages_out", a.messages_out)
        .num("drops", a.drops())
        .num("subscriptions", a.subscriptions);
    agents.raw(agent_queues_json(j, a).done());
  }
  JsonArray links;
  for (const auto& row : m.links) {
    const auto& k = *row.k;
    JsonObject j;
    j.str("node", k.node).str("kind", counters::to_string(k.kind)).str("address", k.address).str("state", link_state(k));
    row.in.json(j, "messages_in_per_s");
    row.out.json(j, "messages_out_per_s");
    row.bytes_in.json(j, "bytes_in_per_s");
    row.bytes_out.json(j, "bytes_out_per_s");
    row.retransmits.json(j, "retransmits_per_s");
    row.naks.json(j, "naks_per_s");
    row.drops.json(j, "drops_per_s");
    j.num("rtt_ns", k.rtt_ns)
        .num("retransmits", k.retransmits)
        .num("naks", k.naks)
        .num("held_bytes", k.held_bytes)
        .num("held_high_water", k.held_high_water);
    links.raw(j.done());
  }
  JsonArray subjects;
  for (const auto& row : m.subjects) {
    const auto& p = *row.p;
    JsonObject j;
    j.str("pattern", p.pattern).boolean("overflow", p.overflow).num("subscribers", p.subscribers);
    row.messages.json(j, "messages_per_s");
    row.bytes.json(j, "bytes_per_s");
    row.drops.json(j, "drops_per_s");
    j.num("messages", p.messages).num("drops", p.drops);
    subjects.raw(j.done());
  }
  JsonObject j;
  j.num("frame", frame)
      .boolean("live", s.live.live)
      .num("pid", int64_t{v.info().pid})
      .num("uptime_ns", s.live.uptime)
      .num("interval_ns", m.dt)
      .raw("rates", rates.done())
      .raw("totals", totals.done())
      .raw("agents", agents.done())
      .raw("links", links.done())
      .raw("subjects", subjects.done());
  JsonObject latency;
  for (const auto& h : m.latency) {
    JsonObject one;
    latency.raw(h.name, histogram_json(one, h, false).done());
  }
  j.raw("latency", latency.done());
  std::string out = j.done();
  std::erase(out, '\n');  // one line per refresh (JsonArray puts one element a line)
  return out;
}

// ---- the terminal ----

class Screen {
 public:
  explicit Screen(bool tty) : tty_(tty) {
    if (!tty_) return;
    if (::isatty(STDIN_FILENO) == 1 && ::tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);  // keys one at a time; ISIG kept: Ctrl-C
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      keys_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    std::fputs("\x1b[?1049h\x1b[?25l", stdout);  // alternate screen, cursor hidden
    std::fflush(stdout);
  }
  ~Screen() {
    if (!tty_) return;
    std::fputs("\x1b[?25h\x1b[?1049l", stdout);
    std::fflush(stdout);
    if (keys_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  [[nodiscard]] std::pair<size_t, size_t> size() const {
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
      return {ws.ws_row, ws.ws_col};
    }
    return {24, 80};
  }

  void draw(const std::vector<std::string>& lines) const {
    const auto [height, width] = size();
    std::string out = "\x1b[H";
    for (size_t i = 0; i < lines.size() && i < height; ++i) {
      out += clip(lines[i], width);
      out += "\x1b[K";
      if (i + 1 < height && i + 1 < lines.size()) out += "\r\n";
    }
    out += "\x1b[J";
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }

  /// Waits up to `ns`; false when the user asked to quit (q, Ctrl-C, SIGTERM).
  bool wait(uint64_t ns) const {
    const uint64_t end = clock::mono_ns() + ns;
    while (g_quit == 0) {
      const uint64_t now = clock::mono_ns();
      if (now >= end) return true;
      const int ms = static_cast<int>(std::min<uint64_t>((end - now + 999'999) / 1'000'000, 1000));
      pollfd p{STDIN_FILENO, POLLIN, 0};
      const int n = ::poll(keys_ ? &p : nullptr, keys_ ? 1 : 0, ms);
      if (n > 0 && (p.revents & POLLIN) != 0) {
        char c = 0;
        while (::read(STDIN_FILENO, &c, 1) == 1) {
          if (c == 'q' || c == 'Q') return false;
        }
      }
    }
    return false;
  }

 private:
  static std::string clip(const std::string& s, size_t width) {
    size_t cols = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && cols++ == width) return s.substr(0, i);
    }
    return s;
  }
  bool tty_;
  bool keys_ = false;
  termios saved_{};
};

}  // namespace

int run_top(const Options& o, const TopOptions& t) {
  const int64_t interval = parse_duration(t.interval);
  if (interval < 0) {
    std::fprintf(stderr, "busctl top: --interval '%s' is not a duration (e.g. 1s, 500ms)\n", t.interval.c_str());
    return kExitUsage;
  }
  if (interval < 100'000'000 || interval > 3'600'000'000'000) {
    std::fprintf(stderr, "busctl top: --interval must be between 100ms and 1h\n");
    return kExitUsage;
  }
  std::string path;
  auto v = open_page(o, path);
  if (!v) return kExitNotRunning;

  const bool tty = !o.json && ::isatty(STDOUT_FILENO) == 1;
  struct sigaction sa {};
  sa.sa_handler = on_quit_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  const auto uint = static_cast<uint64_t>(interval);
  const std::string every = human_duration(uint);

  Screen screen(tty);
  Snapshot before = take(*v);
  // The first refresh comes sooner (rates need two readings).
  bool more = screen.wait(std::min<uint64_t>(uint, 250'000'000));
  Snapshot now;
  for (uint64_t frame = 1; more; ++frame) {
    now = take(*v);
    const Model m = model(before, now);
    if (o.json) {
      std::printf("%s\n", render_json(*v, now, m, frame).c_str());
      std::fflush(stdout);
    } else {
      size_t rows = t.rows;
      if (tty && rows == 0) {
        const size_t height = screen.size().first;
        rows = std::max<size_t>(3, height > 17 ? (height - 17) / 3 : 0);
      }
      const auto lines = render_text(*v, now, m, every, rows, tty);
      if (tty) {
        screen.draw(lines);
      } else {
        if (frame > 1) std::printf("\n");
        for (const auto& l : lines) std::printf("%s\n", l.c_str());
        std::fflush(stdout);
      }
    }
    if (t.iterations != 0 && frame >= t.iterations) break;
    // busd restarted: a new page replaced ours (same path).
    if (!now.live.live) {
      if (auto fresh = counters::open_counters(path); fresh && fresh->info().start_time_ns != v->info().start_time_ns) {
        v = std::move(*fresh);
        now = take(*v);
      }
    }
    before = std::move(now);
    more = screen.wait(uint);
  }
  return finish(*v, liveness(*v), path);
}

}  // namespace bus::ctl
