#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"

using namespace shmsched;

namespace {
Layout layout() {
  Layout l;
  l.task_capacity = 256;
  l.levels = 3;
  l.payload_bytes = 16;
  l.max_queues = 4;
  l.max_participants = 8;
  l.max_semaphores = 4;
  return l;
}
}  // namespace

TEST(Inspect, SnapshotMatchesWhatWasDone) {
  auto seg = Segment::create_private(layout(), CreateOptions{0600, {"a", "b"}}).value();
  auto cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId a = seg.find_queue("a").value();
  const QueueId b = seg.find_queue("b").value();
  ASSERT_TRUE(seg.create_semaphore("gpu", 2).ok());
  TaskOptions o;
  o.queue = a;
  for (int i = 0; i < 5; ++i) ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  o.priority = 2;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  o.queue = b;
  o.priority = 0;
  o.not_before_ns = monotonic_ns() + 3'600'000'000'000;
  ASSERT_EQ(cli.enqueue_text("later", "", o), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(a, t));  // running
  Taken d;
  ASSERT_TRUE(cli.try_take(a, d));
  ASSERT_EQ(cli.dead_letter(d, "bad"), Errc::ok);

  const Snapshot s = inspect(seg);
  EXPECT_EQ(s.records[TaskState::queued], 6u);
  EXPECT_EQ(s.records[TaskState::running], 1u);
  EXPECT_EQ(s.records[TaskState::delayed], 1u);
  EXPECT_EQ(s.records[TaskState::dead], 1u);
  EXPECT_EQ(s.records.reservable(), 256u - 9u);
  std::uint64_t all = 0;  // every record is counted in exactly one state
  for (std::uint64_t n : s.records.by_state) all += n;
  EXPECT_EQ(all, 256u);
  ASSERT_EQ(s.queues.size(), 2u);
  const QueueSnapshot& qa = s.queues[0].id == a ? s.queues[0] : s.queues[1];
  EXPECT_EQ(qa.name, "a");
  ASSERT_EQ(qa.levels.size(), 3u);
  EXPECT_EQ(qa.levels[0].depth, 3u);
  EXPECT_EQ(qa.levels[2].depth, 3u);
  EXPECT_EQ(qa.levels[0].counters.enqueued, 5u);
  EXPECT_EQ(qa.levels[0].counters.started, 2u);
  EXPECT_EQ(qa.levels[0].counters.dead, 1u);
  EXPECT_GE(qa.levels[0].oldest_age_ns, 0);
  EXPECT_EQ(qa.levels[1].oldest_age_ns, -1);
  EXPECT_EQ(qa.depth(), 6u);
  // Records by state per queue: a's six queued and one running, b's one delayed.
  EXPECT_EQ(qa.records[TaskState::queued], 6u);
  EXPECT_EQ(qa.records[TaskState::running], 1u);
  EXPECT_EQ(qa.records[TaskState::delayed], 0u);
  EXPECT_EQ(qa.records[TaskState::dead], 1u);  // dead letters keep their queue
  EXPECT_EQ(qa.records[TaskState::free], 0u);  // a free record belongs to no queue
  EXPECT_EQ(qa.outstanding(), 7u);
  const QueueSnapshot& qb = s.queues[0].id == b ? s.queues[0] : s.queues[1];
  EXPECT_EQ(qb.records[TaskState::queued], 0u);
  EXPECT_EQ(qb.records[TaskState::running], 0u);
  EXPECT_EQ(qb.records[TaskState::delayed], 1u);
  EXPECT_EQ(qb.outstanding(), 1u);
  ASSERT_EQ(s.participants.size(), 1u);
  EXPECT_TRUE(s.participants[0].alive);
  EXPECT_EQ(s.participants[0].pid, ProcessIdentity::self().pid);
  ASSERT_EQ(s.semaphores.size(), 1u);
  EXPECT_EQ(s.semaphores[0].name, "gpu");
  EXPECT_EQ(s.semaphores[0].capacity, 2u);
  EXPECT_EQ(cli.complete(t), Errc::ok);
}

