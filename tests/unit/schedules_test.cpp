// Schedules: the table (add, find, pause, resume, remove, reuse), firing each due time
// once with the clock given by the test, missed runs (skip, run once), the task a
// schedule enqueues, the hint a janitor sleeps on, and the errors of a bad schedule.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;

namespace {

std::string payload_text(const Taken& t) {
  return std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size());
}

struct Schedules : ::testing::Test {
  Segment seg =
      Segment::create_private(small_test_layout(256, 4, 64), CreateOptions{0600, {"general", "other"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();

  ScheduleSpec spec(std::string id, std::string expr, std::string payload = "tick") {
    ScheduleSpec s;
    s.id = std::move(id);
    s.expression = std::move(expr);
    s.type = "report";
    s.payload = std::move(payload);
    s.queue = q;
    return s;
  }
  ScheduleInfo info(std::string_view id) { return cli.schedule(id).value(); }
  // Takes every queued task; their payloads in order.
  std::vector<std::string> drain(QueueId from) {
    std::vector<std::string> out;
    Taken t;
    while (cli.try_take(from, t)) {
      out.emplace_back(payload_text(t));
      EXPECT_EQ(cli.complete(t), Errc::ok);
    }
    return out;
  }
  static std::int64_t now_ms() { return unix_ns() / 1'000'000; }
};

TEST_F(Schedules, AScheduleIsAddedListedPausedResumedAndRemoved) {
  ASSERT_TRUE(cli.add_schedule(spec("nightly", "30 2 * * *")).ok());
  ASSERT_TRUE(cli.add_schedule(spec("often", "@every 90s")).ok());
  auto all = cli.schedules();
  ASSERT_EQ(all.size(), 2u);
  const ScheduleInfo n = info("nightly");
  EXPECT_EQ(n.spec.expression, "30 2 * * *");
  EXPECT_EQ(n.spec.type, "report");
  EXPECT_EQ(n.spec.payload, "tick");
  EXPECT_EQ(n.queue, q);
  EXPECT_FALSE(n.paused);
  EXPECT_GT(n.next_due_ms, now_ms());
  EXPECT_EQ(n.next_due_ms % 60'000, 30 * 60'000 % 60'000) << "whole minutes";
  EXPECT_EQ(cli.pause_schedule("nightly"), Errc::ok);
  EXPECT_TRUE(info("nightly").paused);
  EXPECT_EQ(cli.resume_schedule("nightly"), Errc::ok);
  EXPECT_FALSE(info("nightly").paused);
  EXPECT_EQ(cli.remove_schedule("nightly"), Errc::ok);
  EXPECT_EQ(cli.schedule("nightly").code(), Errc::unknown_schedule);
  EXPECT_EQ(cli.remove_schedule("nightly"), Errc::unknown_schedule);
  EXPECT_EQ(cli.pause_schedule("nope"), Errc::unknown_schedule);
  EXPECT_EQ(cli.schedules().size(), 1u);
  // The id is free again.
  EXPECT_TRUE(cli.add_schedule(spec("nightly", "@daily")).ok());
}

TEST_F(Schedules, BadSchedulesAreRefusedWithAReasonAndChangeNothing) {
  const auto expect_refused = [&](ScheduleSpec s, Errc code, std::string_view words) {
    auto r = cli.add_schedule(s);
    ASSERT_FALSE(r.ok()) << s.expression;
    EXPECT_EQ(r.code(), code) << r.error().message();
    EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
  };
  expect_refused(spec("a", "61 * * * *"), Errc::invalid_argument, "minute");
  expect_refused(spec("a", "0 0 30 2 *"), Errc::invalid_argument, "never due");
  expect_refused(spec("bad id!", "@hourly"), Errc::invalid_name, "schedule id");
  expect_refused(spec("a", "@hourly", std::string(65, 'x')), Errc::invalid_argument, "at most 64");
  auto s = spec("a", "@hourly");
  s.priority = 4;
  expect_refused(s, Errc::invalid_argument, "not a level");
  s = spec("a", "@hourly");
  s.queue = QueueRef("missing");
  expect_refused(s, Errc::unknown_queue, "missing");
  s = spec("a", "@hourly");
  s.type = "";
  expect_refused(s, Errc::invalid_name, "task type");
  s = spec("a", "@hourly");
  s.needs[0] = Need{7, 1};
  expect_refused(s, Errc::unknown_semaphore, "semaphore");
  EXPECT_TRUE(cli.schedules().empty());
  ASSERT_TRUE(cli.add_schedule(spec("a", "@hourly")).ok());
  expect_refused(spec("a", "@daily"), Errc::exists, "exists");
  EXPECT_EQ(info("a").spec.expression, "@hourly");
}

TEST_F(Schedules, EachDueTimeEnqueuesItsTaskOnce) {
  ASSERT_TRUE(cli.add_schedule(spec("s", "@every 1s", "payload-1")).ok());
  const std::int64_t due = info("s").next_due_ms;
  EXPECT_EQ(cli.fire_schedules(due - 1), 0u) << "not yet due";
  EXPECT_TRUE(drain(q).empty());
  EXPECT_EQ(cli.fire_schedules(due), 1u);
  EXPECT_EQ(cli.fire_schedules(due), 0u) << "the same due time fires once";
  EXPECT_EQ(cli.fire_schedules(due + 999), 0u);
  const ScheduleInfo i = info("s");
  EXPECT_EQ(i.fired, 1u);
  EXPECT_EQ(i.last_due_ms, due);
  EXPECT_EQ(i.next_due_ms, due + 1000);
  EXPECT_NE(i.last_task, kNoTask);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(t.id, i.last_task);
  EXPECT_EQ(t.type_name, "report");
  EXPECT_EQ(payload_text(t), "payload-1");
  ASSERT_EQ(cli.complete(t), Errc::ok);
  // Three periods behind (well within the missed bound): each fires.
  EXPECT_EQ(cli.fire_schedules(due + 3000), 3u);
  EXPECT_EQ(drain(q).size(), 3u);
  EXPECT_EQ(info("s").fired, 4u);
  EXPECT_EQ(info("s").missed, 0u);
}

TEST_F(Schedules, TheTaskGoesToItsQueueAndLevelWithItsNeeds) {
  const SemId sem = seg.create_semaphore("db", 2).value();
  QueueId other = seg.find_queue("other").value();
  auto s = spec("s", "@every 10s");
  s.queue = QueueRef("other");
  s.priority = 3;
  s.needs[0] = Need{sem, 2};
  s.max_attempts = 5;
  ASSERT_TRUE(cli.add_schedule(s).ok());
  ASSERT_EQ(cli.fire_schedules(info("s").next_due_ms), 1u);
  EXPECT_TRUE(drain(q).empty());
  Taken t;
  ASSERT_TRUE(cli.try_take(other, t));
  EXPECT_EQ(t.level, 3);
  EXPECT_EQ(t.max_attempts, 5);
  EXPECT_EQ(t.needs[0].sem, sem);
  EXPECT_EQ(t.needs[0].count, 2);
  ASSERT_EQ(cli.complete(t), Errc::ok);
}

TEST_F(Schedules, MissedRunsAreSkippedOrFoldedIntoOneRun) {
  ASSERT_TRUE(cli.add_schedule(spec("skip", "@every 10s")).ok());
  auto once = spec("once", "@every 10s");
  once.missed = MissedRuns::run_once;
  ASSERT_TRUE(cli.add_schedule(once).ok());
  const std::int64_t due = info("skip").next_due_ms;
  // Nothing fired for ten minutes: 60 due times passed.
  const std::int64_t later = due + 10 * 60'000 - 1;
  EXPECT_EQ(cli.fire_schedules(later), 1u) << "only the run_once schedule runs, once";
  const ScheduleInfo sk = info("skip"), on = info("once");
  EXPECT_EQ(sk.fired, 0u);
  EXPECT_EQ(sk.missed, 60u);
  EXPECT_GT(sk.next_due_ms, later);
  EXPECT_LE(sk.next_due_ms, later + 10'000);
  EXPECT_EQ(on.fired, 1u);
  EXPECT_EQ(on.missed, 59u) << "60 due times, one run";
  EXPECT_GT(on.next_due_ms, later);
  EXPECT_EQ(drain(q).size(), 1u);
}

TEST_F(Schedules, APausedScheduleFiresNothingAndResumesFromNow) {
  ASSERT_TRUE(cli.add_schedule(spec("s", "@every 1s")).ok());
  const std::int64_t due = info("s").next_due_ms;
  ASSERT_EQ(cli.pause_schedule("s"), Errc::ok);
  EXPECT_EQ(cli.fire_schedules(due + 5000), 0u);
  EXPECT_TRUE(drain(q).empty());
  ASSERT_EQ(cli.resume_schedule("s"), Errc::ok);
  const ScheduleInfo i = info("s");
  EXPECT_GT(i.next_due_ms, now_ms() - 1) << "the due times of the pause are passed over";
  EXPECT_EQ(i.missed, 0u) << "a pause is not a missed run";
  EXPECT_EQ(cli.fire_schedules(i.next_due_ms), 1u);
}

TEST_F(Schedules, TheHintFollowsTheEarliestDueTime) {
  auto& h = *detail::core_of(seg).header;
  EXPECT_EQ(h.schedule_due_ms.load(), 0) << "no schedule";
  ASSERT_TRUE(cli.add_schedule(spec("slow", "@every 60s")).ok());
  const std::int64_t slow = info("slow").next_due_ms;
  EXPECT_EQ(h.schedule_due_ms.load(), slow);
  ASSERT_TRUE(cli.add_schedule(spec("fast", "@every 2s")).ok());
  const std::int64_t fast = info("fast").next_due_ms;
  EXPECT_EQ(h.schedule_due_ms.load(), fast) << "a new earlier schedule lowers it";
  ASSERT_EQ(cli.fire_schedules(fast), 1u);
  EXPECT_EQ(h.schedule_due_ms.load(), std::min(slow, fast + 2000)) << "the pass sets it to what is left";
  ASSERT_EQ(cli.remove_schedule("fast"), Errc::ok);
  ASSERT_EQ(cli.remove_schedule("slow"), Errc::ok);
  EXPECT_EQ(cli.fire_schedules(slow), 0u);
  EXPECT_EQ(h.schedule_due_ms.load(), 0) << "nothing left";
}

TEST_F(Schedules, ARemovedScheduleFiresNothingAndItsEntryIsReused) {
  for (int round = 0; round < 3 * 64; ++round) {
    const std::string id = "s" + std::to_string(round);
    ASSERT_TRUE(cli.add_schedule(spec(id, "@every 1s", id)).ok()) << round;
    const std::int64_t due = info(id).next_due_ms;
    ASSERT_EQ(cli.remove_schedule(id), Errc::ok);
    EXPECT_EQ(cli.fire_schedules(due), 0u);
  }
  EXPECT_TRUE(drain(q).empty());
  for (int k = 0; k < 64; ++k) ASSERT_TRUE(cli.add_schedule(spec("f" + std::to_string(k), "@hourly")).ok());
  auto r = cli.add_schedule(spec("one-more", "@hourly"));
  EXPECT_EQ(r.code(), Errc::schedule_table_full);
}

TEST_F(Schedules, AFullQueueStallsTheDueTimeUntilThereIsRoom) {
  // A layout of 4-slot rings: four tasks fill the level.
  Layout l = small_test_layout(64, 1, 16);
  l.ring_capacity = 4;
  Segment small = Segment::create_private(l, CreateOptions{0600, {"q"}}).value();
  Client c = Client::attach(small, Role::producer | Role::consumer).value();
  const QueueId sq = small.find_queue("q").value();
  TaskOptions fill;
  fill.queue = sq;
  for (int k = 0; k < 4; ++k) ASSERT_EQ(c.enqueue_text("fill", "x", fill), Errc::ok);
  ScheduleSpec s;
  s.id = "s";
  s.expression = "@every 1s";
  s.type = "report";
  s.queue = sq;
  ASSERT_TRUE(c.add_schedule(s).ok());
  const std::int64_t due = c.schedule("s").value().next_due_ms;
  EXPECT_EQ(c.fire_schedules(due), 0u);
  ScheduleInfo i = c.schedule("s").value();
  EXPECT_EQ(i.stalls, 1u);
  EXPECT_EQ(i.next_due_ms, due) << "the due time stays, unclaimed";
  EXPECT_FALSE(i.firing);
  Taken t;
  ASSERT_TRUE(c.try_take(sq, t));
  ASSERT_EQ(c.complete(t), Errc::ok);
  EXPECT_EQ(c.fire_schedules(due + 10), 1u);
  EXPECT_EQ(c.schedule("s").value().fired, 1u);
}

}  // namespace
