// Groups across kills: a participant killed at each step of a counted move (before the
// record moved, after it moved and before its count) leaves its group's counts exact
// once it is recovered; the last finisher killed before it finishes the group, and a
// releaser killed after claiming a waiting task, leave nothing waiting forever. Every
// test ends with verify_groups (counts against a recount of the table).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "shmsched/detail/fault.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using fault::Point;
using shmsched::test::dies_at;

namespace {

Layout groups_layout() {
  Layout l;
  l.task_capacity = 64;
  l.levels = 2;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 8;
  l.max_groups = 4;
  return l;
}

struct GroupsCrash : ::testing::Test {
  Segment seg = Segment::create_private(groups_layout(), CreateOptions{0600, {"work"}}).value();
  QueueId q = seg.find_queue("work").value();
  Client parent = Client::attach(seg, Role::producer | Role::consumer).value();
  GroupId g = parent.create_group("g").value();

  void SetUp() override { ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS"; }
  TaskOptions member() const {
    TaskOptions o;
    o.queue = q;
    o.group_id = g;
    return o;
  }
  TaskId add(Client& c) {
    TaskId id = kNoTask;
    EXPECT_EQ(c.enqueue_text("job", "x", member(), &id), Errc::ok);
    return id;
  }
  std::size_t drain() {
    std::size_t n = 0;
    Taken t;
    while (parent.try_take(q, t)) {
      EXPECT_EQ(parent.complete(t), Errc::ok);
      ++n;
    }
    return n;
  }
  GroupInfo info() { return parent.group_info(g).value(); }
  // A task that runs after the group (a chord's last step).
  TaskId then_task() {
    TaskOptions then;
    then.queue = q;
    then.after_group = g;
    TaskId id = kNoTask;
    EXPECT_EQ(parent.enqueue_text("then", "x", then, &id), Errc::ok);
    return id;
  }
  void expect_verified() {
    const auto v = parent.verify_groups();
    EXPECT_TRUE(v.ok()) << v.error().message();
  }
};

TEST_F(GroupsCrash, AnAdderKilledBeforeItsMemberIsAcceptedAddsNothing) {
  ASSERT_TRUE(dies_at(Point::group_step_noted, [&] {
    auto c = Client::attach(seg, Role::producer).value();
    add(c);
  }));
  EXPECT_GE(parent.reap_dead().participants, 1u);
  EXPECT_EQ(info().total, 0u);
  expect_verified();
  // Its count in the hint stays; the seal cannot finish the group by it, the janitor
  // finishes it by the exact counts.
  EXPECT_EQ(parent.seal_group(g), Errc::ok);
  parent.janitor_tick(monotonic_ns() + 2'000'000'000);
  EXPECT_EQ(info().state, GroupState::finished);
}

TEST_F(GroupsCrash, AnAdderKilledAfterItsMemberIsAcceptedIsCountedByItsRecoverer) {
  ASSERT_TRUE(dies_at(Point::group_step_moved, [&] {
    auto c = Client::attach(seg, Role::producer).value();
    add(c);
  }));
  const auto v = parent.verify_groups();
  EXPECT_FALSE(v.ok()) << "before recovery the count lags the table";
  // The member moves on before the recoverer looks (a worker takes it): the recoverer
  // still knows the move happened, by the record's version.
  Taken t;
  ASSERT_TRUE(parent.try_take(q, t));
  EXPECT_GE(parent.reap_dead().participants, 1u);
  EXPECT_EQ(info().total, 1u);
  expect_verified();
  EXPECT_EQ(parent.seal_group(g), Errc::ok);
  EXPECT_EQ(parent.complete(t), Errc::ok);
  EXPECT_EQ(info().state, GroupState::finished);
  EXPECT_EQ(info().done, 1u);
  expect_verified();
}

TEST_F(GroupsCrash, AWorkerKilledBeforeItsFinishMovesLeavesTheMemberToRunAgain) {
  add(parent);
  ASSERT_TRUE(dies_at(Point::group_step_noted, [&] {
    auto c = Client::attach(seg, Role::consumer).value();
    Taken t;
    if (!c.try_take(q, t)) ::_exit(3);
    (void)c.complete(t);
  }));
  EXPECT_EQ(parent.reap_dead().requeued, 1u);
  EXPECT_EQ(info().done, 0u);
  expect_verified();
  EXPECT_EQ(drain(), 1u);
  EXPECT_EQ(info().done, 1u) << "counted once, by the run that finished";
  expect_verified();
}

TEST_F(GroupsCrash, AWorkerKilledAfterItsFinishMovedIsCountedByItsRecoverer) {
  add(parent);
  add(parent);
  EXPECT_EQ(parent.seal_group(g), Errc::ok);
  ASSERT_TRUE(dies_at(Point::group_step_moved, [&] {
    auto c = Client::attach(seg, Role::consumer).value();
    Taken t;
    if (!c.try_take(q, t)) ::_exit(3);
    (void)c.complete(t);
  }));
  EXPECT_EQ(info().done, 0u) << "moved (freed), not counted yet";
  const ReapReport rep = parent.reap_dead();
  EXPECT_EQ(rep.requeued, 0u) << "its record was freed: nothing to run again";
  EXPECT_EQ(info().done, 1u);
  expect_verified();
  EXPECT_EQ(drain(), 1u);
  // The dead finisher never took its count out of the hint: the exact counts decide.
  parent.janitor_tick(monotonic_ns() + 2'000'000'000);
  EXPECT_EQ(info().state, GroupState::finished);
  EXPECT_EQ(info().done, 2u);
  expect_verified();
}

TEST_F(GroupsCrash, TheLastFinisherKilledBeforeTheGroupFinishesLeavesItToTheJanitor) {
  add(parent);
  const TaskId chord = then_task();
  EXPECT_EQ(parent.seal_group(g), Errc::ok);
  ASSERT_TRUE(dies_at(Point::group_before_finish, [&] {
    auto c = Client::attach(seg, Role::consumer).value();
    Taken t;
    if (!c.try_take(q, t)) ::_exit(3);
    (void)c.complete(t);
  }));
  EXPECT_GE(parent.reap_dead().participants, 1u);
  EXPECT_EQ(info().state, GroupState::sealed);
  EXPECT_EQ(parent.status(chord).value().status, TaskStatus::waiting);
  parent.janitor_tick(monotonic_ns() + 2'000'000'000);
  EXPECT_EQ(info().state, GroupState::finished);
  EXPECT_EQ(parent.status(chord).value().status, TaskStatus::queued) << "released exactly once";
  EXPECT_EQ(drain(), 1u);
  expect_verified();
}

TEST_F(GroupsCrash, AReleaserKilledAfterItsClaimLeavesTheWaitingTaskToItsRecoverer) {
  add(parent);
  const TaskId chord = then_task();
  EXPECT_EQ(parent.seal_group(g), Errc::ok);
  ASSERT_TRUE(dies_at(Point::gate_after_claim, [&] {
    auto c = Client::attach(seg, Role::consumer).value();
    Taken t;
    if (!c.try_take(q, t)) ::_exit(3);
    (void)c.complete(t);  // finishes the group, then releases the chord
  }));
  EXPECT_EQ(info().state, GroupState::finished);
  EXPECT_EQ(parent.status(chord).value().status, TaskStatus::running) << "claimed by the dead releaser";
  EXPECT_GE(parent.reap_dead().participants, 1u);
  EXPECT_EQ(parent.status(chord).value().status, TaskStatus::queued) << "settled by its gate again";
  Taken t;
  ASSERT_TRUE(parent.try_take(q, t));
  EXPECT_EQ(t.id, chord);
  EXPECT_EQ(t.attempt, 1) << "the release is not a run";
  EXPECT_EQ(parent.complete(t), Errc::ok);
  expect_verified();
}

}  // namespace
