// Small helpers of the engine over one record's fields and the clock (detail: lib/src
// only, never installed).
#pragma once

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
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

// The fields of a record that Client::status reads while another process may own the
// record: their owner writes them with set_field, the reader reads with peek_field.
// Relaxed atomics (plain moves on x86-64): a reader that races with a reuse reads some
// whole value, never a torn one, and finds out from the state word's version that it
// must read again.
template <class T>
inline void set_field(T& field, T value) noexcept {
  std::atomic_ref<T>(field).store(value, std::memory_order_relaxed);
}
template <class T>
inline T peek_field(const T& field) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(std::memory_order_relaxed);  // NOLINT: load only
}

// A record's last error, written and read a byte at a time as relaxed atomics (for the
// same reason as set_field; a slow path). NUL-terminated within the field.
inline void store_error(TaskCold* c, std::string_view s) noexcept {
  const std::size_t n = std::min(s.size(), sizeof c->last_error - 1);
  for (std::size_t i = 0; i < n; ++i) set_field(c->last_error[i], s[i]);
  set_field(c->last_error[n], '\0');
}
inline std::string load_error(const TaskCold* c) {
  std::string out;
  for (const char& ch : c->last_error) {
    const char v = peek_field(ch);
    if (v == '\0') break;
    out.push_back(v);
  }
  return out;
}

inline void copy_cstr(char* dst, std::size_t cap, std::string_view s) noexcept {
  const std::size_t n = std::min(s.size(), cap - 1);
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

}  // namespace shmsched::detail
