// shmsched_throughput: macro benchmarks of the whole task path -- enqueue -> handler -> ack --
// between separate processes, shmsched against Boost.Interprocess message_queue and Redis.
//
//   shmsched_throughput [--json=PATH] [--quick] [--only=SUBSTRING] [--tasks=N]
//
//   --json=PATH  append one JSON object per line to PATH (default: stdout); a summary of
//                each record goes to stderr either way
//   --quick      fewer tasks and samples: the whole run takes well under a minute on 2 cores
//   --only=S     run only the measurements whose "scenario/system" contains S
//   --tasks=N    tasks per shmsched / boost_mq throughput run (default 1,000,000, --quick
//                200,000); Redis runs use at most N
//
// Scenarios (scenario names as in bench/results/latest.json):
//   full_path         tasks/s, clock from the first enqueue to the last handler's completion;
//                     payloads of 64 and 256 bytes; 1 producer / 1 consumer and 2 / 2, each one
//                     its own process; systems shmsched, boost_mq, redis, redis_pipelined
//   latency_busy      one way, just before enqueue -> first instruction of the handler, a task
//                     every 20..25 us, one at a time (the consumer is awake: the shmsched worker
//                     is told never to sleep, see ShmschedSys::consume); shmsched, boost_mq, redis
//   latency_sleeping  the same with 2..2.5 ms between tasks, so that the consumer has gone to
//                     sleep in the kernel before each one
//   scaling           full_path at 64 B with N producers and N consumers, N = 1 .. 2x the cores
//                     this process may use (at most 8); shmsched and boost_mq
//
// The systems:
//   shmsched         a producer process attaches a Client and enqueues with priorities 0..7
//                    (priority_of); a consumer process runs a shmsched::Consumer with 1 worker,
//                    the default spin and tick, and a handler that copies the payload out and
//                    checksums it. Segment: 8 levels, 65536 records, payload = the payload size.
//   boost_mq         boost::interprocess::message_queue, 1024 messages of the payload size,
//                    priority = priority_of (reversed: boost serves the highest number first),
//                    blocking send / receive; with several producers and consumers, all of
//                    them share the one queue.
//   redis            a private redis-server on a free loopback port; one list per priority
//                    level; producers LPUSH to the list of the task's level, consumers BRPOP
//                    all eight lists in priority order (that is what RQ-style workers do with
//                    several queues; Huey does LPUSH / BRPOP on one list): one round trip per
//                    operation. The payload is a binary string of the payload size.
//   redis_pipelined  producers pipeline LPUSH in batches of 64 (redisAppendCommand, then 64
//                    redisGetReply); consumers pop up to 64 per round trip with BLMPOP (Redis
//                    7) over the same eight lists. BLMPOP is the fair counterpart: it blocks
//                    when the lists are empty, as BRPOP does, keeps the priority order (it pops
//                    from the first non-empty list), and amortises the round trip over a batch
//                    the way pipelining does on the producer side. Pipelining 64 BRPOPs would
//                    leave commands blocked on empty lists at the end of a run; RPOP/LPOP with a
//                    count does not block, so the consumer would have to poll.
//   Redis moves 15k..100k tasks/s, so it gets far fewer tasks (redis 20,000, 5,000 with
//   --quick; redis_pipelined five times that): tasks/s is a rate, and extra.tasks records the
//   count used.
//
// Fairness rules (those of bench_support.hpp, applied across processes):
//  * every system moves the same payload struct by value; every consumer copies it out and
//    adds its sequence number to a checksum the driver verifies, as well as the count;
//  * set-up is untimed: creating and warming the shmsched segment (every record and ring
//    slot of the queue touched once, then mapped into each child's page tables), opening
//    queues and connections, forking. The clock runs from the earliest first send of any
//    producer to the completion of the handler that brings the shared count to N;
//  * completion is counted the same way for every system: each handled task adds 1 to one
//    shared counter (a locked add on a line the consumers share, so the count costs the same
//    few ns everywhere; with several consumers that line moves between them);
//  * producer i and consumer i are pinned to CPUs 2i and 2i+1 of this process's CPUs (mod
//    their number), so on 2 cores every producer shares one core and every consumer the
//    other; redis-server is not pinned (it gets whatever core is free).
//
// Exit status: 0 when no record has an error, 1 otherwise. A Redis record whose error is
// "redis not available: ..." (hiredis not compiled in, or no redis-server on PATH) is
// written but does not count as a failure; a server that is there but fails does.
//
// Shared memory: every POSIX object (segment, message queue) gets a name with this process's
// pid and a serial number, and the name is removed right after the object is created; the
// children use the creator's mapping, inherited across fork (as the suite's other drivers
// do), and never open it by name. So even a SIGKILL of the driver at any point leaves nothing
// in /dev/shm, apart from the microseconds inside create itself; those are covered by RAII
// (ShmName) on every way out and by a SIGINT/SIGTERM/SIGHUP handler. Children die with the
// driver (PR_SET_PDEATHSIG), and so does redis-server.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#if defined(SHMSCHED_BENCH_HAVE_HIREDIS) && SHMSCHED_BENCH_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#define SHMSCHED_TP_REDIS 1
#else
#define SHMSCHED_TP_REDIS 0
#endif

