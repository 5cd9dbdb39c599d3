// busd's Prometheus endpoint: the exposition text and the HTTP server thread (see metrics.hpp).
#include "metrics.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "bus/clock.hpp"
#include "log.hpp"

namespace bus::daemon::metrics {
namespace {

using counters::CountersView;

constexpr uint64_t kNsPerSec = 1'000'000'000;
constexpr uint64_t kNsPerMs = 1'000'000;
constexpr uint64_t kAcceptPauseNs = 100 * kNsPerMs;
constexpr int kAcceptsPerPass = 64;
constexpr std::string_view kOverflowPattern = "(other patterns)";  // no real pattern has a space

// ---- the text format ----------------------------------------------------------------------

void append_u64(std::string& out, uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// Nanoseconds as seconds, exactly: 1500000 -> "0.001500000".
void append_seconds(std::string& out, uint64_t ns) {
  append_u64(out, ns / kNsPerSec);
  char frac[10];
  frac[0] = '.';
  uint64_t f = ns % kNsPerSec;
  for (int i = 9; i >= 1; --i) {
    frac[i] = static_cast<char>('0' + f % 10);
    f /= 10;
  }
  out.append(frac, sizeof frac);
}

// The length of the valid UTF-8 sequence at s[0..n), or 0 (Unicode's well-formed table:
// no overlong forms, no surrogates, nothing above U+10FFFF).
size_t utf8_sequence(const unsigned char* s, size_t n) {
  const unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len = 0;
  unsigned lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; ++i) {
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  }
  return len;
}

// HELP text: backslash and line feed escaped (quotes stay).
void append_help(std::string& out, std::string_view v) {
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void family(std::string& out, std::string_view name, bool gauge, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  append_help(out, help);
  out += "\n# TYPE ";
  out += name;
  out += gauge ? " gauge\n" : " counter\n";
}

void sample_head(std::string& out, std::string_view name, std::string_view labels, std::string_view extra = {}) {
  out += name;
  if (!labels.empty() || !extra.empty()) {
    out += '{';
    out += labels;
    if (!labels.empty() && !extra.empty()) out += ',';
    out += extra;
    out += '}';
  }
  out += ' ';
}

void sample(std::string& out, std::string_view name, std::string_view labels, uint64_t v, std::string_view extra = {}) {
  sample_head(out, name, labels, extra);
  append_u64(out, v);
  out += '\n';
}

void sample_seconds(std::string& out, std::string_view name, std::string_view labels, uint64_t ns) {
  sample_head(out, name, labels);
  append_seconds(out, ns);
  out += '\n';
}

void label(std::string& out, std::string_view name, std::string_view value) {
  if (!out.empty()) out += ',';
  out += name;
  out += "=\"";
  append_label_value(out, value);
  out += '"';
}

void label(std::string& out, std::string_view name, uint64_t value) {
  if (!out.empty()) out += ',';
  out += name;
  out += "=\"";
  append_u64(out, value);
  out += '"';
}

// A global counter's family name: busd_<name>, counters with _total (once).
std::string global_name(const counters::GlobalInfo& g) {
  std::string n = "busd_";
  n += g.name;
  if (!g.gauge && !g.name.ends_with("_total")) n += "_total";
  return n;
}

// Rows of one table with their label text, each label set once.
template <class Row>
struct Labeled {
  std::string labels;
  const Row* row;
};

// One family over a table: HELP, TYPE, then a sample per row.
template <class Row, class Value>
void per_row(std::string& out, std::string_view name, bool gauge, std::string_view help,
             const std::vector<Labeled<Row>>& rows, Value value) {
  family(out, name, gauge, help);
  for (const auto& r : rows) sample(out, name, r.labels, value(*r.row));
}

void agents(std::string& out, const CountersView& v) {
  const auto snap = v.agents();
  std::vector<Labeled<counters::AgentSnapshot>> rows;
  std::unordered_set<uint32_t> seen;
  for (const auto& a : snap) {
    if (!seen.insert(a.agent_id).second) continue;  // a slot busd rewrote during the copy
    std::string l;
    label(l, "agent", a.name);
    label(l, "id", a.agent_id);
    rows.push_back({std::move(l), &a});
  }
  using A = counters::AgentSnapshot;
  per_row(out, "busd_agent_messages_in_total", false, "messages accepted from the agent", rows,
          [](const A& a) { return a.messages_in; });
  per_row(out, "busd_agent_messages_out_total", false, "messages delivered to the agent", rows,
          [](const A& a) { return a.messages_out; });
  per_row(out, "busd_agent_bytes_in_total", false, "bytes accepted from the agent", rows,
          [](const A& a) { return a.bytes_in; });
  per_row(out, "busd_agent_bytes_out_total", false, "bytes delivered to the agent", rows,
          [](const A& a) { return a.bytes_out; });
  family(out, "busd_agent_drops_total", false,
         "the agent's messages refused (acl, too_large, verify) and deliveries to it dropped (slow_consumer), by cause");
  for (const auto& r : rows) {
    sample(out, "busd_agent_drops_total", r.labels, r.row->drops_slow_consumer, "cause=\"slow_consumer\"");
    sample(out, "busd_agent_drops_total", r.labels, r.row->drops_acl, "cause=\"acl\"");
    sample(out, "busd_agent_drops_total", r.labels, r.row->drops_too_large, "cause=\"too_large\"");
    sample(out, "busd_agent_drops_total", r.labels, r.row->drops_verify, "cause=\"verify\"");
  }
  per_row(out, "busd_agent_subscriptions", true, "subscriptions the agent holds", rows,
          [](const A& a) { return a.subscriptions; });
  per_row(out, "busd_agent_pending_requests", true, "the agent's requests awaiting a reply", rows,
          [](const A& a) { return a.pending_requests; });
  per_row(out, "busd_agent_inbound_high_water_bytes", true, "most bytes ever queued from the agent to busd", rows,
          [](const A& a) { return a.inbound_high_water; });
  per_row(out, "busd_agent_outbound_high_water_bytes", true, "most bytes ever queued from busd to the agent", rows,
          [](const A& a) { return a.outbound_high_water; });
  per_row(out, "busd_agent_inbound_queued_bytes", true, "bytes queued from the agent to busd now (about once a second)",
          rows, [](const A& a) { return a.inbound_depth; });
  per_row(out, "busd_agent_outbound_queued_bytes", true, "bytes queued from busd to the agent now (about once a second)",
          rows, [](const A& a) { return a.outbound_depth; });
  per_row(out, "busd_agent_slow_waiting_bytes", true, "bytes busd holds for the agent as a slow consumer (about once a second)",
          rows, [](const A& a) { return a.slow_waiting_bytes; });
  per_row(out, "busd_agent_dead", true, "1 while busd reclaims the rings of an agent that died", rows,
          [](const A& a) { return uint64_t{a.state == counters::SlotState::Dead}; });
  family(out, "busd_agent_start_time_seconds", true, "when the agent registered, seconds since the epoch");
  for (const auto& r : rows) sample_seconds(out, "busd_agent_start_time_seconds", r.labels, r.row->opened_ns);
}

void patterns(std::string& out, const CountersView& v) {
  const auto snap = v.patterns();
  std::vector<Labeled<counters::PatternSnapshot>> rows;
  std::set<std::string, std::less<>> seen;
  for (const auto& p : snap) {
    const std::string_view name = p.overflow ? kOverflowPattern : std::string_view(p.pattern);
    if (!seen.emplace(name).second) continue;  // a slot busd reused during the copy
    std::string l;
    label(l, "pattern", name);
    rows.push_back({std::move(l), &p});
  }
  using P = counters::PatternSnapshot;
  per_row(out, "busd_pattern_subscribers", true, "subscriptions with this pattern", rows,
          [](const P& p) { return p.subscribers; });
  per_row(out, "busd_pattern_messages_total", false, "deliveries through this pattern (one per subscriber reached)",
          rows, [](const P& p) { return p.messages; });
  per_row(out, "busd_pattern_bytes_total", false, "bytes of the deliveries through this pattern", rows,
          [](const P& p) { return p.bytes; });
  per_row(out, "busd_pattern_drops_total", false, "deliveries through this pattern dropped (slow consumer)", rows,
          [](const P& p) { return p.drops; });
}

void lanes(std::string& out, const CountersView& v) {
  const auto snap = v.lanes();
  struct Dir {
    std::string labels;
    const counters::LaneSnapshot* lane;
    int side;
  };
  std::vector<Dir> dirs;
  std::vector<Labeled<counters::LaneSnapshot>> rows;
  std::unordered_set<uint32_t> seen;
  for (const auto& l : snap) {
    if (!seen.insert(l.lane_id).second) continue;
    for (int side = 0; side < 2; ++side) {
      std::string s;
      label(s, "lane", l.lane_id);
      label(s, "direction", side == 0 ? "a_to_b" : "b_to_a");
      label(s, "from", l.name[side]);
      label(s, "to", l.name[1 - side]);
      dirs.push_back({std::move(s), &l, side});
    }
    std::string s;
    label(s, "lane", l.lane_id);
    label(s, "agent_a", l.name[0]);
    label(s, "agent_b", l.name[1]);
    rows.push_back({std::move(s), &l});
  }
  per_row(out, "busd_lane_up", true, "1 while the direct lane between two agents is open (0: closed, last counters kept)",
          rows, [](const counters::LaneSnapshot& l) { return uint64_t{l.open}; });
  const auto per_dir = [&](std::string_view name, std::string_view help, auto value) {
    family(out, name, false, help);
    for (const auto& d : dirs) sample(out, name, d.labels, value(*d.lane, d.side));
  };
  per_dir("busd_lane_messages_total", "messages written into the lane in this direction",
          [](const counters::LaneSnapshot& l, int s) { return l.messages[s]; });
  per_dir("busd_lane_bytes_total", "bytes written into the lane in this direction",
          [](const counters::LaneSnapshot& l, int s) { return l.bytes[s]; });
  per_dir("busd_lane_would_block_total", "writes into the lane in this direction that found its ring full",
          [](const counters::LaneSnapshot& l, int s) { return l.would_block[s]; });
}

void peers(std::string& out, const CountersView& v) {
  const auto snap = v.links();
  std::vector<Labeled<counters::LinkSnapshot>> rows;
  std::set<std::tuple<std::string, std::string, counters::LinkKind>> seen;
  // Open slots first: a closed slot with the same labels (a peer forgotten, then met again at
  // the same address) is the older one.
  for (const bool open : {true, false}) {
    for (const auto& p : snap) {
      if (p.open != open || !seen.emplace(p.node, p.address, p.kind).second) continue;
      std::string l;
      label(l, "node", p.node);
      label(l, "address", p.address);
      label(l, "kind", counters::to_string(p.kind));
      rows.push_back({std::move(l), &p});
    }
  }
  using L = counters::LinkSnapshot;
  per_row(out, "busd_peer_up", true, "1 while the link to the peer busd is up (handshake done)", rows,
          [](const L& p) { return uint64_t{p.up}; });
  per_row(out, "busd_peer_messages_out_total", false, "messages sent to the peer busd", rows,
          [](const L& p) { return p.messages_out; });
  per_row(out, "busd_peer_messages_in_total", false, "messages received from the peer busd", rows,
          [](const L& p) { return p.messages_in; });
  per_row(out, "busd_peer_bytes_out_total", false, "envelope bytes sent to the peer busd", rows,
          [](const L& p) { return p.bytes_out; });
  per_row(out, "busd_peer_bytes_in_total", false, "envelope bytes received from the peer busd", rows,
          [](const L& p) { return p.bytes_in; });
  family(out, "busd_peer_drops_total", false,
         "messages for the peer dropped, its hold buffer full (held_full); messages and interests refused by the link's grants (acl)");
  for (const auto& r : rows) {
    sample(out, "busd_peer_drops_total", r.labels, r.row->drops_held_full, "cause=\"held_full\"");
    sample(out, "busd_peer_drops_total", r.labels, r.row->drops_acl, "cause=\"acl\"");
  }
  per_row(out, "busd_peer_held_bytes", true, "bytes held for the peer (unacknowledged or waiting for the link)", rows,
          [](const L& p) { return p.held_bytes; });
  per_row(out, "busd_peer_held_high_water_bytes", true, "most bytes ever held for the peer", rows,
          [](const L& p) { return p.held_high_water; });
  per_row(out, "busd_peer_connects_total", false, "link connections to the peer made (handshake done)", rows,
          [](const L& p) { return p.connects; });
  per_row(out, "busd_peer_disconnects_total", false, "link connections to the peer lost", rows,
          [](const L& p) { return p.disconnects; });
  per_row(out, "busd_peer_retransmits_total", false, "datagram links: packets sent to the peer again", rows,
          [](const L& p) { return p.retransmits; });
  per_row(out, "busd_peer_naks_total", false, "datagram links: holes named to the peer (NAK ranges)", rows,
          [](const L& p) { return p.naks; });
  per_row(out, "busd_peer_datagrams_corrupt_total", false, "datagram links: packets from the peer dropped, checksum mismatch",
          rows, [](const L& p) { return p.datagrams_corrupt; });
  per_row(out, "busd_peer_datagrams_dropped_total", false,
          "datagram links: packets from the peer dropped otherwise (malformed, stale, beyond the window)", rows,
          [](const L& p) { return p.datagrams_dropped; });
  family(out, "busd_peer_rtt_seconds", true, "smoothed round trip to the peer busd (heartbeat echo); absent until measured");
  for (const auto& r : rows) {
    if (r.row->rtt_ns != 0) sample_seconds(out, "busd_peer_rtt_seconds", r.labels, r.row->rtt_ns);
  }
  per_row(out, "busd_peer_interests", true, "subject interests the peer holds here", rows,
          [](const L& p) { return p.interests; });
  per_row(out, "busd_peer_remote_agents", true, "the peer's agents known here", rows,
          [](const L& p) { return p.remote_agents; });
  // Queue-pair figures: only for RDMA peers (families always, as for every table).
  std::vector<Labeled<counters::LinkSnapshot>> qp;
  for (const auto& r : rows) {
    if (r.row->kind == counters::LinkKind::Rdma) qp.push_back(r);
  }
  per_row(out, "busd_peer_rdma_doorbells_total", false, "rdma links: chains of work requests posted (ibv_post_send calls)",
          qp, [](const L& p) { return p.doorbells; });
  family(out, "busd_peer_rdma_stalls_total", false,
         "rdma links: output held back, the peer's ring full or no receive WR to spare (credit), or the local send queue full (queue)");
  for (const auto& r : qp) {
    sample(out, "busd_peer_rdma_stalls_total", r.labels, r.row->credit_stalls, "cause=\"credit\"");
    sample(out, "busd_peer_rdma_stalls_total", r.labels, r.row->queue_stalls, "cause=\"queue\"");
  }
  per_row(out, "busd_peer_rdma_completion_errors_total", false,
          "rdma links: completions with an error status (each took the link down)", qp,
          [](const L& p) { return p.completion_errors; });
}

// ---- HTTP -------------------------------------------------------------------------------------

std::string_view reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    default: return "Error";
  }
}

std::string response(int status, std::string_view content_type, std::string_view body, bool with_body,
                     std::string_view extra_headers = {}) {
  std::string r = "HTTP/1.1 ";
  append_u64(r, static_cast<uint64_t>(status));
  r += ' ';
  r += reason(status);
  r += "\r\nContent-Type: ";
  r += content_type;
  r += "\r\nContent-Length: ";
  append_u64(r, body.size());
  r += "\r\n";
  r += extra_headers;
  r += "Connection: close\r\n\r\n";
  if (with_body) r += body;
  return r;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// The latency histograms as Prometheus histograms, busd_<name>_seconds. Bucket bounds are
// 2^k - 1 ns for k = 10..35 (1.023 µs .. 34.4 s): each is the last value of a page bucket, so the
// cumulative counts are exact. _count is the buckets' total (the page stores count after the
// bucket), +Inf equal to it.
void histograms(std::string& out, const CountersView& v) {
  const auto hists = v.histograms();
  for (size_t i = 0; i < hists.size(); ++i) {
    const counters::HistogramSnapshot& h = hists[i];
    std::string name = "busd_";
    name += h.name;
    name += "_seconds";
    out += "# HELP ";
    out += name;
    out += ' ';
    append_help(out, i < counters::kHistCount ? counters::kHists[i].help : std::string_view("a latency histogram"));
    out += "\n# TYPE ";
    out += name;
    out += " histogram\n";
    const std::string bucket = name + "_bucket";
    uint64_t cumulative = 0;
    uint32_t next = 0;  // the first page bucket not yet added
    for (uint32_t k = 10; k <= 35; ++k) {
      const uint32_t end = (k - 1) * 4;  // page buckets below this hold values < 2^k
      for (; next < end; ++next) cumulative += h.buckets[next];
      std::string le = "le=\"";
      append_seconds(le, (uint64_t{1} << k) - 1);
      le += '"';
      sample(out, bucket, {}, cumulative, le);
    }
    const uint64_t total = h.total();
    sample(out, bucket, {}, total, "le=\"+Inf\"");
    sample_seconds(out, name + "_sum", {}, h.sum_ns);
    sample(out, name + "_count", {}, total);
  }
}

}  // namespace

void append_label_value(std::string& out, std::string_view v) {
  const auto* s = reinterpret_cast<const unsigned char*>(v.data());
  size_t i = 0;
  while (i < v.size()) {
    const size_t n = utf8_sequence(s + i, v.size() - i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
      continue;
    }
    if (n == 1) {
      const char c = v[i];
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '"') {
        out += "\\\"";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += c;
      }
    } else {
      out.append(v.data() + i, n);
    }
    i += n;
  }
}

