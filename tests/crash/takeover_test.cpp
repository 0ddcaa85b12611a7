// A participant table full of dead processes does not wedge the segment: attach takes
// over a dead slot (new epoch, fencing the dead token), recovers that participant's
// running tasks and permits, and the new participant reaps the rest. A process killed
// in the middle of a takeover leaves nothing behind that the next attacher does not
// recover.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using fault::Point;

namespace {

constexpr std::uint32_t kParticipants = 4;
constexpr int kTasks = 12;

struct Board {
  std::atomic<int> ready{0};
  std::atomic<int> failures{0};
};

struct World {
  Segment seg;
  QueueId q;
  SemId sem;
  test::SharedArray<Board> board{1};

  World()
      : seg(Segment::create_private(layout(), CreateOptions{0600, {"work"}}).value()),
        q(seg.find_queue("work").value()),
        sem(seg.create_semaphore("res", kParticipants).value()) {
    auto c = Client::attach(seg).value();
    for (int i = 0; i < kTasks; ++i) {
      TaskOptions o;
      o.queue = q;
      EXPECT_EQ(c.enqueue_value("job", i, o), Errc::ok);
    }
    c.detach();
  }

  static Layout layout() {
    Layout l;
    l.task_capacity = 64;
    l.levels = 2;
    l.payload_bytes = 16;
    l.max_queues = 2;
    l.max_participants = kParticipants;
    return l;
  }

  // Fills every participant slot with a process that takes a task (left running) and
  // holds a permit directly, then kills them all.
  void fill_with_dead() {
    std::vector<pid_t> pids;
    for (std::uint32_t i = 0; i < kParticipants; ++i) {
      pids.push_back(test::spawn([this] {
        auto c = Client::attach(seg, Role::consumer);
        Taken t;
        if (!c || !c->try_take(q, t) || c->try_acquire(sem, 1) != Errc::ok) board[0].failures.fetch_add(1);
        board[0].ready.fetch_add(1);
        for (;;) ::pause();
        return 0;
      }));
    }
    ASSERT_TRUE(test::eventually([&] { return board[0].ready.load() == static_cast<int>(kParticipants); },
                                 std::chrono::seconds(20)));
    ASSERT_EQ(board[0].failures.load(), 0);
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    for (const auto& s : test::wait_children(pids)) ASSERT_TRUE(s.signaled) << test::describe(s);
  }

  std::uint32_t in_use() const {
    for (const auto& info : seg.semaphores())
      if (info.id == sem) return info.in_use;
    return 999;
  }

  // Every task comes back exactly once; the ones the dead were running count an attempt.
  void expect_all_recovered(Client& c) {
    std::set<int> seen;
    int retried = 0;
    Taken t;
    while (c.try_take(q, t)) {
      int v = -1;
      ASSERT_TRUE(payload_to(t.payload, v));
      EXPECT_TRUE(seen.insert(v).second) << "task " << v << " delivered twice";
      retried += t.attempt == 2;
      ASSERT_EQ(c.complete(t), Errc::ok);
    }
    EXPECT_EQ(seen.size(), static_cast<std::size_t>(kTasks)) << "tasks lost";
    EXPECT_EQ(retried, static_cast<int>(kParticipants)) << "each dead participant's running task counts an attempt";
    EXPECT_EQ(in_use(), 0u) << "permits of the dead were not returned";
    EXPECT_TRUE(c.verify_permits().ok());
    const auto& core = detail::core_of(seg);
    for (std::uint32_t i = 0; i < core.capacity; ++i) {
      const auto st = detail::state_of(core.ctrl[i].state.load());
      EXPECT_TRUE(st == TaskState::free || st == TaskState::virgin) << "record " << i << " state " << int(st);
    }
  }
};

}  // namespace

TEST(Takeover, FullTableOfDeadProcessesIsTakenOverNotRefused) {
  World w;
  w.fill_with_dead();
  EXPECT_EQ(w.in_use(), kParticipants);
  auto c = Client::attach(w.seg, Role::consumer | Role::observer);
  ASSERT_TRUE(c.ok()) << "a table of dead participants refused an attach: " << c.error().message();
  // The slot taken over was recovered during attach; reaping recovers the others.
  const ReapReport rep = c->reap_dead();
  EXPECT_EQ(rep.participants, kParticipants - 1);
  EXPECT_EQ(rep.requeued, kParticipants - 1);
  w.expect_all_recovered(*c);
}

TEST(Takeover, LiveParticipantsAreNeverTakenOver) {
  World w;
  std::vector<Client> live;
  for (std::uint32_t i = 0; i < kParticipants; ++i) live.push_back(Client::attach(w.seg).value());
  auto c = Client::attach(w.seg);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), Errc::participant_table_full);
  for (auto& l : live) {
    TaskOptions o;
    o.queue = w.q;
    EXPECT_EQ(l.enqueue_value("job", 1, o), Errc::ok) << "a live participant was fenced";
  }
}

class TakeoverKilled : public ::testing::TestWithParam<Point> {};

TEST_P(TakeoverKilled, NextAttacherRecoversEverything) {
  ASSERT_TRUE(fault::enabled()) << "crash tests need a build with SHMSCHED_FAULT_POINTS";
  World w;
  w.fill_with_dead();
  const Point point = GetParam();
  const pid_t taker = test::spawn([&] {
    fault::arm(point, 1);
    auto c = Client::attach(w.seg, Role::consumer);
    return c ? 3 : 4;  // not killed: the point was never reached
  });
  const auto st = test::wait_child(taker);
  ASSERT_TRUE(st.signaled && st.signal == SIGKILL)
      << "taker not killed at " << fault::name(point) << ": " << test::describe(st);
  auto c = Client::attach(w.seg, Role::consumer | Role::observer);
  ASSERT_TRUE(c.ok()) << c.error().message();
  c->reap_dead();
  w.expect_all_recovered(*c);
}

INSTANTIATE_TEST_SUITE_P(Points, TakeoverKilled,
                         ::testing::Values(Point::participant_register_claimed, Point::participant_takeover_claimed,
                                           Point::reap_mid_records),
                         [](const auto& info) { return std::string(fault::name(info.param)); });
