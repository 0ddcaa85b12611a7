// IndexRing: a bounded lock-free MPMC ring of record indices that no crash can wedge.
//
// What it is. A ring of `capacity` 64-bit slot words plus two 64-bit position hints
// (head, tail). Positions are monotonic 64-bit integers; position p lives in slot
// p & (capacity - 1) at lap p / capacity. A slot word packs
//
//     [ lap : 37 ][ full : 1 ][ run - 1 : 6 ][ value : 20 ]
//
// EMPTY(L) means "ready to receive the entry of lap L"; FULL(L, v, n) holds the run of
// n consecutive values v .. v + n - 1 for lap L (n = 1 for a single value; a batch of
// records reserved side by side is published as one entry). An all-zero slot is
// EMPTY(0), so a freshly truncated (zero) segment is a valid empty ring and untouched
// slots cost no memory.
//
// How it differs from Vyukov's bounded queue (docs/ring-protocol.md has the full
// argument). Vyukov claims a position by moving a shared counter and then publishes the
// slot in a second step; a process killed between the two leaves a hole that every
// consumer waits behind forever. Here:
//   * a push is ONE compare-exchange of the slot word, EMPTY(L) -> FULL(L, v). There is
//     no claimed-but-unpublished state, so a dying producer leaves nothing half done in
//     the ring. Head and tail are hints that anyone may advance.
//   * the value names a task record, and taking it is decided by that record's state
//     word (the single source of truth), not by the slot. A consumer first moves the
//     record out of its takeable state with one CAS (the linearisation point of the
//     pop), then clears the slot. A consumer killed between the two leaves a FULL slot
//     whose record is no longer takeable: the next process to reach it sees it is
//     stale and clears it. Nothing waits for a reaper.
//   * a run is consumed from its front: a popper claims members (each by its record's
//     CAS) and then moves the slot on past them with one CAS, FULL(L, v, n) ->
//     FULL(L, v + k, n - k), or EMPTY(L + 1) once none is left. Members before the
//     front are never takeable again at this position, so a popper that finds some it
//     cannot claim skips them, and one killed before moving the slot on leaves only
//     members that the next popper skips.
//   * so the slot needs no claimer id: the record's state word already records the
//     owner, and recovery of the record (not of the ring) is the reaper's job.
//
// Who may call what: any process may push and pop; the `claim` and `is_stale` callables
// define what "takeable" means for the records in this ring (see TaskTable).
//
// Ordering: (R3) the publishing CAS is a release that pairs with the acquire load (R6)
// of a popper, so everything the producer wrote to the record before the push is
// visible to whoever reads the slot. The clearing CAS (R4) is a release that pairs with
// the producer's acquire load (R2) of the same slot.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "shmsched/detail/atomic.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/detail/prefetch.hpp"

namespace shmsched {

/// The position hints of a ring; tail and head on separate lines (producers write one,
/// consumers the other).
struct RingHeader {
  alignas(detail::kCacheLine) detail::AtomicU64 tail{0};
  alignas(detail::kCacheLine) detail::AtomicU64 head{0};
};
static_assert(sizeof(RingHeader) == 2 * detail::kCacheLine);

enum class PushStatus : std::uint8_t { ok, full, aborted };
/// What a claim callable reports about the record named by a FULL slot.
enum class Claim : std::uint8_t {
  taken,  ///< the caller now owns the record (its CAS succeeded)
  stale,  ///< the record is not takeable at this position: the entry is a leftover
};

template <class Atomic = detail::AtomicU64>
class IndexRing {
 public:
  static constexpr unsigned kValueBits = 20;
  static constexpr std::uint64_t kValueMask = (std::uint64_t{1} << kValueBits) - 1;
  static constexpr unsigned kRunBits = 6;
  /// The longest run one entry holds.
  static constexpr std::uint32_t kMaxRun = 1u << kRunBits;
  static constexpr std::uint64_t kRunMask = kMaxRun - 1;
  static constexpr std::uint64_t kFullBit = std::uint64_t{1} << (kValueBits + kRunBits);
  static constexpr unsigned kLapShift = kValueBits + kRunBits + 1;
  static constexpr std::uint64_t kLapMask = (std::uint64_t{1} << (64 - kLapShift)) - 1;

