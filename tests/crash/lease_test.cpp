// Permit leases: the lease thread of a process keeps the permit it releases and takes it
// again without a locked instruction; anyone else who needs it takes it back. These
// tests prove that a lease never costs anyone a permit (threads and processes), that
// idle leases are reported apart from permits in use, that a parked task is not left
// waiting behind an idle lease, and that a lease owner or a revoker killed at any step
// leaves nothing leaked. The segment is private: children forked after it share it.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "shmsched/detail/core.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace std::chrono_literals;
using fault::Point;
using test::eventually;

namespace {

Layout layout() {
  Layout l;
  l.task_capacity = 256;
  l.levels = 2;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 16;
  l.max_semaphores = 4;
  return l;
}

struct Board {
  std::atomic<int> ready{0};
  std::atomic<int> go{0};
  std::atomic<int> failures{0};
  std::atomic<int> got{0};
};

struct World {
  Segment seg = Segment::create_private(layout(), CreateOptions{0600, {"work"}}).value();
  QueueId q = seg.find_queue("work").value();
  SemId sem = seg.create_semaphore("res", 1).value();
  test::SharedArray<Board> board{1};
  Board& b() { return board[0]; }

  SemaphoreInfo info() const {
    for (const auto& i : seg.semaphores())
      if (i.id == sem) return i;
    return {};
  }
  // A child that takes and releases the permit once (leaving it as an idle lease), says
  // so, and then waits, holding the lease, until killed.
  pid_t spawn_idle_lease_holder() {
    return test::spawn([this] {
      auto c = Client::attach(seg);
      if (!c || c->try_acquire(sem) != Errc::ok || c->release(sem) != Errc::ok) b().failures.fetch_add(1);
      b().ready.fetch_add(1);
      for (;;) ::pause();
      return 0;
    });
  }
};

}  // namespace

TEST(Lease, IdlePermitIsReportedLeasedNotInUseAndAnotherThreadTakesIt) {
  World w;
  auto c = Client::attach(w.seg).value();
  ASSERT_EQ(c.try_acquire(w.sem), Errc::ok);
  EXPECT_EQ(w.info().in_use, 1u);
  ASSERT_EQ(c.release(w.sem), Errc::ok);
  const SemaphoreInfo idle = w.info();
  EXPECT_EQ(idle.in_use, 0u);
  EXPECT_EQ(idle.leased, permit_leases_available() ? 1u : 0u);
  EXPECT_TRUE(c.verify_permits().ok());
  // The lease thread takes it again, many times, and it stays one permit.
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(c.try_acquire(w.sem), Errc::ok);
    ASSERT_EQ(c.try_acquire(w.sem), Errc::unavailable) << "a lease must not add a permit";
    ASSERT_EQ(c.release(w.sem), Errc::ok);
  }
  // Another thread of the same process (not the lease thread) takes the idle lease back.
  std::thread other([&] {
    EXPECT_EQ(c.try_acquire(w.sem), Errc::ok);
    EXPECT_EQ(w.info().in_use, 1u);
    EXPECT_EQ(w.info().leased, 0u);
    EXPECT_EQ(c.try_acquire(w.sem), Errc::unavailable);
    EXPECT_EQ(c.release(w.sem), Errc::ok);
  });
  other.join();
  EXPECT_EQ(w.info().in_use, 0u);
  // The lease thread still works (without a lease for a while, then with one again).
  for (int i = 0; i < 3000; ++i) {
    ASSERT_EQ(c.try_acquire(w.sem), Errc::ok);
    ASSERT_EQ(c.release(w.sem), Errc::ok);
  }
  EXPECT_TRUE(c.verify_permits().ok());
  EXPECT_EQ(w.info().in_use, 0u);
}

TEST(Lease, DetachGivesTheLeaseBack) {
  World w;
  {
    auto c = Client::attach(w.seg).value();
    ASSERT_EQ(c.try_acquire(w.sem), Errc::ok);
    ASSERT_EQ(c.release(w.sem), Errc::ok);
    c.detach();
  }
  EXPECT_EQ(w.info().in_use, 0u);
  EXPECT_EQ(w.info().leased, 0u) << "a detached client kept its lease";
  auto other = Client::attach(w.seg).value();
  EXPECT_EQ(other.try_acquire(w.sem), Errc::ok);
  EXPECT_TRUE(other.verify_permits().ok());
}

