// Named fault points: places in the protocols where crash tests kill a process.
//
// `SHMSCHED_FAULT_POINT(name)` marks a step. With SHMSCHED_FAULT_POINTS defined (test
// builds), a process armed with `fault::arm(point, n, action)` -- or through the
// environment variable SHMSCHED_FAULT=name:n[:kill|exit] -- dies at the n-th pass
// through that point (SIGKILL, _exit(99), or SIGSTOP to pause it there). Every pass is counted so a test can prove
// its workload reached the point. Without the definition the macro compiles to nothing.
//
// The list below is the one enumeration of every point; tests/crash iterates it.
#pragma once

#include <cstdint>
#include <string_view>

#define SHMSCHED_FAULT_POINT_LIST(X)                                                            \
  X(segment_init_after_create)    /* creator: object exists, header not written */              \
  X(segment_init_before_ready)    /* creator: header written, state not ready */                \
  X(participant_register_claimed) /* slot claimed, pid/start time not yet written */            \
  X(participant_deregister)       /* records released, slot not yet free */                     \
  X(participant_takeover_claimed) /* dead slot taken over, its records not yet recovered */     \
  X(task_alloc_reserved)          /* record reserved by its producer, not yet filled */         \
  X(enqueue_before_queued)        /* record filled, state still reserved */                     \
  X(enqueue_run_mid_publish)      /* some records of a run queued, the rest still reserved */   \
  X(ring_push_before_publish)     /* record queued with `where` set, slot not yet full */       \
  X(ring_push_after_publish)      /* slot full, tail hint not advanced */                       \
  X(ring_pop_before_clear)        /* record claimed by popper, slot still full */               \
  X(ring_clear_leftover)          /* about to clear a leftover entry found by a producer */     \
  X(take_after_claim)             /* consumer owns the record, attempt not yet counted */       \
  X(take_ahead_held)              /* record claimed ahead by a take, held, not handed out */    \
  X(complete_before_free)         /* handler finished, freeing CAS not yet made */              \
  X(delayed_after_state)          /* record delayed, its bit not yet set */                     \
  X(promote_after_claim)          /* due record queued by promoter, not yet in a ring */        \
  X(reap_after_claim)             /* reaper owns the dead slot, records not yet recovered */    \
  X(reap_mid_records)             /* reaper recovered some of the dead one's records */         \
  X(sem_acquire_ledger)           /* ledger slots claimed, permit bits not yet set */           \
  X(sem_acquire_granted)          /* permit bits set (granted), caller not yet told */          \
  X(sem_release_bits_cleared)     /* permit bits cleared, ledger slots not yet */               \
  X(park_after_push)              /* task parked in the park ring, no re-check yet */           \
  X(unpark_after_claim)           /* parked task claimed by a releaser, not yet moved */        \
  X(result_before_done)           /* result written into the record, state still running */     \
  X(result_after_claim)           /* kept result claimed by a reader, not yet read or freed */  \
  X(cancel_after_claim)           /* waiting task claimed by a canceller, not yet cancelled */  \
  X(priority_after_claim)         /* waiting task claimed by a mover, level not yet changed */  \
  X(group_step_noted)             /* group count step noted, the record not yet moved */        \
  X(group_step_moved)             /* record moved by a counted step, its count not yet added */ \
  X(group_before_finish)          /* sealed group's last member counted, group not finished */  \
  X(gate_after_claim)             /* waiting task claimed by its releaser, not yet queued */    \
  X(outcome_before_release)       /* kept task finished, its dependents not yet released */     \
  X(schedule_noted)               /* occurrence filled and noted, its due time not claimed */   \
  X(schedule_claimed)             /* due time claimed, the occurrence not yet published */      \
  X(schedule_published)           /* occurrence published, the due time not yet advanced */

namespace shmsched::fault {

enum class Point : std::uint8_t {
#define SHMSCHED_X(name) name,
  SHMSCHED_FAULT_POINT_LIST(SHMSCHED_X)
#undef SHMSCHED_X
      count_
};
inline constexpr std::size_t kPointCount = static_cast<std::size_t>(Point::count_);

/// kill: SIGKILL; exit: _exit(99); stop: SIGSTOP, so a test can act on the segment
/// while the process sits at the point and then let it go on (SIGCONT).
enum class Action : std::uint8_t { kill, exit, stop };

std::string_view name(Point p) noexcept;
/// Looks a point up by name; false when there is none.
bool from_name(std::string_view s, Point& out) noexcept;
/// Die at the n-th (1-based) pass through `p` from now on in this process.
void arm(Point p, std::uint64_t nth, Action action = Action::kill) noexcept;
void disarm() noexcept;
/// Passes through `p` in this process since start (fault-point builds only).
std::uint64_t passes(Point p) noexcept;
/// Whether this build has fault points compiled in (only the tests' shmsched_faults).
inline constexpr bool enabled() noexcept {
#ifdef SHMSCHED_FAULT_POINTS
  return true;
#else
  return false;
#endif
}
void hit(Point p) noexcept;

}  // namespace shmsched::fault

#ifdef SHMSCHED_FAULT_POINTS
#define SHMSCHED_FAULT_POINT(name) ::shmsched::fault::hit(::shmsched::fault::Point::name)
#else
#define SHMSCHED_FAULT_POINT(name) ((void)0)
#endif
