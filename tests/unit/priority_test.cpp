// Re-prioritise: a waiting task moves to the tail of another level; exactly one of a move
// and a take wins.
#include <gtest/gtest.h>

#include <barrier>
#include <chrono>
#include <thread>
#include <vector>

#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;
using namespace std::chrono_literals;

namespace {

struct Priority : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(64, 4), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();

  TaskId enqueue(std::uint8_t level, TaskOptions o = {}) {
    o.queue = q;
    o.priority = level;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text("job", "x", o, &id), Errc::ok);
    return id;
  }
  std::vector<TaskId> drain() {
    std::vector<TaskId> ids;
    Taken t;
    while (cli.try_take(q, t)) {
      ids.push_back(t.id);
      EXPECT_EQ(cli.complete(t), Errc::ok);
    }
    return ids;
  }
};

TEST_F(Priority, AMovedTaskRunsAtItsNewLevelBehindThoseAlreadyThere) {
  const TaskId urgent = enqueue(0), middle = enqueue(1), low = enqueue(3), lower = enqueue(3);
  ASSERT_EQ(cli.set_priority(lower, 0), Errc::ok);
  EXPECT_EQ(cli.status(lower).value().priority, 0);
  EXPECT_EQ(drain(), (std::vector<TaskId>{urgent, lower, middle, low}));
  EXPECT_EQ(cli.set_priority(urgent, 1), Errc::unknown_task) << "finished and released";
}

TEST_F(Priority, ADelayedTaskKeepsItsTimeAndRunsAtItsNewLevel) {
  const TaskId later = enqueue(3, TaskOptions{}.after(1h));
  const TaskId waiting = enqueue(1);
  ASSERT_EQ(cli.set_priority(later, 0), Errc::ok);
  const TaskInfo s = cli.status(later).value();
  EXPECT_EQ(s.status, TaskStatus::delayed);
  EXPECT_EQ(s.priority, 0);
  EXPECT_EQ(drain(), (std::vector<TaskId>{waiting})) << "still not due";
  ASSERT_EQ(cli.promote_due(monotonic_ns() + 7'200'000'000'000), 1u);
  EXPECT_EQ(drain(), (std::vector<TaskId>{later}));
}

TEST_F(Priority, ARunningOrFinishedTaskDoesNotMoveAndNoSuchLevelIsRefused) {
  const TaskId id = enqueue(2);
  EXPECT_EQ(cli.set_priority(id, 4), Errc::invalid_argument);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(cli.set_priority(id, 0), Errc::not_waiting);
  ASSERT_EQ(cli.dead_letter(t, "no"), Errc::ok);
  EXPECT_EQ(cli.set_priority(id, 0), Errc::not_waiting);
  EXPECT_EQ(cli.set_priority(kNoTask, 0), Errc::unknown_task);
}

TEST_F(Priority, AGroupMovesTogether) {
  TaskOptions g;
  g.group_id = cli.create_group("g").value();
  const TaskId other = enqueue(1);
  const TaskId a = enqueue(3, g), b = enqueue(3, g);
  EXPECT_EQ(cli.set_group_priority(g.group_id, 0), 2u);
  EXPECT_EQ(drain(), (std::vector<TaskId>{a, b, other}));
}

// Exactly one of a take at the old level and a move wins a task: each round one task
// waits at level 3, a taker and a mover are let go at it together. A moved task waits
// at level 0 (the taker may still take it there, after the move).
TEST_F(Priority, AShiftMovesEveryWaitingTaskOfALevelAndNothingElse) {
  const QueueId other = seg.create_queue("other").value();
  const TaskId a = enqueue(3), b = enqueue(3), mid = enqueue(1), c = enqueue(3);
  TaskOptions o;
  o.queue = other;
  o.priority = 3;
  TaskId elsewhere = kNoTask;
  ASSERT_EQ(cli.enqueue_text("job", "x", o, &elsewhere), Errc::ok);
  EXPECT_EQ(cli.shift_level(q, 3, 0), 3u);
  for (TaskId id : {a, b, c}) EXPECT_EQ(cli.status(id).value().priority, 0);
  EXPECT_EQ(cli.status(mid).value().priority, 1);
  EXPECT_EQ(cli.status(elsewhere).value().priority, 3) << "another queue's task stays";
  EXPECT_EQ(cli.shift_level(q, 3, 0), 0u) << "nothing left at level 3";
  EXPECT_EQ(cli.shift_level(q, 0, 0), 0u);
  EXPECT_EQ(cli.shift_level(q, 0, 9), 0u) << "no such level";
  EXPECT_EQ(drain(), (std::vector<TaskId>{a, b, c, mid}));
}

