// Kept results: a keep_result task's record holds its result after it finishes, until it
// is taken, waited for, expired or evicted; wait sleeps until the task finishes.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/futex.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;
using namespace std::chrono_literals;

namespace {

struct Results : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(64, 2), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();

  TaskId enqueue(bool keep, std::chrono::seconds ttl = 600s, std::uint16_t attempts = 3) {
    TaskOptions o;
    o.queue = q;
    o.keep_result = keep;
    o.result_ttl = ttl;
    o.max_attempts = attempts;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text("job", "in", o, &id), Errc::ok);
    return id;
  }
  // Takes the next task and completes it with `value`.
  TaskId run(std::string_view value) {
    Taken t;
    EXPECT_TRUE(cli.try_take(q, t));
    EXPECT_EQ(cli.complete(t, as_payload(value)), Errc::ok);
    return t.id;
  }
  TaskStatus status(TaskId id) { return cli.status(id).value().status; }
};

TEST_F(Results, AKeptResultIsHeldUntilItIsTakenOnce) {
  const TaskId id = enqueue(true);
  EXPECT_EQ(cli.take_result(id).code(), Errc::not_finished);
  ASSERT_EQ(run("42 pages"), id);
  const TaskInfo s = cli.status(id).value();
  EXPECT_EQ(s.status, TaskStatus::done);
  EXPECT_EQ(s.result_bytes, 8u);
  EXPECT_TRUE(s.keep_result);
  EXPECT_GT(s.finished_ns, 0);
  EXPECT_EQ(inspect(seg).records[TaskState::done], 1u);

  auto r = cli.take_result(id);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, TaskStatus::done);
  EXPECT_EQ(r->value, "42 pages");
  EXPECT_EQ(r->finished_ns, s.finished_ns);
  EXPECT_EQ(cli.take_result(id).code(), Errc::unknown_task) << "a result is taken once";
  EXPECT_EQ(status(id), TaskStatus::unknown);
  EXPECT_EQ(inspect(seg).records[TaskState::done], 0u);
}

TEST_F(Results, WithoutKeepResultTheRecordIsFreedAndThereIsNothingToWaitFor) {
  const TaskId id = enqueue(false);
  EXPECT_EQ(cli.wait(id, 1s).code(), Errc::invalid_argument);
  run("ignored");
  EXPECT_EQ(status(id), TaskStatus::unknown);
  EXPECT_EQ(cli.take_result(id).code(), Errc::unknown_task);
}

TEST_F(Results, AResultLongerThanThePayloadAreaIsCut) {
  const TaskId id = enqueue(true);
  run("0123456789abcdefXYZ");
  EXPECT_EQ(cli.take_result(id).value().value, "0123456789abcdef");
}

TEST_F(Results, ATaskThatFailsForGoodReportsWhyAndStaysADeadLetter) {
  const TaskId id = enqueue(true, 600s, 1);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  ASSERT_EQ(cli.retry_or_dead_letter(t, "printer on fire", -1ms, true), Errc::ok);
  auto r = cli.wait(id, 1s);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, TaskStatus::dead);
  EXPECT_EQ(r->error, "attempts exhausted (1): printer on fire");
  EXPECT_EQ(status(id), TaskStatus::dead) << "reading a failure does not purge the dead letter";
}

TEST_F(Results, WaitSleepsUntilAnotherThreadFinishesTheTask) {
  const TaskId id = enqueue(true);
  std::atomic<bool> finished{false};
  std::thread worker([&] {
    Client w = Client::attach(seg).value();
    Taken t;
    ASSERT_TRUE(w.try_take(q, t));
    std::this_thread::sleep_for(50ms);
    finished.store(true);
    ASSERT_EQ(w.complete(t, as_payload(std::string_view("ok"))), Errc::ok);
  });
  const std::uint64_t wakes = detail::futex_wake_calls();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = cli.wait(id, 10s);
  const auto waited = std::chrono::steady_clock::now() - t0;
  worker.join();
  EXPECT_GT(detail::futex_wake_calls(), wakes) << "the finisher did not wake the waiter: it polled";
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(finished.load()) << "wait returned before the task finished";
  EXPECT_EQ(r->value, "ok");
  EXPECT_LT(waited, 5s) << "the waiter was not woken (it would sleep out its 100 ms slices, not seconds)";
  EXPECT_EQ(status(id), TaskStatus::unknown) << "wait takes the result";
}

TEST_F(Results, FinishingWithNobodyWaitingMakesNoSystemCall) {
  const TaskId id = enqueue(true);
  const std::uint64_t wakes = detail::futex_wake_calls();
  run("quiet");
  EXPECT_EQ(detail::futex_wake_calls(), wakes);
  EXPECT_EQ(cli.take_result(id).value().value, "quiet");
}

