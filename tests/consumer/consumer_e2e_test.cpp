// Consumer runtime end to end: help-when-idle with a reserve, strict priority and
// aging under sustained load, futex wake-ups across processes, retries, back-off, dead
// letters and not-before times with the consumer in another process, reaping of a
// SIGKILLed consumer, and graceful (and not so graceful) shutdown on SIGTERM.
//
// Segments are private (anonymous MAP_SHARED memory): children forked after creation
// share them, and each child makes its own Consumer after fork and ends with _exit
// (spawn()). What children observe is reported through SharedArray boards, never
// through GoogleTest assertions, which would be lost in a child. Every wait has a
// generous upper bound so that a broken runtime fails a test instead of hanging it;
// no assertion depends on how fast anything runs.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/futex.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace std::chrono_literals;
using shmsched::test::describe;
using shmsched::test::SharedArray;
using shmsched::test::spawn;
using shmsched::test::wait_child;

namespace {

Layout e2e_layout() {
  Layout l;
  l.task_capacity = 4096;
  l.levels = 4;
  l.payload_bytes = 64;
  l.max_queues = 4;
  l.max_participants = 16;
  return l;
}

Segment make_segment() {
  return Segment::create_private(e2e_layout(), CreateOptions{0600, {"general", "selenium"}}).value();
}

TaskOptions on_queue(QueueId q, std::uint8_t level = 0) {
  TaskOptions o;
  o.queue = q;
  o.priority = level;
  return o;
}

using shmsched::test::eventually;

// Blocks a handler until `flag` is set, but never longer than `limit`, so a test that
// fails early cannot leave a worker (or a child) stuck forever.
void wait_for_flag(const std::atomic<int>& flag, std::chrono::milliseconds limit = 20s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (flag.load() == 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
}

// Runs `fn` when the scope ends, also on an early ASSERT return: used to release
// handlers that block on a flag before the Consumer that runs them is destroyed.
template <class F>
struct OnExit {
  F fn;
  ~OnExit() { fn(); }
};
template <class F>
OnExit(F) -> OnExit<F>;

// Owns a child for the test's duration: when an ASSERT returns early, the child is
// told to stop and is waited for (killed after a bound), so no test leaves one behind.
template <class F>
class ChildGuard {
 public:
  ChildGuard(pid_t pid, F tell_to_stop) : pid_(pid), tell_(std::move(tell_to_stop)) {}
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    if (pid_ <= 0) return;
    tell_();
    (void)wait_child(pid_, 10s);
  }
  /// Waits for the child now (the guard then has nothing left to do).
  test::ExitStatus wait(std::chrono::milliseconds limit) {
    const test::ExitStatus st = wait_child(pid_, limit);
    pid_ = -1;
    return st;
  }

 private:
  pid_t pid_;
  F tell_;
};

// The participant slot of a live process, found by pid (children report nothing else).
const detail::ParticipantEntry* slot_of(Segment& seg, pid_t pid) {
  auto& core = detail::core_of(seg);
  for (std::uint32_t i = 0; i < core.layout.max_participants; ++i) {
    const auto& p = core.participants[i];
    if (detail::pword_state(p.word.load()) == detail::ParticipantEntry::kActive &&
        p.pid.load() == static_cast<std::uint32_t>(pid))
      return &p;
  }
  return nullptr;
}

// How many task records are in state `st` right now (the state word is the truth).
std::size_t records_in(Segment& seg, TaskState st) {
  auto& core = detail::core_of(seg);
  std::size_t n = 0;
  for (std::uint32_t i = 0; i < core.capacity; ++i) n += detail::state_of(core.ctrl[i].state.load()) == st;
  return n;
}

LevelStats sum_levels(const Client& c, QueueId q) {
  LevelStats s;
  for (std::uint8_t l = 0; l < e2e_layout().levels; ++l) {
    const LevelStats x = c.level_stats(q, l);
    s.enqueued += x.enqueued;
    s.started += x.started;
    s.done += x.done;
    s.retried += x.retried;
    s.failed += x.failed;
    s.dead += x.dead;
    s.helped += x.helped;
  }
  return s;
}

struct E2e : ::testing::Test {
  Segment seg = make_segment();
  QueueId general = seg.find_queue("general").value();
  QueueId selenium = seg.find_queue("selenium").value();
};

}  // namespace

// ---------------------------------------------------------------------------------
// 1. Help when idle, and the reserve

