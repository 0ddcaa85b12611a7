// Cancel: a waiting task never runs, a running one is asked to stop, a finished one is
// left alone; exactly one of a cancel and a take wins.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;
using namespace std::chrono_literals;

namespace {

struct Cancel : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(64, 2), CreateOptions{0600, {"general", "other"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();

  TaskId enqueue(std::string_view type = "job", TaskOptions o = {}) {
    o.queue = q;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text(type, "x", o, &id), Errc::ok);
    return id;
  }
  std::vector<TaskId> drain(QueueId from) {
    std::vector<TaskId> ids;
    Taken t;
    while (cli.try_take(from, t)) {
      ids.push_back(t.id);
      EXPECT_EQ(cli.complete(t), Errc::ok);
    }
    return ids;
  }
  TaskStatus status(TaskId id) { return cli.status(id).value().status; }
};

TEST_F(Cancel, AQueuedTaskThatIsCancelledNeverRuns) {
  const TaskId a = enqueue(), b = enqueue(), c = enqueue();
  EXPECT_EQ(cli.cancel(b).value(), CancelOutcome::cancelled);
  EXPECT_EQ(status(b), TaskStatus::unknown) << "without keep_result a cancelled task's record is freed";
  EXPECT_EQ(drain(q), (std::vector<TaskId>{a, c}));
  EXPECT_EQ(cli.cancel(b).code(), Errc::unknown_task);
  // The ring's leftover entry was dropped: the queue goes on working.
  const TaskId d = enqueue();
  EXPECT_EQ(drain(q), (std::vector<TaskId>{d}));
  EXPECT_EQ(inspect(seg).records.outstanding(), 0u);
}

TEST_F(Cancel, AKeepResultTaskStaysCancelledForItsWaiters) {
  TaskOptions o;
  o.keep_result = true;
  const TaskId id = enqueue("job", o);
  std::thread waiter([&] {
    auto r = cli.wait(id, 10s);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, TaskStatus::cancelled);
    EXPECT_EQ(r->error, "cancelled");
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(cli.cancel(id).value(), CancelOutcome::cancelled);
  waiter.join();
  EXPECT_EQ(status(id), TaskStatus::unknown) << "wait took the outcome";
  EXPECT_TRUE(drain(q).empty());
}

TEST_F(Cancel, ADelayedTaskThatIsCancelledIsNeverPromoted) {
  const TaskId id = enqueue("job", TaskOptions{}.after(1h));
  EXPECT_EQ(cli.cancel(id).value(), CancelOutcome::cancelled);
  EXPECT_EQ(cli.promote_due(monotonic_ns() + 7'200'000'000'000), 0u);
  EXPECT_TRUE(drain(q).empty());
}

TEST_F(Cancel, AParkedTaskThatIsCancelledIsNotHandedOver) {
  const SemId sem = seg.create_semaphore("printer", 1).value();
  TaskOptions o;
  o.needs[0] = Need{sem, 1};
  const TaskId holder = enqueue("job", o), parked = enqueue("job", o);
  Taken a, b;
  ASSERT_TRUE(cli.try_take(q, a));
  ASSERT_EQ(cli.acquire_for(a, std::span<const Need>(a.needs, 2)), Client::Grant::granted);
  ASSERT_TRUE(cli.try_take(q, b));
  ASSERT_EQ(cli.acquire_for(b, std::span<const Need>(b.needs, 2)), Client::Grant::parked);
  EXPECT_EQ(cli.cancel(parked).value(), CancelOutcome::cancelled);
  Taken next;
  EXPECT_FALSE(cli.release_for(a, std::span<const Need>(a.needs, 2), &next)) << "a cancelled task was handed over";
  ASSERT_EQ(cli.complete(a), Errc::ok);
  EXPECT_EQ(status(holder), TaskStatus::unknown);
  EXPECT_TRUE(drain(q).empty());
  EXPECT_EQ(seg.semaphores().at(0).in_use, 0u);
}

TEST_F(Cancel, ARunningTaskIsAskedToStopAndOnlyThatTask) {
  const TaskId id = enqueue();
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_FALSE(cli.cancel_requested(t));
  EXPECT_EQ(cli.cancel(id).value(), CancelOutcome::requested);
  EXPECT_TRUE(cli.cancel_requested(t));
  EXPECT_TRUE(cli.status(id).value().cancel_requested);
  ASSERT_EQ(cli.finish_cancelled(t), Errc::ok);
  EXPECT_EQ(status(id), TaskStatus::unknown);
  // The record's next task is not asked anything.
  const TaskId next = enqueue();
  Taken u;
  ASSERT_TRUE(cli.try_take(q, u));
  ASSERT_EQ(u.id, next);
  ASSERT_EQ(u.index, t.index) << "the test needs the record reused";
  EXPECT_FALSE(cli.cancel_requested(u));
  ASSERT_EQ(cli.complete(u), Errc::ok);
}

TEST_F(Cancel, AFinishedOrUnknownTaskIsLeftAlone) {
  TaskOptions o;
  o.max_attempts = 1;
  const TaskId id = enqueue("job", o);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  ASSERT_EQ(cli.dead_letter(t, "broken"), Errc::ok);
  EXPECT_EQ(cli.cancel(id).value(), CancelOutcome::finished);
  EXPECT_EQ(status(id), TaskStatus::dead);
  EXPECT_EQ(cli.cancel(kNoTask).code(), Errc::unknown_task);
  EXPECT_EQ(cli.cancel(id + 1).code(), Errc::unknown_task);
}

TEST_F(Cancel, ByQueueByTypeAndByGroup) {
  const QueueId other = seg.find_queue("other").value();
  TaskOptions in_other;
  in_other.queue = other;
  TaskOptions grouped;
  const GroupId g = cli.create_group("mail").value();
  grouped.group_id = g;
  for (int i = 0; i < 3; ++i) enqueue("resize");
  for (int i = 0; i < 2; ++i) enqueue("email");
  for (int i = 0; i < 2; ++i) enqueue("email", grouped);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(cli.enqueue_text("resize", "x", in_other), Errc::ok);
  EXPECT_EQ(cli.cancel_group(g).cancelled, 2u);
  EXPECT_EQ(cli.group_info(g).value().cancelled, 2u) << "counted in the group";
  EXPECT_EQ(cli.cancel_type("email").cancelled, 2u);
  const CancelCounts purged = cli.cancel_queue(q);
  EXPECT_EQ(purged.cancelled, 3u);
  EXPECT_TRUE(drain(q).empty());
  EXPECT_EQ(drain(other).size(), 4u) << "another queue's tasks are not touched";
}

// Exactly one of a take and a cancel wins a task, whoever comes first: each round one
// task is queued, and a taker and a canceller are let go at it together.
TEST(CancelRace, ATakeAndACancelNeverBothWin) {
  Segment seg = Segment::create_private(small_test_layout(64, 2), CreateOptions{0600, {"general"}}).value();
  const QueueId q = seg.find_queue("general").value();
  Client producer = Client::attach(seg).value();
  constexpr int kRounds = 400;
  std::vector<TaskId> ids(kRounds);
  std::vector<char> took(kRounds, 0), cancelled(kRounds, 0);
  std::barrier<> start(3), end(3);
  std::thread taker([&] {
    Client c = Client::attach(seg).value();
    Taken t;
    for (int i = 0; i < kRounds; ++i) {
      start.arrive_and_wait();
      if (c.try_take(q, t)) {
        took[static_cast<std::size_t>(i)] = 1;
        EXPECT_EQ(c.complete(t), Errc::ok);
      }
      end.arrive_and_wait();
    }
  });
  std::thread canceller([&] {
    Client c = Client::attach(seg).value();
    for (int i = 0; i < kRounds; ++i) {
      start.arrive_and_wait();
      auto r = c.cancel(ids[static_cast<std::size_t>(i)]);
      cancelled[static_cast<std::size_t>(i)] = r && *r == CancelOutcome::cancelled;
      end.arrive_and_wait();
    }
  });
  TaskOptions o;
  o.queue = q;
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_EQ(producer.enqueue_text("job", "", o, &ids[static_cast<std::size_t>(i)]), Errc::ok);
    start.arrive_and_wait();
    end.arrive_and_wait();
  }
  taker.join();
  canceller.join();
  int takes = 0, cancels = 0;
  for (int i = 0; i < kRounds; ++i) {
    const auto k = static_cast<std::size_t>(i);
    EXPECT_EQ(took[k] + cancelled[k], 1) << "round " << i << ": took " << int{took[k]} << ", cancelled "
                                         << int{cancelled[k]};
    takes += took[k];
    cancels += cancelled[k];
  }
  EXPECT_EQ(inspect(seg).records.outstanding(), 0u);
  EXPECT_GT(takes, 0) << "the race never went the take's way: the test checked little";
  EXPECT_GT(cancels, 0) << "the race never went the cancel's way: the test checked little";
}

TEST_F(Cancel, AConsumerHandlerThatSeesTheRequestStopsAndTheTaskIsNotRetried) {
  const TaskId id = enqueue("slow");
  ConsumerOptions co;
  co.home = {"general"};
  auto consumer = Consumer::create(seg, co).value();
  std::atomic<bool> started{false}, saw{false};
  consumer->on("slow", [&](TaskContext& ctx) {
    started.store(true);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!ctx.cancel_requested() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    saw.store(ctx.cancel_requested());
    return Outcome::fail("stopped");
  });
  consumer->start();
  while (!started.load()) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(cli.cancel(id).value(), CancelOutcome::requested);
  for (int i = 0; i < 1000 && consumer->stats().cancelled == 0; ++i) std::this_thread::sleep_for(5ms);
  consumer->request_stop();
  EXPECT_TRUE(consumer->join());
  EXPECT_TRUE(saw.load());
  const ConsumerStats st = consumer->stats();
  EXPECT_EQ(st.cancelled, 1u);
  EXPECT_EQ(st.retried, 0u);
  EXPECT_EQ(status(id), TaskStatus::unknown);
  EXPECT_EQ(inspect(seg).records.outstanding(), 0u);
}

}  // namespace
