// Crash smoke: a child process is SIGKILLed at a named fault point while it produces
// and consumes; afterwards the parent reaps it and proves that nothing accepted was
// lost, no record is left owned by the dead, and every ring still works.
//
// The segment is private (anonymous MAP_SHARED memory), so children forked after it
// share it. A child that does not reach its point exits 0, which fails the test: the
// list of points cannot silently stop being exercised.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/shmsched.hpp"

using namespace shmsched;
using fault::Point;

namespace {

constexpr std::size_t kLogMax = 4096;

// Ids the child reports, in memory shared with the parent. An id is logged as
// accepted only after enqueue returned ok, and as "completing" just before complete()
// is called, so a kill anywhere leaves the logs conservative.
struct Log {
  std::atomic<std::uint32_t> n_accepted{0};
  std::atomic<std::uint32_t> n_completing{0};
  std::atomic<std::uint32_t> victim_ready{0};
  std::atomic<TaskId> accepted[kLogMax];
  std::atomic<TaskId> completing[kLogMax];
  void accept(TaskId id) { accepted[n_accepted.fetch_add(1) % kLogMax].store(id); }
  void completing_now(TaskId id) { completing[n_completing.fetch_add(1) % kLogMax].store(id); }
};

Layout crash_layout(std::uint32_t ring_capacity = 0, std::uint32_t levels = 4) {
  Layout l;
  l.task_capacity = 1024;
  l.levels = levels;
  l.payload_bytes = 32;
  l.ring_capacity = ring_capacity;
  l.max_queues = 2;
  l.max_participants = 16;
  return l;
}

struct World {
  Segment seg;
  QueueId q;
  Log* log;
  std::vector<TaskId> parent_accepted;

  explicit World(const Layout& l)
      : seg(Segment::create_private(l, CreateOptions{0600, {"work"}}).value()),
        q(seg.find_queue("work").value()),
        log(static_cast<Log*>(
            ::mmap(nullptr, sizeof(Log), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0))) {
    new (log) Log();
  }
  ~World() { ::munmap(log, sizeof(Log)); }

  void preload(int n) {
    auto c = Client::attach(seg).value();
    for (int i = 0; i < n; ++i) {
      TaskId id;
      TaskOptions o;
      o.queue = q;
      o.priority = static_cast<std::uint8_t>(i % seg.layout().levels);
      ASSERT_EQ(c.enqueue_value("work", i, o, &id), Errc::ok);
      parent_accepted.push_back(id);
    }
  }

  template <class Fn>
  pid_t spawn(Fn&& fn) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      fn();
      ::_exit(0);
    }
    return pid;
  }

  // Waits for `pid`; true when it was killed by SIGKILL (i.e. reached its point).
  static bool killed(pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }

  // Runs `workload` in a child armed to die at the nth pass through `point`, checks that
  // it died there, then recovers and checks the invariants.
  template <class Workload>
  void kill_at_and_verify(Point point, std::uint64_t nth, Workload&& workload) {
    const pid_t pid = spawn([&] {
      fault::arm(point, nth);
      workload();
    });
    ASSERT_TRUE(killed(pid)) << "child never reached " << fault::name(point) << " #" << nth;
    recover_and_verify();
  }

  // Reap, promote everything delayed, drain; then check the invariants.
  void recover_and_verify() {
    auto c = Client::attach(seg, Role::consumer).value();
    const ReapReport rep = c.reap_dead();
    EXPECT_GE(rep.participants, 1u) << "the dead child was not reaped";
    EXPECT_EQ(c.reap_dead().participants, 0u) << "reaping is not idempotent";
    std::set<TaskId> done;
    for (int round = 0; round < 3; ++round) {
      c.promote_due(monotonic_ns() + 3'600'000'000'000);
      Taken t;
      while (c.try_take(q, t)) {
        done.insert(t.id);
        ASSERT_EQ(c.complete(t), Errc::ok);
      }
    }
    for (std::uint32_t i = 0; i < std::min<std::uint32_t>(log->n_completing.load(), kLogMax); ++i)
      done.insert(log->completing[i].load());
    std::vector<TaskId> accepted = parent_accepted;
    for (std::uint32_t i = 0; i < std::min<std::uint32_t>(log->n_accepted.load(), kLogMax); ++i)
      accepted.push_back(log->accepted[i].load());
    std::size_t lost = 0;
    for (TaskId id : accepted) lost += done.count(id) == 0;
    EXPECT_EQ(lost, 0u) << "accepted tasks lost (of " << accepted.size() << ")";

    // Nothing is left reserved, queued, running or delayed, and nothing is owned by a
    // participant that no longer exists.
    const auto& core = detail::core_of(seg);
    for (std::uint32_t i = 0; i < core.capacity; ++i) {
      const auto s = core.ctrl[i].state.load();
      const auto st = detail::state_of(s);
      EXPECT_TRUE(st == TaskState::free || st == TaskState::virgin)
          << "record " << i << " left in state " << static_cast<int>(st) << " owner " << detail::owner_of(s);
    }
    // Every level of every queue still accepts and yields.
    for (std::uint8_t level = 0; level < seg.layout().levels; ++level) {
      TaskOptions o;
      o.queue = q;
      o.priority = level;
      TaskId id;
      ASSERT_EQ(c.enqueue_text("after", "x", o, &id), Errc::ok);
      Taken t;
      ASSERT_TRUE(c.try_take(q, t));
      EXPECT_EQ(t.id, id);
      ASSERT_EQ(c.complete(t), Errc::ok);
    }
  }
};

