#include <gtest/gtest.h>

#include <algorithm>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"

using namespace shmsched;

namespace {

Layout small_layout(std::uint32_t cap = 64, std::uint32_t levels = 4) {
  Layout l;
  l.task_capacity = cap;
  l.levels = levels;
  l.payload_bytes = 64;
  l.max_queues = 4;
  l.max_participants = 8;
  return l;
}

struct Fixture : ::testing::Test {
  Segment seg = Segment::create_private(small_layout(), CreateOptions{0600, {"general", "selenium"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  QueueId general = seg.find_queue("general").value();
  QueueId selenium = seg.find_queue("selenium").value();
  TaskOptions opts(QueueId q, std::uint8_t prio = 0) {
    TaskOptions o;
    o.queue = q;
    o.priority = prio;
    return o;
  }
  TaskState state_of_index(std::uint32_t i) { return detail::state_of(detail::core_of(seg).ctrl[i].state.load()); }
};

}  // namespace

// The take path remembers the last type name per thread and Client: alternating types,
// and two Clients of two segments whose types hash alike in neither, each get their own.
TEST_F(Fixture, TakenTypeNamesFollowEachTaskAcrossTypesAndClients) {
  const char* types[] = {"alpha", "beta", "alpha", "alpha", "gamma", "beta"};
  for (const char* ty : types) ASSERT_EQ(cli.enqueue_text(ty, "", opts(general)), Errc::ok);
  Segment other_seg = Segment::create_private(small_layout(), CreateOptions{0600, {"general"}}).value();
  Client other = Client::attach(other_seg).value();
  const QueueId og = other_seg.find_queue("general").value();
  ASSERT_EQ(other.enqueue_text("delta", "", opts(og)), Errc::ok);
  for (const char* ty : types) {
    Taken t;
    ASSERT_TRUE(cli.try_take(general, t));
    EXPECT_EQ(t.type_name, ty);
    EXPECT_EQ(cli.complete(t), Errc::ok);
    Taken u;  // the other Client in between: its name, never this one's
    if (other.try_take(og, u)) {
      EXPECT_EQ(u.type_name, "delta");
      ASSERT_EQ(other.requeue(u), Errc::ok);
    }
  }
}

TEST_F(Fixture, EnqueueThenTakeReturnsSamePayloadAndId) {
  TaskId id = 0;
  ASSERT_EQ(cli.enqueue_text("echo", "hello", opts(general), &id), Errc::ok);
  EXPECT_NE(id, kNoTask);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.id, id);
  EXPECT_EQ(t.type_name, "echo");
  EXPECT_EQ(t.type, type_hash("echo"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size()), "hello");
  EXPECT_EQ(t.attempt, 1);
  EXPECT_EQ(state_of_index(t.index), TaskState::running);
  EXPECT_EQ(cli.complete(t), Errc::ok);
  EXPECT_EQ(state_of_index(t.index), TaskState::free);
  Taken none;
  EXPECT_FALSE(cli.try_take(general, none));
}

TEST_F(Fixture, TypedPayloadRoundTrips) {
  struct Job {
    int a;
    double b;
  } job{7, 2.5};
  ASSERT_EQ(cli.enqueue_value("job", job, opts(general)), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  Job out{};
  ASSERT_TRUE(payload_to(t.payload, out));
  EXPECT_EQ(out.a, 7);
  EXPECT_EQ(out.b, 2.5);
  std::int64_t wrong;
  EXPECT_FALSE(payload_to(t.payload, wrong));
  EXPECT_EQ(cli.complete(t), Errc::ok);
}

struct LevelSeq {
  int first, second;
  friend bool operator==(const LevelSeq&, const LevelSeq&) = default;
};

TEST_F(Fixture, StrictPriorityThenFifoWithinLevel) {
  // Enqueue levels in mixed order; one taker must see level 0 first, FIFO per level.
  std::vector<LevelSeq> sent;  // (level, seq)
  int seq = 0;
  for (int round = 0; round < 5; ++round) {
    for (int level : {3, 1, 0, 2}) {
      const LevelSeq v{level, seq++};
      ASSERT_EQ(cli.enqueue_value("p", v, opts(general, static_cast<std::uint8_t>(level))), Errc::ok);
      sent.push_back(v);
    }
  }
  std::vector<LevelSeq> got;
  Taken t;
  while (cli.try_take(general, t)) {
    LevelSeq v{};
    ASSERT_TRUE(payload_to(t.payload, v));
    EXPECT_EQ(v.first, t.level);
    got.push_back(v);
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  std::stable_sort(sent.begin(), sent.end(), [](auto a, auto b) { return a.first < b.first; });
  EXPECT_EQ(got, sent);
}

TEST_F(Fixture, QueuesAreSeparate) {
  ASSERT_EQ(cli.enqueue_text("a", "x", opts(selenium)), Errc::ok);
  Taken t;
  EXPECT_FALSE(cli.try_take(general, t));
  EXPECT_TRUE(cli.try_take(selenium, t));
  EXPECT_EQ(cli.complete(t), Errc::ok);
}

TEST_F(Fixture, TaskIdsAreUniqueAcrossReuse) {
  std::set<TaskId> ids;
  for (int i = 0; i < 500; ++i) {  // capacity 64: every record is reused many times
    TaskId id;
    ASSERT_EQ(cli.enqueue_text("t", "", opts(general), &id), Errc::ok);
    EXPECT_TRUE(ids.insert(id).second) << "duplicate id " << id;
    Taken t;
    ASSERT_TRUE(cli.try_take(general, t));
    EXPECT_EQ(t.id, id);
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
}

TEST_F(Fixture, FullTableIsBackPressureNotOverwrite) {
  std::vector<TaskId> ids;
  for (;;) {
    TaskId id;
    const Errc e = cli.enqueue_value("t", static_cast<int>(ids.size()), opts(general), &id);
    if (e != Errc::ok) {
      EXPECT_EQ(e, Errc::table_full);
      break;
    }
    ids.push_back(id);
    ASSERT_LE(ids.size(), 64u);
  }
  EXPECT_EQ(ids.size(), 64u);
  EXPECT_EQ(cli.enqueue_wait("t", {}, opts(general), std::chrono::milliseconds(5)), Errc::timeout);
  // Everything accepted is still there, in order.
  Taken t;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(cli.try_take(general, t));
    int v;
    ASSERT_TRUE(payload_to(t.payload, v));
    EXPECT_EQ(v, static_cast<int>(i));
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  EXPECT_EQ(cli.enqueue_text("t", "again", opts(general)), Errc::ok);
}

TEST(ClientRing, FullRingIsBackPressureAndRecordIsReturned) {
  Layout l = small_layout(64, 2);
  l.ring_capacity = 4;
  auto seg = Segment::create_private(l, CreateOptions{0600, {"q"}}).value();
  auto cli = Client::attach(seg).value();
  TaskOptions o;
  o.queue = seg.find_queue("q").value();
  for (int i = 0; i < 4; ++i) ASSERT_EQ(cli.enqueue_value("t", i, o), Errc::ok);
  EXPECT_EQ(cli.enqueue_value("t", 4, o), Errc::ring_full);
  // Other level still has room; the refused record went back to the free ring.
  o.priority = 1;
  EXPECT_EQ(cli.enqueue_value("t", 5, o), Errc::ok);
  int reserved = 0;
  for (std::uint32_t i = 0; i < 64; ++i)
    reserved += detail::state_of(detail::core_of(seg).ctrl[i].state.load()) == TaskState::reserved;
  EXPECT_EQ(reserved, 0);
}

static_assert(QueueRef("general").hash() == type_hash("general"), "a literal's name is hashed when compiling");
static_assert(QueueRef("general") == QueueRef(std::string_view("general")) && !(QueueRef("a") == QueueRef("b")));
static_assert(!QueueRef(QueueId{0}).is_name() && !QueueRef().is_set());

TEST_F(Fixture, ATaskNamesItsQueueByNameOrId) {
  const std::string sel_name = "selenium";
  TaskOptions by_literal;
  by_literal.queue = "general";
  TaskOptions by_string;
  by_string.queue = sel_name;
  TaskId a = 0, b = 0, c = 0;
  ASSERT_EQ(cli.enqueue_text("t", "a", by_literal, &a), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("t", "b", by_string, &b), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("t", "c", TaskOptions{.queue = QueueRef(std::string_view("selenium"))}, &c), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.id, a);
  EXPECT_EQ(t.queue, general);
  EXPECT_EQ(cli.complete(t), Errc::ok);
  for (TaskId want : {b, c}) {
    ASSERT_TRUE(cli.try_take(selenium, t));
    EXPECT_EQ(t.id, want);
    EXPECT_EQ(cli.complete(t), Errc::ok);
  }
  EXPECT_FALSE(cli.try_take(general, t));
}

TEST_F(Fixture, ATaskNamingNoQueueOrAMissingOneIsRefusedAndChangesNothing) {
  const std::uint32_t before = detail::core_of(seg).capacity;
  auto in_use = [&] {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < before; ++i) n += detail::core_of(seg).ctrl[i].state.load() != 0;
    return n;
  };
  EXPECT_EQ(cli.enqueue_text("t", "x", TaskOptions{}), Errc::queue_not_set);
  EXPECT_NE(to_string(Errc::queue_not_set).find("TaskOptions::queue"), std::string_view::npos);
  TaskOptions o;
  o.queue = "nope";
  EXPECT_EQ(cli.enqueue_text("t", "x", o), Errc::unknown_queue);
  o.queue = std::string(kMaxQueueName + 1, 'g');  // longer than any queue's name
  EXPECT_EQ(cli.enqueue_text("t", "x", o), Errc::unknown_queue);
  o.queue = std::string_view("general\0", 8);  // not the name "general"
  EXPECT_EQ(cli.enqueue_text("t", "x", o), Errc::unknown_queue);
  EXPECT_EQ(in_use(), 0u);
}

// Four queues in a table of four slots: whichever names share a home slot are found
// further along their probe sequence, each by its name, as find_queue finds it.
TEST(ClientQueueRef, EveryQueueOfAFullTableIsFoundByName) {
  const std::vector<std::string> names = {"alpha", "beta", "gamma", "delta"};
  Segment seg = Segment::create_private(small_layout(), CreateOptions{0600, names}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  std::set<QueueId> ids;
  for (const std::string& n : names) {
    const QueueId id = seg.find_queue(n).value();
    ids.insert(id);
    TaskId tid = 0;
    ASSERT_EQ(cli.enqueue_text("t", n, TaskOptions{.queue = n}, &tid), Errc::ok) << n;
    Taken t;
    ASSERT_TRUE(cli.try_take(id, t)) << n;
    EXPECT_EQ(t.id, tid);
    EXPECT_EQ(cli.complete(t), Errc::ok);
  }
  EXPECT_EQ(ids.size(), names.size());
}

// A batch may name queues by name and by id, mixed; runs are still made per queue,
// and a name that names no queue stops the batch there.
TEST_F(Fixture, ABatchResolvesEachTasksQueueNameAndStopsAtAnUnknownOne) {
  std::vector<TaskSpec> specs(7);
  const QueueRef refs[] = {"general", general, "general", "selenium", selenium, "general", "missing"};
  for (std::size_t i = 0; i < specs.size(); ++i) {
    specs[i].type = "b";
    specs[i].options.queue = refs[i];
  }
  std::vector<TaskId> ids(specs.size());
  Errc err = Errc::ok;
  EXPECT_EQ(cli.enqueue_batch(specs, ids, &err), 6u);
  EXPECT_EQ(err, Errc::unknown_queue);
  std::vector<Taken> got(8);
  ASSERT_EQ(cli.try_take_batch(general, got), 4u);
  const std::size_t want_general[] = {0, 1, 2, 5};
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i].id, ids[want_general[i]]);
  EXPECT_EQ(cli.complete_batch(std::span(got).first(4)), 4u);
  ASSERT_EQ(cli.try_take_batch(selenium, got), 2u);
  EXPECT_EQ(got[0].id, ids[3]);
  EXPECT_EQ(got[1].id, ids[4]);
  EXPECT_EQ(cli.complete_batch(std::span(got).first(2)), 2u);
}

TEST_F(Fixture, BadInputIsRefusedAndChangesNothing) {
  auto reserved_or_used = [&] {
    int n = 0;
    for (std::uint32_t i = 0; i < detail::core_of(seg).capacity; ++i)
      n += detail::core_of(seg).ctrl[i].state.load() != 0;
    return n;
  };
  const int before = reserved_or_used();
  std::vector<std::byte> big(65);
  EXPECT_EQ(cli.enqueue("t", big, opts(general)), Errc::payload_too_large);
  QueueId unused = 0;
  while (unused == general || unused == selenium) ++unused;
  EXPECT_EQ(cli.enqueue_text("t", "x", opts(unused)), Errc::unknown_queue);  // slot not created
  EXPECT_EQ(cli.enqueue_text("t", "x", opts(99)), Errc::unknown_queue);      // out of range
  EXPECT_EQ(cli.enqueue_text("", "x", opts(general)), Errc::invalid_name);
  EXPECT_EQ(cli.enqueue_text(std::string(48, 'a'), "x", opts(general)), Errc::invalid_name);
  EXPECT_EQ(cli.enqueue_text("t", "x", opts(general, 4)), Errc::invalid_argument);  // 4 levels
  TaskOptions zero = opts(general);
  zero.max_attempts = 0;
  EXPECT_EQ(cli.enqueue_text("t", "x", zero), Errc::invalid_argument);
  EXPECT_EQ(reserved_or_used(), before);
  Taken t;
  EXPECT_FALSE(cli.try_take(general, t));
  EXPECT_EQ(seg.find_queue("nope").code(), Errc::unknown_queue);
  EXPECT_EQ(seg.find_queue("bad/name").code(), Errc::invalid_name);
}

TEST_F(Fixture, BatchEnqueueStopsAtFirstFailure) {
  std::vector<TaskSpec> specs(5);
  for (auto& s : specs) {
    s.type = "b";
    s.options = opts(general);
  }
  specs[3].options.queue = 77;
  std::vector<TaskId> ids(5);
  Errc err = Errc::ok;
  EXPECT_EQ(cli.enqueue_batch(specs, ids, &err), 3u);
  EXPECT_EQ(err, Errc::unknown_queue);
  std::vector<Taken> got(8);
  EXPECT_EQ(cli.try_take_batch(general, got), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i].id, ids[i]);
    EXPECT_EQ(cli.complete(got[i]), Errc::ok);
  }
}

TEST_F(Fixture, BatchesCountPerQueueAndLevelAndCompleteInOneCall) {
  // Eight distinct (queue, level) pairs: more than a batch keeps before settling early.
  std::vector<TaskSpec> specs(20);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    specs[i].type = "b";
    specs[i].options = opts(i % 2 == 0 ? general : selenium, static_cast<std::uint8_t>((i / 2) % 4));
  }
  std::vector<TaskId> ids(specs.size());
  ASSERT_EQ(cli.enqueue_batch(specs, ids), specs.size());
  // Every (queue, level) counted exactly, though a batch settles its counts at the end.
  std::uint64_t enqueued = 0;
  for (QueueId q : {general, selenium})
    for (std::uint8_t l = 0; l < 4; ++l) {
      const std::uint64_t want =
          static_cast<std::uint64_t>(std::count_if(specs.begin(), specs.end(), [&](const TaskSpec& s) {
            return s.options.queue == q && s.options.priority == l;
          }));
      EXPECT_EQ(cli.level_stats(q, l).enqueued, want) << "queue " << q << " level " << int(l);
      enqueued += cli.level_stats(q, l).enqueued;
    }
  EXPECT_EQ(enqueued, specs.size());
  std::vector<Taken> got(16);
  const std::size_t n = cli.try_take_batch(general, got);
  ASSERT_EQ(n, 10u);
  // A task that is not ours any more stops the batch there; the ones before it count.
  ASSERT_EQ(cli.requeue(got[6]), Errc::ok);
  Errc err = Errc::ok;
  EXPECT_EQ(cli.complete_batch(std::span<const Taken>(got.data(), n), &err), 6u);
  EXPECT_EQ(err, Errc::fenced);
  EXPECT_EQ(cli.complete_batch(std::span<const Taken>(got.data() + 7, n - 7)), 3u);
  std::uint64_t done = 0;
  for (std::uint8_t l = 0; l < 4; ++l) done += cli.level_stats(general, l).done;
  EXPECT_EQ(done, 9u);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));  // the requeued one
  EXPECT_EQ(t.id, got[6].id);
  EXPECT_EQ(cli.complete(t), Errc::ok);
}

