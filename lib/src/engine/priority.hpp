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
  const std::uint32_t idx = core->id_index(id);
  if (id == kNoTask || idx >= core->capacity) return Errc::unknown_task;
  auto& state = core->ctrl[idx].state;
  auto* b = core->hot(idx);
  for (;;) {
    std::uint64_t s = state.load(std::memory_order_acquire);
    if (detail::peek_field(b->id) != id) return Errc::unknown_task;
    switch (state_of(s)) {
      case TaskState::queued:
      case TaskState::delayed:
      case TaskState::parked: {
        // (P1) acq_rel, as a take's claim (T2).
        std::uint64_t mine = next_word(s, TaskState::running, token);
        if (!state.compare_exchange_strong(s, mine, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
        SHMSCHED_FAULT_POINT(priority_after_claim);
        detail::set_field(b->level, level);
        if (state_of(s) == TaskState::delayed) return delay_record(idx, mine, detail::load_not_before(b));
        return requeue_record(idx, mine);
      }
      case TaskState::running:
      case TaskState::dead:
      case TaskState::done:
      case TaskState::cancelled:
        return Errc::not_waiting;
      case TaskState::virgin:
      case TaskState::free:
      case TaskState::reserved:
        return Errc::unknown_task;
    }
    return Errc::corrupt;  // no state at all: a damaged word
  }
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
