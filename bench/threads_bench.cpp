// Micro-benchmarks the suite asks for besides the one-item round trips of ring_bench.cpp:
//
//   BM_ring_batch_index_ring     the bare IndexRing, 64 pushes then 64 pops per step (one
//                                thread): the ring's cost when a batch is in flight
//   BM_task_alloc_fill_free      task-table alloc and free: an enqueue whose ring is full
//                                reserves a record, fills it (64 B), finds no room and gives
//                                the record back -- exactly the table's reserve and free
//   BM_backlog_shmsched_enqueue_batch
//   BM_backlog_shmsched_take_batch
//                                each side of the cross-process batch rows alone, in one
//                                thread with no other side: kBacklog tasks (64 B,
//                                priorities 0..7) enqueued in batches of 64 into a table
//                                of kDepth records every one of which was used before,
//                                then taken and completed in batches of 64; one row times
//                                the enqueues, the other the takes
//   BM_mpmc_shmsched/N           N threads (each its own Client, as N producer-consumers
//                                would be) each enqueue a task and take one back, on one
//                                queue of a private segment, priorities 0..7
//   BM_mpmc_moodycamel/N         the same with ConcurrentQueue (a token per thread)
//   BM_mpmc_tbb/N                the same with tbb::concurrent_bounded_queue
//
// The threaded ones time one run of kPairsPerThread round trips per thread with the wall
// clock, from a common start to the last thread's end (manual time), so contention shows.
#include <benchmark/benchmark.h>
#include <concurrentqueue/concurrentqueue.h>
#include <tbb/concurrent_queue.h>

#include <array>
#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench {
namespace {

constexpr std::string_view kType = "bench";
constexpr std::uint64_t kPairsPerThread = 200'000;

void BM_ring_batch_index_ring(benchmark::State& state) {
  constexpr std::uint32_t kCap = 1024;
  RingHeader header;
  std::unique_ptr<detail::AtomicU64[]> slots(new detail::AtomicU64[kCap]());
  IndexRing<> ring(&header, slots.get(), kCap);
  auto prepare = [](std::uint64_t) noexcept { return true; };
  auto stale = [](std::uint64_t, std::uint32_t) noexcept { return false; };
  auto claim = [](std::uint64_t, std::uint32_t) noexcept { return Claim::taken; };
  std::uint64_t sum = 0;
  for (auto _ : state) {
    for (std::uint32_t v = 0; v < kBatch; ++v) {
      if (ring.try_push(v, prepare, stale) != PushStatus::ok) {
        state.SkipWithError("ring push failed");
        return;
      }
    }
    for (std::uint32_t i = 0; i < kBatch; ++i) {
      std::uint32_t out = 0;
      if (!ring.try_pop(claim, out)) {
        state.SkipWithError("ring pop failed");
        return;
      }
      sum += out;
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kBatch));
}
BENCHMARK(BM_ring_batch_index_ring);

void BM_task_alloc_fill_free(benchmark::State& state) {
  Layout layout;
  layout.task_capacity = 1024;
  layout.ring_capacity = 64;  // the ring fills long before the table does
  layout.payload_bytes = sizeof(Item);
  BenchSegment bench(layout, Role::producer);
  if (!bench.ok()) return state.SkipWithError(bench.error.c_str());
  auto& client = bench.client;
  TaskOptions opts;
  opts.queue = bench.queue;
  const Item item{};
  while (client->enqueue(kType, as_payload(item), opts) == Errc::ok) {
  }
  for (auto _ : state) {
    if (client->enqueue(kType, as_payload(item), opts) != Errc::ring_full) {
      state.SkipWithError("expected the full ring to refuse the task");
      return;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_task_alloc_fill_free);

constexpr std::uint64_t kBacklog = 60'000;

// One pass: kBacklog tasks enqueued in batches, then taken and completed in batches.
// Returns the seconds of the enqueues and of the takes; empty error on success.
std::string backlog_pass(Client& c, QueueId q, TaskBatch& batch, double& enqueue_s, double& take_s) {
  const std::int64_t t0 = now_ns();
  for (std::uint64_t base = 0; base < kBacklog; base += kBatch) {
    const std::span<const TaskSpec> specs = batch.window(base, kBacklog);
    if (c.enqueue_batch(specs, batch.ids) != specs.size()) return "enqueue_batch refused tasks";
  }
  const std::int64_t t1 = now_ns();
  std::array<Taken, kBatch> ts;
  std::uint64_t got = 0;
  while (got < kBacklog) {
    const std::size_t m = c.try_take_batch(q, ts);
    if (m == 0) return "the backlog ran dry early";
    if (c.complete_batch(std::span<const Taken>(ts.data(), m)) != m) return "complete_batch failed";
    got += m;
  }
  const std::int64_t t2 = now_ns();
  enqueue_s = static_cast<double>(t1 - t0) * 1e-9;
  take_s = static_cast<double>(t2 - t1) * 1e-9;
  return {};
}

void backlog_batch(benchmark::State& state, bool time_enqueue) {
  BenchSegment bench(bench_layout(), Role::producer | Role::consumer);
  if (!bench.ok()) return state.SkipWithError(bench.error.c_str());
  Client& c = *bench.client;
  TaskBatch batch(kType, bench.queue);
  double enq = 0, take = 0;
  // Untimed: two passes use every record once, so no first touch lands in the timing.
  for (int i = 0; i < 2; ++i)
    if (auto e = backlog_pass(c, bench.queue, batch, enq, take); !e.empty()) return state.SkipWithError(e.c_str());
  for (auto _ : state) {
    if (auto e = backlog_pass(c, bench.queue, batch, enq, take); !e.empty()) return state.SkipWithError(e.c_str());
    state.SetIterationTime(time_enqueue ? enq : take);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kBacklog));
}
void BM_backlog_shmsched_enqueue_batch(benchmark::State& state) {
  backlog_batch(state, true);
}
void BM_backlog_shmsched_take_batch(benchmark::State& state) {
  backlog_batch(state, false);
}
BENCHMARK(BM_backlog_shmsched_enqueue_batch)->UseManualTime()->Iterations(20)->Repetitions(3);
BENCHMARK(BM_backlog_shmsched_take_batch)->UseManualTime()->Iterations(20)->Repetitions(3);

// Runs `body(thread_index)` on `n` threads from a common start; returns the wall seconds
// from the start to the last thread's end.
template <class Body>
double timed_threads(unsigned n, Body&& body) {
  std::atomic<unsigned> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1, std::memory_order_acq_rel);
      while (!go.load(std::memory_order_acquire)) cpu_relax();
      body(i);
    });
  }
  while (ready.load(std::memory_order_acquire) != n) cpu_relax();
  const std::int64_t t0 = now_ns();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  return static_cast<double>(now_ns() - t0) / 1e9;
}

