#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <sstream>
#include <vector>

#include "histogram.hpp"
#include "report.hpp"

using bus::bench::Histogram;

namespace {
// Exact percentile of sorted samples, HdrHistogram's rule: the value at rank ceil(p * n).
uint64_t exact(const std::vector<uint64_t>& sorted, double p) {
  const auto rank = std::max<size_t>(1, static_cast<size_t>(p / 100.0 * sorted.size() + 0.5));
  return sorted[std::min(rank, sorted.size()) - 1];
}
}  // namespace

TEST_CASE("percentiles agree with sorted samples within three significant digits",
          "[histogram]") {
  std::mt19937_64 rng(11);
  std::lognormal_distribution<double> dist(5.0, 1.5);  // ~150 ns with a long tail
  Histogram h;
  std::vector<uint64_t> v;
  for (int i = 0; i < 200'000; ++i) {
    const auto x = static_cast<uint64_t>(dist(rng)) + 1;
    v.push_back(x);
    h.record(x);
  }
  std::sort(v.begin(), v.end());
  CHECK(h.count() == v.size());
  CHECK(h.min() == v.front());
  CHECK(h.max() == v.back());
  for (double p : {1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    INFO("p" << p);
    const double want = static_cast<double>(exact(v, p));
    const double got = static_cast<double>(h.percentile(p));
    CHECK(got >= want);                 // never reports a lower latency than was seen
    CHECK(got <= want * 1.001 + 1.0);   // 3 significant digits
  }
  double sum = 0;
  for (auto x : v) sum += static_cast<double>(x);
  CHECK(h.mean() == Approx(sum / static_cast<double>(v.size())).epsilon(0.001));
}

TEST_CASE("coordinated omission correction adds the requests a stall delayed", "[histogram]") {
  Histogram h;
  h.record_corrected(1000, 100);  // a 1000 ns stall with a request due every 100 ns
  CHECK(h.count() == 10);         // 1000, 900, ..., 100
  CHECK(h.percentile(50) <= 600);
  Histogram plain;
  plain.record_corrected(50, 100);
  CHECK(plain.count() == 1);
}

TEST_CASE("huge values are clamped and counted, not lost", "[histogram]") {
  Histogram h(1'000'000);
  h.record(5'000'000);
  CHECK(h.count() == 1);
  CHECK(h.clamped() == 1);
  CHECK(h.max() <= 1'000'000 * 1.001);
}

TEST_CASE("merging histograms equals recording into one", "[histogram]") {
  Histogram a, b, both;
  for (uint64_t i = 1; i < 5000; ++i) {
    (i % 2 ? a : b).record(i * 7);
    both.record(i * 7);
  }
  a.add(b);
  CHECK(a.count() == both.count());
  for (double p : {50.0, 99.0, 99.99}) CHECK(a.percentile(p) == both.percentile(p));
}

TEST_CASE(".hgrm output follows HdrHistogram's percentile distribution format", "[histogram]") {
  Histogram h;
  for (uint64_t i = 1; i <= 10'000; ++i) h.record(i);
  std::ostringstream out;
  h.write_hgrm(out, 1000.0);
  const std::string s = out.str();
  CHECK(s.rfind("       Value     Percentile TotalCount 1/(1-Percentile)", 0) == 0);
  CHECK(s.find("#[Mean    =") != std::string::npos);
  CHECK(s.find("#[Max     =       10.000, Total count    =        10000]") != std::string::npos);
  // Percentile column rises monotonically to 1.0, values never decrease.
  std::istringstream in(s);
  std::string line;
  double last_p = -1, last_v = -1;
  int rows = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.find("Value") != std::string::npos) continue;
    std::istringstream row(line);
    double v = 0, p = 0;
    row >> v >> p;
    CHECK(p >= last_p);
    CHECK(v >= last_v);
    last_p = p;
    last_v = v;
    ++rows;
  }
  CHECK(rows > 20);
  CHECK(last_p == 1.0);
}

TEST_CASE("median of runs", "[histogram]") {
  CHECK(bus::bench::median({3, 1, 2}) == 2);
  CHECK(bus::bench::median({4, 1, 3, 2}) == 2.5);
}

TEST_CASE("known distributions give known percentiles", "[histogram]") {
  Histogram h;
  for (uint64_t v = 1; v <= 1000; ++v) h.record(v);  // uniform 1..1000 us in ns steps of 1
  CHECK(h.percentile(50) == 500);
  CHECK(h.percentile(90) == 900);
  CHECK(h.percentile(99) == 990);
  CHECK(h.percentile(100) == 1000);
  CHECK(h.mean() == Approx(500.5));
  CHECK(h.stddev() == Approx(288.675).epsilon(0.001));  // sqrt((n^2 - 1) / 12)
  Histogram bimodal;                                    // 99% fast, 1% slow
  bimodal.record_n(10'000, 990);
  bimodal.record_n(5'000'000, 10);
  CHECK(bimodal.percentile(99) == Approx(10'000).epsilon(0.001));
  CHECK(bimodal.percentile(99.5) == Approx(5'000'000).epsilon(0.001));
}

TEST_CASE("an open-loop stall shows in p99 once corrected, in max only when not", "[histogram]") {
  // 2000 requests due every 500 us; one of them meets a 100 ms stall, the rest take 10 us.
  Histogram corrected, closed;
  for (int i = 0; i < 2000; ++i) {
    const uint64_t lat = i == 1000 ? 100'000'000 : 10'000;
    corrected.record_corrected(lat, 500'000);
    closed.record(lat);
  }
  CHECK(corrected.count() == 2000 + 199);  // the 199 requests the stall held back
  CHECK(corrected.percentile(99) >= 50'000'000);
  CHECK(closed.percentile(99) <= 10'100);
  CHECK(closed.max() >= 100'000'000);
}

TEST_CASE("buckets handed to another histogram keep every percentile", "[histogram]") {
  // What busbench agents do: a coarse histogram per process, merged bucket by bucket.
  std::mt19937_64 rng(5);
  std::lognormal_distribution<double> dist(11.0, 1.0);
  Histogram coarse(60'000'000'000ull, 2), merged, direct;
  for (int i = 0; i < 50'000; ++i) {
    const auto x = static_cast<uint64_t>(dist(rng)) + 1;
    coarse.record(x);
    direct.record(x);
  }
  uint64_t buckets = 0;
  coarse.for_each_bucket([&](uint64_t v, uint64_t n) {
    merged.record_n(v, n);
    ++buckets;
  });
  CHECK(buckets < 2000);
  CHECK(merged.count() == direct.count());
  for (double p : {50.0, 90.0, 99.0, 99.9, 100.0}) {
    INFO("p" << p);
    const double d = static_cast<double>(direct.percentile(p));
    CHECK(static_cast<double>(merged.percentile(p)) >= d * 0.999);  // never lower than seen
    CHECK(static_cast<double>(merged.percentile(p)) <= d * 1.01 + 1);  // 2 significant digits
  }
}
