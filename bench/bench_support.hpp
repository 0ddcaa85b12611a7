// What every benchmark of the suite shares: the 64-byte item all systems move, the
// priority sequence, the back-off used by every polling side, CPU pinning and forked
// children.
//
// Fairness rules the files follow (so that a ratio compares like with like):
//  * every system moves the same Item (64 bytes) by value, and every consumer copies it
//    out and adds its sequence number to a checksum that the driver verifies;
//  * shmsched, moodycamel and tbb get the same depth (kDepth items in flight); boost's
//    message_queue, whose insert is O(depth), runs at 1024, where it is at its best;
//  * every polling side (producer on a full queue, consumer on an empty one) backs off
//    with the same Backoff, so no system wins by spinning harder than another;
//  * in cross runs the producer and the consumer are pinned to two different CPUs;
//  * set-up (mapping, forking, attaching, first-touch page faults) is outside the timed
//    part; the clock runs from the producer's first item to the consumer's last one.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "shmsched/shmsched.hpp"

namespace shmsched::bench {

/// The unit of work every system moves.
struct Item {
  std::uint64_t seq = 0;
  std::byte pad[56]{};
};
static_assert(sizeof(Item) == 64);

/// Items in flight at most: the task table of the shmsched layout, and the bound given
/// to every bounded peer.
inline constexpr std::uint32_t kDepth = 65536;

/// Items per batch call wherever a system has one.
inline constexpr std::size_t kBatch = 64;

/// Tasks per cross-process / cross-thread run; --tasks=N on the command line sets it.
std::uint64_t task_count() noexcept;
void set_task_count(std::uint64_t n) noexcept;

/// The expected checksum of items 0..n-1.
constexpr std::uint64_t checksum_of(std::uint64_t n) noexcept {
  return n * (n - 1) / 2;
}

/// A priority level 0..7 for item `seq`: a fixed pseudo-random spread (Fibonacci hash),
/// the same for every system that has priorities, and cheap enough not to show.
constexpr std::uint8_t priority_of(std::uint64_t seq) noexcept {
  return static_cast<std::uint8_t>((seq * 0x9E3779B97F4A7C15ULL) >> 61);
}

/// The segment of the engine's throughput benchmarks: 8 levels, kDepth records,
/// payloads of one Item.
inline Layout bench_layout() {
  Layout l;
  l.levels = 8;
  l.task_capacity = kDepth;
  l.payload_bytes = sizeof(Item);
  return l;
}

/// A private segment with the queue "bench" and one Client on it: the set-up of the
/// one-process micro-benchmarks. When it fails, `error` says why (for SkipWithError).
struct BenchSegment {
  std::optional<Segment> seg;
  std::optional<Client> client;
  QueueId queue = 0;
  std::string error;

  BenchSegment(const Layout& layout, Role role) {
    CreateOptions co;
    co.queues = {"bench"};
    auto s = Segment::create_private(layout, co);
    if (!s) {
      error = s.error().message();
      return;
    }
    seg.emplace(std::move(*s));
    queue = seg->find_queue("bench").value();
    auto c = Client::attach(*seg, role);
    if (!c) {
      error = c.error().message();
      return;
    }
    client.emplace(std::move(*c));
  }
  bool ok() const noexcept { return error.empty(); }
};

/// A batch of kBatch tasks as the engine benchmarks send them: Items by value, with seq
/// and priority_of(seq) set for each window of the stream (or priority 0 for every task
/// when `spread` is false). The specs point into `items`, so a batch stays where it was
/// made.
struct TaskBatch {
  std::array<Item, kBatch> items{};
  std::array<TaskSpec, kBatch> specs;
  std::array<TaskId, kBatch> ids{};
  bool spread = true;

  TaskBatch(std::string_view type, QueueId queue, bool spread_levels = true) noexcept : spread(spread_levels) {
    for (std::size_t i = 0; i < kBatch; ++i) {
      specs[i].type = type;
      specs[i].payload = as_payload(items[i]);
      specs[i].options.queue = queue;
    }
  }
  TaskBatch(const TaskBatch&) = delete;
  TaskBatch& operator=(const TaskBatch&) = delete;