void threaded_config(benchmark::internal::Benchmark* b) {
  b->Arg(1)->Arg(2)->Arg(4)->UseManualTime()->Iterations(1)->Repetitions(3)->DisplayAggregatesOnly(true);
}

void BM_mpmc_shmsched(benchmark::State& state) {
  const auto n = static_cast<unsigned>(state.range(0));
  Layout layout;
  layout.payload_bytes = sizeof(Item);
  BenchSegment bench(layout, Role::producer | Role::consumer);
  if (!bench.ok()) return state.SkipWithError(bench.error.c_str());
  const QueueId q = bench.queue;
  std::vector<std::optional<Client>> clients(n);
  clients[0] = std::move(bench.client);  // n >= 1 (threaded_config)
  for (auto& c : clients) {
    if (c) continue;
    auto r = Client::attach(*bench.seg, Role::producer | Role::consumer);
    if (!r) {
      state.SkipWithError(r.error().message().c_str());
      return;
    }
    c.emplace(std::move(*r));
  }
  std::atomic<std::uint64_t> failures{0};
  for (auto _ : state) {
    const double s = timed_threads(n, [&](unsigned i) {
      Client& c = *clients[i];
      TaskOptions o;
      o.queue = q;
      Item item{};
      Taken t;
      std::uint64_t failed = 0;
      for (std::uint64_t k = 0; k < kPairsPerThread; ++k) {
        item.seq = k;
        o.priority = priority_of(k + i);
        if (c.enqueue(kType, as_payload(item), o) != Errc::ok) ++failed;
        // Another thread may have taken ours; the queue is never empty for long.
        while (!c.try_take(q, t)) cpu_relax();
        if (c.complete(t) != Errc::ok) ++failed;
      }
      failures.fetch_add(failed, std::memory_order_relaxed);
    });
    state.SetIterationTime(s);
  }
  if (failures.load() != 0) state.SkipWithError("an enqueue or complete failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n * kPairsPerThread));
}
BENCHMARK(BM_mpmc_shmsched)->Apply(threaded_config);

void BM_mpmc_moodycamel(benchmark::State& state) {
  const auto n = static_cast<unsigned>(state.range(0));
  moodycamel::ConcurrentQueue<Item> queue(kDepth);
  std::atomic<std::uint64_t> failures{0};
  for (auto _ : state) {
    const double s = timed_threads(n, [&](unsigned) {
      moodycamel::ProducerToken ptok(queue);
      moodycamel::ConsumerToken ctok(queue);
      Item item{};
      Item out{};
      std::uint64_t failed = 0;
      for (std::uint64_t k = 0; k < kPairsPerThread; ++k) {
        item.seq = k;
        if (!queue.enqueue(ptok, item)) ++failed;
        while (!queue.try_dequeue(ctok, out)) cpu_relax();
      }
      failures.fetch_add(failed, std::memory_order_relaxed);
    });
    state.SetIterationTime(s);
  }
  if (failures.load() != 0) state.SkipWithError("an enqueue failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n * kPairsPerThread));
}
BENCHMARK(BM_mpmc_moodycamel)->Apply(threaded_config);

void BM_mpmc_tbb(benchmark::State& state) {
  const auto n = static_cast<unsigned>(state.range(0));
  tbb::concurrent_bounded_queue<Item> queue;
  queue.set_capacity(kDepth);
  for (auto _ : state) {
    const double s = timed_threads(n, [&](unsigned) {
      Item item{};
      Item out{};
      for (std::uint64_t k = 0; k < kPairsPerThread; ++k) {
        item.seq = k;
        queue.push(item);
        while (!queue.try_pop(out)) cpu_relax();
      }
    });
    state.SetIterationTime(s);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n * kPairsPerThread));
}
BENCHMARK(BM_mpmc_tbb)->Apply(threaded_config);

const RatioDecl r1("7. threads, enqueue+take pairs on one queue", "4 threads: shmsched / moodycamel",
                   "BM_mpmc_shmsched/4", "BM_mpmc_moodycamel/4");
const RatioDecl r2("7. threads, enqueue+take pairs on one queue", "4 threads: shmsched / tbb", "BM_mpmc_shmsched/4",
                   "BM_mpmc_tbb/4");
const RatioDecl r3("7. threads, enqueue+take pairs on one queue", "shmsched 4 threads / 1 thread (scaling)",
                   "BM_mpmc_shmsched/4", "BM_mpmc_shmsched/1");

}  // namespace
}  // namespace shmsched::bench
