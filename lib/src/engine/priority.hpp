// Re-prioritise: a waiting task moves to another level. The mover claims it as a take
// does -- one CAS from the exact word it loaded (P1), so of a move and a take (or a
// promotion, an unpark, a cancel) exactly one wins -- writes the new level and puts the
// task back: a queued or parked one at the tail of its queue's ring of the new level
// (FIFO within it; a parked one acquires its permits again when taken), a delayed one in
// the delayed index. Its old ring entry stays and is dropped as a leftover. A mover
// killed after its claim leaves a running task of a dead owner, which the reaper requeues
// at its old level: the move did not happen (fault point priority_after_claim).
#pragma once

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
  for (std::uint32_t i = 0, end = core->scan_end(); i < end; ++i) {
    const TaskState st = state_of(core->ctrl[i].state.load(std::memory_order_acquire));
    if (st != TaskState::queued && st != TaskState::delayed && st != TaskState::parked) continue;
    const auto* b = core->hot(i);
    if ((detail::peek_field(b->flags) & detail::kHasGroup) == 0 || detail::peek_field(core->cold(i)->group_id) != group)
      continue;
    if (set_priority(detail::peek_field(b->id), level) == Errc::ok) ++moved;
  }
  return moved;
}

}  // namespace shmsched