// A secondary consumer with a backlog in both queues drains its home queue before it
// helps. The check: a counter of selenium tasks not yet started, decremented first
// thing in the selenium handler. When the helper takes a general task, every selenium
// task has been popped; only one can still be between its pop and its handler's first
// line (the reserved worker's), so the counter a general handler sees is at most 1,
// and when it is 1, that last selenium task must have run on the reserved worker.
TEST_F(E2e, SecondaryHelpsWithGeneralOnlyOnceSeleniumIsEmpty) {
  constexpr int kSelenium = 40;
  constexpr int kGeneral = 40;
  Client producer = Client::attach(seg).value();
  for (int i = 0; i < kSelenium; ++i)
    ASSERT_EQ(producer.enqueue_value("sel", i, on_queue(selenium, static_cast<std::uint8_t>(i % 4))), Errc::ok);
  for (int i = 0; i < kGeneral; ++i)
    ASSERT_EQ(producer.enqueue_value("gen", i, on_queue(general, static_cast<std::uint8_t>(i % 4))), Errc::ok);

  ConsumerOptions co;
  co.home = {"selenium"};
  co.help = {"general"};
  co.workers = 2;
  co.reserve = 1;
  co.spin = 64;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co).value();

  struct Run {
    char kind;  // 's' or 'g'
    unsigned worker;
    int selenium_left;  // as the handler saw it (general runs)
    bool helped;
    std::string queue;
  };
  std::mutex mu;
  std::vector<Run> runs;
  std::atomic<int> selenium_left{kSelenium};
  std::atomic<int> last_selenium_worker{-1};
  c->on("sel", [&](TaskContext& ctx) {
    const int left = selenium_left.fetch_sub(1) - 1;
    if (left == 0) last_selenium_worker.store(static_cast<int>(ctx.worker));
    {
      std::lock_guard lk(mu);
      runs.push_back({'s', ctx.worker, left, ctx.task.helped, std::string(ctx.queue_name)});
    }
    std::this_thread::sleep_for(2ms);  // slower than general work: a greedy helper would show
    return Outcome::done();
  });
  c->on("gen", [&](TaskContext& ctx) {
    const int left = selenium_left.load();
    {
      std::lock_guard lk(mu);
      runs.push_back({'g', ctx.worker, left, ctx.task.helped, std::string(ctx.queue_name)});
    }
    std::this_thread::sleep_for(1ms);
    return Outcome::done();
  });
  c->start();
  ASSERT_TRUE(eventually([&] { return c->stats().done == kSelenium + kGeneral; }))
      << "done " << c->stats().done << " of " << kSelenium + kGeneral;
  c->request_stop();
  EXPECT_TRUE(c->join());

  std::lock_guard lk(mu);
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(kSelenium + kGeneral));
  bool worker1_helped = false;
  int general_runs = 0;
  for (const Run& r : runs) {
    if (r.kind == 's') {
      EXPECT_FALSE(r.helped) << "a home task is not help";
      EXPECT_EQ(r.queue, "selenium");
      EXPECT_FALSE(r.worker == 1 && worker1_helped) << "worker 1 ran selenium after it had started helping";
      continue;
    }
    ++general_runs;
    EXPECT_EQ(r.worker, 1u) << "the reserved worker (0) must never help";
    EXPECT_TRUE(r.helped) << "a general task taken by the secondary is help";
    EXPECT_EQ(r.queue, "general");
    EXPECT_LE(r.selenium_left, 1) << "a general task started while selenium still had queued tasks";
    if (r.selenium_left == 1) {
      EXPECT_EQ(last_selenium_worker.load(), 0) << "only the reserved worker can still hold the last selenium pop";
    }
    worker1_helped = true;
  }
  EXPECT_EQ(general_runs, kGeneral);

  const ConsumerStats st = c->stats();
  EXPECT_EQ(st.helped, static_cast<std::uint64_t>(kGeneral));
  EXPECT_EQ(st.done, static_cast<std::uint64_t>(kSelenium + kGeneral));
  EXPECT_EQ(sum_levels(producer, general).helped, static_cast<std::uint64_t>(kGeneral));
  EXPECT_EQ(sum_levels(producer, general).done, static_cast<std::uint64_t>(kGeneral));
  EXPECT_EQ(sum_levels(producer, selenium).helped, 0u);
  EXPECT_EQ(sum_levels(producer, selenium).done, static_cast<std::uint64_t>(kSelenium));
}

// With the home queue empty from the start, the secondary still takes shared work,
// all of it on the non-reserved worker and all of it marked as help.
TEST_F(E2e, SecondaryWithEmptyHomeTakesGeneralAsHelp) {
  constexpr int kGeneral = 30;
  Client producer = Client::attach(seg).value();
  ConsumerOptions co;
  co.home = {"selenium"};
  co.help = {"general"};
  co.workers = 2;
  co.reserve = 1;
  co.spin = 16;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> on_reserved{0}, not_helped{0}, ran{0};
  c->on("gen", [&](TaskContext& ctx) {
    if (ctx.worker < 1) on_reserved.fetch_add(1);
    if (!ctx.task.helped) not_helped.fetch_add(1);
    ran.fetch_add(1);
    return Outcome::done();
  });
  c->start();
  // Enqueued while the consumer runs (and likely sleeps): help sleepers are woken too.
  for (int i = 0; i < kGeneral; ++i)
    ASSERT_EQ(producer.enqueue_value("gen", i, on_queue(general, static_cast<std::uint8_t>(i % 4))), Errc::ok);
  ASSERT_TRUE(eventually([&] { return ran.load() == kGeneral; })) << "ran " << ran.load();
  c->request_stop();
  EXPECT_TRUE(c->join());
  EXPECT_EQ(on_reserved.load(), 0);
  EXPECT_EQ(not_helped.load(), 0);
  EXPECT_EQ(c->stats().helped, static_cast<std::uint64_t>(kGeneral));
  EXPECT_GT(sum_levels(producer, general).helped, 0u);
  EXPECT_EQ(sum_levels(producer, general).helped, static_cast<std::uint64_t>(kGeneral));
}

