// Batch handlers: up to max_tasks tasks of one type in one handler call, each finished
// by its own outcome, tasks of other types run by their own handlers, waiting for more
// up to max_wait, semaphores (a batch holds no more permits than its tasks need), an
// exception failing the batch, and a consumer killed in the middle of a batch (its tasks
// run again in another consumer: none lost).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace std::chrono_literals;
using shmsched::test::eventually;
using shmsched::test::SharedArray;
using shmsched::test::small_test_layout;

namespace {

std::string text(const Taken& t) {
  return std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size());
}

struct Batch : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(1024, 2, 32), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer).value();
  QueueId q = seg.find_queue("general").value();
  std::mutex m;
  std::vector<std::size_t> sizes;  // of each batch, in call order

  void enqueue(std::string_view type, std::string_view payload, std::uint16_t attempts = 3, Need need = {}) {
    TaskOptions o;
    o.queue = q;
    o.max_attempts = attempts;
    o.needs[0] = need;
    ASSERT_EQ(cli.enqueue_text(type, payload, o), Errc::ok);
  }
  std::unique_ptr<Consumer> consumer(unsigned workers = 1) {
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = workers;
    co.tick = 20ms;
    return Consumer::create(seg, co).value();
  }
  LevelStats stats() { return cli.level_stats(q, 0); }
};

TEST_F(Batch, UpToMaxTasksOfTheTypeInOneCallAndOtherTypesByTheirOwnHandlers) {
  for (int i = 0; i < 10; ++i) enqueue("item", "i" + std::to_string(i));
  enqueue("other", "o1");
  enqueue("other", "o2");
  auto c = consumer();
  std::vector<std::string> seen, others;
  c->on_batch("item", 4, 0ns, [&](BatchContext& ctx) {
    std::lock_guard g(m);
    sizes.push_back(ctx.tasks.size());
    EXPECT_EQ(ctx.tasks.size(), ctx.outcomes.size());
    for (const Taken& t : ctx.tasks) seen.push_back(text(t));
  });
  c->on("other", [&](TaskContext& ctx) {
    std::lock_guard g(m);
    others.push_back(text(ctx.task));
    return Outcome::done();
  });
  c->start();
  ASSERT_TRUE(eventually([&] { return stats().done == 12; }, 10s)) << stats().done;
  c->request_stop();
  ASSERT_TRUE(c->join());
  std::lock_guard g(m);
  EXPECT_EQ(sizes.front(), 4u) << "all were queued: the first batch is full";
  for (std::size_t s : sizes) EXPECT_LE(s, 4u);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end()) << "each once";
  EXPECT_EQ(others.size(), 2u);
  EXPECT_EQ(c->stats().batches, sizes.size());
  EXPECT_EQ(c->stats().done, 12u);
}

TEST_F(Batch, EachTaskIsFinishedByItsOwnOutcome) {
  enqueue("item", "ok");
  enqueue("item", "again");
  enqueue("item", "bad", 2);
  enqueue("item", "ok2");
  auto c = consumer();
  std::atomic<int> calls{0};
  c->on_batch("item", 8, 0ns, [&](BatchContext& ctx) {
    ++calls;
    for (std::size_t i = 0; i < ctx.tasks.size(); ++i) {
      const std::string p = text(ctx.tasks[i]);
      if (p == "again" && ctx.tasks[i].attempt == 1) ctx.outcomes[i] = Outcome::retry(0ms, "later");
      if (p == "bad") ctx.outcomes[i] = Outcome::fail("broken input");
    }
  });
  c->start();
  ASSERT_TRUE(eventually([&] { return stats().done == 3 && stats().dead == 1; }, 10s))
      << stats().done << " done, " << stats().dead << " dead";
  c->request_stop();
  ASSERT_TRUE(c->join());
  const ConsumerStats s = c->stats();
  EXPECT_EQ(s.done, 3u);
  EXPECT_EQ(s.dead_lettered, 1u);
  EXPECT_EQ(s.retried, 2u) << "'again' once, 'bad' once before it ran out of attempts";
  auto dl = cli.dead_letters(10);
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_NE(dl[0].reason.find("broken input"), std::string::npos) << dl[0].reason;
  EXPECT_GE(calls.load(), 2);
}