TEST(Lease, ThreadsContendingNeverExceedCapacity) {
  World w;
  ASSERT_EQ(w.seg.create_semaphore("three", 3).code(), Errc::ok);
  const SemId three = w.seg.find_semaphore("three").value();
  auto c = Client::attach(w.seg).value();
  std::atomic<int> inside{0}, max_inside{0}, unavailable{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 3000; ++i) {
        if (c.try_acquire(three) != Errc::ok) {
          unavailable.fetch_add(1);
          continue;
        }
        const int now = inside.fetch_add(1) + 1;
        int m = max_inside.load();
        while (now > m && !max_inside.compare_exchange_weak(m, now)) {
        }
        inside.fetch_sub(1);
        ASSERT_EQ(c.release(three), Errc::ok);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_LE(max_inside.load(), 3);
  EXPECT_TRUE(c.verify_permits().ok());
  std::uint32_t in_use = 99;
  for (const auto& i : w.seg.semaphores())
    if (i.id == three) in_use = i.in_use;
  EXPECT_EQ(in_use, 0u);
}

TEST(Lease, AnotherProcessTakesAnIdleLeaseWithoutWaitingForItsOwner) {
  World w;
  const pid_t holder = w.spawn_idle_lease_holder();
  ASSERT_TRUE(eventually([&] { return w.b().ready.load() == 1; }, 10s));
  ASSERT_EQ(w.b().failures.load(), 0);
  auto c = Client::attach(w.seg).value();
  // The owner never calls again; a try (no waiting) must still get the permit.
  EXPECT_EQ(c.try_acquire(w.sem), Errc::ok);
  EXPECT_EQ(c.try_acquire(w.sem), Errc::unavailable);
  EXPECT_EQ(c.release(w.sem), Errc::ok);
  ::kill(holder, SIGKILL);
  (void)test::wait_child(holder);
  EXPECT_TRUE(c.verify_permits().ok());
}

TEST(Lease, ParkedTaskIsNotLeftBehindAnIdleLease) {
  World w;
  auto producer = Client::attach(w.seg).value();
  // This thread becomes producer's lease thread and leaves the only permit idle.
  ASSERT_EQ(producer.try_acquire(w.sem), Errc::ok);
  ASSERT_EQ(producer.release(w.sem), Errc::ok);
  ConsumerOptions co;
  co.home = {"work"};
  co.tick = 10s;  // no housekeeping to rescue it: only the revocation can
  auto consumer = Consumer::create(w.seg, co).value();
  std::atomic<int> ran{0};
  consumer->on("job", [&](TaskContext&) {
    ran.fetch_add(1);
    return Outcome::done();
  });
  ASSERT_TRUE(consumer->needs("job", {{"res", 1}}).ok());
  consumer->start();
  TaskOptions o;
  o.queue = w.q;
  for (int i = 0; i < 5; ++i) ASSERT_EQ(producer.enqueue_text("job", "", o), Errc::ok);
  EXPECT_TRUE(eventually([&] { return ran.load() == 5; }, 5s)) << "ran " << ran.load() << " of 5";
  consumer->request_stop();
  EXPECT_TRUE(consumer->join());
  EXPECT_TRUE(producer.verify_permits().ok());
}

// A busy lease's release looks only at its revocation mark, not at the semaphore's
// sleepers: these two prove that whoever waits for the permit has marked the lease by
// the time it waits, so the owner's release gives it back for real instead of keeping
// it idle. (Without the mark it would stay idle until the waiter's capped sleep ends.)
// Without leases (no membarrier) the same behaviour holds through plain releases.
TEST(Lease, WaiterBehindABusyLeaseGetsItAtTheOwnersRelease) {
  World w;
  auto c = Client::attach(w.seg).value();
  ASSERT_EQ(c.try_acquire(w.sem), Errc::ok);
  ASSERT_EQ(c.release(w.sem), Errc::ok);
  ASSERT_EQ(w.info().leased, permit_leases_available() ? 1u : 0u);
  ASSERT_EQ(c.try_acquire(w.sem), Errc::ok);  // busy lease: in use by this thread
  std::atomic<int> got{0};
  std::thread waiter([&] {
    auto other = Client::attach(w.seg).value();
    if (other.acquire(w.sem, 1, 20s) == Errc::ok) {
      got.store(1);
      EXPECT_EQ(other.release(w.sem), Errc::ok);
    }
  });
  ASSERT_TRUE(eventually([&] { return w.info().waiters == 1; }, 10s)) << "the waiter never went to sleep";
  ASSERT_EQ(c.release(w.sem), Errc::ok);
  // Given back at once: not kept as an idle lease for the waiter to revoke later.
  EXPECT_EQ(w.info().leased, 0u) << "the owner kept a permit someone is waiting for";
  waiter.join();
  EXPECT_EQ(got.load(), 1);
  EXPECT_TRUE(c.verify_permits().ok());
  EXPECT_EQ(w.info().in_use, 0u);
}

TEST(Lease, TaskParkedBehindABusyLeaseIsUnparkedAtTheOwnersRelease) {
  World w;
  auto owner = Client::attach(w.seg).value();
  ASSERT_EQ(owner.try_acquire(w.sem), Errc::ok);
  ASSERT_EQ(owner.release(w.sem), Errc::ok);
  ASSERT_EQ(owner.try_acquire(w.sem), Errc::ok);  // busy lease
  TaskOptions o;
  o.queue = w.q;
  o.needs[0] = Need{w.sem, 1};
  ASSERT_EQ(owner.enqueue_text("job", "x", o), Errc::ok);
  auto worker = Client::attach(w.seg).value();
  Taken t;
  ASSERT_TRUE(worker.try_take(w.q, t));
  ASSERT_EQ(worker.acquire_for(t, t.needs), Client::Grant::parked);
  EXPECT_FALSE(worker.try_take(w.q, t)) << "parked, so not in the queue";
  ASSERT_EQ(owner.release(w.sem), Errc::ok);
  EXPECT_EQ(w.info().leased, 0u) << "the owner kept a permit a parked task waits for";
  // The release handed the permit over: the task is back in its queue and runs.
  ASSERT_TRUE(worker.try_take(w.q, t)) << "the parked task was left behind the lease";
  ASSERT_EQ(worker.acquire_for(t, t.needs), Client::Grant::granted);
  (void)worker.release_for(t, t.needs);  // nothing else is parked: no hand-over
  ASSERT_EQ(worker.complete(t), Errc::ok);
  EXPECT_TRUE(owner.verify_permits().ok());
}

TEST(Lease, KilledOwnerOfAnIdleLeaseLeaksNothing) {
  World w;
  const pid_t holder = w.spawn_idle_lease_holder();
  ASSERT_TRUE(eventually([&] { return w.b().ready.load() == 1; }, 10s));
  ::kill(holder, SIGKILL);
  ASSERT_TRUE(test::wait_child(holder).signaled);
  auto c = Client::attach(w.seg).value();
  const ReapReport rep = c.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(w.info().in_use + w.info().leased, 0u) << "the dead owner's lease was not returned";
  EXPECT_EQ(c.try_acquire(w.sem), Errc::ok);
  EXPECT_TRUE(c.verify_permits().ok());
}

// A revoker killed after it claimed the lease's ledger slot and before it freed it: the
// reaper frees the permit, and both the owner and others go on.
TEST(Lease, RevokerKilledMidRevocationLeaksNothing) {
  ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS";
  World w;
  auto owner = Client::attach(w.seg).value();
  ASSERT_EQ(owner.try_acquire(w.sem), Errc::ok);
  ASSERT_EQ(owner.release(w.sem), Errc::ok);
  if (!permit_leases_available()) {
    // No leases here: the permit went back for real and the revocation step never runs.
    EXPECT_EQ(w.info().leased, 0u);
    EXPECT_EQ(w.info().in_use, 0u);
    return;
  }
  ASSERT_EQ(w.info().leased, 1u);
  const pid_t revoker = test::spawn([&] {
    fault::arm(Point::sem_lease_revoking, 1);
    auto c = Client::attach(w.seg);
    if (c) (void)c->try_acquire(w.sem);
    return 3;  // not killed: the point was never reached
  });
  const auto st = test::wait_child(revoker);
  ASSERT_TRUE(st.signaled && st.signal == SIGKILL) << test::describe(st);
  // The owner's next take sees the revocation and does not use the permit.
  EXPECT_EQ(owner.try_acquire(w.sem), Errc::unavailable) << "the half-revoked permit is not free yet";
  const ReapReport rep = owner.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(rep.permits_returned, 1u);
  EXPECT_EQ(owner.try_acquire(w.sem), Errc::ok);
  EXPECT_TRUE(owner.verify_permits().ok());
  EXPECT_EQ(owner.release(w.sem), Errc::ok);
}
