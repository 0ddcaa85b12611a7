// The cross-process runs every driver shares: a run forks its consumer processes, then its
// producer processes, starts them together, waits until the consumers have handled every
// task, stops everyone and checks the count and checksum. A "system" plugs into it with a
// prepare() in the driver, a consume() in each consumer process and a Sender in each
// producer process. The systems here are shmsched's Consumer runtime (ShmschedSys),
// shmsched's engine called directly (EngineSys) and Boost.Interprocess message_queue
// (BoostSys, the one Boost driver of the suite); shmsched_throughput adds Redis.
//
// Fairness rules (bench_support.hpp, across processes):
//  * every system moves the same payload struct by value; every consumer copies it out and
//    adds its sequence number to a checksum the driver verifies, as well as the count;
//  * set-up is untimed: creating and warming the shmsched segment (every record and ring
//    slot of the queue touched once, then mapped into each child's page tables), opening
//    queues, forking. The clock runs from the earliest first send of any producer to the
//    handling of the task that brings the count to N;
//  * completion is counted the same way for every system: with one consumer it publishes
//    its count with a store on a line of its own, with several each adds to one shared
//    counter;
//  * producer i and consumer i are pinned to CPUs 2i and 2i+1 of this process's CPUs (mod
//    their number), so on 2 cores every producer shares one core and every consumer the
//    other.
//
// Shared memory: every named object is created by the driver and its name removed at once
// (ShmName); the children use the creator's mapping, inherited across fork. Children die
// with the driver (Child).
#pragma once

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.hpp"
#include "scenario_support.hpp"
#include "shmsched/consumer.hpp"
#include "shmsched/detail/core_access.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench::run {

namespace bip = boost::interprocess;

inline constexpr std::string_view kType = "bench";
inline constexpr std::string_view kQueue = "bench";
inline constexpr unsigned kLevels = 8;
inline constexpr unsigned kMaxProcs = 8;           // producers (and consumers) per run at most
inline constexpr std::uint32_t kMqDepth = 1024;    // boost: where its O(depth) insert is at its best
inline constexpr std::uint32_t kWarmSamples = 50;  // latency: first samples touch fresh pages; dropped
inline constexpr std::uint32_t kMaxLatencySamples = 20000;
inline constexpr std::uint32_t kMaxSamples = kWarmSamples + kMaxLatencySamples;
inline constexpr auto kStartTimeout = std::chrono::milliseconds(10000);  // one child getting ready
inline constexpr auto kExitTimeout = std::chrono::milliseconds(10000);   // children leaving after a run
inline constexpr auto kSampleTimeout = std::chrono::milliseconds(5000);  // one latency sample
inline constexpr auto kPoll = std::chrono::milliseconds(2);              // the driver's polling period

inline std::int64_t to_ns(std::chrono::nanoseconds d) noexcept {
  return d.count();
}

/// Bound on one run from the start signal to the last handler: the suite's kRunTimeout, plus
/// 10 us a task (a floor of 100k tasks/s), so that a large --tasks is not cut short.
inline std::chrono::milliseconds run_bound(std::uint64_t tasks) noexcept {
  return kRunTimeout + std::chrono::milliseconds(tasks / 100);
}

/// What every system moves: the sequence number (checksummed), the send time (latency runs
/// only; steady_clock is CLOCK_MONOTONIC, one clock for every process), and padding to N.
template <std::size_t N>
struct Payload {
  static_assert(N >= 16 && N % 8 == 0);
  std::uint64_t seq = 0;
  std::int64_t sent_ns = 0;
  std::byte pad[N - 16]{};
};
static_assert(sizeof(Payload<64>) == sizeof(Item), "the 64-byte payload is the suite's Item size");
static_assert(sizeof(Payload<256>) == 256);

template <class F>
class ScopeExit {
 public:
  explicit ScopeExit(F f) : f_(std::move(f)) {}
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;
  ~ScopeExit() { f_(); }

 private:
  F f_;
};

// ---- CPUs --------------------------------------------------------------------------

enum class Side { producer, consumer };

/// Producer i on CPU 2i, consumer i on CPU 2i+1 of the CPUs this process may use (mod their
/// number): for i = 0 the suite's producer_cpu() / consumer_cpu(). -1 (no pinning) with
/// fewer than two CPUs.
inline int cpu_for(Side side, unsigned index) {
  static const std::vector<int> cpus = [] {
    std::vector<int> v;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &set)) v.push_back(c);
      }
    }
    return v;
  }();
  if (cpus.size() < 2) return -1;
  return cpus[(2 * index + (side == Side::consumer ? 1 : 0)) % cpus.size()];
}

// ---- what the driver and its children share -------------------------------------------

enum class Mode { throughput, busy, sleeping };

struct Plan {
  Mode mode = Mode::throughput;
  unsigned producers = 1;
  unsigned consumers = 1;
  std::uint64_t tasks = 0;  // latency runs: warm-up samples included
  std::uint32_t warm = 0;   // latency runs: leading samples left out of the histogram
};

inline constexpr std::size_t kWhyLen = 112;

