// The 64-bit state word of a task record: the single source of truth for a record.
//
//   bits  0..3   state (TaskState)
//   bits  4..19  owner: participant token (0 = none); see participant.hpp
//   bits 20..63  version: +1 on every transition, so a CAS never succeeds against a
//                word that left and came back (no ABA), for 2^44 transitions a record.
//
// Every transition is one compare-exchange from an exact word the caller loaded.
#pragma once

#include <cstdint>

namespace shmsched {

/// Where a task record is in its life. Only the state word says so.
enum class TaskState : std::uint8_t {
  virgin = 0,    ///< never used since the segment was created (implicitly free)
  free = 1,      ///< unused; any producer may reserve it
  reserved = 2,  ///< allocated and being filled by its owner; not yet accepted
  queued = 3,    ///< accepted; in the priority ring named by `where`, or being put there
  running = 4,   ///< accepted; held by its owner (a handler runs it, or it is moving)
  delayed = 5,   ///< accepted; waits for its not-before time in the delayed index
  parked = 6,    ///< accepted; waits for a semaphore permit
  dead = 7,      ///< dead-lettered, with its reason in last_error
};

namespace detail {

inline constexpr std::uint64_t kStateMask = 0xF;
inline constexpr unsigned kOwnerShift = 4;
inline constexpr std::uint64_t kOwnerMask = 0xFFFF;
inline constexpr unsigned kVersionShift = 20;

constexpr TaskState state_of(std::uint64_t w) noexcept {
  return static_cast<TaskState>(w & kStateMask);
}
constexpr std::uint16_t owner_of(std::uint64_t w) noexcept {
  return static_cast<std::uint16_t>((w >> kOwnerShift) & kOwnerMask);
}
constexpr std::uint64_t version_of(std::uint64_t w) noexcept {
  return w >> kVersionShift;
}
/// The word that follows `w` with a new state and owner (version + 1).
constexpr std::uint64_t next_word(std::uint64_t w, TaskState s, std::uint16_t owner) noexcept {
  return ((version_of(w) + 1) << kVersionShift) | (std::uint64_t{owner} << kOwnerShift) | static_cast<std::uint64_t>(s);
}

// `where` word of a record: which ring and which 48-bit position it was last put at.
// Positions are compared for equality only, and a ring reuses a slot only after the
// entry at the old position was cleared, so 48 bits (2.8e14 pushes per ring) suffice.
inline constexpr unsigned kWherePosBits = 48;
inline constexpr std::uint64_t kWherePosMask = (std::uint64_t{1} << kWherePosBits) - 1;
inline constexpr std::uint16_t kNoRing = 0xFFFF;
constexpr std::uint64_t make_where(std::uint16_t ring, std::uint64_t pos) noexcept {
  return (std::uint64_t{ring} << kWherePosBits) | (pos & kWherePosMask);
}
constexpr std::uint16_t where_ring(std::uint64_t w) noexcept {
  return static_cast<std::uint16_t>(w >> kWherePosBits);
}
constexpr std::uint64_t where_pos(std::uint64_t w) noexcept {
  return w & kWherePosMask;
}

}  // namespace detail
}  // namespace shmsched
