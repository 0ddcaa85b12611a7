// shmsched_scenarios: how the scheduler behaves, not how fast its hot path is. Each
// scenario prints one JSON Lines record per system (bench/scenario_support.hpp); bench/run
// gathers them into bench/results/latest.json.
//
//   shmsched_scenarios [--json=PATH] [--quick] [--only=SUBSTRING]
//   shmsched_scenarios --callgrind-workload --tasks=N
//
// Scenarios (Record.scenario / Record.system):
//
//   priority / shmsched
//       A backlog of 64-byte tasks at random levels 0..7 (fixed seed) is enqueued before
//       one Consumer with 1 worker starts (aging disabled: strict order expected); the
//       handler logs the level in execution order. extra.inversions = pairs (i < j in execution order)
//       with level[j] < level[i], i.e. a more urgent task that was waiting while a less
//       urgent one ran; extra.inverted_runs = tasks that ran while at least one more
//       urgent task still waited; extra.fifo_violations = same-level pairs out of
//       enqueue order (adjacent in the level's subsequence). tasks_per_s = backlog / drain.
//   starvation / shmsched, shmsched_no_aging
//       One Consumer worker; a feeder thread keeps level 0 topped up (1000..2000 queued
//       tasks of a 50 us busy-wait each, so level 0 is never empty for the whole window:
//       extra.level0_min_pending > 0 proves it); 4 level-7 tasks at the start of the
//       window and one every 100 ms until bound + 250 ms before its end. Aging bound
//       500 ms (Client::set_aging), or 0. Latency figures are the level-7 waits (enqueue ->
//       handler start). extra.within_bound: max wait <= bound + tolerance, where the
//       tolerance covers what the aging rule itself allows: one aging look per coarse
//       clock tick (the look is rate-limited to once a millisecond per process and reads
//       CLOCK_MONOTONIC_COARSE), one look per aged task when several age at once (the 4
//       start tasks), one 50 us handler in front, and 10 ms of scheduling noise on a
//       shared 2-core machine. The no-aging run is compared with the same bound.
//   primary_secondary / shmsched_reserve0, shmsched_reserve1
//       Two consumer processes of 2 workers each: primary (home "general"), secondary
//       (home "selenium", help "general", reserve 0 or 1). The parent keeps >= 200 general
//       tasks queued (handlers SLEEP 1 ms: a busy-wait by 4 workers would saturate both
//       cores and measure CPU contention rather than the reserve) and enqueues one
//       level-0 selenium task every 5 ms. Latency figures: selenium enqueue -> handler
//       start. extra.helped: general tasks the secondary took.
//   scarce_resource / shmsched, emulated_incr_decr
//       200 tasks each holding one permit of semaphore "selenium" (capacity 5) for 10 ms
//       (a sleep), run by 8 workers in 2 consumer processes. shmsched: declared needs
//       (parking and hand-over). Emulation of the broker workaround with the same workers:
//       a shared atomic counter, INCR; over the limit DECR and Outcome::retry(10 ms).
//       extra: wall_ms (gate open -> last handler end), ideal_ms (200 / 5 * 10),
//       wall_over_ideal, max_concurrent, in_use_after (Segment::semaphores(); for the
//       emulation the counter).
//       The full run repeats 3 times and reports the median wall.
//
//   --callgrind-workload --tasks=N: no records; one process, a private segment, one
//       producer thread enqueuing N 64-byte tasks and one in-process Consumer (1 worker,
//       no-op handler); exits 0 once all N ran. Run under callgrind at two sizes, the
//       difference in instructions over the difference in N is the cost of one task's
//       full path (enqueue -> handler -> ack). Up to 65536 tasks the producer finishes
//       before the worker starts, so the count is exactly repeatable (see below). Every
//       record is used once before the counted part (steady state).
//   --callgrind-workload=engine_single|engine_batch --tasks=N: the engine alone in one
//       thread: N enqueues then N takes and completes, single calls or batches of 64.
//   --callgrind-workload=engine_semaphore --tasks=N: engine_single where every task needs a
//       permit: take, acquire_for, complete, release_for.
//
// Exit status: 0 when every record has no error. The behaviour checks are reported in
// extra (within_bound, strict_order), not enforced; broken invariants (a task lost or run
// twice, capacity exceeded, permits left in use) are errors.
//
// Named segments get unique_name()s, are removed by RAII on every return and by a
// SIGINT/SIGTERM/SIGHUP handler (ShmName); once every process has one mapped, its name is
// removed at once, so even a SIGKILL leaves nothing in /dev/shm. Child processes die with
// the parent (bench_support.hpp Child). Every wait is bounded.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "scenario_support.hpp"
#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench {
namespace {

using namespace std::chrono_literals;

// Everything below that lives in MAP_SHARED memory is one of these; a lock-based
// emulation would deadlock a process that dies holding it.
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);
static_assert(std::atomic<int>::is_always_lock_free);

constexpr int kLevels = 8;
constexpr auto kStartTimeout = 10s;

// The 64-byte task every scenario moves.
struct Job {
  std::uint64_t seq = 0;
  std::int64_t enqueued_ns = 0;  // steady clock (CLOCK_MONOTONIC, system-wide), just before enqueue
  std::uint32_t level = 0;
  std::byte pad[44]{};
};
static_assert(sizeof(Job) == 64);

Layout scenario_layout(std::uint32_t capacity, std::uint32_t semaphores = 2) {
  Layout l;
  l.levels = kLevels;
  l.task_capacity = capacity;
  l.payload_bytes = sizeof(Job);
  l.max_queues = 4;
  l.max_participants = 16;
  l.max_semaphores = semaphores;
  return l;
}

void busy_wait(std::chrono::nanoseconds d) noexcept {
  const std::int64_t end = now_ns() + d.count();
  while (now_ns() < end) cpu_relax();
}

