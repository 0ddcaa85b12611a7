#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/futex.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace std::chrono_literals;

namespace {

Layout layout() {
  Layout l;
  l.task_capacity = 4096;
  l.levels = 4;
  l.payload_bytes = 64;
  l.max_queues = 4;
  l.max_participants = 16;
  return l;
}

using shmsched::test::eventually;

struct ConsumerFixture : ::testing::Test {
  Segment seg = Segment::create_private(layout(), CreateOptions{0600, {"general", "selenium"}}).value();
  Client producer = Client::attach(seg).value();
  QueueId general = seg.find_queue("general").value();
  QueueId selenium = seg.find_queue("selenium").value();
  TaskOptions opts(QueueId q, std::uint8_t prio = 0) {
    TaskOptions o;
    o.queue = q;
    o.priority = prio;
    return o;
  }
};

}  // namespace

// Every task runs once, with consumers taking one at a time and taking ahead; after
// join no task is left held (running) by the consumer.
TEST_F(ConsumerFixture, RunsEveryTaskOnceWithTypedHandler) {
  for (const unsigned take_ahead : {1u, 8u}) {
    SCOPED_TRACE(take_ahead);
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 2;
    co.take_ahead = take_ahead;
    auto c = Consumer::create(seg, co).value();
    std::vector<std::atomic<int>> seen(500);
    c->on_value<int>("count", [&](const int& v, TaskContext&) {
      seen[v].fetch_add(1);
      return Outcome::done();
    });
    c->start();
    for (int i = 0; i < 500; ++i) ASSERT_EQ(producer.enqueue_value("count", i, opts(general, i % 4)), Errc::ok);
    ASSERT_TRUE(eventually([&] { return c->stats().done == 500; }));
    c->request_stop();
    EXPECT_TRUE(c->join());
    for (auto& s : seen) EXPECT_EQ(s.load(), 1);
    const auto& core = detail::core_of(seg);
    for (std::uint32_t i = 0; i < core.capacity; ++i) {
      const TaskState st = detail::state_of(core.ctrl[i].state.load());
      EXPECT_TRUE(st == TaskState::free || st == TaskState::virgin) << "record " << i;
    }
  }
}

TEST_F(ConsumerFixture, TakeAheadOutOfRangeIsRefused) {
  for (unsigned n : {0u, Client::kMaxTakeAhead + 1}) {
    ConsumerOptions co;
    co.home = {"general"};
    co.take_ahead = n;
    auto c = Consumer::create(seg, co);
    ASSERT_FALSE(c) << n;
    EXPECT_EQ(c.error().code(), Errc::invalid_argument);
  }
}

// A consumer that stops while it holds tasks claimed ahead gives them back at join:
// another consumer runs them, each on its first attempt.
TEST_F(ConsumerFixture, TakeAheadTasksHeldAtStopGoToTheNextConsumer) {
  for (int i = 0; i < 20; ++i) ASSERT_EQ(producer.enqueue_value("count", i, opts(general, 1)), Errc::ok);
  std::atomic<int> first_ran{0};
  {
    ConsumerOptions co;
    co.home = {"general"};
    co.take_ahead = 16;
    auto c = Consumer::create(seg, co).value();
    std::atomic<bool> stop_now{false};
    c->on_value<int>("count", [&](const int&, TaskContext&) {
      first_ran.fetch_add(1);
      // The first task's take claimed sixteen; stop while fifteen are held.
      stop_now.store(true);
      while (!c->stopping()) std::this_thread::sleep_for(1ms);
      return Outcome::done();
    });
    c->start();
    ASSERT_TRUE(eventually([&] { return stop_now.load(); }));
    // Sixteen are claimed (one running, fifteen held): another Client's take gets the
    // seventeenth.
    Client probe = Client::attach(seg, Role::consumer).value();
    Taken t;
    ASSERT_TRUE(probe.try_take(general, t));
    int v = -1;
    ASSERT_TRUE(payload_to(t.payload, v));
    EXPECT_EQ(v, 16);
    ASSERT_EQ(probe.complete(t), Errc::ok);
    c->request_stop();
    EXPECT_TRUE(c->join());
  }
  EXPECT_EQ(first_ran.load(), 1);
  std::atomic<int> attempts_ok{0}, ran{0};
  ConsumerOptions co;
  co.home = {"general"};
  auto next = Consumer::create(seg, co).value();
  next->on("count", [&](TaskContext& ctx) {
    if (ctx.task.attempt == 1) attempts_ok.fetch_add(1);
    ran.fetch_add(1);
    return Outcome::done();
  });
  next->start();
  ASSERT_TRUE(eventually([&] { return ran.load() == 18; }));
  next->request_stop();
  EXPECT_TRUE(next->join());
  EXPECT_EQ(ran.load(), 18);
  EXPECT_EQ(attempts_ok.load(), 18) << "tasks held and given back were not charged an attempt";
}

