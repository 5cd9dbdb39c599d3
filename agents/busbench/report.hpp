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
  bool measured = true;  // hop rows: false = the data cannot split this hop out (note says why)
  int lanes = -1;        // the busd measured: 1 lanes on, 0 lanes off, -1 not chosen or not a busd row
};

struct ThroughputRow {
  std::string name;
  std::string note;
  bool baseline = false;
  uint32_t record_bytes = 0;
  std::vector<double> msgs_per_s;  // one per run
  int lanes = -1;                  // as LatencyRow::lanes
};

/// A figure an issue sets a target for, printed under the tables ("targets") and in JSON:
/// "<name> <value><unit> <of> (target <= <limit><unit>): met", and whether the target was met. Without a limit it is printed for
/// comparison; with one but judged = false, `note` says why it was not judged (the run's set-up
/// is not the one the target is for).
struct TargetLine {
  std::string name;     // what, before the value: "pingpong spin, busd (lanes): p50"
  std::string variant;  // "lanes", "no lanes", "" (lanes not chosen)
  double value = 0;
  std::string unit;     // "x", "%", "us", "/s"
  std::string of;       // after the value: "cache line ping-pong" (a ratio's baseline)
  double limit = 0;     // 0: no target, printed for comparison
  bool at_most = true;  // the target is value <= limit (else value >= limit)
  bool judged = false;  // the set-up is the one the target is for
  std::string note;     // why not judged, or what else to know
  [[nodiscard]] bool met() const noexcept { return at_most ? value <= limit : value >= limit; }
};

struct CostRow {  // ns per operation, single thread
  std::string name;
  std::vector<double> ns_per_op;
};

/// CPU time one process (or a group of like processes) spent per million messages, per run.
struct ProcessRow {
  std::string name;
  std::string note;  // its wait strategy, pinning
  std::vector<double> cpu_s_per_million;
};

/// A single figure (busd RSS, requests unanswered, ...), one value per run; printed as the
/// median, or the maximum when `worst_is_max` (memory, failures).
struct Fact {
  std::string name;
  std::string unit;
  bool worst_is_max = false;
  std::vector<double> values;
};

class Report {
 public:
  Report(std::string scenario, std::string header);

  LatencyRow& latency(const std::string& name, const std::string& note, bool baseline);
  ThroughputRow& throughput(const std::string& name, const std::string& note, bool baseline,
                            uint32_t record_bytes);
  CostRow& cost(const std::string& name);
  ProcessRow& process(const std::string& name, const std::string& note);
  Fact& fact(const std::string& name, const std::string& unit, bool worst_is_max = false);
  /// Per-hop breakdown rows (printed in their own table, not compared with baselines). `note`
  /// says what the hop spans, printed under the table.
  LatencyRow& hop(const std::string& name, const std::string& note = "");
  /// A hop the data cannot split out: printed as "not measured" in its place in the breakdown,
  /// with `why` under the table; in JSON under "hops_not_measured" (never in "hops_ns").
  void hop_not_measured(const std::string& name, const std::string& why);
  /// A line printed under the tables (how it was measured, what it does not correct).
  void note(const std::string& line) { notes_.push_back(line); }
  /// A target line (printed after the tables, before the notes; JSON "targets").
  void target(TargetLine t) { targets_.push_back(std::move(t)); }
  /// The heading of the targets section ("targets of the [lanes] issue").
  void set_targets_title(std::string t) { targets_title_ = std::move(t); }
  /// What the latency table measures: "round trip" (default), "round", "request".
  void set_latency_unit(std::string what) { latency_unit_ = std::move(what); }
  [[nodiscard]] const std::vector<LatencyRow>& latency_rows() const noexcept { return lat_; }
  [[nodiscard]] const std::vector<ThroughputRow>& throughput_rows() const noexcept { return thr_; }
  [[nodiscard]] const std::vector<Fact>& facts() const noexcept { return facts_; }
  [[nodiscard]] const std::vector<TargetLine>& targets() const noexcept { return targets_; }

  void print(std::FILE* out) const;
  /// Writes the JSON document; false with errno set when the file cannot be written.
  bool write_json(const std::string& path) const;
  /// One HdrHistogram percentile file per latency row, in `dir`.
  bool write_hgrm(const std::string& dir) const;
  /// `--plot FILE.svg`: latency by percentile of every latency row (baselines dashed).
  bool write_plot(const std::string& path) const;

 private:
  std::string scenario_;
  std::string header_;
  std::vector<LatencyRow> lat_;
  std::vector<ThroughputRow> thr_;
  std::vector<CostRow> cost_;
  std::vector<ProcessRow> proc_;
  std::vector<Fact> facts_;
  std::vector<LatencyRow> hops_;
  std::vector<std::string> notes_;
  std::vector<TargetLine> targets_;
  std::string targets_title_ = "targets";
  std::string latency_unit_ = "round trip";
};

/// Median of a non-empty list (average of the middle two for even sizes).
double median(std::vector<double> v);

/// Median over runs of row/base for one field, run by run (same-run ratios); 0 if none.
double same_run_ratio(const LatencyRow& row, const LatencyRow& base, double LatencySummary::*field);
/// Whether any run of the row recorded a sample.
bool measured_any(const LatencyRow& row);
/// The same for throughput rows (msgs/s); 0 if none.
double same_run_ratio(const ThroughputRow& row, const ThroughputRow& base);

}  // namespace bus::bench
