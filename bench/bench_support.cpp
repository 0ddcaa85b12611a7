// Definitions behind bench_support.hpp, shared by shmsched_bench and the macro-scenario
// drivers.
#include "bench_support.hpp"

#include <sched.h>

namespace shmsched::bench {

namespace {
std::atomic<std::uint64_t> g_task_count{2'000'000};
}  // namespace

std::uint64_t task_count() noexcept {
  return g_task_count.load(std::memory_order_relaxed);
}
void set_task_count(std::uint64_t n) noexcept {
  g_task_count.store(n, std::memory_order_relaxed);
}

namespace {
// The first two CPUs of the affinity mask the process started with.
std::pair<int, int> pinned_cpus() noexcept {
  static const std::pair<int, int> cpus = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return std::pair{-1, -1};
    int found[2] = {-1, -1};
    int k = 0;
    for (int c = 0; c < CPU_SETSIZE && k < 2; ++c) {
      if (CPU_ISSET(c, &set)) found[k++] = c;
    }
    return k == 2 ? std::pair{found[0], found[1]} : std::pair{-1, -1};
  }();
  return cpus;
}
}  // namespace

int producer_cpu() noexcept {
  return pinned_cpus().first;
}
int consumer_cpu() noexcept {
  return pinned_cpus().second;
}

std::string_view to_string(ConsumerError e) noexcept {
  switch (e) {
    case kConsumerOk:
      return "ok";
    case kAttachFailed:
      return "consumer could not attach";
    case kBadItem:
      return "consumer received a malformed item";
    case kCompleteFailed:
      return "consumer could not complete a task";
    case kParentGone:
      return "producer process went away";
    case kConsumerTimeout:
      return "consumer timed out";
    case kOpenFailed:
      return "consumer could not open the queue";
  }
  return "unknown consumer error";
}

bool wait_for_flag(const std::atomic<std::uint32_t>& flag, Child* child, std::chrono::milliseconds timeout) noexcept {
  const std::int64_t deadline = now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  Backoff backoff;
  for (std::uint64_t i = 0;; ++i) {
    // acquire: pairs with the consumer's release store of the flag, so its report
    // fields written before it are visible.
    if (flag.load(std::memory_order_acquire) != 0) return true;
    if ((i & 1023) == 0) {
      if (child != nullptr && child->exited()) return flag.load(std::memory_order_acquire) != 0;
      if (now_ns() > deadline) return false;
    }
    backoff.pause();
  }
}

void reap_children(std::vector<Child>& children, std::string& error, std::chrono::milliseconds timeout) {
  const bool all = wait_until(
      [&] { return std::all_of(children.begin(), children.end(), [](Child& c) { return c.exited(); }); }, timeout);
  if (!all && error.empty()) error = "a child process did not exit in time";
  for (Child& c : children) {
    if (!c.exited()) continue;
    const int rc = c.wait();  // already reaped: returns the status it kept
    if (rc != 0 && error.empty()) error = "child process exited with status " + std::to_string(rc);
  }
}

std::string check_report(const ConsumerReport& r, std::uint64_t n) {
  if (const auto f = r.failed.load(std::memory_order_acquire); f != kConsumerOk)
    return std::string(to_string(static_cast<ConsumerError>(f)));
  const std::uint64_t count = r.count.load(std::memory_order_relaxed);
  if (count != n) return "consumer saw " + std::to_string(count) + " items, expected " + std::to_string(n);
  if (r.sum.load(std::memory_order_relaxed) != checksum_of(n)) return "checksum mismatch: items were lost or garbled";
  return {};
}

}  // namespace shmsched::bench
