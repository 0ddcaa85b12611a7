// Kept results and cancels across kills: a worker killed between writing a result and
// finishing the task leaves a task that runs again (never a half-kept result), a reader
// killed holding a result leaves it kept for the next reader, and a canceller killed
// after claiming a task leaves it to run: never lost or stuck.
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

Layout results_layout() {
  Layout l;
  l.task_capacity = 64;
  l.levels = 2;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 8;
  return l;
}

struct ResultsCrash : ::testing::Test {
  Segment seg = Segment::create_private(results_layout(), CreateOptions{0600, {"work"}}).value();
  QueueId q = seg.find_queue("work").value();
  Client parent = Client::attach(seg, Role::producer | Role::consumer).value();

  TaskId enqueue_kept() {
    TaskOptions o;
    o.queue = q;
    o.keep_result = true;
    TaskId id = kNoTask;
    EXPECT_EQ(parent.enqueue_text("job", "in", o, &id), Errc::ok);
    return id;
  }
  void SetUp() override { ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS"; }
};

TEST_F(ResultsCrash, AWorkerKilledBeforeItsTaskIsDoneLeavesTheTaskToRunAgain) {
  const TaskId id = enqueue_kept();
  ASSERT_TRUE(dies_at(Point::result_before_done, [&] {
    auto c = Client::attach(seg, Role::consumer).value();
    Taken t;
    if (!c.try_take(q, t)) ::_exit(3);
    (void)c.complete(t, as_payload(std::string_view("half")));
  }));
  EXPECT_EQ(parent.status(id).value().status, TaskStatus::running) << "the dead worker still holds it";
  EXPECT_EQ(parent.take_result(id).code(), Errc::not_finished);
  const ReapReport rep = parent.reap_dead();
  EXPECT_EQ(rep.requeued, 1u);
  Taken t;
  ASSERT_TRUE(parent.try_take(q, t));
  EXPECT_EQ(t.id, id);
  EXPECT_EQ(t.attempt, 2) << "the killed run counted";
  ASSERT_EQ(parent.complete(t, as_payload(std::string_view("whole"))), Errc::ok);
  EXPECT_EQ(parent.take_result(id).value().value, "whole");
}

TEST_F(ResultsCrash, AReaderKilledHoldingAResultLeavesItForTheNextReader) {
  const TaskId id = enqueue_kept();
  Taken t;
  ASSERT_TRUE(parent.try_take(q, t));
  ASSERT_EQ(parent.complete(t, as_payload(std::string_view("answer"))), Errc::ok);
  ASSERT_TRUE(dies_at(Point::result_after_claim, [&] {
    auto c = Client::attach(seg, Role::producer).value();
    (void)c.take_result(id);
  }));
  EXPECT_EQ(parent.status(id).value().status, TaskStatus::done) << "claimed, not taken";
  EXPECT_EQ(parent.take_result(id).code(), Errc::unavailable) << "a dead reader holds it until it is reaped";
  EXPECT_GE(parent.reap_dead().participants, 1u);
  auto r = parent.take_result(id);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->value, "answer");
  EXPECT_EQ(inspect(seg).records[TaskState::done], 0u);
}

TEST_F(ResultsCrash, ACancellerKilledAfterItsClaimLeavesTheTaskToRun) {
  const TaskId id = enqueue_kept();
  ASSERT_TRUE(dies_at(Point::cancel_after_claim, [&] {
    auto c = Client::attach(seg, Role::producer).value();
    (void)c.cancel(id);
  }));
  EXPECT_EQ(parent.status(id).value().status, TaskStatus::running) << "the dead canceller holds it";
  EXPECT_EQ(parent.reap_dead().requeued, 1u) << "the cancel did not happen: the task goes back";
  Taken t;
  ASSERT_TRUE(parent.try_take(q, t));
  EXPECT_EQ(t.id, id);
  ASSERT_EQ(parent.complete(t, as_payload(std::string_view("ran"))), Errc::ok);
  EXPECT_EQ(parent.take_result(id).value().value, "ran");
}

TEST_F(ResultsCrash, AMoverKilledAfterItsClaimLeavesTheTaskAtItsOldLevel) {
  const TaskId id = enqueue_kept();
  ASSERT_TRUE(dies_at(Point::priority_after_claim, [&] {
    auto c = Client::attach(seg, Role::producer).value();
    (void)c.set_priority(id, 1);
  }));
  EXPECT_EQ(parent.reap_dead().requeued, 1u);
  Taken t;
  ASSERT_TRUE(parent.try_take(q, t));
  EXPECT_EQ(t.id, id);
  EXPECT_EQ(t.level, 0) << "the move did not happen";
  ASSERT_EQ(parent.complete(t), Errc::ok);
}

}  // namespace
