// Regression tests for wake routing and delayed-task promotion: each once failed.
//  * a stopped secondary must leave no sleeper bit behind (else producers make futex
//    calls for nobody);
//  * a help wake must go to a process with a sleeper that may help (not to one whose
//    only sleeper is reserved);
//  * delayed tasks must not wait for a busy janitor: idle consumers promote them.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/futex.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace std::chrono_literals;

static Layout lay() {
  Layout l;
  l.task_capacity = 1024;
  l.levels = 4;
  l.payload_bytes = 64;
  l.max_queues = 4;
  l.max_participants = 16;
  return l;
}

// A secondary consumer (home selenium, help general, 2 workers, reserve 1) stops; then
// an enqueue to general makes a futex wake call although nobody sleeps any more.
TEST(WakeRouting, StaleHelpSleepBitAfterSecondaryStops) {
  int stale = 0;
  for (int round = 0; round < 20; ++round) {
    Segment seg = Segment::create_private(lay(), CreateOptions{0600, {"general", "selenium"}}).value();
    Client producer = Client::attach(seg).value();
    QueueId general = seg.find_queue("general").value();
    ConsumerOptions co;
    co.home = {"selenium"};
    co.help = {"general"};
    co.workers = 2;
    co.reserve = 1;
    co.spin = 1;
    co.tick = 5ms;
    {
      auto c = Consumer::create(seg, co).value();
      c->start();
      std::this_thread::sleep_for(30ms);
      c->request_stop();
      ASSERT_TRUE(c->join());
    }
    const auto before = detail::futex_wake_calls();
    TaskOptions o;
    o.queue = general;
    ASSERT_EQ(producer.enqueue_text("x", "", o), Errc::ok);
    stale += detail::futex_wake_calls() != before;
  }
  EXPECT_EQ(stale, 0) << "rounds (of 20) in which an enqueue rang a consumer that had already left";
}

