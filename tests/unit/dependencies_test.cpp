// Dependencies: tasks that wait for a parent task (TaskOptions::after_task). A child runs
// only after its parent is done, is cancelled with the reason when its parent fails or is
// cancelled (unless it runs anyway), receives its parent's result with `pipe`, and is
// refused when nothing would keep its parent's outcome. Chains cancel in constant stack.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;
using namespace std::chrono_literals;

namespace {

struct Dependencies : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(4096, 4, 32), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();

  // A task that keeps its outcome (a parent), waiting for `parent` when given.
  TaskId add(std::string_view payload, TaskId parent = kNoTask, TaskOptions o = {}) {
    o.queue = q;
    o.keep_result = true;
    o.after_task = parent;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text("job", payload, o, &id), Errc::ok);
    return id;
  }
  TaskStatus status(TaskId id) { return cli.status(id).value().status; }
  // Takes the next queued task, or fails the test.
  Taken take() {
    Taken t;
    EXPECT_TRUE(cli.try_take(q, t)) << "nothing queued";
    return t;
  }
  std::uint64_t waiting() const { return inspect(seg).records[TaskState::waiting]; }
  std::uint64_t in_use() const { return seg.layout().task_capacity - inspect(seg).records.reservable(); }
  std::string payload(const Taken& t) {
    return std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size());
  }
};

TEST_F(Dependencies, AChildWaitsUntilItsParentIsDoneThenRuns) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  EXPECT_EQ(status(b), TaskStatus::waiting);
  const TaskInfo info = cli.status(b).value();
  EXPECT_EQ(info.waits_for, a);
  EXPECT_FALSE(info.waits_for_group);
  Taken t = take();
  EXPECT_EQ(t.id, a);
  Taken none;
  EXPECT_FALSE(cli.try_take(q, none)) << "the child must not run while its parent runs";
  EXPECT_EQ(cli.complete(t), Errc::ok);
  EXPECT_EQ(status(b), TaskStatus::queued);
  t = take();
  EXPECT_EQ(t.id, b);
  EXPECT_EQ(payload(t), "b") << "without pipe a child keeps its own payload";
  EXPECT_EQ(t.attempt, 1) << "the release is not a run";
  EXPECT_EQ(cli.complete(t), Errc::ok);
  EXPECT_EQ(cli.take_result(a).value().status, TaskStatus::done) << "the parent's outcome stays for its reader";
}

TEST_F(Dependencies, AChildOfAParentAlreadyDoneIsQueuedAtOnce) {
  const TaskId a = add("a");
  EXPECT_EQ(cli.complete(take()), Errc::ok);
  const TaskId b = add("b", a);
  EXPECT_EQ(status(b), TaskStatus::queued);
}

TEST_F(Dependencies, AChainRunsInOrder) {
  std::vector<TaskId> chain{add("0")};
  for (int i = 1; i < 50; ++i) chain.push_back(add(std::to_string(i), chain.back()));
  for (int i = 0; i < 50; ++i) {
    const Taken t = take();
    EXPECT_EQ(t.id, chain[static_cast<std::size_t>(i)]);
    Taken none;
    EXPECT_FALSE(cli.try_take(q, none)) << "one link at a time";
    EXPECT_EQ(cli.complete(t), Errc::ok);
  }
}

TEST_F(Dependencies, AFanOutReleasesEveryChild) {
  const TaskId a = add("a");
  std::vector<TaskId> children;
  for (int i = 0; i < 500; ++i) children.push_back(add("c", a));
  EXPECT_EQ(waiting(), 500u);
  EXPECT_EQ(cli.complete(take()), Errc::ok);
  for (TaskId c : children) EXPECT_EQ(status(c), TaskStatus::queued);
  EXPECT_EQ(waiting(), 0u);
}

TEST_F(Dependencies, AFailedParentCancelsItsChildWithTheReason) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  EXPECT_EQ(cli.dead_letter(take(), "broken"), Errc::ok);
  const TaskInfo info = cli.status(b).value();
  EXPECT_EQ(info.status, TaskStatus::cancelled);
  EXPECT_EQ(info.last_error, "its parent task failed");
  EXPECT_EQ(cli.take_result(b).value().error, "its parent task failed") << "a reader learns why, too";
  Taken none;
  EXPECT_FALSE(cli.try_take(q, none));
}

TEST_F(Dependencies, ACancelledParentCancelsItsChild) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  ASSERT_TRUE(cli.cancel(a).ok());
  EXPECT_EQ(status(b), TaskStatus::cancelled);
  EXPECT_EQ(cli.status(b).value().last_error, "its parent task was cancelled");
}

TEST_F(Dependencies, AChildThatRunsAnywayRunsAfterAFailedParent) {
  const TaskId a = add("a");
  TaskOptions o;
  o.run_anyway = true;
  const TaskId b = add("b", a, o);
  EXPECT_EQ(cli.dead_letter(take(), "broken"), Errc::ok);
  EXPECT_EQ(status(b), TaskStatus::queued);
  EXPECT_EQ(take().id, b);
}