  /// The specs of tasks base .. base + k - 1 of a stream of n, k = min(kBatch, n - base).
  std::span<const TaskSpec> window(std::uint64_t base, std::uint64_t n) noexcept {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, n - base));
    for (std::size_t i = 0; i < k; ++i) {
      items[i].seq = base + i;
      specs[i].options.priority = spread ? priority_of(base + i) : std::uint8_t{0};
    }
    return std::span<const TaskSpec>(specs.data(), k);
  }
};

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// Spin briefly, then yield: on a 2-core machine a spinner that never yields can starve
/// the very process it waits for.
class Backoff {
 public:
  void pause() noexcept {
    if (spins_ < kSpins) {
      ++spins_;
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  void reset() noexcept { spins_ = 0; }

 private:
  static constexpr unsigned kSpins = 64;
  unsigned spins_ = 0;
};

/// The CPUs producer and consumer run on: the first two this process may use, so the
/// two sides never share a core and the scheduler does not move them mid-run (on a
/// 2-core machine migrations are the largest source of run-to-run spread). -1 when
/// fewer than two CPUs are available, and then nothing is pinned.
int producer_cpu() noexcept;
int consumer_cpu() noexcept;

/// Pins the calling thread to `cpu` (no-op for -1) until destroyed, then restores the
/// CPUs it had. A thread or child that ends while pinned needs no restore.
class CpuPin {
 public:
  explicit CpuPin(int cpu) noexcept {
    if (cpu < 0 || ::sched_getaffinity(0, sizeof old_, &old_) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pinned_ = ::sched_setaffinity(0, sizeof one, &one) == 0;
  }
  CpuPin(const CpuPin&) = delete;
  CpuPin& operator=(const CpuPin&) = delete;
  ~CpuPin() {
    if (pinned_) ::sched_setaffinity(0, sizeof old_, &old_);
  }

 private:
  cpu_set_t old_{};
  bool pinned_ = false;
};

/// What a consumer (thread or child process) reports back. Lives in memory shared with
/// the child, so only lock-free atomics.
struct alignas(64) ConsumerReport {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> done{0};
  std::atomic<std::uint32_t> failed{0};  // a ConsumerError; 0 = none
  std::atomic<std::uint64_t> count{0};
  std::atomic<std::uint64_t> sum{0};
  std::atomic<std::int64_t> end_ns{0};  // steady clock (CLOCK_MONOTONIC, system-wide)
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::int64_t>::is_always_lock_free);

enum ConsumerError : std::uint32_t {
  kConsumerOk = 0,
  kAttachFailed = 1,
  kBadItem = 2,
  kCompleteFailed = 3,
  kParentGone = 4,
  kConsumerTimeout = 5,
  kOpenFailed = 6,
};
std::string_view to_string(ConsumerError e) noexcept;

/// A T placed in anonymous MAP_SHARED memory, so a child forked later shares it.
template <class T>
class SharedBox {
 public:
  SharedBox() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    obj_ = new (p) T();
  }
  SharedBox(const SharedBox&) = delete;
  SharedBox& operator=(const SharedBox&) = delete;
  ~SharedBox() {
    obj_->~T();
    ::munmap(obj_, sizeof(T));
  }
  T* operator->() const noexcept { return obj_; }
  T& operator*() const noexcept { return *obj_; }

 private:
  T* obj_ = nullptr;
};

/// A forked child that is always reaped: the destructor kills and waits for it if the
/// driver did not, so a failed run leaves no process behind.
class Child {
 public:
  /// Forks; the child runs `fn` (returning its exit code) and leaves with _exit, so it
  /// never runs the parent's destructors, atexit handlers or stdio flushes. The child
  /// dies with the parent: a peer blocked on a lock its dead parent held (boost's
  /// message_queue mutex is not robust) could otherwise wait forever.
  template <class Fn>
  static Child spawn(Fn&& fn) {
    Child c;
    const pid_t parent = ::getpid();
    c.pid_ = ::fork();
    if (c.pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(72);  // the parent died before the line above
      int rc = 70;
      try {
        rc = fn();
      } catch (...) {
        rc = 71;
      }
      ::_exit(rc);
    }
    return c;
  }

  Child() = default;
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), status_(o.status_) {}
  Child& operator=(Child&&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }

  bool started() const noexcept { return pid_ > 0; }
  /// Whether it has exited (reaps it if so); never blocks.
  bool exited() noexcept {
    if (pid_ <= 0) return true;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) {
      status_ = r == pid_ ? st : -1;
      pid_ = -1;
      return true;
    }
    return false;
  }
  /// Waits for it; returns its exit code, or 128 + signal, or -1.
  int wait() noexcept {
    if (pid_ > 0) {
      int st = 0;
      pid_t r;
      do {
        r = ::waitpid(pid_, &st, 0);
      } while (r < 0 && errno == EINTR);
      status_ = r == pid_ ? st : -1;
      pid_ = -1;
    }
    if (status_ < 0) return -1;
    if (WIFEXITED(status_)) return WEXITSTATUS(status_);
    if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

/// True once `flag` is non-zero; false if `child` exits first or `timeout` passes.
/// `child` may be null (a thread consumer).
bool wait_for_flag(const std::atomic<std::uint32_t>& flag, Child* child, std::chrono::milliseconds timeout) noexcept;

/// A one-shot gate from the parent to its children: a child blocks in read() until the
/// parent closes the write end (open()) -- or dies, which closes it too. Blocking, so a
/// waiting child takes no CPU from the two a run has.
class Gate {
 public:
  Gate() noexcept {
    if (::pipe2(fd_, O_CLOEXEC) != 0) fd_[0] = fd_[1] = -1;
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  ~Gate() {
    close_fd(0);
    close_fd(1);
  }
  bool ok() const noexcept { return fd_[0] >= 0; }
  void open() noexcept { close_fd(1); }
  /// First thing in a child: its inherited write end would keep every child's gate shut.
  void child_init() noexcept { close_fd(1); }
  void wait() noexcept {
    char c;
    while (::read(fd_[0], &c, 1) < 0 && errno == EINTR) {
    }
  }

 private:
  void close_fd(int i) noexcept {
    if (fd_[i] >= 0) ::close(fd_[i]);
    fd_[i] = -1;
  }
  int fd_[2] = {-1, -1};
};

/// Polls `ok` every 200 us until it holds (true). Gives up (returning ok()) when `timeout`
/// passes or, when `children` is given, a child has failed or every child has exited.
template <class Ok>
bool wait_until(Ok&& ok, std::chrono::milliseconds timeout, std::vector<Child>* children = nullptr) {
  const std::int64_t deadline = now_ns() + std::chrono::nanoseconds(timeout).count();
  for (;;) {
    if (ok()) return true;
    if (children != nullptr) {
      std::size_t gone = 0;
      for (Child& c : *children)
        // After exited() has reaped it, wait() only returns the status it kept.
        if (c.exited() && (++gone, c.wait() != 0)) return ok();
      if (gone == children->size()) return ok();
    }
    if (now_ns() > deadline) return ok();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

/// Waits (bounded) for every child to exit; the first failure becomes `error` if it has
/// none. A child still running at the deadline is killed by its destructor.
void reap_children(std::vector<Child>& children, std::string& error,
                   std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// Bound on any one run, after which a stuck peer is declared failed rather than hung.
inline constexpr std::chrono::milliseconds kRunTimeout{60000};

/// Outcome of one timed run.
struct RunResult {
  double seconds = 0;
  std::string error;  // empty = ok
};

/// Times run(n) once per iteration of a Google Benchmark `state` (manual time), n =
/// task_count() items each; stops at the first error. Returns the seconds timed in all.
template <class State, class Run>
double run_timed(State& state, Run&& run) {
  const std::uint64_t n = task_count();
  double seconds = 0;
  for (auto _ : state) {
    const RunResult r = run(n);
    if (!r.error.empty()) {
      state.SkipWithError(r.error.c_str());
      break;
    }
    state.SetIterationTime(r.seconds);
    seconds += r.seconds;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  return seconds;
}

/// The verdict on a finished run: whether the consumer saw every item exactly as sent.
std::string check_report(const ConsumerReport& r, std::uint64_t n);

}  // namespace shmsched::bench
