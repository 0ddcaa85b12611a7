// The consumer runtime (shmsched::Consumer) end to end: how many tasks it runs, and how
// soon a task reaches a handler.
//
//   BM_consumer_shmsched_full_path   parent Client::enqueue -> forked child running a
//                                    Consumer with 1 worker and a no-op handler; N tasks
//                                    (--tasks), wall clock from the first enqueue to the
//                                    handler of the last task. `rings` counts the times
//                                    the producer found the worker asleep (queue ran dry)
//   BM_consumer_shmsched_full_path_ahead
//                                    the same with ConsumerOptions::take_ahead = 16
//   BM_consumer_boost_mq_process     the peer: boost::interprocess::message_queue of depth
//                                    1024, blocking send / receive between the same two
//                                    processes, N messages
//   BM_consumer_wake_sleeping        one task at a time to a Consumer whose only worker is
//                                    asleep on its doorbell (spin 1, tick 1 s), one way
//                                    from just before enqueue to the handler's first
//                                    instruction; interleaved sample by sample with its
//                                    peer, a bare FUTEX_WAIT / FUTEX_WAKE ping-pong on
//                                    words in MAP_SHARED memory between two processes
//                                    (futex_half_rtt_*: half the round trip; futex_one_way_*:
//                                    one way, stamped the way the shmsched sample is)
//   BM_consumer_shmsched_wake_busy   one task at a time to a Consumer whose worker spins
//                                    and never sleeps
//   BM_consumer_spin_word            its peer: a process spinning on a shared word, the
//                                    floor any shared-memory hand-off can reach
//
// Tasks and messages are 64 bytes with priorities 0..7 from priority_of, as in
// cross_process_bench.cpp; the segment has the same layout (65536 records, 8 levels) and
// is warmed up the same way. Producer and consumer are pinned to two different CPUs.
//
// Latencies are counters in microseconds (p50_us, p99_us, p999_us, max_us) over the
// samples after a short warm-up; the second table after the run divides them (lower is
// better). A sleeping sample is sent only after a gap of 2 to 2.5 ms and only once the
// consumer's participant slot counts one sleeper, so every sample is a real wake-up from
// the futex (not_asleep counts samples that had to wait for that); the gap is jittered so
// that samples do not lock onto the timer tick. late_samples counts samples slower than a
// quarter of the tick: a lost ring that only the tick timeout recovered would show there.
//
// On a machine shared with other work the throughput pair moves by 2x from one run to
// the next; --benchmark_enable_random_interleaving=true spreads that over both systems.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "shmsched/consumer.hpp"
#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/futex.hpp"
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

// ---- shared plumbing ----------------------------------------------------------------

// Lets a waiting producer notice that its consumer is gone, so it reports an error
// instead of waiting forever on a queue nobody drains.
struct Watch {
  Child* child = nullptr;
  const ConsumerReport* report = nullptr;
  std::int64_t deadline_ns = 0;

  bool consumer_gone() const {
    if (report->failed.load(std::memory_order_acquire) != kConsumerOk) return true;
    if (child->exited()) return true;
    return now_ns() > deadline_ns;
  }
};

void publish(ConsumerReport& rep, std::uint64_t count, std::uint64_t sum, ConsumerError e) {
  rep.end_ns.store(now_ns(), std::memory_order_relaxed);
  rep.count.store(count, std::memory_order_relaxed);
  rep.sum.store(sum, std::memory_order_relaxed);
  if (e != kConsumerOk) rep.failed.store(e, std::memory_order_release);
  // release: pairs with the acquire in wait_for_flag; the fields above are visible.
  rep.done.store(1, std::memory_order_release);
}

std::string start_error(const ConsumerReport& rep) {
  const auto f = static_cast<ConsumerError>(rep.failed.load(std::memory_order_acquire));
  return f != kConsumerOk ? std::string(to_string(f)) : "consumer did not start";
}

// Tells a child consumer process when to stop. Its main thread blocks in read() until
// the parent closes the write end (or dies), so the idle child has no timer of its own
// that could wake the consumer CPU in the middle of a latency sample.
class StopPipe {
 public:
  StopPipe() noexcept {
    if (::pipe2(fds_, O_CLOEXEC) != 0) fds_[0] = fds_[1] = -1;
  }
  StopPipe(const StopPipe&) = delete;
  StopPipe& operator=(const StopPipe&) = delete;
  ~StopPipe() {
    close_end(0);
    close_end(1);
  }
  bool ok() const noexcept { return fds_[0] >= 0; }
  /// In the child: waits until the parent releases it.
  void wait_in_child() noexcept {
    close_end(1);  // else the child's own copy would keep the pipe open
    char c;
    while (::read(fds_[0], &c, 1) < 0 && errno == EINTR) {
    }
  }
  /// In the parent: lets the child go.
  void release() noexcept { close_end(1); }

