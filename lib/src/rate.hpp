// Rate limits: the generic cell rate algorithm over one word (RateLimit::tat). A token
// is one CAS that moves the theoretical arrival time on by the interval; the token is
// due at max(tat, now) - tolerance, so up to `burst` tokens are due at once and then one
// per interval. No lock, no syscall, no retry loop: a token taken before it is due is
// still the caller's, and the caller waits for its time (the engine delays the task,
// engine: rate_gate in semaphore.cpp). docs/resources.md, "Rate limits".
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "shmsched/detail/shm_structs.hpp"

namespace shmsched::detail {

/// Whether `r` limits anything.
inline bool rate_limited(const RateLimit& r) noexcept {
  return r.interval_ns.load(std::memory_order_relaxed) != 0;
}

/// Takes one token of `r` at `now` (CLOCK_MONOTONIC ns); returns when it is due (<= now:
/// at once). An unlimited `r` returns `now`.
inline std::int64_t take_token(RateLimit& r, std::int64_t now) noexcept {
  // relaxed: the words are the whole state; no other memory is published with them.
  const std::int64_t interval = r.interval_ns.load(std::memory_order_relaxed);
  if (interval <= 0) return now;
  const std::int64_t tolerance = std::max<std::int64_t>(0, r.tolerance_ns.load(std::memory_order_relaxed));
  std::int64_t tat = r.tat.load(std::memory_order_relaxed);
  for (;;) {
    // A time far ahead (a corrupt word, or a rate lowered after a backlog) never pushes
    // a token beyond an hour past the work already admitted.
    const std::int64_t from = std::clamp<std::int64_t>(tat, now, now + 3'600'000'000'000);
    if (r.tat.compare_exchange_weak(tat, from + interval, std::memory_order_relaxed)) {
      r.granted.fetch_add(1, std::memory_order_relaxed);
      return from - tolerance;
    }
  }
}

/// Sets the rate: `per_second` tokens a second (0 = no limit), `burst` at once (>= 1).
inline void set_rate(RateLimit& r, double per_second, std::uint32_t burst) noexcept {
  const std::int64_t interval =
      per_second <= 0 ? 0 : std::max<std::int64_t>(1, static_cast<std::int64_t>(1e9 / per_second));
  r.tolerance_ns.store(static_cast<std::int64_t>(std::max<std::uint32_t>(burst, 1) - 1) * interval,
                       std::memory_order_relaxed);
  r.interval_ns.store(interval, std::memory_order_relaxed);
}

/// The rate a limit has (tokens a second; 0 = none) and its burst.
inline double rate_per_second(const RateLimit& r) noexcept {
  const std::int64_t i = r.interval_ns.load(std::memory_order_relaxed);
  return i <= 0 ? 0.0 : 1e9 / static_cast<double>(i);
}
inline std::uint32_t rate_burst(const RateLimit& r) noexcept {
  const std::int64_t i = r.interval_ns.load(std::memory_order_relaxed);
  return i <= 0 ? 0 : static_cast<std::uint32_t>(r.tolerance_ns.load(std::memory_order_relaxed) / i + 1);
}

}  // namespace shmsched::detail