struct alignas(64) ProducerSlot {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> failed{0};      // non-zero: `why` says how
  std::atomic<std::int64_t> start_ns{0};     // steady clock just before its first send; 0 = none
  std::atomic<std::uint64_t> not_asleep{0};  // sleeping latency: samples that had to wait for sleep
  char why[kWhyLen]{};
};

/// Anonymous MAP_SHARED memory (SharedBox) between the driver and every child of one run.
/// The padding is the point: the words written during the timed part (handled, done) sit on
/// lines of their own, away from those the children only read.
// NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding)
struct RunShared {
  pid_t parent = 0;                                   // written before the first fork, only read after it
  alignas(64) std::atomic<std::uint32_t> go{0};       // producers start
  alignas(64) std::atomic<std::uint32_t> stop{0};     // futex word: consumers leave
  std::atomic<std::uint32_t> abort{0};                // the driver gave up on the run
  std::atomic<std::uint32_t> shm_slot{0};             // shmsched: the consumer's participant slot
  alignas(64) std::atomic<std::uint64_t> handled{0};  // tasks whose handler ran, all consumers
  alignas(64) std::atomic<std::uint32_t> done{0};     // handled reached the plan's tasks
  std::atomic<std::int64_t> end_ns{0};                // steady clock when it did
  ProducerSlot producers[kMaxProcs];
  ConsumerReport consumers[kMaxProcs];  // ready, failed, count, sum
  char consumer_why[kMaxProcs][kWhyLen]{};
  alignas(64) std::int64_t one_way_ns[kMaxSamples]{};  // latency: by sequence number
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::int64_t>::is_always_lock_free,
              "atomics shared between processes must be lock-free");
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "the stop word is a futex word");

/// Records the first failure of a child: the message, then the code (release, so a reader
/// that acquires the code reads a complete message).
inline void set_failure(std::atomic<std::uint32_t>& failed, char (&why)[kWhyLen], std::uint32_t code,
                        std::string_view msg) noexcept {
  // relaxed: only this process writes its slot; this keeps its first failure. (Two threads of
  // one process failing at the same instant -- a handler, and the main thread finding the
  // driver gone -- could mix their messages; the code stays valid either way.)
  if (failed.load(std::memory_order_relaxed) != 0) return;
  const std::size_t len = std::min(msg.size(), kWhyLen - 1);
  std::memcpy(why, msg.data(), len);
  why[len] = '\0';
  failed.store(code, std::memory_order_release);
}

