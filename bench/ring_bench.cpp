// One thread, one item at a time: enqueue an item and take it straight back. This is
// the uncontended cost of a round trip through each system -- the floor under every
// contended number -- with everything in cache. Rates are per CPU second (the framework's
// default), which other load on the machine disturbs less than wall time.
//
//   BM_pair_shmsched_client/L  Client::enqueue + try_take + complete on a private
//                              segment, 64-byte payload, priority level L (a take scans
//                              levels 0..L, so /7 shows the price of an empty-level scan)
//   BM_pair_index_ring         the bare IndexRing push + pop with trivial callbacks: what
//                              the ring costs without the task record around it
//   BM_pair_moodycamel         ConcurrentQueue enqueue + try_dequeue (with tokens)
//   BM_pair_tbb                tbb::concurrent_bounded_queue push + try_pop
//   BM_pair_boost_mq           boost::interprocess::message_queue try_send + try_receive
//                              (in one process: its uncontended lock and copy)
//   BM_full_shmsched_enqueue_refused
//                              an enqueue that a full table (65536 records) refuses
#include <benchmark/benchmark.h>
#include <concurrentqueue/concurrentqueue.h>
#include <tbb/concurrent_queue.h>
#include <unistd.h>

#include <boost/interprocess/ipc/message_queue.hpp>
#include <memory>
#include <optional>
#include <string>

#include "bench_support.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench {
namespace {

namespace bip = boost::interprocess;

constexpr std::string_view kType = "bench";

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
BENCHMARK(BM_pair_shmsched_client)->Arg(0)->Arg(7);

// The price of back-pressure: an enqueue refused because every record is in use. A
// producer that outruns its consumers pays this on every retry, so it should stay
// close to the cost of a successful enqueue.
void BM_full_shmsched_enqueue_refused(benchmark::State& state) {
  Layout layout;
  layout.payload_bytes = sizeof(Item);
  BenchSegment bench(layout, Role::producer);
  if (!bench.ok()) return state.SkipWithError(bench.error.c_str());
  auto& client = bench.client;
  TaskOptions opts;
  opts.queue = bench.queue;
  const Item item{};
  Errc e = Errc::ok;
  while ((e = client->enqueue(kType, as_payload(item), opts)) == Errc::ok) {
  }
  if (e != Errc::table_full && e != Errc::ring_full) {
    state.SkipWithError("could not fill the table");
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(client->enqueue(kType, as_payload(item), opts));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_full_shmsched_enqueue_refused);

void BM_pair_index_ring(benchmark::State& state) {
  constexpr std::uint32_t kCap = 1024;
  RingHeader header;
  std::unique_ptr<detail::AtomicU64[]> slots(new detail::AtomicU64[kCap]());
  IndexRing<> ring(&header, slots.get(), kCap);
  auto prepare = [](std::uint64_t) noexcept { return true; };
  auto stale = [](std::uint64_t, std::uint32_t) noexcept { return false; };
  auto claim = [](std::uint64_t, std::uint32_t) noexcept { return Claim::taken; };
  std::uint32_t v = 0;
  std::uint32_t out = 0;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    if (ring.try_push(v, prepare, stale) != PushStatus::ok || !ring.try_pop(claim, out)) {
      state.SkipWithError("ring round trip failed");
      break;
    }
    sum += out;
    v = (v + 1) & static_cast<std::uint32_t>(IndexRing<>::kValueMask);
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_pair_index_ring);

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

void BM_pair_boost_mq(benchmark::State& state) {
  const std::string name = "shmsched_bench_pair_" + std::to_string(::getpid());
  bip::message_queue::remove(name.c_str());
  // Removes the object on every way out, including a failed run.
  struct Remover {
    const std::string& n;
    ~Remover() { bip::message_queue::remove(n.c_str()); }
  } remover{name};
  std::optional<bip::message_queue> queue;
  try {
    queue.emplace(bip::create_only, name.c_str(), 1024, sizeof(Item));
  } catch (const bip::interprocess_exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  Item in{};
  Item out{};
  std::uint64_t sum = 0;
  bip::message_queue::size_type got = 0;
  unsigned prio = 0;
  for (auto _ : state) {
    if (!queue->try_send(&in, sizeof in, 7u - priority_of(in.seq)) ||
        !queue->try_receive(&out, sizeof out, got, prio) || got != sizeof out) {
      state.SkipWithError("boost message_queue round trip failed");
      break;
    }
    sum += out.seq;
    ++in.seq;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_pair_boost_mq);

const RatioDecl r1("1. one thread, enqueue+take pair", "shmsched Client (level 0) / moodycamel",
                   "BM_pair_shmsched_client/0", "BM_pair_moodycamel");
const RatioDecl r2("1. one thread, enqueue+take pair", "shmsched Client (level 0) / tbb bounded queue",
                   "BM_pair_shmsched_client/0", "BM_pair_tbb");
const RatioDecl r3("1. one thread, enqueue+take pair", "shmsched Client (level 0) / boost message_queue",
                   "BM_pair_shmsched_client/0", "BM_pair_boost_mq");
const RatioDecl r4("1. one thread, enqueue+take pair", "shmsched Client (level 7) / moodycamel",
                   "BM_pair_shmsched_client/7", "BM_pair_moodycamel");
const RatioDecl r5("1. one thread, enqueue+take pair", "bare IndexRing / moodycamel", "BM_pair_index_ring",
                   "BM_pair_moodycamel");

}  // namespace
}  // namespace shmsched::bench