TEST_F(Fixture, RequeueKeepsAttemptAndGoesToTail) {
  ASSERT_EQ(cli.enqueue_text("a", "first", opts(general)), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("a", "second", opts(general)), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  ASSERT_EQ(cli.requeue(t), Errc::ok);
  EXPECT_EQ(cli.complete(t), Errc::fenced);  // no longer ours
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size()), "second");
  ASSERT_EQ(cli.complete(t), Errc::ok);
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.attempt, 2);
  ASSERT_EQ(cli.complete(t), Errc::ok);
}

TEST_F(Fixture, DelayedTaskRunsOnlyWhenDue) {
  TaskOptions o = opts(general);
  o.not_before_ns = monotonic_ns() + 3'600'000'000'000;  // an hour from now
  TaskId id;
  ASSERT_EQ(cli.enqueue_text("later", "x", o, &id), Errc::ok);
  Taken t;
  EXPECT_FALSE(cli.try_take(general, t));
  EXPECT_EQ(state_of_index(detail::core_of(seg).id_index(id)), TaskState::delayed);
  EXPECT_EQ(cli.promote_due(monotonic_ns()), 0u);
  EXPECT_EQ(cli.promote_due(o.not_before_ns + 1), 1u);
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.id, id);
  ASSERT_EQ(cli.complete(t), Errc::ok);
  EXPECT_EQ(cli.promote_due(o.not_before_ns + 2), 0u);
}

