#include "report.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <functional>

#include "format.hpp"  // busctl's json_string: escaped, always valid UTF-8
#include "plot.hpp"

namespace bus::bench {
namespace {

using ctl::json_string;

const LatencyRow* baseline_of(const std::vector<LatencyRow>& rows) {
  for (const auto& r : rows) {
    if (r.baseline) return &r;
  }
  return nullptr;
}

double med_field(const std::vector<LatencySummary>& runs, double LatencySummary::*f) {
  std::vector<double> v;
  for (const auto& r : runs) v.push_back(r.*f);
  return median(v);
}

// Median of same-run ratios of a throughput row to `base` (empty: no baseline).
double thr_ratio(const ThroughputRow& r, const std::vector<double>& base) {
  std::vector<double> ratios;
  for (size_t i = 0; i < std::min(r.msgs_per_s.size(), base.size()); ++i) {
    if (base[i] > 0) ratios.push_back(r.msgs_per_s[i] / base[i]);
  }
  return ratios.empty() ? 0.0 : median(ratios);
}

// The first baseline throughput row (ratios are against it); nullptr if none.
const ThroughputRow* thr_baseline(const std::vector<ThroughputRow>& rows) {
  for (const auto& r : rows) {
    if (r.baseline) return &r;
  }
  return nullptr;
}

std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '_';
  return out;
}

const char* lanes_json(int lanes) { return lanes < 0 ? "null" : lanes > 0 ? "true" : "false"; }

// "1.42x", "48%", "12.3 us", "21400/s": a target line's value; a limit as "2x", "1.3x".
std::string target_value(double v, const std::string& unit, bool limit = false) {
  char b[64];
  if (unit == "x") {
    std::snprintf(b, sizeof b, limit ? "%gx" : "%.2fx", v);
  } else if (unit == "%") {
    std::snprintf(b, sizeof b, "%.0f%%", v);
  } else if (unit == "/s") {
    std::snprintf(b, sizeof b, "%.0f/s", v);
  } else {
    std::snprintf(b, sizeof b, v >= 100 || limit ? "%.0f %s" : v >= 10 ? "%.1f %s" : "%.2f %s", v, unit.c_str());
  }
  return b;
}

}  // namespace

bool measured_any(const LatencyRow& row) {
  return std::any_of(row.runs.begin(), row.runs.end(), [](const LatencySummary& s) { return s.count > 0; });
}

double same_run_ratio(const ThroughputRow& row, const ThroughputRow& base) { return thr_ratio(row, base.msgs_per_s); }

