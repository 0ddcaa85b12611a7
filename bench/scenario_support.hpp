// What the macro-scenario drivers share: one measurement record with the fields of
// bench/results/latest.json, a log-bucket latency histogram, the machine description
// every record carries, and the names of the shared-memory objects a driver creates,
// removed on every way out.
//
// A driver prints one JSON object per line (JSON Lines) to the file given by --json=PATH
// (or stdout); bench/run gathers the lines of every driver into latest.json.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shmsched::bench {

/// Cores this process may run on and the CPU model from /proc/cpuinfo.
struct Machine {
  unsigned cores = 0;
  std::string cpu_model;
};
const Machine& machine();

/// Latency histogram over nanoseconds with logarithmic buckets: 16 sub-buckets per power
/// of two (a bucket is at most 1/16 = 6.25% wide), so percentiles are exact to that
/// resolution whatever the range, with fixed memory and O(1) insertion. Not thread-safe;
/// merge per-thread histograms with add().
class LogHistogram {
 public:
  void record(std::int64_t ns) noexcept;
  void add(const LogHistogram& other) noexcept;
  std::uint64_t count() const noexcept { return count_; }
  std::int64_t max_ns() const noexcept { return max_; }
  /// The q-quantile (0 < q <= 1) in microseconds: the upper edge of the bucket the
  /// q-th sample falls in (so it never reports less than the truth). 0 when empty.
  double quantile_us(double q) const noexcept;
  /// (upper edge in µs, cumulative fraction) for every non-empty bucket: a CDF to plot.
  std::vector<std::pair<double, double>> cdf() const;

 private:
  static constexpr int kSub = 16;
  static constexpr int kBuckets = 64 * kSub;
  static int bucket_of(std::uint64_t ns) noexcept;
  static double upper_ns(int bucket) noexcept;
  std::array<std::uint64_t, kBuckets> buckets_{};
  std::uint64_t count_ = 0;
  std::int64_t max_ = 0;
};

/// One measurement: the fields bench/results/latest.json requires, plus free-form extras
/// (a scenario's own figures, such as inversion counts or wall time / ideal).
struct Record {
  std::string scenario;  // e.g. "full_path", "latency_sleeping", "priority"
  std::string system;    // e.g. "shmsched", "boost_mq", "redis", "redis_pipelined"
  unsigned payload_bytes = 64;
  unsigned producers = 1;
  unsigned consumers = 1;
  std::optional<double> tasks_per_s;
  std::optional<double> p50_us, p99_us, p999_us;
  nlohmann::json extra = nlohmann::json::object();
  std::string error;  // non-empty: the run failed and the figures are absent

  /// Fills p50/p99/p99.9 from a histogram (and extra.max_us and extra.samples).
  void set_latency(const LogHistogram& h);
  nlohmann::json to_json() const;
};

/// Where records go: --json=PATH appends to PATH, otherwise stdout. Also prints a
/// one-line human summary of each record on stderr.
class RecordSink {
 public:
  explicit RecordSink(const std::string& path);
  RecordSink(const RecordSink&) = delete;
  RecordSink& operator=(const RecordSink&) = delete;
  ~RecordSink();
  void write(const Record& r);

 private:
  std::FILE* out_ = nullptr;
  bool own_ = false;
};

/// A named POSIX shared-memory object of one run ("/name" under /dev/shm): removed through
/// its library by release() or the destructor, and until then known to the handler that
/// install_cleanup_handlers() sets up, which removes it on SIGINT, SIGTERM or SIGHUP.
/// Drivers create an object, map it into every process that needs it, then release the
/// name at once, so that even a SIGKILL leaves nothing behind.
class ShmName {
 public:
  ShmName(const std::string& path, std::function<void()> remove);
  ShmName(const ShmName&) = delete;
  ShmName& operator=(const ShmName&) = delete;
  ~ShmName() { release(); }
  void release();

 private:
  std::function<void()> remove_;
  int slot_ = -1;
};

/// Installs the handler behind ShmName for SIGINT, SIGTERM and SIGHUP. Forked children
/// inherit it, but only the process that installed it removes anything.
void install_cleanup_handlers();

/// "<prefix>_<tag>_<pid>_<serial>": a name no other run of any driver uses.
std::string unique_name(std::string_view tag);

}  // namespace shmsched::bench