TEST_F(Fixture, DetachPutsBackWhatItHeld) {
  auto other = Client::attach(seg, Role::consumer).value();
  ASSERT_EQ(cli.enqueue_text("a", "x", opts(general)), Errc::ok);
  Taken t;
  ASSERT_TRUE(other.try_take(general, t));
  other.detach();
  Taken again;
  ASSERT_TRUE(cli.try_take(general, again));
  EXPECT_EQ(again.id, t.id);
  EXPECT_EQ(again.attempt, 2);
  EXPECT_EQ(cli.complete(again), Errc::ok);
}

TEST_F(Fixture, DeadLetterKeepsReason) {
  ASSERT_EQ(cli.enqueue_text("a", "x", opts(general)), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  ASSERT_EQ(cli.dead_letter(t, "no handler for type 'a'"), Errc::ok);
  EXPECT_EQ(state_of_index(t.index), TaskState::dead);
  EXPECT_STREQ(detail::core_of(seg).cold(t.index)->last_error, "no handler for type 'a'");
}

// A task whose expiry passed while it was queued is dead-lettered by the take that
// reaches it, never handed out; the take goes on to the next task. Single takes and
// batch takes alike.
TEST_F(Fixture, AnExpiredTaskIsDeadLetteredByTheTakeAndTheNextTaskIsTaken) {
  for (const bool batch : {false, true}) {
    SCOPED_TRACE(batch ? "try_take_batch" : "try_take");
    TaskOptions soon = opts(general, 1);
    soon.expires_ns = monotonic_ns() + 1'000'000;  // 1 ms
    TaskId expiring = kNoTask, fresh = kNoTask;
    ASSERT_EQ(cli.enqueue_text("t", "old", soon, &expiring), Errc::ok);
    ASSERT_EQ(cli.enqueue_text("t", "new", opts(general, 1), &fresh), Errc::ok);
    const LevelStats before = cli.level_stats(general, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    Taken t;
    if (batch) {
      Taken ts[4];
      ASSERT_EQ(cli.try_take_batch(general, ts), 1u);
      t = ts[0];
    } else {
      ASSERT_TRUE(cli.try_take(general, t));
    }
    EXPECT_EQ(t.id, fresh) << "the expired task is not handed out";
    EXPECT_EQ(cli.complete(t), Errc::ok);
    EXPECT_FALSE(cli.try_take(general, t)) << "and it is not left queued";
    EXPECT_EQ(cli.level_stats(general, 1).dead, before.dead + 1);
    EXPECT_EQ(cli.level_stats(general, 1).started, before.started + 1) << "only the task handed out started";
    bool listed = false;
    for (const DeadLetter& d : cli.dead_letters())
      if (d.id == expiring) {
        listed = true;
        EXPECT_EQ(d.reason, "expired before it started");
      }
    EXPECT_TRUE(listed) << "the expired task is listed as a dead letter";
  }
}

// An expiry still ahead does not stop a take.
TEST_F(Fixture, ATaskWhoseExpiryIsAheadIsTaken) {
  TaskOptions later = opts(general);
  later.expires_ns = monotonic_ns() + 60'000'000'000;  // a minute
  TaskId id = kNoTask;
  ASSERT_EQ(cli.enqueue_text("t", "x", later, &id), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.id, id);
  EXPECT_EQ(cli.complete(t), Errc::ok);
}

// ---- take-ahead: a take claims several tasks and hands them out one by one ------------

namespace {
// Enqueues n tasks of `level` carrying 0 .. n-1; returns their ids.
std::vector<TaskId> enqueue_n(Client& c, QueueId q, std::uint8_t level, int n, int first = 0) {
  std::vector<TaskId> ids;
  TaskOptions o;
  o.queue = q;
  o.priority = level;
  for (int i = 0; i < n; ++i) {
    TaskId id = kNoTask;
    EXPECT_EQ(c.enqueue_value("t", first + i, o, &id), Errc::ok);
    ids.push_back(id);
  }
  return ids;
}
// Turns take-ahead on at n and takes and completes one task, which must be `expect`
// (the take claims up to n - 1 more).
void take_one_ahead(Client& c, QueueId q, std::uint32_t n, TaskId expect) {
  ASSERT_EQ(c.set_take_ahead(q, n), Errc::ok);
  Taken t;
  ASSERT_TRUE(c.try_take(q, t));
  EXPECT_EQ(t.id, expect);
  ASSERT_EQ(c.complete(t), Errc::ok);
}
// Takes and completes tasks one by one; they must be `want`, in order.
void take_in_order(Client& c, QueueId q, const std::vector<TaskId>& want) {
  for (TaskId id : want) {
    Taken t;
    ASSERT_TRUE(c.try_take(q, t));
    EXPECT_EQ(t.id, id);
    EXPECT_EQ(t.attempt, 1);
    ASSERT_EQ(c.complete(t), Errc::ok);
  }
}
}  // namespace

// The first take claims four; other consumers cannot take those, and the next takes
// hand them out in order, each counted as started (and as an attempt) only then.
TEST_F(Fixture, TakeAheadClaimsSeveralAndHandsThemOutInOrder) {
  const std::vector<TaskId> ids = enqueue_n(cli, general, 1, 10);
  ASSERT_EQ(cli.set_take_ahead(general, 4), Errc::ok);
  Client other = Client::attach(seg, Role::consumer).value();
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.id, ids[0]);
  EXPECT_EQ(t.attempt, 1);
  EXPECT_EQ(cli.level_stats(general, 1).started, 1u) << "only the task handed out started";
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(state_of_index(detail::core_of(seg).id_index(ids[i])), TaskState::running)
        << "task " << i << " is claimed ahead";
    EXPECT_EQ(detail::core_of(seg).hot(detail::core_of(seg).id_index(ids[i]))->attempts, 0)
        << "and its attempt is not counted";
  }
  Taken o;
  ASSERT_TRUE(other.try_take(general, o));
  EXPECT_EQ(o.id, ids[4]) << "another consumer gets the first task not claimed";
  ASSERT_EQ(other.complete(o), Errc::ok);
  ASSERT_EQ(cli.complete(t), Errc::ok);
  const std::vector<TaskId> want = {ids[1], ids[2], ids[3], ids[5], ids[6], ids[7], ids[8], ids[9]};
  for (TaskId id : want) {
    ASSERT_TRUE(cli.try_take(general, t));
    EXPECT_EQ(t.id, id);
    EXPECT_EQ(t.attempt, 1);
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  EXPECT_FALSE(cli.try_take(general, t));
  EXPECT_EQ(cli.level_stats(general, 1).started, 10u);
  EXPECT_EQ(cli.level_stats(general, 1).done, 10u);
}

// Tasks held are handed out before the rings are looked at again: a more urgent task
// that arrives meanwhile waits behind them here (another consumer takes it at once), and
// comes first once none is held.
TEST_F(Fixture, TakeAheadHandsOutHeldTasksBeforeAMoreUrgentOneThatArrivedLater) {
  const std::vector<TaskId> low = enqueue_n(cli, general, 2, 6);
  take_one_ahead(cli, general, 3, low[0]);
  const std::vector<TaskId> urgent = enqueue_n(cli, general, 0, 2);
  Client other = Client::attach(seg, Role::consumer).value();
  Taken o;
  ASSERT_TRUE(other.try_take(general, o));
  EXPECT_EQ(o.id, urgent[0]) << "the urgent task is not held: another consumer takes it first";
  ASSERT_EQ(other.complete(o), Errc::ok);
  take_in_order(cli, general, {low[1], low[2], urgent[1], low[3], low[4], low[5]});
  Taken t;
  EXPECT_FALSE(cli.try_take(general, t));
}

// A batch take hands out the tasks held first, then goes on in the ring.
TEST_F(Fixture, TakeAheadTasksComeFirstInABatchTake) {
  const std::vector<TaskId> ids = enqueue_n(cli, general, 1, 6);
  take_one_ahead(cli, general, 4, ids[0]);
  Taken got[8];
  ASSERT_EQ(cli.try_take_batch(general, got), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i].id, ids[i + 1]) << i;
  ASSERT_EQ(cli.complete_batch(std::span<const Taken>(got, 5)), 5u);
  EXPECT_EQ(cli.level_stats(general, 1).started, 6u);
}