inline void stop_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen,
                      std::chrono::milliseconds timeout) noexcept {
  const timespec ts{static_cast<time_t>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000) * 1000000};
  // Not FUTEX_PRIVATE: the word is shared between processes.
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}
inline void stop_wake(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

/// Tells every child of the run to leave: waiting producers give up, consumers stop.
inline void request_abort(RunShared& sh) noexcept {
  // relaxed: abort carries no data; consumers read it after acquiring stop, below.
  sh.abort.store(1, std::memory_order_relaxed);
  // release: a consumer that acquires stop also sees abort.
  sh.stop.store(1, std::memory_order_release);
  stop_wake(sh.stop);
}

/// Lets a waiting producer notice that the run is over for it: the driver gave up or died,
/// or the run overran its bound.
class Watchdog {
 public:
  Watchdog(const RunShared& sh, std::chrono::milliseconds bound) : sh_(sh), deadline_ns_(now_ns() + to_ns(bound)) {}
  bool quit() const noexcept {
    // relaxed: a request to give up; nothing is read on its account.
    return sh_.abort.load(std::memory_order_relaxed) != 0 || ::getppid() != sh_.parent || now_ns() > deadline_ns_;
  }

 private:
  const RunShared& sh_;
  std::int64_t deadline_ns_;
};

/// A consumer process's side of the run: accounts each delivered payload (count, checksum,
/// latency sample, the shared completion count) and reports readiness and failures.
template <class P>
class Tally {
 public:
  Tally(RunShared& sh, unsigned index, const Plan& plan)
      : sh_(sh),
        rep_(sh.consumers[index]),
        why_(sh.consumer_why[index]),
        n_(plan.tasks),
        single_(plan.consumers == 1),
        stamp_(plan.mode != Mode::throughput),
        deadline_ns_(now_ns() + to_ns(2 * run_bound(plan.tasks))) {}  // a safety net: the driver stops it first

  /// One payload has been received (or its handler entered): counted and checksummed
  /// here, announced to the driver by publish(). False when it is malformed.
  bool take(const void* data, std::size_t size) {
    // First, before anything else the handler does: this is when the task reached it.
    const std::int64_t t = stamp_ ? now_ns() : 0;
    if (size != sizeof(P)) {
      fail(kBadItem, "received " + std::to_string(size) + " bytes, expected " + std::to_string(sizeof(P)));
      return false;
    }
    P p;
    std::memcpy(&p, data, sizeof p);
    if (stamp_) {
      if (p.seq >= kMaxSamples) {
        fail(kBadItem, "sequence number out of range");
        return false;
      }
      sh_.one_way_ns[p.seq] = t - p.sent_ns;
    }
    sum_ += p.seq;
    ++count_;
    return true;
  }

  /// Announces the payloads taken since the last call; the one that completes the run
  /// stamps its end.
  void publish() {
    const std::uint64_t k = count_ - published_;
    if (k == 0) return;
    published_ = count_;
    // relaxed: published by the release below.
    rep_.count.store(count_, std::memory_order_relaxed);
    rep_.sum.store(sum_, std::memory_order_relaxed);
    std::uint64_t total;
    if (single_) {
      // release: publishes this consumer's count, sum and samples to the driver. The only
      // writer, so a store on a line of its own, not a locked add.
      sh_.handled.store(count_, std::memory_order_release);
      total = count_;
    } else {
      // acq_rel: release publishes this consumer's count, sum and samples to whoever reads
      // a later total; acquire lets the consumer that completes the run pass every other
      // consumer's on (the fetch_adds form one release sequence) through `done`.
      total = sh_.handled.fetch_add(k, std::memory_order_acq_rel) + k;
    }
    if (total == n_) {
      // relaxed: published by the release store of done.
      sh_.end_ns.store(now_ns(), std::memory_order_relaxed);
      // release: pairs with the driver's acquire; everything above is visible to it.
      sh_.done.store(1, std::memory_order_release);
    }
  }

  /// take() and publish() of one payload.
  bool item(const void* data, std::size_t size) {
    if (!take(data, size)) return false;
    publish();
    return true;
  }

  void ready() noexcept {
    // release: pairs with wait_for_flag's acquire; what the consumer set up is visible.
    rep_.ready.store(1, std::memory_order_release);
  }
  void fail(ConsumerError e, std::string_view why) noexcept { set_failure(rep_.failed, why_, e, why); }
  void set_shm_slot(std::uint32_t slot) noexcept {
    // relaxed: published by the release store of ready that follows.
    sh_.shm_slot.store(slot, std::memory_order_relaxed);
  }
  bool stop_requested() const noexcept {
    // acquire: pairs with the driver's release store; abort, if set, is visible.
    return sh_.stop.load(std::memory_order_acquire) != 0;
  }
  /// True when this consumer must give up: the driver aborted, died (then this is a
  /// failure), or the run overran (a failure too).
  bool must_quit() noexcept {
    // relaxed: read after stop was acquired, or as a plain request.
    if (sh_.abort.load(std::memory_order_relaxed) != 0) return true;
    if (::getppid() != sh_.parent) {
      fail(kParentGone, to_string(kParentGone));
      return true;
    }
    if (now_ns() > deadline_ns_) {
      fail(kConsumerTimeout, to_string(kConsumerTimeout));
      return true;
    }
    return false;
  }
  /// Blocks (on the stop futex, no polling) until the driver says stop, or gives up.
  void wait_stop() noexcept {
    while (!stop_requested()) {
      stop_wait(sh_.stop, 0, std::chrono::milliseconds(1000));
      if (must_quit()) return;
    }
  }

 private:
  RunShared& sh_;
  ConsumerReport& rep_;
  char (&why_)[kWhyLen];
  std::uint64_t n_;
  bool single_;
  bool stamp_;
  std::int64_t deadline_ns_;
  std::uint64_t count_ = 0;  // only the one handling thread of the process touches these
  std::uint64_t sum_ = 0;
  std::uint64_t published_ = 0;
};

// ---- shmsched ------------------------------------------------------------------------

inline bool backpressure(Errc e) noexcept {
  return e == Errc::table_full || e == Errc::ring_full;
}

// Fills the table at each level in turn and drains it: every record, the free list and the
// queue's ring of every level are written once before any clock starts.
inline std::string warm_up(Client& c, QueueId q, std::size_t payload_bytes) {
  const std::vector<std::byte> payload(payload_bytes);
  TaskOptions o;
  o.queue = q;
  Taken t;
  for (std::uint32_t level = 0; level < c.segment().layout().levels; ++level) {
    o.priority = static_cast<std::uint8_t>(level);
    std::uint32_t queued = 0;
    for (;; ++queued) {
      const Errc e = c.enqueue(kType, payload, o);
      if (backpressure(e)) break;
      if (e != Errc::ok) return "warm-up enqueue: " + std::string(to_string(e));
    }
    for (std::uint32_t i = 0; i < queued; ++i) {
      if (!c.try_take(q, t) || c.complete(t) != Errc::ok) return "warm-up take failed";
    }
  }
  return {};
}

// Maps the segment's busy part -- header, task records, the rings of the queue -- into this
// process's page tables, so that the first touch of each page (a minor fault per 4 KiB,
// ~5,000 of them per process) happens in set-up, not in the timed run. Boost's queue is a
// few pages and needs nothing of the kind. The pages exist already (the warm-up wrote them);
// the rings of the other queues are holes and stay so (a queue id is a hash slot, so they
// may lie on either side of this queue's).
inline void prefault(Segment& seg, QueueId q) noexcept {
  const detail::Core& core = detail::core_of(seg);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto populate = [&](const void* from, const void* to) {
    auto* begin = static_cast<std::byte*>(const_cast<void*>(from));
    const auto* end = static_cast<const std::byte*>(to);
    if (end <= begin || begin < core.base || end > core.base + seg.size_bytes()) return;  // only an optimisation
    begin = core.base + (begin - core.base) / page * page;
    const std::size_t len = (static_cast<std::size_t>(end - begin) + page - 1) / page * page;
    if (::madvise(begin, len, MADV_POPULATE_WRITE) == 0) return;
    // Kernels before 5.14: a read maps each page as well.
    for (std::size_t off = 0; off < len; off += page) (void)*static_cast<const volatile std::byte*>(begin + off);
  };
  const std::uint64_t ring_slots = std::uint64_t{core.levels} * core.ring_capacity;
  populate(core.base, core.ring_slots);  // header, records, type and queue tables, ring headers
  populate(core.ring_slots + q * ring_slots, core.ring_slots + (q + 1) * ring_slots);
}

/// How a shmsched run moves its tasks: through the Consumer runtime (the full path: a
/// worker thread runs a handler per task and acks it), or through the engine's calls made
/// by the consumer process itself -- single calls with the tasks spread over the eight
/// priorities, single calls with every task at priority 0 (the work a queue without
/// priorities does), or batches of kBatch (enqueue_batch, try_take_batch, complete_batch).
enum class Path { consumer, single, single_level0, batch };

template <class P>
class ShmschedSys {
 public:
  // The producer can see whether the consumer's worker sleeps (sleeping latency runs).
  static constexpr bool kDoorbell = true;
  ShmschedSys(std::string name, Path path) : name_(std::move(name)), path_(path) {}

  nlohmann::json describe() const { return {{"depth", kDepth}, {"levels", kLevels}}; }

  // Creates the segment and removes its name at once; the children use this mapping,
  // inherited across fork.
  std::string prepare(const Plan&) {
    ShmName name("/" + Segment::object_name(name_), [n = name_] { (void)Segment::destroy(n); });
    Layout l;
    l.levels = kLevels;
    l.task_capacity = kDepth;
    l.payload_bytes = sizeof(P);
    CreateOptions co;
    co.queues = {std::string(kQueue)};
    auto s = Segment::create(name_, l, co);
    if (!s) return "create segment: " + s.error().message();
    seg_.emplace(std::move(s.value()));
    name.release();
    auto q = seg_->find_queue(kQueue);
    if (!q) return "find queue: " + q.error().message();
    q_ = q.value();
    // Detached again at the end of this scope: the driver is no participant of the run.
    auto c = Client::attach(*seg_, Role::producer | Role::consumer);
    if (!c) return "attach: " + c.error().message();
    return warm_up(c.value(), q_, sizeof(P));
  }
  void after_done(unsigned /*consumers*/) {}  // consumers wait on the stop word

  int consume(Tally<P>& tally, const Plan& plan) {
    prefault(*seg_, q_);
    return path_ == Path::consumer ? run_consumer(tally, plan) : run_engine(tally);
  }

  class Sender {
   public:
    std::string open(ShmschedSys& sys) {
      seg_ = &*sys.seg_;
      path_ = sys.path_;
      prefault(*seg_, sys.q_);
      auto c = Client::attach(*seg_, Role::producer);
      if (!c) return "attach: " + c.error().message();
      client_.emplace(std::move(c.value()));
      for (std::size_t i = 0; i < kBatch; ++i) {
        specs_[i].type = kType;
        specs_[i].payload = as_payload(items_[i]);
        specs_[i].options.queue = sys.q_;
      }
      return {};
    }
    bool send(const P& p, std::uint8_t level, const Watchdog& wd) {
      const std::uint8_t prio = path_ == Path::single_level0 ? std::uint8_t{0} : level;
      if (path_ == Path::batch) {
        items_[pending_] = p;
        specs_[pending_].options.priority = prio;
        return ++pending_ < kBatch || flush(wd);
      }
      specs_[0].options.priority = prio;
      return retry(wd, [&](Errc& e) {
        e = client_->enqueue(kType, as_payload(p), specs_[0].options);
        return e == Errc::ok;
      });
    }
    bool flush(const Watchdog& wd) {
      std::size_t done = 0;
      const bool ok = retry(wd, [&](Errc& e) {
        done += client_->enqueue_batch(std::span<const TaskSpec>(specs_.data() + done, pending_ - done),
                                       std::span<TaskId>(ids_.data(), pending_ - done), &e);
        return done == pending_;
      });
      pending_ = 0;
      return ok;
    }
    /// Whether the consumer's worker has announced that it sleeps on its doorbell.
    bool peer_asleep(const RunShared& sh) const noexcept {
      // relaxed: published before the consumer's ready flag, which the driver acquired
      // before this process was forked.
      const std::uint32_t slot = sh.shm_slot.load(std::memory_order_relaxed);
      if (slot >= seg_->layout().max_participants) return true;
      // seq_cst: the order the library's sleep announcement and wake check use.
      return detail::core_of(*seg_).participants[slot].sleepers.load(std::memory_order_seq_cst) != 0;
    }
    const std::string& error() const noexcept { return error_; }

   private:
    // Calls `attempt` until it succeeds, backing off while the queue is full.
    template <class Attempt>
    bool retry(const Watchdog& wd, Attempt&& attempt) {
      Backoff backoff;
      for (std::uint64_t waits = 1;; ++waits) {
        Errc e = Errc::ok;
        if (attempt(e)) return true;
        if (!backpressure(e)) {
          error_ = "enqueue: " + std::string(to_string(e));
          return false;
        }
        backoff.pause();
        if ((waits & 4095) == 0 && wd.quit()) {
          error_ = "gave up waiting for room in the queue";
          return false;
        }
      }
    }

    Segment* seg_ = nullptr;
    Path path_ = Path::consumer;
    std::optional<Client> client_;
    std::array<P, kBatch> items_{};
    std::array<TaskSpec, kBatch> specs_;
    std::array<TaskId, kBatch> ids_{};
    std::size_t pending_ = 0;
    std::string error_;
  };

 private:
  // A Consumer with one worker, as shipped (default spin and tick), except in busy
  // latency runs: the default spin (256 empty looks, about 20 us on the 2-core reference
  // machine) is shorter than the gap between two tasks there, so the worker would sleep
  // before about half of them and the run would measure wake-ups. A worker that never
  // sleeps is what "the consumer is awake" means.
  int run_consumer(Tally<P>& tally, const Plan& plan) {
    ConsumerOptions o;
    o.home = {std::string(kQueue)};
    o.workers = 1;
    if (plan.mode == Mode::busy) o.spin = std::numeric_limits<unsigned>::max();
    auto c = Consumer::create(*seg_, std::move(o));
    if (!c) {
      tally.fail(kAttachFailed, c.error().message());
      return 3;
    }
    Consumer& consumer = *c.value();
    consumer.on(kType, [&tally](TaskContext& ctx) {
      tally.item(ctx.task.payload.data(), ctx.task.payload.size());
      return Outcome::done();
    });
    consumer.start();
    tally.set_shm_slot(detail::token_index(consumer.client().token()) - 1);
    tally.ready();
    tally.wait_stop();
    consumer.request_stop();
    return consumer.join() ? 0 : 5;
  }

  // The engine's calls in the consumer process's own thread, polling with the suite's
  // back-off while the queue is empty.
  int run_engine(Tally<P>& tally) {
    auto c = Client::attach(*seg_, Role::consumer);
    if (!c) {
      tally.fail(kAttachFailed, c.error().message());
      return 3;
    }
    tally.set_shm_slot(~0u);  // no worker sleeps on a doorbell
    tally.ready();
    std::array<Taken, kBatch> ts;
    const std::size_t want = path_ == Path::batch ? kBatch : 1;
    Backoff backoff;
    for (std::uint64_t idle = 1; !tally.stop_requested();) {
      const std::size_t m = want == 1 ? std::size_t{c->try_take(q_, ts[0])} : c->try_take_batch(q_, ts);
      if (m == 0) {
        backoff.pause();
        if ((++idle & 4095) == 0 && tally.must_quit()) return 4;
        continue;
      }
      backoff.reset();
      for (std::size_t i = 0; i < m; ++i)
        if (!tally.take(ts[i].payload.data(), ts[i].payload.size())) return 4;
      const bool completed =
          want == 1 ? c->complete(ts[0]) == Errc::ok : c->complete_batch(std::span<const Taken>(ts.data(), m)) == m;
      if (!completed) {
        tally.fail(kCompleteFailed, to_string(kCompleteFailed));
        return 4;
      }
      tally.publish();
    }
    return 0;
  }

  std::string name_;
  Path path_;
  std::optional<Segment> seg_;
  QueueId q_ = 0;
};

// ---- boost::interprocess::message_queue -------------------------------------------------

// A bounded blocking wait: a peer that died must not strand the other side.
inline boost::posix_time::ptime soon() {
  return boost::posix_time::microsec_clock::universal_time() + boost::posix_time::milliseconds(100);
}

template <class P>
class BoostSys {
 public:
  static constexpr bool kDoorbell = false;
  explicit BoostSys(std::string name) : name_(std::move(name)) {}

  nlohmann::json describe() const { return {{"depth", kMqDepth}}; }

  // Creates the queue and removes its name at once (see "Shared memory" above); the
  // children use this mapping, inherited across fork (every address in it stays valid).
  std::string prepare(const Plan&) {
    ShmName name("/" + name_, [n = name_] { bip::message_queue::remove(n.c_str()); });
    try {
      mq_.emplace(bip::create_only, name_.c_str(), kMqDepth, sizeof(P));
    } catch (const bip::interprocess_exception& e) {
      return std::string("message_queue: ") + e.what();
    }
    name.release();
    return {};
  }
  // One empty message per consumer tells it to leave at once (every task has been handled
  // by now, so the queue holds nothing else); a consumer that misses one sees `stop` within
  // its 100 ms receive timeout.
  void after_done(unsigned consumers) {
    const char none = 0;
    try {
      for (unsigned i = 0; i < consumers; ++i) (void)mq_->timed_send(&none, 0, 0, soon());
    } catch (const bip::interprocess_exception&) {
    }
  }

  int consume(Tally<P>& tally, const Plan&) {
    bip::message_queue* mq = &*mq_;
    tally.ready();
    P buf;
    bip::message_queue::size_type got = 0;
    unsigned prio = 0;
    try {
      for (;;) {
        if (!mq->try_receive(&buf, sizeof buf, got, prio) && !mq->timed_receive(&buf, sizeof buf, got, prio, soon())) {
          if (tally.stop_requested()) return 0;
          if (tally.must_quit()) return 4;
          continue;
        }
        if (got == 0) return 0;  // the driver's stop message
        if (!tally.item(&buf, got)) return 4;
      }
    } catch (const bip::interprocess_exception& e) {
      tally.fail(kCompleteFailed, std::string("receive: ") + e.what());
      return 4;
    }
  }

  class Sender {
   public:
    std::string open(BoostSys& sys) {
      mq_ = &*sys.mq_;
      return {};
    }
    bool send(const P& p, std::uint8_t level, const Watchdog& wd) {
      // Boost serves the highest priority number first; shmsched takes level 0 first.
      const unsigned prio = kLevels - 1 - level;
      try {
        if (mq_->try_send(&p, sizeof p, prio)) return true;
        while (!mq_->timed_send(&p, sizeof p, prio, soon())) {
          if (wd.quit()) {
            error_ = "gave up waiting for room in the queue";
            return false;
          }
        }
        return true;
      } catch (const bip::interprocess_exception& e) {
        error_ = std::string("send: ") + e.what();
        return false;
      }
    }
    bool flush(const Watchdog&) { return true; }
    bool peer_asleep(const RunShared&) const noexcept { return true; }  // a blocked receiver sleeps
    const std::string& error() const noexcept { return error_; }

   private:
    bip::message_queue* mq_ = nullptr;
    std::string error_;
  };

 private:
  std::string name_;
  std::optional<bip::message_queue> mq_;
};

// ---- one run: children, clock, verdict -----------------------------------------------

/// The outcome of one run of one system.
struct Measured {
  std::string error;         // empty: ok
  bool unavailable = false;  // the system cannot run here (not a failure)
  double seconds = 0;        // throughput: first send -> last handler completion
  LogHistogram latency;      // latency runs: one-way samples after the warm-up
  nlohmann::json extra = nlohmann::json::object();
};

template <class Sys, class P>
std::string produce_all(typename Sys::Sender& s, ProducerSlot& me, unsigned index, const Plan& plan,
                        const Watchdog& wd) {
  P p{};
  // relaxed: read by the driver after it has reaped this process.
  if (index < plan.tasks) me.start_ns.store(now_ns(), std::memory_order_relaxed);
  for (std::uint64_t seq = index; seq < plan.tasks; seq += plan.producers) {
    p.seq = seq;
    if (!s.send(p, priority_of(seq), wd)) return s.error();
  }
  return s.flush(wd) ? std::string() : s.error();
}

// Jittered so that samples do not lock onto a timer: busy 20..25 us from send to send,
// sleeping 2..2.5 ms of idleness before each send.
inline std::int64_t busy_gap_ns(std::uint64_t i) noexcept {
  return 20'000 + static_cast<std::int64_t>((i * 7919u) % 5'000u);
}
inline std::chrono::microseconds sleep_gap(std::uint64_t i) noexcept {
  return std::chrono::microseconds(2000 + (i * 7919u) % 500u);
}

