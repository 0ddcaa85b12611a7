// Helpers shared by the test suites: unique segment names and a guard that removes a
// named segment on every exit path, byte snapshots of the /dev/shm object behind a
// name, child processes that can never fall back into the test framework, a start
// gate for children, memory shared with children, and the seed and scale knobs of the
// seeded tests.
//
// Children: `spawn()` runs a callable in a fork()ed child and ends the child with
// _exit(its return value), so a child never returns into GoogleTest, never runs the
// parent's atexit handlers and never flushes the parent's stdio buffers a second time.
// A child asks for SIGKILL when its parent dies, so a test killed by a ctest timeout
// leaves no spinning orphans behind.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "shmsched/detail/fault.hpp"
#include "shmsched/error.hpp"
#include "shmsched/process.hpp"
#include "shmsched/segment.hpp"

namespace shmsched {
/// Lets GoogleTest print an Errc by name in failure messages.
inline void PrintTo(Errc code, std::ostream* os) {
  *os << to_string(code);
}
}  // namespace shmsched

namespace shmsched::test {

/// Forks `fn` armed to die (SIGKILL) at the first pass through fault point `point`; true
/// when it died there. A child that never reaches the point exits 0: the caller's check
/// fails. Needs a build with fault points (the crash tests').
template <class Fn>
bool dies_at(fault::Point point, Fn&& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    fault::arm(point, 1);
    fn();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

/// "ok" or the error's message: for the `<<` of an ASSERT on a Result.
template <class R>
std::string why(const R& result) {
  return result.ok() ? std::string("ok") : result.error().message();
}

/// A small private-segment layout for the lifecycle tests: `cap` records, `levels`
/// levels, payloads of `payload` bytes, two queues, eight participants, two semaphores.
inline Layout small_test_layout(std::uint32_t cap, std::uint32_t levels, std::uint32_t payload = 16) {
  Layout l;
  l.task_capacity = cap;
  l.levels = levels;
  l.payload_bytes = payload;
  l.max_queues = 2;
  l.max_participants = 8;
  l.max_semaphores = 2;
  l.max_groups = 8;
  return l;
}

// ---------------------------------------------------------------------------------
// Names and files

/// "<tag>-<pid>-<counter>-<clock bits>": unique among test processes running at once
/// (pid, counter), and the clock bits keep a leftover object of an earlier run whose
/// pid was recycled from being mistaken for ours.
inline std::string unique_name(std::string_view tag = "t") {
  static std::atomic<unsigned> counter{0};
  char buf[Segment::kMaxNameLength + 1];
  std::snprintf(buf, sizeof buf, "%.*s-%d-%u-%llx", static_cast<int>(std::min<std::size_t>(tag.size(), 16)), tag.data(),
                static_cast<int>(::getpid()), counter.fetch_add(1, std::memory_order_relaxed),
                static_cast<unsigned long long>(monotonic_ns() & 0xFFFFFF));
  return buf;
}

/// Where the POSIX shm object of a segment name lives on Linux.
inline std::string shm_path(std::string_view name) {
  return "/dev/shm/" + Segment::object_name(name);
}

/// Removes the named segment when it goes out of scope, also when an ASSERT returns
/// early, so a failing test leaves nothing in /dev/shm.
class NameGuard {
 public:
  explicit NameGuard(std::string name = unique_name()) : name_(std::move(name)) {}
  NameGuard(const NameGuard&) = delete;
  NameGuard& operator=(const NameGuard&) = delete;
  ~NameGuard() { (void)Segment::destroy(name_); }
  const std::string& name() const noexcept { return name_; }
  std::string path() const { return shm_path(name_); }

 private:
  std::string name_;
};

/// Everything a failed call could have changed about a file.
struct FileSnapshot {
  bool exists = false;
  unsigned mode = 0;
  std::uint64_t size = 0;
  std::vector<unsigned char> bytes;
  friend bool operator==(const FileSnapshot&, const FileSnapshot&) = default;
};

inline FileSnapshot snapshot(const std::string& path) {
  FileSnapshot s;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.mode = st.st_mode & 07777;
  s.size = static_cast<std::uint64_t>(st.st_size);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return s;
  s.bytes.resize(s.size);
  std::size_t got = 0;
  while (got < s.bytes.size()) {
    const ssize_t n = ::pread(fd, s.bytes.data() + got, s.bytes.size() - got, static_cast<off_t>(got));
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  s.bytes.resize(got);
  ::close(fd);
  return s;
}

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

/// Creates `path` (which must not exist) with mode 0600 holding exactly `bytes`.
inline bool write_new_file(const std::string& path, const void* data, std::size_t size) {
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = true;
  std::size_t done = 0;
  while (ok && done < size) {
    const ssize_t n = ::write(fd, static_cast<const char*>(data) + done, size - done);
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  return ::close(fd) == 0 && ok;
}

/// Overwrites `size` bytes at `offset` of an existing file with ordinary file I/O, as
/// a stray writer or a disk-level corruption would.
inline bool patch_file(const std::string& path, std::uint64_t offset, const void* data, std::size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::pwrite(fd, data, size, static_cast<off_t>(offset)) == static_cast<ssize_t>(size);
  return ::close(fd) == 0 && ok;
}

template <class T>
bool patch_value(const std::string& path, std::uint64_t offset, const T& value) {
  return patch_file(path, offset, &value, sizeof value);
}

// ---------------------------------------------------------------------------------
// Child processes

struct ExitStatus {
  bool exited = false;  ///< ended by _exit/exit; `code` holds the status
  int code = -1;
  bool signaled = false;  ///< ended by a signal; `signal` names it
  int signal = 0;
  bool timed_out = false;  ///< did not end in time and was killed by the waiter
  bool ok() const noexcept { return exited && code == 0 && !timed_out; }
};

inline std::string describe(const ExitStatus& s) {
  if (s.timed_out) return "timed out (killed)";
  if (s.exited) return "exit code " + std::to_string(s.code);
  if (s.signaled) return std::string("signal ") + ::strsignal(s.signal);
  return "unknown status";
}

/// Runs `body` (returns int) in a forked child; the child ends with _exit(result).
/// Call it only while the calling process has no other threads running: a child of a
/// multi-threaded process may inherit a lock held by a thread it does not have.
template <class F>
pid_t spawn(F&& body) {
  std::fflush(nullptr);  // what is buffered now belongs to the parent alone
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;  // parent (or -1)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(120);  // the parent died before prctl took effect
  int rc = 121;
  try {
    rc = body();
  } catch (...) {
    rc = 122;
  }
  std::fflush(nullptr);
  ::_exit(rc);
}

inline ExitStatus decode(int status) {
  ExitStatus s;
  if (WIFEXITED(status)) {
    s.exited = true;
    s.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    s.signaled = true;
    s.signal = WTERMSIG(status);
  }
  return s;
}

/// Waits for one child; after `limit` the child is SIGKILLed and reported timed out.
inline ExitStatus wait_child(pid_t pid, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return decode(status);
    if (r < 0 && errno != EINTR) return ExitStatus{};
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ExitStatus s = decode(status);
      s.timed_out = true;
      return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Waits for every child against one shared deadline.
inline std::vector<ExitStatus> wait_children(const std::vector<pid_t>& pids,
                                             std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::vector<ExitStatus> out;
  out.reserve(pids.size());
  for (pid_t pid : pids) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    out.push_back(wait_child(pid, std::max(left, std::chrono::milliseconds(1))));
  }
  return out;
}

/// A pid that certainly names no live process: a child that has ended and was reaped.
/// (Only if the kernel recycles the pid before the caller uses it could it name a
/// live process again; pid allocation moves forward, so that takes a full wrap.)
inline pid_t dead_pid() {
  const pid_t pid = spawn([] { return 0; });
  (void)wait_child(pid);
  return pid;
}

/// Releases every waiting child at once: children block reading a pipe whose write
/// end the parent closes. A pipe (rather than a flag in shared memory) lets waiting
/// children sleep, which matters on a machine with fewer cores than children.
class StartGate {
 public:
  StartGate() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) fds_[0] = fds_[1] = -1;
  }
  StartGate(const StartGate&) = delete;
  StartGate& operator=(const StartGate&) = delete;
  ~StartGate() {
    for (int& fd : fds_)
      if (fd >= 0) ::close(fd);
  }
  bool valid() const noexcept { return fds_[0] >= 0; }
  /// In a child: drop the inherited write end (else EOF never comes), then block.
  void wait() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
    char c;
    while (::read(fds_[0], &c, 1) < 0 && errno == EINTR) {
    }
  }
  /// In the parent, after every child was forked.
  void open() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }

