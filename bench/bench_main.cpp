// Entry point of shmsched_bench: Google Benchmark's own flags, plus --tasks=N, and a
// ratio table printed after the runs from the rates the framework itself measured (a
// reporter passes every run through to the usual console/JSON/CSV output and keeps the
// items_per_second of each; with repetitions, the median).
#include <benchmark/benchmark.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "shmsched/detail/fault.hpp"

namespace shmsched::bench {

namespace {

struct Ratio {
  std::string group, label, numerator, denominator;
};
std::vector<Ratio>& ratios() {
  static std::vector<Ratio> r;
  return r;
}

struct CounterRatio {
  std::string group, label, numerator, num_counter, denominator, den_counter;
};
std::vector<CounterRatio>& counter_ratios() {
  static std::vector<CounterRatio> r;
  return r;
}

}  // namespace

RatioDecl::RatioDecl(std::string group, std::string label, std::string numerator, std::string denominator) {
  ratios().push_back({std::move(group), std::move(label), std::move(numerator), std::move(denominator)});
}

CounterRatioDecl::CounterRatioDecl(std::string group, std::string label, std::string numerator, std::string num_counter,
                                   std::string denominator, std::string den_counter) {
  counter_ratios().push_back({std::move(group), std::move(label), std::move(numerator), std::move(num_counter),
                              std::move(denominator), std::move(den_counter)});
}

namespace {

// The key a ratio refers to: function name plus arguments, without the
// iterations/repeats/time-type decorations and without the aggregate suffix.
std::string key_of(const benchmark::BenchmarkReporter::Run& run) {
  const auto& n = run.run_name;
  return n.args.empty() ? n.function_name : n.function_name + "/" + n.args;
}

class CollectingReporter : public benchmark::BenchmarkReporter {
 public:
  explicit CollectingReporter(std::unique_ptr<benchmark::BenchmarkReporter> inner) : inner_(std::move(inner)) {}

  bool ReportContext(const Context& context) override { return inner_->ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      if (run.run_type == Run::RT_Aggregate && !median) continue;
      for (const auto& [name, counter] : run.counters) {
        auto& rec = values_[key_of(run)][name];
        if (median) {
          rec.median = counter.value;
        } else {
          rec.samples.push_back(counter.value);
        }
      }
    }
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }

  /// The rate of a benchmark: the median aggregate if there was one, else the median of
  /// the runs seen; 0 when it did not run.
  double rate(const std::string& key) const { return value(key, "items_per_second"); }

  /// A counter of a benchmark, chosen as rate() chooses; 0 when it is missing.
  double value(const std::string& key, const std::string& counter) const {
    const auto it = values_.find(key);
    if (it == values_.end()) return 0;
    const auto c = it->second.find(counter);
    if (c == it->second.end()) return 0;
    if (c->second.median > 0) return c->second.median;
    auto s = c->second.samples;
    if (s.empty()) return 0;
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
  }

 private:
  struct Values {
    double median = 0;
    std::vector<double> samples;
  };
  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
  std::map<std::string, std::map<std::string, Values>> values_;
};

std::string human_rate(double r) {
  char buf[32];
  if (r >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.2fG/s", r / 1e9);
  } else if (r >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM/s", r / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.1fk/s", r / 1e3);
  }
  return buf;
}

void print_ratios(const CollectingReporter& rep, std::FILE* out) {
  auto list = ratios();
  std::stable_sort(list.begin(), list.end(), [](const Ratio& a, const Ratio& b) { return a.group < b.group; });
  std::string group;
  bool any = false;
  for (const Ratio& r : list) {
    const double num = rep.rate(r.numerator);
    const double den = rep.rate(r.denominator);
    if (num <= 0 || den <= 0) continue;
    if (!any) {
      std::fprintf(out, "\nratios (items/s of the first over the second; > 1 means the first is faster)\n");
      any = true;
    }
    if (r.group != group) {
      group = r.group;
      std::fprintf(out, "  %s\n", group.c_str());
    }
    std::fprintf(out, "    %-58s %7.2fx   (%s vs %s)\n", r.label.c_str(), num / den, human_rate(num).c_str(),
                 human_rate(den).c_str());
  }
  std::fflush(out);
}

