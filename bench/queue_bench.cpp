// The queue, component by component against its peers: shmsched's engine and Consumer
// runtime against moodycamel ConcurrentQueue, tbb::concurrent_bounded_queue and
// Boost.Interprocess message_queue.
//
//   BM_pair_{shmsched_client/0,moodycamel,tbb}
//       one thread, one item at a time: enqueue and take straight back (rates per CPU
//       second): the uncontended cost of a round trip, everything in cache
//   BM_status_lookup                         Client::status of a queued task
//   BM_group_round/{0,1}                     100,000 no-op tasks enqueued, taken and completed
//                                            by one thread, as plain tasks (0) or as members of
//                                            a group that is then sealed and waited for (1):
//                                            what a group costs a task
//   BM_cross_shmsched_process_single         producer process Client::enqueue, priorities
//                                            0..7 -> consumer process try_take + complete
//   BM_cross_shmsched_process_single_level0  the same with every task at priority 0: the
//                                            work moodycamel's rows do (they have no priorities)
//   BM_cross_shmsched_process_batch          enqueue_batch / try_take_batch / complete_batch of 64
//   BM_cross_boost_mq_process                message_queue of depth 1024 between two processes,
//                                            blocking send / receive, priorities 0..7
//   BM_cross_moodycamel_thread_{single,bulk} producer thread -> consumer thread, try_enqueue /
//                                            try_dequeue with tokens, single or bulk of 64
//   BM_cross_tbb_thread_single               try_push / try_pop between two threads
//   BM_mpmc_{shmsched,moodycamel,tbb}/N      N threads (each its own Client) each enqueue an
//                                            item and take one back, on one queue
//
// The BM_cross_ rows move N items (--tasks, default 2,000,000) with the wall clock from the
// producer's first item to the consumer's last one; the process rows are the runs of
// bench/process_run.hpp (the same driver as shmsched_throughput's), the thread rows follow
// the same rules: the same 64-byte item by value, a checksum the driver verifies, 65536 items
// in flight at most, producer and consumer pinned to two different CPUs, set-up untimed,
// every polling side backing off the same way.
#include <benchmark/benchmark.h>
#include <concurrentqueue/concurrentqueue.h>
#include <tbb/concurrent_queue.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "process_run.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench {
namespace {

constexpr std::string_view kType = "bench";
constexpr auto kStartTimeout = std::chrono::milliseconds(10000);

// ---- one thread, one item at a time ----------------------------------------------------

void BM_pair_shmsched_client(benchmark::State& state) {
  Layout layout;
  layout.payload_bytes = sizeof(Item);
  BenchSegment bench(layout, Role::producer | Role::consumer);
  if (!bench.ok()) return state.SkipWithError(bench.error.c_str());
  const QueueId q = bench.queue;
  auto& client = bench.client;
  TaskOptions opts;
  opts.queue = q;
  opts.priority = static_cast<std::uint8_t>(state.range(0));
  Item in{};
  Item out{};
  Taken t;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    if (client->enqueue(kType, as_payload(in), opts) != Errc::ok || !client->try_take(q, t) ||
        !payload_to(t.payload, out) || client->complete(t) != Errc::ok) {
      state.SkipWithError("shmsched round trip failed");
      break;
    }
    sum += out.seq;
    ++in.seq;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_pair_shmsched_client)->Arg(0);

// Client::status of a queued task: what a producer pays to ask what became of one.
void BM_status_lookup(benchmark::State& state) {
  Layout layout;
  layout.payload_bytes = sizeof(Item);
  BenchSegment bench(layout, Role::producer | Role::consumer);
  if (!bench.ok()) return state.SkipWithError(bench.error.c_str());
  TaskOptions opts;
  opts.queue = bench.queue;
  TaskId id = kNoTask;
  if (bench.client->enqueue(kType, as_payload(Item{}), opts, &id) != Errc::ok)
    return state.SkipWithError("enqueue failed");
  for (auto _ : state) {
    auto s = bench.client->status(id);
    if (!s || s->status != TaskStatus::queued) return state.SkipWithError("status of a queued task is wrong");
    benchmark::DoNotOptimize(s->attempts);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_status_lookup);

// 100,000 no-op tasks through one thread: enqueue, then take and complete each; with
// range(0) = 1 they are members of a group created first and sealed and waited for last.
void BM_group_round(benchmark::State& state) {
  constexpr std::uint32_t kTasks = 100'000;
  const bool grouped = state.range(0) != 0;
  Layout layout;
  layout.payload_bytes = sizeof(Item);
  layout.task_capacity = 131072;
  BenchSegment bench(layout, Role::producer | Role::consumer);
  if (!bench.ok()) return state.SkipWithError(bench.error.c_str());
  auto& client = *bench.client;
  TaskOptions opts;
  opts.queue = bench.queue;
  Taken t;
  for (auto _ : state) {
    if (grouped) {
      auto g = client.create_group("round");
      if (!g) return state.SkipWithError(g.error().message().c_str());
      opts.group_id = *g;
    }
    for (std::uint32_t i = 0; i < kTasks; ++i)
      if (client.enqueue(kType, as_payload(Item{}), opts) != Errc::ok) return state.SkipWithError("enqueue failed");
    for (std::uint32_t i = 0; i < kTasks; ++i)
      if (!client.try_take(bench.queue, t) || client.complete(t) != Errc::ok) return state.SkipWithError("take failed");
    if (grouped) {
      if (client.seal_group(opts.group_id) != Errc::ok) return state.SkipWithError("seal failed");
      auto done = client.wait_group(opts.group_id, std::chrono::seconds(10));
      if (!done || done->done != kTasks) return state.SkipWithError("the group did not finish with every member");
      if (client.delete_group(opts.group_id) != Errc::ok) return state.SkipWithError("delete failed");
    }
  }
  state.SetItemsProcessed(state.iterations() * kTasks);
}
BENCHMARK(BM_group_round)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_pair_moodycamel(benchmark::State& state) {
  moodycamel::ConcurrentQueue<Item> queue(kDepth);
  moodycamel::ProducerToken ptok(queue);
  moodycamel::ConsumerToken ctok(queue);
  Item in{};
  Item out{};
  std::uint64_t sum = 0;
  for (auto _ : state) {
    if (!queue.enqueue(ptok, in) || !queue.try_dequeue(ctok, out)) {
      state.SkipWithError("moodycamel round trip failed");
      break;
    }
    sum += out.seq;
    ++in.seq;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_pair_moodycamel);

void BM_pair_tbb(benchmark::State& state) {
  tbb::concurrent_bounded_queue<Item> queue;
  queue.set_capacity(kDepth);
  Item in{};
  Item out{};
  std::uint64_t sum = 0;
  for (auto _ : state) {
    queue.push(in);
    if (!queue.try_pop(out)) {
      state.SkipWithError("tbb round trip failed");
      break;
    }
    sum += out.seq;
    ++in.seq;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_pair_tbb);

// ---- between two threads: the thread peers ---------------------------------------------

// Lets a waiting producer notice that its consumer is gone, so it reports an error
// instead of waiting forever on a queue nobody drains.
struct Watch {
  const ConsumerReport* report = nullptr;
  std::int64_t deadline_ns = 0;

  bool consumer_gone() const {
    return report->failed.load(std::memory_order_acquire) != kConsumerOk || now_ns() > deadline_ns;
  }
};

// Lets a waiting consumer notice that the driver asked it to stop.
struct ConsumerWatch {
  const std::atomic<std::uint32_t>* stop = nullptr;
  std::int64_t deadline_ns = 0;

  ConsumerError check() const {
    if (stop->load(std::memory_order_relaxed) != 0) return kParentGone;
    if (now_ns() > deadline_ns) return kConsumerTimeout;
    return kConsumerOk;
  }
};

// A consumer's polling of an empty queue: the common back-off, and a look at its watch
// every 4096 empty polls.
struct IdlePoll {
  Backoff backoff;
  std::uint64_t idle = 0;
  ConsumerError empty(const ConsumerWatch& watch) noexcept {
    backoff.pause();
    return (++idle & 4095) == 0 ? watch.check() : kConsumerOk;
  }
  void busy() noexcept { backoff.reset(); }
};

void publish(ConsumerReport& rep, std::uint64_t count, std::uint64_t sum, ConsumerError e) {
  rep.end_ns.store(now_ns(), std::memory_order_relaxed);
  rep.count.store(count, std::memory_order_relaxed);
  rep.sum.store(sum, std::memory_order_relaxed);
  if (e != kConsumerOk) rep.failed.store(e, std::memory_order_release);
  // release: pairs with the acquire in wait_for_flag; the fields above are visible.
  rep.done.store(1, std::memory_order_release);
}

// A thread consumer that is always joined; it is told to stop first, so a failed
// producer never leaves it polling.
struct ThreadConsumer {
  std::atomic<std::uint32_t> stop{0};
  std::thread thread;
  ~ThreadConsumer() {
    stop.store(1, std::memory_order_relaxed);
    if (thread.joinable()) thread.join();
  }
};

// What a thread consumer's drain loop hands back.
struct Drained {
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  ConsumerError err = kConsumerOk;
};

// Starts a consumer thread, pinned to the consumer CPU, that runs drain(watch) and
// publishes what it drained.
template <class Drain>
void start_thread_consumer(ThreadConsumer& consumer, ConsumerReport& rep, Drain drain) {
  consumer.thread = std::thread([&consumer, &rep, drain]() mutable {
    const CpuPin pin(consumer_cpu());
    rep.ready.store(1, std::memory_order_release);
    const ConsumerWatch watch{&consumer.stop, now_ns() + std::chrono::nanoseconds(2 * kRunTimeout).count()};
    const Drained d = drain(watch);
    publish(rep, d.count, d.sum, d.err);
  });
}

// The producer's side of a run against a thread consumer: waits for the consumer, runs
// produce(t0, watch) (an error text, or empty), times the production and the drain and
// checks the checksum.
template <class Produce>
RunResult time_thread_run(ConsumerReport& rep, std::uint64_t n, Produce produce) {
  if (!wait_for_flag(rep.ready, nullptr, kStartTimeout)) return {0, "consumer did not start"};
  const std::int64_t t0 = now_ns();
  const Watch watch{&rep, t0 + std::chrono::nanoseconds(kRunTimeout).count()};
  if (std::string e = produce(t0, watch); !e.empty()) return {0, e};
  if (!wait_for_flag(rep.done, nullptr, kRunTimeout)) return {0, "consumer did not finish"};
  RunResult r;
  r.seconds = static_cast<double>(rep.end_ns.load(std::memory_order_relaxed) - t0) * 1e-9;
  r.error = check_report(rep, n);
  return r;
}

void cross_config(benchmark::internal::Benchmark* b) {
  b->UseManualTime()->Iterations(1)->Repetitions(5)->DisplayAggregatesOnly(true)->Unit(benchmark::kMillisecond);
}

// ---- between two processes ---------------------------------------------------------------

// One run of the process driver with n 64-byte tasks, 1 producer and 1 consumer.
template <class Measure>
RunResult process_run(std::uint64_t n, Measure&& measure) {
  run::Plan plan;
  plan.tasks = n;
  const run::Measured m = measure(plan);
  return {m.seconds, m.error};
}

void BM_cross_shmsched_process_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) {
    return process_run(
        n, [](const run::Plan& p) { return run::measure_shmsched<run::Payload<64>>(run::Path::single, p); });
  });
}
void BM_cross_shmsched_process_single_level0(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) {
    return process_run(
        n, [](const run::Plan& p) { return run::measure_shmsched<run::Payload<64>>(run::Path::single_level0, p); });
  });
}
void BM_cross_shmsched_process_batch(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) {
    return process_run(n,
                       [](const run::Plan& p) { return run::measure_shmsched<run::Payload<64>>(run::Path::batch, p); });
  });
}
void BM_cross_boost_mq_process(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) {
    return process_run(n, [](const run::Plan& p) { return run::measure_boost<run::Payload<64>>(p); });
  });
}
BENCHMARK(BM_cross_shmsched_process_single)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_process_single_level0)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_process_batch)->Apply(cross_config);
BENCHMARK(BM_cross_boost_mq_process)->Apply(cross_config);