// A producer and consumer in one child: enqueues (some delayed), takes, completes.
void mixed_workload(World& w, int rounds) {
  auto c = Client::attach(w.seg, Role::producer | Role::consumer).value();
  for (int i = 0; i < rounds; ++i) {
    TaskOptions o;
    o.queue = w.q;
    o.priority = static_cast<std::uint8_t>(i % w.seg.layout().levels);
    if (i % 5 == 2) o.not_before_ns = monotonic_ns() + 50'000'000;  // promoted below, 1 s "early"
    TaskId id;
    if (c.enqueue_value("work", 1000 + i, o, &id) == Errc::ok) w.log->accept(id);
    if (i % 5 == 3) c.promote_due(monotonic_ns() + 1'000'000'000);
    Taken t;
    if (i % 3 != 0 && c.try_take(w.q, t)) {
      w.log->completing_now(t.id);
      (void)c.complete(t);
    }
  }
  c.detach();
}

// The same with batches: runs of tasks published as one ring entry, taken a stretch at
// a time by try_take_batch and one at a time by try_take.
void batch_workload(World& w, int rounds) {
  auto c = Client::attach(w.seg, Role::producer | Role::consumer).value();
  std::vector<int> values(12);
  std::vector<TaskSpec> specs(values.size());
  std::vector<TaskId> ids(values.size());
  std::array<Taken, 5> got;
  for (int i = 0; i < rounds; ++i) {
    for (std::size_t k = 0; k < specs.size(); ++k) {
      values[k] = 5000 + i * 100 + static_cast<int>(k);
      specs[k].type = "work";
      specs[k].payload = as_payload(values[k]);
      specs[k].options.queue = w.q;
      // Two runs of 6 per batch, at a level that changes every round.
      specs[k].options.priority = static_cast<std::uint8_t>((i + (k < 6 ? 0 : 1)) % w.seg.layout().levels);
    }
    const std::size_t n = c.enqueue_batch(specs, ids);
    for (std::size_t k = 0; k < n; ++k) w.log->accept(ids[k]);
    const std::size_t m = c.try_take_batch(w.q, i % 2 == 0 ? std::span<Taken>(got) : std::span<Taken>(got).first(3));
    for (std::size_t k = 0; k < m; ++k) {
      w.log->completing_now(got[k].id);
      (void)c.complete(got[k]);
    }
    Taken t;
    if (c.try_take(w.q, t)) {
      w.log->completing_now(t.id);
      (void)c.complete(t);
    }
  }
  c.detach();
}

// A consumer with take-ahead on: its takes claim up to four tasks and hand them out one
// by one, so a kill finds tasks claimed and not yet handed out.
void ahead_workload(World& w, int rounds) {
  auto c = Client::attach(w.seg, Role::producer | Role::consumer).value();
  if (c.set_take_ahead(w.q, 4) != Errc::ok) ::_exit(5);
  for (int i = 0; i < rounds; ++i) {
    TaskOptions o;
    o.queue = w.q;
    o.priority = static_cast<std::uint8_t>(i % w.seg.layout().levels);
    TaskId id;
    if (c.enqueue_value("work", 3000 + i, o, &id) == Errc::ok) w.log->accept(id);
    Taken t;
    if (i % 2 == 0 && c.try_take(w.q, t)) {
      w.log->completing_now(t.id);
      (void)c.complete(t);
    }
  }
  c.detach();
}

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

class KillAtPoint : public ::testing::TestWithParam<PointCase> {};

}  // namespace

