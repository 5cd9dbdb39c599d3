#include <catch2/catch.hpp>

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "histogram.hpp"
#include "plot.hpp"

using bus::bench::Histogram;
using bus::bench::PlotSeries;
using bus::bench::write_percentile_svg;

namespace {

std::string temp_svg(const char* tag) {
  return (std::filesystem::temp_directory_path() /
          ("busbench_plot_" + std::string(tag) + "_" + std::to_string(::getpid()) + ".svg"))
      .string();
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t count_of(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

// Every element closed in order, no stray '<' or '&' in text: well formed enough for a browser.
bool tags_balance(const std::string& s) {
  std::vector<std::string> open;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      if (semi == std::string::npos || semi - i > 8) return false;
      continue;
    }
    if (s[i] != '<') continue;
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return false;
    const std::string tag = s.substr(i + 1, end - i - 1);
    i = end;
    if (tag.empty() || tag[0] == '?' || tag.back() == '/') continue;
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return false;
      open.pop_back();
    } else {
      open.push_back(tag.substr(0, tag.find(' ')));
    }
  }
  return open.empty();
}

struct Poly {
  bool dashed;
  std::vector<std::pair<double, double>> pts;
};

std::vector<Poly> polylines(const std::string& svg) {
  std::vector<Poly> out;
  for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) {
    const size_t end = svg.find("/>", at);
    const std::string el = svg.substr(at, end - at);
    Poly p{el.find("stroke-dasharray") != std::string::npos, {}};
    const size_t b = el.find("points=\"") + 8;
    std::istringstream in(el.substr(b, el.find('"', b) - b));
    std::string pair;
    while (in >> pair) {
      const size_t comma = pair.find(',');
      p.pts.emplace_back(std::strtod(pair.substr(0, comma).c_str(), nullptr),
                         std::strtod(pair.substr(comma + 1).c_str(), nullptr));
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::string trim_end(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

TEST_CASE("percentile SVG: one line per non-empty series, escaped names, rising latency",
          "[plot]") {
  Histogram uniform;  // 1 ns .. 100 us, each once
  for (uint64_t v = 1; v <= 100'000; ++v) uniform.record(v);
  Histogram tail;  // ~2 us median with a long tail
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> dist(7.6, 1.2);
  for (int i = 0; i < 50'000; ++i) tail.record(static_cast<uint64_t>(dist(rng)) + 1);
  Histogram empty;

  const std::string path = temp_svg("ok");
  const std::vector<PlotSeries> series = {
      {"ring <&> \"fast\"", &tail, false},
      {"pipe 'baseline'", &uniform, true},
      {"nothing", &empty, false},
  };
  REQUIRE(write_percentile_svg(path, "busbench <ring>", "host: a&b, -O2", series));
  const std::string svg = slurp(path);
  std::filesystem::remove(path);

  CHECK((svg.rfind("<?xml", 0) == 0 || svg.rfind("<svg", 0) == 0));
  CHECK(trim_end(svg).size() >= 6);
  CHECK(trim_end(svg).substr(trim_end(svg).size() - 6) == "</svg>");
  CHECK(tags_balance(svg));
  CHECK(count_of(svg, "<script") == 0);
  CHECK(count_of(svg, "<polyline") == 2);

  // Names, title and subtitle appear escaped, never raw.
  CHECK(svg.find("ring &lt;&amp;&gt; &quot;fast&quot;") != std::string::npos);
  CHECK(svg.find("pipe &apos;baseline&apos;") != std::string::npos);
  CHECK(svg.find("busbench &lt;ring&gt;") != std::string::npos);
  CHECK(svg.find("host: a&amp;b, -O2") != std::string::npos);
  CHECK(svg.find("<&>") == std::string::npos);
  CHECK(svg.find(">nothing<") == std::string::npos);

  // Axes: percentile decades up to the largest sample count, latency decades around the data.
  for (const char* label : {">0%<", ">90%<", ">99%<", ">99.9%<", ">99.99%<", ">99.999%<"}) {
    INFO(label);
    CHECK(svg.find(label) != std::string::npos);
  }
  CHECK(svg.find(">0.001<") != std::string::npos);  // 1 ns minimum
  CHECK(svg.find(">100<") != std::string::npos);    // 100 us max of the uniform one

  const auto lines = polylines(svg);
  REQUIRE(lines.size() == 2);
  CHECK_FALSE(lines[0].dashed);
  CHECK(lines[1].dashed);
  for (const auto& l : lines) {
    REQUIRE(l.pts.size() > 40);
    for (size_t i = 1; i < l.pts.size(); ++i) {
      INFO("point " << i);
      CHECK(l.pts[i].first >= l.pts[i - 1].first);    // percentile grows to the right
      CHECK(l.pts[i].second <= l.pts[i - 1].second);  // latency grows upwards (SVG y shrinks)
    }
    CHECK(l.pts.back().second < l.pts.front().second);
  }
  // The uniform series ends at 1/(1-p) = 100000 samples, further right than the 50000 one.
  CHECK(lines[1].pts.back().first > lines[0].pts.back().first);
}

TEST_CASE("percentile SVG: no data or a single sample still gives a valid chart", "[plot]") {
  Histogram empty;
  const std::string path = temp_svg("empty");
  REQUIRE(write_percentile_svg(path, "t", "", {{"none", &empty, false}}));
  const std::string svg = slurp(path);
  std::filesystem::remove(path);
  CHECK(tags_balance(svg));
  CHECK(count_of(svg, "<polyline") == 0);
  CHECK(trim_end(svg).substr(trim_end(svg).size() - 6) == "</svg>");

  Histogram one;  // a single sample, recorded as 0 ns: still one (degenerate) line
  one.record(0);
  REQUIRE(write_percentile_svg(path, "t", "", {{"one", &one, false}, {"none", &empty, true}}));
  const std::string svg1 = slurp(path);
  std::filesystem::remove(path);
  CHECK(tags_balance(svg1));
  CHECK(count_of(svg1, "<polyline") == 1);
  CHECK(svg1.find("nan") == std::string::npos);
  CHECK(svg1.find("inf") == std::string::npos);
}

TEST_CASE("percentile SVG: unwritable path returns false with errno", "[plot]") {
  Histogram h;
  h.record(1000);
  errno = 0;
  CHECK_FALSE(write_percentile_svg("/nonexistent-busbench-dir/sub/plot.svg", "t", "s",
                                   {{"a", &h, false}}));
  CHECK(errno != 0);
  errno = 0;
  CHECK_FALSE(write_percentile_svg(std::filesystem::temp_directory_path().string(), "t", "s",
                                   {{"a", &h, false}}));  // a directory
  CHECK(errno != 0);
}
