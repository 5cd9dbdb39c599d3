#include "plot.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace bus::bench {
namespace {

// Canvas and plot area, in SVG user units (px).
constexpr double kWidth = 960, kHeight = 560;
constexpr double kLeft = 84, kRight = kWidth - 48, kTop = 72, kBottom = kHeight - 58;
constexpr int kStepsPerDecade = 20;  // samples per decade of 1/(1-p)
constexpr int kMinDecades = 3;       // the x axis reaches at least 99.9%
constexpr int kMaxDecades = 9;

constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

struct Point {
  double x;   // log10(1 / (1 - p))
  double us;  // latency
};

struct Line {
  const PlotSeries* s;
  std::vector<Point> pts;
};

// Locale-independent fixed-point number with one decimal.
std::string num(double v) {
  char buf[48];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 1);
  return {buf, r.ptr};
}

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

// 10^d microseconds as an axis label: "0.01", "1", "1000".
std::string decade_label(int d) {
  // Built with append: GCC 12 at -O3 reports a false -Wrestrict on "literal" + std::string.
  std::string s;
  if (d >= 0) return s.append("1").append(static_cast<size_t>(d), '0');
  return s.append("0.").append(static_cast<size_t>(-d - 1), '0').append("1");
}

// The percentile where 1/(1-p) = 10^d: "0%", "90%", "99%", "99.9%", ...
std::string percent_label(int d) {
  if (d == 0) return "0%";
  if (d == 1) return "90%";
  if (d == 2) return "99%";
  std::string s = "99.";
  return s.append(static_cast<size_t>(d - 2), '9').append("%");
}

// Samples along the log axis until 1/(1-p) reaches the sample count (beyond it the histogram
// has nothing finer to say), then the max, placed at 1/(1-p) = count.
std::vector<Point> sample(const Histogram& h) {
  std::vector<Point> pts;
  const double n = static_cast<double>(h.count());
  const double last_x = std::log10(n);
  for (int k = 0;; ++k) {
    const double x = static_cast<double>(k) / kStepsPerDecade;
    if (x >= last_x) break;
    const double p = 100.0 * (1.0 - std::pow(10.0, -x));
    pts.push_back({x, static_cast<double>(std::max<uint64_t>(h.percentile(p), 1)) / 1000.0});
  }
  pts.push_back({last_x, static_cast<double>(std::max<uint64_t>(h.max(), 1)) / 1000.0});
  return pts;
}

void text(std::string& out, double x, double y, const char* attrs, const std::string& body) {
  out += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" " + attrs + ">" + body + "</text>\n";
}

void hline(std::string& out, double x1, double x2, double y, const char* attrs) {
  out += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y) +
         "\" " + attrs + "/>\n";
}

void vline(std::string& out, double x, double y1, double y2, const char* attrs) {
  out += "<line x1=\"" + num(x) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x) + "\" y2=\"" + num(y2) +
         "\" " + attrs + "/>\n";
}

