// Random-kill soak, poison tasks, and fencing.
//
//  * Soak: tasks flow through 3 consumer processes while a seeded killer SIGKILLs a
//    random consumer every 50-300 ms and starts a new one. At the end every task ran at
//    least once, duplicates are bounded by what was in flight at the kills, no permit is
//    in use, nothing is running or queued. SHMSCHED_SOAK_TASKS sets the size (default
//    20000 for CI; the long run is 100000).
//  * Poison: a task whose handler kills its process every time is dead-lettered with
//    "consumer died while running it" after its attempt limit; other tasks keep flowing.
//  * Fencing: a participant reaped while it was (wrongly) considered dead gets its late
//    writes refused; the task it held runs elsewhere.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace shmsched::test;
using namespace std::chrono_literals;

namespace {

Layout soak_layout() {
  Layout l;
  l.task_capacity = 1u << 15;
  l.levels = 4;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 32;
  l.max_semaphores = 2;
  return l;
}

struct SoakBoard {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint64_t> runs_total{0};
};

std::uint64_t soak_tasks() {
  if (const char* env = std::getenv("SHMSCHED_SOAK_TASKS"); env != nullptr && *env != '\0')
    return std::strtoull(env, nullptr, 10);
  return scaled(20000, 2000);
}

// A consumer process for the soak: 2 workers; every fourth task needs a permit of the
// "res" semaphore, so kills also hit permit holders.
// `take_ahead`: ConsumerOptions::take_ahead, so kills also hit tasks claimed ahead.
int soak_consumer(Segment& seg, SharedArray<std::atomic<std::uint32_t>>& runs, SoakBoard& board, unsigned take_ahead) {
  ConsumerOptions co;
  co.home = {"work"};
  co.workers = 2;
  co.tick = 20ms;
  co.take_ahead = take_ahead;
  auto c = Consumer::create(seg, co);
  if (!c) return 3;
  (*c)->on_value<std::uint32_t>("job", [&](const std::uint32_t& id, TaskContext&) {
    runs[id].fetch_add(1);
    board.runs_total.fetch_add(1);
    return Outcome::done();
  });
  (*c)->on_value<std::uint32_t>("res-job", [&](const std::uint32_t& id, TaskContext&) {
    std::this_thread::sleep_for(100us);
    runs[id].fetch_add(1);
    board.runs_total.fetch_add(1);
    return Outcome::done();
  });
  if (!(*c)->needs("res-job", {{"res", 1}})) return 4;
  board.ready.fetch_add(1);
  return (*c)->run_until_signal();
}

void run_soak(unsigned take_ahead) {
  const std::uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  const std::uint64_t n = soak_tasks();
  auto seg = Segment::create_private(soak_layout(), CreateOptions{0600, {"work"}}).value();
  ASSERT_TRUE(seg.create_semaphore("res", 3).ok());
  SharedArray<std::atomic<std::uint32_t>> runs(n);
  SharedArray<SoakBoard> board(1);

  std::vector<pid_t> consumers;
  for (int i = 0; i < 3; ++i)
    consumers.push_back(spawn([&] { return soak_consumer(seg, runs, board[0], take_ahead); }));

  auto producer = Client::attach(seg).value();
  const QueueId q = seg.find_queue("work").value();
  std::uint64_t kills = 0;
  std::uint64_t next_kill_ns = monotonic_ns() + 50'000'000 + rng() % 250'000'000;
  std::uint64_t enqueued = 0;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  auto maybe_kill = [&] {
    if (static_cast<std::uint64_t>(monotonic_ns()) < next_kill_ns) return;
    const std::size_t victim = rng() % consumers.size();
    ::kill(consumers[victim], SIGKILL);
    (void)wait_child(consumers[victim], 10s);
    consumers[victim] = spawn([&] { return soak_consumer(seg, runs, board[0], take_ahead); });
    ++kills;
    next_kill_ns = monotonic_ns() + 50'000'000 + rng() % 250'000'000;
  };
  while (enqueued < n && std::chrono::steady_clock::now() < deadline) {
    TaskOptions o;
    o.queue = q;
    o.priority = static_cast<std::uint8_t>(enqueued % 4);
    o.max_attempts = 50;  // kills must not exhaust a task's attempts in this test
    const auto id = static_cast<std::uint32_t>(enqueued);
    const Errc e = producer.enqueue_value(enqueued % 4 == 0 ? "res-job" : "job", id, o);
    if (e == Errc::ok) {
      ++enqueued;
    } else {
      ASSERT_TRUE(e == Errc::table_full || e == Errc::ring_full) << to_string(e);
      std::this_thread::sleep_for(200us);
    }
    if ((enqueued & 255) == 0) maybe_kill();
    // Spread kills over the workload even when it is small (sanitizer builds run a
    // fraction of it): after each eighth of the tasks, wait for the next kill.
    if (enqueued % (n / 8 + 1) == 0 && enqueued != 0) {
      const std::uint64_t before = kills;
      while (kills == before && std::chrono::steady_clock::now() < deadline) {
        maybe_kill();
        std::this_thread::sleep_for(1ms);
      }
    }
  }
  ASSERT_EQ(enqueued, n);
  // Keep killing while the backlog drains, then let the survivors finish.
  auto all_ran = [&] {
    for (std::uint64_t i = 0; i < n; ++i)
      if (runs[i].load() == 0) return false;
    return true;
  };
  while (!all_ran() && std::chrono::steady_clock::now() < deadline) {
    maybe_kill();
    std::this_thread::sleep_for(5ms);
  }
  // Quiesce: nothing queued, running, delayed or parked, and every permit back.
  Snapshot s;
  for (;;) {
    s = inspect(seg);
    if ((s.records[TaskState::queued] + s.records[TaskState::running] + s.records[TaskState::delayed] +
                 s.records[TaskState::parked] ==
             0 &&
         s.semaphores.at(0).in_use == 0) ||
        std::chrono::steady_clock::now() > deadline)
      break;
    std::this_thread::sleep_for(10ms);
  }
  for (pid_t p : consumers) ::kill(p, SIGTERM);
  for (pid_t p : consumers) EXPECT_TRUE(wait_child(p, 20s).ok());

  std::uint64_t lost = 0, duplicates = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const auto r = runs[i].load();
    lost += r == 0;
    duplicates += r > 1 ? r - 1 : 0;
  }
  std::printf("[   SOAK   ] take-ahead %u: tasks %llu, kills %llu, lost %llu, duplicates %llu\n", take_ahead,
              (unsigned long long)n, (unsigned long long)kills, (unsigned long long)lost,
              (unsigned long long)duplicates);
  ::testing::Test::RecordProperty("kills", std::to_string(kills));
  ::testing::Test::RecordProperty("duplicates", std::to_string(duplicates));
  EXPECT_EQ(lost, 0u);
  EXPECT_GT(kills, 0u) << "the soak must actually kill";
  // At most the tasks in flight at a kill run twice: 2 workers per consumer (tasks held
  // ahead never started there, so they add none).
  EXPECT_LE(duplicates, kills * 2);
  EXPECT_EQ(s.records[TaskState::queued] + s.records[TaskState::running] + s.records[TaskState::delayed] +
                s.records[TaskState::parked],
            0u);
  EXPECT_EQ(s.records[TaskState::reserved], 0u);
  EXPECT_EQ(s.semaphores.at(0).in_use, 0u);
  auto checker = Client::attach(seg).value();
  checker.reap_dead();
  EXPECT_TRUE(checker.verify_permits().ok());
}

}  // namespace

