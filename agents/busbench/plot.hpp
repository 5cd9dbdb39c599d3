// Latency-by-percentile charts as standalone SVG, laid out like HdrHistogram's plotter: the
// x axis is the percentile on a log scale of 1/(1-p) (0%, 90%, 99%, 99.9%, ...), the y axis the
// latency in microseconds on a log scale, one line per series.
#pragma once

#include <string>
#include <vector>

#include "histogram.hpp"

namespace bus::bench {

struct PlotSeries {
  std::string name;
  const Histogram* hist;  // values in ns
  bool baseline;          // drawn dashed
};

/// Writes the chart to `path` (SVG 1.1, no scripts, no external resources); false with errno
/// set when the file cannot be written. Series with a null or empty histogram are skipped.
bool write_percentile_svg(const std::string& path, const std::string& title,
                          const std::string& subtitle, const std::vector<PlotSeries>& series);

}  // namespace bus::bench
