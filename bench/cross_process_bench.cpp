// Throughput from one producer to one consumer, N items (--tasks, default 2,000,000),
// wall clock from the producer's first item to the consumer's last one.
//
//   BM_cross_shmsched_process_single  parent process Client::enqueue -> forked child
//                                     process Client::try_take + complete
//   BM_cross_shmsched_process_batch   the same with enqueue_batch / try_take_batch / complete_batch of 64
//   BM_cross_shmsched_process_single_ahead
//                                     single calls again, the consumer with take-ahead
//                                     (Client::set_take_ahead, kTakeAhead): each take
//                                     that holds nothing claims up to kTakeAhead tasks
//   BM_cross_shmsched_process_{single,single_ahead,batch}_level0
//                                     the same three with every task at priority 0, the
//                                     work moodycamel's rows do (they have no priorities)
//   BM_cross_shmsched_thread_single   the same engine between two threads of one process:
//   BM_cross_shmsched_thread_batch    separates the cost of the engine from the cost of
//                                     the process boundary
//   BM_cross_moodycamel_thread_single ConcurrentQueue, producer thread -> consumer thread,
//                                     try_enqueue / try_dequeue with tokens
//   BM_cross_moodycamel_thread_bulk   the same with try_enqueue_bulk / try_dequeue_bulk of 64
//   BM_cross_tbb_thread_single        tbb::concurrent_bounded_queue, try_push / try_pop
//   BM_cross_record_{bound,states,early}_thread_{single,bulk}
//                                     references for an engine built on a task table
//                                     (see their section), not peers
//   BM_cross_two_transfers_thread     not a queue: two threads on the producer's and the
//                                     consumer's CPUs hand a cache line back and forth; an
//                                     item is a round trip, two line transfers in a row
//                                     (the chain a take right behind its producer waits
//                                     out, see its section), counter one_way_ns
//   BM_cross_boost_mq_process/D/P     boost::interprocess::message_queue of depth D between
//                                     two processes; P=0 blocking send/receive (its intended
//                                     use), P=1 try_send/try_receive polled like the others
//
// Every shmsched task and boost message carries a priority 0..7 from the same sequence
// (priority_of), except in the _level0 rows; moodycamel and tbb have no priorities, so
// they do strictly less work than the spread rows.
// The shmsched segment uses task_capacity 65536, 8 levels, 64-byte payloads; moodycamel
// and tbb are bounded at the same 65536 items in flight. boost runs at depth 1024, where
// it is at its best, and once at 65536 (see its section).
//
// Producer and consumer are pinned to two different CPUs (see producer_cpu), every system
// alike. Set-up is untimed: mapping, fork, attach, and one warm-up pass that touches every task
// record and ring slot (and every moodycamel block) so that no first-touch page fault
// lands in the measurement. The child is always reaped and named objects always removed.
#include <benchmark/benchmark.h>
#include <concurrentqueue/concurrentqueue.h>
#include <tbb/concurrent_queue.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench {
namespace {

namespace bip = boost::interprocess;

constexpr std::string_view kType = "bench";
constexpr std::string_view kQueue = "bench";
constexpr auto kStartTimeout = std::chrono::milliseconds(10000);

bool backpressure(Errc e) noexcept {
  return e == Errc::table_full || e == Errc::ring_full;
}

// ---- watching the other side ----------------------------------------------------

// Lets a waiting producer notice that its consumer is gone, so it reports an error
// instead of waiting forever on a queue nobody drains.
struct Watch {
  Child* child = nullptr;  // a process consumer, or null for a thread
  const ConsumerReport* report = nullptr;
  std::int64_t deadline_ns = 0;

  bool consumer_gone() const {
    if (report->failed.load(std::memory_order_acquire) != kConsumerOk) return true;
    if (child != nullptr && child->exited()) return true;
    return now_ns() > deadline_ns;
  }
};

// Lets a waiting consumer notice that its producer is gone (a child whose parent died
// is re-parented) or that the driver asked it to stop.
struct ConsumerWatch {
  pid_t parent = 0;  // 0 for a thread consumer
  const std::atomic<std::uint32_t>* stop = nullptr;
  std::int64_t deadline_ns = 0;