TEST_F(Priority, PromotionMovesATaskUpOneLevelPerBoundItWaits) {
  cli.set_aging(q, 40ms, AgingMode::promote);
  const TaskId low = enqueue(3);
  const TaskId fresh = enqueue(2);
  ASSERT_TRUE(cli.janitor_tick(monotonic_ns()));
  EXPECT_EQ(cli.status(low).value().priority, 3) << "not waited long enough";
  std::this_thread::sleep_for(60ms);
  const TaskId newer = enqueue(3);
  ASSERT_TRUE(cli.janitor_tick(monotonic_ns()));
  EXPECT_EQ(cli.status(low).value().priority, 2);
  EXPECT_EQ(cli.status(fresh).value().priority, 1) << "one level per tick, however long it waited";
  EXPECT_EQ(cli.status(newer).value().priority, 3);
  ASSERT_TRUE(cli.janitor_tick(monotonic_ns()));
  EXPECT_EQ(cli.status(low).value().priority, 2) << "its wait counts again from its move";
  std::this_thread::sleep_for(60ms);
  ASSERT_TRUE(cli.janitor_tick(monotonic_ns()));
  EXPECT_EQ(cli.status(low).value().priority, 1);
  EXPECT_EQ(cli.status(fresh).value().priority, 0);
  EXPECT_EQ(cli.status(newer).value().priority, 2);
  // Off: nothing moves any more.
  cli.set_aging(q, 0ms, AgingMode::promote);
  std::this_thread::sleep_for(60ms);
  ASSERT_TRUE(cli.janitor_tick(monotonic_ns()));
  EXPECT_EQ(cli.status(low).value().priority, 1);
  EXPECT_EQ(drain(), (std::vector<TaskId>{fresh, low, newer}));
}

TEST_F(Priority, UnderPromotionATakeKeepsStrictPriority) {
  // Serve-first aging would take the aged level-3 task before the level-0 one.
  cli.set_aging(q, 1ms, AgingMode::promote);
  const TaskId old = enqueue(3);
  std::this_thread::sleep_for(20ms);
  const TaskId urgent = enqueue(0);
  EXPECT_EQ(drain(), (std::vector<TaskId>{urgent, old}));
  cli.set_aging(q, 1ms, AgingMode::serve_first);
  const TaskId old2 = enqueue(3);
  std::this_thread::sleep_for(20ms);
  const TaskId urgent2 = enqueue(0);
  EXPECT_EQ(drain(), (std::vector<TaskId>{old2, urgent2})) << "serve-first serves the aged level first";
}

TEST(PriorityRace, ATakeAndAMoveNeverBothWin) {
  Segment seg = Segment::create_private(small_test_layout(64, 4), CreateOptions{0600, {"general"}}).value();
  const QueueId q = seg.find_queue("general").value();
  Client producer = Client::attach(seg, Role::producer | Role::consumer).value();
  constexpr int kRounds = 400;
  constexpr int kNone = -1;
  std::vector<TaskId> ids(kRounds);
  std::vector<int> took_at(kRounds, kNone);
  std::vector<char> moved(kRounds, 0);
  std::barrier<> start(3), end(3);
  std::thread taker([&] {
    Client c = Client::attach(seg).value();
    Taken t;
    for (int i = 0; i < kRounds; ++i) {
      start.arrive_and_wait();
      if (c.try_take(q, t)) {
        took_at[static_cast<std::size_t>(i)] = t.level;
        EXPECT_EQ(c.complete(t), Errc::ok);
      }
      end.arrive_and_wait();
    }
  });
  std::thread mover([&] {
    Client c = Client::attach(seg).value();
    for (int i = 0; i < kRounds; ++i) {
      start.arrive_and_wait();
      moved[static_cast<std::size_t>(i)] = c.set_priority(ids[static_cast<std::size_t>(i)], 0) == Errc::ok;
      end.arrive_and_wait();
    }
  });
  TaskOptions o;
  o.queue = q;
  o.priority = 3;
  int takes = 0, moves = 0;
  for (int i = 0; i < kRounds; ++i) {
    const auto k = static_cast<std::size_t>(i);
    ASSERT_EQ(producer.enqueue_text("job", "", o, &ids[k]), Errc::ok);
    start.arrive_and_wait();
    end.arrive_and_wait();
    if (!moved[k]) {
      EXPECT_EQ(took_at[k], 3) << "round " << i << ": neither moved nor taken at its old level";
      ++takes;
      continue;
    }
    ++moves;
    EXPECT_NE(took_at[k], 3) << "round " << i << ": moved and taken at its old level";
    if (took_at[k] == kNone) {
      Taken t;
      ASSERT_TRUE(producer.try_take(q, t)) << "round " << i << ": a moved task was lost";
      EXPECT_EQ(t.id, ids[k]);
      EXPECT_EQ(t.level, 0);
      EXPECT_EQ(producer.complete(t), Errc::ok);
    }
  }
  taker.join();
  mover.join();
  EXPECT_EQ(inspect(seg).records.outstanding(), 0u);
  EXPECT_GT(takes, 0) << "the race never went the take's way: the test checked little";
  EXPECT_GT(moves, 0) << "the race never went the move's way: the test checked little";
}

}  // namespace
