#include "scenario_support.hpp"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <fstream>
#include <stdexcept>

namespace shmsched::bench {

const Machine& machine() {
  static const Machine m = [] {
    Machine r;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) r.cores = static_cast<unsigned>(CPU_COUNT(&set));
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("model name", 0) == 0) {
        const auto colon = line.find(':');
        if (colon != std::string::npos) r.cpu_model = line.substr(line.find_first_not_of(' ', colon + 1));
        break;
      }
    }
    if (r.cpu_model.empty()) r.cpu_model = "unknown";
    return r;
  }();
  return m;
}

int LogHistogram::bucket_of(std::uint64_t ns) noexcept {
  if (ns < kSub) return static_cast<int>(ns);  // exact below 16 ns
  const int msb = 63 - std::countl_zero(ns);   // >= 4
  const int sub = static_cast<int>((ns >> (msb - 4)) & (kSub - 1));
  return (msb - 3) * kSub + sub;
}

double LogHistogram::upper_ns(int bucket) noexcept {
  if (bucket < kSub) return bucket + 1;
  const int msb = bucket / kSub + 3;
  const int sub = bucket % kSub;
  return std::ldexp(static_cast<double>(kSub + sub + 1), msb - 4);
}

void LogHistogram::record(std::int64_t ns) noexcept {
  if (ns < 0) ns = 0;
  ++buckets_[static_cast<std::size_t>(bucket_of(static_cast<std::uint64_t>(ns)))];
  ++count_;
  max_ = std::max(max_, ns);
}

void LogHistogram::add(const LogHistogram& o) noexcept {
  for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += o.buckets_[i];
  count_ += o.count_;
  max_ = std::max(max_, o.max_);
}

double LogHistogram::quantile_us(double q) const noexcept {
  if (count_ == 0) return 0;
  const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
  std::uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += buckets_[static_cast<std::size_t>(b)];
    if (seen >= std::max<std::uint64_t>(rank, 1)) {
      return std::min(upper_ns(b), static_cast<double>(max_)) / 1000.0;
    }
  }
  return static_cast<double>(max_) / 1000.0;
}

std::vector<std::pair<double, double>> LogHistogram::cdf() const {
  std::vector<std::pair<double, double>> out;
  std::uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    const auto n = buckets_[static_cast<std::size_t>(b)];
    if (n == 0) continue;
    seen += n;
    out.emplace_back(upper_ns(b) / 1000.0, static_cast<double>(seen) / static_cast<double>(count_));
  }
  return out;
}

void Record::set_latency(const LogHistogram& h) {
  p50_us = h.quantile_us(0.50);
  p99_us = h.quantile_us(0.99);
  p999_us = h.quantile_us(0.999);
  extra["max_us"] = static_cast<double>(h.max_ns()) / 1000.0;
  extra["samples"] = h.count();
  nlohmann::json points = nlohmann::json::array();
  for (const auto& [us, frac] : h.cdf()) points.push_back({us, frac});
  extra["cdf"] = std::move(points);
}

nlohmann::json Record::to_json() const {
  auto opt = [](const std::optional<double>& v) -> nlohmann::json {
    return v && std::isfinite(*v) ? nlohmann::json(*v) : nlohmann::json(nullptr);
  };
  nlohmann::json j = {
      {"scenario", scenario},
      {"system", system},
      {"payload_bytes", payload_bytes},
      {"producers", producers},
      {"consumers", consumers},
      {"tasks_per_s", opt(tasks_per_s)},
      {"p50_us", opt(p50_us)},
      {"p99_us", opt(p99_us)},
      {"p999_us", opt(p999_us)},
      {"cores", machine().cores},
      {"cpu_model", machine().cpu_model},
  };
  if (!extra.empty()) j["extra"] = extra;
  if (!error.empty()) j["error"] = error;
  return j;
}

RecordSink::RecordSink(const std::string& path) {
  if (path.empty()) {
    out_ = stdout;
    return;
  }
  out_ = std::fopen(path.c_str(), "a");
  if (out_ == nullptr) throw std::runtime_error("cannot open " + path + " for appending");
  own_ = true;
}

RecordSink::~RecordSink() {
  if (own_) std::fclose(out_);
}

void RecordSink::write(const Record& r) {
  const std::string line = r.to_json().dump();
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
  auto fmt = [](const std::optional<double>& v) { return v ? std::to_string(*v) : std::string("-"); };
  std::fprintf(stderr, "%-22s %-18s %4uB %uP/%uC  tasks/s %-14s p50 %-10s p99 %-10s p99.9 %-10s %s\n",
               r.scenario.c_str(), r.system.c_str(), r.payload_bytes, r.producers, r.consumers,
               fmt(r.tasks_per_s).c_str(), fmt(r.p50_us).c_str(), fmt(r.p99_us).c_str(), fmt(r.p999_us).c_str(),
               r.error.empty() ? "" : ("ERROR: " + r.error).c_str());
}

// ---- names of shared-memory objects ---------------------------------------------------

namespace {

// The paths of the live ShmNames, where a signal handler can read them without
// allocating or locking. Every atomic here is lock-free, so the handler's loads are
// async-signal-safe.
constexpr int kNameSlots = 8;
std::atomic<bool> g_claimed[kNameSlots]{};
std::atomic<bool> g_live[kNameSlots]{};
char g_paths[kNameSlots][200]{};
pid_t g_owner = 0;  // the process that installed the handler; written before any fork

extern "C" void on_terminating_signal(int sig) {
  if (::getpid() == g_owner) {
    for (int i = 0; i < kNameSlots; ++i)
      // acquire: pairs with the release in ShmName's constructor; the path is complete.
      if (g_live[i].load(std::memory_order_acquire)) ::shm_unlink(g_paths[i]);
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

ShmName::ShmName(const std::string& path, std::function<void()> remove) : remove_(std::move(remove)) {
  for (int i = 0; i < kNameSlots; ++i) {
    bool expected = false;
    // acquire: the slot is ours from here; pairs with release()'s release store.
    if (!g_claimed[i].compare_exchange_strong(expected, true, std::memory_order_acquire)) continue;
    std::snprintf(g_paths[i], sizeof g_paths[i], "%s", path.c_str());
    // release: a handler that sees the slot live sees the whole path.
    g_live[i].store(true, std::memory_order_release);
    slot_ = i;
    return;
  }
}

void ShmName::release() {
  if (remove_) std::exchange(remove_, nullptr)();
  if (slot_ < 0) return;
  // relaxed, then release: the slot is dead before it is handed back for reuse.
  g_live[slot_].store(false, std::memory_order_relaxed);
  g_claimed[slot_].store(false, std::memory_order_release);
  slot_ = -1;
}

void install_cleanup_handlers() {
  g_owner = ::getpid();
  struct sigaction sa {};
  sa.sa_handler = on_terminating_signal;
  ::sigemptyset(&sa.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

std::string unique_name(std::string_view tag) {
  static unsigned serial = 0;
  return "shmsched_bench_" + std::string(tag) + "_" + std::to_string(::getpid()) + "_" + std::to_string(++serial);
}

}  // namespace shmsched::bench