std::string render(const CountersView& v, uint64_t now_realtime_ns) {
  std::string out;
  out.reserve(32 * 1024);
  const auto& info = v.info();
  const uint64_t beat = v.heartbeat_ns();

  family(out, "busd_up", true, "1 while busd's loop keeps the counters page's heartbeat fresh (0: the loop stalled)");
  sample(out, "busd_up", {}, v.live(now_realtime_ns) ? 1 : 0);
  family(out, "busd_info", true, "busd's version and counters page layout (value 1)");
  {
    std::string l;
    label(l, "version", info.busd_version);
    label(l, "layout_version", info.layout_version);
    sample(out, "busd_info", l, 1);
  }
  family(out, "busd_start_time_seconds", true, "when busd started, seconds since the epoch");
  sample_seconds(out, "busd_start_time_seconds", {}, info.start_time_ns);
  family(out, "busd_heartbeat_age_seconds", true, "time since busd's loop last stored its heartbeat (about every 0.5 s)");
  sample_seconds(out, "busd_heartbeat_age_seconds", {}, now_realtime_ns > beat && beat != 0 ? now_realtime_ns - beat : 0);

  const counters::GlobalSnapshot g = v.globals();
  for (size_t i = 0; i < counters::kGlobalCount; ++i) {
    const counters::GlobalInfo& gi = counters::kGlobals[i];
    const std::string name = global_name(gi);
    family(out, name, gi.gauge, gi.help);
    sample(out, name, {}, g.values[i]);
  }
  agents(out, v);
  patterns(out, v);
  lanes(out, v);
  peers(out, v);
  histograms(out, v);
  return out;
}

