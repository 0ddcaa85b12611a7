// The 64-bit state word of a task record: the single source of truth for a record.
//
//   bits  0..3   state (TaskState)
//   bits  4..19  owner: participant token (0 = none); see participant.hpp
//   bits 20..63  version: +1 on every transition, so a CAS never succeeds against a
//                word that left and came back (no ABA), for 2^44 transitions a record.
//
// Every transition is one compare-exchange from an exact word the caller loaded, to a
// word next_word() computes; transition_allowed() is the one table of the moves a record
// may make, and next_word() checks every move against it in the tests' builds (those with
// fault points) and in builds with assertions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shmsched {

/// Where a task record is in its life. Only the state word says so.
enum class TaskState : std::uint8_t {
  virgin = 0,     ///< never used since the segment was created (implicitly free)
  free = 1,       ///< unused; any producer may reserve it
  reserved = 2,   ///< allocated and being filled by its owner; not yet accepted
  queued = 3,     ///< accepted; in the priority ring named by `where`, or being put there
  running = 4,    ///< accepted; held by its owner (a handler runs it, or it is moving)
  delayed = 5,    ///< accepted; waits for its not-before time in the delayed index
  parked = 6,     ///< accepted; waits for a semaphore permit
  dead = 7,       ///< dead-lettered, with its reason in last_error
  done = 8,       ///< finished with keep_result: holds its result until taken, expired or evicted
  cancelled = 9,  ///< cancelled with keep_result: kept, like done, for whoever waits or asks
  waiting = 10,   ///< accepted; waits for its gate (a parent task or a group) to finish
};

/// The number of states (a state word's state field holds up to 16 values).
inline constexpr std::size_t kTaskStates = 11;

/// A state's name, as docs and tools print it; "?" for a value that is no state.
constexpr std::string_view to_string(TaskState s) noexcept {
  switch (s) {
    case TaskState::virgin:
      return "virgin";
    case TaskState::free:
      return "free";
    case TaskState::reserved:
      return "reserved";
    case TaskState::queued:
      return "queued";
    case TaskState::running:
      return "running";
    case TaskState::delayed:
      return "delayed";
    case TaskState::parked:
      return "parked";
    case TaskState::dead:
      return "dead";
    case TaskState::done:
      return "done";
    case TaskState::cancelled:
      return "cancelled";
    case TaskState::waiting:
      return "waiting";
  }
  return "?";
}

// kTaskStates counts every named state: a state added without its count fails here.
static_assert(to_string(static_cast<TaskState>(kTaskStates - 1)) != "?" &&
              to_string(static_cast<TaskState>(kTaskStates)) == "?");

/// Accepted and not yet finished: the task will still run (or is running).
constexpr bool is_outstanding(TaskState s) noexcept {
  switch (s) {
    case TaskState::queued:
    case TaskState::running:
    case TaskState::delayed:
    case TaskState::parked:
    case TaskState::waiting:
      return true;
    case TaskState::virgin:
    case TaskState::free:
    case TaskState::reserved:
    case TaskState::dead:
    case TaskState::done:
    case TaskState::cancelled:
      return false;
  }
  return false;
}

/// The record's queue field names the queue it belongs to (outstanding, dead, or done or
/// cancelled with its outcome kept); in the other states the field is left over from an earlier task, or
/// not written yet.
constexpr bool names_queue(TaskState s) noexcept {
  return is_outstanding(s) || s == TaskState::dead || s == TaskState::done || s == TaskState::cancelled;
}

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
/// Whether a record may go from `from` to `to`: the engine's one transition table. A
/// move to the same state changes the owner (recovery takes over a dead owner's record or
/// drops its name). No `default:`: a new state fails to compile here (-Wswitch-enum)
/// until its moves are written down.
constexpr bool transition_allowed(TaskState from, TaskState to) noexcept {
  switch (from) {
    case TaskState::virgin:  // reserved by a producer
      return to == TaskState::reserved;
    case TaskState::free:  // reserved, or its dead last owner's name dropped
      return to == TaskState::reserved || to == TaskState::free;
    case TaskState::reserved:  // accepted (queued, delayed or waiting), or given back
      return to == TaskState::queued || to == TaskState::delayed || to == TaskState::waiting || to == TaskState::free;
    case TaskState::queued:  // taken; a dead owner's name dropped; given back unpublished
      return to == TaskState::running || to == TaskState::queued || to == TaskState::free;
    case TaskState::running:  // done (freed, or keeping its result), requeued, parked, retried later,
                              // dead-lettered, taken over; a released task back to waiting
      return to == TaskState::free || to == TaskState::done || to == TaskState::cancelled || to == TaskState::queued ||
             to == TaskState::parked || to == TaskState::delayed || to == TaskState::dead || to == TaskState::running ||
             to == TaskState::waiting;
    case TaskState::delayed:  // due: promoted
      return to == TaskState::running;
    case TaskState::parked:  // unparked or handed over; a dead owner's name dropped
      return to == TaskState::running || to == TaskState::parked;
    case TaskState::dead:  // requeued or purged
      return to == TaskState::running || to == TaskState::free;
    case TaskState::waiting:  // released, cancelled or moved: claimed first, as a take claims
      return to == TaskState::running;
    case TaskState::done:       // claimed by a reader or a dead reader's name dropped; taken, expired or evicted
    case TaskState::cancelled:  // the same, for a kept cancellation
      return to == from || to == TaskState::free;
  }
  return false;  // no state at all: a damaged word
}

/// Reports a move the table does not allow, then aborts (a bug in the engine).
[[noreturn]] void illegal_transition(std::uint64_t from_word, TaskState to) noexcept;

/// The word that follows `w` with a new state and owner (version + 1).
constexpr std::uint64_t next_word(std::uint64_t w, TaskState s, std::uint16_t owner) noexcept {
#if SHMSCHED_FAULT_POINTS || !defined(NDEBUG)
  if (!transition_allowed(state_of(w), s)) illegal_transition(w, s);
#endif
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
