// busbench results: latency and throughput rows measured over several runs, printed as a table
// of medians (with ratios against the baseline measured in the same run) and as JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "histogram.hpp"

namespace bus::bench {

/// One run of one latency measurement, in ns.
struct LatencySummary {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, p9999 = 0, max = 0, mean = 0, stddev = 0;
  double ops_per_s = 0;
  uint64_t count = 0;
};

LatencySummary summarize(const Histogram& h, double seconds);

struct LatencyRow {
  std::string name;
  std::string note;      // wait strategy, pinning: how it was measured
  bool baseline = false;
  std::vector<LatencySummary> runs;
  Histogram merged;      // all runs together (for .hgrm)
};

struct ThroughputRow {
  std::string name;
  std::string note;
  bool baseline = false;
  uint32_t record_bytes = 0;
  std::vector<double> msgs_per_s;  // one per run
};

struct CostRow {  // ns per operation, single thread
  std::string name;
  std::vector<double> ns_per_op;
};

class Report {
 public:
  Report(std::string scenario, std::string header);

  LatencyRow& latency(const std::string& name, const std::string& note, bool baseline);
  ThroughputRow& throughput(const std::string& name, const std::string& note, bool baseline,
                            uint32_t record_bytes);
  CostRow& cost(const std::string& name);

  void print(std::FILE* out) const;
  /// Writes the JSON document; false with errno set when the file cannot be written.
  bool write_json(const std::string& path) const;
  /// One HdrHistogram percentile file per latency row, in `dir`.
  bool write_hgrm(const std::string& dir) const;

 private:
  std::string scenario_;
  std::string header_;
  std::vector<LatencyRow> lat_;
  std::vector<ThroughputRow> thr_;
  std::vector<CostRow> cost_;
};

/// Median of a non-empty list (average of the middle two for even sizes).
double median(std::vector<double> v);

}  // namespace bus::bench
