// Atomic types allowed in shared memory. Every one is proven lock-free at compile time:
// a lock-based std::atomic would hold its lock in process-private memory and so would
// not synchronise two processes at all.
#pragma once

#include <atomic>
#include <cstdint>

namespace shmsched::detail {

using AtomicU64 = std::atomic<std::uint64_t>;
using AtomicI64 = std::atomic<std::int64_t>;
using AtomicU32 = std::atomic<std::uint32_t>;

static_assert(AtomicU64::is_always_lock_free, "64-bit atomics must be lock-free for shared memory");
static_assert(AtomicI64::is_always_lock_free, "64-bit atomics must be lock-free for shared memory");
static_assert(AtomicU32::is_always_lock_free, "32-bit atomics must be lock-free for shared memory");
// A futex word is a 32-bit integer; std::atomic<uint32_t> must be exactly that.
static_assert(sizeof(AtomicU32) == 4 && alignof(AtomicU32) == 4);
static_assert(sizeof(AtomicU64) == 8 && alignof(AtomicU64) == 8);

inline constexpr std::size_t kCacheLine = 64;

/// Advance a monotonic hint to at least `target`; never moves it backwards.
template <class A>
inline void advance_hint(A& hint, std::uint64_t target) noexcept {
  std::uint64_t cur = hint.load(std::memory_order_relaxed);
  // relaxed: a hint orders nothing; readers re-validate against the slot words.
  while (cur < target && !hint.compare_exchange_weak(cur, target, std::memory_order_relaxed)) {
  }
}

}  // namespace shmsched::detail