 private:
  void close_end(int i) noexcept {
    if (fds_[i] >= 0) ::close(fds_[i]);
    fds_[i] = -1;
  }
  int fds_[2] = {-1, -1};
};

// Forks a consumer process that runs a Consumer on `seg` with `opts` (handlers from
// `install`), reports its participant slot and `ready` once started, and stops when
// `stop` is released. The child creates its own Consumer: a Client names its process,
// so no handle of the parent may act in the child.
template <class Install>
Child spawn_consumer(Segment& seg, const ConsumerOptions& opts, StopPipe& stop, ConsumerReport& rep,
                     std::atomic<std::uint32_t>* slot, Install&& install) {
  return Child::spawn([&]() -> int {
    // Pinned before the Consumer starts, so its worker threads inherit the CPU.
    const CpuPin pin(consumer_cpu());
    auto c = Consumer::create(seg, opts);
    if (!c) {
      rep.failed.store(kAttachFailed, std::memory_order_release);
      return 3;
    }
    Consumer& consumer = **c;
    install(consumer);
    consumer.start();
    if (slot != nullptr) slot->store(detail::token_index(consumer.client().token()) - 1, std::memory_order_relaxed);
    rep.ready.store(1, std::memory_order_release);
    stop.wait_in_child();
    consumer.request_stop();
    return consumer.join() ? 0 : 5;
  });
}

// The same layout (bench_layout) and warm-up as cross_process_bench.cpp, so the two
// files' shmsched numbers are comparable.

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
    // Consumer role too, for the warm-up's takes.
    auto c = Client::attach(*seg, Role::producer | Role::consumer);
    if (!c) return c.error().message();
    producer.emplace(std::move(c.value()));
    return warm_up(*producer, q);
  }
};

ConsumerOptions consumer_options(unsigned take_ahead = 1) {
  ConsumerOptions o;
  o.home = {std::string(kQueue)};
  o.workers = 1;
  o.take_ahead = take_ahead;
  return o;
}

// ---- 1. full task path: throughput ----------------------------------------------------

// `rings`: how many times the producer found the consumer asleep and rang its doorbell
// (a futex_wake each), i.e. how often the queue ran dry during the run.
RunResult run_shmsched_full_path(std::uint64_t n, std::uint64_t& rings, unsigned take_ahead) {
  const CpuPin pin(producer_cpu());
  ShmschedRig rig;
  if (auto e = rig.set_up(); !e.empty()) return {0, e};
  StopPipe stop;
  if (!stop.ok()) return {0, "pipe failed"};
  SharedBox<ConsumerReport> rep;
  // The handler's tallies live in the child's copy of this frame; only its one worker
  // touches them. The default spin and tick: this is the runtime as shipped.
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  bool reported = false;
  Child child = spawn_consumer(*rig.seg, consumer_options(take_ahead), stop, *rep, nullptr, [&](Consumer& c) {
    c.on(kType, [&](TaskContext& ctx) -> Outcome {
      Item item;
      if (!payload_to(ctx.task.payload, item)) {
        if (!std::exchange(reported, true)) publish(*rep, count, sum, kBadItem);
        return Outcome::done();
      }
      sum += item.seq;
      if (++count == n && !std::exchange(reported, true)) publish(*rep, count, sum, kConsumerOk);
      return Outcome::done();
    });
  });
  if (!child.started()) return {0, "fork failed"};
  if (!wait_for_flag(rep->ready, &child, kStartTimeout)) return {0, start_error(*rep)};

  Client& c = *rig.producer;
  const std::int64_t t0 = now_ns();
  const Watch watch{&child, &*rep, t0 + std::chrono::nanoseconds(kRunTimeout).count()};
  const std::uint64_t rings0 = detail::futex_wake_calls();
  Item item{};
  TaskOptions o;
  o.queue = rig.q;
  for (std::uint64_t seq = 0; seq < n; ++seq) {
    item.seq = seq;
    o.priority = priority_of(seq);
    Backoff backoff;
    for (std::uint64_t waits = 1;; ++waits) {
      const Errc e = c.enqueue(kType, as_payload(item), o);
      if (e == Errc::ok) break;
      if (!backpressure(e)) return {0, "enqueue: " + std::string(to_string(e))};
      backoff.pause();
      if ((waits & 4095) == 0 && watch.consumer_gone()) return {0, "consumer stopped while the producer waited"};
    }
  }
  rings = detail::futex_wake_calls() - rings0;
  if (!wait_for_flag(rep->done, &child, kRunTimeout)) return {0, "consumer did not finish"};
  RunResult r;
  r.seconds = static_cast<double>(rep->end_ns.load(std::memory_order_relaxed) - t0) * 1e-9;
  r.error = check_report(*rep, n);
  stop.release();
  if (const int rc = child.wait(); rc != 0 && r.error.empty())
    r.error = "consumer process exited with status " + std::to_string(rc);
  return r;
}

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