TEST_P(KillAtPoint, NothingLostNothingWedged) {
  ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS";
  World w(crash_layout());
  w.preload(40);
  w.kill_at_and_verify(GetParam().point, GetParam().nth, [&] { mixed_workload(w, 120); });
}

INSTANTIATE_TEST_SUITE_P(
    RingAndRecordPoints, KillAtPoint,
    ::testing::Values(PointCase{Point::participant_register_claimed, 1}, PointCase{Point::task_alloc_reserved, 1},
                      PointCase{Point::task_alloc_reserved, 7}, PointCase{Point::enqueue_before_queued, 3},
                      PointCase{Point::ring_push_before_publish, 1}, PointCase{Point::ring_push_before_publish, 9},
                      PointCase{Point::ring_push_after_publish, 4}, PointCase{Point::ring_pop_before_clear, 1},
                      PointCase{Point::ring_pop_before_clear, 6}, PointCase{Point::take_after_claim, 2},
                      PointCase{Point::complete_before_free, 5}, PointCase{Point::delayed_after_state, 2},
                      PointCase{Point::promote_after_claim, 1}, PointCase{Point::participant_deregister, 1}),
    case_name);

class KillBatchesAtPoint : public ::testing::TestWithParam<PointCase> {};

TEST_P(KillBatchesAtPoint, NothingLostNothingWedged) {
  ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS";
  // No preloaded single tasks: the child's first take meets a run, so a consumer killed
  // part-way through one leaves it in the ring for the recovery below.
  World w(crash_layout());
  w.kill_at_and_verify(GetParam().point, GetParam().nth, [&] { batch_workload(w, 40); });
}

// Points inside runs: a producer killed while reserving or publishing the records of a
// run, a consumer killed after claiming part of a run and before moving the entry on.
INSTANTIATE_TEST_SUITE_P(
    RunPoints, KillBatchesAtPoint,
    ::testing::Values(PointCase{Point::task_alloc_reserved, 4}, PointCase{Point::enqueue_before_queued, 3},
                      PointCase{Point::enqueue_run_mid_publish, 1}, PointCase{Point::enqueue_run_mid_publish, 9},
                      PointCase{Point::ring_push_before_publish, 2}, PointCase{Point::ring_push_after_publish, 5},
                      PointCase{Point::ring_pop_before_clear, 1}, PointCase{Point::ring_pop_before_clear, 4},
                      PointCase{Point::take_after_claim, 3}, PointCase{Point::take_after_claim, 12},
                      PointCase{Point::complete_before_free, 7}),
    case_name);

class KillTakeAheadAtPoint : public ::testing::TestWithParam<PointCase> {};

TEST_P(KillTakeAheadAtPoint, NothingLostNothingWedged) {
  ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS";
  World w(crash_layout());
  w.preload(40);
  w.kill_at_and_verify(GetParam().point, GetParam().nth, [&] { ahead_workload(w, 120); });
}

// A consumer killed while claiming ahead (some records of the walk claimed, the slot not
// moved on), while it holds claimed records, and while it completes one.
INSTANTIATE_TEST_SUITE_P(TakeAheadPoints, KillTakeAheadAtPoint,
                         ::testing::Values(PointCase{Point::take_ahead_held, 1}, PointCase{Point::take_ahead_held, 3},
                                           PointCase{Point::take_ahead_held, 10},
                                           PointCase{Point::ring_pop_before_clear, 2},
                                           PointCase{Point::complete_before_free, 4}),
                         case_name);