 private:
  int fds_[2];
};

/// Polls `pred` every `step` until it holds (true) or `limit` passes (false). Tests
/// wait for behaviour with a generous bound; they never assert a time.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10),
                std::chrono::milliseconds step = std::chrono::milliseconds(1)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(step);
  }
  return true;
}

/// `n` value-initialised Ts in MAP_SHARED anonymous memory: children forked after it
/// was made write to the same pages the parent reads. T must be usable across
/// processes (trivially copyable data, lock-free atomics).
template <class T>
class SharedArray {
 public:
  explicit SharedArray(std::size_t n) : n_(n) {
    void* p = ::mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<T*>(p);
    for (std::size_t i = 0; i < n_; ++i) new (data_ + i) T();
  }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  ~SharedArray() { ::munmap(data_, bytes()); }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* data() noexcept { return data_; }
  std::size_t size() const noexcept { return n_; }

 private:
  std::size_t bytes() const noexcept { return std::max<std::size_t>(1, n_ * sizeof(T)); }
  std::size_t n_;
  T* data_ = nullptr;
};

// ---------------------------------------------------------------------------------
// Seeds and scale

/// The seed of the running test: SHMSCHED_TEST_SEED when set (to replay a failure),
/// else a fresh random one. Printed and recorded so that any failure can be replayed.
inline std::uint64_t test_seed() {
  std::uint64_t seed = 0;
  if (const char* env = std::getenv("SHMSCHED_TEST_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 0);
  } else {
    std::random_device rd;
    seed = (std::uint64_t{rd()} << 32) ^ rd();
  }
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::printf("[   SEED   ] %s.%s: SHMSCHED_TEST_SEED=%llu\n", info ? info->test_suite_name() : "?",
              info ? info->name() : "?", static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

/// SHMSCHED_STRESS_SCALE (default 1): multiplies the work of the stress tests, so a
/// sanitizer run can ask for a fraction (e.g. 0.05) and a soak run for more.
inline double stress_scale() {
  if (const char* env = std::getenv("SHMSCHED_STRESS_SCALE"); env != nullptr && *env != '\0') {
    const double s = std::strtod(env, nullptr);
    if (s > 0) return s;
  }
  return 1.0;
}

/// `base` times the stress scale, at least `min`.
inline std::uint64_t scaled(std::uint64_t base, std::uint64_t min = 1) {
  const double v = static_cast<double>(base) * stress_scale();
  return std::max<std::uint64_t>(min, static_cast<std::uint64_t>(v));
}

/// SplitMix64: a tiny, well-mixed deterministic function of its input (for seeded
/// choices and checksums that producers and checkers compute independently).
constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace shmsched::test