// Blocking send / receive at depth 1024: boost's intended use, at the depth where it is
// at its best (see cross_process_bench.cpp for why not 65536).
RunResult run_boost_mq(std::uint64_t n) {
  constexpr std::uint32_t kMqDepth = 1024;
  const CpuPin pin(producer_cpu());
  static std::uint32_t serial = 0;
  MqRemover remover{"shmsched_bench_cmq_" + std::to_string(::getpid()) + "_" + std::to_string(++serial)};
  const char* name = remover.name.c_str();
  bip::message_queue::remove(name);
  std::optional<bip::message_queue> mq;
  try {
    mq.emplace(bip::create_only, name, kMqDepth, sizeof(Item));
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
    const std::int64_t deadline = now_ns() + std::chrono::nanoseconds(2 * kRunTimeout).count();
    std::uint64_t count = 0;
    std::uint64_t sum = 0;
    ConsumerError err = kConsumerOk;
    Item item;
    bip::message_queue::size_type got = 0;
    unsigned prio = 0;
    while (count < n && err == kConsumerOk) {
      if (!cq->try_receive(&item, sizeof item, got, prio) &&
          !cq->timed_receive(&item, sizeof item, got, prio, soon())) {
        if (::getppid() != parent) err = kParentGone;
        if (now_ns() > deadline) err = kConsumerTimeout;
        continue;
      }
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
  if (!wait_for_flag(rep->ready, &child, kStartTimeout)) return {0, start_error(*rep)};
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
    while (!mq->timed_send(&item, sizeof item, prio, soon())) {
      if (watch.consumer_gone()) return {0, "consumer stopped while the producer waited"};
    }
  }
  if (!wait_for_flag(rep->done, &child, kRunTimeout)) return {0, "consumer did not finish"};
  RunResult r;
  r.seconds = static_cast<double>(rep->end_ns.load(std::memory_order_relaxed) - t0) * 1e-9;
  r.error = check_report(*rep, n);
  if (const int rc = child.wait(); rc != 0 && r.error.empty())
    r.error = "consumer process exited with status " + std::to_string(rc);
  return r;
}

// Manual time: the clock runs from the first enqueue to the last handler, without the
// fork, the warm-up and the consumer's start-up.
void throughput_config(benchmark::internal::Benchmark* b) {
  b->UseManualTime()->Iterations(1)->Repetitions(5)->DisplayAggregatesOnly(true)->Unit(benchmark::kMillisecond);
}

void BM_consumer_shmsched_full_path(benchmark::State& state) {
  std::uint64_t rings = 0;
  run_timed(state, [&](std::uint64_t n) { return run_shmsched_full_path(n, rings, 1); });
  state.counters["rings"] = static_cast<double>(rings);
}
void BM_consumer_shmsched_full_path_ahead(benchmark::State& state) {
  std::uint64_t rings = 0;
  run_timed(state, [&](std::uint64_t n) { return run_shmsched_full_path(n, rings, Client::kMaxTakeAhead); });
  state.counters["rings"] = static_cast<double>(rings);
}
void BM_consumer_boost_mq_process(benchmark::State& state) {
  run_timed(state, run_boost_mq);
}
BENCHMARK(BM_consumer_shmsched_full_path)->Apply(throughput_config);
BENCHMARK(BM_consumer_shmsched_full_path_ahead)->Apply(throughput_config);
BENCHMARK(BM_consumer_boost_mq_process)->Apply(throughput_config);

// ---- 2. latency -------------------------------------------------------------------------

constexpr std::uint32_t kWarmSamples = 50;  // first touches of the child's page tables
constexpr std::uint32_t kSleepSamples = 2000;
constexpr std::uint32_t kBusySamples = 10000;
constexpr std::uint32_t kMaxSamples = kWarmSamples + kBusySamples;
constexpr auto kSleepTick = std::chrono::milliseconds(1000);
constexpr std::int64_t kLateNs = std::chrono::nanoseconds(kSleepTick).count() / 4;
constexpr std::int64_t kSampleTimeoutNs = 5'000'000'000;  // > the tick: a late wake is counted, not fatal

/// The task of a latency run: same 64 bytes as Item, carrying its send time.
struct Stamp {
  std::uint64_t seq = 0;
  std::int64_t sent_ns = 0;  // CLOCK_MONOTONIC, comparable across processes
  std::byte pad[48]{};
};
static_assert(sizeof(Stamp) == sizeof(Item));

/// What one consumer-side process shares with the driver.
struct LatencyShared {
  ConsumerReport rep;  // ready and failed
  std::atomic<std::uint32_t> slot{0};
  alignas(64) std::atomic<std::uint64_t> recorded{0};  // samples written so far
  // The bare peers' words. The send time shares the bumped word's line: one line moves
  // per hand-off, the least any shared-memory hand-off can do.
  alignas(64) std::atomic<std::uint32_t> word{0};
  std::atomic<std::int64_t> sent_ns{0};
  alignas(64) std::atomic<std::uint32_t> back{0};
  alignas(64) std::int64_t one_way_ns[kMaxSamples]{};
  std::int64_t round_trip_ns[kMaxSamples]{};
};

long sys_futex(std::atomic<std::uint32_t>& word, int op, std::uint32_t val, const timespec* ts) noexcept {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, val, ts, nullptr, 0);
}
// Non-private (no FUTEX_PRIVATE_FLAG): the word is shared between processes, as the
// doorbell is; and the same 1 s timeout the sleeping Consumer uses.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen) noexcept {
  const timespec ts{1, 0};
  sys_futex(word, FUTEX_WAIT, seen, &ts);
}
void futex_wake(std::atomic<std::uint32_t>& word) noexcept {
  sys_futex(word, FUTEX_WAKE, 1, nullptr);
}