  ConsumerError check() const {
    if (parent != 0 && ::getppid() != parent) return kParentGone;
    if (stop != nullptr && stop->load(std::memory_order_relaxed) != 0) return kParentGone;
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
    const ConsumerWatch watch{0, &consumer.stop, now_ns() + std::chrono::nanoseconds(2 * kRunTimeout).count()};
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
  const Watch watch{nullptr, &rep, t0 + std::chrono::nanoseconds(kRunTimeout).count()};
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

// ---- shmsched ---------------------------------------------------------------------

// Fills the table at each level in turn and drains it, so every record, the free ring
// and every level's ring have been touched before the clock starts.
std::string warm_up(Client& c, QueueId q) {
  const Item item{};
  TaskOptions o;
  o.queue = q;
  Taken t;
  for (std::uint32_t level = 0; level < c.segment().layout().levels; ++level) {
    o.priority = static_cast<std::uint8_t>(level);
    std::uint32_t queued = 0;
    for (;; ++queued) {
      const Errc e = c.enqueue(kType, as_payload(item), o);
      if (backpressure(e)) break;
      if (e != Errc::ok) return "warm-up enqueue: " + std::string(to_string(e));
    }
    for (std::uint32_t i = 0; i < queued; ++i) {
      if (!c.try_take(q, t) || c.complete(t) != Errc::ok) return "warm-up take failed";
    }
  }
  return {};
}

// The take-ahead of the _ahead rows: the most a take may claim. Measured against 4 and
// 8 (docs/benchmarks.md): the more a take claims, the fewer looks at the rings.
constexpr std::uint32_t kTakeAhead = Client::kMaxTakeAhead;

// How a run moves tasks: single calls, single calls with take-ahead, batches of kBatch.
enum class Calls { single, single_ahead, batch };

ConsumerError drain_shmsched(Client& c, QueueId q, std::uint64_t n, Calls calls, ConsumerReport& rep,
                             const ConsumerWatch& watch) {
  const bool batch = calls == Calls::batch;
  if (calls == Calls::single_ahead && c.set_take_ahead(q, kTakeAhead) != Errc::ok) {
    publish(rep, 0, 0, kOpenFailed);
    return kOpenFailed;
  }
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  ConsumerError err = kConsumerOk;
  IdlePoll poll;
  Item item;
  auto read = [&](const Taken& t) {
    if (!payload_to(t.payload, item)) return false;
    sum += item.seq;
    ++count;
    return true;
  };
  auto consume = [&](const Taken& t) {
    if (!read(t)) return kBadItem;
    return c.complete(t) == Errc::ok ? kConsumerOk : kCompleteFailed;
  };
  if (!batch) {
    Taken t;
    while (count < n && err == kConsumerOk) {
      if (!c.try_take(q, t)) {
        err = poll.empty(watch);
        continue;
      }
      poll.busy();
      err = consume(t);
    }
  } else {
    std::array<Taken, kBatch> ts;
    while (count < n && err == kConsumerOk) {
      const std::size_t m = c.try_take_batch(q, ts);
      if (m == 0) {
        err = poll.empty(watch);
        continue;
      }
      poll.busy();
      for (std::size_t i = 0; i < m && err == kConsumerOk; ++i)
        if (!read(ts[i])) err = kBadItem;
      if (err == kConsumerOk && c.complete_batch(std::span<const Taken>(ts.data(), m)) != m) err = kCompleteFailed;
    }
  }
  publish(rep, count, sum, err);
  return err;
}

// Whether a run spreads its tasks over the eight priorities (priority_of), as the Boost
// rows do, or puts every task at priority 0: the same work as moodycamel's rows, which
// have no priorities (the consumer still looks at the levels in order).
enum class Levels { spread, one };

std::string produce_shmsched_single(Client& c, QueueId q, std::uint64_t n, const Watch& watch, Levels levels) {
  Item item{};
  TaskOptions o;
  o.queue = q;
  for (std::uint64_t seq = 0; seq < n; ++seq) {
    item.seq = seq;
    o.priority = levels == Levels::spread ? priority_of(seq) : std::uint8_t{0};
    Backoff backoff;
    for (std::uint64_t waits = 1;; ++waits) {
      const Errc e = c.enqueue(kType, as_payload(item), o);
      if (e == Errc::ok) break;
      if (!backpressure(e)) return "enqueue: " + std::string(to_string(e));
      backoff.pause();
      if ((waits & 4095) == 0 && watch.consumer_gone()) return "consumer stopped while the producer waited";
    }
  }
  return {};
}

std::string produce_shmsched_batch(Client& c, QueueId q, std::uint64_t n, const Watch& watch, Levels levels) {
  TaskBatch batch(kType, q, levels == Levels::spread);
  for (std::uint64_t base = 0; base < n; base += kBatch) {
    const std::span<const TaskSpec> specs = batch.window(base, n);
    const std::size_t k = specs.size();
    std::size_t done = 0;
    Backoff backoff;
    for (std::uint64_t waits = 1;; ++waits) {
      Errc e = Errc::ok;
      done += c.enqueue_batch(specs.subspan(done, k - done), batch.ids, &e);
      if (done == k) break;
      if (!backpressure(e)) return "enqueue_batch: " + std::string(to_string(e));
      backoff.pause();
      if ((waits & 4095) == 0 && watch.consumer_gone()) return "consumer stopped while the producer waited";
    }
  }
  return {};
}

// The producer's half of a run, common to the process and the thread consumer: wait for
// the consumer, time the production and the drain, check the checksum.
RunResult time_shmsched(Client& producer, QueueId q, std::uint64_t n, bool batch, ConsumerReport& rep, Child* child,
                        Levels levels = Levels::spread) {
  RunResult r;
  if (!wait_for_flag(rep.ready, child, kStartTimeout)) {
    const auto f = static_cast<ConsumerError>(rep.failed.load(std::memory_order_acquire));
    r.error = f != kConsumerOk ? std::string(to_string(f)) : "consumer did not start";
    return r;
  }
  const std::int64_t t0 = now_ns();
  const Watch watch{child, &rep, t0 + std::chrono::nanoseconds(kRunTimeout).count()};
  r.error = batch ? produce_shmsched_batch(producer, q, n, watch, levels)
                  : produce_shmsched_single(producer, q, n, watch, levels);
  if (!r.error.empty()) return r;
  if (!wait_for_flag(rep.done, child, kRunTimeout)) {
    r.error = "consumer did not finish";
    return r;
  }
  r.seconds = static_cast<double>(rep.end_ns.load(std::memory_order_relaxed) - t0) * 1e-9;
  r.error = check_report(rep, n);
  return r;
}

struct ShmschedRig {
  std::optional<Segment> seg;
  QueueId q = 0;
  std::optional<Client> producer;

  std::string set_up() {
    CreateOptions co;
    co.queues = {std::string(kQueue)};
    auto s = Segment::create_private(bench_layout(), co);
    if (!s) return s.error().message();
    seg.emplace(std::move(s.value()));
    auto qid = seg->find_queue(kQueue);
    if (!qid) return qid.error().message();
    q = qid.value();
    auto c = Client::attach(*seg, Role::producer | Role::consumer);
    if (!c) return c.error().message();
    producer.emplace(std::move(c.value()));
    return warm_up(*producer, q);
  }
};

RunResult run_shmsched_processes(std::uint64_t n, Calls calls, Levels levels = Levels::spread) {
  const bool batch = calls == Calls::batch;
  const CpuPin pin(producer_cpu());
  ShmschedRig rig;
  if (auto e = rig.set_up(); !e.empty()) return {0, e};
  SharedBox<ConsumerReport> rep;
  const pid_t parent = ::getpid();
  Segment& seg = *rig.seg;
  const QueueId q = rig.q;
  // The child attaches a Client of its own: a Client names its process (pid, start
  // time), so the parent's handle must never act in the child.
  Child child = Child::spawn([&]() -> int {
    const CpuPin pin(consumer_cpu());
    auto c = Client::attach(seg, Role::consumer);
    if (!c) {
      rep->failed.store(kAttachFailed, std::memory_order_release);
      return 3;
    }
    rep->ready.store(1, std::memory_order_release);
    const ConsumerWatch watch{parent, nullptr, now_ns() + std::chrono::nanoseconds(2 * kRunTimeout).count()};
    const ConsumerError e = drain_shmsched(*c, q, n, calls, *rep, watch);
    c->detach();
    return e == kConsumerOk ? 0 : 4;
  });
  if (!child.started()) return {0, "fork failed"};
  RunResult r = time_shmsched(*rig.producer, q, n, batch, *rep, &child, levels);
  if (r.error.empty()) {
    if (const int rc = child.wait(); rc != 0) r.error = "consumer process exited with status " + std::to_string(rc);
  }
  return r;
}

RunResult run_shmsched_threads(std::uint64_t n, Calls calls) {
  const bool batch = calls == Calls::batch;
  const CpuPin pin(producer_cpu());
  ShmschedRig rig;
  if (auto e = rig.set_up(); !e.empty()) return {0, e};
  ConsumerReport rep;
  ThreadConsumer consumer;
  consumer.thread = std::thread([&] {
    const CpuPin pin(consumer_cpu());
    auto c = Client::attach(*rig.seg, Role::consumer);
    if (!c) {
      rep.failed.store(kAttachFailed, std::memory_order_release);
      return;
    }
    rep.ready.store(1, std::memory_order_release);
    const ConsumerWatch watch{0, &consumer.stop, now_ns() + std::chrono::nanoseconds(2 * kRunTimeout).count()};
    drain_shmsched(*c, rig.q, n, calls, rep, watch);
  });
  return time_shmsched(*rig.producer, rig.q, n, batch, rep, nullptr);
}

void BM_cross_shmsched_process_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_processes(n, Calls::single); });
}
void BM_cross_shmsched_process_single_ahead(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_processes(n, Calls::single_ahead); });
}
void BM_cross_shmsched_process_batch(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_processes(n, Calls::batch); });
}
void BM_cross_shmsched_process_single_level0(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_processes(n, Calls::single, Levels::one); });
}
void BM_cross_shmsched_process_single_ahead_level0(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_processes(n, Calls::single_ahead, Levels::one); });
}
void BM_cross_shmsched_process_batch_level0(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_processes(n, Calls::batch, Levels::one); });
}
void BM_cross_shmsched_thread_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_threads(n, Calls::single); });
}
void BM_cross_shmsched_thread_batch(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_shmsched_threads(n, Calls::batch); });
}
BENCHMARK(BM_cross_shmsched_process_single)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_process_single_ahead)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_process_batch)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_process_single_level0)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_process_single_ahead_level0)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_process_batch_level0)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_thread_single)->Apply(cross_config);
BENCHMARK(BM_cross_shmsched_thread_batch)->Apply(cross_config);

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

