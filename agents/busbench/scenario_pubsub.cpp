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
#include "bus_kit.hpp"

namespace bus::bench {
namespace {

// Payloads carry a sequence number in their first 8 bytes: a subscriber checks the order.
int subscriber_main(const std::string& socket, const std::string& subject, int index, const BusOptions& o, AgentCtl& ctl) {
  uint64_t n = 0, expect = 0;
  return serve(socket, "busbench-sub" + std::to_string(index) + "-" + std::to_string(::getppid()), subject, "", o, ctl,
               [&](Client&, const Message& m) {
                 if (m.payload().size() >= 8) {
                   uint64_t seq = 0;
                   std::memcpy(&seq, m.payload().data(), 8);
                   if (seq != expect) ctl.errors.fetch_add(1, std::memory_order_relaxed);
                   expect = seq + 1;
                 }
                 ++n;
                 ctl.count.store(n, std::memory_order_relaxed);
                 if (n == ctl.target.load(std::memory_order_relaxed)) {
                   ctl.done_ns.store(clock::mono_ns(), std::memory_order_release);
                 }
               });
}

inline void keep(const void* p) noexcept { asm volatile("" : : "r"(p) : "memory"); }

}  // namespace

int run_pubsub(const BusOptions& o) {
  if (o.subscribers < 1 || o.subscribers > 256) throw std::runtime_error("--subscribers must be 1..256");
  if (o.count == 0) throw std::runtime_error("pubsub needs --count (messages per run)");
  const Clock clk = Clock::calibrate();
  BusTarget bus(target_options(o));
  const std::string subject = subject_prefix() + ".pub";

  Shared<AgentCtl> ctl(o.subscribers);
  auto ctl_of = [&](size_t i) -> AgentCtl& { return ctl[i]; };
  std::vector<Child> subs = start_agents(o.subscribers, "subscriber", ctl_of, [&](size_t i) {
    return subscriber_main(bus.socket(), subject, static_cast<int>(i), o, ctl[i]);
  });
  pin_thread(pin_of(o, 0));
  auto client = connect_agent(bus.socket(), "busbench-" + std::to_string(::getpid()), o.wait);

  // The encoded size of one message: what the ring carries per message.
  auto tmpl = EnvelopeTemplate::make({subject});
  if (!tmpl) throw std::runtime_error(tmpl.error().message());
  const auto record = static_cast<uint32_t>(tmpl->size_for(o.payload));

  const std::string header =
      "busbench pubsub: 1 publisher -> busd -> " + std::to_string(o.subscribers) + " subscriber process(es), " +
      std::to_string(o.payload) + " B payload (" + std::to_string(record) + " B encoded), " + std::to_string(o.count) +
      " messages x " + std::to_string(o.runs) + " runs\n" + who_waits(o, bus, "subscribers") + "\n  clock " +
      clk.describe();
  Report rep("pubsub", header);
  rep.note("msgs/s: messages published per second, each delivered to every subscriber (from the first publish to "
           "the last subscriber's last message); MB/s counts payload bytes (encoded bytes for the raw ring)");
  rep.note("CPU per million messages counts each message once (deliveries: x" + std::to_string(o.subscribers) + ")");
  CpuMeter cpu;
  cpu.add("busbench (publisher)", "wait=" + o.wait, {0});
  std::vector<pid_t> pids;
  for (auto& s : subs) pids.push_back(s.pid());
  cpu.add("subscribers (" + std::to_string(o.subscribers) + ", summed)", "wait=" + o.wait, pids);
  if (bus.pid() > 0) cpu.add("busd", "wait per busd config", {bus.pid()});

  std::vector<std::byte> msg(o.payload, std::byte{0x5A});
  uint64_t seq = 0;
  uint64_t delivered_total = 0;
  uint64_t failed = 0;
  // One measured burst: count messages, batch per flush (1 = every publish wakes busd).
  auto burst = [&](uint32_t batch) -> double {
    const uint64_t target = delivered_total + o.count;
    for (uint32_t i = 0; i < o.subscribers; ++i) {
      ctl[i].done_ns.store(0);
      ctl[i].target.store(target);
    }
    cpu.start();
    const uint64_t t0 = clock::mono_ns();
    for (uint64_t i = 0; i < o.count; ++i) {
      if (msg.size() >= 8) std::memcpy(msg.data(), &seq, 8);
      ++seq;
      const bool last_of_batch = batch <= 1 || (i + 1) % batch == 0 || i + 1 == o.count;
      if (!client->publish(subject, msg, last_of_batch ? Flush::Now : Flush::Later)) {
        ++failed;
        break;
      }
    }
    client->flush();
    const uint64_t give_up = clock::mono_ns() + 30'000'000'000ull;
    uint64_t last = 0;
    for (uint32_t i = 0; i < o.subscribers; ++i) {
      uint64_t d = 0;
      while ((d = ctl[i].done_ns.load(std::memory_order_acquire)) == 0 && clock::mono_ns() < give_up) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      if (d == 0) throw std::runtime_error("subscriber " + std::to_string(i) + " got " + std::to_string(ctl[i].count.load()) +
                                           " of " + std::to_string(target) + " messages within 30 s");
      last = std::max(last, d);
    }
    delivered_total = target;
    cpu.stop(rep, static_cast<double>(o.count));
    return static_cast<double>(o.count) / (static_cast<double>(last - t0) / 1e9);
  };

  const std::vector<std::byte> payload(o.payload, std::byte{0x5A});
  std::vector<uint64_t> out_words(record / 8 + 2);
  auto* out = reinterpret_cast<std::byte*>(out_words.data());
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      progress(o, run, "raw ring, copy in and out");
      // stream_ring_copy pins its sides and gives this thread its affinity back.
      const int a = pin_of(o, 0) >= 0 ? pin_of(o, 0) : (online_cpus() >= 2 ? 0 : -1);
      const int b = pin_of(o, 1) >= 0 ? pin_of(o, 1) : (online_cpus() >= 2 ? 1 : -1);
      rep.throughput("raw SPSC ring, batch " + std::to_string(o.batch), "records of " + std::to_string(record) +
                                                                         " B copied in and out, spin, cpus " +
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
    progress(o, run, "busd pubsub, batched");
    rep.throughput("busd pubsub 1->" + std::to_string(o.subscribers) + ", batch " + std::to_string(o.batch),
                   "publish(Flush::Later), flush every " + std::to_string(o.batch), false, o.payload)
        .msgs_per_s.push_back(burst(o.batch));
    progress(o, run, "busd pubsub, unbatched");
    rep.throughput("busd pubsub 1->" + std::to_string(o.subscribers) + ", unbatched", "every publish() wakes busd",
                   false, o.payload)
        .msgs_per_s.push_back(burst(1));
    if (bus.pid() > 0) rep.fact("busd RSS", "MiB", true).values.push_back(static_cast<double>(memory_of(bus.pid()).rss) / (1 << 20));
    if (!bus.alive()) throw std::runtime_error("busd died during the run");
  }
  uint64_t out_of_order = 0;
  for (uint32_t i = 0; i < o.subscribers; ++i) out_of_order += ctl[i].errors.load();
  rep.fact("messages out of order or missing", "", true).values.push_back(static_cast<double>(out_of_order));
  rep.fact("publish failures", "", true).values.push_back(static_cast<double>(failed));
  client.reset();
  stop_all(subs, ctl_of);
  return finish(rep, o, out_of_order + failed > 0 ? 1 : 0);
}

}  // namespace bus::bench