void sleep_until_ns(std::int64_t t) noexcept {
  // now_ns() is std::chrono::steady_clock, which is CLOCK_MONOTONIC in libstdc++.
  timespec ts{static_cast<time_t>(t / 1'000'000'000), static_cast<long>(t % 1'000'000'000)};
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// Sets the error and returns the result: the one-line early exit of every scenario.
template <class R>
R failed(R r, std::string why) {
  r.error = std::move(why);
  return r;
}

void note_max(std::atomic<int>& m, int v) noexcept {
  // relaxed: a running maximum read only after the run (the parent's reap orders it).
  int cur = m.load(std::memory_order_relaxed);
  while (v > cur && !m.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// ---- named segments: removed on every path --------------------------------------------

// A named segment that is always destroyed: by the destructor on every return, by the
// signal handler on SIGINT/SIGTERM/SIGHUP (ShmName), and early by unlink() once every
// process that needs it has it mapped.
class NamedSegment {
 public:
  explicit NamedSegment(std::string_view tag) : name_(unique_name(tag)) {}
  NamedSegment(const NamedSegment&) = delete;
  NamedSegment& operator=(const NamedSegment&) = delete;
  ~NamedSegment() {
    seg_.reset();
    unlink();
  }
  // Empty on success, else the reason.
  std::string create(const Layout& layout, std::vector<std::string> queues) {
    // Known to the signal handler before it exists: a signal during create still cleans up.
    shm_name_.emplace("/" + Segment::object_name(name_), [n = name_] { (void)Segment::destroy(n); });
    auto s = Segment::create(name_, layout, CreateOptions{0600, std::move(queues)});
    if (!s) return "create segment: " + s.error().message();
    seg_.emplace(std::move(*s));
    return {};
  }
  void unlink() noexcept {
    if (shm_name_) shm_name_->release();
  }
  Segment& operator*() noexcept { return *seg_; }
  Segment* operator->() noexcept { return &*seg_; }
  const std::string& name() const noexcept { return name_; }

 private:
  std::string name_;
  std::optional<ShmName> shm_name_;
  std::optional<Segment> seg_;
};

// ---- the run ------------------------------------------------------------------------

struct Ctx {
  bool quick = false;
  RecordSink* sink = nullptr;
  bool failed = false;
  void emit(const Record& r) {
    sink->write(r);
    if (!r.error.empty()) failed = true;
  }
};

Record make_record(std::string scenario, std::string system, unsigned producers, unsigned consumers) {
  Record r;
  r.scenario = std::move(scenario);
  r.system = std::move(system);
  r.payload_bytes = sizeof(Job);
  r.producers = producers;
  r.consumers = consumers;
  return r;
}

// =====================================================================================
// 1. priority
// =====================================================================================

constexpr std::uint64_t kPrioritySeed = 0x5eed'2024'0001ULL;

struct OrderStats {
  std::uint64_t inversions = 0;     // pairs i < j (execution order) with level[j] < level[i]
  std::uint64_t inverted_runs = 0;  // i such that some j > i has level[j] < level[i]
  std::uint64_t fifo_violations = 0;
};

// O(n * levels): for each task, the tasks of less urgent levels that ran before it.
OrderStats order_stats(const std::vector<std::uint8_t>& levels, const std::vector<std::uint64_t>& seqs) {
  OrderStats s;
  std::array<std::uint64_t, kLevels> ran{};
  for (std::uint8_t l : levels) {
    for (int k = l + 1; k < kLevels; ++k) s.inversions += ran[k];
    ++ran[l];
  }
  int min_after = kLevels;
  for (std::size_t i = levels.size(); i-- > 0;) {
    if (min_after < levels[i]) ++s.inverted_runs;
    min_after = std::min<int>(min_after, levels[i]);
  }
  std::array<std::int64_t, kLevels> last{};
  last.fill(-1);
  for (std::size_t i = 0; i < levels.size(); ++i) {
    if (static_cast<std::int64_t>(seqs[i]) < last[levels[i]]) ++s.fifo_violations;
    last[levels[i]] = static_cast<std::int64_t>(seqs[i]);
  }
  return s;
}

std::vector<std::uint8_t> priority_levels(std::size_t n) {
  std::mt19937_64 rng(kPrioritySeed);
  std::vector<std::uint8_t> v(n);
  for (auto& l : v) l = static_cast<std::uint8_t>(rng() % kLevels);
  return v;
}

void fill_priority_record(Record& r, std::size_t n, double drain_s, const std::vector<std::uint8_t>& levels,
                          const std::vector<std::uint64_t>& seqs) {
  if (levels.size() != n) {
    if (r.error.empty()) r.error = "ran " + std::to_string(levels.size()) + " of " + std::to_string(n) + " tasks";
    return;
  }
  const OrderStats s = order_stats(levels, seqs);
  r.tasks_per_s = static_cast<double>(n) / drain_s;
  r.extra["tasks"] = n;
  r.extra["levels"] = kLevels;
  r.extra["seed"] = kPrioritySeed;
  r.extra["drain_ms"] = drain_s * 1e3;
  r.extra["inversions"] = s.inversions;
  r.extra["inverted_runs"] = s.inverted_runs;
  r.extra["fifo_violations"] = s.fifo_violations;
  r.extra["strict_order"] = s.inversions == 0 && s.fifo_violations == 0;
}

Record priority_shmsched(std::size_t n) {
  Record r = make_record("priority", "shmsched", 1, 1);
  r.extra["aging_ms"] = 0;
  r.extra["workers"] = 1;
  const std::vector<std::uint8_t> level_of = priority_levels(n);
  NamedSegment seg("prio");
  if (r.error = seg.create(scenario_layout(65536), {"work"}); !r.error.empty()) return r;
  seg.unlink();  // one process: mapped already
  const QueueId q = seg->find_queue("work").value();
  auto producer = Client::attach(*seg);
  if (!producer) return failed(r, "attach: " + producer.error().message());
  producer->set_aging(q, 0ms);  // strict priority is what this scenario checks
  const std::int64_t fill0 = now_ns();
  for (std::size_t i = 0; i < n; ++i) {
    TaskOptions o;
    o.queue = q;
    o.priority = level_of[i];
    Job job;
    job.seq = i;
    job.level = level_of[i];
    if (const Errc e = producer->enqueue_value("prio", job, o); e != Errc::ok)
      return failed(r, "enqueue: " + std::string(to_string(e)));
  }
  r.extra["fill_ms"] = static_cast<double>(now_ns() - fill0) / 1e6;
  ConsumerOptions co;
  co.home = {"work"};
  co.workers = 1;
  auto consumer = Consumer::create(*seg, co);
  if (!consumer) return failed(r, "consumer: " + consumer.error().message());
  // One worker writes these; the main thread reads them after join(), which orders it.
  std::vector<std::uint8_t> levels;
  std::vector<std::uint64_t> seqs;
  levels.reserve(n);
  seqs.reserve(n);
  std::int64_t end_ns = 0;
  std::atomic<std::uint32_t> finished{0};
  (*consumer)->on_value<Job>("prio", [&](const Job& job, TaskContext&) {
    levels.push_back(static_cast<std::uint8_t>(job.level));
    seqs.push_back(job.seq);
    if (levels.size() == n) {
      end_ns = now_ns();
      // release: end_ns is visible to the waiter that sees the flag.
      finished.store(1, std::memory_order_release);
    }
    return Outcome::done();
  });
  const std::int64_t t0 = now_ns();
  (*consumer)->start();
  // acquire: pairs with the handler's release store.
  const bool done = wait_until([&] { return finished.load(std::memory_order_acquire) != 0; }, 60s);
  (*consumer)->request_stop();
  if (!(*consumer)->join() && r.error.empty()) r.error = "consumer did not stop";
  if (!done && r.error.empty()) r.error = "drain did not finish within 60 s";
  if (r.error.empty()) fill_priority_record(r, n, static_cast<double>(end_ns - t0) * 1e-9, levels, seqs);
  return r;
}

void scenario_priority(Ctx& ctx) {
  const std::size_t n = ctx.quick ? 10000 : 50000;
  ctx.emit(priority_shmsched(n));
}

// =====================================================================================
// 2. starvation
// =====================================================================================

constexpr auto kAgingBound = 500ms;
constexpr auto kUrgentWork = 50us;
constexpr std::int64_t kUrgentLowWater = 1000;
constexpr std::int64_t kUrgentHighWater = 2000;
constexpr int kLowAtStart = 4;
constexpr auto kLowEvery = 100ms;
constexpr int kMaxLow = 64;

std::int64_t coarse_resolution_ns() noexcept {
  timespec ts{};
  if (::clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0) return 4'000'000;
  return std::max<std::int64_t>(1'000'000, std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec);
}

Record starvation_run(bool quick, bool aging) {
  Record r = make_record("starvation", aging ? "shmsched" : "shmsched_no_aging", 1, 1);
  const std::chrono::milliseconds window = quick ? 1500ms : 3000ms;
  const double tolerance_ms = static_cast<double>(kLowAtStart * coarse_resolution_ns()) / 1e6 + 0.05 + 10.0;
  r.extra["aging_bound_ms"] = aging ? kAgingBound.count() : 0;
  r.extra["compared_bound_ms"] = kAgingBound.count();
  r.extra["tolerance_ms"] = tolerance_ms;
  r.extra["window_ms"] = window.count();
  r.extra["urgent_handler"] = "busy-wait 50 us";
  NamedSegment seg("starve");
  if (r.error = seg.create(scenario_layout(65536), {"work"}); !r.error.empty()) return r;
  seg.unlink();
  const QueueId q = seg->find_queue("work").value();
  auto producer_r = Client::attach(*seg);
  if (!producer_r) return failed(r, "attach: " + producer_r.error().message());
  Client& producer = *producer_r;
  producer.set_aging(q, aging ? kAgingBound : 0ms);
  ConsumerOptions co;
  co.home = {"work"};
  co.workers = 1;
  auto consumer_r = Consumer::create(*seg, co);
  if (!consumer_r) return failed(r, "consumer: " + consumer_r.error().message());
  Consumer& consumer = **consumer_r;

  // Level-0 tasks counted after their enqueue returned, minus level-0 handlers started:
  // with one worker it never exceeds what is really queued, so > 0 proves level 0 was
  // not empty.
  std::atomic<std::int64_t> pending{0};
  std::atomic<bool> in_window{false};
  std::atomic<std::uint64_t> urgent_done{0};
  std::atomic<std::uint32_t> low_started{0};
  std::array<std::atomic<std::int64_t>, kMaxLow> low_enq{}, low_start{}, low_pending{};
  // Written by the one worker only, read after join().
  std::int64_t min_pending = INT64_MAX;

  consumer.on_value<Job>("urgent", [&](const Job&, TaskContext&) {
    // relaxed: a count, not a publication; the ring orders the task itself.
    const std::int64_t left = pending.fetch_sub(1, std::memory_order_relaxed) - 1;
    // relaxed: the window edge is approximate by one task at most.
    if (in_window.load(std::memory_order_relaxed)) min_pending = std::min(min_pending, left);
    busy_wait(kUrgentWork);
    urgent_done.fetch_add(1, std::memory_order_relaxed);  // relaxed: a count sampled at the window end
    return Outcome::done();
  });
  consumer.on_value<Job>("low", [&](const Job& job, TaskContext&) {
    const std::int64_t t = now_ns();
    if (job.seq < kMaxLow) {
      // relaxed: read by the main thread after the acquire of low_started below.
      low_start[job.seq].store(t, std::memory_order_relaxed);
      low_pending[job.seq].store(pending.load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    // release: publishes the two stores above to the main thread's acquire.
    low_started.fetch_add(1, std::memory_order_release);
    return Outcome::done();
  });
  consumer.start();

  std::atomic<bool> feeding{true};
  std::atomic<std::uint64_t> feed_errors{0};
  std::atomic<std::uint64_t> urgent_sent{0};
  std::thread feeder([&] {
    TaskOptions o;
    o.queue = q;
    o.priority = 0;
    Job job;
    // relaxed: a stop request, nothing to publish.
    while (feeding.load(std::memory_order_relaxed)) {
      // relaxed: a level, re-read every millisecond.
      for (std::int64_t p = pending.load(std::memory_order_relaxed); p < kUrgentHighWater; ++p) {
        // relaxed: the feeder's own counter.
        job.seq = urgent_sent.fetch_add(1, std::memory_order_relaxed);
        if (producer.enqueue_value("urgent", job, o) != Errc::ok) {
          feed_errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after join
          break;
        }
        pending.fetch_add(1, std::memory_order_relaxed);  // relaxed: after the enqueue, see above
      }
      std::this_thread::sleep_for(1ms);
      // relaxed: both are polled levels; wait for the backlog to fall below the low water.
      while (pending.load(std::memory_order_relaxed) >= kUrgentLowWater && feeding.load(std::memory_order_relaxed))
        std::this_thread::sleep_for(1ms);
    }
  });

  // relaxed: a level poll.
  const bool saturated = wait_until([&] { return pending.load(std::memory_order_relaxed) >= kUrgentLowWater; }, 5s);
  std::int64_t window_end = 0;
  std::uint64_t urgent_in_window = 0;
  int low_sent = 0;
  if (saturated) {
    const std::int64_t t0 = now_ns();
    window_end = t0 + std::chrono::nanoseconds(window).count();
    // Level-7 tasks stop early enough that each could have aged inside the window.
    const std::int64_t last_low = window_end - std::chrono::nanoseconds(kAgingBound + 250ms).count();
    in_window.store(true, std::memory_order_relaxed);  // relaxed: see the handler
    TaskOptions o;
    o.queue = q;
    o.priority = kLevels - 1;
    auto send_low = [&] {
      Job job;
      job.seq = static_cast<std::uint64_t>(low_sent);
      job.level = kLevels - 1;
      job.enqueued_ns = now_ns();
      low_enq[low_sent].store(job.enqueued_ns, std::memory_order_relaxed);  // relaxed: this thread reads it
      if (producer.enqueue_value("low", job, o) != Errc::ok) {
        if (r.error.empty()) r.error = "enqueue of a level-7 task failed";
        return;
      }
      ++low_sent;
    };
    for (int i = 0; i < kLowAtStart; ++i) send_low();
    for (std::int64_t next = t0 + std::chrono::nanoseconds(kLowEvery).count(); next <= last_low && low_sent < kMaxLow;
         next += std::chrono::nanoseconds(kLowEvery).count()) {
      sleep_until_ns(next);
      send_low();
    }
    sleep_until_ns(window_end);
    in_window.store(false, std::memory_order_relaxed);               // relaxed: see the handler
    urgent_in_window = urgent_done.load(std::memory_order_relaxed);  // relaxed: a count
  } else {
    r.error = "the feeder never built a level-0 backlog";
  }
  feeding.store(false, std::memory_order_relaxed);  // relaxed: a stop request
  feeder.join();
  // Without the feeder, level 0 drains (<= 2000 x 50 us) and the rest of level 7 runs.
  const bool drained = wait_until(
      [&] {
        // acquire: pairs with the low handler's release; relaxed for the level-0 count.
        return low_started.load(std::memory_order_acquire) == static_cast<std::uint32_t>(low_sent) &&
               pending.load(std::memory_order_relaxed) <= 0;
      },
      20s);
  consumer.request_stop();
  if (!consumer.join() && r.error.empty()) r.error = "consumer did not stop";
  if (!drained && r.error.empty()) r.error = "the backlog did not drain after the window";
  // relaxed: the feeder has been joined.
  if (feed_errors.load(std::memory_order_relaxed) != 0 && r.error.empty()) r.error = "level-0 enqueues failed";
  if (!r.error.empty()) return r;

  LogHistogram waits;
  std::int64_t max_wait = 0;
  std::int64_t min_pending_at_low = INT64_MAX;
  std::uint32_t in_window_starts = 0;
  for (int i = 0; i < low_sent; ++i) {
    // relaxed: ordered by join() above.
    const std::int64_t start = low_start[i].load(std::memory_order_relaxed);
    const std::int64_t wait = start - low_enq[i].load(std::memory_order_relaxed);
    waits.record(wait);
    max_wait = std::max(max_wait, wait);
    if (start <= window_end) {
      ++in_window_starts;
      min_pending_at_low = std::min(min_pending_at_low, low_pending[i].load(std::memory_order_relaxed));
    }
  }
  const double window_s = static_cast<double>(window.count()) / 1e3;
  const double max_wait_ms = static_cast<double>(max_wait) / 1e6;
  r.set_latency(waits);
  // The urgent stream's drain rate in the window: what the consumer sustained, for scale.
  r.tasks_per_s = static_cast<double>(urgent_in_window) / window_s;
  r.extra["low_tasks"] = low_sent;
  r.extra["low_tasks_started"] = in_window_starts;  // while level 0 was still saturated
  r.extra["low_tasks_started_after_load"] = static_cast<std::uint32_t>(low_sent) - in_window_starts;
  r.extra["max_wait_ms"] = max_wait_ms;
  r.extra["within_bound"] = max_wait_ms <= static_cast<double>(kAgingBound.count()) + tolerance_ms;
  r.extra["urgent_done_in_window"] = urgent_in_window;
  r.extra["level0_min_pending"] = min_pending == INT64_MAX ? 0 : min_pending;
  r.extra["level0_saturated"] = min_pending != INT64_MAX && min_pending > 0;
  if (min_pending_at_low != INT64_MAX) r.extra["level0_pending_at_low_start_min"] = min_pending_at_low;
  return r;
}

void scenario_starvation(Ctx& ctx) {
  ctx.emit(starvation_run(ctx.quick, true));
  ctx.emit(starvation_run(ctx.quick, false));
}

// =====================================================================================
// 3. primary_secondary
// =====================================================================================

constexpr auto kSeleniumEvery = 5ms;
constexpr auto kGeneralWork = 1ms;
constexpr std::uint64_t kGeneralBacklog = 200;
constexpr std::size_t kMaxSelenium = 4096;

// Shared with the two consumer processes.
struct PsBoard {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> failed{0};
  std::atomic<std::uint64_t> general_started{0};
  std::atomic<std::uint64_t> general_done{0};
  std::atomic<std::uint64_t> selenium_done{0};
  std::atomic<std::uint64_t> selenium_by_primary{0};
  std::atomic<std::uint64_t> helped[2]{};  // [0 = primary, 1 = secondary], from ConsumerStats
  std::atomic<std::int64_t> latency_ns[kMaxSelenium]{};
};

int ps_consumer(const std::string& name, PsBoard& b, bool secondary, unsigned reserve, Gate& stop) {
  stop.child_init();
  auto fail = [&](int rc) {
    b.failed.fetch_add(1, std::memory_order_relaxed);  // relaxed: the parent reads it after reaping us
    return rc;
  };
  auto seg = Segment::open(name);
  if (!seg) return fail(3);
  ConsumerOptions co;
  co.workers = 2;
  if (secondary) {
    co.home = {"selenium"};
    co.help = {"general"};
    co.reserve = reserve;
  } else {
    co.home = {"general"};
  }
  auto c = Consumer::create(*seg, co);
  if (!c) return fail(4);
  Consumer& consumer = **c;
  consumer.on_value<Job>("general", [&](const Job&, TaskContext&) {
    b.general_started.fetch_add(1, std::memory_order_relaxed);  // relaxed: a level the producer polls
    std::this_thread::sleep_for(kGeneralWork);
    b.general_done.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after the children exit
    return Outcome::done();
  });
  consumer.on_value<Job>("selenium", [&](const Job& job, TaskContext&) {
    const std::int64_t lat = now_ns() - job.enqueued_ns;
    // relaxed: published by the release increment below.
    if (job.seq < kMaxSelenium) b.latency_ns[job.seq].store(lat, std::memory_order_relaxed);
    if (!secondary) b.selenium_by_primary.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after exit
    b.selenium_done.fetch_add(1, std::memory_order_release);  // release: the latency above is visible
    return Outcome::done();
  });
  consumer.start();
  b.ready.fetch_add(1, std::memory_order_release);  // release: nothing to publish but "mapped and running"
  stop.wait();
  consumer.request_stop();
  const bool joined = consumer.join();
  // relaxed: the parent reads it after reaping this process.
  b.helped[secondary ? 1 : 0].store(consumer.stats().helped, std::memory_order_relaxed);
  return joined ? 0 : 5;
}

Record primary_secondary_run(bool quick, unsigned reserve) {
  Record r = make_record("primary_secondary", "shmsched_reserve" + std::to_string(reserve), 1, 2);
  const std::chrono::milliseconds run = quick ? 1500ms : 5000ms;
  r.extra["reserve"] = reserve;
  r.extra["workers_per_process"] = 2;
  r.extra["general_handler"] = "sleep 1 ms";
  r.extra["selenium_every_ms"] = kSeleniumEvery.count();
  r.extra["run_ms"] = run.count();
  r.extra["general_backlog"] = kGeneralBacklog;
  NamedSegment seg("ps");
  if (r.error = seg.create(scenario_layout(16384), {"general", "selenium"}); !r.error.empty()) return r;
  const QueueId general = seg->find_queue("general").value();
  const QueueId selenium = seg->find_queue("selenium").value();
  SharedBox<PsBoard> board;
  PsBoard& b = *board;
  Gate stop;
  if (!stop.ok()) return failed(r, "pipe failed");
  std::vector<Child> children;
  for (bool secondary : {false, true}) {
    children.push_back(
        Child::spawn([&, secondary]() -> int { return ps_consumer(seg.name(), b, secondary, reserve, stop); }));
    if (!children.back().started()) return failed(r, "fork failed");
  }
  // acquire: pairs with the children's release increments.
  if (!wait_until([&] { return b.ready.load(std::memory_order_acquire) == 2; }, kStartTimeout, &children)) {
    stop.open();
    reap_children(children, r.error, 5s);
    if (r.error.empty()) r.error = "consumers did not start";
    return r;
  }
  seg.unlink();  // all three processes have it mapped

  auto producer_r = Client::attach(*seg);
  if (!producer_r) {
    stop.open();
    reap_children(children, r.error, 15s);
    return failed(r, "attach: " + producer_r.error().message());
  }
  Client& producer = *producer_r;
  TaskOptions go;
  go.queue = general;
  TaskOptions so;
  so.queue = selenium;
  so.priority = 0;
  std::uint64_t general_sent = 0, selenium_sent = 0, enqueue_errors = 0;
  auto top_up = [&] {
    // relaxed: a level; overshooting by a few tasks is harmless.
    std::uint64_t started = b.general_started.load(std::memory_order_relaxed);
    for (; general_sent - started < kGeneralBacklog; ++general_sent) {
      Job job;
      job.seq = general_sent;
      go.priority = priority_of(general_sent);
      if (producer.enqueue_value("general", job, go) != Errc::ok) {
        ++enqueue_errors;
        break;
      }
    }
  };
  top_up();
  const std::int64_t t0 = now_ns();
  const std::int64_t end = t0 + std::chrono::nanoseconds(run).count();
  const std::int64_t period = std::chrono::nanoseconds(kSeleniumEvery).count();
  std::int64_t next_selenium = t0;
  std::int64_t next_top_up = t0;
  for (std::int64_t now = t0; now < end; now = now_ns()) {
    if (now >= next_top_up) {
      top_up();
      next_top_up = now + 1'000'000;
    }
    if (now >= next_selenium && selenium_sent < kMaxSelenium) {
      Job job;
      job.seq = selenium_sent;
      job.enqueued_ns = now_ns();
      if (producer.enqueue_value("selenium", job, so) == Errc::ok) {
        ++selenium_sent;
      } else {
        ++enqueue_errors;
      }
      next_selenium += period;
    }
    sleep_until_ns(std::min({next_selenium, next_top_up, end}));
  }
  const std::int64_t t1 = now_ns();
  // acquire: pairs with the selenium handlers' release increments (latencies visible).
  const bool all_ran =
      wait_until([&] { return b.selenium_done.load(std::memory_order_acquire) >= selenium_sent; }, 10s, &children);
  const std::uint64_t general_done_at_end = b.general_done.load(std::memory_order_relaxed);  // relaxed: a count
  stop.open();
  reap_children(children, r.error);
  if (!all_ran && r.error.empty()) r.error = "selenium tasks did not all run";
  // relaxed: the children have exited and been reaped (so from here on).
  if (b.failed.load(std::memory_order_relaxed) != 0 && r.error.empty()) r.error = "a consumer failed to set up";
  if (enqueue_errors != 0 && r.error.empty()) r.error = std::to_string(enqueue_errors) + " enqueues failed";
  if (b.selenium_by_primary.load(std::memory_order_relaxed) != 0 && r.error.empty())
    r.error = "a selenium task ran on the primary";
  if (!r.error.empty()) return r;
  LogHistogram lat;
  for (std::uint64_t i = 0; i < selenium_sent; ++i) lat.record(b.latency_ns[i].load(std::memory_order_relaxed));
  r.set_latency(lat);
  r.tasks_per_s = static_cast<double>(general_done_at_end + selenium_sent) / (static_cast<double>(t1 - t0) * 1e-9);
  r.extra["selenium_tasks"] = selenium_sent;
  r.extra["general_done"] = general_done_at_end;
  r.extra["helped"] = b.helped[1].load(std::memory_order_relaxed);
  r.extra["selenium_by_primary"] = b.selenium_by_primary.load(std::memory_order_relaxed);
  return r;
}

void scenario_primary_secondary(Ctx& ctx) {
  ctx.emit(primary_secondary_run(ctx.quick, 0));
  ctx.emit(primary_secondary_run(ctx.quick, 1));
}

// =====================================================================================
// 4. scarce_resource
// =====================================================================================

constexpr int kScarceTasks = 200;
constexpr std::uint32_t kScarceCapacity = 5;
constexpr auto kScarceHold = 10ms;
constexpr auto kGuessedRetry = 10ms;  // the workaround's retry delay (generous: it is usually seconds)
constexpr double kScarceIdealMs = double(kScarceTasks) / kScarceCapacity * 10.0;

struct ScarceBoard {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> failed{0};
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::atomic<int> counter{0};  // the emulation's INCR/DECR key
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::int64_t> last_end_ns{0};
  std::atomic<std::uint64_t> parked{0}, handed{0};
  std::atomic<std::uint32_t> runs[kScarceTasks]{};
};

// The resource itself: who is inside, for 10 ms.
void use_resource(ScarceBoard& b, std::uint64_t seq) {
  // relaxed throughout: counts and maxima read after the children exit; max_inside is
  // exact because inside is one RMW'd word.
  if (seq < kScarceTasks) b.runs[seq].fetch_add(1, std::memory_order_relaxed);
  note_max(b.max_inside, b.inside.fetch_add(1, std::memory_order_relaxed) + 1);
  std::this_thread::sleep_for(kScarceHold);
  b.inside.fetch_sub(1, std::memory_order_relaxed);
  b.last_end_ns.store(now_ns(), std::memory_order_relaxed);
  // release: the parent's acquire of done == 200 sees last_end_ns of the last task.
  b.done.fetch_add(1, std::memory_order_release);
}

int scarce_consumer(const std::string& name, ScarceBoard& b, bool emulated, Gate& go, Gate& stop) {
  go.child_init();
  stop.child_init();
  auto fail = [&](int rc) {
    b.failed.fetch_add(1, std::memory_order_relaxed);  // relaxed: the parent reads it after reaping us
    return rc;
  };
  auto seg = Segment::open(name);
  if (!seg) return fail(3);
  ConsumerOptions co;
  co.home = {"browser"};
  co.workers = 4;
  auto c = Consumer::create(*seg, co);
  if (!c) return fail(4);
  Consumer& consumer = **c;
  if (emulated) {
    consumer.on_value<Job>("browse", [&](const Job& job, TaskContext&) {
      // INCR; over the limit: DECR, retry after the guessed delay. acq_rel: the counter
      // is the only synchronisation the workaround has.
      if (b.counter.fetch_add(1, std::memory_order_acq_rel) + 1 > static_cast<int>(kScarceCapacity)) {
        b.counter.fetch_sub(1, std::memory_order_acq_rel);
        b.retries.fetch_add(1, std::memory_order_relaxed);  // relaxed: a count
        return Outcome::retry(kGuessedRetry);
      }
      use_resource(b, job.seq);
      b.counter.fetch_sub(1, std::memory_order_acq_rel);  // DECR
      return Outcome::done();
    });
  } else {
    if (!consumer.needs("browse", {{"selenium", 1}})) return fail(6);
    consumer.on_value<Job>("browse", [&](const Job& job, TaskContext&) {
      use_resource(b, job.seq);
      return Outcome::done();
    });
  }
  b.ready.fetch_add(1, std::memory_order_release);  // release: set-up done
  go.wait();
  consumer.start();
  stop.wait();
  consumer.request_stop();
  const bool joined = consumer.join();
  const ConsumerStats st = consumer.stats();
  b.parked.fetch_add(st.parked, std::memory_order_relaxed);  // relaxed: read after exit
  b.handed.fetch_add(st.handed, std::memory_order_relaxed);
  return joined ? 0 : 5;
}

struct ScarceRun {
  std::string error;
  double wall_ms = 0;
  int max_inside = 0;
  std::int64_t in_use_after = -1;
  std::uint64_t parked = 0, handed = 0, retries = 0;
  bool ledger_ok = false;
};

ScarceRun scarce_once(bool emulated) {
  ScarceRun res;
  NamedSegment seg("scarce");
  if (res.error = seg.create(scenario_layout(1024), {"browser"}); !res.error.empty()) return res;
  const QueueId q = seg->find_queue("browser").value();
  auto sem = seg->create_semaphore("selenium", kScarceCapacity);
  if (!sem) return failed(res, "semaphore: " + sem.error().message());
  {
    // Queued before either consumer starts: the run measures dispatch, not wake-ups.
    auto producer = Client::attach(*seg);
    if (!producer) return failed(res, "attach: " + producer.error().message());
    TaskOptions o;
    o.queue = q;
    o.max_attempts = emulated ? 65535 : 3;  // each refusal of the emulation costs an attempt
    for (int i = 0; i < kScarceTasks; ++i) {
      Job job;
      job.seq = static_cast<std::uint64_t>(i);
      if (const Errc e = producer->enqueue_value("browse", job, o); e != Errc::ok)
        return failed(res, "enqueue: " + std::string(to_string(e)));
    }
  }
  SharedBox<ScarceBoard> board;
  ScarceBoard& b = *board;
  Gate go, stop;
  if (!go.ok() || !stop.ok()) return failed(res, "pipe failed");
  std::vector<Child> children;
  for (int p = 0; p < 2; ++p) {
    children.push_back(Child::spawn([&]() -> int { return scarce_consumer(seg.name(), b, emulated, go, stop); }));
    if (!children.back().started()) return failed(res, "fork failed");
  }
  // acquire: pairs with the children's release increments.
  if (!wait_until([&] { return b.ready.load(std::memory_order_acquire) == 2; }, kStartTimeout, &children)) {
    go.open();
    stop.open();
    reap_children(children, res.error, 5s);
    if (res.error.empty()) res.error = "consumers did not start";
    return res;
  }
  seg.unlink();
  const std::int64_t t0 = now_ns();
  go.open();
  // acquire: pairs with use_resource's release, so last_end_ns is the last task's.
  const bool finished = wait_until([&] { return b.done.load(std::memory_order_acquire) >= kScarceTasks; },
                                   std::chrono::milliseconds(60s), &children);
  stop.open();
  reap_children(children, res.error);
  // relaxed from here on: the children have exited and been reaped.
  if (!finished && res.error.empty())
    res.error = "only " + std::to_string(b.done.load(std::memory_order_relaxed)) + " of 200 tasks ran";
  if (b.failed.load(std::memory_order_relaxed) != 0 && res.error.empty()) res.error = "a consumer failed to set up";
  for (int i = 0; i < kScarceTasks && res.error.empty(); ++i)
    if (const auto n = b.runs[i].load(std::memory_order_relaxed); n != 1)
      res.error = "task " + std::to_string(i) + " ran " + std::to_string(n) + " times";
  res.wall_ms = static_cast<double>(b.last_end_ns.load(std::memory_order_relaxed) - t0) / 1e6;
  res.max_inside = b.max_inside.load(std::memory_order_relaxed);
  res.parked = b.parked.load(std::memory_order_relaxed);
  res.handed = b.handed.load(std::memory_order_relaxed);
  res.retries = b.retries.load(std::memory_order_relaxed);
  if (emulated) {
    res.in_use_after = b.counter.load(std::memory_order_relaxed);
    res.ledger_ok = true;
  } else {
    for (const SemaphoreInfo& i : seg->semaphores())
      if (i.id == *sem) res.in_use_after = i.in_use;
    auto checker = Client::attach(*seg);
    res.ledger_ok = checker && checker->verify_permits().ok();
  }
  if (res.error.empty() && res.max_inside > static_cast<int>(kScarceCapacity))
    res.error = "more holders at once than the capacity";
  if (res.error.empty() && res.in_use_after != 0) res.error = "permits still in use after the run";
  if (res.error.empty() && !res.ledger_ok) res.error = "verify_permits: ledger inconsistent";
  return res;
}

Record scarce_record(bool quick, bool emulated) {
  Record r = make_record("scarce_resource", emulated ? "emulated_incr_decr" : "shmsched", 1, 2);
  const int reps = quick ? 1 : 3;
  std::vector<ScarceRun> runs;
  for (int i = 0; i < reps; ++i) {
    runs.push_back(scarce_once(emulated));
    if (!runs.back().error.empty()) return failed(r, runs.back().error);
  }
  std::vector<double> walls;
  for (const auto& x : runs) walls.push_back(x.wall_ms);
  std::sort(runs.begin(), runs.end(), [](const ScarceRun& a, const ScarceRun& b) { return a.wall_ms < b.wall_ms; });
  const ScarceRun& m = runs[runs.size() / 2];
  int max_inside = 0;
  for (const auto& x : runs) max_inside = std::max(max_inside, x.max_inside);
  r.tasks_per_s = kScarceTasks / (m.wall_ms / 1e3);
  r.extra["tasks"] = kScarceTasks;
  r.extra["capacity"] = kScarceCapacity;
  r.extra["hold_ms"] = kScarceHold.count();
  r.extra["workers"] = "2 processes x 4";
  r.extra["wall_ms"] = m.wall_ms;
  r.extra["runs_wall_ms"] = walls;
  r.extra["ideal_ms"] = kScarceIdealMs;
  r.extra["wall_over_ideal"] = m.wall_ms / kScarceIdealMs;
  r.extra["max_concurrent"] = max_inside;
  r.extra["in_use_after"] = m.in_use_after;
  if (emulated) {
    r.extra["retries"] = m.retries;
    r.extra["retry_after_ms"] = kGuessedRetry.count();
  } else {
    r.extra["parked"] = m.parked;
    r.extra["handed"] = m.handed;
    r.extra["ledger_consistent"] = m.ledger_ok;
  }
  return r;
}

void scenario_scarce(Ctx& ctx) {
  ctx.emit(scarce_record(ctx.quick, false));
  ctx.emit(scarce_record(ctx.quick, true));
}

// =====================================================================================
// 5. the callgrind workload
// =====================================================================================

// The table the workload's segment has, whatever N: set-up and tear-down must cost the
// same at both sizes so that they cancel.
constexpr std::uint32_t kCallgrindCapacity = 1u << 16;

// Before the counted part, every record of the table is used once: the counts are of a
// table in steady state (the first pass over a table also raises its records_used mark on
// every reservation, and a detach scans up to that mark, which would then depend on N).
// The same for both sizes, so it cancels too.
bool warm_table(Segment& seg, QueueId q) {
  auto c = Client::attach(seg);
  if (!c) return false;
  TaskOptions o;
  o.queue = q;
  Taken t;
  // Fill the table, then drain it (a take and complete right after each enqueue would
  // reuse the one record just freed).
  for (std::uint32_t i = 0; i < kCallgrindCapacity; ++i)
    if (c->enqueue_text("warm", "", o) != Errc::ok) return false;
  for (std::uint32_t i = 0; i < kCallgrindCapacity; ++i)
    if (!c->try_take(q, t) || c->complete(t) != Errc::ok) return false;
  return detail::core_of(seg).header->records_used.load() == kCallgrindCapacity;
}

// Prints the reason and returns the workload's failure status.
int workload_failed(std::string_view what) {
  std::fprintf(stderr, "shmsched_scenarios: %.*s\n", static_cast<int>(what.size()), what.data());
  return 1;
}

// One producer thread enqueues N tasks, then one Consumer worker runs them. While N fits
// the table the producer finishes before the worker starts, so the worker never idles
// mid-run (an idle look costs a few hundred instructions and how many happen depends on
// thread interleaving) and two runs of one N count the same instructions to within a
// few hundred. A larger N is fed concurrently with back-pressure and counts less exactly.
int callgrind_workload(std::uint64_t n) {
  auto seg = Segment::create_private(scenario_layout(kCallgrindCapacity, 0), CreateOptions{0600, {"work"}});
  if (!seg) return workload_failed(seg.error().message());
  const QueueId q = seg->find_queue("work").value();
  if (!warm_table(*seg, q)) return workload_failed("the warm-up pass failed");
  ConsumerOptions co;
  co.home = {"work"};
  co.workers = 1;
  co.tick = 600s;  // one housekeeping tick at start, none after: their number would depend on run time
  auto consumer = Consumer::create(*seg, co);
  if (!consumer) return workload_failed(consumer.error().message());
  auto producer = Client::attach(*seg);
  if (!producer) return workload_failed(producer.error().message());
  // The worker counts; the main thread sleeps on the condition variable (one wake-up, not
  // a poll whose count would depend on how slow the run is).
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t ran = 0;  // guarded by mu only at the end; otherwise the one worker's
  bool all_ran = n == 0;
  (*consumer)->on("noop", [&](TaskContext&) {
    if (++ran == n) {
      const std::lock_guard lock(mu);
      all_ran = true;
      cv.notify_one();
    }
    return Outcome::done();
  });
  const bool concurrent = n > kCallgrindCapacity;
  if (concurrent) (*consumer)->start();
  Errc enqueue_error = Errc::ok;
  std::thread feeder([&] {
    TaskOptions o;
    o.queue = q;
    Item item;
    for (std::uint64_t i = 0; i < n; ++i) {
      item.seq = i;
      Errc e;
      while ((e = producer->enqueue_value("noop", item, o)) == Errc::table_full || e == Errc::ring_full)
        std::this_thread::yield();
      if (e != Errc::ok) {
        enqueue_error = e;
        return;
      }
    }
  });
  feeder.join();
  if (!concurrent) (*consumer)->start();
  bool finished = false;
  if (enqueue_error == Errc::ok) {
    std::unique_lock lock(mu);
    finished = cv.wait_for(lock, 600s, [&] { return all_ran; });  // bounded: valgrind is slow, not stuck
  }
  (*consumer)->request_stop();
  const bool joined = (*consumer)->join();
  if (enqueue_error != Errc::ok) return workload_failed("enqueue: " + std::string(to_string(enqueue_error)));
  if (!joined) return workload_failed("the consumer did not stop");  // ran may still change: not read
  if (!finished) return workload_failed("ran " + std::to_string(ran) + " of " + std::to_string(n) + " tasks");
  return 0;
}

// The engine alone, as the cross-process micro-benchmarks drive it but in one thread:
// one Client enqueues N tasks (64-byte payloads, priorities priority_of(seq)), then takes
// and completes them all; single calls, or batches of 64 (enqueue_batch, try_take_batch,
// complete_batch). No threads and no idle looks, so two runs of one N count the same.
int engine_workload(std::uint64_t n, bool batch) {
  if (n > kCallgrindCapacity) return workload_failed("the engine workloads take at most the table's capacity");
  auto seg = Segment::create_private(scenario_layout(kCallgrindCapacity, 0), CreateOptions{0600, {"work"}});
  if (!seg) return workload_failed(seg.error().message());
  const QueueId q = seg->find_queue("work").value();
  if (!warm_table(*seg, q)) return workload_failed("the warm-up pass failed");
  auto client = Client::attach(*seg);
  if (!client) return workload_failed(client.error().message());
  Client& c = *client;
  std::uint64_t sum = 0;
  if (!batch) {
    TaskOptions o;
    o.queue = q;
    for (std::uint64_t i = 0; i < n; ++i) {
      o.priority = priority_of(i);
      Item it;
      it.seq = i;
      if (const Errc e = c.enqueue_value("engine", it, o); e != Errc::ok)
        return workload_failed("enqueue: " + std::string(to_string(e)));
    }
    Taken t;
    for (std::uint64_t i = 0; i < n; ++i) {
      if (!c.try_take(q, t)) return workload_failed("a task is missing");
      Item item;
      std::memcpy(&item, t.payload.data(), std::min(sizeof item, t.payload.size()));
      sum += item.seq;
      if (c.complete(t) != Errc::ok) return workload_failed("complete failed");
    }
  } else {
    TaskBatch batch("engine", q);
    for (std::uint64_t base = 0; base < n; base += kBatch) {
      const std::span<const TaskSpec> specs = batch.window(base, n);
      Errc e = Errc::ok;
      if (c.enqueue_batch(specs, batch.ids, &e) != specs.size())
        return workload_failed("enqueue_batch: " + std::string(to_string(e)));
    }
    std::array<Taken, kBatch> ts;
    for (std::uint64_t got = 0; got < n;) {
      const std::size_t m = c.try_take_batch(q, ts);
      if (m == 0) return workload_failed("tasks are missing");
      for (std::size_t k = 0; k < m; ++k) {
        Item item;
        std::memcpy(&item, ts[k].payload.data(), std::min(sizeof item, ts[k].payload.size()));
        sum += item.seq;
      }
      if (c.complete_batch(std::span<const Taken>(ts.data(), m)) != m) return workload_failed("complete_batch failed");
      got += m;
    }
  }
  if (sum != (n == 0 ? 0 : n * (n - 1) / 2)) return workload_failed("checksum mismatch");
  return 0;
}

// engine_single with a permit per task, as a Consumer runs a task that needs a semaphore:
// each task needs one permit of a capacity-1 semaphore; take, acquire_for, complete,
// release_for. Its difference from engine_single is what a semaphore adds to a task.
int semaphore_workload(std::uint64_t n) {
  if (n > kCallgrindCapacity) return workload_failed("the engine workloads take at most the table's capacity");
  auto seg = Segment::create_private(scenario_layout(kCallgrindCapacity, 1), CreateOptions{0600, {"work"}});
  if (!seg) return workload_failed(seg.error().message());
  const QueueId q = seg->find_queue("work").value();
  auto sem = seg->create_semaphore("permit", 1);
  if (!sem) return workload_failed(sem.error().message());
  if (!warm_table(*seg, q)) return workload_failed("the warm-up pass failed");
  auto client = Client::attach(*seg);
  if (!client) return workload_failed(client.error().message());
  Client& c = *client;
  TaskOptions o;
  o.queue = q;
  o.needs[0] = Need{*sem, 1};
  for (std::uint64_t i = 0; i < n; ++i) {
    o.priority = priority_of(i);
    if (const Errc e = c.enqueue_value("engine", Item{}, o); e != Errc::ok)
      return workload_failed("enqueue: " + std::string(to_string(e)));
  }
  Taken t;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (!c.try_take(q, t)) return workload_failed("a task is missing");
    const std::span<const Need> needs(t.needs, 2);
    if (c.acquire_for(t, needs) != Client::Grant::granted) return workload_failed("a free permit was not granted");
    if (c.complete(t) != Errc::ok) return workload_failed("complete failed");
    if (c.release_for(t, needs)) return workload_failed("a hand-over with nothing parked");
  }
  if (seg->semaphores().at(0).in_use != 0) return workload_failed("a permit is still in use");
  return 0;
}

// =====================================================================================
// driver
// =====================================================================================
// 5. rate limit: 10,000 tasks through 1,000 a second (burst 10), two consumer processes
// =====================================================================================

constexpr int kRateTasks = 10000, kRateTasksQuick = 2000;
constexpr double kRatePerSecond = 1000;
constexpr std::uint32_t kRateBurst = 10;

struct RateBoard {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> failed{0};
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::int64_t> start_ns[kRateTasks]{};
  std::atomic<std::uint32_t> runs[kRateTasks]{};
};

int rate_consumer(const std::string& name, RateBoard& b, Gate& go, Gate& stop) {
  go.child_init();
  stop.child_init();
  auto fail = [&](int rc) {
    b.failed.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after we are reaped
    return rc;
  };
  auto seg = Segment::open(name);
  if (!seg) return fail(3);
  ConsumerOptions co;
  co.home = {"calls"};
  co.workers = 2;
  auto c = Consumer::create(*seg, co);
  if (!c) return fail(4);
  (*c)->on_value<Job>("call", [&](const Job& job, TaskContext&) {
    // relaxed: read by the parent after the children exit.
    if (job.seq < static_cast<std::uint64_t>(kRateTasks)) {
      b.start_ns[job.seq].store(now_ns(), std::memory_order_relaxed);
      b.runs[job.seq].fetch_add(1, std::memory_order_relaxed);
    }
    b.done.fetch_add(1, std::memory_order_release);  // release: pairs with the parent's acquire
    return Outcome::done();
  });
  b.ready.fetch_add(1, std::memory_order_release);
  go.wait();
  (*c)->start();
  stop.wait();
  (*c)->request_stop();
  return (*c)->join() ? 0 : 5;
}

void scenario_rate_limit(Ctx& ctx) {
  const int n = ctx.quick ? kRateTasksQuick : kRateTasks;
  Record r = make_record("rate_limit", "shmsched", 1, 2);
  Record ideal = make_record("rate_limit", "ideal", 1, 2);
  Record window = make_record("rate_limit_window", "shmsched", 1, 2);
  Record burst = make_record("rate_limit_window", "burst", 1, 2);
  auto fail_all = [&](const std::string& why) {
    for (Record* x : {&r, &ideal, &window, &burst}) ctx.emit(failed(*x, why));
  };
  NamedSegment seg("rate");
  if (auto e = seg.create(scenario_layout(16384), {"calls"}); !e.empty()) return fail_all(e);
  const QueueId q = seg->find_queue("calls").value();
  auto sem = seg->create_semaphore("api", kMaxSemaphoreCapacity);
  if (!sem) return fail_all("semaphore: " + sem.error().message());
  {
    auto producer = Client::attach(*seg);
    if (!producer) return fail_all("attach: " + producer.error().message());
    if (producer->set_rate(*sem, kRatePerSecond, kRateBurst) != Errc::ok) return fail_all("set_rate");
    TaskOptions o;
    o.queue = q;
    o.needs[0] = Need{*sem, 1};
    for (int i = 0; i < n; ++i) {
      Job job;
      job.seq = static_cast<std::uint64_t>(i);
      if (const Errc e = producer->enqueue_value("call", job, o); e != Errc::ok)
        return fail_all("enqueue: " + std::string(to_string(e)));
    }
  }
  SharedBox<RateBoard> board;
  RateBoard& b = *board;
  Gate go, stop;
  if (!go.ok() || !stop.ok()) return fail_all("pipe failed");
  std::vector<Child> children;
  for (int p = 0; p < 2; ++p) {
    children.push_back(Child::spawn([&]() -> int { return rate_consumer(seg.name(), b, go, stop); }));
    if (!children.back().started()) return fail_all("fork failed");
  }
  std::string error;
  if (!wait_until([&] { return b.ready.load(std::memory_order_acquire) == 2; }, kStartTimeout, &children)) {
    go.open();
    stop.open();
    reap_children(children, error, 5s);
    return fail_all(error.empty() ? "consumers did not start" : error);
  }
  seg.unlink();
  go.open();
  const bool finished =
      wait_until([&] { return b.done.load(std::memory_order_acquire) >= static_cast<std::uint64_t>(n); },
                 std::chrono::milliseconds(120s), &children);
  stop.open();
  reap_children(children, error);
  if (!finished && error.empty()) error = "only " + std::to_string(b.done.load()) + " tasks ran";
  if (b.failed.load(std::memory_order_relaxed) != 0 && error.empty()) error = "a consumer failed to set up";
  for (int i = 0; i < n && error.empty(); ++i)
    if (b.runs[i].load(std::memory_order_relaxed) != 1) error = "task " + std::to_string(i) + " did not run once";
  if (!error.empty()) return fail_all(error);
  std::vector<std::int64_t> t(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = b.start_ns[i].load(std::memory_order_relaxed);
  std::sort(t.begin(), t.end());
  // The most starts within any one interval (1 ms): at most the burst if starts follow
  // their tokens.
  const std::int64_t interval = static_cast<std::int64_t>(1e9 / kRatePerSecond);
  std::size_t most = 0;
  for (std::size_t i = 0, j = 0; j < t.size(); ++j) {
    while (t[j] - t[i] >= interval) ++i;
    most = std::max(most, j - i + 1);
  }
  const double wall_ms = static_cast<double>(t.back() - t.front()) / 1e6;
  const double ideal_ms = (n - static_cast<double>(kRateBurst)) / kRatePerSecond * 1e3;
  r.tasks_per_s = n / (wall_ms / 1e3);
  r.extra["tasks"] = n;
  r.extra["rate_per_s"] = kRatePerSecond;
  r.extra["burst"] = kRateBurst;
  r.extra["wall_ms"] = wall_ms;
  r.extra["ideal_ms"] = ideal_ms;
  r.extra["wall_over_ideal"] = wall_ms / ideal_ms;
  r.extra["max_started_in_interval"] = most;
  ideal.tasks_per_s = n / (ideal_ms / 1e3);
  ideal.extra["wall_ms"] = ideal_ms;
  window.extra["max_started"] = most;
  burst.extra["max_started"] = kRateBurst;
  for (Record* x : {&r, &ideal, &window, &burst}) ctx.emit(*x);
}

// =====================================================================================
// 6. batch handler: one handler call per batch against one per task, 1 us a call
// =====================================================================================

constexpr std::size_t kBatchMax = 64;

Record batch_handler_record(bool quick, bool batched) {
  const int n = quick ? 50000 : 200000;
  Record r = make_record("batch_handler", batched ? "batch" : "per_task", 1, 1);
  NamedSegment seg("batch");
  if (auto e = seg.create(scenario_layout(262144), {"work"}); !e.empty()) return failed(r, e);
  seg.unlink();
  {
    auto producer = Client::attach(*seg);
    if (!producer) return failed(r, "attach: " + producer.error().message());
    TaskOptions o;
    o.queue = seg->find_queue("work").value();
    Job job;
    for (int i = 0; i < n; ++i) {
      job.seq = static_cast<std::uint64_t>(i);
      if (const Errc e = producer->enqueue_value("item", job, o); e != Errc::ok)
        return failed(r, "enqueue: " + std::string(to_string(e)));
    }
  }
  ConsumerOptions co;
  co.home = {"work"};
  co.workers = 1;
  auto c = Consumer::create(*seg, co);
  if (!c) return failed(r, "consumer: " + c.error().message());
  std::atomic<std::uint64_t> ran{0};
  // The handler's fixed cost: 1 us a call (a round trip to a service, a transaction).
  if (batched) {
    (*c)->on_batch("item", kBatchMax, 0ns, [&](BatchContext& ctx) {
      busy_wait(1us);
      ran.fetch_add(ctx.tasks.size(), std::memory_order_relaxed);  // relaxed: a count
    });
  } else {
    (*c)->on("item", [&](TaskContext&) {
      busy_wait(1us);
      ran.fetch_add(1, std::memory_order_relaxed);
      return Outcome::done();
    });
  }
  const std::int64_t t0 = now_ns();
  (*c)->start();
  const bool finished = wait_until([&] { return ran.load(std::memory_order_relaxed) >= static_cast<std::uint64_t>(n); },
                                   std::chrono::milliseconds(120s));
  const std::int64_t t1 = now_ns();
  (*c)->request_stop();
  (void)(*c)->join();
  if (!finished) return failed(r, "only " + std::to_string(ran.load()) + " tasks ran");
  r.tasks_per_s = n / (static_cast<double>(t1 - t0) / 1e9);
  r.extra["tasks"] = n;
  r.extra["handler_cost_us"] = 1;
  r.extra["max_batch"] = batched ? kBatchMax : 1;
  r.extra["batches"] = (*c)->stats().batches;
  return r;
}

void scenario_batch_handler(Ctx& ctx) {
  ctx.emit(batch_handler_record(ctx.quick, false));
  ctx.emit(batch_handler_record(ctx.quick, true));
}

// =====================================================================================

struct Scenario {
  std::string_view name;
  void (*run)(Ctx&);
};
constexpr Scenario kScenarios[] = {
    {"priority", scenario_priority},
    {"starvation", scenario_starvation},
    {"primary_secondary", scenario_primary_secondary},
    {"scarce_resource", scenario_scarce},
    {"rate_limit", scenario_rate_limit},
    {"batch_handler", scenario_batch_handler},
};

struct Args {
  std::string json;
  std::string only;
  bool quick = false;
  bool callgrind = false;
  std::string workload = "full_path";
  std::optional<std::uint64_t> tasks;
};

void usage() {
  std::fprintf(stderr,
               "usage: shmsched_scenarios [--json=PATH] [--quick] [--only=SUBSTRING]\n"
               "       shmsched_scenarios --callgrind-workload[=full_path|engine_single|engine_batch|engine_semaphore] "
               "--tasks=N\n");
}

std::optional<Args> parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view s = argv[i];
    auto value = [&](std::string_view key) -> std::optional<std::string_view> {
      if (s.substr(0, key.size()) != key) return std::nullopt;
      return s.substr(key.size());
    };
    if (s == "--quick") {
      a.quick = true;
    } else if (s == "--callgrind-workload") {
      a.callgrind = true;
    } else if (auto w = value("--callgrind-workload="); w) {
      if (*w != "full_path" && *w != "engine_single" && *w != "engine_batch" && *w != "engine_semaphore")
        return std::nullopt;
      a.callgrind = true;
      a.workload = std::string(*w);
    } else if (auto v = value("--json="); v) {
      a.json = std::string(*v);
    } else if (auto v2 = value("--only="); v2) {
      a.only = std::string(*v2);
    } else if (auto v3 = value("--tasks="); v3) {
      std::uint64_t n = 0;
      const auto [p, ec] = std::from_chars(v3->data(), v3->data() + v3->size(), n);
      if (ec != std::errc() || p != v3->data() + v3->size()) return std::nullopt;
      a.tasks = n;
    } else {
      return std::nullopt;
    }
  }
  if (a.callgrind != a.tasks.has_value()) return std::nullopt;  // --tasks goes with the workload only
  return a;
}

}  // namespace
}  // namespace shmsched::bench

int main(int argc, char** argv) {
  using namespace shmsched::bench;
  const std::optional<Args> args = parse_args(argc, argv);
  if (!args) {
    usage();
    return 2;
  }
  if (args->callgrind) {
    if (args->workload == "full_path") return callgrind_workload(*args->tasks);
    if (args->workload == "engine_semaphore") return semaphore_workload(*args->tasks);
    return engine_workload(*args->tasks, args->workload == "engine_batch");
  }
  install_cleanup_handlers();
  try {
    RecordSink sink(args->json);
    Ctx ctx;
    ctx.quick = args->quick;
    ctx.sink = &sink;
    int matched = 0;
    for (const Scenario& s : kScenarios) {
      if (!args->only.empty() && s.name.find(args->only) == std::string_view::npos) continue;
      ++matched;
      try {
        s.run(ctx);
      } catch (const std::exception& e) {
        Record r = make_record(std::string(s.name), "shmsched", 1, 1);
        r.error = std::string("exception: ") + e.what();
        ctx.emit(r);
      }
    }
    if (matched == 0) {
      std::fprintf(stderr, "shmsched_scenarios: no scenario matches '%s'\n", args->only.c_str());
      return 2;
    }
    return ctx.failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmsched_scenarios: %s\n", e.what());
    return 1;
  }
}