// Turning take-ahead off, pausing the queue and detaching each put the held tasks
// back at the tail, queued and uncharged.
TEST_F(Fixture, TakeAheadGivesHeldTasksBack) {
  for (const char* how : {"set_take_ahead", "paused", "detach"}) {
    SCOPED_TRACE(how);
    Client c = Client::attach(seg, Role::consumer).value();
    const std::vector<TaskId> ids = enqueue_n(cli, general, 0, 5);
    take_one_ahead(c, general, 4, ids[0]);
    Taken t;
    if (std::string_view(how) == "set_take_ahead") {
      ASSERT_EQ(c.set_take_ahead(general, 1), Errc::ok);
    } else if (std::string_view(how) == "paused") {
      ASSERT_TRUE(seg.set_paused(general, true));
      EXPECT_FALSE(c.try_take(general, t)) << "a paused queue hands nothing out, held or not";
      ASSERT_TRUE(seg.set_paused(general, false));
    } else {
      c.detach();
    }
    // ids[4] was never claimed, so it is ahead of the three given back, none of which
    // is charged an attempt.
    take_in_order(cli, general, {ids[4], ids[1], ids[2], ids[3]});
    EXPECT_FALSE(cli.try_take(general, t));
  }
}

// Held tasks that no take hands out for a whole janitor tick go back to the ring, for
// other consumers (no take of the queue came, or every worker is busy).
TEST_F(Fixture, TakeAheadHeldTasksGoBackAfterATickWithoutProgress) {
  Client c = Client::attach(seg, Role::consumer).value();
  const std::vector<TaskId> ids = enqueue_n(cli, general, 0, 5);
  ASSERT_EQ(c.set_take_ahead(general, 4), Errc::ok);
  Taken t;
  ASSERT_TRUE(c.try_take(general, t));
  EXPECT_EQ(t.id, ids[0]);
  c.janitor_tick(monotonic_ns());  // the first tick after the take notes where it was
  Taken o;
  ASSERT_TRUE(cli.try_take(general, o));
  EXPECT_EQ(o.id, ids[4]) << "still held after one tick";
  ASSERT_EQ(cli.complete(o), Errc::ok);
  c.janitor_tick(monotonic_ns());  // no take since: given back
  take_in_order(cli, general, {ids[1], ids[2], ids[3]});
  ASSERT_EQ(c.complete(t), Errc::ok);
  EXPECT_FALSE(c.try_take(general, t)) << "nothing is held any more";
}