// A consumer dies holding tasks it claimed ahead: the reaper requeues them, and their
// next run is their first attempt.
TEST(KillTakeAhead, HeldTasksAreRequeuedUncharged) {
  World w(crash_layout(0, 1));  // one level: the first take claims eight
  w.preload(12);
  const pid_t pid = w.spawn([&] {
    auto c = Client::attach(w.seg, Role::consumer).value();
    if (c.set_take_ahead(w.q, 8) != Errc::ok) ::_exit(5);
    Taken t;
    if (!c.try_take(w.q, t)) ::_exit(6);
    w.log->completing_now(t.id);
    if (c.complete(t) != Errc::ok) ::_exit(7);
    w.log->victim_ready.store(1);
    ::raise(SIGKILL);  // holding seven claimed tasks
  });
  ASSERT_TRUE(World::killed(pid));
  ASSERT_EQ(w.log->victim_ready.load(), 1u);
  {
    auto c = Client::attach(w.seg, Role::consumer).value();
    const ReapReport rep = c.reap_dead();
    EXPECT_EQ(rep.requeued, 7u) << "the seven tasks held are requeued";
    EXPECT_EQ(rep.dead_lettered, 0u);
    Taken t;
    std::size_t taken = 0;
    while (c.try_take(w.q, t)) {
      ++taken;
      EXPECT_EQ(t.attempt, 1) << "a held task was never run: not charged";
      ASSERT_EQ(c.complete(t), Errc::ok);
    }
    EXPECT_EQ(taken, 11u);
  }
  for (std::uint32_t i = 0; i < detail::core_of(w.seg).capacity; ++i) {
    const auto st = detail::state_of(detail::core_of(w.seg).ctrl[i].state.load());
    EXPECT_TRUE(st == TaskState::free || st == TaskState::virgin) << "record " << i;
  }
}

// A leftover entry (consumer killed between its claim and the slot clear) sits at the
// tail when the ring wraps; a producer killed while clearing it must not wedge either.
TEST(KillAtLeftover, ProducerKilledWhileClearingALeftover) {
  World w(crash_layout(4, 1));
  w.preload(1);
  const pid_t a = w.spawn([&] {
    fault::arm(Point::ring_pop_before_clear, 1);
    auto c = Client::attach(w.seg, Role::consumer).value();
    Taken t;
    c.try_take(w.q, t);
  });
  ASSERT_TRUE(World::killed(a));
  const pid_t b = w.spawn([&] {
    fault::arm(Point::ring_clear_leftover, 1);
    auto c = Client::attach(w.seg).value();
    TaskOptions o;
    o.queue = w.q;
    for (int i = 0; i < 4; ++i) {
      TaskId id;
      if (c.enqueue_value("work", i, o, &id) == Errc::ok) w.log->accept(id);
    }
  });
  ASSERT_TRUE(World::killed(b)) << "the producer never met the leftover";
  w.recover_and_verify();
}

// A consumer dies holding tasks; a reaper dies while reaping it; a third process takes
// the reaping over and recovers everything.
class KillReaper : public ::testing::TestWithParam<PointCase> {};

TEST_P(KillReaper, ReapingIsTakenOver) {
  World w(crash_layout());
  w.preload(30);
  const pid_t victim = w.spawn([&] {
    auto c = Client::attach(w.seg, Role::consumer).value();
    Taken t[3];
    for (auto& x : t) ASSERT_TRUE(c.try_take(w.q, x));
    w.log->victim_ready.store(1);
    for (;;) ::pause();
  });
  while (w.log->victim_ready.load() == 0) ::usleep(100);
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(World::killed(victim));
  const auto [point, nth] = GetParam();
  const pid_t reaper = w.spawn([&] {
    fault::arm(point, nth);
    auto c = Client::attach(w.seg, Role::consumer).value();
    c.reap_dead();
  });
  ASSERT_TRUE(World::killed(reaper)) << "reaper never reached " << fault::name(point);
  w.recover_and_verify();
}

INSTANTIATE_TEST_SUITE_P(ReapPoints, KillReaper,
                         ::testing::Values(PointCase{Point::reap_after_claim, 1}, PointCase{Point::reap_mid_records, 1},
                                           PointCase{Point::reap_mid_records, 2}),
                         case_name);