TEST_F(ConsumerFixture, UnknownTypeIsDeadLetteredWithReason) {
  ConsumerOptions co;
  co.home = {"general"};
  auto c = Consumer::create(seg, co).value();
  c->start();
  TaskId id;
  ASSERT_EQ(producer.enqueue_text("mystery", "x", opts(general), &id), Errc::ok);
  ASSERT_TRUE(eventually([&] { return c->stats().no_handler == 1; }));
  c->request_stop();
  c->join();
  auto dl = producer.dead_letters();
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_EQ(dl[0].id, id);
  EXPECT_EQ(dl[0].type_name, "mystery");
  EXPECT_NE(dl[0].reason.find("no handler for type 'mystery'"), std::string::npos);
}

TEST_F(ConsumerFixture, FailingTaskIsRetriedThenDeadLettered) {
  ConsumerOptions co;
  co.home = {"general"};
  co.tick = 10ms;
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> runs{0};
  c->on("flaky", [&](TaskContext& ctx) {
    runs.fetch_add(1);
    EXPECT_EQ(ctx.task.attempt, runs.load());
    throw std::runtime_error("boom " + std::to_string(ctx.task.attempt));
    return Outcome::done();
  });
  c->start();
  TaskOptions o = opts(general);
  o.max_attempts = 3;
  o.retry.delay = 1ms;
  o.retry.jitter_pct = 0;
  ASSERT_EQ(producer.enqueue_text("flaky", "", o), Errc::ok);
  ASSERT_TRUE(eventually([&] { return producer.dead_letters().size() == 1; }));
  c->request_stop();
  c->join();
  EXPECT_EQ(runs.load(), 3);
  auto dl = producer.dead_letters();
  EXPECT_EQ(dl[0].attempts, 3);
  EXPECT_NE(dl[0].reason.find("boom 3"), std::string::npos) << dl[0].reason;
  const LevelStats st = producer.level_stats(general, 0);
  EXPECT_EQ(st.failed, 3u);
  EXPECT_EQ(st.retried, 2u);
  EXPECT_EQ(st.dead, 1u);
  // Requeue from the dead letters: it runs again (and fails again, three times).
  EXPECT_EQ(producer.requeue_all_dead(), 1u);
  EXPECT_TRUE(producer.dead_letters().empty());
  EXPECT_EQ(producer.purge_dead(), 0u);
}

TEST_F(ConsumerFixture, SleepingConsumerIsWokenByEnqueue) {
  ConsumerOptions co;
  co.home = {"general"};
  co.spin = 1;
  co.tick = 10s;  // a timeout wake-up would fail the test
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> ran{0};
  c->on("ping", [&](TaskContext&) {
    ran.fetch_add(1);
    return Outcome::done();
  });
  c->start();
  auto& me = detail::core_of(seg).participants[detail::token_index(c->client().token()) - 1];
  ASSERT_TRUE(eventually([&] { return me.sleepers.load() == 1; }));
  ASSERT_EQ(producer.enqueue_text("ping", "", opts(general)), Errc::ok);
  ASSERT_TRUE(eventually([&] { return ran.load() == 1; }, 5s)) << "the sleeper was not woken";
  c->request_stop();
  EXPECT_TRUE(c->join());
}

TEST_F(ConsumerFixture, NoSleeperMeansNoSystemCallOnEnqueue) {
  const auto before = detail::futex_wake_calls();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(producer.enqueue_text("x", "", opts(general)), Errc::ok);
  EXPECT_EQ(detail::futex_wake_calls(), before);
}