TEST(Soak, RandomKillsLoseNothingAndLeakNothing) {
  run_soak(1);
}

// The same with every consumer taking ahead: its kills also hit tasks claimed and held.
TEST(Soak, RandomKillsWithTakeAheadLoseNothingAndLeakNothing) {
  run_soak(8);
}

TEST(Poison, TaskThatKillsItsConsumerIsDeadLetteredAndOthersFlow) {
  auto seg = Segment::create_private(soak_layout(), CreateOptions{0600, {"work"}}).value();
  SharedArray<std::atomic<std::uint32_t>> done(200);
  SharedArray<std::atomic<std::uint32_t>> poison_runs(1);
  auto start_consumer = [&] {
    return spawn([&] {
      ConsumerOptions co;
      co.home = {"work"};
      co.workers = 1;
      co.tick = 10ms;
      auto c = Consumer::create(seg, co);
      if (!c) return 3;
      (*c)->on("poison", [&](TaskContext&) -> Outcome {
        poison_runs[0].fetch_add(1);
        ::raise(SIGKILL);
        return Outcome::done();
      });
      (*c)->on_value<std::uint32_t>("ok", [&](const std::uint32_t& id, TaskContext&) {
        done[id].fetch_add(1);
        return Outcome::done();
      });
      return (*c)->run_until_signal();
    });
  };
  auto producer = Client::attach(seg).value();
  TaskOptions o;
  o.queue = seg.find_queue("work").value();
  o.max_attempts = 3;
  TaskId poison_id;
  ASSERT_EQ(producer.enqueue_text("poison", "", o, &poison_id), Errc::ok);
  for (std::uint32_t i = 0; i < 200; ++i) ASSERT_EQ(producer.enqueue_value("ok", i, o), Errc::ok);
  // Two consumers; whenever one dies, start another (as a supervisor would).
  std::vector<pid_t> consumers{start_consumer(), start_consumer()};
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  auto finished = [&] {
    for (std::uint32_t i = 0; i < 200; ++i)
      if (done[i].load() == 0) return false;
    return producer.dead_letters().size() == 1;
  };
  while (!finished() && std::chrono::steady_clock::now() < deadline) {
    for (auto& p : consumers) {
      int status = 0;
      if (::waitpid(p, &status, WNOHANG) == p) p = start_consumer();
    }
    producer.reap_dead();  // the janitor would; do it here too so the test is quick
    std::this_thread::sleep_for(5ms);
  }
  for (pid_t p : consumers) ::kill(p, SIGTERM);
  for (pid_t p : consumers) (void)wait_child(p, 20s);
  auto dl = producer.dead_letters();
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_EQ(dl[0].id, poison_id);
  EXPECT_EQ(dl[0].attempts, 3);
  EXPECT_NE(dl[0].reason.find("consumer died while running it"), std::string::npos) << dl[0].reason;
  EXPECT_EQ(poison_runs[0].load(), 3u) << "it must run exactly its attempt limit, never loop";
  for (std::uint32_t i = 0; i < 200; ++i) EXPECT_GE(done[i].load(), 1u) << "task " << i;
}

