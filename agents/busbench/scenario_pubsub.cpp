// busbench pubsub: one publisher (busbench) to N subscriber processes through busd, as fast as
// back-pressure lets it: msgs/s and MB/s with and without batching, next to the raw ring with
// records of the encoded message's size (each copied in and out: the ceiling), and the
// envelope build and verify costs.
#include <cstdio>
#include <cstring>
#include <thread>

#include "baselines.hpp"
#include "bus/clock.hpp"
#include "bus/envelope.hpp"
#include "scenario_kit.hpp"

namespace bus::bench {

// Payloads carry a sequence number in their first 8 bytes: a subscriber checks the order.
int subscriber_main(const std::string& socket, const std::string& subject, int index, const BusOptions& o, AgentCtl& ctl) {
  uint64_t n = 0, expect = 0;
  return serve(socket, "busbench-sub" + std::to_string(index) + "-" + std::to_string(::getppid()), subject, "", o, ctl,
               [&](Client&, const Message& m) {
                 if (m.payload().size() >= 8) {
                   uint64_t seq = 0;
                   std::memcpy(&seq, m.payload().data(), 8);
                   if (seq != expect) ctl.errors.fetch_add(1, std::memory_order_relaxed);
                   if (seq < expect) ctl.backwards.fetch_add(1, std::memory_order_relaxed);
                   expect = seq + 1;
                 }
                 ++n;
                 ctl.count.store(n, std::memory_order_relaxed);
                 if (n == ctl.target.load(std::memory_order_relaxed)) {
                   ctl.done_ns.store(clock::mono_ns(), std::memory_order_release);
                 }
               });
}

Burst::Burst(Client& c, std::string subject, AgentCtl* subs, uint32_t n, uint32_t payload)
    : c_(c), subject_(std::move(subject)), subs_(subs), n_(n), msg_(payload, std::byte{0x5A}) {}

void Burst::probe(int ms) {
  const uint64_t give_up = clock::mono_ns() + static_cast<uint64_t>(ms) * 1'000'000u;
  auto all_got_one = [&] {
    for (uint32_t i = 0; i < n_; ++i) {
      if (subs_[i].count.load() == 0) return false;
    }
    return true;
  };
  while (!all_got_one()) {
    if (clock::mono_ns() > give_up) {
      throw std::runtime_error("no message reached the subscribers within " + std::to_string(ms) +
                               " ms (their subscription did not reach the publisher's busd)");
    }
    if (msg_.size() >= 8) std::memcpy(msg_.data(), &seq_, 8);
    ++seq_;
    if (!c_.publish(subject_, msg_)) ++failed_;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Quiet: the last probes in flight have arrived when the counts stop moving.
  for (uint64_t before = UINT64_MAX, now = 0;; before = now) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    now = 0;
    for (uint32_t i = 0; i < n_; ++i) now += subs_[i].count.load();
    if (now == before) break;
  }
  delivered_ = subs_[0].count.load();
  for (uint32_t i = 0; i < n_; ++i) {
    if (subs_[i].count.load() != delivered_) throw std::runtime_error("the subscribers got different probes");
    subs_[i].errors.store(0);  // the probes published before the subscription crossed left a gap
    subs_[i].backwards.store(0);
  }
}

double Burst::run(uint64_t count, uint32_t batch, CpuMeter& cpu, Report& rep, const std::function<uint64_t()>& dropped) {
  const uint64_t target = delivered_ + count;
  const uint64_t dropped_before = dropped ? dropped() : 0;
  last_dropped_ = 0;
  for (uint32_t i = 0; i < n_; ++i) {
    subs_[i].done_ns.store(0);
    subs_[i].target.store(target);
  }
  cpu.start();
  const uint64_t t0 = clock::mono_ns();
  for (uint64_t i = 0; i < count; ++i) {
    if (msg_.size() >= 8) std::memcpy(msg_.data(), &seq_, 8);
    ++seq_;
    const bool last_of_batch = batch <= 1 || (i + 1) % batch == 0 || i + 1 == count;
    if (!c_.publish(subject_, msg_, last_of_batch ? Flush::Now : Flush::Later)) {
      ++failed_;
      break;
    }
  }
  c_.flush();
  // Waits up to 30 s, and gives up sooner once a subscriber's count has not moved for 3 s. With
  // `dropped`, a subscriber is done once what it got and what busd dropped make up the burst;
  // its last message is then timed by this loop (to ~0.1 ms) rather than by the subscriber.
  const uint64_t give_up = clock::mono_ns() + 30'000'000'000ull;
  uint64_t last = 0;
  for (uint32_t i = 0; i < n_; ++i) {
    uint64_t d = 0, seen = subs_[i].count.load(), moved = clock::mono_ns();
    while ((d = subs_[i].done_ns.load(std::memory_order_acquire)) == 0) {
      const uint64_t now = clock::mono_ns();
      if (const uint64_t c = subs_[i].count.load(); c != seen) {
        seen = c;
        moved = now;
      }
      if (dropped) {
        last_dropped_ = dropped() - dropped_before;
        if (seen + last_dropped_ >= target && last_dropped_ > 0) {
          d = moved;
          break;
        }
      }
      if (now > give_up || now - moved > 3'000'000'000ull) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (d == 0) {
      throw std::runtime_error("subscriber " + std::to_string(i) + " got " + std::to_string(subs_[i].count.load()) +
                               " of " + std::to_string(target) + " messages (" +
                               std::to_string(target - std::min(target, subs_[i].count.load())) + " missing" +
                               (dropped ? ", " + std::to_string(last_dropped_) + " of them dropped by busd)" : ")"));
    }
    last = std::max(last, d);
  }
  const uint64_t got = subs_[0].count.load() - delivered_;  // count, unless busd dropped some
  delivered_ += got;
  cpu.stop(rep, static_cast<double>(count));
  return static_cast<double>(got) / (static_cast<double>(last - t0) / 1e9);
}

uint64_t Burst::out_of_order() const noexcept {
  uint64_t n = 0;
  for (uint32_t i = 0; i < n_; ++i) n += subs_[i].errors.load();
  return n;
}

uint64_t Burst::backwards() const noexcept {
  uint64_t n = 0;
  for (uint32_t i = 0; i < n_; ++i) n += subs_[i].backwards.load();
  return n;
}

namespace {

inline void keep(const void* p) noexcept { asm volatile("" : : "r"(p) : "memory"); }


// The [lanes] issue: "pubsub 1->1, 64 B, batched: >= 50% of the raw ring baseline (same-size
// records copied in and out)".
void add_pubsub_targets(Report& rep, const BusOptions& o, const std::vector<Variant>& vars, const std::string& batched,
                        const std::string& ring) {
  const ThroughputRow* base = nullptr;
  const ThroughputRow* on = nullptr;
  const ThroughputRow* off = nullptr;
  for (const auto& r : rep.throughput_rows()) {
    if (r.name == ring) base = &r;
  }
  std::string setup;
  if (o.subscribers != 1) setup = std::to_string(o.subscribers) + " subscribers, not 1";
  if (o.payload != 64) setup.append(setup.empty() ? "" : ", ").append("payload " + std::to_string(o.payload) + " B, not 64 B");
  for (const auto& v : vars) {
    const ThroughputRow* row = nullptr;
    for (const auto& r : rep.throughput_rows()) {
      if (r.name == v.row(batched)) row = &r;
    }
    if (row == nullptr) continue;
    (v.lanes == 0 ? off : on) = row;
    if (base == nullptr) continue;
    const bool for_lanes = v.lanes != 0;
    TargetLine t;
    t.variant = v.label;
    t.name = "pubsub 1->" + std::to_string(o.subscribers) + " batch " + std::to_string(o.batch) + ", " + v.row("busd") + ":";
    t.value = 100 * same_run_ratio(*row, *base);
    t.unit = std::string(1, '%');  // not = "%": a GCC 12 -Wrestrict false positive
    t.of = std::string("of the raw ring (").append(std::to_string(base->record_bytes)).append(" B records copied in and out)");
    t.limit = for_lanes ? 50 : 0;
    t.at_most = false;
    t.judged = for_lanes && setup.empty();
    t.note = !for_lanes ? "for comparison; the target (\u2265 50%) is for lanes" : setup;
    rep.target(t);
  }
  if (on != nullptr && off != nullptr) {
    TargetLine t;
    t.name = "pubsub batched, busd (lanes) / busd (no lanes): msgs/s";
    t.value = same_run_ratio(*on, *off);
    t.unit = "x";
    t.note = "same-run ratio, for comparison";
    rep.target(t);
  }
  if (base == nullptr) rep.note("no raw ring baseline in this run (--no-baseline): no target lines");
}

}  // namespace

int run_pubsub(const BusOptions& o) {
  if (o.subscribers < 1 || o.subscribers > 256) throw std::runtime_error("--subscribers must be 1..256");
  if (o.count == 0) throw std::runtime_error("pubsub needs --count (messages per run)");
  const Clock clk = Clock::calibrate();
  std::vector<Variant> vars = start_variants(o);
  const size_t nv = vars.size();
  const std::string subject = subject_prefix() + ".pub";

  // Subscribers of variant v are ctl[v * subscribers + i].
  const uint32_t ns = o.subscribers;
  Shared<AgentCtl> ctl(ns * nv);
  std::vector<std::vector<Child>> subs;
  for (size_t v = 0; v < nv; ++v) {
    const std::string socket = vars[v].bus->socket();
    auto ctl_of = [&, v](size_t i) -> AgentCtl& { return ctl[v * ns + i]; };
    subs.push_back(start_agents(ns, vars[v].row("subscriber"), ctl_of, [&, socket, v](size_t i) {
      return subscriber_main(socket, subject, static_cast<int>(i), o, ctl[v * ns + i]);
    }));
  }
  auto serving = [&](size_t v) {
    std::vector<AgentCtl*> s;
    for (uint32_t i = 0; i < ns; ++i) s.push_back(&ctl[v * ns + i]);
    return s;
  };
  pin_thread(pin_of(o, 0));
  std::vector<std::unique_ptr<Client>> clients;
  for (size_t v = 0; v < nv; ++v) {
    clients.push_back(connect_agent(vars[v].bus->socket(), "busbench-" + std::to_string(::getpid()), o.wait));
  }

  // The encoded size of one message: what the ring carries per message.
  auto tmpl = EnvelopeTemplate::make({subject});
  if (!tmpl) throw std::runtime_error(tmpl.error().message());
  const auto record = static_cast<uint32_t>(tmpl->size_for(o.payload));

  const std::string header =
      "busbench pubsub: 1 publisher -> busd -> " + std::to_string(ns) + " subscriber process(es), " +
      std::to_string(o.payload) + " B payload (" + std::to_string(record) + " B encoded), " + std::to_string(o.count) +
      " messages x " + std::to_string(o.runs) + " runs" +
      (nv > 1 ? ", lanes on and off (one private busd each, runs interleaved)" : "") + "\n" +
      who_waits(o, vars, "subscribers") + "\n  clock " + clk.describe();
  Report rep("pubsub", header);
  rep.set_targets_title("targets of the [lanes] issue (medians of same-run ratios)");
  rep.note("msgs/s: messages published per second, each delivered to every subscriber (from the first publish to "
           "the last subscriber's last message); MB/s counts payload bytes (encoded bytes for the raw ring)");
  rep.note("CPU per million messages counts each message once (deliveries: x" + std::to_string(ns) + ")");
  for (const auto& n : o.wait_notes) rep.note(n);
  std::vector<CpuMeter> cpu(nv);
  for (size_t v = 0; v < nv; ++v) {
    cpu[v].add(vars[v].row("busbench (publisher)"), "wait=" + o.wait, {0});
    std::vector<pid_t> pids;
    for (auto& c : subs[v]) pids.push_back(c.pid());
    cpu[v].add(vars[v].row("subscribers (" + std::to_string(ns) + ", summed)"), "wait=" + o.wait, pids);
    if (vars[v].bus->pid() > 0) cpu[v].add(vars[v].row("busd"), "wait per busd config", {vars[v].bus->pid()});
  }

  std::vector<std::unique_ptr<Burst>> bursts;
  for (size_t v = 0; v < nv; ++v) bursts.push_back(std::make_unique<Burst>(*clients[v], subject, &ctl[v * ns], ns, o.payload));
  // A warm-up burst per busd: envelope templates, and the lane (if any) set up before a run counts.
  for (size_t v = 0; v < nv; ++v) {
    only_serving(nv, v, serving);
    progress(o, 0, vars[v].row("warm-up").c_str());
    Report scratch("warm-up", "");
    CpuMeter none;
    (void)bursts[v]->run(std::max<uint64_t>(o.warmup, 1), o.batch, none, scratch);
  }
  const std::vector<std::byte> payload(o.payload, std::byte{0x5A});
  std::vector<uint64_t> out_words(record / 8 + 2);
  auto* out = reinterpret_cast<std::byte*>(out_words.data());
  const std::string ring_row = "raw SPSC ring, batch " + std::to_string(o.batch);
  const std::string batched_row = "busd pubsub 1->" + std::to_string(ns) + ", batch " + std::to_string(o.batch);
  const std::string unbatched_row = "busd pubsub 1->" + std::to_string(ns) + ", unbatched";
  std::vector<double> lane_shares(nv, -1);
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      for (size_t v = 0; v < nv; ++v) set_standby(serving(v), true);
      progress(o, run, "raw ring, copy in and out");
      // stream_ring_copy pins its sides and gives this thread its affinity back.
      const int a = pin_of(o, 0) >= 0 ? pin_of(o, 0) : (online_cpus() >= 2 ? 0 : -1);
      const int b = pin_of(o, 1) >= 0 ? pin_of(o, 1) : (online_cpus() >= 2 ? 1 : -1);
      rep.throughput(ring_row, "records of " + std::to_string(record) + " B copied in and out, spin, cpus " +
                                   std::to_string(a) + "," + std::to_string(b),
                     true, record)
          .msgs_per_s.push_back(stream_ring_copy(record, std::max<uint64_t>(o.count, 100'000), o.batch, a, b));
      progress(o, run, "raw TCP loopback streaming");
      rep.throughput("raw TCP loopback, batch " + std::to_string(o.batch),
                     "two processes, " + std::to_string(record) + " B records, " + std::to_string(o.batch) +
                         " per send(), TCP_NODELAY: what a socket-based bus starts from",
                     true, record)
          .msgs_per_s.push_back(stream_tcp(record, std::max<uint64_t>(o.count, 100'000), o.batch));
      // The per-message encoding costs busbench's publisher and busd pay, one thread.
      constexpr uint64_t kIter = 200'000;
      MessageMeta meta;
      uint64_t t0 = clock::mono_ns();
      for (uint64_t i = 0; i < kIter; ++i) {
        meta.msg_id = i;
        tmpl->write(out, payload, meta);
        keep(out);
      }
      rep.cost("envelope build (EnvelopeTemplate::write)").ns_per_op.push_back(static_cast<double>(clock::mono_ns() - t0) / kIter);
      const std::span<const std::byte> enc(out, record);
      t0 = clock::mono_ns();
      for (uint64_t i = 0; i < kIter; ++i) {
        auto v = EnvelopeView::verify(enc, defaults::kMaxMessageSize);
        keep(&v);
      }
      rep.cost("envelope verify (EnvelopeView::verify)").ns_per_op.push_back(static_cast<double>(clock::mono_ns() - t0) / kIter);
    }
    for (const size_t v : run_order(nv, run)) {
      const Variant& var = vars[v];
      Burst& burst = *bursts[v];
      only_serving(nv, v, serving);
      const Client::Stats stats_before = clients[v]->stats();
      progress(o, run, var.row("busd pubsub, batched").c_str());
      auto& batched = rep.throughput(var.row(batched_row), "publish(Flush::Later), flush every " + std::to_string(o.batch),
                                     false, o.payload);
      batched.lanes = var.lanes;
      batched.msgs_per_s.push_back(burst.run(o.count, o.batch, cpu[v], rep));
      progress(o, run, var.row("busd pubsub, unbatched").c_str());
      auto& unbatched = rep.throughput(var.row(unbatched_row), "every publish() wakes busd (or the lane's reader)",
                                       false, o.payload);
      unbatched.lanes = var.lanes;
      unbatched.msgs_per_s.push_back(burst.run(o.count, 1, cpu[v], rep));
      lane_shares[v] = std::max(lane_shares[v], lane_share(stats_before, clients[v]->stats()));
      if (var.bus->pid() > 0) {
        rep.fact(var.row("busd RSS"), "MiB", true).values.push_back(static_cast<double>(memory_of(var.bus->pid()).rss) / (1 << 20));
      }
      if (!var.bus->alive()) throw std::runtime_error(var.row("busd") + " died during the run");
    }
  }
  uint64_t out_of_order = 0, failed = 0;
  for (const auto& b : bursts) {
    out_of_order += b->out_of_order();
    failed += b->failed();
  }
  rep.fact("messages out of order or missing", "", true).values.push_back(static_cast<double>(out_of_order));
  rep.fact("publish failures", "", true).values.push_back(static_cast<double>(failed));
  for (size_t v = 0; v < nv; ++v) {
    if (vars[v].lanes < 0 || lane_shares[v] < 0) continue;
    rep.fact("sent over a lane, " + vars[v].row("busd"), "% of busbench's messages").values.push_back(100 * lane_shares[v]);
    if (auto n = lane_use_note(vars[v], lane_shares[v]); !n.empty()) rep.note(n);
  }
  if (nv > 1) {
    rep.note("runs: the baselines, then each busd in turn (the order alternates run by run); the subscribers of the "
             "busd not measured sleep meanwhile");
  }
  add_pubsub_targets(rep, o, vars, batched_row, ring_row);
  bursts.clear();
  clients.clear();
  for (size_t v = 0; v < nv; ++v) {
    auto ctl_of = [&, v](size_t i) -> AgentCtl& { return ctl[v * ns + i]; };
    stop_all(subs[v], ctl_of);
  }
  return finish(rep, o, out_of_order + failed > 0 ? 1 : 0);
}

}  // namespace bus::bench