Answer error_answer(int status, std::string_view why) {
  std::string body(why);
  body += '\n';
  return {status, response(status, "text/plain; charset=utf-8", body, true,
                           status == 405 ? "Allow: GET, HEAD\r\n" : "")};
}

Answer answer(std::string_view head, const CountersView& v, uint64_t now_realtime_ns) {
  std::string_view line = head.substr(0, head.find('\n'));
  if (line.ends_with('\r')) line.remove_suffix(1);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return error_answer(400, "busd metrics: malformed request line");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || target.empty() || !version.starts_with("HTTP/1.")) {
    return error_answer(400, "busd metrics: malformed request line");
  }
  if (target.substr(0, target.find('?')) != "/metrics") return error_answer(404, "busd metrics: only /metrics is served");
  if (method != "GET" && method != "HEAD") return error_answer(405, "busd metrics: only GET and HEAD");
  const std::string body = render(v, now_realtime_ns);
  return {200, response(200, "text/plain; version=0.0.4; charset=utf-8", body, method == "GET")};
}

// ---- the server thread --------------------------------------------------------------------------

Expected<std::unique_ptr<Server>> Server::start(const std::string& listen, const std::string& counters_path) {
  auto ep = tcp::listen_endpoint(listen);
  if (!ep) return tl::unexpected(ep.error().context("metrics_listen"));
  auto l = tcp::TcpListener::listen(*ep);
  if (!l) return tl::unexpected(l.error().context("metrics_listen"));
  auto view = counters::open_counters(counters_path);
  if (!view) return tl::unexpected(view.error().context("metrics: counters page"));
  std::unique_ptr<Server> s(new Server());
  s->listener_ = std::move(*l);
  s->view_ = std::move(*view);
  s->address_ = tcp::Endpoint{ep->host, s->listener_.port()}.to_string();
  s->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->wake_fd_ < 0) return tl::unexpected(system_error("metrics: eventfd", errno));
  try {
    s->thread_ = std::thread([p = s.get()] { p->run(); });
  } catch (const std::system_error& e) {
    return fail(Errc::System, std::string("metrics: starting its thread: ") + e.what());
  }
  ::pthread_setname_np(s->thread_.native_handle(), "busd-metrics");
  return s;
}

