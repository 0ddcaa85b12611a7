// Seeded stress of the producer and consumer paths, with threads and with forked
// processes (the thread tests are the twins ThreadSanitizer can see):
//  * every id a producer enqueued is taken exactly once (a per-id counter);
//  * payloads and levels arrive intact (a sum and an xor over a digest of each task,
//    computed independently from the seed by the checker);
//  * FIFO per producer per level holds in what each single consumer takes;
//  * a single consumer of a filled queue takes every level-0 task before any level-1;
//  * afterwards no record is left reserved, queued, running, delayed or dead, and
//    (processes) every participant slot is free again.
// Each test prints its seed; SHMSCHED_TEST_SEED=<seed> replays the same plan (levels,
// batch sizes). SHMSCHED_STRESS_SCALE scales the amount of work (e.g. 0.05 under TSan).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

using namespace shmsched;
using namespace shmsched::test;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view kType = "stress";

/// What a producer sends: who, which, at what level, and a check word, so that a
/// consumer can tell a torn or misrouted payload from a good one.
struct Msg {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint32_t level;
  std::uint32_t check;
};
static_assert(sizeof(Msg) == 16);

/// Everything about the workload that follows from the seed. Producers, consumers and
/// the final check each derive it on their own; nothing about it travels in memory.
struct Plan {
  std::uint64_t seed = 0;
  std::uint32_t producers = 0;
  std::uint32_t per_producer = 0;
  std::uint32_t levels = 1;

  std::uint64_t ids() const noexcept { return std::uint64_t{producers} * per_producer; }
  std::uint64_t id(std::uint32_t p, std::uint32_t seq) const noexcept { return std::uint64_t{p} * per_producer + seq; }
  std::uint8_t level(std::uint32_t p, std::uint32_t seq) const noexcept {
    return static_cast<std::uint8_t>(splitmix64(seed ^ (id(p, seq) * 0x9E37)) % levels);
  }
  std::uint32_t check(std::uint32_t p, std::uint32_t seq) const noexcept {
    return static_cast<std::uint32_t>(splitmix64(~seed ^ id(p, seq)) >> 17);
  }
  Msg msg(std::uint32_t p, std::uint32_t seq) const noexcept { return Msg{p, seq, level(p, seq), check(p, seq)}; }
  std::uint64_t digest(std::uint32_t p, std::uint32_t seq, std::uint32_t lvl) const noexcept {
    return splitmix64(seed + (id(p, seq) << 4 | lvl));
  }
  /// Whether producer `p` uses enqueue_batch (else enqueue_wait), and consumer `c`
  /// try_take_batch (else try_take): both paths get their share.
  bool producer_batches(std::uint32_t p) const noexcept { return ((splitmix64(seed + 11) >> p) & 1) != 0; }
  bool consumer_batches(std::uint32_t c) const noexcept { return ((splitmix64(seed + 13) >> c) & 1) != 0; }
};

/// What one consumer saw. Plain data: a forked consumer writes it into shared memory
/// before it exits; the parent reads it after waitpid.
struct Tally {
  std::uint64_t taken = 0;
  std::uint64_t sum = 0;
  std::uint64_t xr = 0;
  std::uint64_t fifo_violations = 0;
  std::uint64_t bad_payloads = 0;
  std::uint64_t complete_errors = 0;
  std::uint32_t first_bad_producer = 0, first_bad_level = 0, first_bad_seq = 0, first_bad_prev = 0;
  std::int32_t error = 0;  ///< an Errc that made a producer or consumer stop early
};

/// Tasks held by the rings or owned by someone are all gone once the run is over.
::testing::AssertionResult every_record_free(const Segment& seg) {
  const auto& core = detail::core_of(seg);
  std::array<std::uint64_t, 8> by_state{};
  for (std::uint32_t i = 0; i < core.capacity; ++i) {
    const auto s = detail::state_of(core.ctrl[i].state.load(std::memory_order_acquire));
    ++by_state[static_cast<std::size_t>(s) & 7];
  }
  const std::uint64_t idle =
      by_state[static_cast<std::size_t>(TaskState::virgin)] + by_state[static_cast<std::size_t>(TaskState::free)];
  if (idle == core.capacity) return ::testing::AssertionSuccess();
  auto f = ::testing::AssertionFailure() << "records not free:";
  for (std::size_t s = 2; s < by_state.size(); ++s)
    if (by_state[s] != 0) f << " state " << s << " x" << by_state[s];
  return f;
}

