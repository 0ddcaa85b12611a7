// Semaphores across processes: the capacity holds when several processes contend, the
// scarce-resource dispatch keeps every permit busy, a process killed while holding
// permits gets them returned by the reaper (and only them), a kill at any step of the
// grant, release, park and hand-over protocol loses nothing and wedges nothing, and a
// capacity changed at run time is obeyed by consumers in other processes.
//
// The segment is private (anonymous MAP_SHARED memory): children forked after it was
// made share it, and each child attaches its own Client or Consumer. What the children
// observe goes to a Board in shared memory; the parent asserts on it. Children never
// use GoogleTest assertions; they report through the Board and their exit status.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

namespace shmsched {
/// Lets GoogleTest print a Grant by name in failure messages.
inline void PrintTo(Client::Grant g, std::ostream* os) {
  *os << (g == Client::Grant::granted ? "granted" : g == Client::Grant::parked ? "parked" : "error");
}
}  // namespace shmsched

using namespace shmsched;
using namespace std::chrono_literals;
using fault::Point;
using test::ExitStatus;

namespace {

constexpr std::size_t kMaxTasks = 512;

// Everything children report, in memory shared with the parent.
struct Board {
  std::atomic<int> inside{0};      // holders (or handlers) inside the guarded section now
  std::atomic<int> max_inside{0};  // most ever seen inside at once
  std::atomic<int> failures{0};    // operations a child saw fail
  std::atomic<int> holding{0};     // permits (or handlers) a child reports it holds
  std::atomic<int> waiter_granted{0};
  std::atomic<int> stop{0};  // parent -> children: wind down
  std::atomic<int> release_now{0};
  std::atomic<int> ready{0};
  std::atomic<std::uint64_t> done{0};        // handler runs finished
  std::atomic<std::int64_t> all_done_ns{0};  // when the last expected run finished
  std::atomic<std::uint64_t> parked{0}, handed{0};
  // Direct-acquire workload bookkeeping (see direct_workload).
  std::atomic<int> held_sure{0}, transit{0};
  // Resize test: concurrency seen per phase (see the test).
  std::atomic<int> phase{0};
  std::atomic<int> max_by_phase[3]{};
  std::atomic<int> runs_by_phase[3]{};
  std::atomic<std::uint32_t> runs[kMaxTasks]{};
};

Layout small_layout() {
  Layout l;
  l.task_capacity = 1024;
  l.levels = 2;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 16;
  l.max_semaphores = 4;
  return l;
}

void note_max(std::atomic<int>& m, int v) {
  int cur = m.load();
  while (v > cur && !m.compare_exchange_weak(cur, v)) {
  }
}

using shmsched::test::eventually;

SemaphoreInfo sem_info(const Segment& seg, SemId sem) {
  for (auto& i : seg.semaphores())
    if (i.id == sem) return i;
  ADD_FAILURE() << "semaphore " << sem << " not listed";
  return {};
}
std::uint32_t in_use(const Segment& seg, SemId sem) {
  return sem_info(seg, sem).in_use;
}

// Ledger slots with a holder recorded. With nobody mid-acquire or mid-release this
// must equal in_use: a slot left behind by a dead process would eventually starve
// grants even though no permit bit is set.
std::uint32_t ledger_entries(Segment& seg, SemId sem) {
  auto& e = detail::core_of(seg).semaphores[sem];
  std::uint32_t n = 0;
  for (auto& h : e.holders) n += h.load() != 0;
  return n;
}

// Every record is free again: nothing queued, parked, running, delayed or dead.
std::string busy_records(Segment& seg) {
  std::string out;
  const auto& core = detail::core_of(seg);
  for (std::uint32_t i = 0; i < core.capacity; ++i) {
    const auto st = detail::state_of(core.ctrl[i].state.load());
    if (st != TaskState::free && st != TaskState::virgin)
      out += "record " + std::to_string(i) + " state " + std::to_string(static_cast<int>(st)) + "; ";
  }
  return out;
}

bool killed_by_sigkill(const ExitStatus& s) {
  return s.signaled && s.signal == SIGKILL;
}

// Blocks the calling thread for good (the process is killed while it waits).
[[noreturn]] void block_forever() {
  for (;;) ::pause();
}

// Kills and collects, at scope exit, every listed child that is still running, so an
// ASSERT that ends a test early leaves no child blocked behind it. A child already
// collected by wait_child is not ours any more: waitpid fails and it is left alone.
class ChildGuard {
 public:
  ChildGuard() = default;
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    for (pid_t pid : pids_) {
      if (pid <= 0 || ::waitpid(pid, nullptr, WNOHANG) != 0) continue;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  pid_t operator()(pid_t pid) {
    pids_.push_back(pid);
    return pid;
  }

 private:
  std::vector<pid_t> pids_;
};

void wait_flag(const std::atomic<int>& flag, std::chrono::milliseconds limit = 30s) {
  (void)eventually([&] { return flag.load() != 0; }, limit);
}

struct World {
  Segment seg = Segment::create_private(small_layout(), CreateOptions{0600, {"work"}}).value();
  QueueId q = seg.find_queue("work").value();
  test::SharedArray<Board> shared{1};
  Board& board = shared[0];

