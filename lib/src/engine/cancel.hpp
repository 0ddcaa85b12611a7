// Cancel. A waiting task (queued, delayed, parked or waiting for its gate) is claimed by the canceller as a
// take claims it: one CAS from the exact word it loaded, so of a cancel and a take (or a
// promotion, or an unpark) racing for it exactly one wins. The canceller, now its owner,
// finishes it as cancelled: freed, or with keep_result kept in state cancelled (like a
// result: for status, take_result and wait, until taken, expired or evicted). Its ring
// entry or delayed bit stays where it is (no ring surgery): the popper or promoter that
// meets it finds the record no longer takeable there and drops the reference, as it does
// any leftover. A canceller killed after its claim leaves a running task of a dead owner,
// which the reaper requeues: the cancel did not happen (fault point cancel_after_claim).
//
// A running task is not stopped from outside: the canceller writes the task's id into
// the record's cancel_id, which its handler reads (TaskContext::cancel_requested); a
// worker that then gives up on it finishes it as cancelled (Client::finish_cancelled).
#pragma once

#include "impl.hpp"

namespace shmsched {

// (C1) Claims task `id` if it waits (queued, delayed, parked or for its gate), as a take's claim (T2)
// does: one CAS from the exact word loaded, so of this and a take, a promotion, an unpark,
// a cancel or a move exactly one wins. On `claimed`, `was` is the word it had and `mine`
// the word it has now (running, ours); the record is idx.
inline Client::Impl::Waiting Client::Impl::claim_waiting(TaskId id, std::uint32_t& idx, std::uint64_t& was,
                                                         std::uint64_t& mine) noexcept {
  idx = core->id_index(id);
  if (id == kNoTask || idx >= core->capacity) return Waiting::unknown;
  auto& state = core->ctrl[idx].state;
  const auto* b = core->hot(idx);
  for (;;) {
    was = state.load(std::memory_order_acquire);
    if (detail::peek_field(b->id) != id) return Waiting::unknown;
    switch (state_of(was)) {
      case TaskState::queued:
      case TaskState::delayed:
      case TaskState::parked:
      case TaskState::waiting: {
        mine = next_word(was, TaskState::running, token);
        std::uint64_t expected = was;
        // acq_rel, as (T2): the body is ours to read and write, or someone moved it first.
        if (state.compare_exchange_strong(expected, mine, std::memory_order_acq_rel, std::memory_order_relaxed))
          return Waiting::claimed;
        continue;
      }
      case TaskState::running:
        return Waiting::running;
      case TaskState::dead:
      case TaskState::done:
      case TaskState::cancelled:
        return Waiting::finished;
      case TaskState::virgin:
      case TaskState::free:
      case TaskState::reserved:
        return Waiting::unknown;
    }
    return Waiting::unknown;  // no state at all: a damaged word
  }
}

inline Errc Client::Impl::cancel(TaskId id, CancelOutcome& out) noexcept {
  std::uint32_t idx = 0;
  std::uint64_t was = 0, mine = 0;
  switch (claim_waiting(id, idx, was, mine)) {
    case Waiting::claimed:
      SHMSCHED_FAULT_POINT(cancel_after_claim);
      out = CancelOutcome::cancelled;
      if (state_of(was) == TaskState::waiting) drop_gate(idx);
      return finish_cancelled(idx, mine);
    case Waiting::running:
      // relaxed: a request, read by the handler when it looks; the id (never reused)
      // keeps a late store from asking anything of the record's next task.
      std::atomic_ref<std::uint64_t>(core->cold(idx)->cancel_id).store(id, std::memory_order_relaxed);
      out = CancelOutcome::requested;
      return Errc::ok;
    case Waiting::finished:
      out = CancelOutcome::finished;
      return Errc::ok;
    case Waiting::unknown:
      return Errc::unknown_task;
  }
  return Errc::unknown_task;
}

// Finishes record idx, ours with state word `word`, as cancelled: freed, or kept. `why`
// becomes its last error (what status and take_result report).
inline Errc Client::Impl::finish_cancelled(std::uint32_t idx, std::uint64_t word, std::string_view why) noexcept {
  auto* b = core->hot(idx);
  detail::store_error(core->cold(idx), why);
  detail::set_field(b->flags, static_cast<std::uint8_t>(b->flags | detail::kHasError));
  if ((b->flags & detail::kKeepResult) == 0)
    return counted_move(idx, word, next_word(word, TaskState::free, token), detail::GroupCounters::kCancelled, 1,
                        [&]() noexcept { return free_record(idx, word); });
  auto* c = core->cold(idx);
  const std::int64_t now = detail::coarse_now_ns();
  detail::set_field(b->payload_len, std::uint32_t{0});
  detail::set_field(c->finished_ns, now);
  detail::set_field(b->expires_ns, now + std::int64_t{c->result_ttl_s} * 1'000'000'000);
  const std::uint64_t to = next_word(word, TaskState::cancelled, 0);
  const Errc moved = counted_move(idx, word, to, detail::GroupCounters::kCancelled, 1, [&]() noexcept {
    std::uint64_t w = word;
    // release, as K-done: the fields happen-before a reader's claim.
    return core->ctrl[idx].state.compare_exchange_strong(w, to, std::memory_order_release, std::memory_order_relaxed)
               ? Errc::ok
               : Errc::fenced;
  });
  if (moved != Errc::ok) return moved;
  core->header->results_kept.fetch_add(1, std::memory_order_relaxed);
  publish_outcome(idx);
  return Errc::ok;
}

// Whether Client::cancel asked the running task `t` to stop.
inline bool Client::Impl::cancel_requested(const Taken& t) const noexcept {
  return names_record(t) &&
         std::atomic_ref<std::uint64_t>(core->cold(t.index)->cancel_id).load(std::memory_order_relaxed) == t.id;
}

// Calls fn(id) for every outstanding task (queued, running, delayed, parked) of `queue`
// (any when kAnyQueue), of type hash `type` (any when 0) and of `group` (any when 0). The
// fields are peeked without owning the records: fn's own claim decides.
template <class Fn>
void Client::Impl::for_each_matching(std::uint32_t queue, std::uint64_t type, std::uint64_t group, Fn&& fn) {
  for (std::uint32_t i = 0, end = core->scan_end(); i < end; ++i) {
    if (!is_outstanding(state_of(core->ctrl[i].state.load(std::memory_order_acquire)))) continue;
    const auto* b = core->hot(i);
    if (queue != kAnyQueue && detail::peek_field(b->queue) != queue) continue;
    if (type != 0 && detail::peek_field(b->type_hash) != type) continue;
    if (group != 0 && ((detail::peek_field(b->flags) & detail::kHasGroup) == 0 ||
                       detail::peek_field(core->cold(i)->group_id) != group))
      continue;
    fn(detail::peek_field(b->id));
  }
}

// cancel() for every matching task (for_each_matching); what it did, by outcome.
inline CancelCounts Client::Impl::cancel_matching(std::uint32_t queue, std::uint64_t type,
                                                  std::uint64_t group) noexcept {
  CancelCounts n;
  for_each_matching(queue, type, group, [&](TaskId id) {
    CancelOutcome out{};
    if (cancel(id, out) != Errc::ok) return;
    (out == CancelOutcome::cancelled ? n.cancelled : out == CancelOutcome::requested ? n.requested : n.finished)++;
  });
  return n;
}

}  // namespace shmsched