// reserve = 1 of 2 workers: while the helper runs a long general task (and more wait),
// a selenium task enqueued later starts on the reserved worker before that general
// handler finishes. Latches, not timing: the general handlers are released only after
// the selenium task has started, so a runtime that let worker 0 help would leave the
// selenium task waiting until the bound.
TEST_F(E2e, ReservedWorkerRunsHomeTaskWhileHelperIsBusy) {
  Client producer = Client::attach(seg).value();
  ConsumerOptions co;
  co.home = {"selenium"};
  co.help = {"general"};
  co.workers = 2;
  co.reserve = 1;
  co.spin = 16;
  co.tick = 50ms;
  co.grace = 2s;
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> release{0}, general_running{0}, general_finished{0}, general_on_reserved{0};
  std::atomic<int> sel_ran{0}, sel_worker{-1}, running_at_sel{-1}, finished_at_sel{-1};
  c->on("long", [&](TaskContext& ctx) {
    if (ctx.worker == 0) general_on_reserved.fetch_add(1);
    general_running.fetch_add(1);
    wait_for_flag(release);
    general_running.fetch_sub(1);
    general_finished.fetch_add(1);
    return Outcome::done();
  });
  c->on("sel", [&](TaskContext& ctx) {
    running_at_sel.store(general_running.load());
    finished_at_sel.store(general_finished.load());
    sel_worker.store(static_cast<int>(ctx.worker));
    sel_ran.store(1);
    return Outcome::done();
  });
  OnExit release_on_exit{[&] { release.store(1); }};
  for (int i = 0; i < 3; ++i) ASSERT_EQ(producer.enqueue_value("long", i, on_queue(general)), Errc::ok);
  c->start();
  ASSERT_TRUE(eventually([&] { return general_running.load() == 1; }));
  // The reserved worker looked, found nothing it may take, and went to sleep: proof
  // that it passed over the two general tasks still queued.
  const auto& me = detail::core_of(seg).participants[detail::token_index(c->client().token()) - 1];
  ASSERT_TRUE(eventually([&] { return me.sleepers.load() == 1; })) << "worker 0 never went idle";
  EXPECT_EQ(general_running.load(), 1);

  ASSERT_EQ(producer.enqueue_value("sel", 0, on_queue(selenium)), Errc::ok);
  ASSERT_TRUE(eventually([&] { return sel_ran.load() == 1; })) << "the selenium task waited behind help work";
  EXPECT_EQ(sel_worker.load(), 0);
  EXPECT_EQ(running_at_sel.load(), 1) << "the general handler should still have been running";
  EXPECT_EQ(finished_at_sel.load(), 0);

  release.store(1);
  ASSERT_TRUE(eventually([&] { return general_finished.load() == 3; }));
  c->request_stop();
  EXPECT_TRUE(c->join());
  EXPECT_EQ(general_on_reserved.load(), 0);
}

// ---------------------------------------------------------------------------------
// 2. Priority and aging

// One worker, everything enqueued before start: execution is by level, FIFO within a
// level.
TEST_F(E2e, OneWorkerRunsStrictlyByLevelThenFifo) {
  const std::uint64_t seed = test::test_seed();
  std::mt19937_64 rng(seed);
  constexpr int kTasks = 300;
  Client producer = Client::attach(seg).value();
  std::vector<int> level_of(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    level_of[i] = static_cast<int>(rng() % 4);
    ASSERT_EQ(producer.enqueue_value("p", i, on_queue(general, static_cast<std::uint8_t>(level_of[i]))), Errc::ok);
  }
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 1;
  auto c = Consumer::create(seg, co).value();
  std::vector<int> order;  // one worker: no lock needed, read after join
  c->on_value<int>("p", [&](const int& v, TaskContext& ctx) {
    EXPECT_EQ(static_cast<int>(ctx.task.level), level_of[v]);
    order.push_back(v);
    return Outcome::done();
  });
  c->start();
  ASSERT_TRUE(eventually([&] { return c->stats().done == kTasks; }));
  c->request_stop();
  ASSERT_TRUE(c->join());
  ASSERT_EQ(order.size(), static_cast<std::size_t>(kTasks));
  for (std::size_t i = 1; i < order.size(); ++i) {
    const int a = order[i - 1], b = order[i];
    ASSERT_TRUE(level_of[a] < level_of[b] || (level_of[a] == level_of[b] && a < b))
        << "task " << b << " (level " << level_of[b] << ") ran after " << a << " (level " << level_of[a] << ")";
  }
}

