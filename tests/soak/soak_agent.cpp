// One agent of the soak test (tests/soak/soak.py starts 200 of them and kills them at random).
//   soak_agent ROLE --name N --host H --id I --inc K --subject S --out DIR [options]
// Roles:
//   pub   publishes "P|host|id|inc|epoch|seq|t_first|t_pub|hash" on S at --rate per second
//   sub   subscribes to S and checks, per publisher incarnation (id, inc): sequence numbers in
//         order, no duplicates, intact payloads, gaps only when the publisher's connection epoch
//         (its busd restarted) or this agent's own changed in between; with --strict-start, a
//         stream from a publisher on this agent's host whose first message was published after
//         this agent (re)subscribed must be seen from seq 1
//   resp  answers requests on S (queue group --group G when given) with "R|request|hash|name"
//   req   sends requests on S at --rate per second, synchronously (request()) or with up to
//         --async N in flight (send_request()); every reply must echo its own request
// Every agent follows its connection (on_state_change): the epoch counts Disconnected events.
// It writes DIR/NAME.json (totals, connection periods, lane counts) every second and at exit
// (SIGTERM), and appends each violation at once to DIR/NAME.violations: a kill -9 loses at most
// a second of totals, never a violation.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"
#include "bus/clock.hpp"

namespace {

constexpr uint64_t kMs = 1'000'000;
std::atomic<bool> g_stop{false};
bus::Client* g_client = nullptr;

uint64_t fnv(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t p = s.find(sep, start);
    if (p == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, p - start));
    start = p + 1;
  }
}

bool to_u64(std::string_view s, uint64_t& v) {
  if (s.empty() || s.size() > 20) return false;
  v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return true;
}

struct Period {
  uint64_t from_ns = 0, to_ns = 0;  // to_ns 0: still connected
  uint64_t work = 0;                // messages handled in it (role-specific)
};

struct Agent {
  std::string role, name, host, subject, group, out;
  uint64_t id = 0, inc = 0;
  double rate = 10;
  int async = 0;
  int timeout_ms = 1000;
  bool strict_start = false;
  uint64_t warm = 0;        // bytes to send to itself through busd after each (re)connect
  bool need_warm = false;

  bus::Client* c = nullptr;
  uint64_t started_ns = bus::clock::mono_ns();
  uint64_t epoch = 0;          // Disconnected events seen
  uint64_t ready_ns = 0;       // the last time the subscription was in place (subscribe ack or Connected)
  std::vector<Period> periods;
  std::vector<std::pair<uint64_t, std::string>> events;  // (mono ns, state)
  int vfd = -1;

  // Totals.
  uint64_t published = 0, publish_failed = 0;
  uint64_t received = 0, streams = 0, gaps_allowed = 0, missing_allowed = 0, mid_stream_starts = 0;
  uint64_t old_incarnation = 0;
  uint64_t served = 0;
  uint64_t requests = 0, replies_ok = 0, replies_err = 0;
  std::map<std::string, uint64_t> errors;  // request errors by code
  uint64_t violations = 0;

  void work(uint64_t n = 1) {
    if (!periods.empty() && periods.back().to_ns == 0) periods.back().work += n;
  }

  void violation(const std::string& what) {
    ++violations;
    if (vfd < 0) return;
    std::string line = std::to_string(bus::clock::mono_ns());
    line += ' ';
    line += name;
    line += ' ';
    line += what;
    line += '\n';
    (void)!::write(vfd, line.data(), line.size());
  }

  void on_state(bus::ConnectionState s, const bus::Error* why) {
    const uint64_t now = bus::clock::mono_ns();
    events.emplace_back(now, std::string(bus::to_string(s)));
    if (s == bus::ConnectionState::Disconnected || s == bus::ConnectionState::Closed) {
      ++epoch;
      if (!periods.empty() && periods.back().to_ns == 0) periods.back().to_ns = now;
    } else if (s == bus::ConnectionState::Connected) {
      ready_ns = now;  // resubscribed (ensure_connected() resubscribes before it says so)
      need_warm = warm > 0;
      periods.push_back({now, 0, 0});
      if (why != nullptr) violation("resubscribe refused: " + why->message());
    }
  }