// A held record that stopped being ours meanwhile (as when a process is fenced and its
// records recovered) is skipped, never handed out.
TEST_F(Fixture, TakeAheadSkipsAHeldRecordThatIsNoLongerOurs) {
  const std::vector<TaskId> ids = enqueue_n(cli, general, 0, 4);
  take_one_ahead(cli, general, 4, ids[0]);  // ids[1..3] held
  auto& word = detail::core_of(seg).ctrl[detail::core_of(seg).id_index(ids[1])].state;
  const std::uint64_t held = word.load();
  ASSERT_EQ(detail::state_of(held), TaskState::running);
  word.store(detail::next_word(held, TaskState::free, 0));  // taken back by someone else
  take_in_order(cli, general, {ids[2], ids[3]});
  Taken t;
  EXPECT_FALSE(cli.try_take(general, t));
}

// A held task whose earlier runs used up its attempts (it was requeued after its last
// one) is given back queued at detach, not dead-lettered: this process never ran it.
TEST_F(Fixture, TakeAheadDetachGivesBackAHeldTaskWithNoAttemptsLeft) {
  TaskOptions once = opts(general);
  once.max_attempts = 1;
  TaskId spent = kNoTask, other = kNoTask;
  ASSERT_EQ(cli.enqueue_text("t", "spent", once, &spent), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("t", "other", opts(general), &other), Errc::ok);
  Taken t;
  ASSERT_TRUE(cli.try_take(general, t));
  ASSERT_EQ(t.id, spent);
  ASSERT_EQ(cli.requeue(t), Errc::ok);  // its one attempt used; queued behind `other`
  {
    Client c = Client::attach(seg, Role::consumer).value();
    ASSERT_EQ(c.set_take_ahead(general, 4), Errc::ok);
    ASSERT_TRUE(c.try_take(general, t));
    EXPECT_EQ(t.id, other);
    ASSERT_EQ(c.complete(t), Errc::ok);
    c.detach();  // holding `spent`
  }
  EXPECT_EQ(state_of_index(detail::core_of(seg).id_index(spent)), TaskState::queued);
  EXPECT_TRUE(cli.dead_letters().empty());
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.id, spent);
}

// Under an aging bound, a take that serves an aged level hands out that level's held
// tasks before the ring's: they were ahead of it (FIFO within the level).
TEST_F(Fixture, TakeAheadAnAgedLevelHandsOutItsHeldTasksFirst) {
  const std::vector<TaskId> ids = enqueue_n(cli, general, 2, 4);
  take_one_ahead(cli, general, 3, ids[0]);  // ids[1], ids[2] held; ids[3] still in the ring
  cli.set_aging(general, std::chrono::milliseconds(1));
  const std::vector<TaskId> urgent = enqueue_n(cli, general, 0, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  take_in_order(cli, general, {ids[1], ids[2], urgent[0], ids[3]});
  cli.set_aging(general, std::chrono::milliseconds(0));
}

// A held task that expires before it is handed out is dead-lettered then, not run, by
// a single take and by a batch take alike.
TEST_F(Fixture, TakeAheadDeadLettersAHeldTaskThatExpired) {
  for (const bool batch : {false, true}) {
    SCOPED_TRACE(batch ? "try_take_batch" : "try_take");
    TaskOptions o = opts(general, 1);
    TaskId first = kNoTask, expiring = kNoTask, last = kNoTask;
    ASSERT_EQ(cli.enqueue_text("t", "a", o, &first), Errc::ok);
    TaskOptions soon = o;
    soon.expires_ns = monotonic_ns() + 2'000'000;  // 2 ms
    ASSERT_EQ(cli.enqueue_text("t", "b", soon, &expiring), Errc::ok);
    ASSERT_EQ(cli.enqueue_text("t", "c", o, &last), Errc::ok);
    ASSERT_EQ(cli.set_take_ahead(general, 4), Errc::ok);
    const LevelStats before = cli.level_stats(general, 1);
    Taken t;
    ASSERT_TRUE(cli.try_take(general, t));
    EXPECT_EQ(t.id, first);
    ASSERT_EQ(cli.complete(t), Errc::ok);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (batch) {
      Taken got[4];
      ASSERT_EQ(cli.try_take_batch(general, got), 1u);
      t = got[0];
    } else {
      ASSERT_TRUE(cli.try_take(general, t));
    }
    EXPECT_EQ(t.id, last);
    ASSERT_EQ(cli.complete(t), Errc::ok);
    EXPECT_EQ(cli.level_stats(general, 1).dead, before.dead + 1);
    EXPECT_EQ(cli.level_stats(general, 1).started, before.started + 2);
    bool listed = false;
    for (const DeadLetter& d : cli.dead_letters()) listed |= d.id == expiring;
    EXPECT_TRUE(listed);
  }
}

// Bad arguments are refused and change nothing: takes still claim one at a time.
TEST_F(Fixture, SetTakeAheadRefusesBadArgumentsAndChangesNothing) {
  QueueId unused = 0;
  while (unused == general || unused == selenium) ++unused;
  EXPECT_EQ(cli.set_take_ahead(unused, 4), Errc::unknown_queue);  // a free entry of the table
  EXPECT_EQ(cli.set_take_ahead(QueueId{200}, 4), Errc::unknown_queue);
  EXPECT_EQ(cli.set_take_ahead(general, 0), Errc::invalid_argument);
  EXPECT_EQ(cli.set_take_ahead(general, Client::kMaxTakeAhead + 1), Errc::invalid_argument);
  const std::vector<TaskId> ids = enqueue_n(cli, general, 0, 2);
  Client other = Client::attach(seg, Role::consumer).value();
  Taken t, o;
  ASSERT_TRUE(cli.try_take(general, t));
  EXPECT_EQ(t.id, ids[0]);
  ASSERT_TRUE(other.try_take(general, o)) << "nothing was claimed ahead";
  EXPECT_EQ(o.id, ids[1]);
}

TEST(ClientThreads, ManyThreadsEveryIdExactlyOnce) {
  auto seg = Segment::create_private(small_layout(1024, 4), CreateOptions{0600, {"q"}}).value();
  auto cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId q = seg.find_queue("q").value();
  constexpr int kProducers = 2, kConsumers = 2, kPerProducer = 20000;
  std::vector<std::atomic<int>> seen(kProducers * kPerProducer);
  std::atomic<int> done_producers{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      TaskOptions o;
      o.queue = q;
      for (int i = 0; i < kPerProducer; ++i) {
        o.priority = static_cast<std::uint8_t>(i % 4);
        const int v = p * kPerProducer + i;
        const Errc e = cli.enqueue_wait("t", as_payload(v), o, std::chrono::seconds(30));
        EXPECT_EQ(e, Errc::ok) << "value " << v;
        if (e != Errc::ok) break;
      }
      done_producers.fetch_add(1);
    });
  for (int c = 0; c < kConsumers; ++c)
    threads.emplace_back([&] {
      Taken t;
      for (;;) {
        if (cli.try_take(q, t)) {
          int v;
          ASSERT_TRUE(payload_to(t.payload, v));
          seen[v].fetch_add(1);
          ASSERT_EQ(cli.complete(t), Errc::ok);
        } else if (done_producers.load() == kProducers) {
          if (!cli.try_take(q, t)) break;
          int v;
          ASSERT_TRUE(payload_to(t.payload, v));
          seen[v].fetch_add(1);
          ASSERT_EQ(cli.complete(t), Errc::ok);
        }
      }
    });
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "id " << i;
}