// ---- references: what a record design costs ------------------------------------------
//
// Stripped-down queues built the way the issues ask the engine to be built: a task
// table whose records carry the payload inline, and record indices handed over.
//
//   BM_cross_record_bound_thread_*   each task is a record with a header line and an
//       inline payload line: one producer thread writes the two lines, one consumer
//       thread reads them, through a single-producer single-consumer index ring
//       (Lamport's, with cached indices). No state word, no CAS, no priority, no crash
//       recovery, no free list (records are reused in ring order). A ceiling: the engine
//       does all of this and more.
//   BM_cross_record_states_thread_*  the same, plus what the task table asks of
//       every record: a state word changed by one CAS per transition -- reserve and
//       queue by the producer, claim and free by the consumer -- each word on a line of
//       its own and fetched ahead. A reference, not a ceiling: it shows what a lean
//       implementation of the per-task CASes reaches (the engine's single calls, which
//       order their steps differently, measure faster than it).
//   BM_cross_record_early_thread_*   the states reference with the producer's two
//       transitions (reserve, queue) made kEarly tasks ahead of the record's body, so the
//       consumer's claim finds a state word written long before, which it fetched ahead;
//       only the body is still written just before the consumer reads it. It separates
//       the cost of the consumer's own two locked instructions from that of racing the
//       producer for the state word's line.
//
// None is a peer. Their ratios against moodycamel show how much of the gap the
// design accounts for: the first moves two lines a task where moodycamel moves one; the
// second adds a locked read-modify-write per transition, which cannot complete before
// the stores ahead of it have reached their lines.