  void write_stats(bool final_) {
    std::string j = "{";
    auto kv = [&](const char* k, const std::string& v, bool quote) {
      if (j.size() > 1) j += ',';
      j += '"';
      j += k;
      j += "\":";
      if (quote) j += '"';
      j += v;
      if (quote) j += '"';
    };
    auto num = [&](const char* k, uint64_t v) { kv(k, std::to_string(v), false); };
    kv("role", role, true);
    kv("name", name, true);
    kv("host", host, true);
    kv("subject", subject, true);
    num("id", id);
    num("inc", inc);
    num("pid", static_cast<uint64_t>(::getpid()));
    num("started_ns", started_ns);
    num("written_ns", bus::clock::mono_ns());
    kv("final", final_ ? "true" : "false", false);
    num("epoch", epoch);
    num("published", published);
    num("publish_failed", publish_failed);
    num("received", received);
    num("streams", streams);
    num("gaps_allowed", gaps_allowed);
    num("missing_allowed", missing_allowed);
    num("mid_stream_starts", mid_stream_starts);
    num("old_incarnation", old_incarnation);
    num("served", served);
    num("requests", requests);
    num("replies_ok", replies_ok);
    num("replies_err", replies_err);
    num("violations", violations);
    if (c != nullptr) {
      const auto& st = c->stats();
      num("lane_sent", st.lane_sent);
      num("lane_received", st.lane_received);
      num("lanes_opened", st.lanes_opened);
      num("reconnects", st.reconnects);
      num("resubscribe_failures", st.resubscribe_failures);
      kv("state", std::string(bus::to_string(c->state())), true);
    }
    std::string e = "{";
    for (const auto& [k, v] : errors) {
      if (e.size() > 1) e += ',';
      e += '"' + k + "\":" + std::to_string(v);
    }
    e += '}';
    kv("errors", e, false);
    std::string p = "[";
    for (const auto& x : periods) {
      if (p.size() > 1) p += ',';
      p += '[' + std::to_string(x.from_ns) + ',' + std::to_string(x.to_ns) + ',' + std::to_string(x.work) + ']';
    }
    p += ']';
    kv("periods", p, false);
    std::string ev = "[";
    for (const auto& [t, s] : events) {
      if (ev.size() > 1) ev += ',';
      ev += '[' + std::to_string(t) + ",\"" + s + "\"]";
    }
    ev += ']';
    kv("events", ev, false);
    j += "}\n";
    const std::string path = out + "/" + name + ".json";
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    const bool ok = ::write(fd, j.data(), j.size()) == static_cast<ssize_t>(j.size());
    ::close(fd);
    if (ok) (void)::rename(tmp.c_str(), path.c_str());
  }

  // ---- sub
  struct Stream {
    uint64_t seq = 0, pub_epoch = 0, sub_epoch = 0;
  };
  std::unordered_map<uint64_t, Stream> stream;   // (id << 24 | inc)
  std::unordered_map<uint64_t, uint64_t> newest;  // publisher id -> newest incarnation seen

