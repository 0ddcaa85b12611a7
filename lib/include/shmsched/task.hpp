// Tasks: what a producer enqueues and what a consumer takes.
//
// Contract: a task is a fixed-size record in the segment's task table: type name,
// queue, priority level, attempt count, retry policy, not-before time, expiry, group id,
// resource needs, last error, and inline payload bytes (at most Layout::payload_bytes;
// more is Errc::payload_too_large). Its id is unique per segment: (version of the
// record's state word when it was reserved) << log2(capacity) | record index.
// Payloads are bytes; helpers copy trivially copyable values and strings.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "shmsched/detail/state_word.hpp"
#include "shmsched/queue.hpp"
#include "shmsched/semaphore.hpp"

namespace shmsched {

using TaskId = std::uint64_t;
inline constexpr TaskId kNoTask = 0;

/// How a failed attempt is retried: delay * (backoff_x100/100)^(attempt-1), capped at
/// max_delay, plus up to jitter_pct percent of random extra.
struct RetryPolicy {
  std::chrono::milliseconds delay{1000};
  std::uint16_t backoff_x100 = 200;
  std::chrono::milliseconds max_delay{60000};
  std::uint16_t jitter_pct = 10;
};

/// Everything about a task except its type and payload.
struct TaskOptions {
  QueueId queue = 0;
  std::uint8_t priority = 0;       ///< level, 0 = most urgent; < Layout::levels
  std::uint16_t max_attempts = 3;  ///< >= 1
  RetryPolicy retry{};
  std::int64_t not_before_ns = 0;  ///< CLOCK_MONOTONIC; 0 = runnable now (see after())
  std::int64_t expires_ns = 0;     ///< CLOCK_MONOTONIC; 0 = never
  std::uint64_t group_id = 0;
  /// Semaphores the task needs while it runs (up to two; count 0 = unused).
  Need needs[2] = {};

  /// Sets not_before to now + d.
  TaskOptions& after(std::chrono::nanoseconds d);
};

/// One task of a batch.
struct TaskSpec {
  std::string_view type;
  std::span<const std::byte> payload;
  TaskOptions options;
};

template <class T>
std::span<const std::byte> as_payload(const T& value) noexcept {
  static_assert(std::is_trivially_copyable_v<T>, "payloads of this kind must be trivially copyable");
  return std::as_bytes(std::span<const T, 1>(&value, 1));
}
inline std::span<const std::byte> as_payload(std::string_view s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}
/// Copies a payload back into a trivially copyable value; false when the size differs.
template <class T>
bool payload_to(std::span<const std::byte> payload, T& out) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  if (payload.size() != sizeof(T)) return false;
  std::memcpy(&out, payload.data(), sizeof(T));
  return true;
}

/// FNV-1a 64 of a task-type name (stored as the record's type).
constexpr std::uint64_t type_hash(std::string_view name) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// A task taken by a consumer. Valid until completed, retried or dead-lettered; the
/// views point into the segment (no copy).
struct Taken {
  std::uint32_t index = 0;
  std::uint64_t word = 0;  ///< the record's state word as this consumer set it
  TaskId id = kNoTask;
  QueueId queue = 0;
  std::uint8_t level = 0;
  std::uint16_t attempt = 0;  ///< 1 on the first run
  std::uint16_t max_attempts = 0;
  std::uint64_t type = 0;
  std::string_view type_name;
  std::span<const std::byte> payload;
  std::int64_t enqueued_ns = 0;
  bool helped = false;  ///< taken by a helper (from a queue not its home)
  Need needs[2] = {};   ///< the task's own needs (count 0 = unused)
  explicit operator bool() const noexcept { return id != kNoTask; }
};

}  // namespace shmsched
