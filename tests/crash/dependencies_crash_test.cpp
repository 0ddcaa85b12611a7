// Dependencies across kills: a parent's worker killed after the parent finished and
// before it released its children, a releaser killed after it claimed a child (plain and
// piped), and a parent's worker killed while the parent ran. In each, the children run
// exactly once, with the right payload, once the dead process is reaped; none is left
// waiting.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "shmsched/detail/fault.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using fault::Point;
using shmsched::test::dies_at;
using shmsched::test::small_test_layout;

namespace {

struct DependenciesCrash : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(64, 2, 16), CreateOptions{0600, {"work"}}).value();
  QueueId q = seg.find_queue("work").value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();

  void SetUp() override { ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS"; }
  TaskId add(std::string_view payload, TaskId parent = kNoTask, bool pipe = false) {
    TaskOptions o;
    o.queue = q;
    o.keep_result = true;
    o.after_task = parent;
    o.pipe = pipe;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text("job", payload, o, &id), Errc::ok);
    return id;
  }
  TaskStatus status(TaskId id) { return cli.status(id).value().status; }
  // A worker process that takes one task and completes it with `result`.
  static void complete_one(Segment& seg, QueueId q, std::string_view result) {
    auto c = Client::attach(seg, Role::consumer).value();
    Taken t;
    if (!c.try_take(q, t)) ::_exit(3);
    (void)c.complete(t, as_payload(result));
  }
  // Takes the next task; its id and payload.
  std::pair<TaskId, std::string> run_next() {
    Taken t;
    if (!cli.try_take(q, t)) return {kNoTask, ""};
    std::string p(reinterpret_cast<const char*>(t.payload.data()), t.payload.size());
    EXPECT_EQ(cli.complete(t), Errc::ok);
    return {t.id, p};
  }
};

TEST_F(DependenciesCrash, AParentsWorkerKilledBeforeTheReleaseLeavesTheChildToTheReaper) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  ASSERT_TRUE(dies_at(Point::outcome_before_release, [&] { complete_one(seg, q, "r"); }));
  EXPECT_EQ(status(a), TaskStatus::done);
  EXPECT_EQ(status(b), TaskStatus::waiting) << "the finisher died before its release";
  EXPECT_GE(cli.reap_dead().participants, 1u);
  EXPECT_EQ(status(b), TaskStatus::queued) << "released by the reaper";
  EXPECT_EQ(run_next().first, b);
  EXPECT_EQ(run_next().first, kNoTask) << "released exactly once";
}

TEST_F(DependenciesCrash, AParentsWorkerKilledBeforeTheReleaseLeavesTheChildToTheJanitor) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  ASSERT_TRUE(dies_at(Point::outcome_before_release, [&] { complete_one(seg, q, "r"); }));
  // Nobody reaps the dead worker: the janitor's pass over waiting tasks releases the child.
  cli.janitor_tick(monotonic_ns() + 2'000'000'000);
  EXPECT_EQ(status(b), TaskStatus::queued);
  EXPECT_EQ(run_next().first, b);
  EXPECT_EQ(run_next().first, kNoTask);
}

TEST_F(DependenciesCrash, TakingAParentsResultBeforeTheReleaseReleasesThePipedChildFirst) {
  const TaskId a = add("a");
  const TaskId b = add("own", a, true);
  ASSERT_TRUE(dies_at(Point::outcome_before_release, [&] { complete_one(seg, q, "from-a"); }));
  EXPECT_EQ(status(b), TaskStatus::waiting);
  // The reader takes the result before anyone reaped the finisher: it releases the child
  // while the result is still there to pipe.
  auto r = cli.take_result(a);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->value, "from-a");
  EXPECT_EQ(status(a), TaskStatus::unknown) << "taken: freed";
  const auto [id, payload] = run_next();
  EXPECT_EQ(id, b);
  EXPECT_EQ(payload, "from-a") << "the child read its parent's result before it went";
}

TEST_F(DependenciesCrash, AReleaserKilledAfterItsClaimLeavesTheChildToItsRecoverer) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  ASSERT_TRUE(dies_at(Point::gate_after_claim, [&] { complete_one(seg, q, "r"); }));
  EXPECT_EQ(status(b), TaskStatus::running) << "claimed by the dead releaser";
  EXPECT_GE(cli.reap_dead().participants, 1u);
  EXPECT_EQ(status(b), TaskStatus::queued) << "settled by its gate again";
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(t.id, b);
  EXPECT_EQ(t.attempt, 1) << "the release is not a run";
  EXPECT_EQ(cli.complete(t), Errc::ok);
}

TEST_F(DependenciesCrash, APipedChildWhoseReleaserWasKilledGetsItsParentsResult) {
  const TaskId a = add("a");
  const TaskId b = add("own", a, true);
  ASSERT_TRUE(dies_at(Point::gate_after_claim, [&] { complete_one(seg, q, "from-a"); }));
  EXPECT_GE(cli.reap_dead().participants, 1u);
  const auto [id, payload] = run_next();
  EXPECT_EQ(id, b);
  EXPECT_EQ(payload, "from-a");
}

TEST_F(DependenciesCrash, AParentWhoseWorkerDiedRunsAgainAndItsChildWaitsForIt) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  ASSERT_TRUE(dies_at(Point::result_before_done, [&] { complete_one(seg, q, "r"); }));
  EXPECT_EQ(cli.reap_dead().requeued, 1u);
  EXPECT_EQ(status(b), TaskStatus::waiting) << "its parent did not finish";
  EXPECT_EQ(run_next().first, a);
  EXPECT_EQ(run_next().first, b);
  EXPECT_EQ(run_next().first, kNoTask);
}

}  // namespace