namespace {

// One worker on "general"; a producer thread keeps a level-0 backlog of 300..600 tasks
// of ~1 ms each; one level-3 task is enqueued once the backlog is there. `pending` =
// level-0 tasks counted after enqueue returned minus level-0 handlers started. With one
// worker every popped level-0 task has started its handler by the time the level-3
// handler starts, so `pending` then is a lower bound of the level-0 tasks still in the
// ring: pending > 0 at that moment proves level-0 work remained.
struct SaturatedRun {
  bool level3_ran = false;
  std::int64_t pending_at_level3 = 0;  // as the level-3 handler saw it
  std::int64_t level3_started_ns = 0;
  std::int64_t level3_enqueued_ns = 0;
  std::int64_t min_pending_while_watched = INT64_MAX;  // level-0 starts in the window
};

SaturatedRun run_saturated(Segment& seg, QueueId q, std::chrono::milliseconds aging, std::chrono::milliseconds watch) {
  SaturatedRun out;
  Client producer = Client::attach(seg).value();
  producer.set_aging(q, aging);
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 1;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co).value();
  std::atomic<std::int64_t> pending{0};
  std::atomic<bool> watching{false};
  std::atomic<std::int64_t> min_pending{INT64_MAX};
  std::atomic<int> level3_ran{0};
  std::atomic<std::int64_t> pending_at_level3{0}, level3_started{0};
  c->on("zero", [&](TaskContext&) {
    const std::int64_t left = pending.fetch_sub(1) - 1;
    if (watching.load()) {
      std::int64_t m = min_pending.load();
      while (left < m && !min_pending.compare_exchange_weak(m, left)) {
      }
    }
    std::this_thread::sleep_for(1ms);
    return Outcome::done();
  });
  c->on("three", [&](TaskContext&) {
    pending_at_level3.store(pending.load());
    level3_started.store(monotonic_ns());
    level3_ran.store(1);
    return Outcome::done();
  });
  std::atomic<bool> produce{true};
  std::atomic<int> enqueue_errors{0};
  std::thread feeder([&] {
    while (produce.load()) {
      if (pending.load() >= 300) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      for (int i = 0; i < 100 && produce.load(); ++i) {
        if (producer.enqueue_value("zero", i, on_queue(q, 0)) != Errc::ok) {
          enqueue_errors.fetch_add(1);
          break;
        }
        pending.fetch_add(1);
      }
    }
  });
  c->start();
  const bool saturated = eventually([&] { return pending.load() >= 300; });
  if (saturated) {
    out.level3_enqueued_ns = monotonic_ns();
    watching.store(true);
    EXPECT_EQ(producer.enqueue_text("three", "", on_queue(q, 3)), Errc::ok);
    const auto end = std::chrono::steady_clock::now() + watch;
    while (std::chrono::steady_clock::now() < end && !(aging.count() != 0 && level3_ran.load() != 0))
      std::this_thread::sleep_for(1ms);
    watching.store(false);
    out.min_pending_while_watched = min_pending.load();
    out.level3_ran = level3_ran.load() != 0;
  }
  produce.store(false);
  feeder.join();
  // Drain: with the feeder stopped the level-3 task runs at the latest once level 0 is
  // empty, so record where it ran in every case.
  EXPECT_TRUE(eventually([&] { return level3_ran.load() != 0 && pending.load() <= 0; })) << "never drained";
  out.pending_at_level3 = pending_at_level3.load();
  out.level3_started_ns = level3_started.load();
  c->request_stop();
  EXPECT_TRUE(c->join());
  EXPECT_TRUE(saturated) << "the feeder never built a backlog";
  EXPECT_EQ(enqueue_errors.load(), 0);
  return out;
}

}  // namespace

// Aging bound 50 ms: the level-3 task starts while level-0 work is still queued.
TEST_F(E2e, AgingLetsALowLevelTaskRunUnderSustainedUrgentLoad) {
  const SaturatedRun r = run_saturated(seg, general, 50ms, 10s);
  ASSERT_TRUE(r.level3_ran) << "the level-3 task starved under level-0 load despite aging";
  EXPECT_GT(r.pending_at_level3, 0) << "it ran only after level 0 drained: aging had no effect";
  // Aging is a bound on waiting, not a promotion on enqueue: not before the bound.
  EXPECT_GE(r.level3_started_ns - r.level3_enqueued_ns, 50'000'000 - 10'000'000)
      << "ran before its aging bound (coarse enqueue clock allowed for)";
}

// Aging disabled: under the same load the level-3 task does not run while level-0
// work remains, neither during a watch window of 12 aging bounds nor afterwards.
TEST_F(E2e, WithoutAgingPriorityIsStrictUnderSustainedUrgentLoad) {
  const SaturatedRun r = run_saturated(seg, general, 0ms, 600ms);
  // Unconditional: whenever it ran, no counted level-0 task was left.
  EXPECT_LE(r.pending_at_level3, 0) << "the level-3 task ran while level-0 tasks were queued";
  // During the window it must not have run at all, as long as the backlog never ran
  // dry (min pending > 0 means every level-0 pop left work behind).
  if (r.min_pending_while_watched > 0) {
    EXPECT_FALSE(r.level3_ran) << "ran during the window although level 0 was never empty";
  }
}

// ---------------------------------------------------------------------------------
// 3. Waking across processes

namespace {
struct WakeBoard {
  std::atomic<int> pings{0};
  std::atomic<int> held{0};
  std::atomic<int> release{0};
  std::atomic<int> stop{0};
};
}  // namespace