  IndexRing() = default;
  /// `capacity` must be a power of two >= 2.
  IndexRing(RingHeader* header, Atomic* slots, std::uint32_t capacity) noexcept
      : header_(header), slots_(slots), mask_(capacity - 1), shift_(log2(capacity)) {}

  std::uint32_t capacity() const noexcept { return static_cast<std::uint32_t>(mask_ + 1); }

  static constexpr std::uint64_t empty_word(std::uint64_t lap) noexcept { return (lap & kLapMask) << kLapShift; }
  /// FULL(lap, v, run): `run` (1..kMaxRun) values from v on.
  static constexpr std::uint64_t full_word(std::uint64_t lap, std::uint32_t v, std::uint32_t run = 1) noexcept {
    return ((lap & kLapMask) << kLapShift) | kFullBit | (std::uint64_t{(run - 1) & kRunMask} << kValueBits) |
           (v & kValueMask);
  }
  static constexpr bool is_full(std::uint64_t w) noexcept { return (w & kFullBit) != 0; }
  /// The first value of a FULL entry.
  static constexpr std::uint32_t value_of(std::uint64_t w) noexcept {
    return static_cast<std::uint32_t>(w & kValueMask);
  }
  /// How many values a FULL entry holds (1..kMaxRun).
  static constexpr std::uint32_t run_of(std::uint64_t w) noexcept {
    return static_cast<std::uint32_t>((w >> kValueBits) & kRunMask) + 1;
  }
  static constexpr std::uint64_t lap_of_word(std::uint64_t w) noexcept { return w >> kLapShift; }
  std::uint64_t lap_of_pos(std::uint64_t pos) const noexcept { return (pos >> shift_) & kLapMask; }

  /// Push the run of `run` values from `value` on (value + run <= 2^20, run <=
  /// kMaxRun) as one entry. `prepare(pos)` runs once per attempt, after an EMPTY slot
  /// was found at `pos` and before the publishing CAS; it returns false to abort the
  /// push (the ring is left unchanged). `is_stale(pos, v)` says whether value v of a
  /// FULL entry of an older lap is a leftover; an entry all of whose values are may be
  /// cleared (else the ring is full).
  /// Never overwrites: a full ring returns PushStatus::full.
  ///
  /// `cursor`, when given, is the caller's own tail hint: every position before it was
  /// filled when the caller last looked (true forever after). The walk starts at the
  /// later of it and the shared hint; a push leaves it just past the position it filled.
  template <class Prepare, class IsStale>
  [[gnu::always_inline]] PushStatus try_push(std::uint32_t value, Prepare&& prepare, IsStale&& is_stale,
                                             detail::AtomicU64* cursor = nullptr, std::uint32_t run = 1) noexcept {
    std::uint64_t t0 = header_->tail.load(std::memory_order_relaxed);  // (R1) a hint only
    // relaxed: a process-private hint whose invariant holds for any value ever stored.
    if (cursor != nullptr) t0 = std::max(t0, cursor->load(std::memory_order_relaxed));
    std::uint64_t t = t0;
    // Bound: each iteration either returns or moves past a slot another pusher filled or
    // a leftover it cleared. A pusher that keeps losing the race for the tail (a long
    // prepare for a run against single pushes, or a thread descheduled mid-walk) can use
    // up a budget of 4 laps of steps on a sound ring; it gets another while the shared
    // tail hint shows others filling positions meanwhile. Only a ring that did not move
    // through a whole budget (or through kBudgets of them) is taken as corrupt: refused,
    // never overwritten. (Returning `full` under contention would break the batch
    // path's promise that a ring with a slot per record is never full.)
    constexpr unsigned kBudgets = 64;
    std::uint64_t budget_tail = header_->tail.load(std::memory_order_relaxed);
    for (std::uint64_t steps = 0, budgets = 1;; ++steps) {
      if (steps == 4 * (mask_ + 1) + 64) {
        const std::uint64_t now = header_->tail.load(std::memory_order_relaxed);
        if (now == budget_tail || budgets == kBudgets) return PushStatus::full;
        budget_tail = now;
        steps = 0;
        ++budgets;
      }
      Atomic& slot = slots_[t & mask_];
      // Start the line's fetch before the load needs it (a hint only; PREFETCHT0).
      detail::prefetch(&slot);
      // (R2) acquire: pairs with the clearing release (R4), so the slot is really free.
      std::uint64_t w = slot.load(std::memory_order_acquire);
      const std::uint64_t lap = lap_of_pos(t);
      const std::uint64_t wlap = lap_of_word(w);
      if (wlap == lap && !is_full(w)) {
        if (!prepare(t)) return PushStatus::aborted;
        SHMSCHED_FAULT_POINT(ring_push_before_publish);
        // (R3) release: publishes the record fields and `where` written by prepare (and
        // everything before); pairs with (R6) in try_pop. seq_cst rather than just
        // release so that a producer's later seq_cst load of the sleeper masks cannot
        // be ordered before it (the Dekker pair with a consumer going to sleep; see
        // docs/consumer.md). On x86-64 both are the same locked instruction.
        if (slot.compare_exchange_strong(w, full_word(lap, value, run), std::memory_order_seq_cst,
                                         std::memory_order_relaxed)) {
          SHMSCHED_FAULT_POINT(ring_push_after_publish);
          prefetch(t + kSlotsPerLine);  // the line the pushes after the next few fill
          if (hint_due(t0, t)) detail::advance_hint(header_->tail, t + 1);
          if (cursor != nullptr) cursor->store(t + 1, std::memory_order_relaxed);
          return PushStatus::ok;
        }
        continue;  // another producer filled slot t: look at it again
      }
      if (wlap == lap || lap_after(wlap, lap)) {
        // Position t was filled (or even cleared) already: we are behind. Every position
        // before the shared tail hint is filled, so go on from there when it is further.
        t = std::max(t + 1, header_->tail.load(std::memory_order_relaxed));
        continue;
      }
      if (is_full(w) && ((wlap + 1) & kLapMask) == lap) {
        // The entry of the previous lap is still there: full, unless it is a leftover.
        if (!entry_stale(t - (mask_ + 1), w, is_stale)) return PushStatus::full;
        SHMSCHED_FAULT_POINT(ring_clear_leftover);
        // (R4') release: same role as (R4).
        slot.compare_exchange_strong(w, empty_word(lap), std::memory_order_release, std::memory_order_relaxed);
        continue;
      }
      return PushStatus::full;  // a lap that cannot occur in a sound ring: refuse, never overwrite
    }
  }

