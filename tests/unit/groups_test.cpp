// Groups: the table (create, find, seal, delete, reuse), the counts every transition
// keeps, a sealed group's finish, wait_group, tasks that wait for a group (a chord's
// completion task), and verify_groups catching counts that disagree with the table.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using shmsched::test::small_test_layout;
using namespace std::chrono_literals;

namespace {

struct Groups : ::testing::Test {
  Segment seg = Segment::create_private(small_test_layout(256, 4), CreateOptions{0600, {"general", "other"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId q = seg.find_queue("general").value();

  GroupId group(std::string_view name = "g") { return cli.create_group(name).value(); }
  TaskId add(GroupId g, TaskOptions o = {}, std::string_view type = "job") {
    o.queue = q;
    o.group_id = g;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text(type, "x", o, &id), Errc::ok);
    return id;
  }
  TaskId after(GroupId g, TaskOptions o = {}) {
    o.queue = q;
    o.after_group = g;
    TaskId id = kNoTask;
    EXPECT_EQ(cli.enqueue_text("then", "chord", o, &id), Errc::ok);
    return id;
  }
  // Takes and completes every queued task; their ids in the order taken.
  std::vector<TaskId> drain() {
    std::vector<TaskId> ids;
    Taken t;
    while (cli.try_take(q, t)) {
      ids.push_back(t.id);
      EXPECT_EQ(cli.complete(t), Errc::ok);
    }
    return ids;
  }
  GroupInfo info(GroupId g) { return cli.group_info(g).value(); }
  TaskStatus status(TaskId id) { return cli.status(id).value().status; }
  void expect_verified() {
    const auto v = cli.verify_groups();
    EXPECT_TRUE(v.ok()) << v.error().message();
  }
};

TEST_F(Groups, AGroupIsCreatedFoundSealedAndDeletedByItsId) {
  const GroupId g = group("batch-1");
  EXPECT_NE(g, 0u);
  EXPECT_EQ(cli.find_group("batch-1").value(), g);
  EXPECT_EQ(cli.create_group("batch-1").code(), Errc::exists);
  EXPECT_EQ(cli.create_group("bad name").code(), Errc::invalid_name);
  EXPECT_EQ(cli.find_group("nope").code(), Errc::unknown_group);
  EXPECT_EQ(info(g).state, GroupState::open);
  EXPECT_EQ(info(g).name, "batch-1");
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  EXPECT_EQ(info(g).state, GroupState::finished) << "sealed with no member outstanding: finished at once";
  EXPECT_EQ(cli.delete_group(g), Errc::ok);
  EXPECT_EQ(cli.group_info(g).code(), Errc::unknown_group);
  EXPECT_EQ(cli.seal_group(g), Errc::unknown_group);
  // The entry is reused under a new id; the old id names nothing.
  const GroupId again = group("batch-1");
  EXPECT_NE(again, g);
  EXPECT_EQ(cli.group_info(g).code(), Errc::unknown_group);
  EXPECT_EQ(info(again).total, 0u) << "a reused entry starts from zero";
}

TEST_F(Groups, TheTableIsBoundedAndSaysSo) {
  std::vector<GroupId> gs;
  for (int i = 0; i < 8; ++i) gs.push_back(group("g" + std::to_string(i)));
  const auto full = cli.create_group("one-more");
  ASSERT_EQ(full.code(), Errc::group_table_full);
  EXPECT_NE(full.error().message().find("max_groups 8"), std::string::npos) << full.error().message();
  EXPECT_EQ(cli.delete_group(gs[3]), Errc::ok) << "an open group with no members may be deleted";
  EXPECT_TRUE(cli.create_group("one-more").ok());
}

TEST_F(Groups, EveryFinishIsCountedByItsOutcome) {
  const GroupId g = group();
  TaskOptions once;
  once.max_attempts = 1;
  const TaskId a = add(g), b = add(g, once), c = add(g), d = add(g);
  TaskOptions kept;
  kept.keep_result = true;
  const TaskId e = add(g, kept);
  (void)c;
  EXPECT_EQ(info(g).total, 5u);
  EXPECT_EQ(cli.cancel(d).value(), CancelOutcome::cancelled);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(t.id, a);
  EXPECT_TRUE(t.in_group);
  EXPECT_EQ(info(g).running, 1u) << "counted from the table";
  EXPECT_EQ(cli.complete(t), Errc::ok);
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(t.id, b);
  EXPECT_EQ(cli.retry_or_dead_letter(t, "boom", -1ms, true), Errc::ok);  // one attempt: a dead letter
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(cli.complete(t), Errc::ok);  // c
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(t.id, e);
  const char result[] = "42";
  EXPECT_EQ(cli.complete(t, std::as_bytes(std::span(result, 2))), Errc::ok);
  const GroupInfo i = info(g);
  EXPECT_EQ(i.total, 5u);
  EXPECT_EQ(i.done, 3u);
  EXPECT_EQ(i.failed, 1u);
  EXPECT_EQ(i.cancelled, 1u);
  EXPECT_EQ(i.running, 0u);
  EXPECT_EQ(i.outstanding(), 0u);
  EXPECT_EQ(i.state, GroupState::open) << "not sealed: it may still grow";
  expect_verified();
  // A dead letter requeued is outstanding again, and counted by its new outcome.
  EXPECT_EQ(cli.requeue_dead(b), Errc::ok);
  EXPECT_EQ(info(g).failed, 0u);
  EXPECT_EQ(info(g).outstanding(), 1u);
  expect_verified();
  EXPECT_EQ(drain(), (std::vector<TaskId>{b}));
  EXPECT_EQ(info(g).done, 4u);
  expect_verified();
}

TEST_F(Groups, ASealedGroupTakesNoMoreMembersAndFinishesWithItsLast) {
  const GroupId g = group();
  add(g);
  add(g);
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  EXPECT_EQ(info(g).state, GroupState::sealed);
  TaskOptions o;
  o.queue = q;
  o.group_id = g;
  EXPECT_EQ(cli.enqueue_text("job", "x", o), Errc::group_sealed);
  EXPECT_EQ(info(g).total, 2u) << "a refused member is not counted";
  EXPECT_EQ(cli.delete_group(g), Errc::group_busy);
  Taken t;
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(cli.complete(t), Errc::ok);
  EXPECT_EQ(info(g).state, GroupState::sealed);
  ASSERT_TRUE(cli.try_take(q, t));
  EXPECT_EQ(cli.complete(t), Errc::ok);
  EXPECT_EQ(info(g).state, GroupState::finished);
  EXPECT_NE(info(g).finished_ns, 0);
  expect_verified();
}

TEST_F(Groups, MembersOfABatchAreCountedOneByOne) {
  const GroupId g = group();
  std::vector<TaskSpec> specs(20);
  for (auto& s : specs) {
    s.type = "job";
    s.options.queue = q;
    s.options.group_id = g;
  }
  specs[7].options.group_id = 0;  // not a member
  std::vector<TaskId> ids(specs.size());
  Errc e = Errc::ok;
  EXPECT_EQ(cli.enqueue_batch(specs, ids, &e), specs.size());
  EXPECT_EQ(e, Errc::ok);
  EXPECT_EQ(info(g).total, 19u);
  EXPECT_EQ(drain(), ids) << "in order";
  EXPECT_EQ(info(g).done, 19u);
  expect_verified();
}

TEST_F(Groups, WaitGroupSleepsUntilTheLastMemberAndReportsProgress) {
  const GroupId g = group();
  for (int i = 0; i < 50; ++i) add(g);
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  EXPECT_EQ(cli.wait_group(g, 20ms).code(), Errc::timeout);
  std::thread worker([&] {
    Client w = Client::attach(seg, Role::consumer).value();
    Taken t;
    for (int i = 0; i < 50; ++i) {
      while (!w.try_take(q, t)) std::this_thread::yield();
      std::this_thread::sleep_for(2ms);
      EXPECT_EQ(w.complete(t), Errc::ok);
    }
  });
  std::vector<std::uint64_t> seen;
  const auto r = cli.wait_group(
      g, 30s, [&](const GroupInfo& i) { seen.push_back(i.done); }, 10ms);
  worker.join();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value().state, GroupState::finished);
  EXPECT_EQ(r.value().done, 50u);
  ASSERT_GE(seen.size(), 3u) << "progress about every 10 ms over ~100 ms";
  EXPECT_EQ(seen.back(), 50u) << "and once at the end";
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
}

TEST_F(Groups, ATaskThatWaitsForAGroupRunsOnceItFinishes) {
  const GroupId g = group();
  const TaskId a = add(g), b = add(g);
  const TaskId then = after(g);
  EXPECT_EQ(status(then), TaskStatus::waiting);
  EXPECT_EQ(info(g).dependents, 1u);
  EXPECT_EQ(drain(), (std::vector<TaskId>{a, b})) << "a waiting task is in no ring";
  EXPECT_EQ(status(then), TaskStatus::waiting) << "all members done, but the group is not sealed";
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  EXPECT_EQ(status(then), TaskStatus::queued) << "released by the seal that finished the group";
  EXPECT_EQ(drain(), (std::vector<TaskId>{then}));
  expect_verified();
}

TEST_F(Groups, ATaskThatWaitsForAFailedGroupIsCancelledUnlessItRunsAnyway) {
  const GroupId g = group();
  const TaskId a = add(g);
  TaskOptions kept;
  kept.keep_result = true;
  const TaskId then = after(g, kept);
  TaskOptions anyway;
  anyway.run_anyway = true;
  const TaskId regardless = after(g, anyway);
  EXPECT_EQ(cli.cancel(a).value(), CancelOutcome::cancelled);
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  const auto r = cli.take_result(then);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value().status, TaskStatus::cancelled);
  EXPECT_EQ(cli.status(then).ok(), true);
  EXPECT_EQ(drain(), (std::vector<TaskId>{regardless}));
  expect_verified();
}

TEST_F(Groups, ATaskThatWaitsForAFinishedGroupIsQueuedAtOnce) {
  const GroupId g = group();
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  const TaskId then = after(g);
  EXPECT_EQ(status(then), TaskStatus::queued);
  EXPECT_EQ(drain(), (std::vector<TaskId>{then}));
  TaskOptions o;
  o.queue = q;
  o.after_group = g + (GroupId{1} << 16);  // another generation: no such group
  EXPECT_EQ(cli.enqueue_text("then", "x", o), Errc::unknown_group);
}

TEST_F(Groups, AWaitingTaskCanBeCancelledOrMovedAndStaysWaiting) {
  const GroupId g = group();
  add(g);
  const TaskId x = after(g), y = after(g);
  EXPECT_EQ(cli.cancel(x).value(), CancelOutcome::cancelled);
  EXPECT_EQ(status(x), TaskStatus::unknown);
  EXPECT_EQ(cli.set_priority(y, 2), Errc::ok);
  EXPECT_EQ(status(y), TaskStatus::waiting);
  EXPECT_EQ(cli.status(y).value().priority, 2);
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  drain();
  EXPECT_EQ(status(y), TaskStatus::unknown) << "released at its new level and run";
  EXPECT_EQ(inspect(seg).records.outstanding(), 0u);
}

TEST_F(Groups, DeletingAGroupCancelsTheTasksThatWaitForIt) {
  const GroupId g = group();
  TaskOptions kept;
  kept.keep_result = true;
  const TaskId then = after(g, kept);
  EXPECT_EQ(cli.delete_group(g), Errc::ok);
  const auto r = cli.take_result(then);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().status, TaskStatus::cancelled);
}