// ---- moodycamel ---------------------------------------------------------------------

RunResult run_moodycamel_threads(std::uint64_t n, bool bulk) {
  const CpuPin pin(producer_cpu());
  moodycamel::ConcurrentQueue<Item> queue(kDepth);
  moodycamel::ProducerToken ptok(queue);
  moodycamel::ConsumerToken ctok(queue);
  {
    // Grow the producer's block list to kDepth items once, untimed; afterwards
    // try_enqueue reuses those blocks and fails (back-pressure) instead of allocating,
    // which bounds the queue at the same depth as the others.
    std::vector<Item> fill(kDepth);
    if (!queue.enqueue_bulk(ptok, fill.data(), fill.size())) return {0, "moodycamel warm-up enqueue failed"};
    std::size_t drained = 0;
    while (drained < fill.size()) {
      const std::size_t m = queue.try_dequeue_bulk(ctok, fill.data(), fill.size() - drained);
      if (m == 0) return {0, "moodycamel warm-up dequeue failed"};
      drained += m;
    }
  }
  ConsumerReport rep;
  ThreadConsumer consumer;
  start_thread_consumer(consumer, rep, [&](const ConsumerWatch& watch) {
    Drained d;
    auto& [count, sum, err] = d;
    IdlePoll poll;
    std::array<Item, kBatch> items;
    while (count < n && err == kConsumerOk) {
      const std::size_t m = bulk ? queue.try_dequeue_bulk(ctok, items.data(), kBatch)
                                 : static_cast<std::size_t>(queue.try_dequeue(ctok, items[0]));
      if (m == 0) {
        err = poll.empty(watch);
        continue;
      }
      poll.busy();
      for (std::size_t i = 0; i < m; ++i) sum += items[i].seq;
      count += m;
    }
    return d;
  });
  return time_thread_run(rep, n, [&](std::int64_t, const Watch& watch) -> std::string {
    std::array<Item, kBatch> items{};
    const std::size_t step = bulk ? kBatch : 1;
    for (std::uint64_t base = 0; base < n; base += step) {
      const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(step, n - base));
      for (std::size_t i = 0; i < k; ++i) items[i].seq = base + i;
      Backoff backoff;
      for (std::uint64_t waits = 1;; ++waits) {
        const bool ok = bulk ? queue.try_enqueue_bulk(ptok, items.data(), k) : queue.try_enqueue(ptok, items[0]);
        if (ok) break;
        backoff.pause();
        if ((waits & 4095) == 0 && watch.consumer_gone()) return "consumer stopped while the producer waited";
      }
    }
    return {};
  });
}

