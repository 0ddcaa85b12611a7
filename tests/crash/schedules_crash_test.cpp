// Schedules across kills and races: a firer killed at each step of F1..F4 (filled and
// noted, claimed, published) leaves its due time to be fired once -- by its reaper's
// advance when the occurrence was published, by the next pass when it was not -- and
// leaks no record; firers killed at random steps over many rounds, firers racing from
// several processes, and a janitor killed while consumers' housekeepers fire, never
// lose or repeat a due time. Every test ends with the exactly-once equation of an
// interval schedule: tasks drained == fired == due times in [first due, next due), and
// nothing missed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/fault.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using fault::Point;
using shmsched::test::dies_at;
using shmsched::test::scaled;

namespace {

using namespace std::chrono_literals;

Layout schedules_layout() {
  Layout l;
  l.task_capacity = 1024;  // the race tests leave every occurrence queued until the end
  l.levels = 2;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 8;
  l.max_semaphores = 0;
  l.max_groups = 0;
  return l;
}

std::int64_t now_ms() {
  return unix_ns() / 1'000'000;
}

struct Drained {
  TaskId id = kNoTask;
  std::string payload;
};

struct ScheduleFixture : ::testing::Test {
  Segment seg = Segment::create_private(schedules_layout(), CreateOptions{0600, {"sched", "work"}}).value();
  QueueId q = seg.find_queue("sched").value();
  Client parent = Client::attach(seg, Role::producer | Role::consumer).value();