struct alignas(64) BoundRecord {
  std::uint64_t header[8];  // as many bytes as TaskHot: id, type, times, sizes, level
  Item payload;
};
static_assert(sizeof(BoundRecord) == 128);

// A record's state word. The engine packs four to a line; a line each is faster here
// (70 against 53 M/s in batches, 9.6 against 8.1 single), so the reference takes that.
struct alignas(64) BoundCtrl {
  std::atomic<std::uint64_t> state{0};
  std::uint64_t where = 0;
};

// One CAS as the engine makes per transition; the state goes 0 free -> 1 reserved ->
// 2 queued (producer), 2 -> 3 running -> 0 free (consumer).
inline void bound_cas(std::atomic<std::uint64_t>& w, std::uint64_t from, std::uint64_t to) {
  std::uint64_t expected = from;
  // acq_rel, as the engine's transitions: hands the record's lines over.
  while (!w.compare_exchange_strong(expected, to, std::memory_order_acq_rel, std::memory_order_acquire)) {
    expected = from;
    cpu_relax();
  }
}

// How far ahead the early variant reserves and queues its records.
constexpr std::uint64_t kEarly = 64;

struct alignas(64) BoundIndex {
  std::atomic<std::uint64_t> v{0};
};

RunResult run_record_bound_threads(std::uint64_t n, bool bulk, bool states, bool early = false) {
  const CpuPin pin(producer_cpu());
  constexpr std::uint64_t kMask = kDepth - 1;
  std::vector<BoundRecord> records(kDepth);  // value-initialised: every page touched
  std::vector<BoundCtrl> ctrl(kDepth);
  std::vector<std::uint32_t> ring(kDepth, 0);
  BoundIndex tail;  // written by the producer only
  BoundIndex head;  // written by the consumer only
  ConsumerReport rep;
  ThreadConsumer consumer;
  start_thread_consumer(consumer, rep, [&](const ConsumerWatch& watch) {
    Drained d;
    auto& [count, sum, err] = d;
    IdlePoll poll;
    std::uint64_t h = 0;
    std::uint64_t seen = 0;  // the producer's tail as last read
    while (count < n && err == kConsumerOk) {
      if (h == seen) {
        // acquire: pairs with the producer's release of tail; the records and ring
        // entries below it are written.
        seen = tail.v.load(std::memory_order_acquire);
        if (h == seen) {
          err = poll.empty(watch);
          continue;
        }
      }
      poll.busy();
      const std::uint64_t end = bulk ? std::min(seen, h + kBatch) : h + 1;
      for (; h < end; ++h) {
        const std::uint32_t idx = ring[h & kMask];
        if (states && h + 8 < seen) {
          // as the engine does: fetch the lines of the entry 8 ahead, the word for writing
          const std::uint32_t ahead = ring[(h + 8) & kMask];
          __builtin_prefetch(&ctrl[ahead], 1);
          __builtin_prefetch(&records[ahead], 0);
          __builtin_prefetch(&records[ahead].payload, 0);
        }
        if (states) bound_cas(ctrl[idx].state, 2, 3);
        const BoundRecord& r = records[idx];
        if (r.header[0] != r.payload.seq) err = kBadItem;
        sum += r.payload.seq;
        ++count;
        if (states) bound_cas(ctrl[idx].state, 3, 0);
      }
      // release: the records below h are read; the producer may write them again.
      head.v.store(h, std::memory_order_release);
    }
    return d;
  });
  return time_thread_run(rep, n, [&](std::int64_t t0, const Watch& watch) -> std::string {
    const std::size_t step = bulk ? kBatch : 1;
    std::uint64_t t = 0;
    std::uint64_t freed = 0;  // the consumer's head as last read
    const std::uint64_t lead = early ? kEarly : 0;
    if (early)
      for (std::uint64_t i = 0; i < kEarly; ++i) {
        bound_cas(ctrl[i].state, 0, 1);
        bound_cas(ctrl[i].state, 1, 2);
      }
    for (std::uint64_t base = 0; base < n; base += step) {
      const std::uint64_t k = std::min<std::uint64_t>(step, n - base);
      Backoff backoff;
      for (std::uint64_t waits = 1; t + k + lead - freed > kDepth; ++waits) {
        // acquire: pairs with the consumer's release of head; it is done with those records.
        freed = head.v.load(std::memory_order_acquire);
        if (t + k + lead - freed <= kDepth) break;
        backoff.pause();
        if ((waits & 4095) == 0 && watch.consumer_gone()) return "consumer stopped while the producer waited";
      }
      for (std::uint64_t i = 0; i < k; ++i) {
        const std::uint64_t seq = base + i;
        const auto idx = static_cast<std::uint32_t>((t + i) & kMask);
        if (early) {
          const auto e = static_cast<std::uint32_t>((idx + kEarly) & kMask);
          bound_cas(ctrl[e].state, 0, 1);
          bound_cas(ctrl[e].state, 1, 2);
          ctrl[e].where = t + i + kEarly;
          __builtin_prefetch(&ctrl[(e + 8) & kMask], 1);
          __builtin_prefetch(&records[(idx + 8) & kMask], 1);
          __builtin_prefetch(&records[(idx + 8) & kMask].payload, 1);
        } else if (states) {
          __builtin_prefetch(&ctrl[(idx + 8) & kMask], 1);
          __builtin_prefetch(&records[(idx + 8) & kMask], 1);
          __builtin_prefetch(&records[(idx + 8) & kMask].payload, 1);
          bound_cas(ctrl[idx].state, 0, 1);
        }
        BoundRecord& rec = records[idx];
        rec.header[0] = seq;
        rec.header[1] = 0x62656e6368ULL;  // the type's hash
        rec.header[2] = static_cast<std::uint64_t>(t0);
        rec.header[3] = 0;
        rec.header[4] = 0;
        rec.header[5] = sizeof(Item) | (std::uint64_t{priority_of(seq)} << 48);
        rec.header[6] = 1;
        rec.header[7] = 0;
        rec.payload = Item{};
        rec.payload.seq = seq;
        if (states && !early) {
          bound_cas(ctrl[idx].state, 1, 2);
          ctrl[idx].where = t + i;
        }
        ring[(t + i) & kMask] = idx;
      }
      t += k;
      // release: the records and ring entries below t are written before the consumer
      // can see t.
      tail.v.store(t, std::memory_order_release);
    }
    return {};
  });
}