  /// Pop the oldest value that `claim(pos, value)` takes. Leftover entries (claim says
  /// stale for all their values) are cleared on the way. Returns false when the ring is
  /// empty at the head.
  template <class ClaimFn>
  bool try_pop(ClaimFn&& claim, std::uint32_t& out, detail::AtomicU64* cursor = nullptr) noexcept {
    return try_pop_many(
               claim, 1, [&](std::uint32_t v) noexcept { out = v; }, cursor) != 0;
  }

  template <class ClaimFn, class TakeFn>
  std::size_t try_pop_many(ClaimFn&& claim, std::size_t max, TakeFn&& take,
                           detail::AtomicU64* cursor = nullptr) noexcept {
    return try_pop_many(claim, max, take, cursor, [](std::uint64_t, std::uint32_t, std::uint32_t) noexcept {});
  }

  /// Starts fetching the slot line of `pos` (a hint; a push or pop writes it next).
  void prefetch(std::uint64_t pos) const noexcept { detail::prefetch(&slots_[pos & mask_]); }

  /// How many values the entry at `pos` holds for its lap now (0 if none), the first of
  /// them in v: an early look (relaxed; no ordering), for prefetching only, as value_at.
  std::uint32_t run_at(std::uint64_t pos, std::uint32_t& v) const noexcept {
    const std::uint64_t w = slots_[pos & mask_].load(std::memory_order_relaxed);
    if (!is_full(w) || lap_of_word(w) != lap_of_pos(pos)) return 0;
    v = value_of(w);
    return run_of(w);
  }
  /// The first value of the entry at `pos` if it holds one for its lap now, else
  /// UINT32_MAX: an early look (relaxed; no ordering), for prefetching only.
  std::uint32_t value_at(std::uint64_t pos) const noexcept {
    const std::uint64_t w = slots_[pos & mask_].load(std::memory_order_relaxed);
    return is_full(w) && lap_of_word(w) == lap_of_pos(pos) ? value_of(w) : UINT32_MAX;
  }

