#include "shmsched/detail/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>

namespace shmsched::detail {

namespace {
std::atomic<std::uint64_t> g_wake_calls{0};

long sys_futex(void* addr, int op, std::uint32_t val, const timespec* ts) noexcept {
  return ::syscall(SYS_futex, addr, op, val, ts, nullptr, 0);
}
}  // namespace

namespace {
bool wait_on(void* addr, std::uint32_t expected, std::int64_t timeout_ns) noexcept {
  timespec ts{};
  const timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
    tsp = &ts;
  }
  // FUTEX_WAIT (not _PRIVATE): the word is in memory shared between processes.
  const long r = sys_futex(addr, FUTEX_WAIT, expected, tsp);
  return !(r == -1 && errno == ETIMEDOUT);
}

void wake_on(void* addr, int n) noexcept {
  g_wake_calls.fetch_add(1, std::memory_order_relaxed);
  sys_futex(addr, FUTEX_WAKE, static_cast<std::uint32_t>(n), nullptr);
}

// The low half of a 64-bit word: its first four bytes on a little-endian machine.
static_assert(std::endian::native == std::endian::little, "futex on a 64-bit word's low half");
void* low_half(AtomicU64& word) noexcept {
  return static_cast<void*>(&word);
}
}  // namespace

bool futex_wait(AtomicU32& word, std::uint32_t expected, std::int64_t timeout_ns) noexcept {
  return wait_on(static_cast<void*>(&word), expected, timeout_ns);
}

void futex_wake(AtomicU32& word, int n) noexcept {
  wake_on(static_cast<void*>(&word), n);
}

bool futex_wait_low(AtomicU64& word, std::uint32_t expected_low, std::int64_t timeout_ns) noexcept {
  return wait_on(low_half(word), expected_low, timeout_ns);
}

void futex_wake_low(AtomicU64& word, int n) noexcept {
  wake_on(low_half(word), n);
}

std::uint64_t futex_wake_calls() noexcept {
  return g_wake_calls.load(std::memory_order_relaxed);
}

}  // namespace shmsched::detail
