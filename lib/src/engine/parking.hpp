// Parking: a task whose permits are not free waits in a park ring of its semaphore (one
// per level) instead of its queue, and goes back when permits are freed, or runs at once
// in a releaser's place (the hand-over). Record moves between rings, so the engine's;
// the permits themselves are the semaphore layer's (permits.hpp). Steps (K1)..(K3) of
// docs/resources.md; the protocol is checked by tests/model/semaphore.pml.
#pragma once

#include "impl.hpp"

namespace shmsched {

// After permits of `sem` (entry `e`) were freed: wake sleeping direct acquirers and move
// parked tasks to their queues, each only when someone is there (two loads otherwise).
inline void Client::Impl::permits_freed(detail::SemaphoreEntry& e, std::uint32_t sem) noexcept {
  detail::Permits::wake_sleepers(e);
  if (detail::Permits::maybe_parked(e)) unpark_to_queues(sem);
}

// Parks the running task `task` on `sem` (entry `e`), whose permits it could not get.
// Waiting is not an attempt: the take that counted one is undone, and the run that
// follows the unpark counts it.
inline Client::Grant Client::Impl::park(const Taken& task, detail::SemaphoreEntry& e, std::uint32_t sem) noexcept {
  auto* b = core->hot(task.index);
  detail::set_field(b->attempts, static_cast<std::uint16_t>(b->attempts - 1));
  std::uint64_t word = task.word;
  const PushStatus st = push_record(task.index, word, core->park_ring_id(sem, task.level), TaskState::parked);
  if (st == PushStatus::aborted) return Grant::error;
  if (st == PushStatus::full) {
    // No room to park: retry soon. Failing, we were fenced (the reaper has the task).
    if (delay_record(task.index, word, monotonic_ns() + 10'000'000) != Errc::ok) return Grant::error;
    return Grant::parked;
  }
  SHMSCHED_FAULT_POINT(park_after_push);
  detail::Permits::count_parked(e);  // before (K1)
  // (K1) A release may have come between our failed try and the park: look again
  // (seq_cst, after the seq_cst publishing CAS of the park ring).
  unpark_to_queues(sem, 0, true);
  return Grant::parked;
}

// Claims the oldest parked task of the most urgent level of `sem` for this process (state
// running): its record index in `v`, its state word in `w`. False when none is parked.
inline bool Client::Impl::pop_parked(detail::SemaphoreEntry& e, std::uint32_t sem, std::uint32_t& v,
                                     std::uint64_t& w) noexcept {
  for (std::uint32_t level = 0; level < core->levels; ++level) {
    const std::uint16_t rid = core->park_ring_id(sem, level);
    auto c = [&](std::uint64_t pos, std::uint32_t val) noexcept { return claim(rid, pos, val, TaskState::running, w); };
    while (core->ring(rid).try_pop(c, v)) {
      SHMSCHED_FAULT_POINT(unpark_after_claim);
      detail::Permits::count_unparked(e);
      const char* defect = record_defect(v);
      if (defect == nullptr) return true;
      (void)dead_letter_record(v, w, defect);  // quarantined, never handed on
    }
  }
  return false;
}

// How many permits of `sem` the parked record `v` waits for: its own need, else 1 (a
// need declared by a consumer for its type, or a queue's limit, is one permit).
inline std::uint32_t Client::Impl::parked_need(std::uint32_t v, std::uint32_t sem) const noexcept {
  const auto* b = core->hot(v);
  for (int k = 0; k < 2; ++k)
    if (b->need_count[k] != 0 && b->need_sem[k] == sem) return b->need_count[k];
  return 1;
}

// Moves parked tasks of `sem` back to their queues while permits are free (they acquire
// when taken), counting `reserved` permits as taken already (a hand-over's). For
// releasers, for a parker's second look (K1), and for the janitor, which so also covers
// a releaser that died between its release and its hand-over.
//
// A task is moved only when the free permits cover its need; one that needs more goes
// back to the tail of its park ring (re-parked, as a park does), so a task that cannot
// run now is never cycled between its queue and its park ring by the workers. A re-park
// is followed by one more look at the permit word: a release that came while the task
// was out of its ring found nothing to unpark, and is caught here.
inline std::size_t Client::Impl::unpark_to_queues(std::uint32_t sem, std::size_t reserved, bool after_park) noexcept {
  auto* e = permits.entry(sem);
  if (e == nullptr) return 0;
  // (K3): a parker counts itself after its publishing CAS and before its own look at the
  // permits (K1), so either we see the count or it sees our release. The parker's own
  // look (after_park) does not read the count: it knows it parked one, and the janitor's
  // recount may have stored a count from before its increment.
  if (!after_park && !detail::Permits::maybe_parked(*e)) return 0;
  std::size_t moved = 0;
  auto taken = static_cast<std::uint32_t>(reserved);
  constexpr int kMaxReparks = 8;  // bounds one call's walk over tasks that need more
  for (int reparks = 0;;) {
    const std::uint64_t p = e->permits.load(std::memory_order_seq_cst);  // (K2)
    // As many as there are free permits: more would only park again.
    const std::uint32_t free = detail::Permits::free_of(p, taken);
    if (free == 0) return moved;
    std::uint64_t w = 0;
    std::uint32_t v = 0;
    if (!pop_parked(*e, sem, v, w)) return moved;
    const std::uint32_t need = parked_need(v, sem);
    if (need <= free) {
      if (requeue_record(v, w) == Errc::ok) ++moved;
      taken += need;
      continue;
    }
    // The last re-park this call may make goes to its queue instead: whoever takes it
    // parks it again with its own look (K1), so a release during this call's walk is
    // never left unseen (tests/model/semaphore.pml, MUTANT_REPARK_BAIL).
    if (++reparks == kMaxReparks) {
      if (requeue_record(v, w) == Errc::ok) ++moved;
      return moved;
    }
    if (!repark(v, w, *e, sem)) continue;
    // seq_cst, after the re-park's publishing CAS and count: as (K1).
    if (e->permits.load(std::memory_order_seq_cst) == p) return moved;
  }
}

// Puts a task this process claimed from a park ring of `sem` back at that ring's tail.
// False when it could not be parked again and went elsewhere (delayed when the ring is
// full, or lost to recovery).
inline bool Client::Impl::repark(std::uint32_t v, std::uint64_t w, detail::SemaphoreEntry& e,
                                 std::uint32_t sem) noexcept {
  const std::uint16_t rid = core->park_ring_id(sem, core->hot(v)->level);
  const PushStatus st = push_record(v, w, rid, TaskState::parked);
  if (st == PushStatus::aborted) return false;
  if (st == PushStatus::full) {
    // No room to park: retry soon (failing, we were fenced: recovery has the task).
    (void)delay_record(v, w, monotonic_ns() + 10'000'000);
    return false;
  }
  detail::Permits::count_parked(e);
  return true;
}

// After a task's release of `sems`: the oldest parked task of the most urgent level on a
// semaphore it freed is claimed into `next` (when given) to run in its place (it acquires
// its permits like any task, and parks again if someone was faster). Every other
// semaphore freed, and the rest of the permits of this one, unpark to the queues: a
// release that frees several permits, or permits of two semaphores, leaves no parked
// task behind a free permit. True when `next` holds a task.
inline bool Client::Impl::hand_over(std::span<const std::uint32_t> sems, Taken* next) noexcept {
  bool handed = false;
  for (const std::uint32_t sem : sems) {
    auto* e = permits.entry(sem);
    // (K3) as in unpark_to_queues: nothing parked, nothing to hand over.
    if (e == nullptr || !detail::Permits::maybe_parked(*e)) continue;
    std::size_t reserved = 0;
    std::uint64_t w = 0;
    std::uint32_t v = 0;
    if (next != nullptr && !handed && pop_parked(*e, sem, v, w)) {
      fill_taken(v, w, *next);  // counts the attempt this run is
      // Its rate tokens, if it waited for them before it parked, are used by this run.
      if (auto* cold = core->cold(v); cold->rate_token != 0) cold->rate_token = 0;
      handed = true;
      reserved = parked_need(v, sem);
    }
    unpark_to_queues(sem, reserved);
  }
  return handed;
}

// The janitor's pass over one semaphore: recount its parked tasks from the park rings
// (the count drifts when a parker dies between its park and its count, or the reaper
// recovers a parked task), then unpark what its free permits allow (a releaser that died
// before its hand-over, or a capacity raised elsewhere).
inline void Client::Impl::tend_parked(std::uint32_t sem) noexcept {
  auto* e = permits.entry(sem);
  if (e == nullptr) return;
  // Read before the count is taken: recount_parked stores only if it is unchanged.
  const std::uint32_t seen = detail::Permits::parked_count(*e);
  std::uint64_t parked = 0;
  for (std::uint32_t l = 0; l < core->levels; ++l) parked += core->ring(core->park_ring_id(sem, l)).depth_guess();
  detail::Permits::recount_parked(*e, seen, static_cast<std::uint32_t>(parked));
  unpark_to_queues(sem);
}

}  // namespace shmsched