void BM_cross_record_bound_thread_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_record_bound_threads(n, false, false); });
}
void BM_cross_record_bound_thread_bulk(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_record_bound_threads(n, true, false); });
}
void BM_cross_record_states_thread_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_record_bound_threads(n, false, true); });
}
void BM_cross_record_early_thread_single(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_record_bound_threads(n, false, true, true); });
}
void BM_cross_record_early_thread_bulk(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_record_bound_threads(n, true, true, true); });
}
void BM_cross_record_states_thread_bulk(benchmark::State& state) {
  run_timed(state, [](std::uint64_t n) { return run_record_bound_threads(n, true, true); });
}
BENCHMARK(BM_cross_record_bound_thread_single)->Apply(cross_config);
BENCHMARK(BM_cross_record_bound_thread_bulk)->Apply(cross_config);
BENCHMARK(BM_cross_record_states_thread_single)->Apply(cross_config);
BENCHMARK(BM_cross_record_states_thread_bulk)->Apply(cross_config);
BENCHMARK(BM_cross_record_early_thread_single)->Apply(cross_config);
BENCHMARK(BM_cross_record_early_thread_bulk)->Apply(cross_config);

// ---- two line transfers in a row ------------------------------------------------------
//
// A take right behind its producer waits for two line transfers one after the other:
// the slot word the producer has just published, then the record it names (control
// word, hot line and payload, fetched together), whose index it learns only from the
// slot. A strict-priority consumer over levels that fill at random takes at least
// seven tasks in eight that way (docs/benchmarks.md, "One priority against eight"), so
// the rate of such pairs of transfers sets the pace of single calls there. This row
// measures it on the benchmark's two CPUs: the first thread writes a line the second
// spins on, the second answers on another line, n round trips, each counted as one
// item; one_way_ns is half a round trip.

