// Small helpers of the engine over one record's fields and the clock (detail: lib/src
// only, never installed).
#pragma once

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "shmsched/detail/shm_structs.hpp"
#include "shmsched/detail/state_word.hpp"

namespace shmsched::detail {

// CLOCK_MONOTONIC_COARSE: a few ns instead of ~20; enqueue times feed ages and aging
// bounds (milliseconds and up), not latency measurements.
inline std::int64_t coarse_now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

inline bool is_free(std::uint64_t s) noexcept {
  return state_of(s) == TaskState::free || state_of(s) == TaskState::virgin;
}

// enqueued_ns is read by agers that do not own the record: atomic_ref on both sides.
inline std::int64_t load_enqueued(TaskHot* b) noexcept {
  return std::atomic_ref<std::int64_t>(b->enqueued_ns).load(std::memory_order_relaxed);
}

inline std::int64_t load_not_before(TaskHot* b) noexcept {
  // atomic_ref: promoters read it while they do not own the record.
  return std::atomic_ref<std::int64_t>(b->not_before_ns).load(std::memory_order_relaxed);
}
inline void store_not_before(TaskHot* b, std::int64_t v) noexcept {
  std::atomic_ref<std::int64_t>(b->not_before_ns).store(v, std::memory_order_relaxed);
}

inline void copy_cstr(char* dst, std::size_t cap, std::string_view s) noexcept {
  const std::size_t n = std::min(s.size(), cap - 1);
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

}  // namespace shmsched::detail