  SemId make_sem(std::uint32_t capacity) { return seg.create_semaphore("sem", capacity).value(); }

  // Enqueues `n` tasks of `type` whose payload is their index; `need` > 0 makes each
  // task itself need that many permits of `sem`.
  void enqueue(Client& c, std::string_view type, int n, SemId sem, std::uint16_t need, std::uint16_t attempts = 5) {
    TaskOptions o;
    o.queue = q;
    o.max_attempts = attempts;
    if (need > 0) o.needs[0] = Need{sem, need};
    for (int i = 0; i < n; ++i) ASSERT_EQ(c.enqueue_value(type, i, o), Errc::ok) << "task " << i;
  }
};

}  // namespace

// ---- 1: the capacity holds under contention from several processes ----------------------

TEST(SemaphoreProcesses, CapacityNeverExceededAcrossProcesses) {
  World w;
  ChildGuard guard;
  const SemId sem = w.make_sem(3);
  Board& b = w.board;
  constexpr int kProcs = 3, kThreads = 2, kRounds = 3000;
  test::StartGate gate;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(guard(test::spawn([&] {
      gate.wait();
      auto c = Client::attach(w.seg).value();
      std::vector<std::thread> ts;
      for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&, t] {
          for (int i = 0; i < kRounds; ++i) {
            if (c.acquire(sem, 1, 5s) != Errc::ok) {
              b.failures.fetch_add(1);
              return;
            }
            note_max(b.max_inside, b.inside.fetch_add(1) + 1);
            // Now and then hold a little longer, so holders of different processes
            // overlap and the capacity is really contended.
            if ((i + t) % 16 == 0) std::this_thread::sleep_for(50us);
            b.inside.fetch_sub(1);
            if (c.release(sem, 1) != Errc::ok) b.failures.fetch_add(1);
          }
        });
      for (auto& t : ts) t.join();
      return 0;
    })));
  gate.open();
  for (const ExitStatus& s : test::wait_children(pids, 30s)) EXPECT_TRUE(s.ok()) << test::describe(s);
  EXPECT_EQ(b.failures.load(), 0) << "acquire timed out or release was refused";
  EXPECT_LE(b.max_inside.load(), 3) << "more holders at once than the capacity";
  EXPECT_GE(b.max_inside.load(), 2) << "holders never overlapped: the workload proves nothing";
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  auto c = Client::attach(w.seg).value();
  const auto v = c.verify_permits();
  EXPECT_TRUE(v.ok()) << test::why(v);
}

// ---- 2: a scarce resource stays busy: parking plus hand-over, no timers ------------------

