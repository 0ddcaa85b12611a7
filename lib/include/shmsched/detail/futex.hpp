// Futex on a 32-bit word in shared memory (non-private: other processes wait on it).
// Used only to sleep and to wake; never on a fast path.
#pragma once

#include <cstdint>

#include "shmsched/detail/atomic.hpp"

namespace shmsched::detail {

/// Sleeps while *word == expected, at most timeout_ns (< 0: no limit). Returns false
/// on timeout. Spurious returns are possible; callers re-check their condition.
bool futex_wait(AtomicU32& word, std::uint32_t expected, std::int64_t timeout_ns) noexcept;
/// Wakes up to n waiters of *word.
void futex_wake(AtomicU32& word, int n) noexcept;
/// futex_wake calls made by this process (tests prove the no-sleeper path makes none).
std::uint64_t futex_wake_calls() noexcept;

}  // namespace shmsched::detail
