// Take: the single and the batch take, in priority order with aging, the claim of each
// record (records.hpp), the check on take (expired, damaged) and filling a Taken.
// docs/ring-protocol.md: "Pop, step by step", "FIFO and priority".
#pragma once

#include "impl.hpp"

namespace shmsched {

inline bool Client::Impl::takeable_queue(QueueId q) const noexcept {
  return attached && q < core->layout.max_queues &&
         (core->queues[q].flags.load(std::memory_order_relaxed) & detail::QueueEntry::kPaused) == 0;
}

inline bool Client::Impl::take(QueueId q, Taken& out, bool as_helper) noexcept {
  if (!takeable_queue(q)) {
    if (attached && q < core->layout.max_queues) give_back_ahead(q, false);  // paused: hold nothing back
    return false;
  }
  AheadUse use(ahead_of(q));
  Ahead* const a = use.get();
  std::uint32_t aged = 0;
  if (const std::uint32_t bound = core->queues[q].aging_ms.load(std::memory_order_relaxed);
      bound != 0 && (core->queues[q].flags.load(std::memory_order_relaxed) & detail::QueueEntry::kAgingPromotes) == 0)
    aged = aged_level(q, std::int64_t{bound} * 1000000);
  if (aged != 0) {
    // The records held of that level are its oldest.
    if (a != nullptr && a->held() != 0 && a->level == aged && hand_out(*a, q, out)) return took(out, as_helper);
    if (pop_level<Pop::single>(q, aged, 1, &out, nullptr) != 0) return took(out, as_helper);
  }
  // Records held are handed out before the rings are looked at again: the looks at
  // the more urgent levels, lines the producers write, are what take-ahead saves. A
  // more urgent task that arrives meanwhile waits here behind at most limit - 1 held
  // tasks (any other consumer can take it at once).
  if (a != nullptr && a->held() != 0 && hand_out(*a, q, out)) return took(out, as_helper);
  const std::uint16_t base = core->ring_id(q, 0);
  for (std::uint32_t level = 0; level < core->levels; ++level) {
    const auto rid = static_cast<std::uint16_t>(base + level);
    // The cheap look first: most levels are empty most of the time. The same look
    // tells take_front what the head holds.
    const std::uint64_t pos = pop_cursor[rid].load(std::memory_order_relaxed);
    const std::uint64_t w = queue_rings[rid].look(pos);
    if (queue_rings[rid].empty_in(pos, w)) continue;
    if (a != nullptr) {  // holding none (hand_out above used them up)
      // Claim ahead; claim again when every record claimed had expired (dead-lettered).
      while (fill_ahead(*a, q, level) != 0)
        if (hand_out(*a, q, out)) return took(out, as_helper);
      continue;  // the level is empty now
    }
    if (take_front(q, level, rid, pos, w, out)) return took(out, as_helper);
    if (pop_level<Pop::single>(q, level, 1, &out, nullptr) != 0) return took(out, as_helper);
  }
  return false;
}

// Takes up to out.size() tasks, draining each level before looking at the next.
inline std::size_t Client::Impl::take_batch(QueueId q, std::span<Taken> out) noexcept {
  if (!takeable_queue(q)) {
    if (attached && q < core->layout.max_queues) give_back_ahead(q, false);  // as in take
    return 0;
  }
  AheadUse use(ahead_of(q));
  std::size_t n = 0;
  if (Ahead* const a = use.get(); a != nullptr) {  // records held first, as in take
    while (n < out.size() && hand_out(*a, q, out[n])) ++n;
    if (n != 0) bump(counters(q, a->level).started, n);
  }
  for (std::uint32_t level = 0; level < core->levels && n < out.size(); ++level) {
    const std::size_t got = pop_level<Pop::batch>(q, level, out.size() - n, &out[n], nullptr);
    if (got != 0) bump(counters(q, level).started, got);
    n += got;
  }
  return n;
}

inline bool Client::Impl::took(Taken& out, bool as_helper) noexcept {
  out.helped = as_helper;
  auto& c = counters(out.queue, out.level);
  bump(c.started);
  if (as_helper) bump(c.helped);
  return true;
}

// The most urgent level > 0 whose oldest task has waited longer than `bound_ns`, or
// 0. Looks at most once a millisecond per process (between looks, strict priority).
inline std::uint32_t Client::Impl::aged_level(QueueId q, std::int64_t bound_ns) noexcept {
  const std::int64_t now = detail::coarse_now_ns();
  std::int64_t last = last_aging_check.load(std::memory_order_relaxed);
  if (now - last < 1000000 || !last_aging_check.compare_exchange_strong(last, now, std::memory_order_relaxed)) return 0;
  for (std::uint32_t level = 1; level < core->levels; ++level) {
    std::uint32_t v = 0;
    if (!core->ring(core->ring_id(q, level)).peek_head(v) || v >= core->capacity) continue;
    if (detail::sub_sat(now, detail::load_enqueued(core->hot(v))) > bound_ns) return level;
  }
  return 0;
}

// The one pop of the engine: claims up to `max` records of one level in ring order (a
// run is taken from its front, several of its records at once) and hands each over as
// the policy says; returns how many were handed over. (take_front is the same pop for
// its commonest case, from the look a single take starts with.)
//
//   Pop::single  into out[0]: the attempt counted, an expired or damaged record
//                dead-lettered on the way and not counted (out has one element, known
//                when compiled: the ring code folds away its bookkeeping for several);
//   Pop::batch   the same into out[0 .. max): the members of each entry, and the next
//                entry's, are fetched together before their claims;
//   Pop::ahead   into the take-ahead buffer `held` (empty), attempts not yet counted:
//                hand_out counts and checks each as it hands it out.
template <Client::Impl::Pop kPop>
[[gnu::always_inline]] inline std::size_t Client::Impl::pop_level(QueueId q, std::uint32_t level, std::size_t max,
                                                                  Taken* out, Ahead* held) noexcept {
  const std::uint16_t rid = core->ring_id(q, level);
  std::size_t n = 0;
  std::uint64_t w = 0;
  // The records prefetch_fn started fetching: [fetched_from, fetched_to).
  std::uint32_t fetched_from = 0, fetched_to = 0;
  TypeNames names;
  auto claim_fn = [&](std::uint64_t pos, std::uint32_t v) noexcept {
    const bool fetch = kPop != Pop::batch || v < fetched_from || v >= fetched_to;
    return claim(rid, pos, v, TaskState::running, w, fetch);
  };
  auto take_fn = [&](std::uint32_t v) noexcept {
    if constexpr (kPop == Pop::ahead) {
      held->index[n] = v;
      held->word[n] = w;
      ++n;
      SHMSCHED_FAULT_POINT(take_ahead_held);
    } else {
      SHMSCHED_FAULT_POINT(take_after_claim);
      fill_taken(v, w, out[n], names);
      if (!expired_on_take(q, level, v, w)) ++n;
    }
  };
  auto prefetch_fn = [&](std::uint64_t pos, std::uint32_t front, std::uint32_t end) noexcept {
    // A take that claims ahead mostly runs right behind the producers: fetching the
    // slots and records they are still writing would take those lines from them, so it
    // fetches nothing ahead. Each claim still fetches its own record's lines first.
    if constexpr (kPop != Pop::ahead) {
      // The members of this entry (a run of a batch): their lines arrive together
      // instead of one claim's miss after another, and their claims fetch nothing more;
      // and the next entry's members, so that they arrive while this entry's are claimed.
      if constexpr (kPop == Pop::batch) {
        fetched_from = front;
        fetched_to = prefetch_run(front, end);
        std::uint32_t after = 0;
        const std::uint32_t run = queue_rings[rid].run_at(pos + 1, after);
        prefetch_run(after, after + run);
      }
      prefetch_next_takes(rid, pos);
    }
  };
  for (;;) {
    const std::size_t want = kPop == Pop::single ? 1 - n : max - n;
    if (want == 0) return n;
    const std::size_t got = queue_rings[rid].try_pop_many(claim_fn, want, take_fn, &pop_cursor[rid], prefetch_fn);
    // Fewer than wanted: the level is empty. Handed over fewer than claimed (expired
    // records): pop again for the rest. Take-ahead hands out and checks later.
    if (got < want || kPop == Pop::ahead) return n;
  }
}

// The commonest single take, from the look take() starts a level with: the entry at our
// cursor `pos` of ring `rid`, which held w, popped by IndexRing::pop_front (the same
// steps as pop_level's walk for one value at the cursor, without the walk). False when
// that is not the simple case, or when the task taken had expired (dead-lettered, as
// pop_level does); the caller then goes on with pop_level.
inline bool Client::Impl::take_front(QueueId q, std::uint32_t level, std::uint16_t rid, std::uint64_t pos,
                                     std::uint64_t w, Taken& out) noexcept {
  std::uint64_t word = 0;
  bool counts = false;
  auto claim_fn = [&](std::uint64_t p, std::uint32_t v) noexcept { return claim(rid, p, v, TaskState::running, word); };
  // Always inlined (a call would add to every single take); the attribute's GNU form and
  // place are the ones GCC and Clang both take on a lambda.
  auto take_fn = [&](std::uint32_t v) __attribute__((always_inline)) {
    SHMSCHED_FAULT_POINT(take_after_claim);
    fill_taken(v, word, out);
    counts = !expired_on_take(q, level, v, word);
  };
  auto prefetch_fn = [&](std::uint64_t p, std::uint32_t, std::uint32_t) noexcept { prefetch_next_takes(rid, p); };
  return queue_rings[rid].pop_front(pos, w, claim_fn, take_fn, pop_cursor[rid], prefetch_fn) && counts;
}

// Whether record v, just taken with state word w from queue q's ring of `level`,
// must not be handed out: damaged (record_defect, or not of the ring it was in:
// quarantined) or expired while queued (dead-lettered on purpose, never run).
inline bool Client::Impl::expired_on_take(QueueId q, std::uint32_t level, std::uint32_t v, std::uint64_t w) noexcept {
  const auto* b = core->hot(v);
  if (const char* defect = record_defect(v); defect != nullptr || b->queue != q || b->level != level) [[unlikely]] {
    bump(counters(q, level).dead);
    (void)dead_letter_record(v, w, defect != nullptr ? defect : "corrupt record: not of the ring it was in");
    return true;
  }
  const std::int64_t expires = b->expires_ns;
  if (expires == 0 || monotonic_ns() <= expires) return false;
  bump(counters(q, level).dead);
  (void)dead_letter_record(v, w, "expired before it started");
  return true;
}

// The ring slot a take kPrefetchDistance pops from now looks at, and the record of the entry
// kPrefetchDistance positions on: their lines arrive while this take's claim, reads and the
// caller's handler run (the next takes then find them near).
[[gnu::always_inline]] inline void Client::Impl::prefetch_next_takes(std::uint16_t rid,
                                                                     std::uint64_t pos) const noexcept {
  queue_rings[rid].prefetch(pos + 2 * std::uint64_t{kPrefetchDistance});
  const std::uint32_t v = queue_rings[rid].value_at(pos + kPrefetchDistance);
  if (v < core->capacity) {
    detail::prefetch(&core->ctrl[v]);
    prefetch_body(v);
  }
}

// Starts fetching the lines of run members front .. end - 1 that a batch take is
// about to claim (at most kMaxRunFetch of them, none past the table); returns the
// member it stopped before.
[[gnu::always_inline]] inline std::uint32_t Client::Impl::prefetch_run(std::uint32_t front,
                                                                       std::uint32_t end) const noexcept {
  const std::uint32_t last = std::min<std::uint32_t>({end, front + kMaxRunFetch, core->capacity});
  for (std::uint32_t x = front; x < last; ++x) {
    if (x == front || x % kCtrlPerLine == 0) detail::prefetch(&core->ctrl[x]);
    prefetch_body(x);
  }
  return last;
}

// Fills `out` for record v, which we own with state word w, and counts the attempt.
// Inlined into every take path: it is most of a take's instructions, and a call
// would add to each take.
[[gnu::always_inline]] inline void Client::Impl::fill_taken(std::uint32_t v, std::uint64_t w, Taken& out) noexcept {
  TypeNames names;
  fill_taken(v, w, out, names);
}

[[gnu::always_inline]] inline void Client::Impl::fill_taken(std::uint32_t v, std::uint64_t w, Taken& out,
                                                            TypeNames& names) noexcept {
  auto* b = core->hot(v);
  const auto attempt = static_cast<std::uint16_t>(b->attempts + 1);
  detail::set_field(b->attempts, attempt);
  const std::uint64_t th = b->type_hash;
  if (th != names.hash || names.name.empty()) names = TypeNames{th, type_name_cached(th)};
  out.index = v;
  out.word = w;
  out.id = b->id;
  out.queue = b->queue;
  out.level = b->level;
  out.attempt = attempt;
  out.max_attempts = b->max_attempts;
  out.type = th;
  out.type_name = names.name;
  out.payload =
      std::span<const std::byte>(core->payload(v), std::min<std::uint32_t>(b->payload_len, core->layout.payload_bytes));
  out.enqueued_ns = detail::load_enqueued(b);
  out.helped = false;
  out.keep_result = (b->flags & detail::kKeepResult) != 0;
  out.in_group = (b->flags & detail::kHasGroup) != 0;
  for (int k = 0; k < 2; ++k) out.needs[k] = Need{b->need_sem[k], b->need_count[k]};
}

// Whether t could be ours: attached, and its index within the table.
inline bool Client::Impl::names_record(const Taken& t) const noexcept {
  return attached && t.index < core->capacity;
}

inline bool Client::Impl::owns(const Taken& t) const noexcept {
  return names_record(t) && core->ctrl[t.index].state.load(std::memory_order_relaxed) == t.word;
}

}  // namespace shmsched