// A consumer in a child process sleeps (tick 10 s, spin 1); an enqueue in the parent
// wakes it with exactly one futex wake, long before its housekeeping timeout. While
// its only worker is busy, and after it has gone, enqueues make no wake call.
TEST_F(E2e, SleepingConsumerInAnotherProcessIsWokenAndOnlySleepersCostASyscall) {
  SharedArray<WakeBoard> board(1);
  WakeBoard& b = board[0];
  const pid_t child = spawn([&]() -> int {
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 1;
    co.spin = 1;
    co.tick = 10s;  // a timeout wake-up would come too late for the parent's bound
    auto c = Consumer::create(seg, co);
    if (!c) return 10;
    (*c)->on("ping", [&](TaskContext&) {
      b.pings.fetch_add(1);
      return Outcome::done();
    });
    (*c)->on("hold", [&](TaskContext&) {
      b.held.store(1);
      wait_for_flag(b.release);
      return Outcome::done();
    });
    (*c)->start();
    wait_for_flag(b.stop, 60s);
    (*c)->request_stop();
    return (*c)->join() ? 0 : 11;
  });
  ASSERT_GT(child, 0);
  ChildGuard guard(child, [&] {
    b.release.store(1);
    b.stop.store(1);
  });
  Client producer = Client::attach(seg).value();

  const detail::ParticipantEntry* slot = nullptr;
  ASSERT_TRUE(eventually([&] { return (slot = slot_of(seg, child)) != nullptr && slot->sleepers.load() == 1; }))
      << "the child's consumer never went to sleep";
  std::uint64_t before = detail::futex_wake_calls();
  ASSERT_EQ(producer.enqueue_text("ping", "", on_queue(general)), Errc::ok);
  EXPECT_EQ(detail::futex_wake_calls() - before, 1u) << "a sleeper costs exactly one wake";
  ASSERT_TRUE(eventually([&] { return b.pings.load() == 1; }, 5s)) << "the sleeping child was not woken";

  // Busy, not asleep: its sleep bit is clear, so producers make no system call.
  ASSERT_TRUE(eventually([&] { return slot->sleepers.load() == 1; }));
  ASSERT_EQ(producer.enqueue_text("hold", "", on_queue(general)), Errc::ok);
  ASSERT_TRUE(eventually([&] { return b.held.load() == 1; }, 5s));
  before = detail::futex_wake_calls();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(producer.enqueue_text("ping", "", on_queue(general)), Errc::ok);
  EXPECT_EQ(detail::futex_wake_calls(), before) << "woke a consumer that was not asleep";
  b.release.store(1);
  ASSERT_TRUE(eventually([&] { return b.pings.load() == 101; })) << "pings " << b.pings.load();

  b.stop.store(1);
  const auto st = guard.wait(20s);
  EXPECT_TRUE(st.ok()) << describe(st);

  // Gone: a consumer that left leaves no sleep bit behind.
  before = detail::futex_wake_calls();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(producer.enqueue_text("x", "", on_queue(general)), Errc::ok);
  EXPECT_EQ(detail::futex_wake_calls(), before);
}

// ---------------------------------------------------------------------------------
// 4. Retries, back-off, dead letters, unknown types and not-before times, with the
//    producer in this process and the consumer in a child

namespace {
struct RetryBoard {
  static constexpr int kMax = 16;
  std::atomic<int> flaky_runs{0}, flaky_done{0};
  std::atomic<int> flaky_attempt[kMax]{};
  std::atomic<std::int64_t> flaky_start[kMax]{}, flaky_end[kMax]{};
  std::atomic<int> doomed_runs{0}, doomed_done{0};
  std::atomic<int> doomed_attempt[kMax]{};
  std::atomic<std::int64_t> doomed_start[kMax]{}, doomed_end[kMax]{};
  std::atomic<int> heal{0};
  std::atomic<int> eta_runs{0};
  std::atomic<std::int64_t> eta_started{0};
  std::atomic<int> stop{0};
};
}  // namespace

