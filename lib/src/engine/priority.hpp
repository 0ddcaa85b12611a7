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

// A claimed waiting task (its word was `was`, now ours as `mine`) put back at `level`.
inline Errc Client::Impl::put_at_level(std::uint32_t idx, std::uint64_t was, std::uint64_t mine,
                                       std::uint8_t level) noexcept {
  auto* b = core->hot(idx);
  detail::set_field(b->level, level);
  if (state_of(was) == TaskState::delayed) return delay_record(idx, mine, detail::load_not_before(b));
  if (state_of(was) == TaskState::waiting) return settle_gated(idx, mine);  // waits on at its new level
  return requeue_record(idx, mine);
}

inline Errc Client::Impl::set_priority(TaskId id, std::uint8_t level) noexcept {
  if (level >= core->levels) return Errc::invalid_argument;
  std::uint32_t idx = 0;
  std::uint64_t was = 0, mine = 0;
  switch (claim_waiting(id, idx, was, mine)) {  // (P1) = (C1): the claim of a waiting task
    case Waiting::claimed:
      SHMSCHED_FAULT_POINT(priority_after_claim);
      return put_at_level(idx, was, mine, level);
    case Waiting::running:
    case Waiting::finished:
      return Errc::not_waiting;
    case Waiting::unknown:
      return Errc::unknown_task;
  }
  return Errc::unknown_task;
}

// Moves waiting task `id` from level `from` to `to`; with `restart`, its wait counts
// again from `now`. Claimed as set_priority claims; a task taken or moved meanwhile is
// left as it is (one found at another level once claimed is put back at its own).
inline bool Client::Impl::shift_one(TaskId id, std::uint8_t from, std::uint8_t to, bool restart,
                                    std::int64_t now) noexcept {
  std::uint32_t idx = 0;
  std::uint64_t was = 0, mine = 0;
  if (claim_waiting(id, idx, was, mine) != Waiting::claimed) return false;
  auto* b = core->hot(idx);
  const bool here = b->level == from;
  if (here && restart) std::atomic_ref<std::int64_t>(b->enqueued_ns).store(now, std::memory_order_relaxed);
  return put_at_level(idx, was, mine, here ? to : b->level) == Errc::ok && here;
}

// Every waiting task of queue q at level `from` to level `to`, in table order.
inline std::size_t Client::Impl::shift_level(QueueId q, std::uint8_t from, std::uint8_t to) noexcept {
  std::size_t moved = 0;
  for_each_matching(q, 0, 0, [&](TaskId id) {
    if (detail::peek_field(core->hot(core->id_index(id))->level) == from) moved += shift_one(id, from, to, false, 0);
  });
  return moved;
}

// The janitor's aging by promotion (AgingMode::promote): in each such queue, one pass
// over the table moves the tasks that have waited longer than the bound at their level
// up one level, and their wait counts again from there.
inline void Client::Impl::promote_aged() noexcept {
  for (std::uint32_t qi = 0; qi < core->layout.max_queues; ++qi) {
    const auto q = static_cast<QueueId>(qi);
    const auto& e = core->queues[q];
    if ((e.flags.load(std::memory_order_relaxed) & detail::QueueEntry::kAgingPromotes) == 0) continue;
    const std::int64_t bound_ns = std::int64_t{e.aging_ms.load(std::memory_order_relaxed)} * 1'000'000;
    if (bound_ns == 0) continue;
    const std::int64_t now = detail::coarse_now_ns();
    for_each_matching(q, 0, 0, [&](TaskId id) {
      const auto* b = core->hot(core->id_index(id));
      const std::uint8_t level = detail::peek_field(b->level);
      if (level == 0 || detail::sub_sat(now, detail::load_enqueued(const_cast<detail::TaskHot*>(b))) <= bound_ns)
        return;
      (void)shift_one(id, level, static_cast<std::uint8_t>(level - 1), true, now);
    });
  }
}

// set_priority for every waiting task of `group`; how many moved.
inline std::size_t Client::Impl::set_group_priority(std::uint64_t group, std::uint8_t level) noexcept {
  std::size_t moved = 0;
  for_each_matching(kAnyQueue, 0, group, [&](TaskId id) { moved += set_priority(id, level) == Errc::ok; });
  return moved;
}

}  // namespace shmsched