::testing::AssertionResult every_participant_free(const Segment& seg) {
  const auto& core = detail::core_of(seg);
  for (std::uint32_t i = 0; i < core.layout.max_participants; ++i) {
    const std::uint64_t w = core.participants[i].word.load(std::memory_order_acquire);
    if (detail::pword_state(w) != detail::ParticipantEntry::kFree)
      return ::testing::AssertionFailure() << "participant slot " << i << " is in state " << detail::pword_state(w)
                                           << " (pid " << core.participants[i].pid.load() << ")";
  }
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------
// The two roles, written once for threads and processes alike.

/// Enqueues producer p's ids in sequence order; returns Errc::ok or what stopped it.
Errc produce(Client& cli, QueueId q, const Plan& plan, std::uint32_t p) {
  std::mt19937_64 rng(splitmix64(plan.seed ^ (0xB00 + p)));
  TaskOptions o;
  o.queue = q;
  if (!plan.producer_batches(p)) {
    for (std::uint32_t seq = 0; seq < plan.per_producer; ++seq) {
      const Msg m = plan.msg(p, seq);
      o.priority = static_cast<std::uint8_t>(m.level);
      const Errc e = cli.enqueue_wait(kType, as_payload(m), o, 60s);
      if (e != Errc::ok) return e;
    }
    return Errc::ok;
  }
  // Batches of 1..32; a batch cut short by back-pressure resumes where it stopped, so
  // the accepted order is still the sequence order.
  std::array<Msg, 32> msgs;
  std::array<TaskSpec, 32> specs;
  std::array<TaskId, 32> ids;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (std::uint32_t seq = 0; seq < plan.per_producer;) {
    const std::uint32_t n = std::min<std::uint32_t>(1 + rng() % 32, plan.per_producer - seq);
    for (std::uint32_t i = 0; i < n; ++i) {
      msgs[i] = plan.msg(p, seq + i);
      specs[i].type = kType;
      specs[i].payload = as_payload(msgs[i]);
      specs[i].options = o;
      specs[i].options.priority = static_cast<std::uint8_t>(msgs[i].level);
    }
    std::uint32_t done = 0;
    for (unsigned spins = 0; done < n; ++spins) {
      Errc e = Errc::ok;
      done += static_cast<std::uint32_t>(
          cli.enqueue_batch(std::span(specs).subspan(done, n - done), std::span(ids).subspan(done, n - done), &e));
      if (done == n) break;
      if (e != Errc::table_full && e != Errc::ring_full) return e;
      if (std::chrono::steady_clock::now() > deadline) return Errc::timeout;
      if (spins < 16) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(50us);
      }
    }
    seq += n;
  }
  return Errc::ok;
}