TEST_F(E2e, RetriesBackoffDeadLettersAndEtaAcrossProcesses) {
  SharedArray<RetryBoard> board(1);
  RetryBoard& b = board[0];
  const pid_t child = spawn([&]() -> int {
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 2;
    co.spin = 64;
    co.tick = 10ms;  // the janitor tick makes delayed tasks due
    auto c = Consumer::create(seg, co);
    if (!c) return 10;
    (*c)->on("flaky", [&](TaskContext& ctx) {
      const int n = b.flaky_runs.fetch_add(1);
      if (n < RetryBoard::kMax) {
        b.flaky_attempt[n].store(ctx.task.attempt);
        b.flaky_start[n].store(monotonic_ns());
      }
      Outcome o = ctx.task.attempt < 3 ? Outcome::retry(30ms, "not yet") : Outcome::done();
      if (o.kind() == Outcome::Kind::done) b.flaky_done.fetch_add(1);
      if (n < RetryBoard::kMax) b.flaky_end[n].store(monotonic_ns());
      return o;
    });
    (*c)->on("doomed", [&](TaskContext& ctx) {
      const int n = b.doomed_runs.fetch_add(1);
      if (n < RetryBoard::kMax) {
        b.doomed_attempt[n].store(ctx.task.attempt);
        b.doomed_start[n].store(monotonic_ns());
      }
      const bool healed = b.heal.load() != 0;
      if (healed) b.doomed_done.fetch_add(1);
      if (n < RetryBoard::kMax) b.doomed_end[n].store(monotonic_ns());
      return healed ? Outcome::done() : Outcome::fail("kaput " + std::to_string(ctx.task.attempt));
    });
    (*c)->on("eta", [&](TaskContext&) {
      b.eta_started.store(monotonic_ns());
      b.eta_runs.fetch_add(1);
      return Outcome::done();
    });
    (*c)->start();
    wait_for_flag(b.stop, 60s);
    (*c)->request_stop();
    return (*c)->join() ? 0 : 11;
  });
  ASSERT_GT(child, 0);
  ChildGuard guard(child, [&] { b.stop.store(1); });
  Client producer = Client::attach(seg).value();

  // One kind per level, so the per-level counters can be checked exactly.
  TaskId flaky_id = 0, doomed_id = 0, unknown_id = 0, eta_id = 0;
  TaskOptions flaky = on_queue(general, 0);
  flaky.max_attempts = 3;
  ASSERT_EQ(producer.enqueue_text("flaky", "f", flaky, &flaky_id), Errc::ok);
  TaskOptions doomed = on_queue(general, 1);
  doomed.max_attempts = 3;
  doomed.retry.delay = 50ms;
  doomed.retry.backoff_x100 = 200;
  doomed.retry.jitter_pct = 0;
  doomed.retry.max_delay = 10s;
  ASSERT_EQ(producer.enqueue_text("doomed", "d", doomed, &doomed_id), Errc::ok);
  ASSERT_EQ(producer.enqueue_text("nobody_home", "n", on_queue(general, 2), &unknown_id), Errc::ok);
  const std::int64_t eta_enqueued = monotonic_ns();
  TaskOptions eta = on_queue(general, 3);
  eta.after(200ms);
  ASSERT_EQ(producer.enqueue_text("eta", "e", eta, &eta_id), Errc::ok);
  EXPECT_EQ(b.eta_runs.load(), 0) << "ran right after enqueue, 200 ms early";

  ASSERT_TRUE(eventually([&] { return b.flaky_done.load() == 1; })) << "flaky runs " << b.flaky_runs.load();
  ASSERT_TRUE(eventually([&] { return producer.dead_letters().size() == 2; }))
      << "dead letters " << producer.dead_letters().size();
  ASSERT_TRUE(eventually([&] { return b.eta_runs.load() == 1; })) << "the ETA task never ran";

  // Retried twice, then done: three runs, attempts 1, 2, 3, each retry after its delay.
  ASSERT_EQ(b.flaky_runs.load(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.flaky_attempt[i].load(), i + 1);
  for (int i = 1; i < 3; ++i)
    EXPECT_GE(b.flaky_start[i].load() - b.flaky_end[i - 1].load(), 30'000'000) << "retry " << i << " came early";
  const LevelStats fs = producer.level_stats(general, 0);
  EXPECT_EQ(fs.started, 3u);
  EXPECT_EQ(fs.retried, 2u);
  EXPECT_EQ(fs.failed, 0u) << "asking for a retry is not a failure";
  EXPECT_EQ(fs.done, 1u);
  EXPECT_EQ(fs.dead, 0u);

  // Failing always: max_attempts runs with back-off (50 ms, then 100 ms), then a dead
  // letter with the attempt count and the handler's reason.
  ASSERT_EQ(b.doomed_runs.load(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.doomed_attempt[i].load(), i + 1);
  EXPECT_GE(b.doomed_start[1].load() - b.doomed_end[0].load(), 50'000'000);
  EXPECT_GE(b.doomed_start[2].load() - b.doomed_end[1].load(), 100'000'000) << "no back-off on the second retry";
  const LevelStats ds = producer.level_stats(general, 1);
  EXPECT_EQ(ds.started, 3u);
  EXPECT_EQ(ds.failed, 3u);
  EXPECT_EQ(ds.retried, 2u);
  EXPECT_EQ(ds.dead, 1u);
  EXPECT_EQ(ds.done, 0u);
  EXPECT_EQ(producer.level_stats(general, 2).dead, 1u);

  std::map<TaskId, DeadLetter> dead;
  for (auto& d : producer.dead_letters()) dead[d.id] = d;
  ASSERT_EQ(dead.count(doomed_id), 1u);
  EXPECT_EQ(dead[doomed_id].attempts, 3);
  EXPECT_EQ(dead[doomed_id].type_name, "doomed");
  EXPECT_EQ(dead[doomed_id].level, 1);
  EXPECT_NE(dead[doomed_id].reason.find("kaput 3"), std::string::npos) << dead[doomed_id].reason;
  ASSERT_EQ(dead.count(unknown_id), 1u);
  EXPECT_EQ(dead[unknown_id].type_name, "nobody_home");
  EXPECT_NE(dead[unknown_id].reason.find("no handler"), std::string::npos) << dead[unknown_id].reason;
  EXPECT_EQ(dead.count(flaky_id), 0u);

  // Not before its time, and run once.
  EXPECT_GE(b.eta_started.load() - eta_enqueued, 200'000'000) << "the ETA task ran before its not-before time";
  EXPECT_EQ(producer.level_stats(general, 3).done, 1u);

  // A requeued dead letter runs again with a fresh attempt count (and now succeeds).
  b.heal.store(1);
  ASSERT_EQ(producer.requeue_dead(doomed_id), Errc::ok);
  ASSERT_TRUE(eventually([&] { return b.doomed_done.load() == 1; })) << "the requeued dead letter never ran";
  EXPECT_EQ(b.doomed_runs.load(), 4);
  EXPECT_EQ(b.doomed_attempt[3].load(), 1) << "requeue_dead must reset the attempt count";
  auto left = producer.dead_letters();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id, unknown_id);
  EXPECT_NE(producer.requeue_dead(doomed_id), Errc::ok) << "a completed task is no dead letter";

  // Purged dead letters are gone for good.
  EXPECT_EQ(producer.purge_dead(), 1u);
  EXPECT_TRUE(producer.dead_letters().empty());
  EXPECT_NE(producer.requeue_dead(unknown_id), Errc::ok);

  b.stop.store(1);
  const auto st = guard.wait(20s);
  EXPECT_TRUE(st.ok()) << describe(st);
  EXPECT_EQ(records_in(seg, TaskState::queued) + records_in(seg, TaskState::running) +
                records_in(seg, TaskState::delayed) + records_in(seg, TaskState::dead),
            0u);
}

// ---------------------------------------------------------------------------------
// 5. Reaping a consumer killed while its handlers run

namespace {
struct ReapBoard {
  static constexpr int kMax = 16;
  std::atomic<int> started{0};
  std::atomic<int> started_value[kMax]{};
  std::atomic<int> started_attempt[kMax]{};
  std::atomic<int> published{0};  // entries of the two arrays above that are written
  std::atomic<int> never{0};      // never set: the victim's handlers block until SIGKILL
};
}  // namespace

TEST_F(E2e, KilledConsumersTasksAreReapedAndRunElsewhere) {
  constexpr int kTasks = 8;
  SharedArray<ReapBoard> board(1);
  ReapBoard& b = board[0];
  Client producer = Client::attach(seg).value();
  for (int i = 0; i < kTasks; ++i) ASSERT_EQ(producer.enqueue_value("job", i, on_queue(general)), Errc::ok);

  const pid_t victim = spawn([&]() -> int {
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 2;
    co.tick = 20ms;
    auto c = Consumer::create(seg, co);
    if (!c) return 10;
    (*c)->on_value<int>("job", [&](const int& v, TaskContext& ctx) {
      const int n = b.started.fetch_add(1);
      if (n < ReapBoard::kMax) {
        b.started_value[n].store(v);
        b.started_attempt[n].store(ctx.task.attempt);
        b.published.fetch_add(1);  // after the stores: the parent reads them once it sees this
      }
      wait_for_flag(b.never, 60s);
      return Outcome::done();
    });
    (*c)->start();
    for (;;) ::pause();
  });
  ASSERT_GT(victim, 0);
  ChildGuard guard(victim, [&] { ::kill(victim, SIGKILL); });
  ASSERT_TRUE(eventually([&] { return b.published.load() == 2; })) << "the victim's two workers did not start";
  EXPECT_EQ(b.started.load(), 2);
  // Both are held (running) by the victim, nothing else is.
  EXPECT_EQ(records_in(seg, TaskState::running), 2u);
  std::set<int> held;
  for (int i = 0; i < 2; ++i) {
    held.insert(b.started_value[i].load());
    EXPECT_EQ(b.started_attempt[i].load(), 1);
  }
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const auto vs = guard.wait(10s);
  ASSERT_TRUE(vs.signaled && vs.signal == SIGKILL) << describe(vs);

  // A second consumer: its janitor reaps the dead participant (about once a second,
  // after the victim's janitor lease lapses) and it runs everything.
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 2;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co).value();
  std::mutex mu;
  std::map<int, std::vector<int>> attempts;  // value -> attempts seen
  c->on_value<int>("job", [&](const int& v, TaskContext& ctx) {
    std::lock_guard lk(mu);
    attempts[v].push_back(ctx.task.attempt);
    return Outcome::done();
  });
  c->start();
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return attempts.size() == static_cast<std::size_t>(kTasks);
  })) << "tasks held by the killed consumer were not recovered";
  // Nothing runs twice afterwards either.
  ASSERT_TRUE(eventually([&] { return records_in(seg, TaskState::running) == 0; }));
  c->request_stop();
  EXPECT_TRUE(c->join());

  std::lock_guard lk(mu);
  for (int v = 0; v < kTasks; ++v) {
    ASSERT_EQ(attempts[v].size(), 1u) << "task " << v << " ran " << attempts[v].size() << " times";
    EXPECT_EQ(attempts[v][0], held.count(v) ? 2 : 1) << "task " << v;
  }
  EXPECT_EQ(c->stats().done, static_cast<std::uint64_t>(kTasks));
  EXPECT_TRUE(producer.dead_letters().empty());
  EXPECT_EQ(slot_of(seg, victim), nullptr) << "the dead participant's slot was not freed";
  EXPECT_EQ(
      records_in(seg, TaskState::queued) + records_in(seg, TaskState::running) + records_in(seg, TaskState::delayed),
      0u);
}