TEST_F(Batch, ABatchWaitsUpToMaxWaitForMoreTasks) {
  enqueue("item", "first");
  auto c = consumer();
  c->on_batch("item", 5, 10s, [&](BatchContext& ctx) {
    std::lock_guard g(m);
    sizes.push_back(ctx.tasks.size());
  });
  c->start();
  std::this_thread::sleep_for(50ms);
  for (int i = 0; i < 4; ++i) enqueue("item", "later");
  ASSERT_TRUE(eventually([&] { return stats().done == 5; }, 20s)) << stats().done;
  c->request_stop();
  ASSERT_TRUE(c->join());
  std::lock_guard g(m);
  ASSERT_EQ(sizes.size(), 1u) << "the four that came within max_wait joined the first";
  EXPECT_EQ(sizes[0], 5u);
}

TEST_F(Batch, ABatchHoldsNoMorePermitsThanItsTasksNeed) {
  const SemId db = seg.create_semaphore("db", 2).value();
  for (int i = 0; i < 12; ++i) enqueue("item", "x", 3, Need{db, 1});
  auto c = consumer(2);
  std::atomic<int> most{0};
  c->on_batch("item", 8, 0ns, [&](BatchContext& ctx) {
    for (const auto& s : seg.semaphores())
      if (s.id == db) most = std::max<int>(most, static_cast<int>(s.in_use));
    std::lock_guard g(m);
    sizes.push_back(ctx.tasks.size());
    std::this_thread::sleep_for(2ms);
  });
  c->start();
  ASSERT_TRUE(eventually([&] { return stats().done == 12; }, 20s)) << stats().done;
  c->request_stop();
  ASSERT_TRUE(c->join());
  EXPECT_LE(most.load(), 2) << "never more than the capacity held";
  std::lock_guard g(m);
  for (std::size_t s : sizes) EXPECT_LE(s, 2u) << "tasks whose permits were not free left the batch (parked)";
  for (const auto& s : seg.semaphores())
    if (s.id == db) EXPECT_EQ(s.in_use, 0u);
}

TEST_F(Batch, AnExceptionFailsEveryTaskOfTheBatch) {
  for (int i = 0; i < 3; ++i) enqueue("item", "x", 1);
  auto c = consumer();
  c->on_batch("item", 8, 0ns, [&](BatchContext&) { throw std::runtime_error("database down"); });
  c->start();
  ASSERT_TRUE(eventually([&] { return stats().dead == 3; }, 10s)) << stats().dead;
  c->request_stop();
  ASSERT_TRUE(c->join());
  for (const auto& d : cli.dead_letters(10)) EXPECT_NE(d.reason.find("database down"), std::string::npos) << d.reason;
}

// A consumer process killed inside its batch handler: the reaper puts the batch's tasks
// back (an attempt counted), another consumer runs them, and every task is done.
TEST_F(Batch, AConsumerKilledMidBatchLosesNoTask) {
  constexpr int kTasks = 40;
  for (int i = 0; i < kTasks; ++i) enqueue("item", std::to_string(i), 3);
  SharedArray<std::atomic<int>> done(kTasks);
  const pid_t victim = shmsched::test::spawn([&] {
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 1;
    auto c = Consumer::create(seg, co).value();
    c->on_batch("item", 8, 0ns, [&](BatchContext& ctx) {
      // The second batch dies half way: some of it marked done here, none completed.
      static int calls = 0;
      if (++calls == 2) {
        done[std::stoi(text(ctx.tasks[0]))].fetch_add(1);
        ::kill(::getpid(), SIGKILL);
      }
      for (const Taken& t : ctx.tasks) done[std::stoi(text(t))].fetch_add(1);
    });
    c->start();
    std::this_thread::sleep_for(30s);
    return 3;
  });
  const auto st = shmsched::test::wait_child(victim, 30s);
  ASSERT_TRUE(st.signaled && st.signal == SIGKILL) << shmsched::test::describe(st);
  Client reaper = Client::attach(seg, Role::consumer).value();
  const ReapReport rep = reaper.reap_dead();
  EXPECT_GE(rep.requeued, 1u) << "the killed batch's tasks went back";
  auto c = consumer();
  c->on_batch("item", 8, 0ns, [&](BatchContext& ctx) {
    for (const Taken& t : ctx.tasks) done[std::stoi(text(t))].fetch_add(1);
  });
  c->start();
  ASSERT_TRUE(eventually([&] { return stats().done == kTasks; }, 20s)) << stats().done;
  c->request_stop();
  ASSERT_TRUE(c->join());
  for (int i = 0; i < kTasks; ++i) EXPECT_GE(done[i].load(), 1) << "task " << i << " never ran";
  EXPECT_EQ(stats().dead, 0u);
}

}  // namespace
