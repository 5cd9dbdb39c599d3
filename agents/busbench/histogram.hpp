// A latency histogram with HdrHistogram's bucket layout: log-linear buckets that keep
// `significant_digits` decimal digits of every value, fixed memory, O(1) record with no
// allocation. Writes HdrHistogram's percentile distribution text (.hgrm) so that existing
// plotters read busbench's output.
#pragma once

#include <cstdint>
#include <ostream>
#include <vector>

namespace bus::bench {

class Histogram {
 public:
  /// Values in [1, highest]; larger ones are clamped to highest and counted in clamped().
  explicit Histogram(uint64_t highest = 3'600'000'000'000ull, int significant_digits = 3);

  void record(uint64_t value) noexcept { record_n(value, 1); }
  void record_n(uint64_t value, uint64_t n) noexcept;

  /// Open-loop correction (coordinated omission, as HdrHistogram's recordValueWithExpectedInterval):
  /// a value longer than the expected interval also stands for the requests that would have
  /// been sent meanwhile, with latencies value - k*interval.
  void record_corrected(uint64_t value, uint64_t expected_interval) noexcept;

  void add(const Histogram& other) noexcept;
  void reset() noexcept;

  [[nodiscard]] uint64_t count() const noexcept { return total_; }
  [[nodiscard]] uint64_t min() const noexcept { return total_ ? min_ : 0; }
  [[nodiscard]] uint64_t max() const noexcept { return max_; }
  [[nodiscard]] uint64_t clamped() const noexcept { return clamped_; }
  [[nodiscard]] double mean() const noexcept;
  [[nodiscard]] double stddev() const noexcept;
  /// Value at percentile p (0..100): the highest value equivalent to the bucket holding it.
  [[nodiscard]] uint64_t percentile(double p) const noexcept;

  /// HdrHistogram percentile distribution, values divided by `unit_ratio` (1000: ns -> us).
  void write_hgrm(std::ostream& out, double unit_ratio = 1000.0,
                  int ticks_per_half_distance = 5) const;

  /// Calls f(value, count) for every non-empty bucket, in increasing order of value; `value`
  /// is the highest value the bucket stands for (recording it into another histogram of at
  /// least this precision keeps every percentile).
  template <class F>
  void for_each_bucket(F&& f) const {
    for (size_t i = 0; i < counts_.size(); ++i) {
      if (counts_[i] != 0) f(highest_equivalent(value_at_index(i)), counts_[i]);
    }
  }

  [[nodiscard]] size_t bucket_count() const noexcept { return bucket_count_; }
  [[nodiscard]] size_t sub_bucket_count() const noexcept { return sub_bucket_count_; }

 private:
  [[nodiscard]] size_t index_of(uint64_t v) const noexcept;
  [[nodiscard]] uint64_t value_at_index(size_t i) const noexcept;
  [[nodiscard]] uint64_t lowest_equivalent(uint64_t v) const noexcept;
  [[nodiscard]] uint64_t equivalent_range(uint64_t v) const noexcept;
  [[nodiscard]] uint64_t highest_equivalent(uint64_t v) const noexcept {
    return lowest_equivalent(v) + equivalent_range(v) - 1;
  }
  [[nodiscard]] uint64_t median_equivalent(uint64_t v) const noexcept {
    return lowest_equivalent(v) + equivalent_range(v) / 2;
  }

  uint64_t highest_;
  int sub_half_magnitude_;  // log2(sub_bucket_count / 2)
  uint64_t sub_bucket_count_;
  uint64_t sub_half_count_;
  uint64_t sub_mask_;
  size_t bucket_count_;
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  uint64_t clamped_ = 0;
};

}  // namespace bus::bench