// The victim's taken tasks come back with their attempt counted.
TEST(Reaping, TasksOfAKilledConsumerRunAgainWithAttemptCounted) {
  World w(crash_layout());
  w.preload(3);
  const pid_t victim = w.spawn([&] {
    auto c = Client::attach(w.seg, Role::consumer).value();
    Taken t[3];
    for (auto& x : t) ASSERT_TRUE(c.try_take(w.q, x));
    w.log->victim_ready.store(1);
    for (;;) ::pause();
  });
  while (w.log->victim_ready.load() == 0) ::usleep(100);
  auto c = Client::attach(w.seg, Role::consumer).value();
  Taken t;
  EXPECT_FALSE(c.try_take(w.q, t));
  EXPECT_EQ(c.reap_dead().participants, 0u) << "a live process must not be reaped";
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(World::killed(victim));
  const ReapReport rep = c.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(rep.requeued, 3u);
  int n = 0;
  while (c.try_take(w.q, t)) {
    EXPECT_EQ(t.attempt, 2) << "the killed run counts as an attempt";
    ASSERT_EQ(c.complete(t), Errc::ok);
    ++n;
  }
  EXPECT_EQ(n, 3);
}

TEST(Reaping, StoppedProcessIsNotReaped) {
  World w(crash_layout());
  w.preload(2);
  const pid_t victim = w.spawn([&] {
    auto c = Client::attach(w.seg, Role::consumer).value();
    Taken t;
    ASSERT_TRUE(c.try_take(w.q, t));
    w.log->victim_ready.store(1);
    for (;;) ::pause();
  });
  while (w.log->victim_ready.load() == 0) ::usleep(100);
  ::kill(victim, SIGSTOP);
  auto c = Client::attach(w.seg, Role::consumer).value();
  EXPECT_EQ(c.reap_dead().participants, 0u);
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(World::killed(victim));
  EXPECT_EQ(c.reap_dead().participants, 1u);
}

// A producer that is reaped while alive (here: its start time made to look wrong) and
// then goes on with a batch must not touch the records recovery gave to others: its
// late CASes fail (fenced), and it gives back only records still its own.
TEST(Fencing, AProducerReapedMidBatchLeavesOthersRecordsAlone) {
  ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS";
  World w(crash_layout());
  const pid_t pid = w.spawn([&] {
    auto c = Client::attach(w.seg).value();
    w.log->victim_ready.store(c.token());
    std::vector<TaskSpec> specs(10, TaskSpec{"late", {}, TaskOptions{}});
    for (auto& s : specs) s.options.queue = w.q;
    std::vector<TaskId> ids(specs.size());
    fault::arm(Point::enqueue_before_queued, 1, fault::Action::stop);  // records reserved and filled
    Errc err = Errc::ok;
    const std::size_t n = c.enqueue_batch(specs, ids, &err);
    w.log->n_accepted.store(static_cast<std::uint32_t>(n));
    w.log->n_completing.store(err == Errc::fenced ? 1 : 0);
    ::_exit(0);
  });
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << "the child did not stop at its point";
  // Recovery takes the stopped producer's records back...
  auto c = Client::attach(w.seg, Role::producer | Role::consumer).value();
  auto& slot = detail::core_of(w.seg)
                   .participants[detail::token_index(static_cast<std::uint16_t>(w.log->victim_ready.load())) - 1];
  slot.start_time.store(slot.start_time.load() + 1);
  const ReapReport rep = c.reap_dead();
  ASSERT_EQ(rep.freed, 10u);
  // ...and this process fills the whole table, those records included.
  std::set<TaskId> mine;
  for (;;) {
    TaskId id;
    TaskOptions o;
    o.queue = w.q;
    const Errc e = c.enqueue_text("mine", "x", o, &id);
    if (e == Errc::table_full) break;
    ASSERT_EQ(e, Errc::ok);
    mine.insert(id);
  }
  ASSERT_EQ(mine.size(), w.seg.layout().task_capacity);
  ::kill(pid, SIGCONT);
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(w.log->n_accepted.load(), 0u) << "a fenced producer reported tasks accepted";
  EXPECT_EQ(w.log->n_completing.load(), 1u) << "the late batch did not report Errc::fenced";
  // Every task of this process is still there, once.
  std::size_t taken = 0;
  Taken t;
  while (c.try_take(w.q, t)) {
    EXPECT_EQ(mine.count(t.id), 1u) << "a task that is not ours";
    ++taken;
    ASSERT_EQ(c.complete(t), Errc::ok);
  }
  EXPECT_EQ(taken, mine.size()) << "the fenced producer freed records that were not its own";
  for (std::uint32_t i = 0; i < detail::core_of(w.seg).capacity; ++i) {
    const auto st = detail::state_of(detail::core_of(w.seg).ctrl[i].state.load());
    EXPECT_TRUE(st == TaskState::free) << "record " << i << " left in state " << static_cast<int>(st);
  }
}