std::string render(const std::string& title, const std::string& subtitle,
                   const std::vector<Line>& lines) {
  // Axis ranges: x in whole decades of 1/(1-p), y in whole decades of microseconds.
  double max_x = 0, lo_us = 1e300, hi_us = 0;
  for (const auto& l : lines) {
    max_x = std::max(max_x, l.pts.back().x);
    for (const auto& p : l.pts) {
      lo_us = std::min(lo_us, p.us);
      hi_us = std::max(hi_us, p.us);
    }
  }
  const int decades = std::clamp(static_cast<int>(std::ceil(max_x - 1e-9)), kMinDecades, kMaxDecades);
  int y_lo = -1, y_hi = 3;  // 0.1 us .. 1 ms when there is no data
  if (!lines.empty()) {
    y_lo = static_cast<int>(std::floor(std::log10(lo_us) + 1e-9));
    y_hi = static_cast<int>(std::ceil(std::log10(hi_us) - 1e-9));
    if (y_hi <= y_lo) y_hi = y_lo + 1;
  }
  const auto px = [&](double x) { return kLeft + std::min(x, double(decades)) / decades * (kRight - kLeft); };
  const auto py = [&](double us) {
    return kBottom - (std::log10(us) - y_lo) / (y_hi - y_lo) * (kBottom - kTop);
  };

  std::string out;
  out += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + num(kWidth) +
         "\" height=\"" + num(kHeight) + "\" viewBox=\"0 0 " + num(kWidth) + " " + num(kHeight) +
         "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  out += "<title>" + xml_escape(title) + "</title>\n";
  out += "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  text(out, kWidth / 2, 30, "font-size=\"18\" font-weight=\"bold\" text-anchor=\"middle\"",
       xml_escape(title));
  if (!subtitle.empty()) {
    text(out, kWidth / 2, 52, "font-size=\"12\" fill=\"#555555\" text-anchor=\"middle\"",
         xml_escape(subtitle));
  }

  // Grid: minor lines at 2..9 x 10^d, labelled decade lines on y; labelled decades on x.
  for (int d = y_lo; d <= y_hi; ++d) {
    if (d < y_hi) {
      for (int m = 2; m <= 9; ++m) {
        hline(out, kLeft, kRight, py(m * std::pow(10.0, d)), "stroke=\"#eeeeee\" stroke-width=\"1\"");
      }
    }
    const double y = py(std::pow(10.0, d));
    hline(out, kLeft, kRight, y, "stroke=\"#cccccc\" stroke-width=\"1\"");
    text(out, kLeft - 8, y + 4, "font-size=\"12\" text-anchor=\"end\"", decade_label(d));
  }
  for (int d = 0; d <= decades; ++d) {
    const double x = px(d);
    vline(out, x, kTop, kBottom, "stroke=\"#cccccc\" stroke-width=\"1\"");
    text(out, x, kBottom + 18, "font-size=\"12\" text-anchor=\"middle\"", percent_label(d));
  }
  out += "<rect x=\"" + num(kLeft) + "\" y=\"" + num(kTop) + "\" width=\"" + num(kRight - kLeft) +
         "\" height=\"" + num(kBottom - kTop) + "\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n";
  text(out, (kLeft + kRight) / 2, kHeight - 14, "font-size=\"13\" text-anchor=\"middle\"", "Percentile");
  const double ymid = (kTop + kBottom) / 2;
  out += "<text x=\"22\" y=\"" + num(ymid) + "\" font-size=\"13\" text-anchor=\"middle\"" +
         " transform=\"rotate(-90 22 " + num(ymid) + ")\">Latency (&#181;s)</text>\n";

  // One polyline per series, a dot on its max.
  constexpr size_t kColours = sizeof kPalette / sizeof kPalette[0];
  for (size_t i = 0; i < lines.size(); ++i) {
    const char* colour = kPalette[i % kColours];
    std::string pts;
    for (const auto& p : lines[i].pts) {
      if (!pts.empty()) pts += ' ';
      pts.append(num(px(p.x))).append(",").append(num(py(p.us)));
    }
    out += "<polyline fill=\"none\" stroke=\"" + std::string(colour) +
           "\" stroke-width=\"2\" stroke-linejoin=\"round\"" +
           (lines[i].s->baseline ? " stroke-dasharray=\"7,4\"" : "") + " points=\"" + pts + "\"/>\n";
    const Point& m = lines[i].pts.back();
    out += "<circle cx=\"" + num(px(m.x)) + "\" cy=\"" + num(py(m.us)) + "\" r=\"3\" fill=\"" +
           colour + "\"/>\n";
  }

  // Legend, top left inside the plot area (latency is lowest there).
  if (!lines.empty()) {
    size_t longest = 0;
    for (const auto& l : lines) longest = std::max(longest, l.s->name.size());
    const double lx = kLeft + 12, ly = kTop + 12, row = 18;
    out += "<rect x=\"" + num(lx) + "\" y=\"" + num(ly) + "\" width=\"" + num(48 + 7.0 * double(longest)) +
           "\" height=\"" + num(row * double(lines.size()) + 8) +
           "\" fill=\"#ffffff\" fill-opacity=\"0.9\" stroke=\"#999999\" stroke-width=\"1\"/>\n";
    for (size_t i = 0; i < lines.size(); ++i) {
      const double y = ly + 4 + row * (double(i) + 0.5);
      out += "<line x1=\"" + num(lx + 8) + "\" y1=\"" + num(y) + "\" x2=\"" + num(lx + 36) +
             "\" y2=\"" + num(y) + "\" stroke=\"" + kPalette[i % kColours] + "\" stroke-width=\"2\"" +
             (lines[i].s->baseline ? " stroke-dasharray=\"7,4\"" : "") + "/>\n";
      text(out, lx + 42, y + 4, "font-size=\"12\"", xml_escape(lines[i].s->name));
    }
  }
  out += "</svg>\n";
  return out;
}

}  // namespace

bool write_percentile_svg(const std::string& path, const std::string& title,
                          const std::string& subtitle, const std::vector<PlotSeries>& series) {
  std::vector<Line> lines;
  for (const auto& s : series) {
    if (s.hist != nullptr && s.hist->count() != 0) lines.push_back({&s, sample(*s.hist)});
  }
  const std::string svg = render(title, subtitle, lines);

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  errno = 0;
  const bool wrote = std::fwrite(svg.data(), 1, svg.size(), f) == svg.size();
  const int saved = errno;
  const bool closed = std::fclose(f) == 0;
  if (!wrote) {
    errno = saved != 0 ? saved : EIO;
    return false;
  }
  return closed;
}

}  // namespace bus::bench