// Jittered 2..2.5 ms: long enough for the consumer CPU to go idle, and not a multiple
// of the timer tick.
std::chrono::microseconds sleep_gap(std::uint32_t i) noexcept {
  return std::chrono::microseconds(2000 + (i * 7919u) % 500u);
}
// Jittered 20..30 us between busy samples: the consumer has long gone back to polling.
std::int64_t busy_gap_ns(std::uint32_t i) noexcept {
  return 20'000 + (i * 7919u) % 10'000u;
}

void spin_until(std::int64_t t) noexcept {
  while (now_ns() < t) cpu_relax();
}

struct Percentiles {
  double p50 = 0, p99 = 0, p999 = 0, max = 0;
};

// Nearest-rank percentiles, in microseconds, of the samples after the warm-up.
Percentiles percentiles_us(const std::int64_t* samples, std::uint32_t total, double scale = 1.0) {
  std::vector<std::int64_t> v(samples + kWarmSamples, samples + total);
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const auto k = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    return static_cast<double>(v[std::clamp<std::size_t>(k, 1, v.size()) - 1]) * scale / 1e3;
  };
  return {at(0.50), at(0.99), at(0.999), static_cast<double>(v.back()) * scale / 1e3};
}

void set_counters(benchmark::State& state, const std::string& prefix, const Percentiles& p) {
  state.counters[prefix + "p50_us"] = p.p50;
  state.counters[prefix + "p99_us"] = p.p99;
  state.counters[prefix + "p999_us"] = p.p999;
  state.counters[prefix + "max_us"] = p.max;
}

// Waits until `ok()`, polling every `poll` (0: spinning); false if the child exits, it
// reports a failure, or `timeout_ns` passes.
template <class Ok>
bool wait_until(Ok&& ok, Child& child, const ConsumerReport& rep, std::int64_t timeout_ns,
                std::chrono::microseconds poll) {
  const std::int64_t deadline = now_ns() + timeout_ns;
  for (std::uint64_t i = 0;; ++i) {
    if (ok()) return true;
    if (poll.count() > 0 || (i & 1023) == 0) {
      if (rep.failed.load(std::memory_order_acquire) != kConsumerOk || child.exited() || now_ns() > deadline)
        return ok();
    }
    if (poll.count() > 0) {
      std::this_thread::sleep_for(poll);
    } else {
      cpu_relax();
    }
  }
}

