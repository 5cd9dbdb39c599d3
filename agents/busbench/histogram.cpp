#include "histogram.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>

namespace bus::bench {

Histogram::Histogram(uint64_t highest, int significant_digits) : highest_(std::max<uint64_t>(highest, 2)) {
  significant_digits = std::clamp(significant_digits, 1, 5);
  uint64_t single_unit = 2;
  for (int i = 0; i < significant_digits; ++i) single_unit *= 10;  // 2 * 10^digits
  const int sub_magnitude = static_cast<int>(std::bit_width(single_unit - 1));  // ceil(log2)
  sub_half_magnitude_ = std::max(sub_magnitude, 1) - 1;
  sub_bucket_count_ = uint64_t{1} << (sub_half_magnitude_ + 1);
  sub_half_count_ = sub_bucket_count_ / 2;
  sub_mask_ = sub_bucket_count_ - 1;
  // Buckets until the smallest value no bucket can hold exceeds `highest`.
  uint64_t smallest_untrackable = sub_bucket_count_;
  size_t buckets = 1;
  while (smallest_untrackable <= highest_) {
    if (smallest_untrackable > UINT64_MAX / 2) {
      ++buckets;
      break;
    }
    smallest_untrackable <<= 1;
    ++buckets;
  }
  bucket_count_ = buckets;
  counts_.assign((bucket_count_ + 1) * sub_half_count_, 0);
}

size_t Histogram::index_of(uint64_t v) const noexcept {
  const int pow2ceiling = 64 - std::countl_zero(v | sub_mask_);
  const int bucket = pow2ceiling - (sub_half_magnitude_ + 1);
  const uint64_t sub = v >> bucket;
  const size_t base = static_cast<size_t>(bucket + 1) << sub_half_magnitude_;
  return base + static_cast<size_t>(sub - sub_half_count_);
}

uint64_t Histogram::value_at_index(size_t i) const noexcept {
  int bucket = static_cast<int>(i >> sub_half_magnitude_) - 1;
  uint64_t sub = (i & (sub_half_count_ - 1)) + sub_half_count_;
  if (bucket < 0) {
    sub -= sub_half_count_;
    bucket = 0;
  }
  return sub << bucket;
}

uint64_t Histogram::lowest_equivalent(uint64_t v) const noexcept {
  const int pow2ceiling = 64 - std::countl_zero(v | sub_mask_);
  const int bucket = pow2ceiling - (sub_half_magnitude_ + 1);
  return (v >> bucket) << bucket;
}

uint64_t Histogram::equivalent_range(uint64_t v) const noexcept {
  const int pow2ceiling = 64 - std::countl_zero(v | sub_mask_);
  const int bucket = pow2ceiling - (sub_half_magnitude_ + 1);
  return uint64_t{1} << bucket;
}

void Histogram::record_n(uint64_t v, uint64_t n) noexcept {
  if (v > highest_) {
    v = highest_;
    clamped_ += n;
  }
  counts_[index_of(v)] += n;
  total_ += n;
  min_ = std::min(min_, v);
  max_ = std::max(max_, v);
}

void Histogram::record_corrected(uint64_t v, uint64_t interval) noexcept {
  record(v);
  if (interval == 0 || v <= interval) return;
  for (uint64_t missing = v - interval; missing >= interval; missing -= interval) record(missing);
}

void Histogram::add(const Histogram& o) noexcept {
  for (size_t i = 0; i < o.counts_.size(); ++i) {
    if (o.counts_[i] != 0) record_n(o.value_at_index(i), o.counts_[i]);
  }
  clamped_ += o.clamped_;
  if (o.total_ != 0) {
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
  }
}

void Histogram::reset() noexcept {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_ = 0;
  min_ = UINT64_MAX;
  max_ = 0;
  clamped_ = 0;
}

double Histogram::mean() const noexcept {
  if (total_ == 0) return 0;
  double sum = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] != 0) sum += static_cast<double>(median_equivalent(value_at_index(i))) * static_cast<double>(counts_[i]);
  }
  return sum / static_cast<double>(total_);
}

double Histogram::stddev() const noexcept {
  if (total_ == 0) return 0;
  const double m = mean();
  double sq = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] != 0) {
      const double d = static_cast<double>(median_equivalent(value_at_index(i))) - m;
      sq += d * d * static_cast<double>(counts_[i]);
    }
  }
  return std::sqrt(sq / static_cast<double>(total_));
}

uint64_t Histogram::percentile(double p) const noexcept {
  if (total_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  const auto target = std::max<uint64_t>(1, static_cast<uint64_t>(p / 100.0 * static_cast<double>(total_) + 0.5));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= target) return std::min(highest_equivalent(value_at_index(i)), max_);
  }
  return max_;
}

void Histogram::write_hgrm(std::ostream& out, double unit_ratio, int ticks_per_half_distance) const {
  char line[160];
  out << "       Value     Percentile TotalCount 1/(1-Percentile)\n\n";
  if (total_ != 0) {
    // Walk the counts; report each time the cumulative percentile passes the next level.
    // Levels get denser towards 100% (ticks_per_half_distance per halving of 100 - p).
    double level = 0;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      if (counts_[i] == 0) continue;
      seen += counts_[i];
      const double pct = 100.0 * static_cast<double>(seen) / static_cast<double>(total_);
      const double value = static_cast<double>(std::min(highest_equivalent(value_at_index(i)), max_)) / unit_ratio;
      while (level <= pct && seen < total_) {
        const double frac = level / 100.0;
        std::snprintf(line, sizeof line, "%12.3f %2.12f %10llu %14.2f\n", value, frac,
                      static_cast<unsigned long long>(seen), 1.0 / (1.0 - frac));
        out << line;
        const double half_distances = std::floor(std::log2(100.0 / (100.0 - level))) + 1;
        const double ticks = ticks_per_half_distance * std::pow(2.0, half_distances);
        level += 100.0 / ticks;
      }
      if (seen == total_) {
        std::snprintf(line, sizeof line, "%12.3f %2.12f %10llu\n", value, 1.0,
                      static_cast<unsigned long long>(seen));
        out << line;
      }
    }
  }
  std::snprintf(line, sizeof line, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n",
                mean() / unit_ratio, stddev() / unit_ratio);
  out << line;
  std::snprintf(line, sizeof line, "#[Max     = %12.3f, Total count    = %12llu]\n",
                static_cast<double>(max_) / unit_ratio, static_cast<unsigned long long>(total_));
  out << line;
  std::snprintf(line, sizeof line, "#[Buckets = %12zu, SubBuckets     = %12llu]\n", bucket_count_,
                static_cast<unsigned long long>(sub_bucket_count_));
  out << line;
}

}  // namespace bus::bench