void print_counter_ratios(const CollectingReporter& rep, std::FILE* out) {
  auto list = counter_ratios();
  std::stable_sort(list.begin(), list.end(),
                   [](const CounterRatio& a, const CounterRatio& b) { return a.group < b.group; });
  std::string group;
  bool any = false;
  for (const CounterRatio& r : list) {
    const double num = rep.value(r.numerator, r.num_counter);
    const double den = rep.value(r.denominator, r.den_counter);
    if (num <= 0 || den <= 0) continue;
    if (!any) {
      std::fprintf(out,
                   "\ncounter ratios (a counter of the first over one of the second; for latencies < 1 means "
                   "the first is faster)\n");
      any = true;
    }
    if (r.group != group) {
      group = r.group;
      std::fprintf(out, "  %s\n", group.c_str());
    }
    std::fprintf(out, "    %-58s %7.2fx   (%s %.2f vs %s %.2f)\n", r.label.c_str(), num / den, r.num_counter.c_str(),
                 num, r.den_counter.c_str(), den);
  }
  std::fflush(out);
}

// Our own flag, taken out of argv before the framework sees it.
bool take_tasks_flag(int& argc, char** argv) {
  int w = 1;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    constexpr std::string_view kFlag = "--tasks=";
    const std::string_view a = argv[i];
    if (a.substr(0, kFlag.size()) == kFlag) {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(argv[i] + kFlag.size(), &end, 10);
      if (end == nullptr || *end != '\0' || n < kBatch) {
        std::fprintf(stderr, "--tasks wants an integer >= %zu\n", kBatch);
        ok = false;
      } else {
        set_task_count(n);
      }
      continue;
    }
    argv[w++] = argv[i];
  }
  argc = w;
  argv[argc] = nullptr;
  return ok;
}

// The reporter the framework would have picked from --benchmark_format and
// --benchmark_color (it does not expose that choice, so the two flags are read here).
std::unique_ptr<benchmark::BenchmarkReporter> display_reporter(int argc, char** argv, bool& console) {
  std::string format = "console";
  std::string color = "auto";
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.rfind("--benchmark_format=", 0) == 0) format = std::string(a.substr(19));
    if (a.rfind("--benchmark_color=", 0) == 0) color = std::string(a.substr(18));
  }
  console = format == "console";
  if (format == "json") return std::make_unique<benchmark::JSONReporter>();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  if (format == "csv") return std::make_unique<benchmark::CSVReporter>();
#pragma GCC diagnostic pop
  const bool use_color =
      color == "true" || color == "yes" || color == "1" || (color == "auto" && ::isatty(STDOUT_FILENO) != 0);
  return std::make_unique<benchmark::ConsoleReporter>(use_color ? benchmark::ConsoleReporter::OO_ColorTabular
                                                                : benchmark::ConsoleReporter::OO_Tabular);
}

}  // namespace
}  // namespace shmsched::bench

int main(int argc, char** argv) {
  using namespace shmsched::bench;
  if (!take_tasks_flag(argc, argv)) return 2;
  // Read before Initialize, which consumes the framework's flags.
  bool console = true;
  CollectingReporter reporter(display_reporter(argc, argv, console));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  benchmark::AddCustomContext("tasks_per_cross_run", std::to_string(task_count()));
  benchmark::AddCustomContext("item_bytes", std::to_string(sizeof(Item)));
  benchmark::AddCustomContext("cross_run_cpus", producer_cpu() < 0
                                                    ? std::string("not pinned (fewer than 2 CPUs)")
                                                    : "producer on " + std::to_string(producer_cpu()) +
                                                          ", consumer on " + std::to_string(consumer_cpu()));
#ifdef NDEBUG
  benchmark::AddCustomContext("shmsched_build", "optimised (NDEBUG)");
#else
  benchmark::AddCustomContext("shmsched_build", "assertions on: numbers are not representative");
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  benchmark::AddCustomContext("sanitizers", "ON: numbers are not representative");
#endif
  // Fault points count every pass through the hot path; a build with them is slower.
  if (shmsched::fault::enabled())
    benchmark::AddCustomContext("shmsched_fault_points", "ON: hot paths are instrumented, numbers are pessimistic");

  benchmark::RunSpecifiedBenchmarks(&reporter);
  // Keep machine-readable stdout clean: the table goes to stderr unless on the console.
  print_ratios(reporter, console ? stdout : stderr);
  print_counter_ratios(reporter, console ? stdout : stderr);
  benchmark::Shutdown();
  return 0;
}