TEST_F(Results, WaitGivesUpAtItsTimeout) {
  const TaskId id = enqueue(true);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(cli.wait(id, 30ms).code(), Errc::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);
  EXPECT_EQ(status(id), TaskStatus::queued) << "waiting changes nothing";
  EXPECT_EQ(cli.wait(kNoTask, 1s).code(), Errc::unknown_task);
}

TEST_F(Results, ManyWaitersOfManyTasksAreAllWoken) {
  constexpr int kTasks = 8;
  std::vector<TaskId> ids;
  for (int i = 0; i < kTasks; ++i) ids.push_back(enqueue(true));
  std::vector<std::string> got(kTasks);
  std::vector<std::thread> waiters;
  for (int i = 0; i < kTasks; ++i)
    waiters.emplace_back([&, i] {  // one Client, many threads
      auto r = cli.wait(ids[static_cast<std::size_t>(i)], 10s);
      if (r) got[static_cast<std::size_t>(i)] = r->value;
    });
  std::this_thread::sleep_for(20ms);  // most of them asleep by now
  for (int i = 0; i < kTasks; ++i) run("r" + std::to_string(i));
  for (auto& w : waiters) w.join();
  for (int i = 0; i < kTasks; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], "r" + std::to_string(i));
}

TEST_F(Results, TheJanitorDropsResultsWhoseTimeRanOut) {
  const TaskId short_lived = enqueue(true, 1s);
  const TaskId long_lived = enqueue(true, 3600s);
  run("a");
  run("b");
  ASSERT_TRUE(cli.janitor_tick(monotonic_ns() + 10'000'000'000));  // ten seconds on
  EXPECT_EQ(status(short_lived), TaskStatus::unknown);
  EXPECT_EQ(status(long_lived), TaskStatus::done);
  EXPECT_EQ(inspect(seg).results_expired, 1u);
  EXPECT_EQ(cli.take_result(long_lived).value().value, "b");
}

TEST_F(Results, AFullTableEvictsTheOldestResultForANewTask) {
  const std::uint32_t cap = seg.layout().task_capacity;
  std::vector<TaskId> kept;
  for (std::uint32_t i = 0; i < cap; ++i) {
    kept.push_back(enqueue(true));
    run(std::to_string(i));
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  ASSERT_EQ(inspect(seg).records[TaskState::done], cap);
  std::this_thread::sleep_for(10ms);  // finish times are coarse: the first is older than any other
  TaskOptions o;
  o.queue = q;
  ASSERT_EQ(cli.enqueue_text("job", "new", o), Errc::ok) << "a table of kept results takes new work";
  EXPECT_EQ(inspect(seg).results_evicted, 1u);
  std::size_t gone = 0;
  for (TaskId id : kept) gone += status(id) == TaskStatus::unknown;
  EXPECT_EQ(gone, 1u);

  // A batch evicts as many as it needs.
  std::vector<TaskSpec> specs(5, TaskSpec{"job", as_payload(std::string_view("b")), o});
  std::vector<TaskId> ids(specs.size());
  Errc e = Errc::ok;
  EXPECT_EQ(cli.enqueue_batch(specs, ids, &e), specs.size()) << to_string(e);
  EXPECT_EQ(inspect(seg).results_evicted, 6u);
}

TEST_F(Results, BatchCompletesAndConsumerOutcomesKeepResultsToo) {
  const TaskId a = enqueue(true), b = enqueue(true);
  std::array<Taken, 2> ts;
  ASSERT_EQ(cli.try_take_batch(q, ts), 2u);
  ASSERT_EQ(cli.complete_batch(ts), 2u);
  EXPECT_EQ(status(a), TaskStatus::done);
  EXPECT_EQ(status(b), TaskStatus::done);
  EXPECT_EQ(cli.take_result(a).value().value, "");

  const TaskId c = enqueue(true);
  ConsumerOptions co;
  co.home = {"general"};
  auto consumer = Consumer::create(seg, co).value();
  consumer->on("job", [](TaskContext&) { return Outcome::done("from a handler"); });
  consumer->start();
  auto r = cli.wait(c, 10s);
  consumer->request_stop();
  EXPECT_TRUE(consumer->join());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->value, "from a handler");
}

TEST_F(Results, AResultTimeToLiveMustBeAtLeastASecond) {
  TaskOptions o;
  o.queue = q;
  o.keep_result = true;
  o.result_ttl = 0s;
  EXPECT_EQ(cli.enqueue_text("job", "", o), Errc::invalid_argument);
}

}  // namespace