struct alignas(64) TransferLine {
  std::atomic<std::uint64_t> v{0};
};

RunResult run_two_transfers(std::uint64_t n) {
  const CpuPin pin(producer_cpu());
  TransferLine ping, pong;
  std::atomic<bool> ready{false};
  std::atomic<bool> failed{false};
  std::thread echo([&] {
    const CpuPin echo_pin(consumer_cpu());
    ready.store(true, std::memory_order_release);
    for (std::uint64_t i = 1; i <= n; ++i) {
      // acquire/release: each side's store is what the other waits for; nothing else
      // is handed over.
      for (std::uint64_t spins = 0; ping.v.load(std::memory_order_acquire) != i; ++spins) {
        if ((spins & 0xFFFFFF) == 0xFFFFFF && failed.load(std::memory_order_relaxed)) return;
      }
      pong.v.store(i, std::memory_order_release);
    }
  });
  while (!ready.load(std::memory_order_acquire)) std::this_thread::yield();
  const std::int64_t t0 = now_ns();
  const std::int64_t deadline = t0 + std::chrono::nanoseconds(kRunTimeout).count();
  RunResult r;
  for (std::uint64_t i = 1; i <= n && r.error.empty(); ++i) {
    ping.v.store(i, std::memory_order_release);
    for (std::uint64_t spins = 0; pong.v.load(std::memory_order_acquire) != i; ++spins) {
      if ((spins & 0xFFFFFF) == 0xFFFFFF && now_ns() > deadline) {
        r.error = "the echo thread stopped answering";
        failed.store(true, std::memory_order_relaxed);
        break;
      }
    }
  }
  r.seconds = static_cast<double>(now_ns() - t0) * 1e-9;
  echo.join();
  return r;
}

void BM_cross_two_transfers_thread(benchmark::State& state) {
  const double seconds = run_timed(state, run_two_transfers);
  if (state.iterations() != 0)
    state.counters["one_way_ns"] = seconds * 1e9 / static_cast<double>(2 * task_count() * state.iterations());
}
BENCHMARK(BM_cross_two_transfers_thread)->Apply(cross_config);

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

// ---- boost::interprocess::message_queue ----------------------------------------------

// Removes the named queue on every early way out of the parent (the child leaves by
// _exit and never runs this); once the child has it open, the name goes at once.
struct MqRemover {
  std::string name;
  ~MqRemover() { bip::message_queue::remove(name.c_str()); }
};

// A bounded blocking wait: a peer that died must not strand the other side.
boost::posix_time::ptime soon() {
  return boost::posix_time::microsec_clock::universal_time() + boost::posix_time::milliseconds(100);
}

// Boost delivers the highest priority number first; shmsched takes level 0 first.
unsigned boost_priority(std::uint64_t seq) noexcept {
  return 7u - priority_of(seq);
}