  /// Pops up to `max` values in ring order, calling `take(value)` for each one that
  /// `claim(pos, value)` takes; returns how many. Values of a run are claimed from its
  /// front; the entry is then moved on past the values looked at (or cleared when none
  /// is left), so a run may be shared by several poppers, each taking a stretch of it.
  ///
  /// `cursor`, when given, is the caller's own head hint: a position every position
  /// before which was consumed when the caller last looked (true forever after, since
  /// positions only move on). The walk starts at the later of it and the shared hint,
  /// and the cursor is left at the position the walk ended on, so a caller that is the
  /// only consumer of the ring never walks over positions it consumed itself.
  ///
  /// `on_entry(pos, v, end)` is called once per entry reached, before its first claim,
  /// with the values v .. end - 1 the entry still holds: a hook to start fetching what
  /// this pop and later ones will need (see value_at).
  template <class ClaimFn, class TakeFn, class OnEntryFn>
  [[gnu::always_inline]] std::size_t try_pop_many(ClaimFn&& claim, std::size_t max, TakeFn&& take,
                                                  detail::AtomicU64* cursor, OnEntryFn&& on_entry) noexcept {
    std::uint64_t h0 = header_->head.load(std::memory_order_relaxed);  // (R5) a hint only
    // relaxed: the cursor is a hint private to the process; its invariant holds for any
    // value ever stored in it.
    const std::uint64_t mine = cursor != nullptr ? cursor->load(std::memory_order_relaxed) : 0;
    h0 = std::max(h0, mine);
    std::uint64_t h = h0;
    std::size_t got = 0;
    if (max == 0) return 0;
    for (std::uint64_t steps = 0; steps < 4 * (mask_ + 1) + 64; ++steps) {
      Atomic& slot = slots_[h & mask_];
      // Fetched first, as in try_push: the entry is moved on by a CAS after the claims.
      detail::prefetch(&slot);
      // (R6) acquire: pairs with (R3); the records named by the slot are fully written.
      std::uint64_t w = slot.load(std::memory_order_acquire);
      const std::uint64_t lap = lap_of_pos(h);
      const std::uint64_t wlap = lap_of_word(w);
      if (wlap == lap) {
        if (!is_full(w)) {  // nothing at the head: empty
          if (h - h0 >= kHintEvery) detail::advance_hint(header_->head, h);
          if (cursor != nullptr && h != mine) cursor->store(h, std::memory_order_relaxed);
          return got;
        }
        const std::uint32_t v = value_of(w);
        // Clamped: on a corrupt word a run may not reach past the largest value.
        const std::uint32_t end =
            static_cast<std::uint32_t>(std::min<std::uint64_t>(std::uint64_t{v} + run_of(w), kValueMask + 1));
        std::uint32_t k = v;  // the values from v up to k were looked at
        on_entry(h, v, end);
        while (k < end && got < max) {
          const std::uint32_t x = k++;
          if (claim(h, x) == Claim::taken) {
            take(x);
            ++got;
          }
        }
        SHMSCHED_FAULT_POINT(ring_pop_before_clear);
        move_on(slot, w, lap, k, end);  // (R4)
        if (k != end) {                 // got == max with values left in the entry: it stays the head
          if (cursor != nullptr && h != mine) cursor->store(h, std::memory_order_relaxed);
          return got;
        }
        if (hint_due(h0, h)) detail::advance_hint(header_->head, h + 1);
        ++h;
        if (got == max) {  // without a look at the next slot, which a producer may be filling
          if (cursor != nullptr) cursor->store(h, std::memory_order_relaxed);
          return got;
        }
        continue;
      }
      if (lap_after(wlap, lap)) {
        // Position h was consumed already: we are behind. Every position before the
        // shared head hint is consumed, so go on from there when it is further.
        h = std::max(h + 1, header_->head.load(std::memory_order_relaxed));
        continue;
      }
      if (h != h0) detail::advance_hint(header_->head, h);
      if (cursor != nullptr && h != mine) cursor->store(h, std::memory_order_relaxed);
      return got;  // an older lap at the head cannot occur unless corrupted: report empty
    }
    return got;
  }

