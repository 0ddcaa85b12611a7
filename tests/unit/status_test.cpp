// Client::status: a task's state and fields by id, in every state a task can be in, and
// never another task's when its record is reused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;
using namespace std::chrono_literals;

namespace {

struct Status : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(64, 4, 64), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();

  TaskId enqueue(std::string_view type, TaskOptions o = {}) {
    o.queue = q;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text(type, "payload", o, &id), Errc::ok);
    return id;
  }
  TaskInfo status(TaskId id) {
    auto r = cli.status(id);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : TaskInfo{};
  }
};

TEST_F(Status, AQueuedTaskShowsItsFields) {
  TaskOptions o;
  o.priority = 2;
  o.max_attempts = 5;
  o.expires_ns = monotonic_ns() + 3'600'000'000'000;
  const TaskId id = enqueue("resize", o);
  const TaskInfo s = status(id);
  EXPECT_EQ(s.status, TaskStatus::queued);
  EXPECT_EQ(s.id, id);
  EXPECT_EQ(s.type, "resize");
  EXPECT_EQ(s.queue, q);
  EXPECT_EQ(s.priority, 2);
  EXPECT_EQ(s.attempts, 0);
  EXPECT_EQ(s.max_attempts, 5);
  EXPECT_EQ(s.pid, 0);
  EXPECT_GT(s.enqueued_ns, 0);
  EXPECT_EQ(s.expires_ns, o.expires_ns);
  EXPECT_TRUE(s.last_error.empty());
}

TEST_F(Status, FollowsATaskThroughRunningRetryDeadAndDone) {
  TaskOptions o;
  o.max_attempts = 2;
  const TaskId id = enqueue("flaky", o);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  TaskInfo s = status(id);
  EXPECT_EQ(s.status, TaskStatus::running);
  EXPECT_EQ(s.pid, ::getpid());
  EXPECT_EQ(s.attempts, 1);

  ASSERT_EQ(cli.retry_or_dead_letter(t, "timed out talking to the printer", 0ms, true), Errc::ok);
  s = status(id);
  EXPECT_EQ(s.status, TaskStatus::delayed);
  EXPECT_EQ(s.last_error, "timed out talking to the printer");
  EXPECT_GT(s.not_before_ns, 0);

  ASSERT_EQ(cli.promote_due(monotonic_ns() + 1'000'000'000), 1u);
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(status(id).attempts, 2);
  ASSERT_EQ(cli.retry_or_dead_letter(t, "out of paper", 0ms, true), Errc::ok);
  s = status(id);
  EXPECT_EQ(s.status, TaskStatus::dead) << "the second of two attempts failed";
  EXPECT_EQ(s.last_error, "attempts exhausted (2): out of paper");

  ASSERT_EQ(cli.requeue_dead(id), Errc::ok);
  s = status(id);
  EXPECT_EQ(s.status, TaskStatus::queued);
  EXPECT_EQ(s.attempts, 0);
  EXPECT_TRUE(s.last_error.empty()) << "a requeued dead letter starts over";
  ASSERT_TRUE(cli.try_take(q, t));
  ASSERT_EQ(cli.complete(t), Errc::ok);
  EXPECT_EQ(status(id).status, TaskStatus::unknown) << "done and released: no record answers for it";
}

TEST_F(Status, ADelayedAndAParkedTaskSayWhatTheyWaitFor) {
  const TaskId later = enqueue("later", TaskOptions{}.after(1h));
  EXPECT_EQ(status(later).status, TaskStatus::delayed);
  const SemId sem = seg.create_semaphore("printer", 1).value();
  ASSERT_EQ(cli.try_acquire(sem), Errc::ok);  // the one permit is held
  TaskOptions o;
  o.needs[0] = Need{sem, 1};
  const TaskId id = enqueue("print", o);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  ASSERT_EQ(cli.acquire_for(t, std::span<const Need>(t.needs, 2)), Client::Grant::parked);
  EXPECT_EQ(status(id).status, TaskStatus::parked);
  EXPECT_EQ(status(id).attempts, 0) << "waiting for a permit is not an attempt";
}

TEST_F(Status, IdsThatNameNoTaskAreUnknown) {
  const TaskId id = enqueue("one");
  for (TaskId bad : {kNoTask, id + 1, id ^ (std::uint64_t{1} << 40), ~std::uint64_t{0}}) {
    const TaskInfo s = status(bad);
    EXPECT_EQ(s.status, TaskStatus::unknown) << bad;
    EXPECT_TRUE(s.type.empty());
  }
  EXPECT_EQ(status(id).status, TaskStatus::queued);
}

TEST_F(Status, AReusedRecordNeverAnswersForTheTaskThatHadItBefore) {
  const TaskId first = enqueue("first");
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  ASSERT_EQ(cli.complete(t), Errc::ok);
  // Reserve the record again: the most recently freed one is reused first.
  const TaskId second = enqueue("second");
  ASSERT_NE(first, second);
  ASSERT_EQ(seg.layout().task_capacity, 64u);
  EXPECT_EQ(first % 64, second % 64) << "the test needs the record reused";
  EXPECT_EQ(status(first).status, TaskStatus::unknown);
  const TaskInfo s = status(second);
  EXPECT_EQ(s.status, TaskStatus::queued);
  EXPECT_EQ(s.type, "second");
}

// Reads race with a producer and a consumer that reuse a small table's records as fast as
// they can. Each task's type names its priority, so a reading that mixed two tasks'
// fields (or answered for another task) shows a type and a priority that disagree.
TEST(StatusRace, EveryReadingIsOneTaskAtOneMoment) {
  Segment seg = Segment::create_private(small_test_layout(8, 4, 64), CreateOptions{0600, {"general"}}).value();
  const QueueId q = seg.find_queue("general").value();
  constexpr int kTasks = 20000;
  std::array<std::atomic<TaskId>, 8> recent{};
  std::atomic<bool> done{false};
  std::thread producer([&] {
    Client p = Client::attach(seg).value();
    for (int i = 0; i < kTasks; ++i) {
      TaskOptions o;
      o.queue = q;
      o.priority = static_cast<std::uint8_t>(i % 4);
      TaskId id = kNoTask;
      while (p.enqueue_text("p" + std::to_string(i % 4), "", o, &id) != Errc::ok) std::this_thread::yield();
      recent[static_cast<std::size_t>(i) % recent.size()].store(id);
    }
  });
  std::thread consumer([&] {
    Client c = Client::attach(seg).value();
    Taken t;
    for (int n = 0; n < kTasks;)
      if (c.try_take(q, t)) {
        ASSERT_EQ(c.complete(t), Errc::ok);
        ++n;
      }
    done.store(true);
  });
  Client reader = Client::attach(seg).value();
  std::uint64_t known = 0, mixed = 0;
  while (!done.load()) {
    for (auto& r : recent) {
      const TaskId id = r.load();
      if (id == kNoTask) continue;
      auto s = reader.status(id);
      if (!s) continue;  // kept moving: allowed, and rare
      if (s->status == TaskStatus::unknown) continue;
      ++known;
      if (s->id != id || s->type != "p" + std::to_string(s->priority) || s->queue != q) ++mixed;
    }
  }
  producer.join();
  consumer.join();
  EXPECT_EQ(mixed, 0u);
  EXPECT_GT(known, 0u) << "no reading found a task alive: the test checked nothing";
}

}  // namespace
