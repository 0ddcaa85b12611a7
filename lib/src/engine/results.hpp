// Kept results: a task enqueued with keep_result keeps its record when it finishes, in
// state done (or cancelled, engine/cancel.hpp), holding its result in the payload area,
// until a reader takes it (Client::take_result, Client::wait), its time runs out (the
// janitor's expire_results) or the table needs the record (evict_result). Waiters sleep
// on the record's state word. docs/lifecycle.md walks through the protocol; the steps:
//
//   (K-done)  the finisher writes the result, finished_ns and the result's expiry, then
//             CASes running -> done (owner 0, release), then looks for waiters (seq_cst);
//   (K-claim) a reader CASes done (owner 0) -> done (owner: itself), acq_rel: the bytes
//             are its alone to read; a reader that dies here leaves done owned by a dead
//             token, which recovery turns back into done (owner 0);
//   (K-free)  the reader (or the janitor, or an evicting producer, which skip the claim:
//             they read nothing) CASes done -> free, release.
#pragma once

#include "impl.hpp"

namespace shmsched {

// (K-done) Finishes the running task `t` (ours) keeping `value` as its result.
inline Errc Client::Impl::keep_result(const Taken& t, std::span<const std::byte> value) noexcept {
  if (!owns(t)) return Errc::fenced;
  auto* b = core->hot(t.index);
  auto* c = core->cold(t.index);
  const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(value.size(), core->layout.payload_bytes));
  // The body is ours until the CAS below; readers claim the record before they read it.
  if (n != 0) std::memcpy(core->payload(t.index), value.data(), n);
  detail::set_field(b->payload_len, n);
  const std::int64_t now = detail::coarse_now_ns();
  detail::set_field(c->finished_ns, now);
  detail::set_field(b->expires_ns, now + std::int64_t{c->result_ttl_s} * 1'000'000'000);
  SHMSCHED_FAULT_POINT(result_before_done);
  const std::uint64_t to = next_word(t.word, TaskState::done, 0);
  const Errc moved = counted_move(t.index, t.word, to, detail::GroupCounters::kDone, 1, [&]() noexcept {
    std::uint64_t w = t.word;
    // release: the result and its fields happen-before a reader's claim (acquire).
    return core->ctrl[t.index].state.compare_exchange_strong(w, to, std::memory_order_release,
                                                             std::memory_order_relaxed)
               ? Errc::ok
               : Errc::fenced;
  });
  if (moved != Errc::ok) return moved;
  core->header->results_kept.fetch_add(1, std::memory_order_relaxed);  // a count for eviction and stat
  publish_outcome(t.index);
  return Errc::ok;
}

// After a kept task finished for good (done, cancelled or dead): releases the tasks
// that wait for it (gates), then wakes whoever waits for its result. The fence orders
// the finishing CAS before the counts' loads: the Dekker pairs with a dependent's count
// in waiting_tasks before its look at its parent (accept_member, parent_outcome), and
// with a waiter's count before its look at the state word (Client::wait). A finisher
// killed before its release leaves it to the reaper or the janitor, and to whoever takes
// or drops the result first (release_dependents).
inline void Client::Impl::publish_outcome(std::uint32_t idx) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  SHMSCHED_FAULT_POINT(outcome_before_release);
  release_dependents();
  if (core->header->result_waiters.load(std::memory_order_seq_cst) != 0)
    detail::futex_wake_low(core->ctrl[idx].state, INT32_MAX);
}

// Releases the waiting tasks whose gate finished, when any task waits. Run by a kept
// task's finisher, and by whoever takes or drops a kept outcome before the record is
// freed, so that a child is settled while its parent's outcome is still there to read:
// taking a parent's result never cancels its children.
inline void Client::Impl::release_dependents() noexcept {
  if (core->header->waiting_tasks.load(std::memory_order_seq_cst) != 0) release_waiting();
}