/// Takes until every producer has finished and the queue is empty. `seen` is the
/// per-id counter, `producers_done` counts finished producers.
void consume(Client& cli, QueueId q, const Plan& plan, std::uint32_t c, std::atomic<std::uint32_t>* seen,
             const std::atomic<std::uint32_t>& producers_done, Tally& tally) {
  std::mt19937_64 rng(splitmix64(plan.seed ^ (0xC00 + c)));
  const bool batch = plan.consumer_batches(c);
  // last[p * levels + level]: the last seq this consumer took from p at that level.
  std::vector<std::int64_t> last(std::size_t{plan.producers} * plan.levels, -1);
  std::array<Taken, 16> got;
  // Checks one task; completes it unless the caller completes the batch.
  auto record = [&](const Taken& t, bool complete_now) {
    Msg m{};
    const bool good = payload_to(t.payload, m) && m.producer < plan.producers && m.seq < plan.per_producer &&
                      m.level == t.level && t.type_name == kType && m.check == plan.check(m.producer, m.seq) &&
                      m.level == plan.level(m.producer, m.seq);
    if (good) {
      seen[plan.id(m.producer, m.seq)].fetch_add(1, std::memory_order_relaxed);
      const std::uint64_t d = plan.digest(m.producer, m.seq, t.level);
      tally.sum += d;
      tally.xr ^= d;
      auto& prev = last[std::size_t{m.producer} * plan.levels + m.level];
      if (static_cast<std::int64_t>(m.seq) <= prev) {
        if (tally.fifo_violations++ == 0) {
          tally.first_bad_producer = m.producer;
          tally.first_bad_level = m.level;
          tally.first_bad_seq = m.seq;
          tally.first_bad_prev = static_cast<std::uint32_t>(prev);
        }
      }
      prev = m.seq;
    } else {
      ++tally.bad_payloads;
    }
    if (complete_now && cli.complete(t) != Errc::ok) ++tally.complete_errors;
    ++tally.taken;
  };
  for (;;) {
    // Read "all producers finished" before the take: then an empty take proves that
    // nothing is left (every accepted task was in a ring before the count rose).
    const bool finished = producers_done.load(std::memory_order_acquire) == plan.producers;
    std::size_t n = 0;
    if (batch) {
      n = cli.try_take_batch(q, std::span(got).first(1 + rng() % got.size()));
    } else {
      n = cli.try_take(q, got[0]) ? 1 : 0;
    }
    for (std::size_t i = 0; i < n; ++i) record(got[i], !batch);
    if (batch && n != 0) tally.complete_errors += n - cli.complete_batch(std::span<const Taken>(got.data(), n));
    if (n != 0) continue;
    if (finished) return;
    std::this_thread::yield();  // more consumers than cores: let producers run
  }
}

struct Expected {
  std::uint64_t sum = 0, xr = 0;
};
Expected expected_checksums(const Plan& plan) {
  Expected e;
  for (std::uint32_t p = 0; p < plan.producers; ++p)
    for (std::uint32_t seq = 0; seq < plan.per_producer; ++seq) {
      const std::uint64_t d = plan.digest(p, seq, plan.level(p, seq));
      e.sum += d;
      e.xr ^= d;
    }
  return e;
}

/// The checks every producer/consumer run ends with.
void check_outcome(const Plan& plan, const std::atomic<std::uint32_t>* seen, const std::vector<Tally>& tallies) {
  std::uint64_t missing = 0, duplicated = 0;
  std::string examples;
  for (std::uint64_t i = 0; i < plan.ids(); ++i) {
    const std::uint32_t n = seen[i].load(std::memory_order_relaxed);
    if (n == 1) continue;
    (n == 0 ? missing : duplicated) += 1;
    if (missing + duplicated <= 5)
      examples += " id " + std::to_string(i) + " (producer " + std::to_string(i / plan.per_producer) + " seq " +
                  std::to_string(i % plan.per_producer) + ") seen " + std::to_string(n) + " times;";
  }
  EXPECT_EQ(missing, 0u) << examples;
  EXPECT_EQ(duplicated, 0u) << examples;

  Tally total;
  for (std::size_t c = 0; c < tallies.size(); ++c) {
    const Tally& t = tallies[c];
    total.taken += t.taken;
    total.sum += t.sum;
    total.xr ^= t.xr;
    EXPECT_EQ(t.fifo_violations, 0u) << "consumer " << c << " took seq " << t.first_bad_seq << " after "
                                     << t.first_bad_prev << " from producer " << t.first_bad_producer << " at level "
                                     << t.first_bad_level;
    EXPECT_EQ(t.bad_payloads, 0u) << "consumer " << c;
    EXPECT_EQ(t.complete_errors, 0u) << "consumer " << c;
    EXPECT_EQ(t.error, 0) << "consumer " << c << ": " << to_string(static_cast<Errc>(t.error));
  }
  EXPECT_EQ(total.taken, plan.ids());
  const Expected want = expected_checksums(plan);
  EXPECT_EQ(total.sum, want.sum) << "sum checksum";
  EXPECT_EQ(total.xr, want.xr) << "xor checksum";
}