RunResult run_boost_mq_processes(std::uint64_t n, std::uint32_t depth, bool polling) {
  const CpuPin pin(producer_cpu());
  static std::uint32_t serial = 0;
  MqRemover remover{"shmsched_bench_mq_" + std::to_string(::getpid()) + "_" + std::to_string(++serial)};
  const char* name = remover.name.c_str();
  bip::message_queue::remove(name);
  std::optional<bip::message_queue> mq;
  try {
    mq.emplace(bip::create_only, name, depth, sizeof(Item));
  } catch (const bip::interprocess_exception& e) {
    return {0, std::string("message_queue: ") + e.what()};
  }
  SharedBox<ConsumerReport> rep;
  const pid_t parent = ::getpid();
  Child child = Child::spawn([&]() -> int {
    const CpuPin pin(consumer_cpu());
    std::optional<bip::message_queue> cq;
    try {
      cq.emplace(bip::open_only, name);
    } catch (...) {
      rep->failed.store(kOpenFailed, std::memory_order_release);
      return 3;
    }
    rep->ready.store(1, std::memory_order_release);
    const ConsumerWatch watch{parent, nullptr, now_ns() + std::chrono::nanoseconds(2 * kRunTimeout).count()};
    std::uint64_t count = 0;
    std::uint64_t sum = 0;
    ConsumerError err = kConsumerOk;
    Backoff backoff;
    std::uint64_t idle = 0;
    Item item;
    bip::message_queue::size_type got = 0;
    unsigned prio = 0;
    while (count < n && err == kConsumerOk) {
      bool ok = cq->try_receive(&item, sizeof item, got, prio);
      if (!ok && !polling) ok = cq->timed_receive(&item, sizeof item, got, prio, soon());
      if (!ok) {
        if (polling) backoff.pause();
        if (!polling || (++idle & 4095) == 0) err = watch.check();
        continue;
      }
      backoff.reset();
      if (got != sizeof item) {
        err = kBadItem;
        break;
      }
      sum += item.seq;
      ++count;
    }
    publish(*rep, count, sum, err);
    return err == kConsumerOk ? 0 : 4;
  });
  if (!child.started()) return {0, "fork failed"};

  RunResult r;
  if (!wait_for_flag(rep->ready, &child, kStartTimeout)) {
    const auto f = static_cast<ConsumerError>(rep->failed.load(std::memory_order_acquire));
    return {0, f != kConsumerOk ? std::string(to_string(f)) : "consumer did not start"};
  }
  // Both sides have it mapped now: unlink the name at once, so that not even a SIGKILL
  // of this process can leave the object behind.
  bip::message_queue::remove(name);
  const std::int64_t t0 = now_ns();
  const Watch watch{&child, &*rep, t0 + std::chrono::nanoseconds(kRunTimeout).count()};
  Item item{};
  for (std::uint64_t seq = 0; seq < n; ++seq) {
    item.seq = seq;
    const unsigned prio = boost_priority(seq);
    if (mq->try_send(&item, sizeof item, prio)) continue;
    Backoff backoff;
    for (std::uint64_t waits = 1;; ++waits) {
      if (polling) {
        backoff.pause();
        if (mq->try_send(&item, sizeof item, prio)) break;
        if ((waits & 4095) != 0) continue;
      } else if (mq->timed_send(&item, sizeof item, prio, soon())) {
        break;
      }
      if (watch.consumer_gone()) return {0, "consumer stopped while the producer waited"};
    }
  }
  if (!wait_for_flag(rep->done, &child, kRunTimeout)) return {0, "consumer did not finish"};
  r.seconds = static_cast<double>(rep->end_ns.load(std::memory_order_relaxed) - t0) * 1e-9;
  r.error = check_report(*rep, n);
  if (r.error.empty()) {
    if (const int rc = child.wait(); rc != 0) r.error = "consumer process exited with status " + std::to_string(rc);
  }
  return r;
}

void BM_cross_boost_mq_process(benchmark::State& state) {
  const auto depth = static_cast<std::uint32_t>(state.range(0));
  const bool polling = state.range(1) != 0;
  run_timed(state, [&](std::uint64_t n) { return run_boost_mq_processes(n, depth, polling); });
}
BENCHMARK(BM_cross_boost_mq_process)->Args({1024, 0})->Args({1024, 1})->Apply(cross_config);
// At the depth every other system gets, boost is an order of magnitude slower: it keeps
// messages sorted by priority and shifts the index on every insert, O(depth) once the
// queue is full. One repetition, since a run takes seconds; the 1024 runs above are the
// fair peer and the ones the main ratios use.
BENCHMARK(BM_cross_boost_mq_process)
    ->Args({kDepth, 0})
    ->Apply(cross_config)
    ->Repetitions(1)
    ->DisplayAggregatesOnly(false);

// ---- ratios -------------------------------------------------------------------------

const RatioDecl r1("2. one producer -> one consumer", "shmsched process->process single / moodycamel thread single",
                   "BM_cross_shmsched_process_single", "BM_cross_moodycamel_thread_single");