// ---------------------------------------------------------------------------------
// 6. Graceful shutdown on SIGTERM, and a second signal

namespace {
struct StopBoard {
  static constexpr int kMax = 64;
  std::atomic<int> started_total{0};
  std::atomic<int> started[kMax]{};
  std::atomic<int> finished[kMax]{};
  std::atomic<int> saw_stop{0};
  std::atomic<int> release{0};
};
}  // namespace

// SIGTERM while handlers run: the child stops taking, lets the running handlers finish
// (they see the stop token), deregisters and exits 0. Nothing is left running; a fresh
// consumer drains the rest and every task ran exactly once.
TEST_F(E2e, SigtermLetsRunningHandlersFinishAndExitsZero) {
  constexpr int kTasks = 20;
  SharedArray<StopBoard> board(1);
  StopBoard& b = board[0];
  Client producer = Client::attach(seg).value();
  for (int i = 0; i < kTasks; ++i) ASSERT_EQ(producer.enqueue_value("slow", i, on_queue(general)), Errc::ok);

  const pid_t child = spawn([&]() -> int {
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 2;
    co.tick = 20ms;
    co.grace = 20s;
    auto c = Consumer::create(seg, co);
    if (!c) return 10;
    (*c)->on_value<int>("slow", [&](const int& v, TaskContext& ctx) {
      b.started[v].fetch_add(1);
      b.started_total.fetch_add(1);
      bool saw = false;
      for (int step = 0; step < 20; ++step) {  // ~200 ms; finishes even when asked to stop
        std::this_thread::sleep_for(10ms);
        saw = saw || ctx.stop.stop_requested();
      }
      if (saw) b.saw_stop.fetch_add(1);
      b.finished[v].fetch_add(1);
      return Outcome::done();
    });
    return (*c)->run_until_signal();
  });
  ASSERT_GT(child, 0);
  ChildGuard guard(child, [&] {
    b.release.store(1);
    ::kill(child, SIGKILL);
  });
  ASSERT_TRUE(eventually([&] { return b.started_total.load() >= 1; }));
  ASSERT_EQ(::kill(child, SIGTERM), 0);
  const auto st = guard.wait(20s);
  ASSERT_TRUE(st.ok()) << describe(st);

  int started = 0;
  for (int i = 0; i < kTasks; ++i) {
    EXPECT_LE(b.started[i].load(), 1) << "task " << i;
    EXPECT_EQ(b.started[i].load(), b.finished[i].load()) << "task " << i << " was started but not finished";
    started += b.started[i].load();
  }
  EXPECT_GE(started, 1);
  EXPECT_LT(started, kTasks) << "it kept taking tasks after SIGTERM";
  EXPECT_GE(b.saw_stop.load(), 1) << "running handlers did not see the stop token";
  EXPECT_EQ(records_in(seg, TaskState::running), 0u) << "a task was left running";
  EXPECT_EQ(records_in(seg, TaskState::queued), static_cast<std::size_t>(kTasks - started));
  EXPECT_EQ(sum_levels(producer, general).done, static_cast<std::uint64_t>(started));
  EXPECT_EQ(slot_of(seg, child), nullptr) << "the child did not deregister";

  // A fresh consumer (here) drains the rest; nothing runs twice.
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 2;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co).value();
  c->on_value<int>("slow", [&](const int& v, TaskContext&) {
    b.started[v].fetch_add(1);
    b.finished[v].fetch_add(1);
    return Outcome::done();
  });
  c->start();
  ASSERT_TRUE(eventually([&] { return c->stats().done == static_cast<std::uint64_t>(kTasks - started); }));
  c->request_stop();
  EXPECT_TRUE(c->join());
  int total = 0;
  for (int i = 0; i < kTasks; ++i) {
    EXPECT_EQ(b.started[i].load(), 1) << "task " << i;
    EXPECT_EQ(b.finished[i].load(), 1) << "task " << i;
    total += b.finished[i].load();
  }
  EXPECT_EQ(total, kTasks);
  EXPECT_TRUE(producer.dead_letters().empty());
}

