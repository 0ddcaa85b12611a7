// Layout: the size parameters of a segment, fixed at creation.
//
// Contract: a Layout is a plain value. `validate()` says whether a segment can be built
// from it; `hash()` is stored in the segment header so that an opener that expects a
// layout can tell a mismatch from a match. Any process may use it.
#pragma once

#include <cstdint>

#include "shmsched/error.hpp"

namespace shmsched {

struct Layout {
  /// Priority levels per queue, 1..kMaxLevels. Level 0 is the most urgent.
  std::uint32_t levels = 8;
  /// Task records in the table; a power of two, 2..kMaxTasks. Bounds the tasks that can
  /// be queued, delayed, running or dead-lettered at once.
  std::uint32_t task_capacity = 65536;
  /// Inline payload bytes per record; a multiple of 8, 0..kMaxPayload.
  std::uint32_t payload_bytes = 256;
  /// Slots per priority ring; a power of two >= 2, or 0 for "same as task_capacity"
  /// (then a ring can never fill before the table does).
  std::uint32_t ring_capacity = 0;
  /// Named queues, 1..kMaxQueues.
  std::uint32_t max_queues = 16;
  /// Attached processes at once, 1..kMaxParticipants.
  std::uint32_t max_participants = 64;
  /// Named semaphores, 0..kMaxSemaphores.
  std::uint32_t max_semaphores = 32;
  /// Task groups alive at once (created and not yet deleted), 0..kMaxGroups.
  std::uint32_t max_groups = 64;

  static constexpr std::uint32_t kMaxLevels = 16;
  static constexpr std::uint32_t kMaxTasks = 1u << 20;
  static constexpr std::uint32_t kMaxPayload = 1u << 16;
  static constexpr std::uint32_t kMaxQueues = 256;
  static constexpr std::uint32_t kMaxParticipants = 1023;
  static constexpr std::uint32_t kMaxSemaphores = 1024;
  static constexpr std::uint32_t kMaxGroups = 4096;

  /// The ring capacity actually used (resolves 0).
  std::uint32_t effective_ring_capacity() const noexcept { return ring_capacity == 0 ? task_capacity : ring_capacity; }
  Result<void> validate() const;
  /// FNV-1a over the fields in declaration order; equal layouts hash equal.
  std::uint64_t hash() const noexcept;
  friend bool operator==(const Layout&, const Layout&) = default;
};

}  // namespace shmsched