// One task at a time: wait (busy: spin to the next send time; sleeping: sleep, and for
// shmsched make sure the worker has announced its sleep), stamp, send, wait until its
// handler has run. Closed loop, so that no sample queues behind the previous one.
template <class Sys, class P>
std::string produce_paced(typename Sys::Sender& s, RunShared& sh, ProducerSlot& me, const Plan& plan,
                          const Watchdog& wd) {
  const bool sleeping = plan.mode == Mode::sleeping;
  std::uint64_t not_asleep = 0;
  std::int64_t next = now_ns();
  P p{};
  for (std::uint64_t i = 0; i < plan.tasks; ++i) {
    if (sleeping) {
      std::this_thread::sleep_for(sleep_gap(i));
      if (!s.peer_asleep(sh)) {
        ++not_asleep;
        const std::int64_t deadline = now_ns() + to_ns(kSampleTimeout);
        while (!s.peer_asleep(sh)) {
          if (now_ns() > deadline || wd.quit()) return "the consumer did not go to sleep";
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // into the futex wait proper
      }
    } else {
      while (now_ns() < next) cpu_relax();
    }
    p.seq = i;
    p.sent_ns = now_ns();
    if (i == 0) me.start_ns.store(p.sent_ns, std::memory_order_relaxed);  // relaxed: read after reaping
    if (!s.send(p, priority_of(i), wd) || !s.flush(wd)) return s.error();
    next = p.sent_ns + busy_gap_ns(i);
    const std::int64_t deadline = p.sent_ns + to_ns(kSampleTimeout);
    Backoff backoff;
    // acquire: pairs with the consumer's release in Tally::publish; only the count is read.
    for (std::uint64_t k = 1; sh.handled.load(std::memory_order_acquire) <= i; ++k) {
      backoff.pause();
      if ((k & 1023) == 0 && (now_ns() > deadline || wd.quit()))
        return "task " + std::to_string(i) + " was not handled within " + std::to_string(kSampleTimeout.count()) +
               " ms";
    }
  }
  // relaxed: read by the driver after it has reaped this process.
  me.not_asleep.store(not_asleep, std::memory_order_relaxed);
  return {};
}

template <class Sys, class P>
int producer_main(Sys& sys, RunShared& sh, unsigned index, const Plan& plan) {
  ProducerSlot& me = sh.producers[index];
  // Pinned before anything runs, so every thread and allocation stays on its CPU.
  const CpuPin pin(cpu_for(Side::producer, index));
  typename Sys::Sender s;
  if (auto e = s.open(sys); !e.empty()) {
    set_failure(me.failed, me.why, 1, e);
    return 3;
  }
  // release: pairs with wait_for_flag's acquire in the driver.
  me.ready.store(1, std::memory_order_release);
  const Watchdog wd(sh, run_bound(plan.tasks));
  Backoff backoff;
  // acquire: pairs with the driver's release store of go.
  for (std::uint64_t i = 1; sh.go.load(std::memory_order_acquire) == 0; ++i) {
    backoff.pause();
    if ((i & 1023) == 0 && wd.quit()) return 4;
  }
  const std::string e = plan.mode == Mode::throughput ? produce_all<Sys, P>(s, me, index, plan, wd)
                                                      : produce_paced<Sys, P>(s, sh, me, plan, wd);
  if (!e.empty()) {
    set_failure(me.failed, me.why, 1, e);
    return 4;
  }
  return 0;
}

template <class Sys, class P>
int consumer_main(Sys& sys, RunShared& sh, unsigned index, const Plan& plan) {
  // Pinned before the system starts any thread (a shmsched worker inherits the CPU).
  const CpuPin pin(cpu_for(Side::consumer, index));
  Tally<P> tally(sh, index, plan);
  return sys.consume(tally, plan);
}

inline std::string exit_text(Child& c) {
  return "exited with status " + std::to_string(c.wait());
}

// What went wrong with a child, from its own report when it left one.
inline std::string child_failure(std::string_view who, unsigned i, const std::atomic<std::uint32_t>& failed,
                                 const char* why, Child& child, std::string_view otherwise) {
  const std::string prefix = std::string(who) + " " + std::to_string(i) + ": ";
  // acquire: pairs with set_failure's release; the message is complete.
  if (failed.load(std::memory_order_acquire) != 0) return prefix + why;
  if (child.exited()) return prefix + std::string(otherwise) + " (" + exit_text(child) + ")";
  return prefix + std::string(otherwise);
}

/// Forks the consumers, then the producers, of one run; starts them together; waits (polling,
/// bounded) until the shared count reaches the plan's tasks; stops everyone; verifies.
template <class Sys, class P>
Measured run_once(Sys& sys, const Plan& plan) {
  Measured m;
  m.extra = sys.describe();
  SharedBox<RunShared> box;
  RunShared& sh = *box;
  sh.parent = ::getpid();
  if (plan.producers > kMaxProcs || plan.consumers > kMaxProcs || plan.producers == 0 || plan.consumers == 0) {
    m.error = "1.." + std::to_string(kMaxProcs) + " producers and consumers";
    return m;
  }
  if (plan.mode != Mode::throughput && (plan.tasks > kMaxSamples || plan.producers != 1)) {
    m.error = "latency runs: one producer, at most " + std::to_string(kMaxSamples) + " samples";
    return m;
  }
  if (m.error = sys.prepare(plan); !m.error.empty()) return m;

  std::vector<Child> consumers;
  std::vector<Child> producers;
  consumers.reserve(plan.consumers);
  producers.reserve(plan.producers);
  bool finished = false;
  // Every early way out: tell waiting children to leave; then the Child destructors kill
  // whatever is still running (this guard is destroyed before the two vectors).
  const ScopeExit abort_guard([&] {
    if (!finished) request_abort(sh);
  });
  auto fail = [&](std::string e) {
    m.error = std::move(e);
    return m;
  };

  for (unsigned i = 0; i < plan.consumers; ++i) {
    consumers.push_back(Child::spawn([&sys, &sh, &plan, i] { return consumer_main<Sys, P>(sys, sh, i, plan); }));
    if (!consumers.back().started()) return fail("fork failed");
  }
  for (unsigned i = 0; i < plan.consumers; ++i) {
    if (!wait_for_flag(sh.consumers[i].ready, &consumers[i], kStartTimeout))
      return fail(
          child_failure("consumer", i, sh.consumers[i].failed, sh.consumer_why[i], consumers[i], "did not start"));
  }
  for (unsigned i = 0; i < plan.producers; ++i) {
    producers.push_back(Child::spawn([&sys, &sh, &plan, i] { return producer_main<Sys, P>(sys, sh, i, plan); }));
    if (!producers.back().started()) return fail("fork failed");
  }
  for (unsigned i = 0; i < plan.producers; ++i) {
    if (!wait_for_flag(sh.producers[i].ready, &producers[i], kStartTimeout))
      return fail(
          child_failure("producer", i, sh.producers[i].failed, sh.producers[i].why, producers[i], "did not start"));
  }
  // release: pairs with the producers' acquire.
  sh.go.store(1, std::memory_order_release);
  const auto bound = run_bound(plan.tasks);
  const std::int64_t deadline = now_ns() + to_ns(bound);
  std::vector<bool> producer_left(plan.producers, false);
  // The driver sleeps between looks (it stamps nothing: the consumer that completes the run
  // stamps the end), so it takes no CPU from the run.
  // acquire: pairs with the release store of done; every consumer's report is visible.
  while (sh.done.load(std::memory_order_acquire) == 0) {
    for (unsigned i = 0; i < plan.consumers; ++i) {
      // acquire: pairs with set_failure's release.
      if (sh.consumers[i].failed.load(std::memory_order_acquire) != 0 || consumers[i].exited())
        return fail(child_failure("consumer", i, sh.consumers[i].failed, sh.consumer_why[i], consumers[i],
                                  "stopped before the end"));
    }
    for (unsigned i = 0; i < plan.producers; ++i) {
      // acquire: pairs with set_failure's release.
      if (sh.producers[i].failed.load(std::memory_order_acquire) != 0)
        return fail(child_failure("producer", i, sh.producers[i].failed, sh.producers[i].why, producers[i], ""));
      if (!producer_left[i] && producers[i].exited()) {
        producer_left[i] = true;
        if (const int rc = producers[i].wait(); rc != 0)
          return fail("producer " + std::to_string(i) + " exited with status " + std::to_string(rc));
      }
    }
    if (now_ns() > deadline) {
      // relaxed: a progress figure for the message.
      return fail("timed out after " + std::to_string(bound.count()) + " ms with " +
                  std::to_string(sh.handled.load(std::memory_order_relaxed)) + " of " + std::to_string(plan.tasks) +
                  " tasks handled");
    }
    std::this_thread::sleep_for(kPoll);
  }

  // Every task has been handled: let the consumers go, and reap everyone (bounded).
  // release: pairs with the consumers' acquire of stop.
  sh.stop.store(1, std::memory_order_release);
  stop_wake(sh.stop);
  sys.after_done(plan.consumers);
  const std::int64_t exit_deadline = now_ns() + to_ns(kExitTimeout);
  auto reap = [&](std::vector<Child>& kids, std::string_view who) -> std::string {
    for (unsigned i = 0; i < kids.size(); ++i) {
      while (!kids[i].exited()) {
        if (now_ns() > exit_deadline) return std::string(who) + " " + std::to_string(i) + " did not leave";
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (const int rc = kids[i].wait(); rc != 0)
        return std::string(who) + " " + std::to_string(i) + " exited with status " + std::to_string(rc);
    }
    return {};
  };
  if (auto e = reap(producers, "producer"); !e.empty()) return fail(e);
  if (auto e = reap(consumers, "consumer"); !e.empty()) return fail(e);
  finished = true;

  // The verdict: every task handled exactly once (count and checksum over all consumers).
  ConsumerReport total;
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  for (unsigned i = 0; i < plan.consumers; ++i) {
    // acquire: pairs with set_failure's release.
    if (sh.consumers[i].failed.load(std::memory_order_acquire) != 0)
      return fail("consumer " + std::to_string(i) + ": " + sh.consumer_why[i]);
    // relaxed: the consumers are reaped; waitpid ordered their writes before these reads.
    count += sh.consumers[i].count.load(std::memory_order_relaxed);
    sum += sh.consumers[i].sum.load(std::memory_order_relaxed);
  }
  total.count.store(count, std::memory_order_relaxed);  // relaxed: local object
  total.sum.store(sum, std::memory_order_relaxed);
  if (auto e = check_report(total, plan.tasks); !e.empty()) return fail(e);

  // relaxed: every producer is reaped (waitpid orders its writes before these reads).
  std::int64_t t0 = std::numeric_limits<std::int64_t>::max();
  std::uint64_t not_asleep = 0;
  for (unsigned i = 0; i < plan.producers; ++i) {
    if (const std::int64_t s = sh.producers[i].start_ns.load(std::memory_order_relaxed); s != 0) t0 = std::min(t0, s);
    not_asleep += sh.producers[i].not_asleep.load(std::memory_order_relaxed);
  }
  // relaxed: published by the release store of done, acquired above.
  const std::int64_t t1 = sh.end_ns.load(std::memory_order_relaxed);
  if (t0 == std::numeric_limits<std::int64_t>::max() || t1 <= t0) return fail("no valid clock readings");
  m.seconds = static_cast<double>(t1 - t0) * 1e-9;
  if (plan.mode != Mode::throughput) {
    for (std::uint64_t i = plan.warm; i < plan.tasks; ++i) m.latency.record(sh.one_way_ns[i]);
  }
  if constexpr (Sys::kDoorbell) {
    if (plan.mode == Mode::busy) m.extra["consumer_spin"] = "never sleeps";
    if (plan.mode == Mode::sleeping) m.extra["not_asleep"] = not_asleep;
  }
  return m;
}

/// One run of shmsched along `path`, or of Boost message_queue, with payloads P.
template <class P>
Measured measure_shmsched(Path path, const Plan& plan) {
  ShmschedSys<P> sys(unique_name("seg"), path);
  return run_once<ShmschedSys<P>, P>(sys, plan);
}
template <class P>
Measured measure_boost(const Plan& plan) {
  BoostSys<P> sys(unique_name("mq"));
  return run_once<BoostSys<P>, P>(sys, plan);
}

}  // namespace shmsched::bench::run
