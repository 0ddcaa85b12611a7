// Recovery: finishing or undoing what a dead or departing participant left in records,
// state by state (its permits: semaphore.cpp's sweep_ledgers). Who is dead, and the
// reaping: participants.hpp. docs/ring-protocol.md: "Participants, reaping and fencing". The switch in
// recover_records names every TaskState: a new state does not compile until its
// recovery is written.
#pragma once

#include "impl.hpp"

namespace shmsched {

// Finish or undo everything the (dead, or departing) owner `dead` left in records.
inline void Client::Impl::recover_records(DeadOwner dead, ReapReport& rep) noexcept {
  // Its group count steps first, before any of its records moves on, and its
  // announcements as an adder (groups.hpp); its firing of a schedule, while the
  // occurrence's record is still as it left it (schedules.hpp).
  finish_step(dead.index - 1);
  finish_firing(dead.index - 1);
  for (std::uint32_t idx = 0, end = core->scan_end(); idx < end; ++idx) {
    auto& c = core->ctrl[idx];
    std::uint64_t s = c.state.load(std::memory_order_acquire);
    if (s == 0 || !dead.matches(owner_of(s))) continue;
    switch (state_of(s)) {
      case TaskState::reserved:  // never accepted: give the record back
        if (free_record(idx, s) == Errc::ok) ++rep.freed;
        break;
      case TaskState::free:  // drop the dead owner's name
        c.state.compare_exchange_strong(s, next_word(s, TaskState::free, 0), std::memory_order_acq_rel);
        break;
      case TaskState::queued:
      case TaskState::parked: {
        const std::uint64_t wh = c.where.load(std::memory_order_relaxed);
        const std::uint16_t rid = detail::where_ring(wh);
        if (core->valid_ring(rid) && core->ring(rid).holds(detail::where_pos(wh), idx)) {
          // Published: drop the dead owner's name from it (a consumer racing us just
          // wins; its CAS reloads).
          c.state.compare_exchange_strong(s, next_word(s, state_of(s), 0), std::memory_order_acq_rel);
          break;
        }
        // Accepted but never published (died between S1 and R3): publish it.
        const std::uint64_t next = next_word(s, TaskState::running, token);
        if (c.state.compare_exchange_strong(s, next, std::memory_order_acq_rel) &&
            requeue_record(idx, next) == Errc::ok)
          ++rep.republished;
        break;
      }
      case TaskState::running: {
        const std::uint64_t next = next_word(s, TaskState::running, token);
        if (!c.state.compare_exchange_strong(s, next, std::memory_order_acq_rel)) break;
        auto* b = core->hot(idx);
        if ((b->flags & detail::kHasGate) != 0 && b->attempts == 0) {  // released, never started: by its gate again
          (void)settle_gated(idx, next);
        } else if (const char* defect = record_defect(idx)) {
          if (dead_letter_record(idx, next, defect) == Errc::ok) ++rep.dead_lettered;
        } else if (b->attempts >= b->max_attempts) {
          if (dead_letter_record(idx, next, "consumer died while running it") == Errc::ok) {
            ++rep.dead_lettered;
            bump(counters(b->queue, b->level).dead);
          }
        } else if (requeue_record(idx, next) == Errc::ok) {
          ++rep.requeued;
        }
        break;
      }
      case TaskState::delayed:
        mark_delayed(idx, detail::load_not_before(core->hot(idx)));
        break;
      case TaskState::done:  // a reader died holding the outcome: it stays kept, for the next reader
      case TaskState::cancelled:
        c.state.compare_exchange_strong(s, next_word(s, state_of(s), 0), std::memory_order_acq_rel);
        break;
      case TaskState::waiting: {  // its creator may have died before its look at the gate
        const std::uint64_t next = next_word(s, TaskState::running, token);
        if (c.state.compare_exchange_strong(s, next, std::memory_order_acq_rel)) (void)settle_gated(idx, next);
        break;
      }
      case TaskState::virgin:  // owns nothing
      case TaskState::dead:    // owned by nobody in particular: stays a dead letter
        break;
    }
    SHMSCHED_FAULT_POINT(reap_mid_records);
  }
  // A finisher killed between a kept task's finish and the release of the tasks that
  // wait for it (publish_outcome) left them waiting: release them now.
  release_dependents();
}

}  // namespace shmsched