const RatioDecl r1a("2. one producer -> one consumer",
                    "shmsched process->process single, take-ahead 16 / moodycamel thread single",
                    "BM_cross_shmsched_process_single_ahead", "BM_cross_moodycamel_thread_single");
const RatioDecl r5a("2. one producer -> one consumer",
                    "shmsched process single, take-ahead 16 / boost mq (1024, blocking)",
                    "BM_cross_shmsched_process_single_ahead", "BM_cross_boost_mq_process/1024/0");
const RatioDecl r2("2. one producer -> one consumer", "shmsched process->process batch 64 / moodycamel bulk 64",
                   "BM_cross_shmsched_process_batch", "BM_cross_moodycamel_thread_bulk");
const RatioDecl r3("2. one producer -> one consumer", "shmsched thread->thread single / moodycamel thread single",
                   "BM_cross_shmsched_thread_single", "BM_cross_moodycamel_thread_single");
const RatioDecl r4("2. one producer -> one consumer", "shmsched process->process single / tbb thread single",
                   "BM_cross_shmsched_process_single", "BM_cross_tbb_thread_single");
const RatioDecl r5("2. one producer -> one consumer", "shmsched process single / boost mq (1024, blocking)",
                   "BM_cross_shmsched_process_single", "BM_cross_boost_mq_process/1024/0");
const RatioDecl r6("2. one producer -> one consumer", "shmsched process single / boost mq (1024, polling)",
                   "BM_cross_shmsched_process_single", "BM_cross_boost_mq_process/1024/1");
const RatioDecl r7("2. one producer -> one consumer", "shmsched process single / boost mq (65536, blocking)",
                   "BM_cross_shmsched_process_single", "BM_cross_boost_mq_process/65536/0");
const RatioDecl r8("2. one producer -> one consumer", "shmsched process batch 64 / boost mq (1024, blocking)",
                   "BM_cross_shmsched_process_batch", "BM_cross_boost_mq_process/1024/0");

const RatioDecl t1("2. one producer -> one consumer",
                   "shmsched process single / two line transfers in a row (a take behind its producer)",
                   "BM_cross_shmsched_process_single", "BM_cross_two_transfers_thread");
const RatioDecl t2("2. one producer -> one consumer", "moodycamel thread single / two line transfers in a row",
                   "BM_cross_moodycamel_thread_single", "BM_cross_two_transfers_thread");

const RatioDecl s1("3. shmsched against itself", "process batch 64 / process single (what batching buys)",
                   "BM_cross_shmsched_process_batch", "BM_cross_shmsched_process_single");
const RatioDecl s2("3. shmsched against itself", "process single / thread single (price of the process boundary)",
                   "BM_cross_shmsched_process_single", "BM_cross_shmsched_thread_single");
const RatioDecl s3("3. shmsched against itself", "process batch 64 / thread batch 64 (price of the process boundary)",
                   "BM_cross_shmsched_process_batch", "BM_cross_shmsched_thread_batch");
const RatioDecl r9("2. one producer -> one consumer", "shmsched thread->thread batch 64 / moodycamel bulk 64",
                   "BM_cross_shmsched_thread_batch", "BM_cross_moodycamel_thread_bulk");

const RatioDecl b1("4. references: what a record design costs", "record bound single / moodycamel thread single",
                   "BM_cross_record_bound_thread_single", "BM_cross_moodycamel_thread_single");
const RatioDecl b2("4. references: what a record design costs", "record bound bulk 64 / moodycamel bulk 64",
                   "BM_cross_record_bound_thread_bulk", "BM_cross_moodycamel_thread_bulk");
const RatioDecl b3("4. references: what a record design costs", "record states single / moodycamel thread single",
                   "BM_cross_record_states_thread_single", "BM_cross_moodycamel_thread_single");
const RatioDecl b4("4. references: what a record design costs", "record states bulk 64 / moodycamel bulk 64",
                   "BM_cross_record_states_thread_bulk", "BM_cross_moodycamel_thread_bulk");
const RatioDecl b5("4. references: what a record design costs", "record states single / boost mq (1024, blocking)",
                   "BM_cross_record_states_thread_single", "BM_cross_boost_mq_process/1024/0");
const RatioDecl b6("4. references: what a record design costs", "shmsched process single / record states single",
                   "BM_cross_shmsched_process_single", "BM_cross_record_states_thread_single");
const RatioDecl b7("4. references: what a record design costs", "shmsched process batch 64 / record states bulk 64",
                   "BM_cross_shmsched_process_batch", "BM_cross_record_states_thread_bulk");

}  // namespace
}  // namespace shmsched::bench
