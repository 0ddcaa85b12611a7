#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "shmsched/detail/core.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace std::chrono_literals;

namespace {

Layout layout() {
  Layout l;
  l.task_capacity = 1024;
  l.levels = 4;
  l.payload_bytes = 32;
  l.max_queues = 4;
  l.max_participants = 16;
  l.max_semaphores = 8;
  return l;
}

using shmsched::test::eventually;

struct SemFixture : ::testing::Test {
  Segment seg = Segment::create_private(layout(), CreateOptions{0600, {"general", "selenium"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId general = seg.find_queue("general").value();
  SemId sel = seg.create_semaphore("selenium", 5).value();
  std::uint32_t in_use(SemId s) {
    for (auto& i : seg.semaphores())
      if (i.id == s) return i.in_use;
    return 999;
  }
};

}  // namespace

TEST_F(SemFixture, CreateIsIdempotentAndNamesAreChecked) {
  EXPECT_EQ(seg.create_semaphore("selenium", 9).value(), sel);  // existing: unchanged
  EXPECT_EQ(seg.semaphores().at(0).capacity, 5u);
  EXPECT_EQ(seg.find_semaphore("selenium").value(), sel);
  EXPECT_EQ(seg.find_semaphore("nope").code(), Errc::unknown_semaphore);
  EXPECT_EQ(seg.create_semaphore("bad/name", 1).code(), Errc::invalid_name);
  EXPECT_EQ(seg.create_semaphore("big", 57).code(), Errc::invalid_argument);
}

TEST_F(SemFixture, TryAcquireNeverExceedsCapacityAndReleaseReturns) {
  for (int i = 0; i < 5; ++i) EXPECT_EQ(cli.try_acquire(sel), Errc::ok);
  EXPECT_EQ(cli.try_acquire(sel), Errc::unavailable);
  EXPECT_EQ(in_use(sel), 5u);
  EXPECT_TRUE(cli.verify_permits().ok());
  EXPECT_EQ(cli.release(sel, 2), Errc::ok);
  EXPECT_EQ(in_use(sel), 3u);
  EXPECT_EQ(cli.try_acquire(sel, 3), Errc::unavailable);  // all or nothing
  EXPECT_EQ(in_use(sel), 3u);
  EXPECT_EQ(cli.try_acquire(sel, 2), Errc::ok);
  EXPECT_EQ(cli.release(sel, 5), Errc::ok);
  EXPECT_EQ(in_use(sel), 0u);
  EXPECT_EQ(cli.release(sel, 1), Errc::invalid_argument);  // not held
}

TEST_F(SemFixture, ShrinkStopsNewGrantsUntilBelowAndGrowReleases) {
  for (int i = 0; i < 4; ++i) ASSERT_EQ(cli.try_acquire(sel), Errc::ok);
  ASSERT_EQ(cli.set_capacity(sel, 2), Errc::ok);
  EXPECT_EQ(in_use(sel), 4u);  // nothing running is taken away
  EXPECT_EQ(cli.try_acquire(sel), Errc::unavailable);
  ASSERT_EQ(cli.release(sel, 3), Errc::ok);  // in use 1 < 2
  EXPECT_EQ(cli.try_acquire(sel), Errc::ok);
  EXPECT_EQ(cli.try_acquire(sel), Errc::unavailable);
  ASSERT_EQ(cli.set_capacity(sel, 3), Errc::ok);
  EXPECT_EQ(cli.try_acquire(sel), Errc::ok);
  EXPECT_EQ(cli.set_capacity(sel, 57), Errc::invalid_argument);
  EXPECT_EQ(cli.set_capacity(77, 1), Errc::unknown_semaphore);
}

TEST_F(SemFixture, ThreadsNeverExceedCapacity) {
  std::atomic<int> inside{0}, max_inside{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        if (cli.acquire(sel, 1, 5s) != Errc::ok) {
          ADD_FAILURE() << "acquire timed out";
          return;
        }
        const int now = inside.fetch_add(1) + 1;
        int m = max_inside.load();
        while (now > m && !max_inside.compare_exchange_weak(m, now)) {
        }
        EXPECT_LE(now, 5);
        inside.fetch_sub(1);
        ASSERT_EQ(cli.release(sel, 1), Errc::ok);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_LE(max_inside.load(), 5);
  EXPECT_EQ(in_use(sel), 0u);
}

TEST_F(SemFixture, AcquireTimesOutAndWakesOnRelease) {
  ASSERT_EQ(cli.try_acquire(sel, 4), Errc::ok);
  std::atomic<bool> holding{false};
  std::thread releaser([&] {  // permits belong to the thread that took them
    ASSERT_EQ(cli.try_acquire(sel, 1), Errc::ok);
    holding = true;
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(cli.release(sel, 1), Errc::ok);
  });
  while (!holding) std::this_thread::yield();
  EXPECT_EQ(cli.acquire(sel, 1, 20ms), Errc::timeout);
  EXPECT_EQ(cli.release(sel, 5), Errc::invalid_argument);  // this thread holds only 4
  EXPECT_EQ(cli.acquire(sel, 1, 10s), Errc::ok);
  releaser.join();
  EXPECT_EQ(in_use(sel), 5u);  // the refused release changed nothing
  EXPECT_EQ(cli.release(sel, 5), Errc::ok);
  EXPECT_EQ(in_use(sel), 0u);
}

TEST_F(SemFixture, EnqueueRejectsUnknownSemaphoreAndNeedAboveCapacity) {
  TaskOptions o;
  o.queue = general;
  o.needs[0] = Need{7, 1};  // no such semaphore
  EXPECT_EQ(cli.enqueue_text("t", "", o), Errc::unknown_semaphore);
  o.needs[0] = Need{sel, 6};
  EXPECT_EQ(cli.enqueue_text("t", "", o), Errc::need_exceeds_capacity);
  o.needs[0] = Need{sel, 5};
  EXPECT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
}

TEST_F(SemFixture, ParkedTasksRunAsPermitsFreeAndCapacityHolds) {
  // 40 tasks, capacity 5, 4 workers: at most 5 run at once, all complete, none waits
  // for a timer (the tick is far longer than the whole run may take).
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 4;
  co.tick = 60s;
  auto c = Consumer::create(seg, co).value();
  ASSERT_TRUE(c->needs("browse", {{"selenium", 1}}).ok());
  EXPECT_EQ(c->needs("browse", {{"selenium", 6}}).code(), Errc::need_exceeds_capacity);
  EXPECT_EQ(c->needs("browse", {{"nope", 1}}).code(), Errc::unknown_semaphore);
  ASSERT_TRUE(cli.set_capacity(sel, 2) == Errc::ok);  // fewer permits than workers: parking happens
  std::atomic<int> inside{0}, max_inside{0}, ran{0};
  c->on("browse", [&](TaskContext&) {
    const int now = inside.fetch_add(1) + 1;
    int m = max_inside.load();
    while (now > m && !max_inside.compare_exchange_weak(m, now)) {
    }
    std::this_thread::sleep_for(2ms);
    inside.fetch_sub(1);
    ran.fetch_add(1);
    return Outcome::done();
  });
  TaskOptions o;
  o.queue = general;
  for (int i = 0; i < 40; ++i) ASSERT_EQ(cli.enqueue_text("browse", "", o), Errc::ok);
  c->start();
  ASSERT_TRUE(eventually([&] { return ran.load() == 40; }, 20s)) << "ran " << ran.load();
  EXPECT_LE(max_inside.load(), 2);
  EXPECT_GT(c->stats().parked, 0u) << "with 4 workers and 2 permits some task must have parked";
  c->request_stop();
  EXPECT_TRUE(c->join());
  EXPECT_EQ(in_use(sel), 0u);
  EXPECT_TRUE(cli.verify_permits().ok()) << cli.verify_permits().error().message();
}

TEST_F(SemFixture, MultiSemaphoreNeedsAllOrNothingNoDeadlock) {
  SemId gpu = seg.create_semaphore("gpu", 1).value();
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 3;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> ran{0};
  c->on("both", [&](TaskContext&) {
    std::this_thread::sleep_for(1ms);
    ran.fetch_add(1);
    return Outcome::done();
  });
  c->start();
  TaskOptions a, b;
  a.queue = b.queue = general;
  a.needs[0] = Need{sel, 1};
  a.needs[1] = Need{gpu, 1};
  b.needs[0] = Need{gpu, 1};  // the other order
  b.needs[1] = Need{sel, 1};
  for (int i = 0; i < 30; ++i) ASSERT_EQ(cli.enqueue_text("both", "", i % 2 ? a : b), Errc::ok);
  ASSERT_TRUE(eventually([&] { return ran.load() == 30; }, 20s)) << "ran " << ran.load();
  c->request_stop();
  c->join();
  EXPECT_EQ(in_use(sel), 0u);
  EXPECT_EQ(in_use(gpu), 0u);
}

TEST_F(SemFixture, QueueLimitBoundsRunningTasksAcrossWorkers) {
  SemId limit = 0;
  EXPECT_FALSE(cli.queue_limit(general, limit));
  ASSERT_EQ(cli.set_queue_limit(general, 3), Errc::ok);
  ASSERT_TRUE(cli.queue_limit(general, limit));
  std::uint32_t capacity = 0;
  for (const auto& m : seg.semaphores())
    if (m.id == limit) capacity = m.capacity;
  EXPECT_EQ(capacity, 3u) << "the limit is a semaphore of capacity 3";
  EXPECT_FALSE(cli.queue_limit(99, limit));
  EXPECT_EQ(cli.set_queue_limit(99, 3), Errc::unknown_queue);
  EXPECT_EQ(cli.set_queue_limit(general, 57), Errc::invalid_argument);
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 6;
  co.tick = 60s;
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> inside{0}, max_inside{0}, ran{0};
  c->on("job", [&](TaskContext&) {
    const int now = inside.fetch_add(1) + 1;
    int m = max_inside.load();
    while (now > m && !max_inside.compare_exchange_weak(m, now)) {
    }
    std::this_thread::sleep_for(2ms);
    inside.fetch_sub(1);
    ran.fetch_add(1);
    return Outcome::done();
  });
  TaskOptions o;
  o.queue = general;
  for (int i = 0; i < 60; ++i) ASSERT_EQ(cli.enqueue_text("job", "", o), Errc::ok);
  c->start();
  ASSERT_TRUE(eventually([&] { return ran.load() == 60; }, 20s)) << "ran " << ran.load();
  EXPECT_LE(max_inside.load(), 3);
  EXPECT_GE(max_inside.load(), 2) << "six workers should have run more than one at a time";
  c->request_stop();
  c->join();
  EXPECT_EQ(cli.set_queue_limit(general, 0), Errc::ok);
  EXPECT_FALSE(cli.queue_limit(general, limit));
}

TEST_F(SemFixture, RaiiPermitReleasesOnScopeExitAndMove) {
  {
    auto p = Permit::acquire(cli, sel, 3, 1s);
    ASSERT_TRUE(p.ok());
    EXPECT_TRUE(p->held());
    EXPECT_EQ(in_use(sel), 3u);
    Permit moved = std::move(*p);
    EXPECT_FALSE(p->held());
    EXPECT_EQ(in_use(sel), 3u);
    auto q = Permit::try_acquire(cli, sel, 3);
    EXPECT_EQ(q.code(), Errc::unavailable);  // only 2 left
    EXPECT_EQ(in_use(sel), 3u);
  }
  EXPECT_EQ(in_use(sel), 0u);
  auto r = Permit::try_acquire(cli, sel, 5);
  ASSERT_TRUE(r.ok());
  r->release();
  r->release();  // idempotent
  EXPECT_EQ(in_use(sel), 0u);
  EXPECT_EQ(Permit::acquire(cli, 77, 1, 1ms).code(), Errc::unknown_semaphore);
}

// A task that held permits of two semaphores frees both at its release: a task parked
// on each must get its chance, not only the first one found (the other would wait for
// the janitor's tick while its permit is free).
TEST_F(SemFixture, ReleaseOfTwoSemaphoresLeavesNoParkedTaskBehindAFreePermit) {
  SemId gpu = seg.create_semaphore("gpu", 1).value();
  ASSERT_EQ(cli.set_capacity(sel, 1), Errc::ok);
  TaskOptions both, on_sel, on_gpu;
  both.queue = on_sel.queue = on_gpu.queue = general;
  both.needs[0] = Need{sel, 1};
  both.needs[1] = Need{gpu, 1};
  on_sel.needs[0] = Need{sel, 1};
  on_gpu.needs[0] = Need{gpu, 1};
  // `a` holds both semaphores; a task parks behind each of them.
  Taken a, b, c;
  auto hold_both_and_park_two = [&] {
    ASSERT_EQ(cli.enqueue_text("both", "", both), Errc::ok);
    ASSERT_EQ(cli.enqueue_text("sel", "", on_sel), Errc::ok);
    ASSERT_EQ(cli.enqueue_text("gpu", "", on_gpu), Errc::ok);
    ASSERT_TRUE(cli.try_take(general, a));
    ASSERT_EQ(cli.acquire_for(a, a.needs), Client::Grant::granted);
    ASSERT_TRUE(cli.try_take(general, b));
    ASSERT_EQ(cli.acquire_for(b, b.needs), Client::Grant::parked);
    ASSERT_TRUE(cli.try_take(general, c));
    ASSERT_EQ(cli.acquire_for(c, c.needs), Client::Grant::parked);
  };
  hold_both_and_park_two();
  ASSERT_FALSE(HasFatalFailure());
  Taken none;
  ASSERT_FALSE(cli.try_take(general, none)) << "both parked tasks must be off the queue";

  // Released with a hand-over: one parked task comes back as `next`, the other goes
  // back to the queue now.
  Taken next;
  ASSERT_TRUE(cli.release_for(a, a.needs, &next));
  ASSERT_EQ(cli.complete(a), Errc::ok);
  Taken other;
  ASSERT_TRUE(cli.try_take(general, other)) << "the task parked on the second semaphore was left parked";
  EXPECT_NE(other.id, next.id);
  for (Taken* t : {&next, &other}) {
    ASSERT_EQ(cli.acquire_for(*t, t->needs), Client::Grant::granted);
    cli.release_for(*t, t->needs);
    ASSERT_EQ(cli.complete(*t), Errc::ok);
  }
  EXPECT_EQ(in_use(sel), 0u);
  EXPECT_EQ(in_use(gpu), 0u);

  // Without a hand-over the same holds: both go back to the queue.
  hold_both_and_park_two();
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_FALSE(cli.release_for(a, a.needs));
  ASSERT_EQ(cli.complete(a), Errc::ok);
  int back = 0;
  while (cli.try_take(general, other)) {
    ++back;
    ASSERT_EQ(cli.acquire_for(other, other.needs), Client::Grant::granted);
    cli.release_for(other, other.needs);
    ASSERT_EQ(cli.complete(other), Errc::ok);
  }
  EXPECT_EQ(back, 2) << "every task parked behind a freed permit goes back to its queue";
}

// A semaphore named twice in one need list is one need of the sum: refused at enqueue
// when the sum is above the capacity, stored merged when it fits.
TEST_F(SemFixture, DuplicateNeedsAreMergedAndCheckedAgainstTheCapacity) {
  ASSERT_EQ(cli.set_capacity(sel, 1), Errc::ok);
  TaskOptions o;
  o.queue = general;
  o.needs[0] = Need{sel, 1};
  o.needs[1] = Need{sel, 1};
  EXPECT_EQ(cli.enqueue_text("t", "", o), Errc::need_exceeds_capacity);
  ASSERT_EQ(cli.set_capacity(sel, 2), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.needs[0].sem, sel);
  EXPECT_EQ(t.needs[0].count, 2);
  EXPECT_EQ(t.needs[1].count, 0);
  ASSERT_EQ(cli.acquire_for(t, t.needs), Client::Grant::granted);
  EXPECT_EQ(in_use(sel), 2u);
  cli.release_for(t, t.needs);
  EXPECT_EQ(in_use(sel), 0u);
  ASSERT_EQ(cli.complete(t), Errc::ok);

  ConsumerOptions co;
  co.home = {"general"};
  auto c = Consumer::create(seg, co).value();
  EXPECT_EQ(c->needs("x", {{"selenium", 2}, {"selenium", 1}}).code(), Errc::need_exceeds_capacity);
  EXPECT_TRUE(c->needs("x", {{"selenium", 1}, {"selenium", 1}}).ok());
}

// A task whose need is not free waits parked, and no worker cycles it between its queue
// and its park ring: neither when the capacity was lowered below its need after it was
// enqueued, nor when some permits are free but fewer than it needs. It runs once its
// permits are there.
TEST_F(SemFixture, TaskNeedingMoreThanIsFreeWaitsParkedWithoutSpinning) {
  ASSERT_EQ(cli.set_capacity(sel, 2), Errc::ok);
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 2;
  co.tick = 60s;  // no janitor help: the workers alone must not spin
  auto c = Consumer::create(seg, co).value();
  std::atomic<int> ran{0};
  c->on("big", [&](TaskContext&) {
    ran.fetch_add(1);
    return Outcome::done();
  });
  TaskOptions o;
  o.queue = general;
  o.needs[0] = Need{sel, 2};
  ASSERT_EQ(cli.enqueue_text("big", "", o), Errc::ok);
  ASSERT_EQ(cli.set_capacity(sel, 1), Errc::ok);  // below the queued task's need
  c->start();
  ASSERT_TRUE(eventually([&] { return c->stats().parked >= 1; }, 5s));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(ran.load(), 0);
  EXPECT_LE(c->stats().parked, 3u) << "the task was cycled between its queue and its park ring";

  // Capacity 2 with 1 held here (taken before the raise, so the raise cannot hand the
  // task both): one free, the task needs two.
  ASSERT_EQ(cli.try_acquire(sel, 1), Errc::ok);
  ASSERT_EQ(cli.set_capacity(sel, 2), Errc::ok);
  const std::uint64_t before = c->stats().parked;
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(ran.load(), 0);
  EXPECT_LE(c->stats().parked, before + 3) << "the task was cycled while one permit of two was free";

  ASSERT_EQ(cli.release(sel, 1), Errc::ok);
  EXPECT_TRUE(eventually([&] { return ran.load() == 1; }, 5s)) << "the release did not unpark the task";
  c->request_stop();
  EXPECT_TRUE(c->join());
  EXPECT_EQ(in_use(sel), 0u);
}
