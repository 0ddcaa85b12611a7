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
/// futex_wait and futex_wake on the low 32 bits of a 64-bit word (a task's state word,
/// whose low half holds its state, owner and the low bits of its version, so it changes
/// on every transition). The kernel only compares the four bytes at the address.
bool futex_wait_low(AtomicU64& word, std::uint32_t expected_low, std::int64_t timeout_ns) noexcept;
void futex_wake_low(AtomicU64& word, int n) noexcept;
/// futex_wake calls made by this process (tests prove the no-sleeper path makes none).
std::uint64_t futex_wake_calls() noexcept;

}  // namespace shmsched::detail
