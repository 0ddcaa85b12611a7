// Delayed tasks: a record waiting for its due time, the delayed index (one bit per
// record plus the earliest due time) and promotion to the rings (S2, S4, D1).
// docs/ring-protocol.md: "Delayed index".
#pragma once

#include "impl.hpp"

namespace shmsched {

inline void Client::Impl::mark_delayed(std::uint32_t idx, std::int64_t not_before) noexcept {
  // seq_cst with the state CAS before it and the re-check in promote_due: a promoter
  // that clears a stale bit and then reads the state either sees `delayed` or its
  // clear is ordered before this set (see docs/ring-protocol.md, "delayed index").
  core->delayed_bits[idx / 64].fetch_or(std::uint64_t{1} << (idx % 64), std::memory_order_seq_cst);
  auto& due = core->header->delayed_next_due_ns;
  std::uint64_t cur = due.load(std::memory_order_relaxed);
  const auto nb = static_cast<std::uint64_t>(not_before);
  while ((cur == 0 || nb < cur) && !due.compare_exchange_weak(cur, nb, std::memory_order_seq_cst)) {
  }
}

// After a delayed task was added: if it is now the earliest, a sleeping consumer of
// its queue is woken to shorten its sleep to that time (only when one sleeps).
// Housekeepers asleep in wait_for_due are woken too, so a due time comes on time
// while every worker of every consumer is busy.
inline void Client::Impl::notify_due(std::uint32_t idx, std::int64_t not_before) noexcept {
  auto* h = core->header;
  if (h->delayed_next_due_ns.load(std::memory_order_relaxed) != static_cast<std::uint64_t>(not_before)) return;
  notify(core->hot(idx)->queue);
  // (D1) seq_cst: after the due time's seq_cst merge (mark_delayed); pairs with (D2)
  // in wait_for_due: either the sleeper sees the new due time or we see it waiting.
  if (h->due_waiters.load(std::memory_order_seq_cst) != 0) wake_housekeepers();
}

inline void Client::Impl::wake_housekeepers() noexcept {
  core->header->due_seq.fetch_add(1, std::memory_order_seq_cst);
  detail::futex_wake(core->header->due_seq, INT32_MAX);
}

// Move record idx (word, owned by us) to delayed until `not_before`.
inline Errc Client::Impl::delay_record(std::uint32_t idx, std::uint64_t& word, std::int64_t not_before) noexcept {
  detail::store_not_before(core->hot(idx), not_before);
  const std::uint64_t next = next_word(word, TaskState::delayed, token);
  // (S2) seq_cst: releases the body; ordered before the bit set (see mark_delayed).
  if (!core->ctrl[idx].state.compare_exchange_strong(word, next, std::memory_order_seq_cst)) return Errc::fenced;
  word = next;
  SHMSCHED_FAULT_POINT(delayed_after_state);
  mark_delayed(idx, not_before);
  notify_due(idx, not_before);
  return Errc::ok;
}

inline std::size_t Client::Impl::promote_due(std::int64_t now) noexcept {
  auto& due = core->header->delayed_next_due_ns;
  const std::uint64_t next_due = due.load(std::memory_order_acquire);
  if (next_due == 0 || static_cast<std::uint64_t>(now) < next_due) return 0;
  // Take the hint; whatever is not due yet is merged back with fetch-min below, and
  // producers merge theirs concurrently, so no due time is forgotten.
  due.store(0, std::memory_order_seq_cst);
  std::uint64_t pending = UINT64_MAX;
  std::size_t promoted = 0;
  const std::uint32_t words = (core->capacity + 63) / 64;
  for (std::uint32_t wi = 0; wi < words; ++wi) {
    std::uint64_t bits = core->delayed_bits[wi].load(std::memory_order_seq_cst);
    while (bits != 0) {
      const unsigned bi = static_cast<unsigned>(__builtin_ctzll(bits));
      bits &= bits - 1;
      const std::uint32_t idx = wi * 64 + bi;
      const std::uint64_t bit = std::uint64_t{1} << bi;
      auto& c = core->ctrl[idx];
      std::uint64_t s = c.state.load(std::memory_order_seq_cst);
      if (state_of(s) != TaskState::delayed) {
        // A leftover bit: clear it, then look again in case the record was delayed
        // anew in between (its producer's set may have come before our clear).
        core->delayed_bits[wi].fetch_and(~bit, std::memory_order_seq_cst);
        if (state_of(c.state.load(std::memory_order_seq_cst)) == TaskState::delayed) {
          core->delayed_bits[wi].fetch_or(bit, std::memory_order_seq_cst);
          pending = std::min<std::uint64_t>(pending, static_cast<std::uint64_t>(now));
        }
        continue;
      }
      const std::int64_t nb = detail::load_not_before(core->hot(idx));
      if (nb > now) {
        pending = std::min<std::uint64_t>(pending, static_cast<std::uint64_t>(nb));
        continue;
      }
      const std::uint64_t mine = next_word(s, TaskState::running, token);
      // (S4) acq_rel: we hold the due record (a reaper requeues it if we die).
      if (!c.state.compare_exchange_strong(s, mine, std::memory_order_acq_rel)) continue;
      SHMSCHED_FAULT_POINT(promote_after_claim);
      core->delayed_bits[wi].fetch_and(~bit, std::memory_order_seq_cst);
      detail::store_not_before(core->hot(idx), 0);
      if (requeue_record(idx, mine) == Errc::ok) ++promoted;
    }
  }
  if (pending != UINT64_MAX) {
    std::uint64_t cur = due.load(std::memory_order_relaxed);
    while ((cur == 0 || pending < cur) && !due.compare_exchange_weak(cur, pending, std::memory_order_seq_cst)) {
    }
  }
  return promoted;
}

}  // namespace shmsched