// What task `id` left, when it has finished for good: done (its result is taken: the
// record is freed) or dead (left as a dead letter). Errc::unknown_task when no record
// holds the task; not_finished while it waits or runs; unavailable while another reader
// takes its result.
inline Errc Client::Impl::take_result(TaskId id, TaskResult& out) {
  const std::uint32_t idx = core->id_index(id);
  if (id == kNoTask || idx >= core->capacity) return Errc::unknown_task;
  auto& state = core->ctrl[idx].state;
  std::uint64_t s = state.load(std::memory_order_acquire);
  const auto* b = core->hot(idx);
  if (detail::peek_field(b->id) != id || status_of(state_of(s)) == TaskStatus::unknown) return Errc::unknown_task;
  out.id = id;
  if (state_of(s) == TaskState::dead) {
    out.status = TaskStatus::dead;
    out.error = detail::load_error(core->cold(idx));
    // The reason is the dead letter's if the word did not move meanwhile.
    std::atomic_thread_fence(std::memory_order_acquire);
    return state.load(std::memory_order_relaxed) == s ? Errc::ok : Errc::unavailable;
  }
  const TaskState kept = state_of(s);
  if (kept != TaskState::done && kept != TaskState::cancelled) return Errc::not_finished;
  if (owner_of(s) != 0) return Errc::unavailable;
  // (K-claim) acq_rel: the result's bytes are ours to read (paired with K-done's release).
  const std::uint64_t mine = next_word(s, kept, token);
  if (!state.compare_exchange_strong(s, mine, std::memory_order_acq_rel, std::memory_order_relaxed))
    return Errc::unavailable;
  SHMSCHED_FAULT_POINT(result_after_claim);
  release_dependents();  // while the outcome is still ours to read, and theirs
  const std::uint32_t n = std::min(b->payload_len, core->layout.payload_bytes);
  out.status = status_of(kept);
  if (kept == TaskState::cancelled)  // why: "cancelled", or its gate's reason
    out.error = (b->flags & detail::kHasError) != 0 ? detail::load_error(core->cold(idx)) : "cancelled";
  out.value.assign(reinterpret_cast<const char*>(core->payload(idx)), n);
  out.finished_ns = core->cold(idx)->finished_ns;
  // (K-free) release: our reads of the body happen-before the next owner's (S0).
  std::uint64_t w = mine;
  if (state.compare_exchange_strong(w, next_word(w, TaskState::free, token), std::memory_order_release,
                                    std::memory_order_relaxed)) {
    core->header->results_kept.fetch_sub(1, std::memory_order_relaxed);
    recent.store(idx, std::memory_order_relaxed);
  }
  return Errc::ok;
}

// A kept outcome (done or cancelled) no reader holds.
inline bool Client::Impl::is_kept(std::uint64_t s) noexcept {
  return (state_of(s) == TaskState::done || state_of(s) == TaskState::cancelled) && owner_of(s) == 0;
}

// Frees the done record idx (state word s, no reader holding it) without reading it: its
// result is dropped. False when the word moved. Callers run release_dependents() first,
// once for all they drop, so that no child is left to read an outcome that is gone.
inline bool Client::Impl::drop_result(std::uint32_t idx, std::uint64_t s) noexcept {
  // (K-free) release, as a reader's; nothing was read.
  if (!core->ctrl[idx].state.compare_exchange_strong(s, next_word(s, TaskState::free, token), std::memory_order_release,
                                                     std::memory_order_relaxed))
    return false;
  core->header->results_kept.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

// The janitor's pass: drops every kept result whose time ran out by `now`; how many.
inline std::size_t Client::Impl::expire_results(std::int64_t now) noexcept {
  if (core->header->results_kept.load(std::memory_order_relaxed) <= 0) return 0;
  release_dependents();  // before the outcomes they read go
  std::size_t n = 0;
  for (std::uint32_t i = 0, end = core->scan_end(); i < end; ++i) {
    const std::uint64_t s = core->ctrl[i].state.load(std::memory_order_acquire);
    if (!is_kept(s)) continue;
    if (detail::peek_field(core->hot(i)->expires_ns) > now) continue;
    if (drop_result(i, s)) ++n;
  }
  if (n != 0) core->header->results_expired.fetch_add(n, std::memory_order_relaxed);
  return n;
}

// A full table with kept results in it: drops the one that finished first, so that a
// producer's enqueue goes on. True when one was dropped (counted as evicted).
inline bool Client::Impl::evict_result() noexcept {
  if (core->header->results_kept.load(std::memory_order_relaxed) <= 0) return false;
  release_dependents();  // before the outcome they read goes
  for (int tries = 0; tries < 4; ++tries) {
    std::uint32_t oldest = kNone;
    std::uint64_t word = 0;
    std::int64_t first = INT64_MAX;
    for (std::uint32_t i = 0, end = core->scan_end(); i < end; ++i) {
      const std::uint64_t s = core->ctrl[i].state.load(std::memory_order_acquire);
      if (!is_kept(s)) continue;
      const std::int64_t f = detail::peek_field(core->cold(i)->finished_ns);
      if (f < first) {
        first = f;
        oldest = i;
        word = s;
      }
    }
    if (oldest == kNone) return false;
    if (drop_result(oldest, word)) {
      core->header->results_evicted.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

}  // namespace shmsched
