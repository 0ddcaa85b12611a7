// Schedules: firing a due time exactly once (F1..F4), its recovery from a dead firer,
// and the hint the janitor's housekeeper sleeps on. The API (add, pause, resume, remove,
// read): lib/src/schedules.cpp. docs/schedules.md, "Exactly once".
//
// A schedule's `next` word is [due : 48][claimer token : 16]. A firer
//   (F1) fills a record for the occurrence (reserved: not accepted, nobody sees it) and
//        writes its firing note (entry, the claim word, the word after, record, task id);
//   (F2) claims the due time: CAS next (due, 0) -> (due, me);
//   (F3) publishes the record into its queue's ring (queued);
//   (F4) advances: CAS next (due, me) -> (next due, 0), and clears its note.
// Whoever reaps a dead firer reads its note (finish_firing, before its records are
// recovered): if `next` still holds its claim, the record still reserved by it with the
// occurrence's id means F3 did not happen -- the due time is given back, (due, 0), and
// fired again by the next pass -- and anything else means it did: the reaper advances.
// A firer that finds a due time claimed by another leaves it (alive, it finishes; dead,
// its reaper does). A firer that was reaped while stopped finds its CASes refused.
#pragma once

#include "impl.hpp"
#include "shmsched/process.hpp"

namespace shmsched {

namespace detail {
inline constexpr std::int64_t kScheduleEpochMs = 1'577'836'800'000;    // 2020-01-01T00:00Z
inline constexpr std::uint64_t kNoDue = (std::uint64_t{1} << 48) - 1;  // no due time comes
inline constexpr std::uint64_t kClaimerMask = 0xFFFF;
constexpr std::uint64_t schedule_next(std::optional<std::int64_t> due_ms, std::uint16_t claimer) noexcept {
  std::uint64_t d = kNoDue;
  if (due_ms) d = *due_ms <= kScheduleEpochMs ? 0 : std::min<std::uint64_t>(*due_ms - kScheduleEpochMs, kNoDue - 1);
  return (d << 16) | claimer;
}
/// Unix ms of a next word's due time; 0 when none comes.
constexpr std::int64_t schedule_due(std::uint64_t n) noexcept {
  const std::uint64_t d = n >> 16;
  return d == kNoDue ? 0 : static_cast<std::int64_t>(d) + kScheduleEpochMs;
}
constexpr std::uint16_t schedule_claimer(std::uint64_t n) noexcept {
  return static_cast<std::uint16_t>(n & kClaimerMask);
}
inline std::uint64_t schedule_state(std::uint64_t w) noexcept {
  return w & 0xF;
}
inline std::uint64_t schedule_gen(std::uint64_t w) noexcept {
  return w >> 4;
}
inline std::uint64_t schedule_word(std::uint64_t gen, std::uint64_t state) noexcept {
  return (gen << 4) | state;
}

// A trivially copyable value kept in the segment as relaxed atomic words: written by
// one writer before a release, read by a seqlock (the reader checks the entry's word).
template <class T>
void store_words(AtomicU64* dst, const T& v) noexcept {
  static_assert(sizeof(T) % 8 == 0 && std::is_trivially_copyable_v<T>);
  for (std::size_t i = 0; i < sizeof(T) / 8; ++i) {
    std::uint64_t w;
    std::memcpy(&w, reinterpret_cast<const char*>(&v) + 8 * i, 8);
    dst[i].store(w, std::memory_order_relaxed);  // relaxed: published by the entry word's release
  }
}
template <class T>
T load_words(const AtomicU64* src) noexcept {
  T v;
  for (std::size_t i = 0; i < sizeof(T) / 8; ++i) {
    const std::uint64_t w = src[i].load(std::memory_order_relaxed);  // relaxed: checked by the seqlock
    std::memcpy(reinterpret_cast<char*>(&v) + 8 * i, &w, 8);
  }
  return v;
}

/// Schedule entry e's template when its word is still `w` after the read.
inline bool read_template(const ScheduleEntry& e, std::uint64_t w, ScheduleTemplate& out) noexcept {
  out = load_words<ScheduleTemplate>(e.tmpl);
  // acquire fence: the loads above happen before the word's second look, so a writer
  // that changed the template also changed the word (a new generation) by then.
  std::atomic_thread_fence(std::memory_order_acquire);
  return e.word.load(std::memory_order_relaxed) == w;
}

/// How many due times of `t` fall in [from, to] (at most `cap`).
inline std::uint64_t due_times_between(const ScheduleTemplate& t, std::int64_t from, std::int64_t to,
                                       std::uint64_t cap = 100'000) {
  const Recurrence r{t.cron, t.every_ms};
  if (from > to) return 0;
  if (r.every_ms > 0) return std::min<std::uint64_t>(cap, static_cast<std::uint64_t>((to - from) / r.every_ms) + 1);
  std::uint64_t n = 1;
  for (auto d = r.next_after(from, static_cast<TimeZone>(t.zone)); d && *d <= to && n < cap;
       d = r.next_after(*d, static_cast<TimeZone>(t.zone)))
    ++n;
  return n;
}
}  // namespace detail

// Lowers the schedules' hint to `due_ms` (0: nothing) and wakes the housekeepers that
// sleep past it.
inline void Client::Impl::lower_schedule_due(std::int64_t due_ms) noexcept {
  if (due_ms == 0) return;
  auto* h = core->header;
  std::int64_t cur = h->schedule_due_ms.load(std::memory_order_relaxed);
  // (H1) seq_cst: ordered before the look at the sleepers below; pairs with (D2).
  while ((cur == 0 || due_ms < cur) &&
         !h->schedule_due_ms.compare_exchange_weak(cur, due_ms, std::memory_order_seq_cst)) {
  }
  if (h->due_waiters.load(std::memory_order_seq_cst) != 0) wake_housekeepers();
}

// A record reserved and filled with schedule template t's task (not accepted: nobody
// sees it). False when the template names no queue or level, or the table is full.
inline bool Client::Impl::fill_occurrence(const detail::ScheduleTemplate& t, std::uint32_t& idx, std::uint64_t& word,
                                          TaskId& tid) noexcept {
  if (t.queue >= core->layout.max_queues || t.level >= core->levels || alloc(idx, word) != Errc::ok) return false;
  const std::string_view type(t.type, ::strnlen(t.type, sizeof t.type));
  const std::uint64_t th = type_hash(type);
  register_type(th, type);
  TaskOptions o;
  o.queue = t.queue;
  o.priority = t.level;
  o.max_attempts = t.max_attempts;
  for (int k = 0; k < 2; ++k) o.needs[k] = Need{t.need_sem[k], t.need_count[k]};
  const auto payload =
      std::as_bytes(std::span<const char>(t.payload, std::min<std::size_t>(t.payload_len, core->layout.payload_bytes)));
  tid = fill_record(idx, word, th, payload, o, t.queue, detail::coarse_now_ns());
  return true;
}

// A due time advanced past its occurrence (F4, or the reaper's for a dead firer).
inline void Client::Impl::count_fired(detail::ScheduleEntry& en, TaskId tid, std::int64_t due, std::uint64_t folded,
                                      std::int64_t late_us) noexcept {
  // relaxed: informational counters, read by inspection.
  en.fired.fetch_add(1, std::memory_order_relaxed);
  if (folded != 0) en.missed.fetch_add(folded, std::memory_order_relaxed);
  en.last_task.store(tid, std::memory_order_relaxed);
  en.last_due_ms.store(due, std::memory_order_relaxed);
  if (late_us >= 0) en.last_late_us.store(late_us, std::memory_order_relaxed);
}

// Fires schedule entry e's due time if it has come (F1..F4). True when it enqueued.
inline bool Client::Impl::fire_one(std::uint32_t e, std::int64_t now_ms) noexcept {
  using detail::ScheduleEntry;
  ScheduleEntry& en = core->schedules[e];
  // acquire: the creator's template and next word are seen (its release of kActive).
  const std::uint64_t w = en.word.load(std::memory_order_acquire);
  if (detail::schedule_state(w) != ScheduleEntry::kActive) return false;
  std::uint64_t n = en.next.load(std::memory_order_acquire);
  const std::int64_t due = detail::schedule_due(n);
  if (detail::schedule_claimer(n) != 0 || due == 0 || due > now_ms) return false;
  detail::ScheduleTemplate t;
  if (!detail::read_template(en, w, t)) return false;
  const Recurrence r{t.cron, t.every_ms};
  const auto zone = static_cast<TimeZone>(t.zone);
  const bool late = now_ms - due >= kMissedAfterMs;
  const std::uint64_t after = detail::schedule_next(r.next_after(late ? now_ms : due, zone, t.anchor_ms), 0);
  const std::uint64_t missed = late ? detail::due_times_between(t, due, now_ms) : 0;
  if (late && static_cast<MissedRuns>(t.missed) == MissedRuns::skip) {
    // One CAS drops them all (acq_rel: as F4).
    if (en.next.compare_exchange_strong(n, after, std::memory_order_acq_rel))
      en.missed.fetch_add(missed, std::memory_order_relaxed);
    return false;
  }
  // (F1) the occurrence, filled but not accepted, and the note.
  std::uint32_t idx = 0;
  std::uint64_t word = 0;
  const std::uint64_t claim = (n & ~detail::kClaimerMask) | token;
  TaskId tid = kNoTask;
  if (!fill_occurrence(t, idx, word, tid)) {
    en.stalls.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  me->fire_claim.store(claim, std::memory_order_relaxed);
  me->fire_next.store(after, std::memory_order_relaxed);
  me->fire_task.store(tid, std::memory_order_relaxed);
  me->fire_record.store(idx, std::memory_order_relaxed);
  // release: the note's fields before its entry, which a recoverer reads first.
  me->fire_entry.store((detail::schedule_gen(w) << 16) | (e + 1), std::memory_order_release);
  SHMSCHED_FAULT_POINT(schedule_noted);
  const auto give_up = [&](bool unclaim) {
    std::uint64_t c = claim;
    if (unclaim) en.next.compare_exchange_strong(c, n, std::memory_order_acq_rel);  // the due time is open again
    (void)free_record(idx, word);
    me->fire_entry.store(0, std::memory_order_release);
  };
  // (F2) acq_rel: the claim, which names us: whoever reaps us finds it with our note.
  if (!en.next.compare_exchange_strong(n, claim, std::memory_order_acq_rel)) {
    give_up(false);
    return false;
  }
  SHMSCHED_FAULT_POINT(schedule_claimed);
  // The entry removed (or reused) since we read it: the due time was not its to fire.
  if (detail::schedule_gen(en.word.load(std::memory_order_acquire)) != detail::schedule_gen(w) ||
      detail::schedule_state(en.word.load(std::memory_order_acquire)) == ScheduleEntry::kFree) {
    give_up(true);
    return false;
  }
  // (F3) publish.
  const PushStatus st = push_record(idx, word, core->ring_id(t.queue, t.level), TaskState::queued);
  if (st != PushStatus::ok) {  // full: tried again by a later pass; aborted: reaped, our reaper settled it
    if (st == PushStatus::full) {
      en.stalls.fetch_add(1, std::memory_order_relaxed);
      give_up(true);
    } else {
      me->fire_entry.store(0, std::memory_order_release);
    }
    return false;
  }
  notify(t.queue);
  bump(counters(t.queue, t.level).enqueued);
  SHMSCHED_FAULT_POINT(schedule_published);
  // (F4) acq_rel: advance; refused only if we were reaped meanwhile (our reaper advanced).
  std::uint64_t c = claim;
  if (en.next.compare_exchange_strong(c, after, std::memory_order_acq_rel))
    count_fired(en, tid, due, missed > 1 ? missed - 1 : 0, unix_ns() / 1000 - due * 1000);
  me->fire_entry.store(0, std::memory_order_release);
  return true;
}

// Every due schedule, then the hint set to the earliest due time left.
inline std::size_t Client::Impl::fire_schedules(std::int64_t now_ms) noexcept {
  auto* h = core->header;
  // acquire: the hint's lowering came with (after) its schedule's publication.
  const std::int64_t hint = h->schedule_due_ms.load(std::memory_order_acquire);
  if (!attached || hint == 0 || hint > now_ms) return 0;
  // One pass at a time per participant: the firing note is the participant's.
  if (firing.exchange(true, std::memory_order_acquire)) return 0;
  std::size_t fired = 0;
  std::int64_t earliest = 0;
  for (std::uint32_t e = 0; e < detail::kMaxSchedules; ++e) {
    // A due time behind by several periods (not yet missed) fires each one.
    for (int k = 0; k < 1000 && fire_one(e, now_ms); ++k) ++fired;
    const auto& en = core->schedules[e];
    if (detail::schedule_state(en.word.load(std::memory_order_relaxed)) != detail::ScheduleEntry::kActive) continue;
    const std::uint64_t n = en.next.load(std::memory_order_relaxed);
    const std::int64_t due = detail::schedule_due(n);
    // A due time claimed by another is its claimer's (or its reaper's) to lower again.
    if (detail::schedule_claimer(n) == 0 && due != 0 && (earliest == 0 || due < earliest)) earliest = due;
  }
  firing.store(false, std::memory_order_release);
  // From the value read before the pass to what it found; a lowering meanwhile (a new
  // schedule the pass may have missed) is kept. seq_cst: as (H1).
  std::int64_t cur = hint;
  while (!h->schedule_due_ms.compare_exchange_weak(cur, earliest, std::memory_order_seq_cst)) {
    if (cur != 0 && earliest != 0 && cur <= earliest) break;  // lower already
    if (cur != 0 && earliest == 0) earliest = cur;
  }
  return fired;
}

// Recovery of participant p's (0-based, dead) firing note: before its records are
// recovered, while the occurrence's record is still reserved by it if F3 did not happen.
inline void Client::Impl::finish_firing(std::uint32_t p) noexcept {
  auto& pe = core->participants[p];
  const std::uint64_t note = pe.fire_entry.load(std::memory_order_acquire);
  if (note == 0) return;
  const std::uint64_t e = (note & 0xFFFF) - 1;
  if (e < detail::kMaxSchedules) {
    auto& en = core->schedules[e];
    std::uint64_t claim = pe.fire_claim.load(std::memory_order_relaxed);
    const std::uint32_t idx = pe.fire_record.load(std::memory_order_relaxed);
    if (en.next.load(std::memory_order_acquire) == claim && idx < core->capacity) {
      const std::uint64_t s = core->ctrl[idx].state.load(std::memory_order_acquire);
      const bool unpublished = state_of(s) == TaskState::reserved && owner_of(s) == detail::schedule_claimer(claim) &&
                               std::atomic_ref<std::uint64_t>(core->hot(idx)->id).load(std::memory_order_relaxed) ==
                                   pe.fire_task.load(std::memory_order_relaxed);
      const std::uint64_t to =
          unpublished ? claim & ~detail::kClaimerMask : pe.fire_next.load(std::memory_order_relaxed);
      // acq_rel: as F4 (or, given back, as a claim undone).
      if (en.next.compare_exchange_strong(claim, to, std::memory_order_acq_rel)) {
        if (!unpublished)
          count_fired(en, pe.fire_task.load(std::memory_order_relaxed), detail::schedule_due(claim), 0, -1);
        lower_schedule_due(detail::schedule_due(to));
      }
    }
  }
  pe.fire_entry.store(0, std::memory_order_release);
}

}  // namespace shmsched