// A second SIGTERM while handlers are still running exits at once with 130; the
// reaper then puts back what was running (attempt counted) and nothing is lost.
TEST_F(E2e, SecondSigtermExitsAt130AndTheReaperRequeuesWhatRan) {
  constexpr int kTasks = 6;
  SharedArray<StopBoard> board(1);
  StopBoard& b = board[0];
  Client producer = Client::attach(seg).value();
  for (int i = 0; i < kTasks; ++i) ASSERT_EQ(producer.enqueue_value("stuck", i, on_queue(general)), Errc::ok);

  const pid_t child = spawn([&]() -> int {
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 2;
    co.tick = 20ms;
    co.grace = 30s;  // the second signal, not the grace period, must end it
    auto c = Consumer::create(seg, co);
    if (!c) return 10;
    (*c)->on_value<int>("stuck", [&](const int& v, TaskContext&) {
      b.started[v].fetch_add(1);
      b.started_total.fetch_add(1);
      wait_for_flag(b.release, 60s);  // ignores the stop token
      b.finished[v].fetch_add(1);
      return Outcome::done();
    });
    return (*c)->run_until_signal();
  });
  ASSERT_GT(child, 0);
  ChildGuard guard(child, [&] {
    b.release.store(1);
    ::kill(child, SIGKILL);
  });
  ASSERT_TRUE(eventually([&] { return b.started_total.load() == 2; }));
  const detail::ParticipantEntry* slot = slot_of(seg, child);
  ASSERT_NE(slot, nullptr);
  ASSERT_EQ(::kill(child, SIGTERM), 0);
  // Two pending SIGTERMs merge into one: send the second only once the first was taken.
  ASSERT_TRUE(eventually([&] { return slot->activity.load() == static_cast<std::uint32_t>(Activity::stopping); }))
      << "the first SIGTERM did not start a graceful stop";
  ASSERT_EQ(::kill(child, SIGTERM), 0);
  const auto st = guard.wait(10s);
  ASSERT_TRUE(st.exited && st.code == 130) << describe(st);
  b.release.store(1);

  std::set<int> held;
  for (int i = 0; i < kTasks; ++i) {
    EXPECT_EQ(b.finished[i].load(), 0) << "task " << i;
    if (b.started[i].load() != 0) held.insert(i);
  }
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(records_in(seg, TaskState::running), 2u) << "still owned by the exited child until reaped";

  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 2;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co).value();
  std::mutex mu;
  std::map<int, std::vector<int>> attempts;
  c->on_value<int>("stuck", [&](const int& v, TaskContext& ctx) {
    std::lock_guard lk(mu);
    attempts[v].push_back(ctx.task.attempt);
    return Outcome::done();
  });
  c->start();
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return attempts.size() == static_cast<std::size_t>(kTasks);
  })) << "the tasks the child was running were not requeued";
  ASSERT_TRUE(eventually([&] { return records_in(seg, TaskState::running) == 0; }));
  c->request_stop();
  EXPECT_TRUE(c->join());
  std::lock_guard lk(mu);
  for (int v = 0; v < kTasks; ++v) {
    ASSERT_EQ(attempts[v].size(), 1u) << "task " << v;
    EXPECT_EQ(attempts[v][0], held.count(v) ? 2 : 1) << "task " << v;
  }
  EXPECT_TRUE(producer.dead_letters().empty());
}