// Threads of one process share a Client with take-ahead on: each takes through the
// shared buffer when it is free and past it when another thread holds it, while another
// thread turns take-ahead off and on; every id is taken exactly once, on its first
// attempt (a task given back is not charged).
TEST(ClientThreads, TakeAheadSharedByThreadsTakesEveryIdOnce) {
  auto seg = Segment::create_private(small_layout(1024, 4), CreateOptions{0600, {"q"}}).value();
  auto cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId q = seg.find_queue("q").value();
  ASSERT_EQ(cli.set_take_ahead(q, 8), Errc::ok);
  constexpr int kConsumers = 3, kTotal = 30000;
  std::vector<std::atomic<int>> seen(kTotal);
  std::atomic<bool> produced{false};
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    TaskOptions o;
    o.queue = q;
    for (int v = 0; v < kTotal; ++v) {
      o.priority = static_cast<std::uint8_t>(v % 4);
      const Errc e = cli.enqueue_wait("t", as_payload(v), o, std::chrono::seconds(30));
      EXPECT_EQ(e, Errc::ok) << "value " << v;
      if (e != Errc::ok) break;
    }
    produced.store(true);
  });
  // One more thread turns take-ahead off and on while the others take.
  threads.emplace_back([&] {
    for (std::uint32_t i = 0; !produced.load(); ++i) {
      ASSERT_EQ(cli.set_take_ahead(q, i % 2 == 0 ? 1 : 8), Errc::ok);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ASSERT_EQ(cli.set_take_ahead(q, 8), Errc::ok);
  });
  for (int c = 0; c < kConsumers; ++c)
    threads.emplace_back([&, c] {
      Taken batch[4];
      for (int idle = 0; idle < 2;) {
        const bool done = produced.load();
        std::size_t n = 0;
        if (c == 0) {  // one thread takes batches through the same buffer
          n = cli.try_take_batch(q, batch);
        } else if (cli.try_take(q, batch[0])) {
          n = 1;
        }
        for (std::size_t k = 0; k < n; ++k) {
          int v = -1;
          ASSERT_TRUE(payload_to(batch[k].payload, v));
          EXPECT_EQ(batch[k].attempt, 1);
          seen[v].fetch_add(1);
          ASSERT_EQ(cli.complete(batch[k]), Errc::ok);
        }
        idle = n != 0 ? 0 : idle + (done ? 1 : 0);
      }
    });
  for (auto& t : threads) t.join();
  // A thread that found the queue empty once may have left tasks held in the buffer:
  // the last takes hand them out.
  Taken t;
  while (cli.try_take(q, t)) {
    int v = -1;
    ASSERT_TRUE(payload_to(t.payload, v));
    seen[v].fetch_add(1);
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "id " << i;
}

// ---- runs: a batch of one (queue, level) is one ring entry ---------------------------

TEST_F(Fixture, ABatchOfOneLevelIsOneRingEntryTakenInOrder) {
  std::vector<int> values(20);
  std::vector<TaskSpec> specs(values.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    values[i] = static_cast<int>(i);
    specs[i] = TaskSpec{"r", as_payload(values[i]), opts(general, 2)};
  }
  std::vector<TaskId> ids(specs.size());
  ASSERT_EQ(cli.enqueue_batch(specs, ids), specs.size());
  // One entry in level 2's ring holding twenty records side by side.
  const auto& core = detail::core_of(seg);
  const auto ring = core.ring(core.ring_id(general, 2));
  std::set<std::uint64_t> positions;
  std::uint64_t values_held = 0;
  ring.for_each_full([&](std::uint32_t, std::uint64_t pos) {
    positions.insert(pos);
    ++values_held;
  });
  EXPECT_EQ(positions.size(), 1u);
  EXPECT_EQ(values_held, 20u);
  EXPECT_EQ(ring.values_guess(), 20u);
  EXPECT_EQ(ring.depth_guess(), 1u);
  // Taken one by one and a stretch at a time, in enqueue order.
  std::size_t next = 0;
  Taken t;
  for (; next < 3; ++next) {
    ASSERT_TRUE(cli.try_take(general, t));
    EXPECT_EQ(t.id, ids[next]);
    int v = -1;
    ASSERT_TRUE(payload_to(t.payload, v));
    EXPECT_EQ(v, static_cast<int>(next));
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  std::vector<Taken> got(7);
  while (next < specs.size()) {
    const std::size_t n = cli.try_take_batch(general, got);
    ASSERT_NE(n, 0u);
    for (std::size_t k = 0; k < n; ++k, ++next) EXPECT_EQ(got[k].id, ids[next]);
    ASSERT_EQ(cli.complete_batch(std::span<const Taken>(got.data(), n)), n);
  }
  EXPECT_FALSE(cli.try_take(general, t));
  EXPECT_EQ(cli.level_stats(general, 2).started, 20u);
  EXPECT_EQ(cli.level_stats(general, 2).done, 20u);
}

TEST_F(Fixture, ABatchAcrossLevelsIsTakenInPriorityOrderAndDelayedTasksWait) {
  // Runs break at every change of level; a delayed task in the middle goes on its own.
  std::vector<TaskSpec> specs;
  const std::uint8_t levels[] = {3, 3, 3, 0, 0, 1, 3, 3};
  for (std::uint8_t l : levels) specs.push_back(TaskSpec{"r", {}, opts(general, l)});
  specs[6].options.not_before_ns = monotonic_ns() + 3'600'000'000'000;  // an hour away
  std::vector<TaskId> ids(specs.size());
  ASSERT_EQ(cli.enqueue_batch(specs, ids), specs.size());
  std::set<TaskId> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size());
  const std::size_t want[] = {3, 4, 5, 0, 1, 2, 7};  // by level, FIFO within one
  std::vector<Taken> got(16);
  ASSERT_EQ(cli.try_take_batch(general, got), 7u);
  for (std::size_t k = 0; k < 7; ++k) {
    EXPECT_EQ(got[k].id, ids[want[k]]) << k;
    ASSERT_EQ(cli.complete(got[k]), Errc::ok);
  }
  EXPECT_EQ(state_of_index(static_cast<std::uint32_t>(ids[6] & (seg.layout().task_capacity - 1))), TaskState::delayed);
}

TEST(ClientRuns, AFullRingRefusesAWholeRunAndGivesItsRecordsBack) {
  Layout l = small_layout(64, 1);
  l.ring_capacity = 2;
  Segment seg = Segment::create_private(l, CreateOptions{0600, {"q"}}).value();
  Client cli = Client::attach(seg).value();
  const QueueId q = seg.find_queue("q").value();
  std::vector<TaskSpec> specs(10, TaskSpec{"r", {}, TaskOptions{}});
  for (auto& s : specs) s.options.queue = q;
  std::vector<TaskId> ids(specs.size());
  // Two slots hold two runs of ten: twenty tasks in a ring of two.
  ASSERT_EQ(cli.enqueue_batch(specs, ids), 10u);
  ASSERT_EQ(cli.enqueue_batch(specs, ids), 10u);
  Errc err = Errc::ok;
  EXPECT_EQ(cli.enqueue_batch(specs, ids, &err), 0u);
  EXPECT_EQ(err, Errc::ring_full);
  std::uint32_t reserved = 0, queued = 0;
  for (std::uint32_t i = 0; i < 64; ++i) {
    const TaskState st = detail::state_of(detail::core_of(seg).ctrl[i].state.load());
    reserved += st == TaskState::reserved;
    queued += st == TaskState::queued;
  }
  EXPECT_EQ(reserved, 0u) << "the refused run's records were not given back";
  EXPECT_EQ(queued, 20u);
  std::vector<Taken> got(32);
  EXPECT_EQ(cli.try_take_batch(q, got), 20u);
}

TEST_F(Fixture, ABatchOfMixedLevelsMakesOneRunPerLevelKeepingFifoWithinEach) {
  // Default rings (a slot per record): tasks are grouped by level across the batch.
  std::vector<int> values(24);
  std::vector<TaskSpec> specs(values.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    values[i] = static_cast<int>(i);
    specs[i] = TaskSpec{"m", as_payload(values[i]), opts(general, static_cast<std::uint8_t>(i % 3))};
  }
  std::vector<TaskId> ids(specs.size());
  ASSERT_EQ(cli.enqueue_batch(specs, ids), specs.size());
  const auto& core = detail::core_of(seg);
  for (std::uint8_t level = 0; level < 3; ++level) {
    std::set<std::uint64_t> positions;
    std::size_t held = 0;
    core.ring(core.ring_id(general, level)).for_each_full([&](std::uint32_t, std::uint64_t pos) {
      positions.insert(pos);
      ++held;
    });
    EXPECT_EQ(positions.size(), 1u) << "level " << int(level) << " is not one run";
    EXPECT_EQ(held, 8u);
  }
  std::vector<Taken> got(32);
  ASSERT_EQ(cli.try_take_batch(general, got), 24u);
  for (std::size_t k = 0; k < 24; ++k) {
    const std::size_t want = (k / 8) + 3 * (k % 8);  // level by level, in enqueue order
    EXPECT_EQ(got[k].id, ids[want]) << k;
    int v = -1;
    ASSERT_TRUE(payload_to(got[k].payload, v));
    EXPECT_EQ(v, static_cast<int>(want));
  }
  ASSERT_EQ(cli.complete_batch(std::span<const Taken>(got.data(), 24)), 24u);
}

// More (queue, level) pairs than a stretch groups (16), whose ring ids share their low
// bits: every task still lands in its own queue and level, in enqueue order within each.
TEST(ClientBatch, ManyQueuesAndLevelsInOneBatchKeepEveryTaskInItsRingInFifo) {
  Layout l = small_layout(256, 8);
  l.max_queues = 3;
  Segment seg = Segment::create_private(l, CreateOptions{0600, {"q0", "q1", "q2"}}).value();
  Client cli = Client::attach(seg, Role::producer | Role::consumer).value();
  const QueueId qs[3] = {seg.find_queue("q0").value(), seg.find_queue("q1").value(), seg.find_queue("q2").value()};
  constexpr std::size_t kTasks = 200;
  std::vector<int> values(kTasks);
  std::vector<TaskSpec> specs(kTasks);
  std::map<std::pair<QueueId, int>, std::vector<int>> want;  // per (queue, level), in enqueue order
  std::uint32_t x = 12345;
  for (std::size_t i = 0; i < kTasks; ++i) {
    x = x * 1103515245u + 12345u;
    const QueueId q = qs[(x >> 8) % 3];
    const auto level = static_cast<std::uint8_t>((x >> 16) % 8);
    values[i] = static_cast<int>(i);
    TaskOptions o;
    o.queue = q;
    o.priority = level;
    specs[i] = TaskSpec{"many", as_payload(values[i]), o};
    want[{q, level}].push_back(static_cast<int>(i));
  }
  ASSERT_GT(want.size(), 16u);
  std::vector<TaskId> ids(kTasks);
  Errc err = Errc::corrupt;  // anything but ok: enqueue_batch must set it
  ASSERT_EQ(cli.enqueue_batch(specs, ids, &err), kTasks);
  EXPECT_EQ(err, Errc::ok);
  std::map<std::pair<QueueId, int>, std::vector<int>> got;
  std::size_t total = 0;
  for (const QueueId q : qs) {
    Taken t;
    int last_level = -1;
    while (cli.try_take(q, t)) {
      int v = -1;
      ASSERT_TRUE(payload_to(t.payload, v));
      ASSERT_GE(v, 0);
      ASSERT_LT(v, static_cast<int>(kTasks));
      EXPECT_EQ(t.id, ids[static_cast<std::size_t>(v)]);
      EXPECT_EQ(t.queue, q);
      EXPECT_GE(int(t.level), last_level) << "a more urgent task was left behind";
      last_level = t.level;
      got[{q, t.level}].push_back(v);
      ASSERT_EQ(cli.complete(t), Errc::ok);
      ++total;
    }
  }
  EXPECT_EQ(total, kTasks);
  EXPECT_EQ(got, want);
}

TEST_F(Fixture, AFullTableRefusesASuffixOfAMixedBatchAndNothingElse) {
  // 64 records; 50 taken by single tasks first, then a batch of 30 over three levels:
  // exactly the first 14 are accepted, and only they are queued.
  for (int i = 0; i < 50; ++i) ASSERT_EQ(cli.enqueue_text("fill", "", opts(selenium)), Errc::ok);
  std::vector<TaskSpec> specs(30);
  for (std::size_t i = 0; i < specs.size(); ++i)
    specs[i] = TaskSpec{"m", {}, opts(general, static_cast<std::uint8_t>((i * 7) % 3))};
  std::vector<TaskId> ids(specs.size());
  Errc err = Errc::ok;
  ASSERT_EQ(cli.enqueue_batch(specs, ids, &err), 14u);
  EXPECT_EQ(err, Errc::table_full);
  std::vector<Taken> got(64);
  const std::size_t n = cli.try_take_batch(general, got);
  ASSERT_EQ(n, 14u);
  std::set<TaskId> taken;
  for (std::size_t k = 0; k < n; ++k) taken.insert(got[k].id);
  for (std::size_t i = 0; i < 14; ++i) EXPECT_EQ(taken.count(ids[i]), 1u) << i;
  std::uint32_t reserved = 0;
  for (std::uint32_t i = 0; i < 64; ++i) reserved += state_of_index(i) == TaskState::reserved;
  EXPECT_EQ(reserved, 0u) << "records of refused tasks were not given back";
}

// A batch's runs start where the last one ended when that record is free, else where the
// sweep finds one: over a table whose free records lie every other one, a mixed batch
// takes exactly the free records, each task its own, payloads and FIFO per level intact.
TEST_F(Fixture, ABatchOverAFragmentedTableTakesEachFreeRecordOnceAndKeepsFifo) {
  // 64 records filled by single tasks alternating levels 0 and 1; taking 20 frees the
  // first 20 of level 0: records 0, 2, ..., 38.
  for (int i = 0; i < 64; ++i)
    ASSERT_EQ(cli.enqueue_text("fill", "f" + std::to_string(i), opts(selenium, static_cast<std::uint8_t>(i % 2))),
              Errc::ok);
  for (int i = 0; i < 20; ++i) {
    Taken t;
    ASSERT_TRUE(cli.try_take(selenium, t));
    ASSERT_EQ(t.level, 0u);
    ASSERT_EQ(cli.complete(t), Errc::ok);
  }
  std::vector<std::string> texts(30);
  std::vector<TaskSpec> specs(30);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    texts[i] = "b" + std::to_string(i);
    specs[i] = TaskSpec{"m", std::as_bytes(std::span<const char>(texts[i].data(), texts[i].size())),
                        opts(general, static_cast<std::uint8_t>((i * 5) % 3))};
  }
  std::vector<TaskId> ids(specs.size());
  Errc err = Errc::ok;
  ASSERT_EQ(cli.enqueue_batch(specs, ids, &err), 20u);
  EXPECT_EQ(err, Errc::table_full);
  EXPECT_EQ(std::set<TaskId>(ids.begin(), ids.begin() + 20).size(), 20u) << "two tasks got one record";
  // Each level's tasks come out in task order with their own payloads.
  std::vector<Taken> got(64);
  const std::size_t n = cli.try_take_batch(general, got);
  ASSERT_EQ(n, 20u);
  std::size_t last[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
  for (std::size_t k = 0; k < n; ++k) {
    const auto it = std::find(ids.begin(), ids.begin() + 20, got[k].id);
    ASSERT_NE(it, ids.begin() + 20) << "a task that was not accepted";
    const std::size_t i = static_cast<std::size_t>(it - ids.begin());
    EXPECT_EQ(got[k].level, (i * 5) % 3);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got[k].payload.data()), got[k].payload.size()), texts[i]);
    if (last[got[k].level] != SIZE_MAX) EXPECT_GT(i, last[got[k].level]) << "FIFO broken at level " << +got[k].level;
    last[got[k].level] = i;
  }
  EXPECT_EQ(cli.complete_batch(std::span<const Taken>(got.data(), n)), n);
  // The 44 tasks that held records all along are untouched.
  std::size_t left = 0;
  Taken t;
  while (cli.try_take(selenium, t)) {
    EXPECT_EQ(t.type_name, "fill");
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.payload.data()), t.payload.size()).substr(0, 1), "f");
    ASSERT_EQ(cli.complete(t), Errc::ok);
    ++left;
  }
  EXPECT_EQ(left, 44u);
}