// A Consumer process (1 worker) that the driver sends one task at a time. Sleeping: spin
// 1 (one empty look, then the futex) and a 1 s tick, so a wake-up is never a timeout in
// disguise; busy: the worker polls and never sleeps.
class ConsumerWakeRig {
 public:
  std::uint32_t not_asleep = 0;  // samples held back because the consumer was not asleep yet

  std::string start(LatencyShared& sh, bool sleeping) {
    sh_ = &sh;
    sleeping_ = sleeping;
    if (auto e = rig_.set_up(); !e.empty()) return e;
    if (!stop_.ok()) return "pipe failed";
    ConsumerOptions opts = consumer_options();
    if (sleeping) {
      opts.spin = 1;
      opts.tick = kSleepTick;
    } else {
      opts.spin = std::numeric_limits<unsigned>::max();
    }
    child_.emplace(spawn_consumer(*rig_.seg, opts, stop_, sh.rep, &sh.slot, [&](Consumer& c) {
      c.on(kType, [&sh](TaskContext& ctx) -> Outcome {
        const std::int64_t t = now_ns();  // first: the handler has started
        Stamp s;
        if (!payload_to(ctx.task.payload, s) || s.seq >= kMaxSamples) {
          sh.rep.failed.store(kBadItem, std::memory_order_release);
          return Outcome::done();
        }
        sh.one_way_ns[s.seq] = t - s.sent_ns;
        // release: the sample is visible to the driver that sees the count.
        sh.recorded.store(s.seq + 1, std::memory_order_release);
        return Outcome::done();
      });
    }));
    if (!child_->started()) return "fork failed";
    if (!wait_for_flag(sh.rep.ready, &*child_, kStartTimeout)) return start_error(sh.rep);
    sleepers_ = &detail::core_of(*rig_.seg).participants[sh.slot.load(std::memory_order_relaxed)].sleepers;
    o_.queue = rig_.q;
    return {};
  }

