// Cache-line prefetch hints the compiler cannot drop.
//
// GCC 12 at -O3 deletes some __builtin_prefetch calls: in the single take's look-ahead
// (Client::Impl::prefetch_next_takes) the two prefetches of the next record's body vanished
// from the optimised code while the prefetch of its control word stayed, and a take
// from a deep queue spread over eight levels then waited for both lines every time
// (about 175 ns a take with completion instead of about 40; docs/benchmarks.md). An
// asm volatile statement is never removed or merged, so each call below is exactly one
// PREFETCHT0 -- the instruction GCC emits for __builtin_prefetch(p, 1, 3) on the
// baseline x86-64 target. A hint only: it never faults and changes no value.
#pragma once

namespace shmsched::detail {

/// Starts fetching the line holding `p` into every cache level, for a read or a write
/// that follows soon.
inline void prefetch(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace shmsched::detail