Layout stress_layout(std::uint32_t capacity, std::uint32_t ring, std::uint32_t levels) {
  Layout l;
  l.levels = levels;
  l.task_capacity = capacity;
  l.ring_capacity = ring;
  l.payload_bytes = sizeof(Msg);
  l.max_queues = 2;
  l.max_participants = 32;
  l.max_semaphores = 0;
  return l;
}

// How long it took and how the work spread over the consumers: a run where one
// consumer took everything raced nothing, which the numbers make visible.
void report(const char* what, const Plan& plan, std::chrono::steady_clock::time_point t0, const Tally* tallies,
            std::size_t consumers) {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string spread;
  for (std::size_t c = 0; c < consumers; ++c) spread += " " + std::to_string(tallies[c].taken);
  std::printf("[   INFO   ] %s: %llu ids, %u producers, %u levels in %.2f s (%.0f ids/s); taken per consumer:%s\n",
              what, static_cast<unsigned long long>(plan.ids()), plan.producers, plan.levels, s,
              static_cast<double>(plan.ids()) / std::max(s, 1e-9), spread.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------
// Threads

enum class Clients { one_shared, one_per_thread };

void run_threads(Clients mode) {
  Plan plan;
  plan.seed = test_seed();
  plan.producers = 3;
  plan.levels = 4;
  plan.per_producer = static_cast<std::uint32_t>(scaled(1'000'000 / 3, 100));
  constexpr std::uint32_t kConsumers = 3;

  auto seg = Segment::create_private(stress_layout(1024, 0, plan.levels), CreateOptions{0600, {"general"}});
  ASSERT_TRUE(seg.ok()) << why(seg);
  const QueueId q = seg->find_queue("general").value();
  auto shared_client = Client::attach(*seg, Role::producer | Role::consumer);
  ASSERT_TRUE(shared_client.ok()) << why(shared_client);

  std::unique_ptr<std::atomic<std::uint32_t>[]> seen(new std::atomic<std::uint32_t>[plan.ids()]);
  for (std::uint64_t i = 0; i < plan.ids(); ++i) seen[i].store(0, std::memory_order_relaxed);
  std::atomic<std::uint32_t> producers_done{0};
  std::vector<Tally> tallies(kConsumers);
  std::vector<Errc> produced(plan.producers, Errc::ok);
  std::atomic<int> attach_failures{0};

  // A thread's client: the shared one, or its own participant slot.
  auto with_client = [&](Role role, auto&& body) {
    if (mode == Clients::one_shared) return body(*shared_client);
    auto own = Client::attach(*seg, role);
    if (!own.ok()) {
      attach_failures.fetch_add(1);
      return body(*shared_client);
    }
    return body(*own);
  };

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (std::uint32_t c = 0; c < kConsumers; ++c)
    threads.emplace_back([&, c] {
      with_client(Role::consumer,
                  [&](Client& cli) { consume(cli, q, plan, c, seen.get(), producers_done, tallies[c]); });
    });
  for (std::uint32_t p = 0; p < plan.producers; ++p)
    threads.emplace_back([&, p] {
      with_client(Role::producer, [&](Client& cli) { produced[p] = produce(cli, q, plan, p); });
      // release: the producer's accepted tasks happen-before a consumer that sees the
      // count (acquire in consume()).
      producers_done.fetch_add(1, std::memory_order_release);
    });
  for (auto& t : threads) t.join();
  report(mode == Clients::one_shared ? "threads, one client" : "threads, a client each", plan, t0, tallies.data(),
         tallies.size());

  EXPECT_EQ(attach_failures.load(), 0);
  for (std::uint32_t p = 0; p < plan.producers; ++p) EXPECT_EQ(produced[p], Errc::ok) << "producer " << p;
  check_outcome(plan, seen.get(), tallies);
  EXPECT_TRUE(every_record_free(*seg));
}

TEST(StressThreads, OneSharedClientEveryIdOnceInOrder) {
  run_threads(Clients::one_shared);
}

TEST(StressThreads, ClientPerThreadEveryIdOnceInOrder) {
  run_threads(Clients::one_per_thread);
}

// ---------------------------------------------------------------------------------
// Processes

TEST(StressProcesses, ForkedProducersAndConsumersEveryIdOnceInOrder) {
  Plan plan;
  plan.seed = test_seed();
  plan.producers = 3;
  plan.levels = 4;
  plan.per_producer = static_cast<std::uint32_t>(scaled(2'000'000 / 3, 100));
  constexpr std::uint32_t kConsumers = 3;

  // A ring smaller than the table: producers meet ring_full as well as table_full.
  auto seg = Segment::create_private(stress_layout(4096, 1024, plan.levels), CreateOptions{0600, {"general"}});
  ASSERT_TRUE(seg.ok()) << why(seg);
  const QueueId q = seg->find_queue("general").value();

  // Results live outside the segment, in memory the children share with us.
  SharedArray<std::atomic<std::uint32_t>> seen(plan.ids());
  SharedArray<std::atomic<std::uint32_t>> producers_done(1);
  SharedArray<Tally> consumer_tally(kConsumers);
  SharedArray<Tally> producer_tally(plan.producers);
  StartGate gate;
  ASSERT_TRUE(gate.valid());

  // Every child attaches its own Client after fork: a participant is a process.
  std::vector<pid_t> pids;
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    pids.push_back(spawn([&, c]() -> int {
      auto cli = Client::attach(*seg, Role::consumer);
      if (!cli.ok()) {
        consumer_tally[c].error = static_cast<std::int32_t>(cli.code());
        return 2;
      }
      gate.wait();
      consume(*cli, q, plan, c, seen.data(), producers_done[0], consumer_tally[c]);
      return 0;
    }));
    ASSERT_GT(pids.back(), 0);
  }
  for (std::uint32_t p = 0; p < plan.producers; ++p) {
    pids.push_back(spawn([&, p]() -> int {
      auto cli = Client::attach(*seg, Role::producer);
      Errc e = cli.ok() ? Errc::ok : cli.code();
      if (cli.ok()) {
        gate.wait();
        e = produce(*cli, q, plan, p);
      }
      producer_tally[p].error = static_cast<std::int32_t>(e);
      // Counted even on failure, so that consumers end and the failure is reported.
      producers_done[0].fetch_add(1, std::memory_order_release);
      return e == Errc::ok ? 0 : 3;
    }));
    ASSERT_GT(pids.back(), 0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  gate.open();
  const auto status = wait_children(pids, 180s);
  report("processes", plan, t0, consumer_tally.data(), kConsumers);

  for (std::size_t i = 0; i < pids.size(); ++i) {
    const bool consumer = i < kConsumers;
    const Tally& t = consumer ? consumer_tally[i] : producer_tally[i - kConsumers];
    EXPECT_TRUE(status[i].ok()) << (consumer ? "consumer " : "producer ") << (consumer ? i : i - kConsumers) << ": "
                                << describe(status[i]) << " "
                                << (t.error != 0 ? to_string(static_cast<Errc>(t.error)) : "");
  }
  std::vector<Tally> tallies(consumer_tally.data(), consumer_tally.data() + kConsumers);
  check_outcome(plan, seen.data(), tallies);
  EXPECT_TRUE(every_record_free(*seg));
  EXPECT_TRUE(every_participant_free(*seg)) << "a child exited without deregistering";
}

// ---------------------------------------------------------------------------------
// Priority drain

/// Drains `q` with one consumer and checks strict priority, FIFO per producer per
/// level, and that exactly the planned tasks come out.
void drain_and_check(Client& cli, QueueId q, const Plan& plan) {
  std::vector<std::uint32_t> seen(plan.ids(), 0);
  std::vector<std::int64_t> last(std::size_t{plan.producers} * plan.levels, -1);
  std::vector<std::uint64_t> per_level(plan.levels, 0), want_per_level(plan.levels, 0);
  for (std::uint32_t p = 0; p < plan.producers; ++p)
    for (std::uint32_t seq = 0; seq < plan.per_producer; ++seq) ++want_per_level[plan.level(p, seq)];

  std::uint32_t highest = 0;  // the least urgent level taken so far
  std::uint64_t taken = 0, inversions = 0, fifo = 0, bad = 0;
  std::string first_inversion;
  Taken t;
  while (cli.try_take(q, t)) {
    Msg m{};
    if (!payload_to(t.payload, m) || m.producer >= plan.producers || m.seq >= plan.per_producer || m.level != t.level ||
        m.check != plan.check(m.producer, m.seq)) {
      ++bad;
    } else {
      ++seen[plan.id(m.producer, m.seq)];
      ++per_level[t.level];
      if (t.level < highest && inversions++ == 0)
        first_inversion = "task " + std::to_string(taken) + " has level " + std::to_string(t.level) +
                          " after a level-" + std::to_string(highest) + " task";
      highest = std::max<std::uint32_t>(highest, t.level);
      auto& prev = last[std::size_t{m.producer} * plan.levels + m.level];
      if (static_cast<std::int64_t>(m.seq) <= prev) ++fifo;
      prev = m.seq;
    }
    ASSERT_EQ(cli.complete(t), Errc::ok);
    ++taken;
  }
  EXPECT_EQ(inversions, 0u) << first_inversion;
  EXPECT_EQ(fifo, 0u);
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(taken, plan.ids());
  EXPECT_EQ(per_level, want_per_level);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1u), static_cast<std::ptrdiff_t>(plan.ids()));
}

TEST(StressPriority, FilledLevelsDrainMostUrgentFirstThreads) {
  const std::uint64_t seed = test_seed();
  for (std::uint32_t levels : {2u, 4u}) {
    SCOPED_TRACE(std::to_string(levels) + " levels");
    Plan plan;
    plan.seed = seed + levels;
    plan.producers = 4;
    plan.levels = levels;
    // Everything must fit at once: the consumer starts only when all is enqueued.
    plan.per_producer = static_cast<std::uint32_t>(std::min<std::uint64_t>(scaled(4000, 16), 4096));
    auto seg = Segment::create_private(stress_layout(16384, 0, levels), CreateOptions{0600, {"general"}});
    ASSERT_TRUE(seg.ok()) << why(seg);
    const QueueId q = seg->find_queue("general").value();
    auto cli = Client::attach(*seg, Role::producer | Role::consumer);
    ASSERT_TRUE(cli.ok()) << why(cli);

    std::vector<Errc> produced(plan.producers, Errc::ok);
    std::vector<std::thread> producers;
    for (std::uint32_t p = 0; p < plan.producers; ++p)
      producers.emplace_back([&, p] { produced[p] = produce(*cli, q, plan, p); });
    for (auto& t : producers) t.join();
    for (std::uint32_t p = 0; p < plan.producers; ++p) ASSERT_EQ(produced[p], Errc::ok) << "producer " << p;

    drain_and_check(*cli, q, plan);
    EXPECT_TRUE(every_record_free(*seg));
  }
}

TEST(StressPriority, FilledLevelsDrainMostUrgentFirstProcesses) {
  Plan plan;
  plan.seed = test_seed();
  plan.producers = 3;
  plan.levels = 2;
  plan.per_producer = static_cast<std::uint32_t>(std::min<std::uint64_t>(scaled(5000, 16), 5000));
  auto seg = Segment::create_private(stress_layout(16384, 0, plan.levels), CreateOptions{0600, {"general"}});
  ASSERT_TRUE(seg.ok()) << why(seg);
  const QueueId q = seg->find_queue("general").value();
  StartGate gate;
  ASSERT_TRUE(gate.valid());
  std::vector<pid_t> pids;
  for (std::uint32_t p = 0; p < plan.producers; ++p) {
    pids.push_back(spawn([&, p]() -> int {
      auto cli = Client::attach(*seg, Role::producer);
      if (!cli.ok()) return 2;
      gate.wait();
      return produce(*cli, q, plan, p) == Errc::ok ? 0 : 3;
    }));
    ASSERT_GT(pids.back(), 0);
  }
  gate.open();
  const auto status = wait_children(pids, 60s);
  for (std::size_t i = 0; i < pids.size(); ++i)
    ASSERT_TRUE(status[i].ok()) << "producer " << i << ": " << describe(status[i]);

  auto cli = Client::attach(*seg, Role::consumer);
  ASSERT_TRUE(cli.ok()) << why(cli);
  drain_and_check(*cli, q, plan);
  EXPECT_TRUE(every_record_free(*seg));
}

}  // namespace
