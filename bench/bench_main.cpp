// Entry point of shmsched_bench: Google Benchmark's own flags, plus --tasks=N (items per
// cross-thread and cross-process run). The ratios between rows are bench/report.py's.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bench_support.hpp"

namespace {

// Takes --tasks=N out of argv before the framework sees it; false on a bad value.
bool take_tasks_flag(int& argc, char** argv) {
  constexpr std::string_view kFlag = "--tasks=";
  int w = 1;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.substr(0, kFlag.size()) != kFlag) {
      argv[w++] = argv[i];
      continue;
    }
    char* end = nullptr;
    const unsigned long long n = std::strtoull(argv[i] + kFlag.size(), &end, 10);
    if (end == nullptr || *end != '\0' || n < shmsched::bench::kBatch) {
      std::fprintf(stderr, "--tasks wants an integer >= %zu\n", shmsched::bench::kBatch);
      ok = false;
    } else {
      shmsched::bench::set_task_count(n);
    }
  }
  argc = w;
  argv[argc] = nullptr;
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace shmsched::bench;
  if (!take_tasks_flag(argc, argv)) return 2;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("tasks_per_cross_run", std::to_string(task_count()));
  benchmark::AddCustomContext("item_bytes", std::to_string(sizeof(Item)));
  benchmark::AddCustomContext("cross_run_cpus", producer_cpu() < 0
                                                    ? std::string("not pinned (fewer than 2 CPUs)")
                                                    : "producer on " + std::to_string(producer_cpu()) +
                                                          ", consumer on " + std::to_string(consumer_cpu()));
#ifndef NDEBUG
  benchmark::AddCustomContext("shmsched_build", "assertions on: numbers are not representative");
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