  void on_message(const bus::Message& m) {
    const std::string_view t = m.text();
    const auto f = split(t, '|');
    uint64_t pid = 0, pinc = 0, pepoch = 0, seq = 0, t_first = 0, t_pub = 0;
    if (f.size() != 9 || f[0] != "P" || !to_u64(f[2], pid) || !to_u64(f[3], pinc) || !to_u64(f[4], pepoch) ||
        !to_u64(f[5], seq) || !to_u64(f[6], t_first) || !to_u64(f[7], t_pub) || seq == 0 ||
        f[8] != hex(fnv(t.substr(0, t.size() - f[8].size() - 1)))) {
      violation("damaged payload on " + std::string(m.subject()) + ": '" + std::string(t.substr(0, 120)) + "'");
      return;
    }
    ++received;
    work();
    uint64_t& nw = newest[pid];
    if (pinc < nw) {
      ++old_incarnation;  // a dead incarnation's message after a newer one's: another agent
    }
    nw = std::max(nw, pinc);
    const uint64_t key = pid << 24 | pinc;
    auto it = stream.find(key);
    const std::string who = std::string(f[1]) + "/" + std::string(f[2]) + "." + std::string(f[3]);
    if (it == stream.end()) {
      ++streams;
      stream.emplace(key, Stream{seq, pepoch, epoch});
      if (seq != 1) {
        // Joined mid-stream. Fine when the stream began before we were subscribed (or
        // resubscribed), or the publisher reconnected since it began; not otherwise.
        ++mid_stream_starts;
        const bool same_host = f[1] == host;
        if (strict_start && same_host && pepoch == 0 && t_first > ready_ns + 20 * kMs) {
          violation("lost the start of " + who + ": first seen seq " + std::to_string(seq) +
                    ", stream began " + std::to_string((t_first - ready_ns) / kMs) +
                    " ms after this subscriber was subscribed");
        }
      }
      return;
    }
    Stream& s = it->second;
    if (seq <= s.seq) {
      violation((seq == s.seq ? "duplicate " : "out of order ") + who + " seq " + std::to_string(seq) +
                " after " + std::to_string(s.seq) + " on " + std::string(m.subject()) +
                (m.lane() != 0 ? " (lane)" : " (busd)"));
      return;
    }
    if (seq != s.seq + 1) {
      if (pepoch != s.pub_epoch || epoch != s.sub_epoch) {
        ++gaps_allowed;
        missing_allowed += seq - s.seq - 1;
      } else {
        violation("gap in " + who + ": seq " + std::to_string(seq) + " after " + std::to_string(s.seq) +
                  " with no busd restart in between (publisher epoch " + std::to_string(pepoch) +
                  ", subscriber epoch " + std::to_string(epoch) + ") on " + std::string(m.subject()) +
                  (m.lane() != 0 ? " (lane)" : " (busd)") + ", " +
                  std::to_string(static_cast<int64_t>(bus::clock::mono_ns() - ready_ns) / 1000000) +
                  " ms after this subscriber was (re)subscribed; this one published " +
                  std::to_string(static_cast<int64_t>(t_pub - ready_ns) / 1000000) + " ms after it");
      }
    }
    s = Stream{seq, pepoch, epoch};
  }

  // ---- req
  std::string request_payload(uint64_t n, std::mt19937_64& rng) {
    return "Q|" + name + "|" + std::to_string(inc) + "|" + std::to_string(n) + "|" + hex(rng());
  }
  static std::string expected_prefix(std::string_view req) {
    std::string e = "R|";
    e += req;
    e += '|';
    e += hex(fnv(req));
    e += '|';
    return e;
  }
  void check_reply(const std::string& req, const bus::Expected<bus::Message>& r) {
    if (!r) {
      ++replies_err;
      ++errors[std::string(bus::errc_name(r.error().code()))];
      return;
    }
    const std::string_view t = r->text();
    const std::string want = expected_prefix(req);
    if (t.size() <= want.size() || t.substr(0, want.size()) != want) {
      violation("reply does not match its request: sent '" + req + "', got '" + std::string(t.substr(0, 160)) + "'");
      return;
    }
    ++replies_ok;
    work();
  }
};