TEST_F(Dependencies, AFailureCancelsTheWholeChainBehindIt) {
  // Long enough that releasing by nested calls would show in the stack.
  std::vector<TaskId> chain{add("0")};
  for (int i = 1; i < 3000; ++i) chain.push_back(add("x", chain.back()));
  EXPECT_EQ(cli.dead_letter(take(), "broken"), Errc::ok);
  for (std::size_t i = 1; i < chain.size(); ++i) ASSERT_EQ(status(chain[i]), TaskStatus::cancelled) << i;
  EXPECT_EQ(waiting(), 0u);
}

TEST_F(Dependencies, APipeHandsEachLinkItsParentsResult) {
  TaskOptions piped;
  piped.pipe = true;
  const TaskId a = add("seed");
  const TaskId b = add("ignored", a, piped);
  const TaskId c = add("ignored", b, piped);
  Taken t = take();
  EXPECT_EQ(t.id, a);
  EXPECT_EQ(cli.complete(t, as_payload(std::string_view("1"))), Errc::ok);
  t = take();
  EXPECT_EQ(t.id, b);
  EXPECT_EQ(payload(t), "1");
  std::string next = payload(t) + "2";
  EXPECT_EQ(cli.complete(t, as_payload(std::string_view(next))), Errc::ok);
  t = take();
  EXPECT_EQ(t.id, c);
  EXPECT_EQ(payload(t), "12");
  next = payload(t) + "3";
  EXPECT_EQ(cli.complete(t, as_payload(std::string_view(next))), Errc::ok);
  EXPECT_EQ(cli.take_result(c).value().value, "123");
}

TEST_F(Dependencies, AChildOfAParentWhoseResultWasTakenIsCancelledWithTheReason) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  // Taken between its finish and the release: the release reads a record that is gone.
  EXPECT_EQ(cli.complete(take()), Errc::ok);
  EXPECT_EQ(status(b), TaskStatus::queued) << "released at its parent's finish, before the read";
  ASSERT_TRUE(cli.take_result(a).ok());
  const TaskId c = add("c");
  const TaskId d = add("d", c);
  TaskId e = kNoTask;
  EXPECT_EQ(cli.complete(take()), Errc::ok);  // b
  EXPECT_EQ(cli.complete(take()), Errc::ok);  // c: releases d
  ASSERT_TRUE(cli.take_result(c).ok());
  TaskOptions o;
  o.queue = q;
  o.after_task = c;
  EXPECT_EQ(cli.enqueue_text("job", "e", o, &e), Errc::unknown_task) << "its outcome is gone: refused, not waiting";
  EXPECT_EQ(status(d), TaskStatus::queued);
}

TEST_F(Dependencies, BadParentsAreRefusedAndChangeNothing) {
  TaskOptions plain;
  plain.queue = q;
  TaskId unkept = kNoTask;
  ASSERT_EQ(cli.enqueue_text("job", "p", plain, &unkept), Errc::ok);
  const auto before = in_use();
  TaskOptions o;
  o.queue = q;
  o.after_task = unkept;
  EXPECT_EQ(cli.enqueue_text("job", "c", o), Errc::parent_not_kept);
  o.after_task = unkept + (std::uint64_t{1} << 40);  // the same record, another generation
  EXPECT_EQ(cli.enqueue_text("job", "c", o), Errc::unknown_task);
  o.after_task = add("kept");
  o.after_group = cli.create_group("g").value();
  EXPECT_EQ(cli.enqueue_text("job", "c", o), Errc::invalid_argument) << "one gate: a task or a group";
  TaskOptions pipe_alone;
  pipe_alone.queue = q;
  pipe_alone.pipe = true;
  EXPECT_EQ(cli.enqueue_text("job", "c", pipe_alone), Errc::invalid_argument) << "a pipe needs a parent";
  EXPECT_EQ(in_use(), before + 1) << "only the kept parent was added";
}

TEST_F(Dependencies, AWaitingChildCanBeCancelledAndMoved) {
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  const TaskId c = add("c", a);
  EXPECT_EQ(cli.set_priority(b, 2), Errc::ok);
  EXPECT_EQ(status(b), TaskStatus::waiting) << "moved, still waiting for its parent";
  ASSERT_TRUE(cli.cancel(c).ok());
  EXPECT_EQ(status(c), TaskStatus::cancelled);
  EXPECT_EQ(cli.complete(take()), Errc::ok);
  const Taken t = take();
  EXPECT_EQ(t.id, b);
  EXPECT_EQ(t.level, 2);
}