Server::~Server() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Server::stop() noexcept {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  thread_.join();
}

namespace {

struct Conn {
  enum class Phase : uint8_t { Reading, Writing, Lingering };
  int fd = -1;
  Phase phase = Phase::Reading;
  std::string in;
  std::string out;
  size_t sent = 0;
  uint64_t deadline_ns = 0;
};

void close_conn(Conn& c) {
  if (c.fd >= 0) ::close(c.fd);
  c.fd = -1;
}

// Sends what is left; on the last byte, half-closes and lingers to read what the client still
// sends (closing with unread input would reset the connection and could lose the answer).
void write_some(Conn& c, uint64_t now) {
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      close_conn(c);
      return;
    }
  }
  ::shutdown(c.fd, SHUT_WR);
  c.out = std::string();
  c.in = std::string();
  c.phase = Conn::Phase::Lingering;
  c.deadline_ns = now + kLingerMs * kNsPerMs;
}

void start_answer(Conn& c, std::string bytes, uint64_t now) {
  c.out = std::move(bytes);
  c.sent = 0;
  c.phase = Conn::Phase::Writing;
  c.deadline_ns = now + kWriteTimeoutMs * kNsPerMs;
  write_some(c, now);
}

}  // namespace

void Server::run() noexcept {
  std::vector<Conn> conns;
  std::vector<pollfd> fds;
  char buf[4096];
  uint64_t accept_after = 0;  // out of descriptors: accept again from then
  for (;;) {
    uint64_t now = clock::mono_ns();
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    // With every slot taken, a new connection pushes out the one waiting longest for its request:
    // clients that connect and send nothing cannot keep a scraper out.
    const bool evictable = std::any_of(conns.begin(), conns.end(), [](const Conn& c) { return c.phase == Conn::Phase::Reading; });
    const bool accepting = (conns.size() < kMaxConnections || evictable) && now >= accept_after;
    fds.push_back({accepting ? listener_.fd() : -1, POLLIN, 0});  // a negative fd is skipped
    uint64_t next = now < accept_after ? accept_after : UINT64_MAX;
    for (const Conn& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.phase == Conn::Phase::Writing ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.deadline_ns);
    }
    const int timeout_ms = next == UINT64_MAX ? -1
                           : next <= now      ? 0
                                              : static_cast<int>((next - now + kNsPerMs - 1) / kNsPerMs);
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      log::error("metrics_poll_failed", {{"error", std::string(std::strerror(errno))}});
      ::usleep(100'000);
      continue;
    }
    if (fds[0].revents != 0) break;
    now = clock::mono_ns();
    const size_t polled = conns.size();
    for (size_t i = 0; i < polled; ++i) {
      Conn& c = conns[i];
      const short ev = fds[i + 2].revents;
      if (c.phase == Conn::Phase::Reading && (ev & (POLLIN | POLLHUP | POLLERR)) != 0) {
        bool eof = false;
        while (c.in.size() <= kMaxRequest) {
          const ssize_t n = ::recv(c.fd, buf, std::min(sizeof buf, kMaxRequest + 1 - c.in.size()), 0);
          if (n > 0) {
            c.in.append(buf, static_cast<size_t>(n));
          } else if (n < 0 && errno == EINTR) {
            continue;
          } else {
            eof = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
            break;
          }
        }
        // The head ends at the first blank line (CRLF CRLF, or bare LF LF from a lenient client).
        size_t end = std::string::npos;
        if (const size_t p = c.in.find("\r\n\r\n"); p != std::string::npos) end = p + 4;
        if (const size_t p = c.in.find("\n\n"); p != std::string::npos) end = std::min(end, p + 2);
        if (end != std::string::npos && end <= kMaxRequest) {
          start_answer(c, answer(std::string_view(c.in).substr(0, end), view_, clock::real_ns()).bytes, now);
        } else if (c.in.size() > kMaxRequest) {
          start_answer(c, error_answer(431, "busd metrics: request head above 8192 bytes").bytes, now);
        } else if (eof) {
          close_conn(c);  // gone before a whole head
        }
      } else if (c.phase == Conn::Phase::Writing && (ev & (POLLOUT | POLLHUP | POLLERR)) != 0) {
        write_some(c, now);
      } else if (c.phase == Conn::Phase::Lingering && (ev & (POLLIN | POLLHUP | POLLERR)) != 0) {
        for (int reads = 0; reads < 16; ++reads) {  // the rest next pass: a flood does not hold the thread
          const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
          if (n > 0) continue;
          if (n < 0 && errno == EINTR) continue;
          if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) close_conn(c);
          break;
        }
      }
      if (c.fd >= 0 && now >= c.deadline_ns) {
        if (c.phase == Conn::Phase::Reading) {
          start_answer(c, error_answer(408, "busd metrics: no whole request within 5 s").bytes, now);
        } else {
          close_conn(c);  // a client that does not read its answer, or lingers
        }
      }
    }
    std::erase_if(conns, [](const Conn& c) { return c.fd < 0; });
    if (accepting && (fds[1].revents & POLLIN) != 0) {
      for (int n = 0; n < kAcceptsPerPass; ++n) {
        Conn* oldest = nullptr;  // the connection waiting longest for its request
        for (Conn& c : conns) {
          if (c.phase == Conn::Phase::Reading && (oldest == nullptr || c.deadline_ns < oldest->deadline_ns)) oldest = &c;
        }
        if (conns.size() >= kMaxConnections && oldest == nullptr) break;
        auto fd = listener_.accept(nullptr);
        if (!fd && fd.error() == Errc::LimitReached) {
          accept_after = now + kAcceptPauseNs;  // out of descriptors: it waits in the backlog
        }
        if (!fd) break;
        if (conns.size() >= kMaxConnections) {
          close_conn(*oldest);
          std::erase_if(conns, [](const Conn& c) { return c.fd < 0; });
        }
        Conn c;
        c.fd = *fd;
        c.deadline_ns = now + kReadTimeoutMs * kNsPerMs;
        conns.push_back(std::move(c));
      }
    }
  }
  for (Conn& c : conns) close_conn(c);
}

}  // namespace bus::daemon::metrics