void BM_cross_moodycamel_thread_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_moodycamel_threads(n, false); });
}
void BM_cross_moodycamel_thread_bulk(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_moodycamel_threads(n, true); });
}
BENCHMARK(BM_cross_moodycamel_thread_single)->Apply(cross_config);
BENCHMARK(BM_cross_moodycamel_thread_bulk)->Apply(cross_config);

// ---- tbb --------------------------------------------------------------------------------

RunResult run_tbb_threads(std::uint64_t n) {
  const CpuPin pin(producer_cpu());
  tbb::concurrent_bounded_queue<Item> queue;
  queue.set_capacity(kDepth);
  ConsumerReport rep;
  ThreadConsumer consumer;
  start_thread_consumer(consumer, rep, [&](const ConsumerWatch& watch) {
    Drained d;
    auto& [count, sum, err] = d;
    IdlePoll poll;
    Item item;
    while (count < n && err == kConsumerOk) {
      if (!queue.try_pop(item)) {
        err = poll.empty(watch);
        continue;
      }
      poll.busy();
      sum += item.seq;
      ++count;
    }
    return d;
  });
  return time_thread_run(rep, n, [&](std::int64_t, const Watch& watch) -> std::string {
    Item item{};
    for (std::uint64_t seq = 0; seq < n; ++seq) {
      item.seq = seq;
      Backoff backoff;
      for (std::uint64_t waits = 1; !queue.try_push(item); ++waits) {
        backoff.pause();
        if ((waits & 4095) == 0 && watch.consumer_gone()) return "consumer stopped while the producer waited";
      }
    }
    return {};
  });
}

void BM_cross_tbb_thread_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_tbb_threads(n); });
}
BENCHMARK(BM_cross_tbb_thread_single)->Apply(cross_config);

// ---- N threads on one queue --------------------------------------------------------------

constexpr std::uint64_t kPairsPerThread = 200'000;

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

}  // namespace
}  // namespace shmsched::bench
