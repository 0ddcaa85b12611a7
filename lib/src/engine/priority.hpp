// Re-prioritise: a waiting task moves to another level. The mover claims it as a take
// does -- one CAS from the exact word it loaded (P1), so of a move and a take (or a
// promotion, an unpark, a cancel) exactly one wins -- writes the new level and puts the
// task back: a queued or parked one at the tail of its queue's ring of the new level
// (FIFO within it; a parked one acquires its permits again when taken), a delayed one in
// the delayed index. Its old ring entry stays and is dropped as a leftover. A mover
// killed after its claim leaves a running task of a dead owner, which the reaper requeues
// at its old level: the move did not happen (fault point priority_after_claim).
#pragma once

#include "cancel.hpp"
#include "impl.hpp"

namespace shmsched {

inline Errc Client::Impl::set_priority(TaskId id, std::uint8_t level) noexcept {
  if (level >= core->levels) return Errc::invalid_argument;
  std::uint32_t idx = 0;
  std::uint64_t was = 0, mine = 0;
  switch (claim_waiting(id, idx, was, mine)) {  // (P1) = (C1): the claim of a waiting task
    case Waiting::claimed: {
      SHMSCHED_FAULT_POINT(priority_after_claim);
      auto* b = core->hot(idx);
      detail::set_field(b->level, level);
      if (state_of(was) == TaskState::delayed) return delay_record(idx, mine, detail::load_not_before(b));
      if (state_of(was) == TaskState::waiting) return settle_gated(idx, mine);  // waits on at its new level
      return requeue_record(idx, mine);
    }
    case Waiting::running:
    case Waiting::finished:
      return Errc::not_waiting;
    case Waiting::unknown:
      return Errc::unknown_task;
  }
  return Errc::unknown_task;
}

// set_priority for every waiting task of `group`; how many moved.
inline std::size_t Client::Impl::set_group_priority(std::uint64_t group, std::uint8_t level) noexcept {
  std::size_t moved = 0;
  for_each_matching(kAnyQueue, 0, group, [&](TaskId id) { moved += set_priority(id, level) == Errc::ok; });
  return moved;
}

}  // namespace shmsched