TEST_F(Groups, TheJanitorFinishesAGroupItsHintMissedAndDropsOldFinishedGroups) {
  const GroupId g = group();
  add(g);
  EXPECT_EQ(cli.seal_group(g), Errc::ok);
  // A finisher killed between its count and its hint leaves the hint too high: the
  // exact counts, which the janitor reads, still finish the group.
  detail::core_of(seg).groups[g & 0xFFFF].outstanding.fetch_add(5);
  drain();
  EXPECT_EQ(info(g).state, GroupState::sealed);
  EXPECT_TRUE(cli.janitor_tick(monotonic_ns() + 2'000'000'000));
  EXPECT_EQ(info(g).state, GroupState::finished);
  // Ten minutes (the default ttl) after it finished, it is deleted.
  EXPECT_TRUE(cli.janitor_tick(monotonic_ns() + 601'000'000'000));
  EXPECT_EQ(cli.group_info(g).code(), Errc::unknown_group);
}

// Counters are per participant slot and summed over the slots ever used: a slot freed
// as many times as its epoch has values (64) must still count as used.
TEST_F(Groups, CountsSurviveASlotReusedPastItsEpochWrap) {
  const GroupId g = group();
  for (int i = 0; i < 64; ++i) {
    Client c = Client::attach(seg, Role::producer).value();
    add(g);
    TaskOptions o;
    o.queue = q;
    o.group_id = g;
    ASSERT_EQ(c.enqueue_text("job", "x", o), Errc::ok);
  }
  EXPECT_EQ(info(g).total, 128u);
  EXPECT_EQ(cli.level_stats(q, 0).enqueued, 128u);
  expect_verified();
}

TEST_F(Groups, VerifyGroupsCatchesCountsThatDisagreeWithTheTable) {
  const GroupId g = group();
  add(g);
  add(g);
  expect_verified();
  // A lost finish count (the bug the counted steps exist to prevent): one member
  // counted done although it is still queued.
  auto& ctr = detail::core_of(seg).group_counter(0, 0, g & 0xFFFF).n[detail::GroupCounters::kDone];
  ctr.fetch_add(1);
  const auto v = cli.verify_groups();
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message().find("2 accepted - 1 finished != 2 outstanding"), std::string::npos)
      << v.error().message();
  ctr.fetch_sub(1);
  expect_verified();
}

}  // namespace

namespace {

// Members added while the group is sealed, and finished while it is sealed: every round
// the group finishes exactly once, after every member the adder got accepted, and its
// waiting task runs exactly once. 200 rounds.
TEST(GroupsRace, ASealRacingWithAddersAndFinishersFinishesTheGroupOnceAfterEveryMember) {
  Layout l = small_test_layout(1024, 2);
  Segment seg = Segment::create_private(l, CreateOptions{0600, {"general"}}).value();
  Client main = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId q = seg.find_queue("general").value();
  for (int round = 0; round < 200; ++round) {
    const GroupId g = main.create_group("race").value();
    TaskOptions then;
    then.queue = q;
    then.after_group = g;
    TaskId chord = kNoTask;
    ASSERT_EQ(main.enqueue_text("then", "x", then, &chord), Errc::ok);
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<int> chords{0};
    std::atomic<bool> stop{false};
    std::thread adder([&] {
      Client c = Client::attach(seg, Role::producer).value();
      TaskOptions o;
      o.queue = q;
      o.group_id = g;
      for (;;) {
        const Errc e = c.enqueue_text("job", "x", o);
        if (e == Errc::group_sealed) break;
        if (e == Errc::table_full || e == Errc::ring_full) {  // the worker catches up
          std::this_thread::yield();
          continue;
        }
        ASSERT_EQ(e, Errc::ok);
        accepted.fetch_add(1);
      }
    });
    std::thread worker([&] {
      Client c = Client::attach(seg, Role::consumer).value();
      Taken t;
      while (!stop.load()) {
        if (!c.try_take(q, t)) continue;
        if (t.id == chord) chords.fetch_add(1);
        ASSERT_EQ(c.complete(t), Errc::ok);
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(round % 7 * 50));
    ASSERT_EQ(main.seal_group(g), Errc::ok);
    adder.join();
    const auto r = main.wait_group(g, 10s);
    ASSERT_TRUE(r.ok()) << "round " << round << ": " << r.error().message();
    EXPECT_EQ(r.value().total, accepted.load()) << "round " << round;
    EXPECT_EQ(r.value().done, accepted.load()) << "round " << round;
    const std::int64_t deadline = monotonic_ns() + 10'000'000'000;
    while (chords.load() == 0 && monotonic_ns() < deadline) std::this_thread::yield();
    stop = true;
    worker.join();
    EXPECT_EQ(chords.load(), 1) << "round " << round;
    const auto v = main.verify_groups();
    ASSERT_TRUE(v.ok()) << "round " << round << ": " << v.error().message();
    ASSERT_EQ(main.delete_group(g), Errc::ok);
  }
}

}  // namespace

namespace {

// Threads of one process share its participant: four of them adding and finishing
// members of one group through one Client (as a Consumer's workers do) lose no count.
TEST(GroupsRace, ThreadsSharingOneClientCountEveryMember) {
  Segment seg = Segment::create_private(small_test_layout(4096, 2), CreateOptions{0600, {"general"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId q = seg.find_queue("general").value();
  const GroupId g = cli.create_group("shared").value();
  constexpr int kThreads = 4, kEach = 2000;
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&] {
      TaskOptions o;
      o.queue = q;
      o.group_id = g;
      Taken t;
      for (int n = 0; n < kEach; ++n) {
        ASSERT_EQ(cli.enqueue_text("job", "x", o), Errc::ok);
        if (cli.try_take(q, t)) ASSERT_EQ(cli.complete(t), Errc::ok);
      }
    });
  for (auto& t : ts) t.join();
  Taken t;
  while (cli.try_take(q, t)) ASSERT_EQ(cli.complete(t), Errc::ok);
  ASSERT_EQ(cli.seal_group(g), Errc::ok);
  const GroupInfo i = cli.group_info(g).value();
  EXPECT_EQ(i.total, std::uint64_t{kThreads * kEach});
  EXPECT_EQ(i.done, std::uint64_t{kThreads * kEach});
  EXPECT_EQ(i.state, GroupState::finished);
  const auto v = cli.verify_groups();
  EXPECT_TRUE(v.ok()) << v.error().message();
}

}  // namespace
