// busbench ring: the shared-memory ring alone, between two threads, next to baselines measured
// in the same run: a plain two-thread ping-pong on one cache line (the floor for a round trip)
// and moodycamel::ConcurrentQueue (a well-known queue, for streaming throughput).

#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#include <concurrentqueue/concurrentqueue.h>

#include "baselines.hpp"
#include "clock.hpp"
#include "proc.hpp"
#include "report.hpp"
#include "scenarios.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"

namespace bus::bench {
namespace {

using shm::RingConsumer;
using shm::RingProducer;
using shm::Deadline;

// Keeps the compiler from dropping work whose result is unused.
inline void keep(const void* p) noexcept { asm volatile("" : : "r"(p) : "memory"); }

struct RingPair {
  shm::Segment seg;
  shm::EventFd data, space;
  RingProducer prod;
  RingConsumer cons;
};

RingPair make_ring(uint64_t capacity) {
  RingPair r;
  auto seg = shm::Segment::create_memfd("busbench", shm::ring_bytes(capacity));
  if (!seg) throw std::runtime_error(seg.error().message());
  r.seg = std::move(*seg);
  if (auto f = shm::format_ring(r.seg.bytes(), capacity); !f) throw std::runtime_error(f.error().message());
  r.data = std::move(*shm::EventFd::create());
  r.space = std::move(*shm::EventFd::create());
  const shm::RingFds fds{r.data.fd(), r.space.fd()};
  r.prod = std::move(*RingProducer::attach(r.seg.bytes(), fds));
  r.cons = std::move(*RingConsumer::attach(r.seg.bytes(), fds));
  return r;
}

// ---- round trip through two rings (request ring, reply ring) ----
// Shared state of the two threads lives on its own cache lines and is not read per message:
// a flag next to the other thread's stack traffic would cost the ring a line transfer per trip.
struct alignas(128) Shared {
  std::atomic<bool> failed{false};
};

void rtt_ring(const RingOptions& o, const Clock& clk, Histogram& h, double& seconds) {
  RingPair req = make_ring(o.capacity);
  RingPair rep = make_ring(o.capacity);
  const uint64_t total = o.warmup + o.rounds;
  const uint32_t len = o.payload;
  const auto patience = Deadline::after(10'000'000'000ull);  // a stuck peer fails the run
  Shared shared;
  std::thread pong([&req, &rep, &shared, total, len, patience, ws = o.wait, cpu = o.cpu_pong] {
    pin_thread(cpu);
    for (uint64_t i = 0; i < total; ++i) {
      auto in = req.cons.wait_peek(ws, patience);
      auto out = rep.prod.claim(len, ws, patience);
      if (!in || !out) {
        shared.failed = true;
        return;
      }
      std::memcpy(out->data(), in->data.data(), len);  // echo the request
      rep.prod.commit(len);
      rep.prod.publish();
      req.cons.advance();
      req.cons.release();
    }
  });
  std::vector<std::byte> msg(len, std::byte{0x42});
  bool ok = true;
  const uint64_t t_start = clock::mono_ns();
  for (uint64_t i = 0; i < total; ++i) {
    const uint64_t t0 = clk.now();
    std::memcpy(msg.data(), &i, std::min<size_t>(8, len));
    auto back = req.prod.write(msg, o.wait, patience).and_then([&] { return rep.cons.wait_peek(o.wait, patience); });
    if (!back || back->data.size() != len) {
      ok = false;
      break;
    }
    keep(back->data.data());
    rep.cons.advance();
    rep.cons.release();
    const uint64_t t1 = clk.now();
    if (i >= o.warmup) h.record(clk.to_ns(t1 - t0));
  }
  seconds = static_cast<double>(clock::mono_ns() - t_start) / 1e9;
  pong.join();
  if (!ok || shared.failed) throw std::runtime_error("ring round trip failed (timeout or ring error)");
}

// ---- one-way streaming through a ring, `batch` records per publish ----
double stream_ring(const RingOptions& o, uint32_t batch) {
  RingPair r = make_ring(o.capacity);
  const uint64_t n = o.stream;
  const uint32_t len = o.payload;
  const auto patience = Deadline::after(10'000'000'000ull);
  Shared shared;
  std::thread prod([&r, &shared, n, len, batch, patience, ws = o.wait, cpu = o.cpu_pong] {
    pin_thread(cpu);
    std::vector<std::byte> msg(len, std::byte{7});
    for (uint64_t i = 0; i < n;) {
      const uint64_t end = std::min<uint64_t>(n, i + batch);
      for (; i < end; ++i) {
        auto c = r.prod.claim(len, ws, patience);
        if (!c) {
          shared.failed = true;
          return;
        }
        std::memcpy(c->data(), msg.data(), len);
        r.prod.commit(len);
      }
      r.prod.publish();
    }
  });
  pin_thread(o.cpu_ping);
  const uint64_t t0 = clock::mono_ns();
  uint64_t got = 0;
  bool ok = true;
  while (got < n) {
    if (!r.cons.wait_readable(o.wait, patience)) {
      ok = false;
      break;
    }
    auto k = r.cons.poll([&](const shm::Record& rec) { keep(rec.data.data()); }, 256);
    if (!k) {
      ok = false;
      break;
    }
    got += *k;
  }
  const double secs = static_cast<double>(clock::mono_ns() - t0) / 1e9;
  prod.join();
  if (!ok || shared.failed) throw std::runtime_error("ring streaming failed (timeout or ring error)");
  return static_cast<double>(n) / secs;
}

// ---- one-way streaming through moodycamel::ConcurrentQueue (baseline) ----
// GCC 12 reports a false -Wstringop-overflow inside moodycamel's inlined bulk enqueue (an atomic
// load it cannot size); silenced for this baseline only.
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
template <size_t N>
double stream_moodycamel(const RingOptions& o) {
  struct Msg {
    std::array<std::byte, N> b;
  };
  static constexpr size_t kBulk = 32;
  moodycamel::ConcurrentQueue<Msg> q(o.capacity / N, 1, 0);  // blocks preallocated: no allocation
  const uint64_t n = o.stream;
  std::thread prod([&q, n, cpu = o.cpu_pong] {
    pin_thread(cpu);
    moodycamel::ProducerToken tok(q);
    std::array<Msg, kBulk> out{};
    for (uint64_t i = 0; i < n;) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(kBulk, n - i));
      while (!q.try_enqueue_bulk(tok, out.begin(), k)) shm::cpu_relax();
      i += k;
    }
  });
  pin_thread(o.cpu_ping);
  moodycamel::ConsumerToken tok(q);
  std::array<Msg, kBulk> in{};
  const uint64_t t0 = clock::mono_ns();
  uint64_t got = 0;
  while (got < n) {
    const size_t k = q.try_dequeue_bulk(tok, in.begin(), kBulk);
    if (k == 0) {
      shm::cpu_relax();
      continue;
    }
    keep(in.data());
    got += k;
  }
  const double secs = static_cast<double>(clock::mono_ns() - t0) / 1e9;
  prod.join();
  return static_cast<double>(n) / secs;
}
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

double stream_baseline(const RingOptions& o) {
  switch (o.payload) {
    case 64: return stream_moodycamel<64>(o);
    case 256: return stream_moodycamel<256>(o);
    case 1024: return stream_moodycamel<1024>(o);
    default: return 0;
  }
}

}  // namespace

int run_ring(const RingOptions& o) {
  const Clock clk = Clock::calibrate();
  char header[512];
  std::snprintf(header, sizeof header,
                "busbench ring: %u B records; round trip: %llu trips (+%llu warm-up) x %d runs; "
                "streaming: %llu records x %d runs\n"
                "  wait=%s on both threads; cpus ping=%d pong=%d; ring capacity %llu B; clock %s "
                "(one read is inside every round-trip sample)",
                o.payload, static_cast<unsigned long long>(o.rounds),
                static_cast<unsigned long long>(o.warmup), o.runs,
                static_cast<unsigned long long>(o.stream), o.runs, shm::to_string(o.wait).c_str(),
                o.cpu_ping, o.cpu_pong, static_cast<unsigned long long>(o.capacity),
                clk.describe().c_str());
  Report rep("ring", header);
  if (!pin_thread(o.cpu_ping)) std::fprintf(stderr, "busbench: could not pin to cpu %d\n", o.cpu_ping);
  const bool have_baseline_stream = o.payload == 64 || o.payload == 256 || o.payload == 1024;
  for (int run = 0; run < o.runs; ++run) {
    auto progress = [&](const char* what) {
      if (!o.quiet) std::fprintf(stderr, "\r  run %d/%d: %-32s", run + 1, o.runs, what);
    };
    double secs = 0;
    progress("cache-line ping-pong");
    {
      Histogram h;
      RttParams p;
      p.rounds = o.rounds;
      p.warmup = o.warmup;
      p.cpu_a = -1;  // this thread: pinned to cpu_ping above
      p.cpu_b = o.cpu_pong;
      secs = rtt_cacheline(p, clk, h);
      auto& row = rep.latency("cache line ping-pong", "two threads, one atomic, spin", true);
      row.runs.push_back(summarize(h, secs));
      row.merged.add(h);
    }
    progress("ring round trip");
    {
      Histogram h;
      rtt_ring(o, clk, h, secs);
      auto& row = rep.latency("busd ring", "request ring + reply ring, wait=" + shm::to_string(o.wait), false);
      row.runs.push_back(summarize(h, secs));
      row.merged.add(h);
    }
    if (o.stream > 0) {
      if (have_baseline_stream) {
        progress("moodycamel streaming");
        rep.throughput("moodycamel ConcurrentQueue", "bulk 32, tokens, preallocated", true, o.payload)
            .msgs_per_s.push_back(stream_baseline(o));
      }
      progress("ring streaming, batch");
      rep.throughput("busd ring, batch " + std::to_string(o.batch), "one publish per batch", false, o.payload)
          .msgs_per_s.push_back(stream_ring(o, o.batch));
      progress("ring streaming, unbatched");
      rep.throughput("busd ring, batch 1", "one publish per record", false, o.payload)
          .msgs_per_s.push_back(stream_ring(o, 1));
    }
  }
  if (!o.quiet) std::fprintf(stderr, "\r%60s\r", "");
  rep.print(stdout);
  if (!o.json.empty() && !rep.write_json(o.json)) {
    std::fprintf(stderr, "busbench: cannot write %s: %s\n", o.json.c_str(), std::strerror(errno));
    return 1;
  }
  if (!o.hgrm_dir.empty() && !rep.write_hgrm(o.hgrm_dir)) {
    std::fprintf(stderr, "busbench: cannot write .hgrm files in %s\n", o.hgrm_dir.c_str());
    return 1;
  }
  return 0;
}

}  // namespace bus::bench