  /// Whether the ring is certainly empty at `pos`, a position all before which were
  /// consumed (a cursor of try_pop): its slot holds no entry of its lap. Entries are
  /// filled in position order with no gaps, so nothing after it is filled either. One
  /// load: the cheap look a consumer takes at a level before trying to pop from it.
  /// False means "maybe not empty" (or the cursor is behind): try_pop decides.
  bool empty_at(std::uint64_t pos) const noexcept { return empty_in(pos, look(pos)); }
  /// The word in the slot of `pos`, for a caller that decides from one look both
  /// whether the ring is empty there (empty_in) and what pop_front takes.
  std::uint64_t look(std::uint64_t pos) const noexcept {
    // (R6') acquire, as (R6): the same look try_pop takes first.
    return slots_[pos & mask_].load(std::memory_order_acquire);
  }
  /// empty_at, given the word `w` look(pos) returned.
  bool empty_in(std::uint64_t pos, std::uint64_t w) const noexcept {
    return lap_of_word(w) == lap_of_pos(pos) && !is_full(w);
  }

  /// try_pop_many's own steps for its commonest case, with less around them: one value
  /// popped by a caller whose cursor `pos` it looked at (look) and found w, an entry of
  /// pos's lap holding a single value. That entry is the head: no walk moves past a
  /// full entry without consuming it, so the shared head hint is not after pos. The
  /// steps, their orderings and fault points are try_pop_many's for max = 1 starting at
  /// pos (on_entry, claim, take, R4, the hint, the cursor). Returns false, having changed
  /// nothing, when w is anything else or the claim says stale: the caller then calls
  /// try_pop_many, which handles every case.
  template <class ClaimFn, class TakeFn, class OnEntryFn>
  [[gnu::always_inline]] bool pop_front(std::uint64_t pos, std::uint64_t w, ClaimFn&& claim, TakeFn&& take,
                                        detail::AtomicU64& cursor, OnEntryFn&& on_entry) noexcept {
    const std::uint64_t lap = lap_of_pos(pos);
    if (!is_full(w) || lap_of_word(w) != lap || run_of(w) != 1) return false;
    const std::uint32_t v = value_of(w);
    on_entry(pos, v, v + 1);
    if (claim(pos, v) != Claim::taken) return false;
    take(v);
    SHMSCHED_FAULT_POINT(ring_pop_before_clear);
    move_on(slots_[pos & mask_], w, lap, v + 1, v + 1);  // (R4)
    if (hint_due(pos, pos)) detail::advance_hint(header_->head, pos + 1);
    cursor.store(pos + 1, std::memory_order_relaxed);
    return true;
  }

  /// The value at the head if the head slot holds an entry of the head's lap (it may be
  /// a leftover, and it may be taken the moment this returns). For inspection: aging
  /// peeks at the oldest entry of a level.
  bool peek_head(std::uint32_t& out) const noexcept {
    std::uint64_t h = header_->head.load(std::memory_order_relaxed);
    for (std::uint64_t i = 0; i < 4 * kHintEvery; ++i, ++h) {  // past positions the hint lags by
      const std::uint64_t w = slots_[h & mask_].load(std::memory_order_acquire);
      if (lap_after(lap_of_word(w), lap_of_pos(h))) continue;
      if (!is_full(w) || lap_of_word(w) != lap_of_pos(h)) return false;
      out = value_of(w);
      return true;
    }
    return false;
  }
  /// Entries between head and tail (leftovers included); may be stale by the time it
  /// returns. Walks the few positions the hints may lag by. For a ring of single
  /// entries (park rings) this is its depth in values too.
  std::uint64_t depth_guess() const noexcept {
    std::uint64_t h = 0, t = 0;
    span_guess(h, t);
    return t > h ? t - h : 0;
  }
  /// Values held between head and tail: a run counts for every value it still holds.
  /// Walks the entries between (for inspection, not for hot paths).
  std::uint64_t values_guess() const noexcept {
    std::uint64_t h = 0, t = 0;
    span_guess(h, t);
    if (t <= h) return 0;
    if (t - h > mask_ + 1) return t - h;  // hints torn by concurrent moves: positions are the guess
    std::uint64_t n = 0;
    for (std::uint64_t p = h; p < t; ++p) {
      const std::uint64_t w = slots_[p & mask_].load(std::memory_order_acquire);
      if (is_full(w) && lap_of_word(w) == lap_of_pos(p)) n += run_of(w);
    }
    return n;
  }
  /// Visit every value of every FULL slot (value, position) without changing anything. Not atomic as a
  /// whole: for inspection and recovery, which re-validate what they find.
  template <class Fn>
  void for_each_full(Fn&& fn) const noexcept {
    const std::uint64_t cap = mask_ + 1;
    for (std::uint64_t i = 0; i < cap; ++i) {
      const std::uint64_t w = slots_[i].load(std::memory_order_acquire);
      if (!is_full(w)) continue;
      for (std::uint32_t k = 0; k < run_of(w); ++k) fn(value_of(w) + k, (lap_of_word(w) << shift_) | i);
    }
  }
  /// Whether the slot of `pos` holds an entry of lap(pos) that still holds value v
  /// (v is in the part of its run not yet moved past).
  bool holds(std::uint64_t pos, std::uint32_t v) const noexcept {
    const std::uint64_t w = slots_[pos & mask_].load(std::memory_order_acquire);
    return is_full(w) && lap_of_word(w) == lap_of_pos(pos) && value_of(w) <= v && v < value_of(w) + run_of(w);
  }
  RingHeader* header() const noexcept { return header_; }

