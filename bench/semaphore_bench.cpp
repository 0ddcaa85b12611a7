// Semaphores against Boost.Interprocess's (an unnamed process-shared POSIX semaphore on
// Linux): what a permit costs alone, and under contention between two processes. How a
// scarce resource is kept busy is shmsched_scenarios' scarce_resource scenario.
//
//   BM_sem_pair_shmsched_try   one thread, uncontended: Client::try_acquire(sem, 1) +
//                              release(sem, 1) on a private segment
//   BM_sem_pair_boost_try      interprocess_semaphore in MAP_SHARED memory, try_wait() + post()
//   BM_sem_contended_shmsched  two forked processes, each its own Client, each doing N
//                              acquire(sem, 1, 10 s) + release(sem, 1) on a capacity-1
//                              semaphore; items = pairs of both processes. Counter overlap:
//                              the share of the run both loops were running (near 0 would
//                              mean they ran one after the other, uncontended)
//   BM_sem_contended_boost     the same with interprocess_semaphore(1) wait() + post().
//                              Nothing runs between the pairs, so both measure the hand-off
//                              of one cache line and the sleep/wake path, not a critical section
//
// Every process is pinned to its own CPU; segments are private and the Boost semaphores live
// in anonymous mappings, so nothing is left in /dev/shm even after a crash.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/sync/interprocess_semaphore.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench {
namespace {

namespace bip = boost::interprocess;

constexpr auto kStartTimeout = std::chrono::milliseconds(10000);
constexpr auto kAcquireTimeout = std::chrono::seconds(10);

Layout sem_layout() {
  Layout l;
  l.levels = 2;
  l.task_capacity = 1024;
  l.payload_bytes = 16;
  l.max_queues = 2;
  l.max_participants = 16;
  l.max_semaphores = 4;
  return l;
}

// A boost semaphore in anonymous MAP_SHARED memory, so children forked later share it
// (placement new: interprocess_semaphore has no default constructor, so SharedBox does
// not fit).
class SharedBoostSem {
 public:
  explicit SharedBoostSem(unsigned initial) {
    void* p =
        ::mmap(nullptr, sizeof(bip::interprocess_semaphore), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    sem_ = new (p) bip::interprocess_semaphore(initial);
  }
  SharedBoostSem(const SharedBoostSem&) = delete;
  SharedBoostSem& operator=(const SharedBoostSem&) = delete;
  ~SharedBoostSem() {
    sem_->~interprocess_semaphore();
    ::munmap(sem_, sizeof(bip::interprocess_semaphore));
  }
  bip::interprocess_semaphore& operator*() const noexcept { return *sem_; }

 private:
  bip::interprocess_semaphore* sem_ = nullptr;
};

// ---- 1. uncontended pair ------------------------------------------------------------------

void BM_sem_pair_shmsched_try(benchmark::State& state) {
  const CpuPin pin(producer_cpu());
  auto seg = Segment::create_private(sem_layout());
  if (!seg) return state.SkipWithError(seg.error().message().c_str());
  auto sem = seg->create_semaphore("bench", 1);
  if (!sem) return state.SkipWithError(sem.error().message().c_str());
  auto client = Client::attach(*seg);
  if (!client) return state.SkipWithError(client.error().message().c_str());
  Client& c = *client;
  const SemId s = *sem;
  for (auto _ : state) {
    if (c.try_acquire(s, 1) != Errc::ok) return state.SkipWithError("try_acquire on a free semaphore failed");
    if (c.release(s, 1) != Errc::ok) return state.SkipWithError("release of a held permit failed");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_sem_pair_shmsched_try)->MinTime(0.3)->Repetitions(3)->DisplayAggregatesOnly(true);

void BM_sem_pair_boost_try(benchmark::State& state) {
  const CpuPin pin(producer_cpu());
  SharedBoostSem sem(1);
  for (auto _ : state) {
    if (!(*sem).try_wait()) return state.SkipWithError("try_wait on a free semaphore failed");
    (*sem).post();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_sem_pair_boost_try)->MinTime(0.3)->Repetitions(3)->DisplayAggregatesOnly(true);

// ---- 2. contended: two processes, capacity 1 -----------------------------------------------

constexpr std::uint64_t kContendedPairs = 1'000'000;  // per process

// What the two children report, in memory shared with the parent.
struct ContendedBoard {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> failed{0};
  std::atomic<std::uint32_t> finished{0};
  std::atomic<std::int64_t> start_ns[2]{};
  std::atomic<std::int64_t> end_ns[2]{};
  std::atomic<std::uint64_t> pairs[2]{};
};

struct ContendedResult {
  RunResult run;
  // Share of the run both processes were inside their loops: near 0 means one ran its
  // pairs while the other had not started or had finished, i.e. no contention to speak of.
  double overlap = 0;
};

// Forks two children pinned to two CPUs; each runs the loop `set_up(child_index)` returns
// (it counts its pairs, false on a failure). The time runs from the earlier start to the
// later end, so fork and attach are not in it.
template <class SetUp>
ContendedResult run_contended(SetUp&& set_up) {
  SharedBox<ContendedBoard> board;
  Gate gate;
  if (!gate.ok()) return {{0, "pipe failed"}};
  std::vector<Child> children;
  for (int i = 0; i < 2; ++i) {
    children.push_back(Child::spawn([&, i]() -> int {
      gate.child_init();
      const CpuPin pin(i == 0 ? producer_cpu() : consumer_cpu());
      // The child's own handle (a Client names its process), made before the gate so
      // the clock never includes attaching.
      auto body = set_up(i);
      if (!body) {
        board->failed.fetch_add(1);
        return 3;
      }
      board->ready.fetch_add(1);
      gate.wait();
      board->start_ns[i].store(now_ns());
      std::uint64_t done = 0;
      const bool ok = (*body)(done);
      board->end_ns[i].store(now_ns());
      board->pairs[i].store(done);
      if (!ok) board->failed.fetch_add(1);
      board->finished.fetch_add(1);
      return ok ? 0 : 4;
    }));
    if (!children.back().started()) return {{0, "fork failed"}};
  }
  ContendedResult res;
  RunResult& r = res.run;
  if (!wait_until([&] { return board->ready.load() == 2; }, kStartTimeout, &children)) {
    r.error = "children did not start";
  } else {
    gate.open();
    if (!wait_until([&] { return board->finished.load() == 2; }, kRunTimeout, &children))
      r.error = "children did not finish";
  }
  if (!r.error.empty()) return res;  // the Child destructors kill and reap
  reap_children(children, r.error);
  if (board->failed.load() != 0 && r.error.empty()) r.error = "a child's acquire or release failed";
  for (int i = 0; i < 2; ++i)
    if (board->pairs[i].load() != kContendedPairs && r.error.empty()) r.error = "a child did not finish its pairs";
  const std::int64_t t0 = std::min(board->start_ns[0].load(), board->start_ns[1].load());
  const std::int64_t t1 = std::max(board->end_ns[0].load(), board->end_ns[1].load());
  const std::int64_t both0 = std::max(board->start_ns[0].load(), board->start_ns[1].load());
  const std::int64_t both1 = std::min(board->end_ns[0].load(), board->end_ns[1].load());
  r.seconds = static_cast<double>(t1 - t0) * 1e-9;
  res.overlap =
      t1 > t0 ? static_cast<double>(std::max<std::int64_t>(0, both1 - both0)) / static_cast<double>(t1 - t0) : 0;
  return res;
}

template <class Run>
void run_timed_pairs(benchmark::State& state, Run&& run) {
  ContendedResult last;
  for (auto _ : state) {
    last = run();
    if (!last.run.error.empty()) return state.SkipWithError(last.run.error.c_str());
    state.SetIterationTime(last.run.seconds);
  }
  state.counters["overlap"] = last.overlap;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * 2 * kContendedPairs));
}

// The body a child runs: N pairs, counting them in `done`; false on the first failure.
using PairLoop = std::function<bool(std::uint64_t&)>;

ContendedResult run_contended_shmsched() {
  auto seg = Segment::create_private(sem_layout());
  if (!seg) return {{0, seg.error().message()}};
  auto sem = seg->create_semaphore("bench", 1);
  if (!sem) return {{0, sem.error().message()}};
  const SemId s = *sem;
  // Holds each child's Client for the life of its loop (the child's copy of this frame).
  std::optional<Client> client;
  ContendedResult res = run_contended([&](int) -> std::optional<PairLoop> {
    auto c = Client::attach(*seg);
    if (!c) return std::nullopt;
    client.emplace(std::move(c.value()));
    return PairLoop([&, s](std::uint64_t& done) {
      Client& cl = *client;
      for (; done < kContendedPairs; ++done) {
        if (cl.acquire(s, 1, kAcquireTimeout) != Errc::ok) return false;
        if (cl.release(s, 1) != Errc::ok) return false;
      }
      cl.detach();
      return true;
    });
  });
  // Both children detached cleanly; nothing may still be granted.
  if (res.run.error.empty()) {
    for (const SemaphoreInfo& i : seg->semaphores())
      if (i.id == s && i.in_use != 0) res.run.error = "permits still in use after the run";
  }
  return res;
}

ContendedResult run_contended_boost() {
  SharedBoostSem sem(1);
  return run_contended([&](int) -> std::optional<PairLoop> {
    return PairLoop([&](std::uint64_t& done) {
      for (; done < kContendedPairs; ++done) {
        (*sem).wait();
        (*sem).post();
      }
      return true;
    });
  });
}

// Manual time: the clock runs from the first pair to the last, without fork and attach.
void contended_config(benchmark::internal::Benchmark* b) {
  b->UseManualTime()->Iterations(1)->Repetitions(3)->DisplayAggregatesOnly(true)->Unit(benchmark::kMillisecond);
}

void BM_sem_contended_shmsched(benchmark::State& state) {
  run_timed_pairs(state, run_contended_shmsched);
}
void BM_sem_contended_boost(benchmark::State& state) {
  run_timed_pairs(state, run_contended_boost);
}
BENCHMARK(BM_sem_contended_shmsched)->Apply(contended_config);
BENCHMARK(BM_sem_contended_boost)->Apply(contended_config);

}  // namespace
}  // namespace shmsched::bench