  void SetUp() override { ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS"; }

  ScheduleSpec spec(std::string id, std::string expr, std::string payload = "tick") const {
    ScheduleSpec s;
    s.id = std::move(id);
    s.expression = std::move(expr);
    s.type = "sched-job";
    s.payload = std::move(payload);
    s.queue = QueueRef("sched");
    return s;
  }
  ::testing::AssertionResult added(const ScheduleSpec& s) {
    auto r = parent.add_schedule(s);
    if (r.ok()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "add_schedule " << s.id << " (" << s.expression
                                         << "): " << r.error().message();
  }
  ScheduleInfo info(std::string_view id) const {
    auto r = parent.schedule(id);
    EXPECT_TRUE(r.ok()) << "schedule " << id << ": " << shmsched::test::why(r);
    return r.ok() ? *r : ScheduleInfo{};
  }
  // Takes and completes every queued task of "sched".
  std::vector<Drained> drain() {
    std::vector<Drained> out;
    Taken t;
    while (parent.try_take(q, t)) {
      out.push_back(Drained{t.id, std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size())});
      EXPECT_EQ(parent.complete(t), Errc::ok) << "task " << t.id;
    }
    return out;
  }
  static std::string describe(const ScheduleInfo& i) {
    std::ostringstream os;
    os << "schedule " << i.spec.id << " (" << i.spec.expression << "): next_due_ms " << i.next_due_ms << ", fired "
       << i.fired << ", missed " << i.missed << ", stalls " << i.stalls << ", firing " << i.firing << ", last_due_ms "
       << i.last_due_ms;
    return os.str();
  }
  // The exactly-once equation of an interval schedule whose first due time was
  // `first_due`: every due time in [first_due, next_due_ms) enqueued one task, and no
  // other due time did.
  void expect_exactly_once(const ScheduleInfo& i, std::int64_t first_due, std::int64_t period_ms, std::uint64_t drained,
                           std::string_view where) const {
    const std::int64_t span = i.next_due_ms - first_due;
    EXPECT_EQ(span % period_ms, 0) << where << ": next due time off the grid of " << first_due << " + k*" << period_ms
                                   << "; " << describe(i);
    const auto due_times = static_cast<std::uint64_t>(std::max<std::int64_t>(0, span / period_ms));
    EXPECT_EQ(drained, due_times) << where << ": " << drained << " tasks drained for the " << due_times
                                  << " due times from " << first_due << " to " << i.next_due_ms << " (exclusive); "
                                  << describe(i);
    EXPECT_EQ(i.fired, due_times) << where << ": fired counts " << i.fired << " occurrences for " << due_times
                                  << " due times from " << first_due << " to " << i.next_due_ms << "; " << describe(i);
    EXPECT_EQ(i.missed, 0u) << where << ": " << describe(i);
    EXPECT_FALSE(i.firing) << where << ": a due time is still claimed; " << describe(i);
  }
  // Nothing left behind in the table: no reserved record (an occurrence filled by a
  // dead firer and never freed), nothing outstanding once the queue was drained.
  void expect_no_record_left(std::string_view where) const {
    const Snapshot s = inspect(seg);
    EXPECT_EQ(s.records[TaskState::reserved], 0u) << where << ": a reserved record leaked";
    EXPECT_EQ(s.records.outstanding(), 0u) << where << ": " << s.records[TaskState::queued] << " queued, "
                                           << s.records[TaskState::running] << " running records left after the drain";
  }
};

struct ScheduleCrash : ScheduleFixture {
  // A firer killed at `point` while firing the first due time of "@every 100ms".
  void killed_firer_fires_the_due_time_once(Point point) {
    constexpr std::int64_t kPeriod = 100;
    const bool claimed = point != Point::schedule_noted;
    const bool published = point == Point::schedule_published;
    const std::string where(fault::name(point));
    ASSERT_TRUE(added(spec("s", "@every 100ms", "occ")));
    const std::int64_t due = info("s").next_due_ms;
    ASSERT_GT(due, 0);

    ASSERT_TRUE(dies_at(point,
                        [&] {
                          auto c = Client::attach(seg, Role::producer);
                          if (!c) ::_exit(2);
                          (void)c->fire_schedules(due);
                        }))
        << "the firer of due time " << due << " did not die at " << where;

    const ScheduleInfo mid = info("s");
    EXPECT_EQ(mid.firing, claimed) << where << ": " << describe(mid);
    EXPECT_EQ(mid.next_due_ms, due) << where << ": the dead firer advanced due time " << due;
    EXPECT_EQ(mid.fired, 0u) << where << ": counted before the advance";
    {
      const Snapshot s = inspect(seg);
      EXPECT_EQ(s.records[TaskState::reserved], published ? 0u : 1u) << where << ": the dead firer's occurrence";
      EXPECT_EQ(s.records[TaskState::queued], published ? 1u : 0u) << where << ": the dead firer's occurrence";
    }

    std::size_t by_parent = 0;
    if (claimed) {
      // The dead claimer holds the due time until it is reaped: nobody fires it meanwhile.
      EXPECT_EQ(parent.fire_schedules(due), 0u) << where << ": due time " << due << " fired while claimed";
      EXPECT_EQ(parent.fire_schedules(due + kPeriod - 1), 0u)
          << where << ": due time " << due << " fired while claimed";
      EXPECT_TRUE(info("s").firing) << where;
    } else {
      // Noted but not claimed: it holds nothing, the due time fires now.
      by_parent += parent.fire_schedules(due);
      EXPECT_EQ(by_parent, 1u) << where << ": a firer that died before its claim blocked due time " << due;
    }

    const ReapReport rep = parent.reap_dead();
    EXPECT_GE(rep.participants, 1u) << where;
    EXPECT_EQ(rep.freed, published ? 0u : 1u) << where << ": the dead firer's unpublished occurrence";
    EXPECT_EQ(rep.requeued, 0u) << where;
    EXPECT_EQ(rep.republished, 0u) << where;
    const ScheduleInfo reaped = info("s");
    EXPECT_FALSE(reaped.firing) << where << ": " << describe(reaped);
    if (published) {
      EXPECT_EQ(reaped.fired, 1u) << where << ": the reaper counts the published occurrence; " << describe(reaped);
      EXPECT_EQ(reaped.next_due_ms, due + kPeriod) << where << ": the reaper advances; " << describe(reaped);
      EXPECT_EQ(reaped.last_due_ms, due) << where;
    } else if (claimed) {
      EXPECT_EQ(reaped.fired, 0u) << where << ": " << describe(reaped);
      EXPECT_EQ(reaped.next_due_ms, due) << where << ": due time " << due << " given back; " << describe(reaped);
    }

    by_parent += parent.fire_schedules(due);
    by_parent += parent.fire_schedules(due + kPeriod - 1);
    EXPECT_EQ(by_parent, published ? 0u : 1u) << where << ": tasks the parent enqueued for due time " << due;

    const ScheduleInfo fin = info("s");
    EXPECT_EQ(fin.fired, 1u) << where << ": " << describe(fin);
    EXPECT_EQ(fin.next_due_ms, due + kPeriod) << where << ": " << describe(fin);
    EXPECT_EQ(fin.last_due_ms, due) << where << ": " << describe(fin);
    const auto tasks = drain();
    ASSERT_EQ(tasks.size(), 1u) << where << ": tasks enqueued for due time " << due;
    EXPECT_EQ(tasks[0].payload, "occ") << where;
    EXPECT_EQ(tasks[0].id, fin.last_task) << where << ": the drained task is the occurrence the schedule names";
    expect_exactly_once(fin, due, kPeriod, tasks.size(), where);
    expect_no_record_left(where);
  }
};

struct ScheduleRace : ScheduleFixture {};

TEST_F(ScheduleCrash, AFirerKilledBeforeItsClaimHoldsNothing) {
  killed_firer_fires_the_due_time_once(Point::schedule_noted);
}

TEST_F(ScheduleCrash, AFirerKilledAfterItsClaimHasItsDueTimeGivenBackAndFiredAgain) {
  killed_firer_fires_the_due_time_once(Point::schedule_claimed);
}

TEST_F(ScheduleCrash, AFirerKilledAfterPublishingHasItsDueTimeAdvancedByItsReaper) {
  killed_firer_fires_the_due_time_once(Point::schedule_published);
}

TEST_F(ScheduleCrash, KilledFirersNeverLoseOrRepeatADueTime) {
  constexpr std::int64_t kPeriod = 50;
  const std::uint64_t seed = shmsched::test::test_seed();
  std::mt19937_64 rng(seed);
  ASSERT_TRUE(added(spec("s", "@every 50ms", "occ")));
  const std::int64_t first = info("s").next_due_ms;
  const std::uint64_t rounds = scaled(40, 6);
  // Each block of three rounds kills at each point once, in a random order.
  std::array<Point, 3> order{Point::schedule_noted, Point::schedule_claimed, Point::schedule_published};
  std::array<std::uint64_t, 3> kills{};
  std::uint64_t drained = 0;
  for (std::uint64_t r = 0; r < rounds; ++r) {
    if (r % 3 == 0) std::shuffle(order.begin(), order.end(), rng);
    const Point point = order[r % 3];
    const auto nth = static_cast<std::uint64_t>(1 + rng() % 3);
    std::ostringstream where_os;
    where_os << "seed " << seed << ", round " << r << ", killed at " << fault::name(point) << " pass " << nth;
    const std::string where = where_os.str();

    const pid_t pid = shmsched::test::spawn([&] {
      fault::arm(point, nth);
      auto c = Client::attach(seg, Role::producer);
      if (!c) return 2;
      const auto end = std::chrono::steady_clock::now() + 5s;
      while (std::chrono::steady_clock::now() < end) {
        (void)c->fire_schedules(now_ms());
        std::this_thread::sleep_for(1ms);
      }
      return 3;  // never died: the test fails
    });
    ASSERT_GT(pid, 0);
    const auto st = shmsched::test::wait_child(pid, 60s);
    ASSERT_TRUE(st.signaled && st.signal == SIGKILL)
        << where << ": the firer did not die there (" << shmsched::test::describe(st) << ")";
    ++kills[static_cast<std::size_t>(point) - static_cast<std::size_t>(Point::schedule_noted)];

    const ReapReport rep = parent.reap_dead();
    ASSERT_GE(rep.participants, 1u) << where;
    if (rng() % 2 == 0) (void)parent.fire_schedules(now_ms());
    drained += drain().size();
    // The equation holds after every round, not only at the end: the round that breaks
    // it names the point.
    const ScheduleInfo i = info("s");
    expect_exactly_once(i, first, kPeriod, drained, where);
    if (::testing::Test::HasFailure()) break;
  }
  const std::int64_t now = now_ms();
  (void)parent.fire_schedules(now);
  drained += drain().size();
  const ScheduleInfo fin = info("s");
  EXPECT_GT(fin.next_due_ms, now) << "a due time before " << now << " was left unfired; " << describe(fin);
  std::ostringstream where;
  where << "seed " << seed << ", end (kills at noted/claimed/published: " << kills[0] << "/" << kills[1] << "/"
        << kills[2] << ")";
  expect_exactly_once(fin, first, kPeriod, drained, where.str());
  expect_no_record_left(where.str());
}

TEST_F(ScheduleRace, RacingFirersFireEachDueTimeOnce) {
  ASSERT_TRUE(added(spec("every-10", "@every 10ms", "a")));
  ASSERT_TRUE(added(spec("every-13", "@every 13ms", "b")));
  const std::int64_t first_a = info("every-10").next_due_ms;
  const std::int64_t first_b = info("every-13").next_due_ms;
  constexpr int kFirers = 4;
  const auto run = std::chrono::milliseconds(scaled(1500, 300));
  shmsched::test::SharedArray<std::atomic<std::uint64_t>> enqueued(kFirers);
  shmsched::test::StartGate gate;
  ASSERT_TRUE(gate.valid());
  std::vector<pid_t> pids;
  for (int k = 0; k < kFirers; ++k) {
    const pid_t pid = shmsched::test::spawn([&, k] {
      auto c = Client::attach(seg, Role::producer);
      if (!c) return 2;
      gate.wait();
      const auto end = std::chrono::steady_clock::now() + run;
      std::uint64_t n = 0;
      while (std::chrono::steady_clock::now() < end) n += c->fire_schedules(now_ms());
      enqueued[static_cast<std::size_t>(k)].store(n);
      return 0;
    });
    ASSERT_GT(pid, 0);
    pids.push_back(pid);
  }
  gate.open();
  const auto statuses = shmsched::test::wait_children(pids, run + 60s);
  for (int k = 0; k < kFirers; ++k)
    ASSERT_TRUE(statuses[static_cast<std::size_t>(k)].ok())
        << "firer " << k << ": " << shmsched::test::describe(statuses[static_cast<std::size_t>(k)]);

  const std::int64_t now = now_ms();
  const std::size_t by_parent = parent.fire_schedules(now);
  const auto tasks = drain();
  std::uint64_t a = 0, b = 0;
  for (const auto& t : tasks) {
    if (t.payload == "a")
      ++a;
    else if (t.payload == "b")
      ++b;
    else
      ADD_FAILURE() << "task " << t.id << " with payload '" << t.payload << "'";
  }
  std::uint64_t by_firers = 0;
  for (int k = 0; k < kFirers; ++k) by_firers += enqueued[static_cast<std::size_t>(k)].load();
  EXPECT_EQ(by_firers + by_parent, tasks.size()) << "the firers say they enqueued " << by_firers << " and the parent "
                                                 << by_parent << ", the queue held " << tasks.size();
  const ScheduleInfo ia = info("every-10");
  const ScheduleInfo ib = info("every-13");
  EXPECT_GT(ia.next_due_ms, now) << "a due time before " << now << " was left unfired; " << describe(ia);
  EXPECT_GT(ib.next_due_ms, now) << "a due time before " << now << " was left unfired; " << describe(ib);
  EXPECT_EQ(ia.stalls + ib.stalls, 0u) << "the table or ring filled: " << describe(ia) << "; " << describe(ib);
  EXPECT_GE(by_firers, 10u) << "the racing firers enqueued too little to mean anything; " << describe(ia) << "; "
                            << describe(ib);
  expect_exactly_once(ia, first_a, 10, a, "schedule every-10 (payload a)");
  expect_exactly_once(ib, first_b, 13, b, "schedule every-13 (payload b)");
  expect_no_record_left("after the race");
}

TEST_F(ScheduleRace, JanitorHandOverKeepsFiringOnce) {
  constexpr std::int64_t kPeriod = 20;
  ASSERT_TRUE(added(spec("s", "@every 20ms", "occ")));
  const std::int64_t first = info("s").next_due_ms;
  shmsched::test::SharedArray<std::atomic<int>> stop(1);
  // A consumer whose home queue nobody feeds: only its housekeeper works, and fires the
  // schedule while it holds the janitor lease. It runs until told to stop (or 30 s).
  const auto consumer = [&] {
    ConsumerOptions o;
    o.home = {"work"};
    o.tick = 50ms;
    auto c = Consumer::create(seg, o);
    if (!c) return 2;
    (*c)->start();
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (stop[0].load() == 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
    (*c)->request_stop();
    (void)(*c)->join();
    return stop[0].load() != 0 ? 0 : 3;
  };
  const auto started = std::chrono::steady_clock::now();
  const pid_t c1 = shmsched::test::spawn(consumer);
  ASSERT_GT(c1, 0);
  const pid_t c2 = shmsched::test::spawn(consumer);
  ASSERT_GT(c2, 0);
  struct Reaper {  // no child outlives a failed ASSERT
    pid_t pids[2];
    ~Reaper() {
      for (pid_t p : pids)
        if (p > 0 && ::kill(p, SIGKILL) == 0) ::waitpid(p, nullptr, 0);
    }
  } reaper{{c1, c2}};
  // The pid of the lease holder, mapped from the lease's token to a participant.
  const auto janitor_pid = [&]() -> pid_t {
    const Snapshot s = inspect(seg);
    if (s.janitor_token == 0) return 0;
    for (const auto& p : s.participants)
      if (p.token == s.janitor_token) return p.pid;
    return 0;
  };

  ASSERT_TRUE(shmsched::test::eventually(
      [&] {
        const pid_t j = janitor_pid();
        return (j == c1 || j == c2) && info("s").fired >= 5;
      },
      10s))
      << "no consumer took the janitor lease and fired; janitor pid " << janitor_pid() << ", " << describe(info("s"));
  std::this_thread::sleep_until(started + 700ms);
  const pid_t victim = janitor_pid();
  ASSERT_TRUE(victim == c1 || victim == c2) << "janitor pid " << victim;
  const pid_t survivor = victim == c1 ? c2 : c1;
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const auto vst = shmsched::test::wait_child(victim, 10s);
  EXPECT_TRUE(vst.signaled && vst.signal == SIGKILL) << shmsched::test::describe(vst);
  reaper.pids[victim == c1 ? 0 : 1] = 0;
  const std::uint64_t fired_at_kill = info("s").fired;

  ASSERT_TRUE(shmsched::test::eventually([&] { return janitor_pid() == survivor; }, 10s))
      << "the surviving consumer " << survivor << " never took the lease over from " << victim << "; janitor pid "
      << janitor_pid();
  ASSERT_TRUE(shmsched::test::eventually([&] { return info("s").fired >= fired_at_kill + 10; }, 10s))
      << "firing stopped with the killed janitor: fired " << fired_at_kill << " at the kill; " << describe(info("s"));
  std::this_thread::sleep_for(300ms);  // the survivor fires on for a while

  stop[0].store(1);
  const auto sst = shmsched::test::wait_child(survivor, 30s);
  reaper.pids[survivor == c1 ? 0 : 1] = 0;
  EXPECT_TRUE(sst.ok()) << "the surviving consumer: " << shmsched::test::describe(sst);
  (void)parent.reap_dead();  // the victim, unless the survivor's janitor reaped it already
  EXPECT_EQ(inspect(seg).participants.size(), 1u) << "only the parent is left attached";

  const ScheduleInfo quiet = info("s");
  EXPECT_GT(quiet.fired, fired_at_kill + 10) << describe(quiet);
  const std::int64_t now = now_ms();
  (void)parent.fire_schedules(now);
  const auto tasks = drain();
  const ScheduleInfo fin = info("s");
  EXPECT_GT(fin.next_due_ms, now) << "a due time before " << now << " was left unfired; " << describe(fin);
  for (const auto& t : tasks) EXPECT_EQ(t.payload, "occ") << "task " << t.id;
  std::ostringstream where;
  where << "janitor " << victim << " killed at fired " << fired_at_kill << ", survivor " << survivor;
  expect_exactly_once(fin, first, kPeriod, tasks.size(), where.str());
  expect_no_record_left(where.str());
}

}  // namespace
