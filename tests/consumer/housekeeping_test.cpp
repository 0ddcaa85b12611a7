// Housekeeping that no handler and no stopped process can hold up:
//  * a delayed task is promoted on time while every worker runs long handlers (the
//    housekeeper thread sleeps until its due time, woken by the producer);
//  * a janitor whose process is stopped (SIGSTOP) loses its lease within about a
//    second, so a dead worker's task is reaped and run by a live consumer, and the
//    stopped one, once continued, knows it is no longer the janitor.
#include <gtest/gtest.h>

#include <dirent.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace std::chrono_literals;
using shmsched::test::eventually;

namespace {

Layout keeper_layout() {
  Layout l;
  l.task_capacity = 1024;
  l.levels = 4;
  l.payload_bytes = 32;
  l.max_queues = 2;
  l.max_participants = 16;
  return l;
}

std::uint16_t janitor_of(const Segment& seg) {
  return inspect(seg).janitor_token;
}

// Whether every thread of `pid` is stopped (state T): kill(SIGSTOP) returns before a
// thread that is running elsewhere has stopped.
bool all_threads_stopped(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool stopped = true;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream stat(dir + "/" + e->d_name + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    if (close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'T') stopped = false;
  }
  ::closedir(d);
  return stopped;
}

// Kills (and reaps) a child when the test ends, however it ends.
struct KillOnExit {
  pid_t pid;
  ~KillOnExit() {
    ::kill(pid, SIGKILL);
    ::kill(pid, SIGCONT);
    (void)test::wait_child(pid, 10s);
  }
};

}  // namespace

// One worker busy with 50 ms tasks for two seconds; a priority-0 task delayed by 200 ms
// must start within one running task's length of its due time (plus slack for a loaded
// host), not when the worker next has a moment.
TEST(Housekeeping, DelayedTaskIsPromotedOnTimeWhileEveryWorkerIsBusy) {
  Segment seg = Segment::create_private(keeper_layout(), CreateOptions{0600, {"general"}}).value();
  Client producer = Client::attach(seg).value();
  const QueueId q = seg.find_queue("general").value();
  ConsumerOptions co;
  co.home = {"general"};
  co.workers = 1;
  co.tick = 1s;  // the due time, not the tick, must wake the housekeeper
  auto c = Consumer::create(seg, co).value();
  std::atomic<std::int64_t> started_at{0};
  c->on("work", [](TaskContext&) {
    std::this_thread::sleep_for(50ms);
    return Outcome::done();
  });
  c->on("due", [&](TaskContext&) {
    started_at = monotonic_ns();
    return Outcome::done();
  });
  TaskOptions busy;
  busy.queue = q;
  busy.priority = 3;
  for (int i = 0; i < 40; ++i) ASSERT_EQ(producer.enqueue_text("work", "", busy), Errc::ok);
  c->start();
  std::this_thread::sleep_for(100ms);  // the worker is in a handler
  TaskOptions due;
  due.queue = q;
  due.priority = 0;
  due.after(200ms);
  const std::int64_t t0 = monotonic_ns();
  ASSERT_EQ(producer.enqueue_text("due", "", due), Errc::ok);
  ASSERT_TRUE(eventually([&] { return started_at.load() != 0; }, 10s));
  const std::int64_t late_ms = (started_at.load() - t0) / 1'000'000 - 200;
  EXPECT_LT(late_ms, 50 + 150) << "the delayed task started " << late_ms << " ms after its due time";
  c->request_stop();
  EXPECT_TRUE(c->join());
}

// SIGSTOP the janitor's process, SIGKILL a worker while it runs a task: with a third
// consumer alive and idle, the dead worker's task runs again within a few seconds.
TEST(Housekeeping, StoppedJanitorLosesItsLeaseAndDeadWorkersAreStillReaped) {
  Segment seg = Segment::create_private(keeper_layout(), CreateOptions{0600, {"general"}}).value();
  Client producer = Client::attach(seg).value();
  const QueueId q = seg.find_queue("general").value();
  struct Board {
    std::atomic<int> janitor_token{0}, victim_running{0}, rerun{0}, janitor_after_resume{-1};
  };
  test::SharedArray<Board> board(1);
  Board& b = board[0];
  auto consumer_child = [&](bool victim, bool janitor) {
    return test::spawn([&, victim, janitor]() -> int {
      ConsumerOptions co;
      co.home = {"general"};
      co.workers = 1;
      co.tick = 20ms;
      auto c = Consumer::create(seg, co);
      if (!c) return 10;
      (*c)->on("job", [&](TaskContext& ctx) {
        if (ctx.task.attempt == 1) {
          b.victim_running = 1;
          for (;;) std::this_thread::sleep_for(1s);  // killed here
        }
        b.rerun = 1;
        return Outcome::done();
      });
      if (janitor) b.janitor_token = (*c)->client().token();
      (*c)->start();
      for (;;) ::pause();
    });
  };
  const pid_t janitor = consumer_child(false, true);
  KillOnExit g1{janitor};
  ASSERT_TRUE(eventually([&] { return b.janitor_token.load() != 0 && janitor_of(seg) == b.janitor_token.load(); }))
      << "the first consumer never took the janitor lease";
  ASSERT_EQ(::kill(janitor, SIGSTOP), 0);
  ASSERT_TRUE(eventually([&] { return all_threads_stopped(janitor); })) << "the janitor's process did not stop";
  const pid_t victim = consumer_child(true, false);
  KillOnExit g2{victim};
  TaskOptions o;
  o.queue = q;
  ASSERT_EQ(producer.enqueue_text("job", "", o), Errc::ok);
  ASSERT_TRUE(eventually([&] { return b.victim_running.load() == 1; })) << "nobody took the task";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const pid_t helper = consumer_child(false, false);
  KillOnExit g3{helper};
  const bool rerun = eventually([&] { return b.rerun.load() == 1; }, 10s);
  const Snapshot snap = inspect(seg);
  std::string held;
  for (std::uint32_t i = 0; i < detail::core_of(seg).scan_end(); ++i) {
    const std::uint64_t w = detail::core_of(seg).ctrl[i].state.load();
    if (detail::state_of(w) == TaskState::running)
      held += " record " + std::to_string(i) + " owner " + std::to_string(detail::owner_of(w)) + " attempts " +
              std::to_string(detail::core_of(seg).hot(i)->attempts);
  }
  for (const auto& p : snap.participants)
    held += " participant token " + std::to_string(p.token) + " pid " + std::to_string(p.pid);
  EXPECT_TRUE(rerun) << "the dead worker's task was not run again while the janitor's process was stopped"
                     << " (janitor token " << snap.janitor_token << ", first janitor " << b.janitor_token.load()
                     << "; records queued " << snap.records[TaskState::queued] << ", running "
                     << snap.records[TaskState::running] << ", dead " << snap.records[TaskState::dead] << ", delayed "
                     << snap.records[TaskState::delayed] << "; participants " << snap.participants.size() << ")" << held
                     << " pids A " << janitor << " B " << victim << " C " << helper;
  EXPECT_NE(janitor_of(seg), b.janitor_token.load()) << "the stopped process kept the janitor lease";
  ASSERT_EQ(::kill(janitor, SIGCONT), 0);
  std::this_thread::sleep_for(200ms);
  EXPECT_NE(janitor_of(seg), b.janitor_token.load()) << "a resumed former janitor took the lease back at once";
}