// The policy a task was enqueued with can be read back by the consumer that holds it,
// and its nominal delays grow by the backoff up to the cap.
TEST_F(Fixture, RetryPolicyOfATakenTaskIsTheOneItWasEnqueuedWith) {
  TaskOptions custom = opts(general);
  custom.retry = RetryPolicy{std::chrono::milliseconds(100), 300, std::chrono::milliseconds(2000), 25};
  ASSERT_EQ(cli.enqueue_text("t", "", custom), Errc::ok);
  ASSERT_EQ(cli.enqueue_text("t", "", opts(general)), Errc::ok);
  Taken a, b;
  ASSERT_TRUE(cli.try_take(general, a));
  ASSERT_TRUE(cli.try_take(general, b));
  const RetryPolicy pa = retry_policy_of(seg, a), pb = retry_policy_of(seg, b), def{};
  EXPECT_EQ(pa.delay.count(), 100);
  EXPECT_EQ(pa.backoff_x100, 300);
  EXPECT_EQ(pa.max_delay.count(), 2000);
  EXPECT_EQ(pa.jitter_pct, 25);
  EXPECT_EQ(pb.delay, def.delay);
  EXPECT_EQ(pb.backoff_x100, def.backoff_x100);
  EXPECT_EQ(pb.max_delay, def.max_delay);
  EXPECT_EQ(pb.jitter_pct, def.jitter_pct);
  const std::int64_t want[] = {100, 300, 900, 2000, 2000};  // x3 each attempt, capped at 2 s
  for (unsigned attempt = 1; attempt <= 5; ++attempt)
    EXPECT_EQ(nominal_retry_delay(pa, attempt).count(), want[attempt - 1]) << "attempt " << attempt;
  EXPECT_EQ(cli.complete(a), Errc::ok);
  EXPECT_EQ(cli.complete(b), Errc::ok);
}
