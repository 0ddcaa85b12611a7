// Consumer::on_event: each task a worker runs is reported once, after its transition, with
// what became of it.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/shmsched.hpp"

using namespace shmsched;
using namespace std::chrono_literals;

namespace {

TEST(Hooks, EveryOutcomeIsReportedOnceAfterItsTransition) {
  Layout l;
  l.task_capacity = 64;
  l.levels = 1;
  l.payload_bytes = 16;
  l.max_queues = 1;
  l.max_participants = 8;
  Segment seg = Segment::create_private(l, CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg).value();
  TaskOptions o;
  o.queue = seg.find_queue("general").value();
  o.max_attempts = 2;
  o.retry.delay = 1ms;
  o.retry.jitter_pct = 0;
  TaskId ok = kNoTask, flaky = kNoTask, broken = kNoTask, orphan = kNoTask;
  ASSERT_EQ(cli.enqueue_text("ok", "", o, &ok), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("flaky", "", o, &flaky), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("broken", "", o, &broken), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("nobody", "", o, &orphan), Errc::ok);

  ConsumerOptions co;
  co.home = {"general"};
  co.tick = 5ms;
  auto consumer = Consumer::create(seg, co).value();
  consumer->on("ok", [](TaskContext&) { return Outcome::done(); });
  consumer->on("flaky",
               [](TaskContext& ctx) { return ctx.task.attempt == 1 ? Outcome::retry(1ms, "busy") : Outcome::done(); });
  consumer->on("broken", [](TaskContext&) { return Outcome::fail("no paper"); });
  std::mutex mu;
  std::map<TaskId, std::vector<std::pair<TaskEvent, std::string>>> seen;
  consumer->on_event([&](TaskEvent e, const Taken& t, std::string_view why) {
    // After the transition: the task is not running any more.
    const TaskStatus st = cli.status(t.id).value().status;
    const std::lock_guard lock(mu);
    seen[t.id].emplace_back(e, std::string(why) + (st == TaskStatus::running ? " (still running!)" : ""));
  });
  consumer->start();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (inspect(seg).records.outstanding() != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(2ms);
  consumer->request_stop();
  ASSERT_TRUE(consumer->join());

  using E = std::vector<std::pair<TaskEvent, std::string>>;
  EXPECT_EQ(seen[ok], (E{{TaskEvent::done, ""}}));
  EXPECT_EQ(seen[flaky], (E{{TaskEvent::retried, "busy"}, {TaskEvent::done, ""}}));
  EXPECT_EQ(seen[broken], (E{{TaskEvent::failed, "no paper"}, {TaskEvent::dead_lettered, "no paper"}}));
  EXPECT_EQ(seen[orphan], (E{{TaskEvent::dead_lettered, "no handler for type 'nobody'"}}));
}

}  // namespace
