// Rate limits: a burst of tokens at once and then one per interval, a task whose token
// is not due waiting for it delayed (holding it: its next acquire takes no other), a
// queue-wide rate, and rate limits across four consumer processes.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;
using namespace std::chrono_literals;

namespace {

struct Rate : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(256, 2), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();
  SemId api = seg.create_semaphore("api", 56).value();

  TaskId enqueue(bool needs_api = true) {
    TaskOptions o;
    o.queue = q;
    if (needs_api) o.needs[0] = Need{api, 1};
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text("call", "x", o, &id), Errc::ok);
    return id;
  }
  Client::Grant take_and_acquire(Taken& t) {
    EXPECT_TRUE(cli.try_take(q, t));
    return cli.acquire_for(t, std::span<const Need>(t.needs, 2));
  }
  SemaphoreInfo info() {
    for (const auto& s : seg.semaphores())
      if (s.id == api) return s;
    ADD_FAILURE() << "no semaphore";
    return {};
  }
};

TEST_F(Rate, ABurstStartsAtOnceThenOneTokenPerInterval) {
  ASSERT_EQ(cli.set_rate(api, 100, 3), Errc::ok);  // 10 ms apart, 3 at once
  EXPECT_EQ(info().rate, 100);
  EXPECT_EQ(info().burst, 3u);
  std::vector<TaskId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(enqueue());
  const std::int64_t start = monotonic_ns();
  std::vector<Taken> running(3);
  for (auto& t : running) ASSERT_EQ(take_and_acquire(t), Client::Grant::granted);
  for (int i = 3; i < 6; ++i) {
    Taken t;
    ASSERT_EQ(take_and_acquire(t), Client::Grant::parked) << "its token is not due: it waits";
    const TaskInfo s = cli.status(t.id).value();
    EXPECT_EQ(s.status, TaskStatus::delayed);
    EXPECT_EQ(s.attempts, 0) << "waiting for a token is not an attempt";
    // Due (i - 2) intervals after the burst, give or take the time this loop took.
    EXPECT_GE(s.not_before_ns, start + (i - 2) * 10'000'000 - 1'000'000) << i;
    EXPECT_LE(s.not_before_ns, monotonic_ns() + (i - 2) * 10'000'000) << i;
  }
  EXPECT_EQ(info().rate_granted, 6u);
  EXPECT_EQ(info().rate_delayed, 3u);
  for (auto& t : running) {
    ASSERT_TRUE(cli.release_for(t, std::span<const Need>(t.needs, 2)) || true);
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  // Each waited task, once due, runs on the token it waited for: no new one is taken.
  ASSERT_EQ(cli.promote_due(monotonic_ns() + 1'000'000'000), 3u);
  for (int i = 0; i < 3; ++i) {
    Taken t;
    ASSERT_EQ(take_and_acquire(t), Client::Grant::granted);
    EXPECT_EQ(t.attempt, 1);
    (void)cli.release_for(t, std::span<const Need>(t.needs, 2));
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  EXPECT_EQ(info().rate_granted, 6u) << "one token per start";
}

TEST_F(Rate, ARetryTakesANewToken) {
  ASSERT_EQ(cli.set_rate(api, 1000, 1), Errc::ok);
  TaskOptions o;
  o.queue = q;
  o.needs[0] = Need{api, 1};
  o.max_attempts = 2;
  ASSERT_EQ(cli.enqueue_text("call", "x", o), Errc::ok);
  Taken t;
  ASSERT_EQ(take_and_acquire(t), Client::Grant::granted);
  (void)cli.release_for(t, std::span<const Need>(t.needs, 2));
  ASSERT_EQ(cli.requeue(t), Errc::ok);
  Taken again;
  const Client::Grant g = take_and_acquire(again);
  EXPECT_EQ(info().rate_granted, 2u);
  if (g == Client::Grant::parked) {  // its token is a millisecond away: it waits, holding it
    ASSERT_TRUE(shmsched::test::eventually([&] { return cli.promote_due(monotonic_ns()) == 1; }, 1s));
    ASSERT_EQ(take_and_acquire(again), Client::Grant::granted);
    EXPECT_EQ(info().rate_granted, 2u);
  }
}

TEST_F(Rate, AQueueRateGatesEveryTaskOfTheQueue) {
  ASSERT_EQ(cli.set_queue_rate(q, 50, 2), Errc::ok);
  EXPECT_TRUE(cli.queue_rated(q));
  for (int i = 0; i < 3; ++i) enqueue(false);
  Taken t;
  ASSERT_EQ(take_and_acquire(t), Client::Grant::granted);
  ASSERT_EQ(take_and_acquire(t), Client::Grant::granted);
  ASSERT_EQ(take_and_acquire(t), Client::Grant::parked);
  EXPECT_EQ(inspect(seg).queues[0].rate_delayed, 1u);
  ASSERT_EQ(cli.set_queue_rate(q, 0, 1), Errc::ok);
  EXPECT_FALSE(cli.queue_rated(q));
}

TEST_F(Rate, BadRatesAreRefused) {
  EXPECT_EQ(cli.set_rate(SemId{200}, 10, 1), Errc::unknown_semaphore);
  EXPECT_EQ(cli.set_rate(api, -1, 1), Errc::invalid_argument);
  EXPECT_EQ(cli.set_rate(api, 10, 0), Errc::invalid_argument);
  EXPECT_EQ(cli.set_queue_rate(QueueId{99}, 10, 1), Errc::unknown_queue);
  EXPECT_EQ(info().rate, 0) << "nothing changed";
}

// Four consumer processes share a rate of 200 a second with a burst of 5: the k-th
// start (in time order) is never earlier than (k - 4) intervals after the first.
TEST(RateProcesses, FourConsumersNeverStartMoreThanTheRateAllows) {
  const int n = static_cast<int>(shmsched::test::scaled(300, 60));
  Segment seg = Segment::create_private(small_test_layout(1024, 2), CreateOptions{0600, {"general"}}).value();
  const SemId api = seg.create_semaphore("api", 56).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  ASSERT_EQ(cli.set_rate(api, 200, 5), Errc::ok);
  auto* starts = static_cast<std::atomic<std::int64_t>*>(
      ::mmap(nullptr, sizeof(std::int64_t) * (n + 1), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(starts, MAP_FAILED);
  auto* count = &starts[n];
  count->store(0);
  TaskOptions o;
  o.queue = QueueRef("general");
  o.needs[0] = Need{api, 1};
  for (int i = 0; i < n; ++i) ASSERT_EQ(cli.enqueue_text("call", "x", o), Errc::ok);
  std::vector<pid_t> kids;
  for (int p = 0; p < 4; ++p)
    kids.push_back(shmsched::test::spawn([&] {
      ConsumerOptions co;
      co.home = {"general"};
      co.workers = 2;
      co.tick = 20ms;
      auto c = Consumer::create(seg, co).value();
      c->on("call", [&](TaskContext&) {
        starts[count->fetch_add(1)].store(monotonic_ns());
        return Outcome::done();
      });
      c->start();
      while (count->load() < n) std::this_thread::sleep_for(5ms);
      c->request_stop();
      c->join();
      return 0;
    }));
  for (const auto& st : shmsched::test::wait_children(kids, 120s)) ASSERT_TRUE(st.ok()) << describe(st);
  ASSERT_EQ(count->load(), n) << "every task ran once";
  std::vector<std::int64_t> t(starts, starts + n);
  std::sort(t.begin(), t.end());
  constexpr std::int64_t kInterval = 5'000'000, kSlack = 20'000'000;
  for (int k = 5; k < n; ++k)
    ASSERT_GE(t[k] - t[0], (k - 4) * kInterval - kSlack) << "start " << k << " came too early";
  const SemaphoreInfo s = seg.semaphores()[0];
  EXPECT_EQ(s.rate_granted, static_cast<std::uint64_t>(n));
  EXPECT_GT(s.rate_delayed, 0u);
  ::munmap(starts, sizeof(std::int64_t) * (n + 1));
}

}  // namespace