#include "bench_support.hpp"
#include "scenario_support.hpp"
#include "shmsched/consumer.hpp"
#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/detail/futex.hpp"
#include "shmsched/shmsched.hpp"

namespace shmsched::bench {
namespace {

namespace bip = boost::interprocess;

constexpr std::string_view kType = "bench";
constexpr std::string_view kQueue = "bench";
constexpr unsigned kLevels = 8;
constexpr unsigned kMaxProcs = 8;           // producers (and consumers) per run at most
constexpr std::uint32_t kMqDepth = 1024;    // boost: where its O(depth) insert is at its best
constexpr std::size_t kRedisBatch = 64;     // redis_pipelined: commands per round trip
constexpr std::uint32_t kWarmSamples = 50;  // latency: first samples touch fresh pages; dropped
constexpr std::uint32_t kMaxLatencySamples = 20000;
constexpr std::uint32_t kMaxSamples = kWarmSamples + kMaxLatencySamples;
constexpr auto kStartTimeout = std::chrono::milliseconds(10000);  // one child getting ready
constexpr auto kExitTimeout = std::chrono::milliseconds(10000);   // children leaving after a run
constexpr auto kSampleTimeout = std::chrono::milliseconds(5000);  // one latency sample
constexpr auto kPoll = std::chrono::milliseconds(2);              // the driver's polling period

std::int64_t to_ns(std::chrono::nanoseconds d) noexcept {
  return d.count();
}

/// Bound on one run from the start signal to the last handler: the suite's kRunTimeout, plus
/// 10 us a task (a floor of 100k tasks/s), so that a large --tasks is not cut short.
std::chrono::milliseconds run_bound(std::uint64_t tasks) noexcept {
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

// ---- named objects: removed on every way out ---------------------------------------

pid_t g_main_pid = 0;

// The POSIX shm objects this process created and has not removed yet, for the signal
// handler. Process-local memory; the atomics are lock-free, hence async-signal-safe.
class ShmRegistry {
 public:
  int add(const std::string& path) noexcept {
    for (int i = 0; i < kSlots; ++i) {
      if (used_[i].load(std::memory_order_relaxed) != 0) continue;
      std::snprintf(paths_[i], kLen, "%s", path.c_str());
      // release: a handler that sees the slot in use sees the whole path.
      used_[i].store(1, std::memory_order_release);
      return i;
    }
    return -1;
  }
  void drop(int slot) noexcept {
    // relaxed: dropping after the object is gone; a late handler unlinking it again is harmless.
    if (slot >= 0) used_[slot].store(0, std::memory_order_relaxed);
  }
  void unlink_all() noexcept {
    for (int i = 0; i < kSlots; ++i) {
      // acquire: pairs with add(); the path is complete.
      if (used_[i].load(std::memory_order_acquire) != 0) ::shm_unlink(paths_[i]);
    }
  }

 private:
  static constexpr int kSlots = 8;
  static constexpr std::size_t kLen = 160;
  char paths_[kSlots][kLen]{};
  std::atomic<std::uint32_t> used_[kSlots]{};
};
ShmRegistry g_shm_names;

void on_fatal_signal(int sig) {
  // Children inherit the handler; only the driver owns the names.
  if (::getpid() == g_main_pid) g_shm_names.unlink_all();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

/// A named shared-memory object of one run: removed (through its library) by release() or
/// the destructor, and known to the signal handler until then.
class ShmName {
 public:
  ShmName(const std::string& path, std::function<void()> remove)
      : remove_(std::move(remove)), slot_(g_shm_names.add(path)) {}
  ShmName(const ShmName&) = delete;
  ShmName& operator=(const ShmName&) = delete;
  ~ShmName() { release(); }
  void release() {
    if (remove_) std::exchange(remove_, nullptr)();
    g_shm_names.drop(std::exchange(slot_, -1));
  }

 private:
  std::function<void()> remove_;
  int slot_ = -1;
};

std::string unique_name(std::string_view kind) {
  static unsigned serial = 0;
  return "shmsched_tp_" + std::string(kind) + "_" + std::to_string(::getpid()) + "_" + std::to_string(++serial);
}

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
int cpu_for(Side side, unsigned index) {
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

constexpr std::size_t kWhyLen = 112;

struct alignas(64) ProducerSlot {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> failed{0};      // non-zero: `why` says how
  std::atomic<std::int64_t> start_ns{0};     // steady clock just before its first send; 0 = none
  std::atomic<std::uint64_t> rings{0};       // shmsched: futex wakes (doorbell rings) it made
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
void set_failure(std::atomic<std::uint32_t>& failed, char (&why)[kWhyLen], std::uint32_t code,
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

void stop_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen, std::chrono::milliseconds timeout) noexcept {
  const timespec ts{static_cast<time_t>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000) * 1000000};
  // Not FUTEX_PRIVATE: the word is shared between processes.
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}
void stop_wake(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

/// Tells every child of the run to leave: waiting producers give up, consumers stop.
void request_abort(RunShared& sh) noexcept {
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
        stamp_(plan.mode != Mode::throughput),
        deadline_ns_(now_ns() + to_ns(2 * run_bound(plan.tasks))) {}  // a safety net: the driver stops it first

  /// One payload has been received (or its handler entered). False when it is malformed.
  bool item(const void* data, std::size_t size) {
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
    // relaxed: published by the release half of the fetch_add below.
    rep_.count.store(count_, std::memory_order_relaxed);
    rep_.sum.store(sum_, std::memory_order_relaxed);
    // acq_rel: release publishes this consumer's count, sum and sample to whoever reads a
    // later total; acquire lets the consumer that completes the run pass every other
    // consumer's on (the fetch_adds form one release sequence) through `done`.
    if (sh_.handled.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      // relaxed: published by the release store of done.
      sh_.end_ns.store(now_ns(), std::memory_order_relaxed);
      // release: pairs with the driver's acquire; everything above is visible to it.
      sh_.done.store(1, std::memory_order_release);
    }
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
  bool stamp_;
  std::int64_t deadline_ns_;
  std::uint64_t count_ = 0;  // only the one handling thread of the process touches these
  std::uint64_t sum_ = 0;
};

// ---- shmsched ------------------------------------------------------------------------

bool backpressure(Errc e) noexcept {
  return e == Errc::table_full || e == Errc::ring_full;
}

// Fills the table at each level in turn and drains it: every record, the free list and the
// queue's ring of every level are written once before any clock starts.
std::string warm_up(Client& c, QueueId q, std::size_t payload_bytes) {
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
void prefault(Segment& seg, QueueId q) noexcept {
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

template <class P>
class ShmschedSys {
 public:
  static constexpr bool kDoorbell = true;  // producers count rings; the consumer's sleep is visible
  explicit ShmschedSys(std::string name) : name_(std::move(name)) {}

  nlohmann::json describe() const { return {{"depth", kDepth}, {"levels", kLevels}}; }

  // Creates the segment and removes its name at once (see "Shared memory" above); the
  // children use this mapping, inherited across fork.
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

  // In a consumer process: a Consumer with one worker, as shipped (default spin and tick),
  // except in latency_busy: the default spin (256 empty looks, about 20 us on the 2-core
  // reference machine) is shorter than the gap between two tasks there, so the worker would
  // sleep before about half of them and the scenario would measure wake-ups. A worker that
  // never sleeps is what "the consumer is awake" means (consumer_bench's busy rig does the same).
  int consume(Tally<P>& tally, const Plan& plan) {
    Segment& seg = *seg_;
    prefault(seg, q_);
    ConsumerOptions o;
    o.home = {std::string(kQueue)};
    o.workers = 1;
    if (plan.mode == Mode::busy) o.spin = std::numeric_limits<unsigned>::max();
    auto c = Consumer::create(seg, std::move(o));
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

  class Sender {
   public:
    std::string open(ShmschedSys& sys) {
      seg_ = &*sys.seg_;
      prefault(*seg_, sys.q_);
      auto c = Client::attach(*seg_, Role::producer);
      if (!c) return "attach: " + c.error().message();
      client_.emplace(std::move(c.value()));
      o_.queue = sys.q_;
      rings0_ = detail::futex_wake_calls();
      return {};
    }
    bool send(const P& p, std::uint8_t level, const Watchdog& wd) {
      o_.priority = level;
      Backoff backoff;
      for (std::uint64_t waits = 1;; ++waits) {
        const Errc e = client_->enqueue(kType, as_payload(p), o_);
        if (e == Errc::ok) return true;
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
    bool flush(const Watchdog&) { return true; }
    /// Whether the consumer's worker has announced that it sleeps on its doorbell.
    bool peer_asleep(const RunShared& sh) const noexcept {
      // relaxed: published before the consumer's ready flag, which the driver acquired
      // before this process was forked.
      const std::uint32_t slot = sh.shm_slot.load(std::memory_order_relaxed);
      if (slot >= seg_->layout().max_participants) return true;
      // seq_cst: the order the library's sleep announcement and wake check use.
      return detail::core_of(*seg_).participants[slot].sleepers.load(std::memory_order_seq_cst) != 0;
    }
    std::uint64_t rings() const noexcept { return detail::futex_wake_calls() - rings0_; }
    const std::string& error() const noexcept { return error_; }

   private:
    Segment* seg_ = nullptr;
    std::optional<Client> client_;
    TaskOptions o_;
    std::uint64_t rings0_ = 0;
    std::string error_;
  };

 private:
  std::string name_;
  std::optional<Segment> seg_;
  QueueId q_ = 0;
};

// ---- boost::interprocess::message_queue -------------------------------------------------

// A bounded blocking wait: a peer that died must not strand the other side.
boost::posix_time::ptime soon() {
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
    std::uint64_t rings() const noexcept { return 0; }
    const std::string& error() const noexcept { return error_; }

   private:
    bip::message_queue* mq_ = nullptr;
    std::string error_;
  };

 private:
  std::string name_;
  std::optional<bip::message_queue> mq_;
};

// ---- Redis ---------------------------------------------------------------------------

#if SHMSCHED_TP_REDIS

constexpr const char* kRedisKeys[kLevels] = {"tp:q0", "tp:q1", "tp:q2", "tp:q3", "tp:q4", "tp:q5", "tp:q6", "tp:q7"};
constexpr const char* kRedisPopTimeout = "0.1";  // seconds; consumers look at `stop` this often when idle

struct ReplyFree {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

Reply as_reply(void* r) noexcept {
  return Reply(static_cast<redisReply*>(r));
}

/// One synchronous hiredis connection to the private server.
class RedisConn {
 public:
  RedisConn() = default;
  RedisConn(const RedisConn&) = delete;
  RedisConn& operator=(const RedisConn&) = delete;
  ~RedisConn() {
    if (c_ != nullptr) redisFree(c_);
  }
  std::string connect(int port, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
    const timeval tv{static_cast<time_t>(timeout.count() / 1000),
                     static_cast<suseconds_t>(timeout.count() % 1000) * 1000};
    c_ = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c_ == nullptr) return "redis: cannot allocate a connection";
    if (c_->err != 0) return std::string("redis connect: ") + c_->errstr;
    // Every command is bounded too (blocking pops use a far shorter timeout of their own).
    const timeval cmd{5, 0};
    if (redisSetTimeout(c_, cmd) != REDIS_OK) return "redis: cannot set the command timeout";
    return {};
  }
  redisContext* get() const noexcept { return c_; }
  /// The error of a failed command: the connection's, or the reply's.
  std::string error_of(const redisReply* r, std::string_view what) const {
    if (r == nullptr) return std::string(what) + ": " + (c_->err != 0 ? c_->errstr : "no reply");
    if (r->type == REDIS_REPLY_ERROR) return std::string(what) + ": " + std::string(r->str, r->len);
    return std::string(what) + ": unexpected reply type " + std::to_string(r->type);
  }

 private:
  redisContext* c_ = nullptr;
};

template <class P>
class RedisSys {
 public:
  static constexpr bool kDoorbell = false;
  RedisSys(int port, bool pipelined) : port_(port), pipelined_(pipelined) {}

  nlohmann::json describe() const {
    nlohmann::json j = {{"transport", "tcp 127.0.0.1"}, {"lists", kLevels}};
    if (pipelined_) {
      j["push"] = "LPUSH pipelined by " + std::to_string(kRedisBatch);
      j["pop"] = "BLMPOP COUNT " + std::to_string(kRedisBatch);
    } else {
      j["push"] = "LPUSH";
      j["pop"] = "BRPOP";
    }
    return j;
  }

  // A clean server for every run.
  std::string prepare(const Plan&) {
    if (auto e = conn_.connect(port_); !e.empty()) return e;
    Reply r = as_reply(redisCommand(conn_.get(), "FLUSHALL"));
    if (!r || r->type != REDIS_REPLY_STATUS) return conn_.error_of(r.get(), "FLUSHALL");
    return {};
  }
  // An empty string per consumer on the most urgent list tells it to leave at once; one
  // that misses it (a pipelined pop may take two) sees `stop` within its pop timeout.
  void after_done(unsigned consumers) {
    for (unsigned i = 0; i < consumers; ++i) {
      const Reply r = as_reply(redisCommand(conn_.get(), "LPUSH %s %b", kRedisKeys[0], "", std::size_t{0}));
    }
  }

  int consume(Tally<P>& tally, const Plan&) {
    RedisConn conn;
    if (auto e = conn.connect(port_); !e.empty()) {
      tally.fail(kOpenFailed, e);
      return 3;
    }
    // BRPOP k0..k7 timeout  |  BLMPOP timeout 8 k0..k7 RIGHT COUNT 64
    std::vector<const char*> argv;
    const std::string count = std::to_string(kRedisBatch);
    if (pipelined_) {
      argv = {"BLMPOP", kRedisPopTimeout, "8"};
      argv.insert(argv.end(), std::begin(kRedisKeys), std::end(kRedisKeys));
      argv.insert(argv.end(), {"RIGHT", "COUNT", count.c_str()});
    } else {
      argv = {"BRPOP"};
      argv.insert(argv.end(), std::begin(kRedisKeys), std::end(kRedisKeys));
      argv.push_back(kRedisPopTimeout);
    }
    tally.ready();
    for (;;) {
      Reply r = as_reply(redisCommandArgv(conn.get(), static_cast<int>(argv.size()), argv.data(), nullptr));
      if (!r || r->type == REDIS_REPLY_ERROR) {
        tally.fail(kCompleteFailed, conn.error_of(r.get(), argv[0]));
        return 4;
      }
      if (r->type == REDIS_REPLY_NIL) {  // the pop timed out: nothing queued
        if (tally.stop_requested()) return 0;
        if (tally.must_quit()) return 4;
        continue;
      }
      // BRPOP: [list, value]; BLMPOP: [list, [value...]]
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        tally.fail(kBadItem, conn.error_of(r.get(), argv[0]));
        return 4;
      }
      const redisReply* v = r->element[1];
      if (pipelined_ && v->type != REDIS_REPLY_ARRAY) {
        tally.fail(kBadItem, conn.error_of(v, argv[0]));
        return 4;
      }
      const std::size_t n = pipelined_ ? v->elements : 1;
      bool leave = false;
      for (std::size_t i = 0; i < n; ++i) {
        const redisReply* s = pipelined_ ? v->element[i] : v;
        if (s->type != REDIS_REPLY_STRING) {
          tally.fail(kBadItem, conn.error_of(s, argv[0]));
          return 4;
        }
        if (s->len == 0) {  // the driver's stop message
          leave = true;
          continue;
        }
        if (!tally.item(s->str, s->len)) return 4;
      }
      if (leave) return 0;
    }
  }

  class Sender {
   public:
    std::string open(RedisSys& sys) {
      pipelined_ = sys.pipelined_;
      return conn_.connect(sys.port_);
    }
    bool send(const P& p, std::uint8_t level, const Watchdog&) {
      if (!pipelined_) {
        Reply r = as_reply(redisCommand(conn_.get(), "LPUSH %s %b", kRedisKeys[level], &p, sizeof p));
        if (!r || r->type != REDIS_REPLY_INTEGER) {
          error_ = conn_.error_of(r.get(), "LPUSH");
          return false;
        }
        return true;
      }
      if (redisAppendCommand(conn_.get(), "LPUSH %s %b", kRedisKeys[level], &p, sizeof p) != REDIS_OK) {
        error_ = conn_.error_of(nullptr, "LPUSH");
        return false;
      }
      return ++pending_ < kRedisBatch || drain();
    }
    bool flush(const Watchdog&) { return pending_ == 0 || drain(); }
    bool peer_asleep(const RunShared&) const noexcept { return true; }  // a blocked BRPOP sleeps
    std::uint64_t rings() const noexcept { return 0; }
    const std::string& error() const noexcept { return error_; }

   private:
    // Sends the batch (hiredis writes the buffer on the first redisGetReply) and reads its replies.
    bool drain() {
      for (; pending_ > 0; --pending_) {
        void* raw = nullptr;
        if (redisGetReply(conn_.get(), &raw) != REDIS_OK) {
          error_ = conn_.error_of(nullptr, "LPUSH (pipelined)");
          return false;
        }
        Reply r = as_reply(raw);
        if (!r || r->type != REDIS_REPLY_INTEGER) {
          error_ = conn_.error_of(r.get(), "LPUSH (pipelined)");
          return false;
        }
      }
      return true;
    }
    RedisConn conn_;
    bool pipelined_ = false;
    std::size_t pending_ = 0;
    std::string error_;
  };

 private:
  int port_;
  bool pipelined_;
  RedisConn conn_;  // the driver's: FLUSHALL and the stop messages
};

/// A port nobody listens on now (the kernel's pick for 127.0.0.1:0). Another process may
/// take it before redis-server binds it; the caller retries then.
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

/// A private redis-server: no persistence, loopback only, a child of the driver (it dies
/// with it); shut down by the destructor.
class RedisServer {
 public:
  RedisServer() = default;
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer() { shut_down(); }

  /// Empty once PING answers; else why not.
  std::string start() {
    std::string why;
    for (int attempt = 0; attempt < 3; ++attempt) {  // the port may be taken in between
      port_ = free_loopback_port();
      if (port_ <= 0) return "no free loopback port";
      const std::string port = std::to_string(port_);
      child_.emplace(Child::spawn([&port]() -> int {
        // Its log must not mix with records on stdout.
        const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0) ::dup2(null, STDOUT_FILENO);
        ::execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
        return 127;
      }));
      if (!child_->started()) return "fork failed";
      why = wait_ping(std::chrono::milliseconds(5000));
      if (why.empty()) return {};
      child_.reset();  // kills and reaps it
    }
    return why;
  }
  int port() const noexcept { return port_; }

 private:
  std::string wait_ping(std::chrono::milliseconds bound) {
    const std::int64_t deadline = now_ns() + to_ns(bound);
    std::string why = "PING not answered within " + std::to_string(bound.count()) + " ms";
    while (now_ns() < deadline) {
      if (child_->exited()) return "redis-server exited with status " + std::to_string(child_->wait());
      RedisConn c;
      if (c.connect(port_, std::chrono::milliseconds(200)).empty()) {
        Reply r = as_reply(redisCommand(c.get(), "PING"));
        if (r && r->type == REDIS_REPLY_STATUS && std::string_view(r->str, r->len) == "PONG") return {};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return why;
  }
  void shut_down() {
    if (!child_) return;
    {
      RedisConn c;
      if (c.connect(port_, std::chrono::milliseconds(500)).empty()) {
        Reply r = as_reply(redisCommand(c.get(), "SHUTDOWN NOSAVE"));  // no reply: it is gone
      }
    }
    const std::int64_t deadline = now_ns() + to_ns(std::chrono::milliseconds(2000));
    while (!child_->exited() && now_ns() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    child_.reset();  // SIGKILL if it is still there
  }

  std::optional<Child> child_;
  int port_ = 0;
};

#endif  // SHMSCHED_TP_REDIS

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
std::int64_t busy_gap_ns(std::uint64_t i) noexcept {
  return 20'000 + static_cast<std::int64_t>((i * 7919u) % 5'000u);
}
std::chrono::microseconds sleep_gap(std::uint64_t i) noexcept {
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
    // acquire: pairs with the consumer's fetch_add; not needed for data, only a count.
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
  // relaxed: read by the driver after it has reaped this process.
  me.rings.store(s.rings(), std::memory_order_relaxed);
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

std::string exit_text(Child& c) {
  return "exited with status " + std::to_string(c.wait());
}

// What went wrong with a child, from its own report when it left one.
std::string child_failure(std::string_view who, unsigned i, const std::atomic<std::uint32_t>& failed, const char* why,
                          Child& child, std::string_view otherwise) {
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
  std::uint64_t rings = 0;
  std::uint64_t not_asleep = 0;
  for (unsigned i = 0; i < plan.producers; ++i) {
    if (const std::int64_t s = sh.producers[i].start_ns.load(std::memory_order_relaxed); s != 0) t0 = std::min(t0, s);
    rings += sh.producers[i].rings.load(std::memory_order_relaxed);
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
    // rings: the times a producer found the consumer asleep and woke it (a futex_wake each).
    if (plan.mode == Mode::throughput) {
      m.extra["rings"] = rings;
    } else {
      m.extra["rings_per_task"] = static_cast<double>(rings) / static_cast<double>(plan.tasks);
      if (plan.mode == Mode::busy) m.extra["consumer_spin"] = "never sleeps";
    }
    if (plan.mode == Mode::sleeping) m.extra["not_asleep"] = not_asleep;
  }
  return m;
}

// ---- the driver ----------------------------------------------------------------------

struct Options {
  std::string json;
  bool quick = false;
  std::string only;
  std::optional<std::uint64_t> tasks;
};

struct Counts {
  std::uint64_t tasks;        // shmsched and boost_mq throughput runs
  std::uint64_t redis_tasks;  // redis throughput runs (redis_pipelined: 5x, it is that much faster)
  std::uint32_t busy_samples;
  std::uint32_t sleeping_samples;
};

constexpr Counts kFull{1'000'000, 20'000, 20'000, 2'000};
constexpr Counts kQuick{200'000, 5'000, 3'000, 300};
static_assert(kFull.busy_samples <= kMaxLatencySamples && kFull.sleeping_samples <= kMaxLatencySamples);

#if SHMSCHED_TP_REDIS
bool on_path(const char* program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string_view rest(path);
  while (!rest.empty()) {
    const std::size_t colon = rest.find(':');
    const std::string dir(rest.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    const std::string file = (dir.empty() ? std::string(".") : dir) + "/" + program;
    if (::access(file.c_str(), X_OK) == 0) return true;
  }
  return false;
}
#endif

class Driver {
 public:
  Driver(const Options& o, RecordSink& sink) : o_(o), sink_(sink), counts_(o.quick ? kQuick : kFull) {
    if (o.tasks) {
      counts_.tasks = *o.tasks;
      counts_.redis_tasks = std::min(counts_.redis_tasks, *o.tasks);
    }
  }

  void full_path() {
    static constexpr std::pair<unsigned, unsigned> kShapes[] = {{1, 1}, {2, 2}};
    for (const unsigned payload : {64u, 256u}) {
      for (const auto& [np, nc] : kShapes) {
        for (const std::string_view system : {"shmsched", "boost_mq", "redis", "redis_pipelined"}) {
          if (!selected("full_path", system)) continue;
          Plan plan;
          plan.producers = np;
          plan.consumers = nc;
          plan.tasks = !is_redis(system)             ? counts_.tasks
                       : system == "redis_pipelined" ? std::min(5 * counts_.redis_tasks, counts_.tasks)
                                                     : counts_.redis_tasks;
          Record r = blank("full_path", system, payload, np, nc);
          r.extra["tasks"] = plan.tasks;
          throughput(r, measure(system, payload, plan), plan.tasks);
        }
      }
    }
  }

  void latency() {
    const std::pair<std::string_view, Mode> kinds[] = {{"latency_busy", Mode::busy},
                                                       {"latency_sleeping", Mode::sleeping}};
    for (const auto& [scenario, mode] : kinds) {
      for (const std::string_view system : {"shmsched", "boost_mq", "redis"}) {
        if (!selected(scenario, system)) continue;
        Plan plan;
        plan.mode = mode;
        plan.warm = kWarmSamples;
        plan.tasks = kWarmSamples + (mode == Mode::busy ? counts_.busy_samples : counts_.sleeping_samples);
        Record r = blank(scenario, system, sizeof(Item), 1, 1);
        r.extra["warmup_samples"] = kWarmSamples;
        r.extra["gap_us"] = mode == Mode::busy ? nlohmann::json::array({20, 25}) : nlohmann::json::array({2000, 2500});
        r.extra["gap_from"] = mode == Mode::busy ? "send to send" : "handler to send";
        Measured m = measure(system, sizeof(Item), plan);
        if (!m.error.empty()) {
          emit(r, m);
          continue;
        }
        merge(r, m);
        r.set_latency(m.latency);
        emit(r, m);
      }
    }
  }

  void scaling() {
    const unsigned cores = std::max(1u, machine().cores);
    const unsigned max_n = std::min(2 * cores, kMaxProcs);
    for (unsigned n = 1; n <= max_n; ++n) {
      for (const std::string_view system : {"shmsched", "boost_mq"}) {
        if (!selected("scaling", system)) continue;
        Plan plan;
        plan.producers = n;
        plan.consumers = n;
        plan.tasks = counts_.tasks;
        Record r = blank("scaling", system, sizeof(Item), n, n);
        r.extra["tasks"] = plan.tasks;
        r.extra["cores"] = cores;
        throughput(r, measure(system, sizeof(Item), plan), plan.tasks);
      }
    }
  }

  int exit_code() const { return failures_ == 0 ? 0 : 1; }

 private:
  static bool is_redis(std::string_view system) { return system.substr(0, 5) == "redis"; }

  bool selected(std::string_view scenario, std::string_view system) const {
    if (o_.only.empty()) return true;
    const std::string key = std::string(scenario) + "/" + std::string(system);
    return key.find(o_.only) != std::string::npos;
  }

  static Record blank(std::string_view scenario, std::string_view system, unsigned payload, unsigned np, unsigned nc) {
    Record r;
    r.scenario = scenario;
    r.system = system;
    r.payload_bytes = payload;
    r.producers = np;
    r.consumers = nc;
    return r;
  }

  static void merge(Record& r, const Measured& m) {
    for (const auto& [k, v] : m.extra.items()) r.extra[k] = v;
  }

  void throughput(Record& r, const Measured& m, std::uint64_t tasks) {
    if (m.error.empty()) {
      merge(r, m);
      r.tasks_per_s = static_cast<double>(tasks) / m.seconds;
      r.extra["seconds"] = m.seconds;
    }
    emit(r, m);
  }

  // A failed run carries its error and no figures. "Not available" is said in the record
  // but is no failure of the run; anything else is.
  void emit(Record& r, const Measured& m) {
    if (!m.error.empty()) {
      r.error = m.error;
      r.tasks_per_s.reset();
      r.p50_us.reset();
      r.p99_us.reset();
      r.p999_us.reset();
      if (!m.unavailable) ++failures_;
    }
    sink_.write(r);
  }

  Measured measure(std::string_view system, unsigned payload, const Plan& plan) {
    return payload == 64 ? measure_as<Payload<64>>(system, plan) : measure_as<Payload<256>>(system, plan);
  }

  template <class P>
  Measured measure_as(std::string_view system, const Plan& plan) {
    if (system == "shmsched") {
      ShmschedSys<P> sys(unique_name("seg"));
      return run_once<ShmschedSys<P>, P>(sys, plan);
    }
    if (system == "boost_mq") {
      BoostSys<P> sys(unique_name("mq"));
      return run_once<BoostSys<P>, P>(sys, plan);
    }
    Measured m;
    if (!redis_ready(m)) return m;
#if SHMSCHED_TP_REDIS
    RedisSys<P> sys(redis_->port(), system == "redis_pipelined");
    return run_once<RedisSys<P>, P>(sys, plan);
#else
    return m;  // not reached: redis_ready() is false without hiredis
#endif
  }

  // Starts the private redis-server on first use. False (with m.error set) when Redis cannot
  // be measured; m.unavailable tells a missing prerequisite from a failure.
  bool redis_ready(Measured& m) {
    if (!redis_tried_) {
      redis_tried_ = true;
#if SHMSCHED_TP_REDIS
      if (!on_path("redis-server")) {
        redis_why_ = "redis not available: redis-server not found on PATH";
        redis_unavailable_ = true;
      } else {
        redis_.emplace();
        if (auto e = redis_->start(); !e.empty()) redis_why_ = "redis-server did not start: " + e;
      }
#else
      redis_why_ = "redis not available: built without hiredis (libhiredis-dev was not found at configure time)";
      redis_unavailable_ = true;
#endif
    }
    if (redis_why_.empty()) return true;
    m.error = redis_why_;
    m.unavailable = redis_unavailable_;
    return false;
  }

  const Options& o_;
  RecordSink& sink_;
  Counts counts_;
  unsigned failures_ = 0;
  bool redis_tried_ = false;
  bool redis_unavailable_ = false;
  std::string redis_why_;
#if SHMSCHED_TP_REDIS
  std::optional<RedisServer> redis_;
#endif
};

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: shmsched_throughput [--json=PATH] [--quick] [--only=SUBSTRING] [--tasks=N]\n"
               "  --json=PATH    append one JSON object per line to PATH (default: stdout)\n"
               "  --quick        fewer tasks and samples (well under a minute on 2 cores)\n"
               "  --only=S       only measurements whose \"scenario/system\" contains S\n"
               "  --tasks=N      tasks per shmsched/boost_mq throughput run (redis: at most N)\n"
               "scenarios: full_path, latency_busy, latency_sleeping, scaling\n"
               "systems: shmsched, boost_mq, redis, redis_pipelined\n");
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string_view flag) { return a.substr(flag.size()); };
    if (a.rfind("--json=", 0) == 0) {
      o.json = value("--json=");
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a.rfind("--only=", 0) == 0) {
      o.only = value("--only=");
    } else if (a.rfind("--tasks=", 0) == 0) {
      const std::string v(value("--tasks="));
      char* end = nullptr;
      errno = 0;
      const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || errno != 0 || n == 0 || v[0] == '-') {
        std::fprintf(stderr, "shmsched_throughput: --tasks needs a positive integer, not '%s'\n", v.c_str());
        return false;
      }
      o.tasks = n;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "shmsched_throughput: unknown argument '%s'\n", argv[i]);
      return false;
    }
  }
  return true;
}

int run_main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    usage(stderr);
    return 2;
  }
  g_main_pid = ::getpid();
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  ::sigemptyset(&sa.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  // A dead redis connection must be an error return, not a SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);

  std::fprintf(stderr, "shmsched_throughput: %s run, %u cores (%s)%s\n", o.quick ? "quick" : "full", machine().cores,
               machine().cpu_model.c_str(),
               fault::enabled() ? "; WARNING: fault points compiled in, numbers are pessimistic" : "");
  try {
    RecordSink sink(o.json);
    Driver d(o, sink);
    d.full_path();
    d.latency();
    d.scaling();
    return d.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmsched_throughput: %s\n", e.what());
    return 1;
  }
}

}  // namespace
}  // namespace shmsched::bench

int main(int argc, char** argv) {
  return shmsched::bench::run_main(argc, argv);
}