 private:
  static constexpr unsigned log2(std::uint32_t x) noexcept { return static_cast<unsigned>(std::countr_zero(x)); }
  // Hints are advanced on every kHintEvery-th position, or after walking that far past
  // a stale hint: an RMW on a shared line saved on most operations, for at most a few
  // extra loads of slots on a line the next caller has in cache anyway.
  static constexpr std::uint64_t kHintEvery = 4;
  static constexpr std::uint64_t kSlotsPerLine = detail::kCacheLine / sizeof(std::uint64_t);
  static constexpr bool hint_due(std::uint64_t start, std::uint64_t pos) noexcept {
    return ((pos + 1) % kHintEvery) == 0 || pos - start >= kHintEvery;
  }
  // Head and tail, each moved past the few positions its hint may lag by.
  void span_guess(std::uint64_t& h, std::uint64_t& t) const noexcept {
    h = header_->head.load(std::memory_order_relaxed);
    t = header_->tail.load(std::memory_order_relaxed);
    for (std::uint64_t i = 0; i < 4 * kHintEvery; ++i, ++t) {  // filled positions past the tail hint
      const std::uint64_t w = slots_[t & mask_].load(std::memory_order_acquire);
      const bool filled = lap_of_word(w) == lap_of_pos(t) ? is_full(w) : lap_after(lap_of_word(w), lap_of_pos(t));
      if (!filled) break;
    }
    for (std::uint64_t i = 0; i < 4 * kHintEvery && h < t; ++i, ++h) {  // consumed positions past the head hint
      const std::uint64_t w = slots_[h & mask_].load(std::memory_order_acquire);
      if (!lap_after(lap_of_word(w), lap_of_pos(h))) break;
    }
  }
  // (R4) release: moves the entry `w` (of lap `lap`, values up to `end`) in `slot` past
  // the values before k, or hands the slot to the producer of lap + 1 when none is left
  // (k == end); pairs with (R2) and (R6). A failure means another popper moved the entry
  // on: once it starts at or past k there is nothing left for us to do; otherwise the
  // values before k are no longer takeable here, so we move it on from where it is now.
  static void move_on(Atomic& slot, std::uint64_t w, std::uint64_t lap, std::uint32_t k, std::uint32_t end) noexcept {
    const std::uint64_t next = k == end ? empty_word(lap + 1) : full_word(lap, k, end - k);
    while (!slot.compare_exchange_strong(w, next, std::memory_order_release, std::memory_order_relaxed)) {
      if (!is_full(w) || lap_of_word(w) != lap || value_of(w) >= k) break;
    }
  }
  // Whether every value of FULL entry `w` at `pos` is a leftover.
  template <class IsStale>
  static bool entry_stale(std::uint64_t pos, std::uint64_t w, IsStale& is_stale) noexcept {
    for (std::uint32_t k = 0; k < run_of(w); ++k)
      if (!is_stale(pos, value_of(w) + k)) return false;
    return true;
  }
  // Whether lap a is after lap b (modulo the 37-bit lap field).
  static constexpr bool lap_after(std::uint64_t a, std::uint64_t b) noexcept {
    const std::uint64_t d = (a - b) & kLapMask;
    return d != 0 && d < (kLapMask >> 1);
  }

  RingHeader* header_ = nullptr;
  Atomic* slots_ = nullptr;
  std::uint64_t mask_ = 0;
  unsigned shift_ = 0;
};

}  // namespace shmsched