template <typename F>
bool retry_until_stopped(F&& f) {
  while (!g_stop.load()) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Agent a;
  CLI::App app{"soak test agent"};
  std::string wait = "adaptive";
  app.add_option("role", a.role, "pub | sub | resp | req")->required()->check(CLI::IsMember({"pub", "sub", "resp", "req"}));
  app.add_option("--name", a.name, "agent name (unique on its host)")->required();
  app.add_option("--host", a.host, "the host it runs on (in payloads)")->required();
  app.add_option("--id", a.id, "publisher id")->required();
  app.add_option("--inc", a.inc, "incarnation (how many times this agent was restarted)")->required();
  app.add_option("--subject", a.subject, "subject or pattern")->required();
  app.add_option("--out", a.out, "directory for NAME.json and NAME.violations")->required();
  app.add_option("--group", a.group, "resp: queue group");
  app.add_option("--rate", a.rate, "pub/req: per second")->check(CLI::Range(0.1, 10000.0));
  app.add_option("--async", a.async, "req: requests in flight with send_request() (0: request())")->check(CLI::Range(0, 64));
  app.add_option("--timeout-ms", a.timeout_ms, "req: request timeout")->check(CLI::Range(1, 60000));
  app.add_flag("--strict-start", a.strict_start, "sub: a same-host stream that began after we subscribed must start at seq 1");
  app.add_option("--warm", a.warm,
                 "after each (re)connect, send this many bytes to itself through busd: busd touches "
                 "every page of the agent's rings at once, so its RSS does not creep up as they fill")
      ->check(CLI::Range(0, 64 << 20));
  app.add_option("--wait", wait, "wait strategy (adaptive | block | yield | spin)");
  CLI11_PARSE(app, argc, argv);
  a.name += "-i" + std::to_string(a.inc);

  a.vfd = ::open((a.out + "/" + a.name + ".violations").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (a.vfd < 0) {
    std::fprintf(stderr, "soak_agent: cannot open %s/%s.violations: %s\n", a.out.c_str(), a.name.c_str(), std::strerror(errno));
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    g_stop.store(true);
    if (g_client != nullptr) g_client->stop();
  };
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);

  // busd may be down (restarting) when we start: connect until it answers.
  bus::ClientOptions o;
  o.name = a.name;
  o.wait = wait;
  o.reconnect = true;
  std::unique_ptr<bus::Client> client;
  a.write_stats(false);
  if (!retry_until_stopped([&] {
        auto c = bus::Client::connect(o);
        if (!c) return false;
        client = std::move(*c);
        return true;
      })) {
    a.write_stats(true);
    return 0;
  }
  bus::Client& c = *client;
  a.c = &c;
  g_client = &c;
  a.periods.push_back({bus::clock::mono_ns(), 0, 0});
  a.events.emplace_back(bus::clock::mono_ns(), "connected");
  c.on_state_change([&](bus::ConnectionState s, const bus::Error* why) { a.on_state(s, why); });

  // Warm-up: a subscription of its own (busd never lanes an agent's messages to itself).
  const std::string warm_subject = "warm." + std::to_string(a.id);
  uint64_t warmed = 0;
  if (a.warm > 0) {
    if (!retry_until_stopped([&] {
          auto s = c.subscribe(warm_subject, [&](const bus::Message& m) { warmed += m.payload().size(); });
          if (!s) (void)c.poll(std::chrono::milliseconds(50));
          return s.has_value();
        })) {
      a.write_stats(true);
      return 0;
    }
    a.need_warm = true;
  }
  auto warm_up = [&] {
    a.need_warm = false;
    const std::string chunk(4096, 'w');
    warmed = 0;
    for (uint64_t sent = 0; sent < a.warm && !g_stop.load(); sent += chunk.size()) {
      if (!c.publish(warm_subject, chunk)) return;  // disconnected again: next Connected retries
      (void)c.poll(std::chrono::nanoseconds(0));
    }
    const uint64_t until = bus::clock::mono_ns() + 500 * kMs;
    while (warmed + chunk.size() <= a.warm && bus::clock::mono_ns() < until && !g_stop.load()) {
      (void)c.poll(std::chrono::milliseconds(10));
    }
  };

  std::mt19937_64 rng(std::random_device{}() ^ (a.id << 32) ^ a.inc);
  std::unordered_map<uint64_t, std::string> in_flight;  // async requests: id -> payload
  if (a.role == "sub" || a.role == "resp") {
    const bool is_sub = a.role == "sub";
    bus::Handler h;
    if (is_sub) {
      h = [&](const bus::Message& m) { a.on_message(m); };
    } else {
      h = [&](const bus::Message& m) {
        const std::string_view req = m.text();
        std::string rep = "R|";
        rep += req;
        rep += '|';
        rep += hex(fnv(req));
        rep += '|';
        rep += a.name;
        if (c.reply(m, rep)) {
          ++a.served;
          a.work();
        }
      };
    }
    // A subscribe can fail while busd restarts under us (Closed, Timeout): try again.
    if (!retry_until_stopped([&] {
          auto s = c.subscribe(a.subject, h, a.group);
          if (!s) {
            (void)c.poll(std::chrono::milliseconds(50));
            return false;
          }
          a.ready_ns = bus::clock::mono_ns();
          return true;
        })) {
      a.write_stats(true);
      return 0;
    }
  }
  if (a.role == "req" && a.async > 0) {
    c.on_reply([&](uint64_t rid, const bus::Expected<bus::Message>& r) {
      auto it = in_flight.find(rid);
      if (it == in_flight.end()) {
        a.violation("an answer to request id " + std::to_string(rid) + " that is not in flight (unknown or answered twice)");
        return;
      }
      a.check_reply(it->second, r);
      in_flight.erase(it);
    });
  }

  const uint64_t period = static_cast<uint64_t>(1e9 / a.rate);
  uint64_t due = bus::clock::mono_ns() + period;
  uint64_t next_stats = bus::clock::mono_ns() + 1000 * kMs;
  uint64_t seq = 1, t_first = 0, n = 0;
  while (!g_stop.load()) {
    if (a.need_warm) warm_up();
    uint64_t now = bus::clock::mono_ns();
    if (a.role == "pub" && now >= due) {
      if (t_first == 0) t_first = now;
      std::string p = "P|" + a.host + "|" + std::to_string(a.id) + "|" + std::to_string(a.inc) + "|" +
                      std::to_string(a.epoch) + "|" + std::to_string(seq) + "|" + std::to_string(t_first) + "|" +
                      std::to_string(now);
      p += '|' + hex(fnv(p));
      if (c.publish(a.subject, p)) {
        ++seq;
        ++a.published;
        a.work();
      } else {
        ++a.publish_failed;  // not connected, or pushed back: the same seq goes next time
      }
      due = std::max(due + period, now - 5 * period);
    } else if (a.role == "req" && now >= due) {
      const std::string req = a.request_payload(++n, rng);
      ++a.requests;
      if (a.async == 0) {
        auto r = c.request(a.subject, req, std::chrono::milliseconds(a.timeout_ms));
        a.check_reply(req, r);
      } else if (in_flight.size() < static_cast<size_t>(a.async)) {
        auto id = c.send_request(a.subject, req, std::chrono::milliseconds(a.timeout_ms));
        if (id) {
          if (!in_flight.emplace(*id, req).second) a.violation("send_request returned an id already in flight");
        } else {
          ++a.replies_err;
          ++a.errors[std::string(bus::errc_name(id.error()))];
        }
      } else {
        --a.requests;  // all slots busy: skip this tick
      }
      now = bus::clock::mono_ns();
      due = std::max(due + period, now);
    }
    if (now >= next_stats) {
      a.write_stats(false);
      next_stats = now + 1000 * kMs;
    }
    const uint64_t until = (a.role == "pub" || a.role == "req") ? std::min(due, next_stats) : next_stats;
    now = bus::clock::mono_ns();
    const uint64_t wait_ns = until > now ? std::min<uint64_t>(until - now, 200 * kMs) : 0;
    (void)c.poll(std::chrono::nanoseconds(wait_ns));
  }
  // SIGTERM: take what already arrived, then report.
  (void)c.poll(std::chrono::milliseconds(0));
  a.write_stats(true);
  g_client = nullptr;
  client.reset();
  return 0;
}