TEST(Inspect, PausedQueueIsNotTakenFromButAcceptsWork) {
  auto seg = Segment::create_private(layout(), CreateOptions{0600, {"a"}}).value();
  auto cli = Client::attach(seg).value();
  const QueueId a = seg.find_queue("a").value();
  ASSERT_TRUE(seg.set_paused(a, true).ok());
  TaskOptions o;
  o.queue = a;
  ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  Taken t;
  EXPECT_FALSE(cli.try_take(a, t));
  EXPECT_TRUE(inspect(seg).queues[0].paused);
  ASSERT_TRUE(seg.set_paused(a, false).ok());
  EXPECT_TRUE(cli.try_take(a, t));
  EXPECT_EQ(seg.set_paused(static_cast<QueueId>(a == 0 ? 1 : 0), true).code(), Errc::unknown_queue);
  EXPECT_EQ(seg.set_paused(99, true).code(), Errc::unknown_queue);
}

TEST(Inspect, ParkedTaskCountsForItsQueue) {
  auto seg = Segment::create_private(layout(), CreateOptions{0600, {"a", "b"}}).value();
  auto cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId b = seg.find_queue("b").value();
  const SemId gpu = seg.create_semaphore("gpu", 1).value();
  TaskOptions o;
  o.queue = b;
  o.needs[0] = Need{gpu, 1};
  ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  ASSERT_EQ(cli.try_acquire(gpu, 1), Errc::ok);  // the only permit is taken
  Taken t;
  ASSERT_TRUE(cli.try_take(b, t));
  const Need need[1] = {Need{gpu, 1}};
  ASSERT_EQ(cli.acquire_for(t, need), Client::Grant::parked);
  const Snapshot s = inspect(seg);
  const QueueSnapshot& qb = s.queues[0].id == b ? s.queues[0] : s.queues[1];
  EXPECT_EQ(qb.records[TaskState::parked], 1u);
  EXPECT_EQ(qb.records[TaskState::running], 0u);
  EXPECT_EQ(qb.outstanding(), 1u);
  EXPECT_EQ(s.records[TaskState::parked], 1u);
  ASSERT_EQ(cli.release(gpu, 1), Errc::ok);  // hands the permit on: the task is takeable again
  EXPECT_TRUE(cli.try_take(b, t));
}

