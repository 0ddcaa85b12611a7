// Dependencies under the random-kill soak: a chain of 10,000 piped links (each handed
// the number of links before it by its parent's result, so a link run out of order, run
// twice with a wrong input or skipped shows in the count) and a fan-out of 10,000
// children of one parent, run by 3 consumer processes while a seeded killer SIGKILLs a
// random one every 40-200 ms. At the end every link and child ran, the chain's last
// result counts every link, every link is done (none cancelled), and nothing waits.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <random>
#include <thread>

#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace shmsched::test;
using namespace std::chrono_literals;

namespace {

Layout soak_layout() {
  Layout l;
  l.task_capacity = 1u << 15;
  l.levels = 2;
  l.payload_bytes = 16;
  l.max_queues = 1;
  l.max_participants = 32;
  return l;
}

std::string_view as_text(const std::uint64_t& v) {
  return {reinterpret_cast<const char*>(&v), sizeof v};
}

// A consumer: a link's payload is the count of links before it (its index); it keeps
// index + 1. A leaf counts its run.
int soak_consumer(Segment& seg, SharedArray<std::atomic<std::uint32_t>>& link_runs,
                  SharedArray<std::atomic<std::uint32_t>>& leaf_runs) {
  ConsumerOptions co;
  co.home = {"work"};
  co.workers = 2;
  co.tick = 20ms;
  auto c = Consumer::create(seg, co);
  if (!c) return 3;
  (*c)->on_value<std::uint64_t>("link", [&](const std::uint64_t& index, TaskContext&) {
    if (index >= link_runs.size()) return Outcome::fail("link index out of range");
    link_runs[index].fetch_add(1);
    std::this_thread::sleep_for(100us);  // long enough that kills land mid-chain
    const std::uint64_t next = index + 1;
    return Outcome::done(std::string(as_text(next)));
  });
  (*c)->on_value<std::uint64_t>("leaf", [&](const std::uint64_t& index, TaskContext&) {
    leaf_runs[index].fetch_add(1);
    return Outcome::done();
  });
  (*c)->on_value<std::uint64_t>("root", [](const std::uint64_t&, TaskContext&) { return Outcome::done(); });
  return (*c)->run_until_signal();
}

TEST(DependenciesSoak, AChainAndAFanOutOfTenThousandSurviveRandomKills) {
  const std::uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  const std::uint64_t n = scaled(10000, 500);
  auto seg = Segment::create_private(soak_layout(), CreateOptions{0600, {"work"}}).value();
  SharedArray<std::atomic<std::uint32_t>> link_runs(n), leaf_runs(n);
  auto start = [&] { return spawn([&] { return soak_consumer(seg, link_runs, leaf_runs); }); };
  std::vector<pid_t> consumers;
  for (int i = 0; i < 3; ++i) consumers.push_back(start());

  auto producer = Client::attach(seg).value();
  TaskOptions o;
  o.queue = seg.find_queue("work").value();
  o.keep_result = true;
  o.max_attempts = 50;  // kills must not exhaust a task's attempts in this test
  o.after(200ms);       // the first link and the root start once everything is enqueued
  std::vector<TaskId> chain(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t own = i == 0 ? 0 : ~std::uint64_t{0};  // a piped link's own payload is replaced
    ASSERT_EQ(producer.enqueue_value("link", own, o, &chain[i]), Errc::ok) << i;
    o.not_before_ns = 0;
    o.after_task = chain[i];
    o.pipe = true;
  }
  TaskOptions r = o;
  r.after_task = 0;
  r.pipe = false;
  r.after(200ms);
  TaskId root = kNoTask;
  ASSERT_EQ(producer.enqueue_value("root", std::uint64_t{0}, r, &root), Errc::ok);
  TaskOptions leaf = o;
  leaf.keep_result = false;
  leaf.pipe = false;
  leaf.after_task = root;
  leaf.priority = 1;
  for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(producer.enqueue_value("leaf", i, leaf), Errc::ok) << i;

  std::uint64_t kills = 0;
  const auto deadline = std::chrono::steady_clock::now() + 240s;
  auto next_kill = std::chrono::steady_clock::now() + 40ms + std::chrono::milliseconds(rng() % 160);
  auto all_ran = [&] {
    for (std::uint64_t i = 0; i < n; ++i)
      if (link_runs[i].load() == 0 || leaf_runs[i].load() == 0) return false;
    return true;
  };
  while (!all_ran() && std::chrono::steady_clock::now() < deadline) {
    if (std::chrono::steady_clock::now() >= next_kill) {
      const std::size_t victim = rng() % consumers.size();
      ::kill(consumers[victim], SIGKILL);
      (void)wait_child(consumers[victim], 10s);
      consumers[victim] = start();
      ++kills;
      next_kill = std::chrono::steady_clock::now() + 40ms + std::chrono::milliseconds(rng() % 160);
    }
    std::this_thread::sleep_for(5ms);
  }
  // Let the survivors finish what they hold (a link's result is kept after its count).
  Snapshot s;
  while (std::chrono::steady_clock::now() < deadline) {
    s = inspect(seg);
    if (s.records[TaskState::queued] + s.records[TaskState::running] + s.records[TaskState::waiting] +
            s.records[TaskState::delayed] ==
        0)
      break;
    std::this_thread::sleep_for(10ms);
  }
  for (pid_t p : consumers) ::kill(p, SIGTERM);
  for (pid_t p : consumers) EXPECT_TRUE(wait_child(p, 20s).ok());

  std::uint64_t lost = 0, duplicates = 0;
  for (std::uint64_t i = 0; i < n; ++i)
    for (auto* runs : {&link_runs, &leaf_runs}) {
      const auto k = (*runs)[i].load();
      lost += k == 0;
      duplicates += k > 1 ? k - 1 : 0;
    }
  std::printf("[   SOAK   ] seed %llu: chain %llu, fan-out %llu, kills %llu, lost %llu, duplicates %llu\n",
              (unsigned long long)seed, (unsigned long long)n, (unsigned long long)n, (unsigned long long)kills,
              (unsigned long long)lost, (unsigned long long)duplicates);
  EXPECT_EQ(lost, 0u);
  EXPECT_GT(kills, 0u) << "the soak must actually kill";
  EXPECT_LE(duplicates, kills * 2) << "at most the tasks in flight at a kill run twice";
  EXPECT_EQ(s.records[TaskState::waiting], 0u) << "no dependent left waiting";
  std::uint64_t not_done = 0;
  for (std::uint64_t i = 0; i + 1 < n; ++i) not_done += producer.status(chain[i]).value().status != TaskStatus::done;
  EXPECT_EQ(not_done, 0u) << "every link done, none cancelled";
  auto last = producer.take_result(chain[n - 1]);
  ASSERT_TRUE(last.ok()) << last.error().message();
  std::uint64_t count = 0;
  ASSERT_TRUE(payload_to(as_payload(std::string_view(last->value)), count));
  EXPECT_EQ(count, n) << "the last link counted every link before it, in order";
}

}  // namespace
