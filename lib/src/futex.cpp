#include "shmsched/detail/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace shmsched::detail {

namespace {
std::atomic<std::uint64_t> g_wake_calls{0};

long sys_futex(void* addr, int op, std::uint32_t val, const timespec* ts) noexcept {
  return ::syscall(SYS_futex, addr, op, val, ts, nullptr, 0);
}
}  // namespace

bool futex_wait(AtomicU32& word, std::uint32_t expected, std::int64_t timeout_ns) noexcept {
  timespec ts{};
  const timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
    tsp = &ts;
  }
  // FUTEX_WAIT (not _PRIVATE): the word is in memory shared between processes.
  const long r = sys_futex(static_cast<void*>(&word), FUTEX_WAIT, expected, tsp);
  return !(r == -1 && errno == ETIMEDOUT);
}

void futex_wake(AtomicU32& word, int n) noexcept {
  g_wake_calls.fetch_add(1, std::memory_order_relaxed);
  sys_futex(static_cast<void*>(&word), FUTEX_WAKE, static_cast<std::uint32_t>(n), nullptr);
}

std::uint64_t futex_wake_calls() noexcept {
  return g_wake_calls.load(std::memory_order_relaxed);
}

}  // namespace shmsched::detail