  /// Sends task `i` (after the caller's gap) and waits until its handler has run.
  std::string sample(std::uint32_t i) {
    if (sleeping_) {
      // The announcement comes just before the futex_wait; after the caller's gap the
      // worker is long in the kernel, unless it had not announced at all.
      auto asleep = [&] { return sleepers_->load(std::memory_order_seq_cst) == 1; };
      if (!asleep()) {
        ++not_asleep;
        if (!wait_until(asleep, *child_, sh_->rep, kSampleTimeoutNs, std::chrono::microseconds(100)))
          return "consumer did not go to sleep";
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
    Stamp s;
    s.seq = i;
    o_.priority = priority_of(i);
    s.sent_ns = now_ns();
    if (const Errc e = rig_.producer->enqueue(kType, as_payload(s), o_); e != Errc::ok)
      return "enqueue: " + std::string(to_string(e));
    auto handled = [&] { return sh_->recorded.load(std::memory_order_acquire) > i; };
    // Between sleeping samples the driver sleeps anyway; a busy sample spins.
    if (!wait_until(handled, *child_, sh_->rep, kSampleTimeoutNs, std::chrono::microseconds(sleeping_ ? 100 : 0)))
      return sh_->rep.failed.load() != kConsumerOk ? start_error(sh_->rep) : "consumer did not run a task";
    return {};
  }

  std::string finish() {
    stop_.release();
    if (const int rc = child_->wait(); rc != 0) return "consumer process exited with status " + std::to_string(rc);
    return {};
  }

 private:
  LatencyShared* sh_ = nullptr;
  bool sleeping_ = false;
  ShmschedRig rig_;
  StopPipe stop_;
  std::optional<Child> child_;  // after stop_: a child still running is killed first
  const detail::AtomicU32* sleepers_ = nullptr;
  TaskOptions o_;
};

// The bare peer: a process that answers each bump of `word`. It records the one-way time
// from the send stamp, then bumps `back`. Sleeping: both sides wait in FUTEX_WAIT and
// wake each other with FUTEX_WAKE; spinning: both sides poll.
class BarePeer {
 public:
  std::string start(LatencyShared& sh, bool sleeping, std::uint32_t total) {
    sh_ = &sh;
    sleeping_ = sleeping;
    const pid_t parent = ::getpid();
    child_.emplace(Child::spawn([&]() -> int {
      const CpuPin pin(consumer_cpu());
      sh.rep.ready.store(1, std::memory_order_release);
      std::uint32_t seen = 0;
      for (std::uint32_t i = 0; i < total; ++i) {
        std::uint32_t v;
        // acquire: pairs with the driver's seq_cst bump, so sent_ns is the new one.
        for (std::uint64_t k = 1; (v = sh.word.load(std::memory_order_acquire)) == seen; ++k) {
          if (sleeping) {
            futex_wait(sh.word, seen);
          } else {
            cpu_relax();
          }
          if ((sleeping || (k & 0xFFFFF) == 0) && ::getppid() != parent) return 4;
        }
        const std::int64_t t = now_ns();
        seen = v;
        sh.one_way_ns[i] = t - sh.sent_ns.load(std::memory_order_relaxed);
        sh.back.fetch_add(1, std::memory_order_seq_cst);
        if (sleeping) futex_wake(sh.back);
      }
      return 0;
    }));
    if (!child_->started()) return "fork failed";
    if (!wait_for_flag(sh.rep.ready, &*child_, kStartTimeout)) return "peer did not start";
    return {};
  }

  /// One hand-off and its answer (after the caller's gap).
  std::string sample(std::uint32_t i) {
    LatencyShared& sh = *sh_;
    const std::uint32_t prev = sh.back.load(std::memory_order_relaxed);
    const std::int64_t t0 = now_ns();
    sh.sent_ns.store(t0, std::memory_order_relaxed);
    sh.word.fetch_add(1, std::memory_order_seq_cst);
    if (sleeping_) futex_wake(sh.word);
    const std::int64_t deadline = t0 + kSampleTimeoutNs;
    for (std::uint64_t k = 1; sh.back.load(std::memory_order_acquire) == prev; ++k) {
      if (sleeping_) {
        futex_wait(sh.back, prev);
      } else {
        cpu_relax();
      }
      if ((sleeping_ || (k & 0xFFFF) == 0) && (child_->exited() || now_ns() > deadline)) return "peer did not answer";
    }
    sh.round_trip_ns[i] = now_ns() - t0;
    return {};
  }

  std::string finish() {
    if (const int rc = child_->wait(); rc != 0) return "peer process exited with status " + std::to_string(rc);
    return {};
  }

 private:
  LatencyShared* sh_ = nullptr;
  bool sleeping_ = false;
  std::optional<Child> child_;
};

// Sleeping consumer against the futex ping-pong, one sample of each in turn (which goes
// first alternates), so that load from elsewhere on the machine, which moves wake-up
// times by tens of microseconds from one second to the next, falls on both alike.
std::string run_sleeping_pair(LatencyShared& shm, LatencyShared& peer, std::uint32_t total, ConsumerWakeRig& rig,
                              std::uint64_t& rings) {
  const CpuPin pin(producer_cpu());
  BarePeer bare;
  if (auto e = rig.start(shm, true); !e.empty()) return e;
  if (auto e = bare.start(peer, true, total); !e.empty()) return e;
  std::uint64_t shm_rings = 0;
  for (std::uint32_t i = 0; i < total; ++i) {
    for (int k = 0; k < 2; ++k) {
      std::this_thread::sleep_for(sleep_gap(2 * i + static_cast<std::uint32_t>(k)));
      if ((k == 0) == (i % 2 == 0)) {
        // The producer's futex_wake calls (rings) counted around the shmsched sample only.
        const std::uint64_t r0 = detail::futex_wake_calls();
        if (auto e = rig.sample(i); !e.empty()) return e;
        shm_rings += detail::futex_wake_calls() - r0;
      } else if (auto e = bare.sample(i); !e.empty()) {
        return e;
      }
    }
  }
  rings = shm_rings;
  // The peer first: it was forked after the consumer and holds a copy of the consumer's
  // stop pipe, which must be closed everywhere before the consumer sees it.
  if (auto e = bare.finish(); !e.empty()) return e;
  return rig.finish();
}

void report_shmsched(benchmark::State& state, const LatencyShared& sh, std::uint32_t total) {
  set_counters(state, "", percentiles_us(sh.one_way_ns, total));
  state.counters["late_samples"] = static_cast<double>(
      std::count_if(sh.one_way_ns + kWarmSamples, sh.one_way_ns + total, [](std::int64_t v) { return v > kLateNs; }));
  state.counters["samples"] = total - kWarmSamples;
}

void BM_consumer_wake_sleeping(benchmark::State& state) {
  const std::uint32_t total = kWarmSamples + kSleepSamples;
  for (auto _ : state) {
    SharedBox<LatencyShared> shm;
    SharedBox<LatencyShared> peer;
    ConsumerWakeRig rig;
    std::uint64_t rings = 0;
    if (const std::string e = run_sleeping_pair(*shm, *peer, total, rig, rings); !e.empty()) {
      state.SkipWithError(e.c_str());
      break;
    }
    report_shmsched(state, *shm, total);
    state.counters["rings_per_task"] = static_cast<double>(rings) / total;
    state.counters["not_asleep"] = rig.not_asleep;
    set_counters(state, "futex_half_rtt_", percentiles_us(peer->round_trip_ns, total, 0.5));
    set_counters(state, "futex_one_way_", percentiles_us(peer->one_way_ns, total));
  }
}

void BM_consumer_shmsched_wake_busy(benchmark::State& state) {
  const std::uint32_t total = kWarmSamples + kBusySamples;
  for (auto _ : state) {
    SharedBox<LatencyShared> sh;
    std::string e;
    {
      const CpuPin pin(producer_cpu());
      ConsumerWakeRig rig;
      e = rig.start(*sh, false);
      std::int64_t next = now_ns();
      for (std::uint32_t i = 0; i < total && e.empty(); ++i) {
        spin_until(next);
        e = rig.sample(i);
        next = now_ns() + busy_gap_ns(i);
      }
      if (e.empty()) e = rig.finish();
    }
    if (!e.empty()) {
      state.SkipWithError(e.c_str());
      break;
    }
    report_shmsched(state, *sh, total);
  }
}

// The floor under the busy numbers: a process spinning on a shared word (no futex).
void BM_consumer_spin_word(benchmark::State& state) {
  const std::uint32_t total = kWarmSamples + kBusySamples;
  for (auto _ : state) {
    SharedBox<LatencyShared> sh;
    std::string e;
    {
      const CpuPin pin(producer_cpu());
      BarePeer bare;
      e = bare.start(*sh, false, total);
      std::int64_t next = now_ns();
      for (std::uint32_t i = 0; i < total && e.empty(); ++i) {
        spin_until(next);
        e = bare.sample(i);
        next = now_ns() + busy_gap_ns(i);
      }
      if (e.empty()) e = bare.finish();
    }
    if (!e.empty()) {
      state.SkipWithError(e.c_str());
      break;
    }
    set_counters(state, "", percentiles_us(sh->one_way_ns, total));
    state.counters["samples"] = total - kWarmSamples;
  }
}

// Start lateness of a delayed task under a saturated consumer: one worker runs 20 ms
// handlers back to back while a priority-0 task delayed by 30 ms is enqueued, one at a
// time; lateness = its start - its due time. The housekeeper promotes it on time, so
// it waits at most for the handler that is running (goal: p99 <= one task + 5 ms).
void BM_consumer_delayed_start_lateness(benchmark::State& state) {
  static constexpr std::int64_t kTaskNs = 20'000'000, kDelayNs = 30'000'000;
  constexpr std::uint32_t kSamples = 40, kWarm = 2;
  const std::uint32_t total = kWarm + kSamples;
  for (auto _ : state) {
    Layout l;
    l.task_capacity = 4096;
    auto seg = Segment::create_private(l, CreateOptions{0600, {"general"}});
    if (!seg) {
      state.SkipWithError(seg.error().message().c_str());
      break;
    }
    auto producer = Client::attach(*seg).value();
    ConsumerOptions co;
    co.home = {"general"};
    co.workers = 1;
    auto consumer = Consumer::create(*seg, co).value();
    std::vector<std::int64_t> late(total, 0);
    std::atomic<std::uint32_t> started{0};
    consumer->on("work", [](TaskContext&) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(kTaskNs));
      return Outcome::done();
    });
    consumer->on("due", [&](TaskContext& ctx) {
      std::int64_t due = 0;
      std::memcpy(&due, ctx.task.payload.data(), sizeof due);
      const std::uint32_t i = started.load(std::memory_order_relaxed);
      if (i < total) late[i] = now_ns() - due;
      started.store(i + 1, std::memory_order_release);
      return Outcome::done();
    });
    TaskOptions busy;
    busy.queue = seg->find_queue("general").value();
    busy.priority = 3;
    TaskOptions urgent = busy;
    urgent.priority = 0;
    for (int i = 0; i < 4; ++i) (void)producer.enqueue_text("work", "", busy);
    consumer->start();
    for (std::uint32_t i = 0; i < total; ++i) {
      for (LevelStats ls = producer.level_stats(busy.queue.id(), 3); ls.enqueued - ls.started < 4;
           ls = producer.level_stats(busy.queue.id(), 3))
        (void)producer.enqueue_text("work", "", busy);
      std::this_thread::sleep_for(std::chrono::milliseconds(7 + (i * 13) % 11));  // land anywhere in a task
      const std::int64_t due = now_ns() + kDelayNs;
      urgent.not_before_ns = due;
      (void)producer.enqueue_value("due", due, urgent);
      while (started.load(std::memory_order_acquire) <= i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    consumer->request_stop();
    consumer->join();
    std::sort(late.begin() + kWarm, late.end());
    const auto rank = [&](double q) {
      const auto k = static_cast<std::size_t>(std::ceil(q * kSamples));
      return static_cast<double>(late[kWarm + std::clamp<std::size_t>(k, 1, kSamples) - 1]) / 1e3;
    };
    state.counters["p50_us"] = rank(0.50);
    state.counters["p99_us"] = rank(0.99);
    state.counters["task_us"] = static_cast<double>(kTaskNs) / 1e3;
    state.counters["samples"] = kSamples;
  }
}
BENCHMARK(BM_consumer_delayed_start_lateness)
    ->UseRealTime()
    ->Iterations(1)
    ->Repetitions(1)
    ->Unit(benchmark::kMillisecond);

// One run each: the samples are the repetitions.
void latency_config(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_consumer_wake_sleeping)->Apply(latency_config);
BENCHMARK(BM_consumer_shmsched_wake_busy)->Apply(latency_config);
BENCHMARK(BM_consumer_spin_word)->Apply(latency_config);

// ---- ratios -------------------------------------------------------------------------

const RatioDecl r1("4. consumer runtime: one producer -> one Consumer process",
                   "shmsched Consumer full path / boost mq (1024, blocking)", "BM_consumer_shmsched_full_path",
                   "BM_consumer_boost_mq_process");
const RatioDecl r1a("4. consumer runtime: one producer -> one Consumer process",
                    "shmsched Consumer full path, take-ahead 16 / boost mq (1024, blocking)",
                    "BM_consumer_shmsched_full_path_ahead", "BM_consumer_boost_mq_process");
const RatioDecl r2("4. consumer runtime: one producer -> one Consumer process",
                   "Consumer full path / raw Client process single (runtime cost)", "BM_consumer_shmsched_full_path",
                   "BM_cross_shmsched_process_single");

const CounterRatioDecl l1("5. wake-up latency, one way", "shmsched sleeping p50 / futex half round trip p50",
                          "BM_consumer_wake_sleeping", "p50_us", "BM_consumer_wake_sleeping", "futex_half_rtt_p50_us");
const CounterRatioDecl l2("5. wake-up latency, one way", "shmsched sleeping p99 / futex half round trip p99",
                          "BM_consumer_wake_sleeping", "p99_us", "BM_consumer_wake_sleeping", "futex_half_rtt_p99_us");
const CounterRatioDecl l3("5. wake-up latency, one way", "shmsched sleeping p50 / futex one-way p50",
                          "BM_consumer_wake_sleeping", "p50_us", "BM_consumer_wake_sleeping", "futex_one_way_p50_us");
const CounterRatioDecl l4("5. wake-up latency, one way", "shmsched sleeping p99 / futex one-way p99",
                          "BM_consumer_wake_sleeping", "p99_us", "BM_consumer_wake_sleeping", "futex_one_way_p99_us");
const CounterRatioDecl l5("5. wake-up latency, one way", "shmsched busy p50 / shared spin word p50",
                          "BM_consumer_shmsched_wake_busy", "p50_us", "BM_consumer_spin_word", "p50_us");
const CounterRatioDecl d1("5. wake-up latency, one way",
                          "delayed task start lateness p99 under a saturated consumer / running task length",
                          "BM_consumer_delayed_start_lateness", "p99_us", "BM_consumer_delayed_start_lateness",
                          "task_us");
const CounterRatioDecl l6("5. wake-up latency, one way", "shmsched busy p99 / shared spin word p99",
                          "BM_consumer_shmsched_wake_busy", "p99_us", "BM_consumer_spin_word", "p99_us");

}  // namespace
}  // namespace shmsched::bench