double same_run_ratio(const LatencyRow& row, const LatencyRow& base, double LatencySummary::*f) {
  std::vector<double> v;
  const size_t n = std::min(row.runs.size(), base.runs.size());
  for (size_t i = 0; i < n; ++i) {
    if (base.runs[i].*f > 0) v.push_back(row.runs[i].*f / (base.runs[i].*f));
  }
  return v.empty() ? 0 : median(v);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

LatencySummary summarize(const Histogram& h, double seconds) {
  LatencySummary s;
  s.p50 = static_cast<double>(h.percentile(50));
  s.p90 = static_cast<double>(h.percentile(90));
  s.p99 = static_cast<double>(h.percentile(99));
  s.p999 = static_cast<double>(h.percentile(99.9));
  s.p9999 = static_cast<double>(h.percentile(99.99));
  s.max = static_cast<double>(h.max());
  s.mean = h.mean();
  s.stddev = h.stddev();
  s.count = h.count();
  s.ops_per_s = seconds > 0 ? static_cast<double>(h.count()) / seconds : 0;
  return s;
}

Report::Report(std::string scenario, std::string header)
    : scenario_(std::move(scenario)), header_(std::move(header)) {}

LatencyRow& Report::latency(const std::string& name, const std::string& note, bool baseline) {
  for (auto& r : lat_) {
    if (r.name == name) return r;
  }
  lat_.push_back(LatencyRow{name, note, baseline, {}, Histogram()});
  return lat_.back();
}

ThroughputRow& Report::throughput(const std::string& name, const std::string& note, bool baseline,
                                  uint32_t record_bytes) {
  for (auto& r : thr_) {
    if (r.name == name) return r;
  }
  thr_.push_back(ThroughputRow{name, note, baseline, record_bytes, {}});
  return thr_.back();
}

ProcessRow& Report::process(const std::string& name, const std::string& note) {
  for (auto& r : proc_) {
    if (r.name == name) return r;
  }
  proc_.push_back(ProcessRow{name, note, {}});
  return proc_.back();
}

Fact& Report::fact(const std::string& name, const std::string& unit, bool worst_is_max) {
  for (auto& f : facts_) {
    if (f.name == name) return f;
  }
  facts_.push_back(Fact{name, unit, worst_is_max, {}});
  return facts_.back();
}

LatencyRow& Report::hop(const std::string& name, const std::string& note) {
  for (auto& r : hops_) {
    if (r.name == name) return r;
  }
  hops_.push_back(LatencyRow{name, note, false, {}, Histogram()});
  return hops_.back();
}

void Report::hop_not_measured(const std::string& name, const std::string& why) {
  hop(name, why).measured = false;
}

CostRow& Report::cost(const std::string& name) {
  for (auto& r : cost_) {
    if (r.name == name) return r;
  }
  cost_.push_back(CostRow{name, {}});
  return cost_.back();
}

void Report::print(std::FILE* out) const {
  std::fprintf(out, "%s\n", header_.c_str());
  if (!lat_.empty()) {
    std::fprintf(out, "\n%-36s %8s %8s %8s %8s %8s %8s %8s %8s %11s\n",
                 (latency_unit_ + ", us (median of " + std::to_string(lat_.front().runs.size()) + " runs)").c_str(),
                 "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "stddev", "per s");
    for (const auto& r : lat_) {
      auto m = [&](double LatencySummary::*f) { return med_field(r.runs, f) / 1000.0; };
      std::fprintf(out, "  %-34s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %11.0f\n",
                   (r.name + (r.baseline ? " (baseline)" : "")).c_str(), m(&LatencySummary::p50),
                   m(&LatencySummary::p90), m(&LatencySummary::p99), m(&LatencySummary::p999),
                   m(&LatencySummary::p9999), m(&LatencySummary::max), m(&LatencySummary::mean),
                   m(&LatencySummary::stddev), m(&LatencySummary::ops_per_s) * 1000.0);
    }
    bool header = false;
    for (const auto& base : lat_) {
      if (!base.baseline) continue;
      for (const auto& r : lat_) {
        if (r.baseline) continue;
        if (!header) {
          std::fprintf(out, "  ratios (median of same-run ratios)   %8s %8s %8s %8s %8s\n", "p50", "p90", "p99",
                       "p99.9", "p99.99");
          header = true;
        }
        std::fprintf(out, "  %-34s %7.2fx %7.2fx %7.2fx %7.2fx %7.2fx\n", (r.name + " / " + base.name).c_str(),
                     same_run_ratio(r, base, &LatencySummary::p50), same_run_ratio(r, base, &LatencySummary::p90),
                     same_run_ratio(r, base, &LatencySummary::p99), same_run_ratio(r, base, &LatencySummary::p999),
                     same_run_ratio(r, base, &LatencySummary::p9999));
      }
    }
    for (const auto& r : lat_) {
      if (!r.note.empty()) std::fprintf(out, "  %s: %s\n", r.name.c_str(), r.note.c_str());
    }
  }
  if (!hops_.empty()) {
    std::fprintf(out, "\nper-hop breakdown, us (median of runs)     %8s %8s %8s %8s\n", "p50", "p90", "p99", "mean");
    std::vector<std::string> why;  // each reason once, in order
    for (const auto& r : hops_) {
      if (!r.measured) {
        std::fprintf(out, "  %-40s %8s\n", r.name.c_str(), "not measured");
        if (std::find(why.begin(), why.end(), r.note) == why.end()) why.push_back(r.note);
        continue;
      }
      auto m = [&](double LatencySummary::*f) { return med_field(r.runs, f) / 1000.0; };
      std::fprintf(out, "  %-40s %8.3f %8.3f %8.3f %8.3f\n", r.name.c_str(), m(&LatencySummary::p50),
                   m(&LatencySummary::p90), m(&LatencySummary::p99), m(&LatencySummary::mean));
    }
    for (const auto& r : hops_) {
      if (r.measured && !r.note.empty()) std::fprintf(out, "  %s: %s\n", r.name.c_str(), r.note.c_str());
    }
    for (const auto& w : why) std::fprintf(out, "  not measured: %s\n", w.c_str());
  }
  if (!thr_.empty()) {
    const ThroughputRow* base = thr_baseline(thr_);  // ratios are against the first baseline row
    const std::vector<double> none;
    std::fprintf(out, "\nthroughput, one way (median of runs)  %12s %10s %10s %10s %9s\n", "msgs/s",
                 "MB/s", "min", "max", "vs base");
    for (const auto& r : thr_) {
      const double m = median(r.msgs_per_s);
      const auto [lo, hi] = std::minmax_element(r.msgs_per_s.begin(), r.msgs_per_s.end());
      std::fprintf(out, "  %-36s %12.0f %10.1f %10.0f %10.0f %8.2fx\n",
                   (r.name + (r.baseline ? " (baseline)" : "")).c_str(), m, m * r.record_bytes / 1e6, *lo, *hi,
                   thr_ratio(r, base != nullptr ? base->msgs_per_s : none));
    }
    if (base != nullptr) std::fprintf(out, "  vs base: median of same-run ratios to %s\n", base->name.c_str());
    for (const auto& r : thr_) {
      if (!r.note.empty()) std::fprintf(out, "  %s: %s\n", r.name.c_str(), r.note.c_str());
    }
  }
  if (!cost_.empty()) {
    std::fprintf(out, "\ncost per message, one thread (median of runs)   ns/op\n");
    for (const auto& r : cost_) {
      std::fprintf(out, "  %-46s %7.1f\n", r.name.c_str(), median(r.ns_per_op));
    }
  }
  if (!proc_.empty()) {
    std::fprintf(out, "\nCPU seconds per million messages (median of runs)\n");
    for (const auto& r : proc_) {
      std::fprintf(out, "  %-36s %9.3f   %s\n", r.name.c_str(), median(r.cpu_s_per_million), r.note.c_str());
    }
  }
  if (!facts_.empty()) {
    std::fprintf(out, "\n");
    for (const auto& f : facts_) {
      if (f.values.empty()) continue;
      const double v = f.worst_is_max ? *std::max_element(f.values.begin(), f.values.end()) : median(f.values);
      std::fprintf(out, "  %-36s %12.6g %s%s\n", f.name.c_str(), v, f.unit.c_str(),
                   f.worst_is_max ? " (worst run)" : "");
    }
  }
  if (!targets_.empty()) {
    std::fprintf(out, "\n%s\n", targets_title_.c_str());
    for (const auto& t : targets_) {
      std::string line = "  ";
      line.append(t.name).append(" ").append(target_value(t.value, t.unit));
      if (!t.of.empty()) line.append(" ").append(t.of);
      if (t.limit > 0) {
        line.append(" (target ").append(t.at_most ? "\u2264 " : "\u2265 ").append(target_value(t.limit, t.unit, true)).append(")");
        line.append(!t.judged ? ": not judged" : t.met() ? ": met" : ": NOT met");
      }
      if (!t.note.empty()) line.append(t.limit > 0 ? ": " : " (").append(t.note).append(t.limit > 0 ? "" : ")");
      std::fprintf(out, "%s\n", line.c_str());
    }
  }
  if (!notes_.empty()) std::fprintf(out, "\n");
  for (const auto& n : notes_) std::fprintf(out, "  %s\n", n.c_str());
  std::fflush(out);
}

bool Report::write_json(const std::string& path) const {
  std::ofstream f(path);
  if (!f) return false;
  f << "{\n  \"scenario\": " << json_string(scenario_) << ",\n  \"header\": " << json_string(header_);
  f << ",\n  \"latency_ns\": [";
  const LatencyRow* base = baseline_of(lat_);
  for (size_t i = 0; i < lat_.size(); ++i) {
    const auto& r = lat_[i];
    auto m = [&](double LatencySummary::*fld) { return med_field(r.runs, fld); };
    f << (i ? "," : "") << "\n    {\"name\": " << json_string(r.name) << ", \"note\": " << json_string(r.note)
      << ", \"baseline\": " << (r.baseline ? "true" : "false") << ", \"lanes\": " << lanes_json(r.lanes)
      << ", \"runs\": " << r.runs.size()
      << ", \"p50\": " << m(&LatencySummary::p50) << ", \"p90\": " << m(&LatencySummary::p90)
      << ", \"p99\": " << m(&LatencySummary::p99) << ", \"p99_9\": " << m(&LatencySummary::p999)
      << ", \"p99_99\": " << m(&LatencySummary::p9999) << ", \"max\": " << m(&LatencySummary::max)
      << ", \"mean\": " << m(&LatencySummary::mean) << ", \"stddev\": " << m(&LatencySummary::stddev)
      << ", \"ops_per_s\": " << m(&LatencySummary::ops_per_s);
    if (base != nullptr && !r.baseline) {
      f << ", \"p50_vs_baseline\": " << same_run_ratio(r, *base, &LatencySummary::p50)
        << ", \"p99_vs_baseline\": " << same_run_ratio(r, *base, &LatencySummary::p99);
      f << ", \"vs\": {";
      bool first = true;
      for (const auto& b : lat_) {
        if (!b.baseline) continue;
        f << (first ? "" : ", ") << json_string(b.name) << ": {\"p50\": " << same_run_ratio(r, b, &LatencySummary::p50)
          << ", \"p99\": " << same_run_ratio(r, b, &LatencySummary::p99) << "}";
        first = false;
      }
      f << "}";
    }
    f << ", \"p50_per_run\": [";
    for (size_t k = 0; k < r.runs.size(); ++k) f << (k ? ", " : "") << r.runs[k].p50;
    f << "]}";
  }
  f << "\n  ],\n  \"throughput\": [";
  const ThroughputRow* thr_base = thr_baseline(thr_);
  for (size_t i = 0; i < thr_.size(); ++i) {
    const auto& r = thr_[i];
    f << (i ? "," : "") << "\n    {\"name\": " << json_string(r.name) << ", \"note\": " << json_string(r.note)
      << ", \"baseline\": " << (r.baseline ? "true" : "false") << ", \"lanes\": " << lanes_json(r.lanes)
      << ", \"record_bytes\": " << r.record_bytes
      << ", \"msgs_per_s\": " << median(r.msgs_per_s);
    if (thr_base != nullptr && !r.baseline) f << ", \"vs_baseline\": " << thr_ratio(r, thr_base->msgs_per_s);
    f << ", \"per_run\": [";
    for (size_t k = 0; k < r.msgs_per_s.size(); ++k) f << (k ? ", " : "") << r.msgs_per_s[k];
    f << "]}";
  }
  f << "\n  ],\n  \"cost_ns_per_op\": [";
  for (size_t i = 0; i < cost_.size(); ++i) {
    f << (i ? "," : "") << "\n    {\"name\": " << json_string(cost_[i].name)
      << ", \"ns\": " << median(cost_[i].ns_per_op) << "}";
  }
  f << "\n  ],\n  \"latency_unit\": " << json_string(latency_unit_) << ",\n  \"hops_ns\": [";
  const char* sep = "";
  for (const auto& r : hops_) {
    if (!r.measured) continue;
    auto m = [&](double LatencySummary::*fld) { return med_field(r.runs, fld); };
    f << sep << "\n    {\"name\": " << json_string(r.name) << ", \"p50\": " << m(&LatencySummary::p50)
      << ", \"p90\": " << m(&LatencySummary::p90) << ", \"p99\": " << m(&LatencySummary::p99)
      << ", \"mean\": " << m(&LatencySummary::mean);
    if (!r.note.empty()) f << ", \"note\": " << json_string(r.note);
    f << "}";
    sep = ",";
  }
  f << "\n  ],\n  \"hops_not_measured\": [";
  sep = "";
  for (const auto& r : hops_) {
    if (r.measured) continue;
    f << sep << "\n    {\"name\": " << json_string(r.name) << ", \"why\": " << json_string(r.note) << "}";
    sep = ",";
  }
  f << "\n  ],\n  \"processes\": [";
  for (size_t i = 0; i < proc_.size(); ++i) {
    f << (i ? "," : "") << "\n    {\"name\": " << json_string(proc_[i].name) << ", \"note\": " << json_string(proc_[i].note)
      << ", \"cpu_s_per_million\": " << median(proc_[i].cpu_s_per_million) << "}";
  }
  f << "\n  ],\n  \"facts\": [";
  for (size_t i = 0; i < facts_.size(); ++i) {
    const auto& x = facts_[i];
    const double v = x.values.empty() ? 0
                     : x.worst_is_max ? *std::max_element(x.values.begin(), x.values.end())
                                      : median(x.values);
    f << (i ? "," : "") << "\n    {\"name\": " << json_string(x.name) << ", \"unit\": " << json_string(x.unit)
      << ", \"value\": " << v << ", \"per_run\": [";
    for (size_t k = 0; k < x.values.size(); ++k) f << (k ? ", " : "") << x.values[k];
    f << "]}";
  }
  f << "\n  ],\n  \"targets\": [";
  for (size_t i = 0; i < targets_.size(); ++i) {
    const auto& t = targets_[i];
    f << (i ? "," : "") << "\n    {\"name\": " << json_string(t.name) << ", \"variant\": " << json_string(t.variant)
      << ", \"value\": " << t.value << ", \"unit\": " << json_string(t.unit) << ", \"of\": " << json_string(t.of);
    if (t.limit > 0) {
      f << ", \"limit\": " << t.limit << ", \"at_most\": " << (t.at_most ? "true" : "false")
        << ", \"met\": " << (!t.judged ? "null" : t.met() ? "true" : "false");
    } else {
      f << ", \"limit\": null, \"at_most\": null, \"met\": null";
    }
    f << ", \"note\": " << json_string(t.note) << "}";
  }
  f << "\n  ],\n  \"notes\": [";
  for (size_t i = 0; i < notes_.size(); ++i) f << (i ? ", " : "") << "\n    " << json_string(notes_[i]);
  f << "\n  ]\n}\n";
  return static_cast<bool>(f);
}

bool Report::write_plot(const std::string& path) const {
  std::vector<PlotSeries> series;
  for (const auto& r : lat_) series.push_back(PlotSeries{r.name, &r.merged, r.baseline});
  // Title: "busbench pingpong"; subtitle: the rest of the header's first line.
  const std::string first_line = header_.substr(0, header_.find('\n'));
  const size_t colon = first_line.find(':');
  const std::string title = first_line.substr(0, colon);
  std::string sub = colon == std::string::npos ? std::string() : first_line.substr(colon + 1);
  if (!sub.empty() && sub.front() == ' ') sub.erase(0, 1);
  return write_percentile_svg(path, title, sub.append(" - ").append(latency_unit_).append(" latency, all runs merged"),
                              series);
}

bool Report::write_hgrm(const std::string& dir) const {
  for (const auto& r : lat_) {
    std::ofstream f(dir + "/" + scenario_ + "-" + file_safe(r.name) + ".hgrm");
    if (!f) return false;
    r.merged.write_hgrm(f, 1000.0);
  }
  return true;
}

}  // namespace bus::bench