TEST(SemaphoreProcesses, ScarceResourceIsKeptBusyAcrossConsumerProcesses) {
  World w;
  ChildGuard guard;
  constexpr int kTasks = 200, kCapacity = 5, kHoldMs = 10;
  const SemId sem = w.make_sem(kCapacity);
  Board& b = w.board;
  // All tasks are queued before either consumer starts, so both processes find work
  // at once and the run measures dispatch, not how sleeping workers are woken.
  auto producer = Client::attach(w.seg).value();
  w.enqueue(producer, "job", kTasks, sem, 0);  // the consumers' declared needs apply
  test::StartGate gate;
  std::vector<pid_t> pids;
  for (int p = 0; p < 2; ++p)
    pids.push_back(guard(test::spawn([&] {
      ConsumerOptions co;
      co.home = {"work"};
      co.workers = 4;
      // Far longer than the whole run may take: a parked task that waited for the
      // janitor's timer would blow the time bound, so finishing in time proves the
      // hand-over on release did the work.
      co.tick = 10s;
      auto c = Consumer::create(w.seg, co).value();
      if (!c->needs("job", {{"sem", 1}}).ok()) return 2;
      c->on_value<int>("job", [&](int i, TaskContext&) {
        if (i >= 0 && i < kTasks) b.runs[i].fetch_add(1);
        note_max(b.max_inside, b.inside.fetch_add(1) + 1);
        std::this_thread::sleep_for(std::chrono::milliseconds(kHoldMs));
        b.inside.fetch_sub(1);
        if (b.done.fetch_add(1) + 1 == kTasks) b.all_done_ns.store(monotonic_ns());
        return Outcome::done();
      });
      gate.wait();
      c->start();
      wait_flag(b.stop);
      c->request_stop();
      const bool joined = c->join();
      const ConsumerStats st = c->stats();
      b.parked.fetch_add(st.parked);
      b.handed.fetch_add(st.handed);
      return joined ? 0 : 3;
    })));
  const std::int64_t t0 = monotonic_ns();
  gate.open();
  const bool finished = eventually([&] { return b.done.load() >= kTasks; }, 15s);
  b.stop.store(1);
  for (const ExitStatus& s : test::wait_children(pids, 20s)) EXPECT_TRUE(s.ok()) << test::describe(s);
  ASSERT_TRUE(finished) << "only " << b.done.load() << " of " << kTasks << " ran: a parked task was stranded";

  const double wall_ms = static_cast<double>(b.all_done_ns.load() - t0) / 1e6;
  const double ideal_ms = double(kTasks) / kCapacity * kHoldMs;
  const double ratio = wall_ms / ideal_ms;
  std::printf(
      "[  RATIO   ] %d tasks, capacity %d, %d ms each, 8 workers in 2 processes: %.1f ms, ideal %.0f ms, "
      "ratio %.3f (parked %llu, handed over %llu)\n",
      kTasks, kCapacity, kHoldMs, wall_ms, ideal_ms, ratio, static_cast<unsigned long long>(b.parked.load()),
      static_cast<unsigned long long>(b.handed.load()));
  std::fflush(stdout);
  RecordProperty("wall_ms", std::to_string(wall_ms));
  RecordProperty("ratio_to_ideal", std::to_string(ratio));
  EXPECT_LT(ratio, 2.0) << "permits sat idle while tasks waited";

  EXPECT_LE(b.max_inside.load(), kCapacity) << "more holders at once than the capacity";
  EXPECT_EQ(b.max_inside.load(), kCapacity) << "the capacity was never fully used";
  for (int i = 0; i < kTasks; ++i) EXPECT_EQ(b.runs[i].load(), 1u) << "task " << i;
  EXPECT_GT(b.parked.load(), 0u) << "8 workers on 5 permits must park some tasks";
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  const auto v = producer.verify_permits();
  EXPECT_TRUE(v.ok()) << test::why(v);
  EXPECT_EQ(busy_records(w.seg), "");
}

// ---- 3: a process killed while holding permits --------------------------------------------