// Whole-table scans stop at records_used, one past the highest record ever reserved:
// everything below it is still seen, and what lies past it counts as free.
TEST(Inspect, ScansStopAtTheHighestRecordEverUsedAndMissNothingBelowIt) {
  auto seg = Segment::create_private(layout(), CreateOptions{0600, {"a"}}).value();
  const auto& mark = detail::core_of(seg).header->records_used;
  EXPECT_EQ(mark.load(), 0u) << "a fresh segment has used no record";
  EXPECT_EQ(inspect(seg).records.reservable(), 256u);
  auto cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId a = seg.find_queue("a").value();
  TaskOptions o;
  o.queue = a;
  Taken t;
  // Walk the sweep forward, so that the next records used lie well past the first ones.
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
    ASSERT_TRUE(cli.try_take(a, t));
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  ASSERT_TRUE(cli.try_take(a, t));
  EXPECT_GT(mark.load(), t.index) << "the mark must be past every record in use";
  EXPECT_LT(mark.load(), 256u) << "this test needs records past the mark";
  ASSERT_EQ(cli.dead_letter(t, "bad"), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  const Snapshot s = inspect(seg);
  EXPECT_EQ(s.records[TaskState::dead], 1u);
  EXPECT_EQ(s.records[TaskState::queued], 1u);
  EXPECT_EQ(s.records.reservable(), 254u);
  const auto dl = cli.dead_letters();
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_EQ(dl[0].id, t.id);
  EXPECT_EQ(cli.requeue_all_dead(), 1u);
  EXPECT_EQ(inspect(seg).records[TaskState::queued], 2u);
}

// A batch is published as runs (one ring entry for many tasks): a level's depth counts
// the tasks still in its entries, also once a run has been taken from its front.
TEST(Inspect, DepthCountsTheTasksOfRunsNotTheirEntries) {
  auto seg = Segment::create_private(layout(), CreateOptions{0600, {"a"}}).value();
  auto cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId a = seg.find_queue("a").value();
  std::vector<TaskSpec> specs(12, TaskSpec{"t", {}, TaskOptions{}});
  for (std::size_t i = 0; i < specs.size(); ++i) {
    specs[i].options.queue = a;
    specs[i].options.priority = static_cast<std::uint8_t>(i % 2);  // 6 at level 0, 6 at level 1
  }
  std::vector<TaskId> ids(specs.size());
  ASSERT_EQ(cli.enqueue_batch(specs, ids), specs.size());
  Taken t;
  ASSERT_TRUE(cli.try_take(a, t));  // the front of level 0's run
  const Snapshot s = inspect(seg);
  ASSERT_EQ(s.queues.size(), 1u);
  EXPECT_EQ(s.queues[0].levels[0].depth, 5u);
  EXPECT_EQ(s.queues[0].levels[1].depth, 6u);
  EXPECT_EQ(s.queues[0].depth(), 11u);
  EXPECT_EQ(s.records[TaskState::queued], 11u);
}

// A record's enqueue time is read from the segment, which may hold anything: the age of
// the oldest task saturates instead of overflowing (found by the segment fuzzer).
TEST(Inspect, AnAbsurdEnqueueTimeGivesASaturatedAgeNotAnOverflow) {
  auto seg = Segment::create_private(layout(), CreateOptions{0600, {"a"}}).value();
  auto cli = Client::attach(seg, Role::producer | Role::consumer).value();
  TaskOptions o;
  o.queue = seg.find_queue("a").value();
  ASSERT_EQ(cli.enqueue_text("t", "", o), Errc::ok);
  const auto& core = detail::core_of(seg);
  std::uint32_t queued = core.capacity;
  for (std::uint32_t i = 0; i < core.capacity; ++i)
    if (detail::state_of(core.ctrl[i].state.load()) == TaskState::queued) queued = i;
  ASSERT_LT(queued, core.capacity);
  core.hot(queued)->enqueued_ns = std::numeric_limits<std::int64_t>::min();
  EXPECT_EQ(inspect(seg).queues[0].levels[0].oldest_age_ns, std::numeric_limits<std::int64_t>::max());
  core.hot(queued)->enqueued_ns = std::numeric_limits<std::int64_t>::max();  // in the future: age 0
  EXPECT_EQ(inspect(seg).queues[0].levels[0].oldest_age_ns, 0);
}

// Each participant's counters are its own moves, read as they happen: two consumers'
// done counts add up to the queues' at every snapshot, and `processed` (which a
// consumer adds up in batches) is not what they come from.
TEST(Inspect, ParticipantCountersAddUpToTheQueuesAtEverySnapshot) {
  auto seg = Segment::create_private(layout(), CreateOptions{0600, {"a", "b"}}).value();
  auto producer = Client::attach(seg, Role::producer).value();
  auto c1 = Client::attach(seg, Role::consumer).value();
  auto c2 = Client::attach(seg, Role::consumer).value();
  const QueueId a = seg.find_queue("a").value();
  const QueueId b = seg.find_queue("b").value();
  for (int i = 0; i < 12; ++i)
    ASSERT_EQ(producer.enqueue_text(
                  "t", "", TaskOptions{.queue = i % 3 == 0 ? "b" : "a", .priority = static_cast<std::uint8_t>(i % 3)}),
              Errc::ok);
  auto done_of = [&](const Snapshot& s, std::uint16_t token) {
    for (const auto& p : s.participants)
      if (p.token == token) return p.counters.done;
    ADD_FAILURE() << "no participant with token " << token;
    return std::uint64_t{0};
  };
  std::uint64_t want1 = 0, want2 = 0;
  for (int i = 0; i < 12; ++i) {
    Client& c = i % 3 == 1 ? c2 : c1;
    Taken t;
    ASSERT_TRUE(c.try_take(a, t) || c.try_take(b, t));
    ASSERT_EQ(c.complete(t), Errc::ok);
    (&c == &c1 ? want1 : want2) += 1;
    const Snapshot s = inspect(seg);
    EXPECT_EQ(done_of(s, c1.token()), want1);
    EXPECT_EQ(done_of(s, c2.token()), want2);
    std::uint64_t queue_done = 0;
    for (const auto& q : s.queues)
      for (const auto& l : q.levels) queue_done += l.counters.done;
    EXPECT_EQ(queue_done, want1 + want2);
  }
  for (const auto& p : inspect(seg).participants) {
    EXPECT_EQ(p.processed, 0u);  // nobody called count_processed
    if (p.token == producer.token()) {
      EXPECT_EQ(p.counters.enqueued, 12u);
      EXPECT_EQ(p.counters.done, 0u);
    }
  }
}