TEST(Fencing, AReapedParticipantsLateWritesAreRefused) {
  auto seg = Segment::create_private(soak_layout(), CreateOptions{0600, {"work"}}).value();
  auto producer = Client::attach(seg).value();
  TaskOptions o;
  o.queue = seg.find_queue("work").value();
  TaskId id;
  ASSERT_EQ(producer.enqueue_text("t", "x", o, &id), Errc::ok);
  auto stale = Client::attach(seg, Role::consumer).value();
  Taken t;
  ASSERT_TRUE(stale.try_take(o.queue.id(), t));
  // Make the participant look dead to the reaper (as if its pid and start time no
  // longer matched): the reaper takes its task back and frees its slot with epoch + 1.
  auto& slot = detail::core_of(seg).participants[detail::token_index(stale.token()) - 1];
  const auto real_start = slot.start_time.load();
  slot.start_time.store(real_start + 1);
  const ReapReport rep = producer.reap_dead();
  EXPECT_EQ(rep.participants, 1u);
  EXPECT_EQ(rep.requeued, 1u);
  // A new participant may now hold the same slot.
  auto newcomer = Client::attach(seg, Role::consumer).value();
  EXPECT_NE(newcomer.token(), stale.token()) << "same slot, new epoch: a different token";
  // The stale handle's late writes are refused, and the task runs elsewhere.
  EXPECT_EQ(stale.complete(t), Errc::fenced);
  EXPECT_EQ(stale.requeue(t), Errc::fenced);
  Taken again;
  ASSERT_TRUE(newcomer.try_take(o.queue.id(), again));
  EXPECT_EQ(again.id, id);
  EXPECT_EQ(again.attempt, 2);
  EXPECT_EQ(newcomer.complete(again), Errc::ok);
}