// (a) Killed in handlers that hold permits, with tasks parked behind them and a live
// holder in a third process: the reaper returns exactly the dead one's permits, and
// the parked tasks then all run in another consumer.
TEST(SemaphoreProcesses, KilledHandlerPermitsAreReturnedAndParkedTasksProceed) {
  World w;
  ChildGuard guard;
  constexpr int kTasks = 8;
  const SemId sem = w.make_sem(3);
  Board& b = w.board;
  auto parent = Client::attach(w.seg).value();
  w.enqueue(parent, "hold", kTasks, sem, 1);

  // A live direct holder of one permit, in its own process.
  const pid_t live = guard(test::spawn([&] {
    auto c = Client::attach(w.seg).value();
    if (c.acquire(sem, 1, 5s) != Errc::ok) return 2;
    b.ready.store(1);
    wait_flag(b.release_now);
    return c.release(sem, 1) == Errc::ok ? 0 : 3;
  }));
  ASSERT_TRUE(eventually([&] { return b.ready.load() == 1; })) << "live holder did not acquire";

  // The victim: 3 workers, 2 free permits: two handlers hold them forever, the third
  // worker parks every other task.
  const pid_t victim = guard(test::spawn([&]() -> int {
    ConsumerOptions co;
    co.home = {"work"};
    co.workers = 3;
    co.tick = 10s;
    auto c = Consumer::create(w.seg, co).value();
    c->on("hold", [&](TaskContext&) -> Outcome {
      b.holding.fetch_add(1);
      block_forever();
    });
    c->start();
    block_forever();
  }));
  ASSERT_TRUE(eventually([&] { return b.holding.load() == 2 && sem_info(w.seg, sem).parked == kTasks - 2; }))
      << "holding " << b.holding.load() << ", parked " << sem_info(w.seg, sem).parked;
  EXPECT_EQ(in_use(w.seg, sem), 3u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
  EXPECT_EQ(parent.reap_dead().participants, 0u) << "a live process must not be reaped";

  ::kill(victim, SIGKILL);
  ASSERT_TRUE(killed_by_sigkill(test::wait_child(victim, 10s)));
  EXPECT_EQ(in_use(w.seg, sem), 3u) << "a dead holder's permits come back only through the reaper";
  const ReapReport rep = parent.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(rep.requeued, 2u) << "the two killed runs go back to their queue";
  EXPECT_EQ(rep.permits_returned, 2u);
  EXPECT_EQ(in_use(w.seg, sem), 1u) << "only the live holder's permit may remain";
  EXPECT_EQ(ledger_entries(w.seg, sem), 1u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
  EXPECT_EQ(parent.reap_dead().permits_returned, 0u) << "reaping is not idempotent";

  b.release_now.store(1);
  const ExitStatus ls = test::wait_child(live, 10s);
  EXPECT_TRUE(ls.ok()) << "live holder: " << test::describe(ls);
  EXPECT_EQ(in_use(w.seg, sem), 0u);

  // Another consumer process runs every task: the two the victim was running and the
  // six that were parked (long tick: no janitor help, hand-over only).
  const pid_t drainer = guard(test::spawn([&] {
    ConsumerOptions co;
    co.home = {"work"};
    co.workers = 2;
    co.tick = 10s;
    auto c = Consumer::create(w.seg, co).value();
    c->on_value<int>("hold", [&](int i, TaskContext&) {
      if (i >= 0 && i < kTasks) b.runs[i].fetch_add(1);
      std::this_thread::sleep_for(2ms);
      b.done.fetch_add(1);
      return Outcome::done();
    });
    c->start();
    const bool all = eventually([&] { return b.done.load() >= kTasks; }, 10s);
    c->request_stop();
    c->join();
    return all ? 0 : 4;
  }));
  const ExitStatus ds = test::wait_child(drainer, 20s);
  EXPECT_TRUE(ds.ok()) << "drainer: " << test::describe(ds) << ", ran " << b.done.load();
  for (int i = 0; i < kTasks; ++i) EXPECT_EQ(b.runs[i].load(), 1u) << "task " << i;
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
  EXPECT_EQ(busy_records(w.seg), "");
}

// (b) A direct user killed holding two permits; a waiter asleep in acquire() in another
// process gets its permit once the reaper returns them, not before.
TEST(SemaphoreProcesses, KilledDirectHolderPermitsReachABlockedWaiter) {
  World w;
  ChildGuard guard;
  const SemId sem = w.make_sem(2);
  Board& b = w.board;
  const pid_t victim = guard(test::spawn([&] {
    auto c = Client::attach(w.seg).value();
    if (c.acquire(sem, 2, 5s) != Errc::ok) return 2;
    b.holding.store(2);
    block_forever();
  }));
  ASSERT_TRUE(eventually([&] { return b.holding.load() == 2; })) << "victim did not acquire";
  const pid_t waiter = guard(test::spawn([&] {
    auto c = Client::attach(w.seg).value();
    if (c.acquire(sem, 1, 20s) != Errc::ok) return 2;
    b.waiter_granted.store(1);
    wait_flag(b.release_now);
    return c.release(sem, 1) == Errc::ok ? 0 : 3;
  }));
  ASSERT_TRUE(eventually([&] { return sem_info(w.seg, sem).waiters >= 1; })) << "waiter never went to sleep";
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(b.waiter_granted.load(), 0) << "granted while both permits were held";

  ::kill(victim, SIGKILL);
  ASSERT_TRUE(killed_by_sigkill(test::wait_child(victim, 10s)));
  std::this_thread::sleep_for(150ms);  // longer than one futex wait slice of acquire()
  EXPECT_EQ(b.waiter_granted.load(), 0) << "a dead holder's permits must stay held until reaped";
  EXPECT_EQ(in_use(w.seg, sem), 2u);

  auto parent = Client::attach(w.seg).value();
  const ReapReport rep = parent.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(rep.permits_returned, 2u);
  EXPECT_TRUE(eventually([&] { return b.waiter_granted.load() == 1; }, 5s)) << "waiter was not woken by the reap";
  EXPECT_EQ(in_use(w.seg, sem), 1u) << "the waiter's permit only";
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
  b.release_now.store(1);
  const ExitStatus ws = test::wait_child(waiter, 10s);
  EXPECT_TRUE(ws.ok()) << "waiter: " << test::describe(ws);
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
}

// (c) The reaper puts a dead holder's task back in its queue before it sweeps the
// ledger; a live consumer may take the task in between. The task's old grant must
// still be returned: the new run holds nothing yet, and the one permit must go to it.
// Made deterministic by killing the first reaper between its record pass and its
// sweep; a live consumer spinning on the queue hits the same window with one reaper.
TEST(SemaphoreProcesses, KilledTaskHoldersPermitIsReturnedWhenTheTaskIsRetakenBeforeTheSweep) {
  ASSERT_TRUE(fault::enabled()) << "this test needs a build with SHMSCHED_FAULT_POINTS";
  World w;
  ChildGuard guard;
  const SemId sem = w.make_sem(1);
  Board& b = w.board;
  {
    auto producer = Client::attach(w.seg).value();
    w.enqueue(producer, "job", 1, sem, 1);
  }
  const pid_t holder = guard(test::spawn([&] {
    auto c = Client::attach(w.seg, Role::consumer).value();
    Taken t;
    if (!c.try_take(w.q, t) || c.acquire_for(t, t.needs) != Client::Grant::granted) return 2;
    b.holding.store(1);
    block_forever();
  }));
  ASSERT_TRUE(eventually([&] { return b.holding.load() == 1; })) << "holder was not granted";
  ::kill(holder, SIGKILL);
  ASSERT_TRUE(killed_by_sigkill(test::wait_child(holder, 10s)));

  // The first reaper requeues the task (the dead one's only record), then dies.
  const pid_t reaper = guard(test::spawn([&] {
    fault::arm(Point::reap_mid_records, 1);
    auto c = Client::attach(w.seg, Role::consumer).value();
    c.reap_dead();
    return 0;
  }));
  ASSERT_TRUE(killed_by_sigkill(test::wait_child(reaper, 10s))) << "reaper never reached reap_mid_records";

  auto c = Client::attach(w.seg, Role::consumer).value();
  Taken t;
  ASSERT_TRUE(c.try_take(w.q, t)) << "the task was not requeued";
  const ReapReport rep = c.reap_dead();  // takes the reaping over
  EXPECT_EQ(rep.participants, 2u);
  // Whichever reaper returned it (the first may have swept before it died), the
  // permit is free once the reaping is done.
  EXPECT_EQ(in_use(w.seg, sem), 0u) << "the dead holder's permit was not returned";
  EXPECT_TRUE(c.verify_permits().ok()) << test::why(c.verify_permits());
  EXPECT_EQ(c.acquire_for(t, t.needs), Client::Grant::granted) << "the only permit is still held for the dead run";
  EXPECT_EQ(in_use(w.seg, sem), 1u);
  EXPECT_TRUE(c.verify_permits().ok()) << test::why(c.verify_permits());
  c.release_for(t, t.needs);
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  EXPECT_TRUE(c.verify_permits().ok()) << test::why(c.verify_permits());
}

// ---- 4: kills at the fault points of the semaphore protocol -------------------------------

namespace {

struct PointCase {
  Point point;
  std::uint64_t nth;
};
void PrintTo(const PointCase& c, std::ostream* os) {
  *os << fault::name(c.point) << " #" << c.nth;
}
std::string case_name(const ::testing::TestParamInfo<PointCase>& info) {
  return std::string(fault::name(info.param.point)) + "_" + std::to_string(info.param.nth);
}

// One thread acquires one permit for good, then acquires and releases 1 or 2 at a
// time. `held_sure` is what it certainly holds, `transit` the count of the acquire or
// release in progress, so the parent knows exactly what the dead process held.
int direct_workload(World& w, SemId sem) {
  Board& b = w.board;
  auto c = Client::attach(w.seg).value();
  b.transit.store(1);
  if (c.acquire(sem, 1, 5s) != Errc::ok) return 2;
  b.held_sure.store(1);
  b.transit.store(0);
  for (int i = 0; i < 200; ++i) {
    const int n = 1 + i % 2;
    b.transit.store(n);
    if (c.acquire(sem, static_cast<std::uint32_t>(n), 5s) != Errc::ok) return 3;
    // No point lies between the acquire's return and the release's start, so
    // held_sure needs no update here: at the release's point the n are already free.
    if (c.release(sem, static_cast<std::uint32_t>(n)) != Errc::ok) return 4;
    b.transit.store(0);
  }
  return 0;  // the point was never reached
}

class DirectKill : public ::testing::TestWithParam<PointCase> {};

}  // namespace

TEST_P(DirectKill, ReaperReturnsExactlyWhatTheDeadHeld) {
  ASSERT_TRUE(fault::enabled()) << "this test needs a build with SHMSCHED_FAULT_POINTS";
  const auto [point, nth] = GetParam();
  World w;
  ChildGuard guard;
  const SemId sem = w.make_sem(4);
  Board& b = w.board;
  auto parent = Client::attach(w.seg).value();
  ASSERT_EQ(parent.try_acquire(sem, 1), Errc::ok);  // a live holder the reaper must not touch

  const pid_t pid = guard(test::spawn([&] {
    fault::arm(point, nth);
    return direct_workload(w, sem);
  }));
  const ExitStatus s = test::wait_child(pid, 15s);
  ASSERT_TRUE(killed_by_sigkill(s)) << "child never reached " << fault::name(point) << " #" << nth << ": "
                                    << test::describe(s);

  // At sem_acquire_granted the bits of the acquire in progress are set; at the ledger
  // point they are not yet, and at the release point they are already cleared.
  const int dead_held = b.held_sure.load() + (point == Point::sem_acquire_granted ? b.transit.load() : 0);
  EXPECT_EQ(in_use(w.seg, sem), 1u + static_cast<std::uint32_t>(dead_held)) << "before the reap";
  const ReapReport rep = parent.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(rep.permits_returned, static_cast<std::uint32_t>(dead_held));
  EXPECT_EQ(in_use(w.seg, sem), 1u) << "only the parent's permit may remain";
  EXPECT_EQ(ledger_entries(w.seg, sem), 1u) << "ledger slots of the dead one were left behind";
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());

  // The semaphore still grants up to its capacity, and no further.
  EXPECT_EQ(parent.try_acquire(sem, 3), Errc::ok);
  EXPECT_EQ(parent.try_acquire(sem, 1), Errc::unavailable);
  EXPECT_EQ(parent.release(sem, 4), Errc::ok);
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
}

INSTANTIATE_TEST_SUITE_P(
    GrantAndReleasePoints, DirectKill,
    ::testing::Values(PointCase{Point::sem_acquire_ledger, 1}, PointCase{Point::sem_acquire_ledger, 8},
                      PointCase{Point::sem_acquire_granted, 1}, PointCase{Point::sem_acquire_granted, 7},
                      PointCase{Point::sem_acquire_granted, 8}, PointCase{Point::sem_release_bits_cleared, 1},
                      PointCase{Point::sem_release_bits_cleared, 6}),
    case_name);

namespace {
class ConsumerKill : public ::testing::TestWithParam<PointCase> {};
}  // namespace

// Capacity 1, four workers, forty needing tasks: grants, parks and hand-overs all
// happen, often enough that slow (sanitizer) builds reach every armed pass too. The consumer dies at the point;
// afterwards nothing accepted is lost, no permit is held by the dead, and a fresh consumer runs every task.
TEST_P(ConsumerKill, NothingLostNothingWedged) {
  ASSERT_TRUE(fault::enabled()) << "this test needs a build with SHMSCHED_FAULT_POINTS";
  const auto [point, nth] = GetParam();
  constexpr int kTasks = 40;
  World w;
  ChildGuard guard;
  const SemId sem = w.make_sem(1);
  Board& b = w.board;
  {
    auto producer = Client::attach(w.seg).value();
    w.enqueue(producer, "job", kTasks, sem, 1);
  }
  auto run_job = [&b](int i, TaskContext&) {
    if (i >= 0 && i < kTasks) b.runs[i].fetch_add(1);
    std::this_thread::sleep_for(2ms);
    b.done.fetch_add(1);
    return Outcome::done();
  };
  const pid_t pid = guard(test::spawn([&] {
    fault::arm(point, nth);  // before any worker thread exists
    ConsumerOptions co;
    co.home = {"work"};
    co.workers = 4;
    co.tick = 10s;
    auto c = Consumer::create(w.seg, co).value();
    c->on_value<int>("job", run_job);
    c->start();
    (void)eventually([&] { return b.done.load() >= kTasks; }, 10s);
    c->request_stop();
    c->join();
    return 0;  // the point was never reached
  }));
  const ExitStatus s = test::wait_child(pid, 20s);
  ASSERT_TRUE(killed_by_sigkill(s)) << "consumer never reached " << fault::name(point) << " #" << nth << ": "
                                    << test::describe(s);

  auto parent = Client::attach(w.seg, Role::producer | Role::consumer).value();
  const ReapReport rep = parent.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(rep.dead_lettered, 0u);
  EXPECT_EQ(in_use(w.seg, sem), 0u) << "permits of the dead consumer were not returned";
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
  EXPECT_EQ(parent.try_acquire(sem, 1), Errc::ok);
  EXPECT_EQ(parent.try_acquire(sem, 1), Errc::unavailable);
  EXPECT_EQ(parent.release(sem, 1), Errc::ok);

  // Drain with a fresh consumer. Its janitor (short tick) also covers a releaser that
  // died before its hand-over, as the design intends.
  ConsumerOptions co;
  co.home = {"work"};
  co.workers = 2;
  co.tick = 20ms;
  auto c = Consumer::create(w.seg, co).value();
  c->on_value<int>("job", run_job);
  c->start();
  auto all_ran = [&] {
    for (int i = 0; i < kTasks; ++i)
      if (b.runs[i].load() == 0) return false;
    return busy_records(w.seg).empty();
  };
  const bool drained = eventually(all_ran, 10s);
  c->request_stop();
  EXPECT_TRUE(c->join());
  EXPECT_TRUE(drained) << "not every accepted task ran; left: " << busy_records(w.seg) << " parked "
                       << sem_info(w.seg, sem).parked << " in use " << in_use(w.seg, sem);
  for (int i = 0; i < kTasks; ++i) EXPECT_GE(b.runs[i].load(), 1u) << "task " << i << " lost";
  EXPECT_TRUE(parent.dead_letters().empty());
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
}

INSTANTIATE_TEST_SUITE_P(ParkAndHandOverPoints, ConsumerKill,
                         ::testing::Values(PointCase{Point::park_after_push, 1}, PointCase{Point::park_after_push, 4},
                                           PointCase{Point::unpark_after_claim, 1},
                                           PointCase{Point::unpark_after_claim, 4},
                                           PointCase{Point::sem_acquire_granted, 3},
                                           PointCase{Point::sem_release_bits_cleared, 2}),
                         case_name);

// ---- 5: capacity changed at run time by another process -----------------------------------

// A handler tags itself with the phase it saw before and after entering; since a
// handler is inside only while its task holds a permit, one that saw phase 0 after
// entering entered while the capacity was still 1, and one that saw phase 2 before
// entering entered after the parent saw in_use <= 1 under capacity 1 again.
TEST(SemaphoreProcesses, CapacityChangedAtRunTimeIsObeyedByAnotherProcess) {
  World w;
  ChildGuard guard;
  constexpr int kTasks = 400;
  const SemId sem = w.make_sem(1);
  Board& b = w.board;
  auto parent = Client::attach(w.seg).value();
  w.enqueue(parent, "job", kTasks, sem, 1);
  const pid_t pid = guard(test::spawn([&] {
    ConsumerOptions co;
    co.home = {"work"};
    co.workers = 4;
    co.tick = 10s;
    auto c = Consumer::create(w.seg, co).value();
    c->on("job", [&](TaskContext&) {
      const int before = b.phase.load();
      const int now = b.inside.fetch_add(1) + 1;
      const int after = b.phase.load();
      const int tag = after == 0 ? 0 : (before == 1 && after == 1) ? 1 : before == 2 ? 2 : -1;
      if (tag >= 0) {
        note_max(b.max_by_phase[tag], now);
        b.runs_by_phase[tag].fetch_add(1);
      }
      std::this_thread::sleep_for(10ms);
      b.inside.fetch_sub(1);
      b.done.fetch_add(1);
      return Outcome::done();
    });
    c->start();
    wait_flag(b.stop);
    c->request_stop();
    return c->join() ? 0 : 3;
  }));

  // Phase 0: capacity 1.
  ASSERT_TRUE(eventually([&] { return b.done.load() >= 10; })) << "nothing ran";
  EXPECT_GT(sem_info(w.seg, sem).parked, 0u) << "4 workers on 1 permit must park tasks";
  EXPECT_LE(in_use(w.seg, sem), 1u);

  // Phase 1: raised to 4 from this process.
  b.phase.store(1);
  ASSERT_EQ(parent.set_capacity(sem, 4), Errc::ok);
  EXPECT_TRUE(eventually([&] { return b.max_by_phase[1].load() >= 2; }, 5s))
      << "concurrency did not rise after the capacity was raised";
  const std::uint64_t d1 = b.done.load();
  EXPECT_TRUE(eventually([&] { return b.done.load() >= d1 + 40; }));
  EXPECT_LE(in_use(w.seg, sem), 4u);

  // Phase 2: lowered to 1; running handlers finish, then at most one at a time.
  ASSERT_EQ(parent.set_capacity(sem, 1), Errc::ok);
  ASSERT_TRUE(eventually([&] { return in_use(w.seg, sem) <= 1; }, 5s)) << "in-flight tasks never finished";
  b.phase.store(2);
  const std::uint64_t d2 = b.done.load();
  EXPECT_TRUE(eventually([&] { return b.done.load() >= d2 + 20; }));
  EXPECT_LE(in_use(w.seg, sem), 1u);

  b.stop.store(1);
  const ExitStatus s = test::wait_child(pid, 20s);
  EXPECT_TRUE(s.ok()) << test::describe(s);
  EXPECT_GE(b.runs_by_phase[0].load(), 5);
  EXPECT_LE(b.max_by_phase[0].load(), 1) << "capacity 1 exceeded before the raise";
  EXPECT_LE(b.max_by_phase[1].load(), 4) << "capacity 4 exceeded";
  EXPECT_GE(b.runs_by_phase[2].load(), 10);
  EXPECT_LE(b.max_by_phase[2].load(), 1) << "capacity 1 exceeded after the lowering";
  EXPECT_EQ(in_use(w.seg, sem), 0u);
  EXPECT_EQ(ledger_entries(w.seg, sem), 0u);
  EXPECT_TRUE(parent.verify_permits().ok()) << test::why(parent.verify_permits());
}