// The count of waiting tasks (a hint that lets a finisher skip the release pass) comes
// back to 0 when the waiting tasks are cancelled, released or moved and released.
TEST_F(Dependencies, TheWaitingCountReturnsToZeroWhateverBecameOfTheWaitingTasks) {
  auto waiting_hint = [&] { return detail::core_of(seg).header->waiting_tasks.load(); };
  const TaskId a = add("a");
  const TaskId b = add("b", a);
  const TaskId c = add("c", a);
  const TaskId d = add("d", a);
  EXPECT_EQ(waiting_hint(), 3);
  ASSERT_TRUE(cli.cancel(b).ok());
  EXPECT_EQ(waiting_hint(), 2) << "a cancelled waiting task waits for nothing";
  EXPECT_EQ(cli.set_priority(c, 1), Errc::ok);
  EXPECT_EQ(waiting_hint(), 2) << "moved, still waiting";
  EXPECT_EQ(cli.complete(take()), Errc::ok);
  EXPECT_EQ(waiting_hint(), 0);
  EXPECT_EQ(status(d), TaskStatus::queued);
}

// A member enqueued after a failed parent is cancelled at once, inside its adder's call,
// which still holds its lane: the cancel's count step borrows that lane (a thread that
// waited for a second lane while holding one could, with every lane so held, wait for
// good; that interleaving is too rare to force here). As many threads as a process has
// lanes do it at once, and every member is counted exactly once.
TEST(DependenciesRace, MembersCancelledAtOnceByTheirParentNeverWaitForASecondLane) {
  Segment seg = Segment::create_private(small_test_layout(4096, 2, 16), CreateOptions{0600, {"w"}}).value();
  const QueueId q = seg.find_queue("w").value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  TaskOptions kept;
  kept.queue = q;
  kept.keep_result = true;
  TaskId parent = kNoTask;
  ASSERT_EQ(cli.enqueue_text("p", "p", kept, &parent), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  ASSERT_EQ(cli.dead_letter(t, "broken"), Errc::ok);
  const GroupId g = cli.create_group("g").value();
  constexpr int kThreads = 8, kEach = 300;  // 8: detail::kGroupLanes
  std::atomic<int> cancelled{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&] {
      for (int k = 0; k < kEach; ++k) {
        TaskOptions o;
        o.queue = q;
        o.group_id = g;
        o.after_task = parent;
        TaskId id = kNoTask;
        if (cli.enqueue_text("m", "m", o, &id) == Errc::ok &&
            cli.status(id).value().status == TaskStatus::unknown)  // cancelled and freed
          cancelled.fetch_add(1);
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(cancelled.load(), kThreads * kEach);
  const GroupInfo info = cli.group_info(g).value();
  EXPECT_EQ(info.total, std::uint64_t{kThreads * kEach});
  EXPECT_EQ(info.cancelled, std::uint64_t{kThreads * kEach});
  const auto v = cli.verify_groups();
  EXPECT_TRUE(v.ok()) << v.error().message();
}

// Threads complete parents while others add children: every child is released exactly
// once (taken once), none is left waiting.
TEST(DependenciesRace, ChildrenAddedWhileTheirParentsFinishAreAllReleased) {
  Segment seg = Segment::create_private(small_test_layout(4096, 2, 16), CreateOptions{0600, {"w"}}).value();
  const QueueId q = seg.find_queue("w").value();
  for (int round = 0; round < 50; ++round) {
    Client prod = Client::attach(seg, Role::producer | Role::consumer).value();
    TaskOptions kept;
    kept.queue = q;
    kept.keep_result = true;
    constexpr int kParents = 20, kChildren = 10;
    std::vector<TaskId> parents(kParents);
    for (auto& p : parents) ASSERT_EQ(prod.enqueue_text("parent", "p", kept, &p), Errc::ok);
    std::atomic<int> children_added{0};
    std::atomic<bool> adder_done{false};
    std::thread adder([&] {
      Client c = Client::attach(seg, Role::producer).value();
      for (int k = 0; k < kChildren; ++k)
        for (TaskId p : parents) {
          TaskOptions o;
          o.queue = q;
          o.after_task = p;
          if (c.enqueue_text("child", "c", o) == Errc::ok) children_added.fetch_add(1);
        }
      adder_done.store(true);
    });
    int children_run = 0, parents_run = 0;
    for (Taken t;;) {
      if (prod.try_take(q, t)) {
        (t.type_name == "parent" ? parents_run : children_run) += 1;
        ASSERT_EQ(prod.complete(t), Errc::ok);
      } else if (adder_done.load() && parents_run == kParents && children_run >= children_added.load()) {
        break;
      }
    }
    adder.join();
    EXPECT_EQ(children_run, kParents * kChildren) << "round " << round;
    EXPECT_EQ(inspect(seg).records[TaskState::waiting], 0u);
    for (TaskId p : parents) ASSERT_TRUE(prod.take_result(p).ok());
  }
}

}  // namespace