// The janitor lease holder's worker 0 is busy in a long handler: a delayed task (ETA
// 50 ms) for another, idle consumer waits until that handler ends.
TEST(WakeRouting, BusyLeaseHolderStallsDelayedTasks) {
  Segment seg = Segment::create_private(lay(), CreateOptions{0600, {"general", "selenium"}}).value();
  Client producer = Client::attach(seg).value();
  QueueId general = seg.find_queue("general").value();
  QueueId selenium = seg.find_queue("selenium").value();
  ConsumerOptions ca;
  ca.home = {"selenium"};
  ca.workers = 1;
  ca.tick = 10ms;
  auto a = Consumer::create(seg, ca).value();
  std::atomic<int> a_running{0}, release{0};
  a->on("long", [&](TaskContext&) {
    a_running = 1;
    while (!release) std::this_thread::sleep_for(1ms);
    return Outcome::done();
  });
  a->start();  // takes the janitor lease on its first tick
  std::this_thread::sleep_for(50ms);
  TaskOptions so;
  so.queue = selenium;
  ASSERT_EQ(producer.enqueue_text("long", "", so), Errc::ok);
  while (!a_running) std::this_thread::sleep_for(1ms);
  ConsumerOptions cb;
  cb.home = {"general"};
  cb.workers = 1;
  cb.tick = 10ms;
  auto b = Consumer::create(seg, cb).value();
  std::atomic<std::int64_t> ran_at{0};
  b->on("eta", [&](TaskContext&) {
    ran_at = monotonic_ns();
    return Outcome::done();
  });
  b->start();
  TaskOptions go;
  go.queue = general;
  go.after(50ms);
  const std::int64_t t0 = monotonic_ns();
  ASSERT_EQ(producer.enqueue_text("eta", "", go), Errc::ok);
  std::this_thread::sleep_for(500ms);
  const bool ran_in_time = ran_at.load() != 0;
  release = 1;
  while (ran_at.load() == 0 && monotonic_ns() - t0 < 10'000'000'000) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(ran_in_time) << "ETA 50 ms task had not run after 500 ms; it ran " << (ran_at.load() - t0) / 1000000
                           << " ms after enqueue, once the lease holder's handler ended";
  a->request_stop();
  b->request_stop();
  a->join();
  b->join();
}

// Two secondaries help "general": S (home selenium, 2 workers, reserve 1) and H (home
// other, 1 worker). S's helping worker is busy with a long home task while its reserved
// worker sleeps; H sleeps. A general task should wake H; it wakes S (its help bit is
// per process and was set by the now-busy worker), whose reserved worker cannot take
// it, and H sleeps on until its tick.
TEST(WakeRouting, HelpWakeGoesToAProcessWhoseOnlySleeperCannotHelp) {
  Segment seg = Segment::create_private(lay(), CreateOptions{0600, {"general", "selenium", "other"}}).value();
  Client producer = Client::attach(seg).value();
  QueueId general = seg.find_queue("general").value();
  QueueId selenium = seg.find_queue("selenium").value();
  ConsumerOptions cs;
  cs.home = {"selenium"};
  cs.help = {"general"};
  cs.workers = 2;
  cs.reserve = 1;
  cs.spin = 1;
  cs.tick = 10s;
  auto s = Consumer::create(seg, cs).value();
  std::atomic<int> w1_blocked{0}, release{0}, sel_done{0};
  s->on("long", [&](TaskContext& ctx) {
    if (ctx.worker == 1) {
      w1_blocked = 1;
      while (!release) std::this_thread::sleep_for(1ms);
    }
    sel_done.fetch_add(1);
    return Outcome::done();
  });
  ConsumerOptions ch;
  ch.home = {"other"};
  ch.help = {"general"};
  ch.workers = 1;
  ch.spin = 1;
  ch.tick = 10s;
  auto h = Consumer::create(seg, ch).value();
  std::atomic<std::int64_t> gen_ran{0};
  auto gen = [&](TaskContext&) {
    gen_ran = monotonic_ns();
    return Outcome::done();
  };
  s->on("gen", gen);
  h->on("gen", gen);
  s->start();
  h->start();
  auto& sp = detail::core_of(seg).participants[detail::token_index(s->client().token()) - 1];
  auto& hp = detail::core_of(seg).participants[detail::token_index(h->client().token()) - 1];
  TaskOptions so;
  so.queue = selenium;
  for (int i = 0; i < 50 && !w1_blocked; ++i) {
    while (sp.sleepers.load() != 2) std::this_thread::sleep_for(1ms);
    const int before = sel_done.load();
    ASSERT_EQ(producer.enqueue_text("long", "", so), Errc::ok);
    while (!w1_blocked && sel_done.load() == before) std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(w1_blocked.load());
  while (sp.sleepers.load() != 1 || hp.sleepers.load() != 1) std::this_thread::sleep_for(1ms);
  TaskOptions go;
  go.queue = general;
  const std::int64_t t0 = monotonic_ns();
  ASSERT_EQ(producer.enqueue_text("gen", "", go), Errc::ok);
  while (gen_ran.load() == 0 && monotonic_ns() - t0 < 3'000'000'000) std::this_thread::sleep_for(1ms);
  EXPECT_NE(gen_ran.load(), 0) << "the idle helper H was not woken within 3 s (its tick is 10 s)";
  release = 1;
  s->request_stop();
  h->request_stop();
  s->join();
  h->join();
}

struct BurstBoard {
  std::atomic<int> ready{0}, stop{0};
  std::atomic<int> done_by[2]{};
};
// A burst of tasks for two sleeping consumer processes must wake workers in both.
TEST(WakeRouting, BurstWakesEverySleepingProcess) {
  Layout l;
  l.task_capacity = 1024;
  l.levels = 2;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 16;
  auto seg = Segment::create_private(l, CreateOptions{0600, {"work"}}).value();
  QueueId q = seg.find_queue("work").value();
  test::SharedArray<BurstBoard> sh(1);
  BurstBoard& b = sh[0];
  std::vector<pid_t> pids;
  for (int p = 0; p < 2; ++p)
    pids.push_back(test::spawn([&, p] {
      ConsumerOptions co;
      co.home = {"work"};
      co.workers = 4;
      co.tick = 10s;
      auto c = Consumer::create(seg, co).value();
      c->on("job", [&, p](TaskContext&) {
        std::this_thread::sleep_for(10ms);
        b.done_by[p].fetch_add(1);
        return Outcome::done();
      });
      c->start();
      b.ready.fetch_add(1);
      while (!b.stop.load()) std::this_thread::sleep_for(1ms);
      c->request_stop();
      c->join();
      return 0;
    }));
  while (b.ready.load() < 2) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);  // let every worker fall asleep
  auto cli = Client::attach(seg).value();
  TaskOptions o;
  o.queue = q;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 80; ++i) ASSERT_EQ(cli.enqueue_text("job", "", o), Errc::ok);
  while (b.done_by[0].load() + b.done_by[1].load() < 80) std::this_thread::sleep_for(1ms);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  b.stop.store(1);
  test::wait_children(pids);
  std::printf("done by first %d, by second %d, %lld ms (ideal with 8 workers 100 ms)\n", b.done_by[0].load(),
              b.done_by[1].load(), (long long)ms);
  EXPECT_GT(b.done_by[0].load(), 0);
  EXPECT_GT(b.done_by[1].load(), 0);
}

// A batch looks at the sleepers once, after its last task is published, and that one
// look wakes a sleeping consumer (whose tick is far away, so only the wake can start it).
TEST(WakeRouting, BatchWakesASleeperWithOneLook) {
  Segment seg = Segment::create_private(lay(), CreateOptions{0600, {"work"}}).value();
  const QueueId q = seg.find_queue("work").value();
  ConsumerOptions co;
  co.home = {"work"};
  co.spin = 1;
  co.tick = 10s;
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> ran{0};
  c->on("job", [&](TaskContext&) {
    ran.fetch_add(1);
    return Outcome::done();
  });
  c->start();
  ASSERT_TRUE(test::eventually([&] { return detail::core_of(seg).participants[0].sleepers.load() != 0; }, 5s))
      << "the worker never went to sleep";
  Client producer = Client::attach(seg).value();
  std::vector<TaskSpec> specs(6);
  for (auto& s : specs) {
    s.type = "job";
    s.options.queue = q;
  }
  std::vector<TaskId> ids(specs.size());
  const auto before = detail::futex_wake_calls();
  ASSERT_EQ(producer.enqueue_batch(specs, ids), specs.size());
  EXPECT_EQ(detail::futex_wake_calls() - before, 1u) << "a batch should ring once";
  EXPECT_TRUE(test::eventually([&] { return ran.load() == 6; }, 5s)) << "ran " << ran.load() << " of 6";
  c->request_stop();
  EXPECT_TRUE(c->join());
}
