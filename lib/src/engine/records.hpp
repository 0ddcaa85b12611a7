// Records: the task table's control words and their owner moves.
// Owns: allocation (S0) and freeing (S5), claiming a record found in a ring (T1, T2),
// moving records to a state and publishing them into a ring (W1, S1 with the ring's
// R1-R3), queueing again, the one check of a record's fields (record_defect) and
// dead-lettering (S3). docs/ring-protocol.md: "Push, step by step", "Pop, step by
// step", "Allocation and freeing".
#pragma once

#include "impl.hpp"

namespace shmsched {

inline void Client::Impl::prefetch_body(std::uint32_t idx) const noexcept {
  detail::prefetch(core->hot(idx));
  detail::prefetch(core->payload(idx));
}

// What a record must be to be taken from ring `rid`: queued in a queue ring, parked
// in a semaphore's park ring.
inline TaskState Client::Impl::takeable(std::uint16_t rid) const noexcept {
  return core->is_park_ring(rid) ? TaskState::parked : TaskState::queued;
}

// Whether the entry for record v at `pos` of ring `rid` is a leftover: the record is
// not (any more) takeable there. Loads state first (T1), then where, as claim() does.
inline bool Client::Impl::is_stale(std::uint16_t rid, std::uint64_t pos, std::uint32_t v) const noexcept {
  if (v >= core->capacity) return true;
  auto& c = core->ctrl[v];
  const std::uint64_t s = c.state.load(std::memory_order_acquire);  // (T1)
  return state_of(s) != takeable(rid) || c.where.load(std::memory_order_relaxed) != detail::make_where(rid, pos);
}

// Claim record v found at `pos` of ring `rid`: one CAS from queued to `to` owned by
// us. This CAS is the linearisation point of a pop.
// `fetch`: start fetching the record's lines first (a caller that fetched them
// already passes false).
inline Claim Client::Impl::claim(std::uint16_t rid, std::uint64_t pos, std::uint32_t v, TaskState to,
                                 std::uint64_t& out, bool fetch) noexcept {
  if (v >= core->capacity) return Claim::stale;  // corrupt entry: clear it
  auto& c = core->ctrl[v];
  if (fetch) {
    // Fetched first: the load below and the CAS after it both need the line.
    detail::prefetch(&c);
    prefetch_body(v);  // the taker reads both and counts the attempt in the hot line
  }
  // (T1) acquire: pairs with (S1) of whoever made the record takeable, so `where`
  // and the body it wrote are visible.
  std::uint64_t s = c.state.load(std::memory_order_acquire);
  for (;;) {
    if (state_of(s) != takeable(rid)) return Claim::stale;
    // relaxed: ordered after (T1); a later rewrite of `where` would need a state
    // change first, which makes the CAS below fail.
    if (c.where.load(std::memory_order_relaxed) != detail::make_where(rid, pos)) return Claim::stale;
    const std::uint64_t next = next_word(s, to, token);
    // (T2) acq_rel: acquires the body from the previous owner and releases our
    // ownership; on failure reload (acquire) and decide again.
    if (c.state.compare_exchange_weak(s, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      out = next;
      return Claim::taken;
    }
  }
}

// (W1) Sets `where` of a record whose state word we last left as `word`, if it still
// is: only the owner may write `where`, so a producer fenced while it ran (judged dead,
// its records given to others by recovery) stops here instead of overwriting the
// `where` of someone else's task. The load is relaxed: our own last write, unless
// another process has moved the record since. The store is relaxed: published by the
// state CAS (S1) that follows, or by the ring's publishing CAS (R3).
inline bool Client::Impl::set_where(detail::TaskCtrl& c, std::uint64_t word, std::uint64_t wh) noexcept {
  if (c.state.load(std::memory_order_relaxed) != word) return false;
  c.where.store(wh, std::memory_order_relaxed);
  return true;
}

// Moves records first .. first + n - 1 (owned by us, their state words in `words`) to
// `target` owned by us, each with `where` = wh first (W1) and then its own CAS (S1).
// Returns how many moved; fewer than n means a record was not ours any more (we were
// fenced). `words` only ever hold words we wrote: a failed CAS leaves its entry as it
// was, so whatever frees them afterwards can only free our own records.
inline std::uint32_t Client::Impl::move_run(std::uint32_t first, std::uint32_t n, std::uint64_t* words,
                                            TaskState target, std::uint64_t wh) noexcept {
  for (std::uint32_t k = 0; k < n; ++k) {
    auto& c = core->ctrl[first + k];
    if (!set_where(c, words[k], wh)) return k;
    std::uint64_t expected = words[k];
    const std::uint64_t next = next_word(expected, target, token);
    // (S1) acq_rel: releases the body and `where` to the next owner (pairs with T1).
    if (!c.state.compare_exchange_strong(expected, next, std::memory_order_acq_rel, std::memory_order_acquire))
      return k;
    words[k] = next;
    if (k + 1 < n) SHMSCHED_FAULT_POINT(enqueue_run_mid_publish);
  }
  return n;
}

// Put the run of records first .. first + n - 1 into ring `rid` as one entry, moving
// each to `target` owned by us on the first attempt (move_run) unless `moved` says the
// caller did. On return `words` are the records' words as we left them.
// PushStatus::aborted means a record was not ours (we were fenced); records moved
// before it stay queued under our (fenced) token and the reaper republishes them.
inline PushStatus Client::Impl::push_run(std::uint32_t first, std::uint32_t n, std::uint64_t* words, std::uint16_t rid,
                                         TaskState target, bool moved) noexcept {
  auto prepare = [&](std::uint64_t pos) noexcept {
    const std::uint64_t wh = detail::make_where(rid, pos);
    if (moved) {
      for (std::uint32_t k = 0; k < n; ++k)
        if (!set_where(core->ctrl[first + k], words[k], wh)) return false;  // fenced
      return true;
    }
    moved = move_run(first, n, words, target, wh) == n;
    return moved;
  };
  auto stale = [&](std::uint64_t pos, std::uint32_t v) noexcept { return is_stale(rid, pos, v); };
  if (rid < core->ring_count()) return queue_rings[rid].try_push(first, prepare, stale, &push_cursor[rid], n);
  return core->ring(rid).try_push(first, prepare, stale, nullptr, n);  // a park ring
}

inline PushStatus Client::Impl::push_record(std::uint32_t idx, std::uint64_t& word, std::uint16_t rid,
                                            TaskState target) noexcept {
  return push_run(idx, 1, &word, rid, target);
}

// Free a record we own: one CAS. Nothing indexes free records; allocation sweeps.
inline Errc Client::Impl::free_record(std::uint32_t idx, std::uint64_t word) noexcept {
  // (S5) release: our last reads and writes of the body happen-before the next
  // owner's (S0) acquire.
  if (!core->ctrl[idx].state.compare_exchange_strong(word, next_word(word, TaskState::free, token),
                                                     std::memory_order_release, std::memory_order_relaxed))
    return Errc::fenced;
  recent.store(idx, std::memory_order_relaxed);
  return Errc::ok;
}

// Raises the records_used mark past record `idx` before it is reserved (SegmentHeader).
// Past the first pass over the table this is one load and a compare.
inline void Client::Impl::note_used(std::uint32_t idx) noexcept {
  // relaxed: a hint whether to raise; raise_mark's RMW decides.
  if (__builtin_expect(idx >= core->header->records_used.load(std::memory_order_relaxed), 0)) raise_mark(idx);
}

// Reserve a free record by sweeping the control words from this process's cursor.
// Records are freed roughly in the order they were reserved, so the record after the
// last one reserved is usually free: one load and one CAS. A full sweep that finds
// none means the table is full (back-pressure).
[[gnu::always_inline]] inline Errc Client::Impl::alloc(std::uint32_t& idx, std::uint64_t& word) noexcept {
  if (const std::uint32_t r = recent.load(std::memory_order_relaxed); r != kNone && r < core->capacity) {
    recent.store(kNone, std::memory_order_relaxed);
    auto& c = core->ctrl[r];
    std::uint64_t s = c.state.load(std::memory_order_relaxed);
    if (detail::is_free(s)) {
      const std::uint64_t next = next_word(s, TaskState::reserved, token);
      // (S0) as below.
      if (c.state.compare_exchange_strong(s, next, std::memory_order_acquire, std::memory_order_relaxed)) {
        idx = r;
        word = next;
        SHMSCHED_FAULT_POINT(task_alloc_reserved);
        return Errc::ok;
      }
    }
  }
  const std::uint32_t mask = core->capacity - 1;
  std::uint32_t i = cursor.load(std::memory_order_relaxed);
  // Within 20 us of a sweep that found the table full, look only at the next 64
  // records (the oldest reservations, so the likeliest to be free again): a producer
  // spinning on back-pressure then costs a few lines, not a sweep of the whole table
  // through lines the consumers are writing. The first reservation after that clears
  // the mark, so a table that is not full costs no clock read.
  std::uint32_t limit = core->capacity;
  const std::int64_t full_at = last_full_ns.load(std::memory_order_relaxed);
  if (full_at != 0 && monotonic_ns() - full_at < 20'000) limit = std::min<std::uint32_t>(limit, 64);
  for (std::uint32_t n = 0; n < limit; ++n, ++i) {
    auto& c = core->ctrl[i & mask];
    std::uint64_t s = c.state.load(std::memory_order_relaxed);
    if (!detail::is_free(s)) continue;
    const std::uint64_t next = next_word(s, TaskState::reserved, token);
    note_used(i & mask);
    // The records the sweep reaches a few calls from now, and their control line:
    // their misses overlap this call's work instead of stalling those calls.
    prefetch_body((i + kPrefetchDistance) & mask);
    detail::prefetch(&core->ctrl[(i + 2 * kPrefetchDistance) & mask]);
    // (S0) acquire: pairs with (S5) of the record's last owner; we may now write it.
    if (c.state.compare_exchange_strong(s, next, std::memory_order_acquire, std::memory_order_relaxed)) {
      cursor.store(i + 1, std::memory_order_relaxed);
      if (full_at != 0) last_full_ns.store(0, std::memory_order_relaxed);  // relaxed: a hint
      idx = i & mask;
      word = next;
      SHMSCHED_FAULT_POINT(task_alloc_reserved);
      return Errc::ok;
    }
  }
  if (limit == core->capacity) {
    last_full_ns.store(monotonic_ns(), std::memory_order_relaxed);
    cursor.store(i, std::memory_order_relaxed);
  }
  return Errc::table_full;
}

// Reserve exactly record `idx` if it is free (the next member of a run): one load
// and one CAS, no sweep.
inline bool Client::Impl::alloc_at(std::uint32_t idx, std::uint64_t& word) noexcept {
  note_used(idx);
  detail::prefetch(&core->ctrl[(idx + 2 * kPrefetchDistance) & (core->capacity - 1)]);
  return reserve_at(idx, word);
}

// The same, for a caller that raised the records_used mark past idx itself.
inline bool Client::Impl::reserve_at(std::uint32_t idx, std::uint64_t& word) noexcept {
  auto& c = core->ctrl[idx];
  std::uint64_t s = c.state.load(std::memory_order_relaxed);
  if (!detail::is_free(s)) return false;
  const std::uint64_t next = next_word(s, TaskState::reserved, token);
  // (S0) as in alloc.
  if (!c.state.compare_exchange_strong(s, next, std::memory_order_acquire, std::memory_order_relaxed)) return false;
  word = next;
  SHMSCHED_FAULT_POINT(task_alloc_reserved);
  return true;
}

// Queue a record we own (running/reserved) into its ring; if the ring is full, it
// waits as delayed and is retried by promote_due (never dropped, never overwritten).
inline Errc Client::Impl::requeue_record(std::uint32_t idx, std::uint64_t word) noexcept {
  auto* b = core->hot(idx);
  if (const char* defect = record_defect(idx)) return dead_letter_record(idx, word, defect);
  const QueueId q = b->queue;
  const PushStatus st = push_record(idx, word, core->ring_id(q, b->level), TaskState::queued);
  if (st == PushStatus::ok) {
    notify(q);
    return Errc::ok;
  }
  if (st == PushStatus::aborted) return Errc::fenced;
  return delay_record(idx, word, monotonic_ns() + 10'000'000);
}

// The one check of a record's fields that are used as an index, a length or a count:
// null when they are in range, else the reason the record is quarantined (dead-
// lettered, never run, never used to index anything). A damaged segment must not
// take down the process that reads it.
inline const char* Client::Impl::record_defect(std::uint32_t idx) const noexcept {
  const auto* b = core->hot(idx);
  if (b->queue >= core->layout.max_queues ||
      detail::named_state(core->queues[b->queue].word.load(std::memory_order_relaxed)) != detail::QueueEntry::kReady)
    return "corrupt record: no such queue";
  if (b->level >= core->levels) return "corrupt record: priority level out of range";
  if (b->payload_len > core->layout.payload_bytes) return "corrupt record: payload length out of range";
  for (int k = 0; k < 2; ++k)
    if (b->need_count[k] != 0 &&
        (b->need_sem[k] >= core->layout.max_semaphores || b->need_count[k] > kMaxSemaphoreCapacity))
      return "corrupt record: need out of range";
  return nullptr;
}

inline Errc Client::Impl::dead_letter_record(std::uint32_t idx, std::uint64_t word, std::string_view reason) noexcept {
  detail::store_error(core->cold(idx), reason);
  auto* b = core->hot(idx);
  detail::set_field(b->flags, static_cast<std::uint8_t>(b->flags | detail::kHasError));
  const std::uint64_t next = next_word(word, TaskState::dead, token);
  const Errc moved = counted_move(idx, word, next, detail::GroupCounters::kFailed, 1, [&]() noexcept {
    std::uint64_t w = word;
    // (S3) acq_rel: releases last_error to whoever lists dead letters.
    return core->ctrl[idx].state.compare_exchange_strong(w, next, std::memory_order_acq_rel) ? Errc::ok : Errc::fenced;
  });
  if (moved != Errc::ok) return moved;
  if ((b->flags & detail::kKeepResult) != 0) [[unlikely]]
    publish_outcome(idx);  // finished for good
  return Errc::ok;
}

}  // namespace shmsched
