// The semaphore layer: the segment's semaphore table as permits. Owns each entry's
// permit word, holder ledger and sleeping direct acquirers: the grant (G1, G2), the
// release (G3, G4), the sleep and wake of a direct acquire, a capacity change, the sweep
// of a ledger's stale holders, and the audit of word against ledger (docs/resources.md).
//
// It knows nothing of tasks or participants: a holder is a word whose meaning is the
// caller's (the engine encodes a task's run or a participant's thread in it), and
// whether a holder still holds is the caller's predicate. Parking a task on a semaphore
// moves a record between rings, so it is the engine's (engine/parking.hpp); this layer
// only keeps the count of parked tasks that lets a release skip the park rings.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <string>

#include "shmsched/detail/fault.hpp"
#include "shmsched/detail/futex.hpp"
#include "shmsched/detail/shm_structs.hpp"
#include "shmsched/process.hpp"

namespace shmsched::detail {

class Permits {
 public:
  static constexpr unsigned kSlots = SemaphoreEntry::kSlots;
  static constexpr std::uint64_t kBits = SemaphoreEntry::kBitmapMask;

  Permits() = default;
  Permits(SemaphoreEntry* table, std::uint32_t size) noexcept : table_(table), size_(size) {}

  /// How many semaphores the table has room for.
  std::uint32_t size() const noexcept { return size_; }

  /// The entry of a ready semaphore, or null. Every grant and release starts here.
  SemaphoreEntry* entry(std::uint32_t sem) const noexcept {
    if (sem >= size_) return nullptr;
    SemaphoreEntry* e = &table_[sem];
    // acquire: pairs with the release that made the entry ready (name and capacity set).
    return named_state(e->word.load(std::memory_order_acquire)) == SemaphoreEntry::kReady ? e : nullptr;
  }

  // ---- the permit word: [capacity : 8][bitmap of granted ledger slots : 56] ----------

  static std::uint32_t capacity_of(std::uint64_t permits) noexcept {
    return static_cast<std::uint32_t>(permits >> kSlots);
  }
  // Bit count without a libgcc call (the library is built for baseline x86-64, which has
  // no POPCNT instruction); a handful of ALU operations.
  static std::uint32_t in_use_of(std::uint64_t permits) noexcept {
    std::uint64_t x = permits & kBits;
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return static_cast<std::uint32_t>((x * 0x0101010101010101ULL) >> 56);
  }
  /// Permits free in the word, less `taken` already promised elsewhere (never negative).
  static std::uint32_t free_of(std::uint64_t permits, std::uint32_t taken = 0) noexcept {
    const std::uint32_t used = in_use_of(permits) + taken;
    return used >= capacity_of(permits) ? 0 : capacity_of(permits) - used;
  }
  static std::uint32_t capacity(const SemaphoreEntry& e) noexcept {
    return capacity_of(e.permits.load(std::memory_order_relaxed));
  }

  // ---- grant and release ---------------------------------------------------------------

  /// Grants n permits of `e` to `holder`, or nothing. (G1) claims n free ledger slots,
  /// (G2) sets their bits in the permit word if the capacity allows: one CAS, the grant.
  static bool try_acquire(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder) noexcept;

  /// Returns up to n permits of `e` held by `holder` (n = UINT32_MAX: all it holds), or
  /// none when it holds fewer than n. (G3) clears the bits, then (G4) the ledger slots.
  static std::uint32_t release(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder) noexcept;

  /// try_acquire, then after a short spin asleep on the entry's futex, for at most
  /// `timeout_ns` more, until a release. For direct acquirers only; tasks park.
  static bool acquire(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder, std::int64_t timeout_ns) noexcept;

  /// Wakes every direct acquirer asleep on `e`, if there is one (two loads otherwise).
  static void wake_sleepers(SemaphoreEntry& e) noexcept;

  /// Sets the capacity; the bitmap is kept. A growth frees permits: the caller then
  /// wakes and unparks as after a release.
  static void set_capacity(SemaphoreEntry& e, std::uint32_t capacity) noexcept;

  // ---- the ledger's holders -------------------------------------------------------------

  /// Returns every granted permit of `e` whose ledger holder `holds(holder)` denies, as a
  /// release by that holder would (G3, G4); idempotent. The number returned.
  template <class Holds>
  static std::uint32_t sweep(SemaphoreEntry& e, Holds&& holds) noexcept;

  /// What is wrong between the permit word of `e` and its ledger ("" when nothing): a
  /// granted slot with no holder or one that `holds` denies, and the count they make.
  template <class Holds>
  static std::string audit(const SemaphoreEntry& e, Holds&& holds);

  // ---- the parked count -----------------------------------------------------------------

  /// Whether tasks may be parked on `e`. seq_cst: (K3) of docs/resources.md, a releaser's
  /// look after its release, paired with a parker's increment before its look (K1).
  static bool maybe_parked(const SemaphoreEntry& e) noexcept {
    return static_cast<std::int32_t>(e.parked_hint.load(std::memory_order_seq_cst)) > 0;
  }
  /// One more parked: after the park's publishing CAS and before the parker's look (K1).
  static void count_parked(SemaphoreEntry& e) noexcept { e.parked_hint.fetch_add(1, std::memory_order_seq_cst); }
  /// One fewer: a task claimed from a park ring (relaxed: a hint; the rings decide).
  static void count_unparked(SemaphoreEntry& e) noexcept { e.parked_hint.fetch_sub(1, std::memory_order_relaxed); }
  /// Raises the count to `parked` (recounted from the park rings) when it is lower and
  /// unchanged since `seen` was read: a parker's or unparker's change meanwhile is never
  /// lost. Never lowers it: a task popped from its ring is decremented after the pop, so
  /// a recount between the two would take its decrement twice and leave a task parked
  /// again under a count of 0, which releases skip (tests/model/semaphore_janitor.pml).
  /// A count left high only costs releases a look at empty park rings.
  static void recount_parked(SemaphoreEntry& e, std::uint32_t seen, std::uint32_t parked) noexcept {
    if (static_cast<std::int32_t>(parked) > static_cast<std::int32_t>(seen))
      e.parked_hint.compare_exchange_strong(seen, parked, std::memory_order_seq_cst);
  }
  static std::uint32_t parked_count(const SemaphoreEntry& e) noexcept {
    return e.parked_hint.load(std::memory_order_seq_cst);
  }

 private:
  static std::uint32_t claim_ledger(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder,
                                    std::uint64_t& claimed) noexcept;
  static void free_ledger(SemaphoreEntry& e, std::uint64_t slots) noexcept {
    for (std::uint64_t m = slots; m != 0; m &= m - 1)
      e.holders[std::countr_zero(m)].store(0, std::memory_order_release);
  }

  SemaphoreEntry* table_ = nullptr;
  std::uint32_t size_ = 0;
};

// (G1) Claims up to n free ledger slots for `holder`: their bits in `claimed`, their count
// returned.
inline std::uint32_t Permits::claim_ledger(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder,
                                           std::uint64_t& claimed) noexcept {
  std::uint32_t count = 0;
  for (unsigned i = 0; i < kSlots && count < n; ++i) {
    std::uint64_t free = 0;
    // (G1) acq_rel: the ledger slot is ours; a slot with holder 0 never has its bit set.
    if (e.holders[i].load(std::memory_order_relaxed) == 0 &&
        e.holders[i].compare_exchange_strong(free, holder, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      claimed |= std::uint64_t{1} << i;
      ++count;
    }
  }
  return count;
}

inline bool Permits::try_acquire(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder) noexcept {
  if (n > kSlots) return false;
  if (n == 0) return true;
  // Cheap look first: no ledger writes when the capacity is used up.
  std::uint64_t w = e.permits.load(std::memory_order_acquire);
  if (in_use_of(w) + n > capacity_of(w)) return false;
  std::uint64_t claimed = 0;
  if (claim_ledger(e, n, holder, claimed) < n) {
    free_ledger(e, claimed);
    return false;
  }
  SHMSCHED_FAULT_POINT(sem_acquire_ledger);
  w = e.permits.load(std::memory_order_acquire);
  for (;;) {
    if (in_use_of(w) + n > capacity_of(w) || (w & claimed) != 0) {
      free_ledger(e, claimed);
      return false;
    }
    // (G2) seq_cst: the grant. seq_cst also orders it before a parker's later look at
    // the park rings (the Dekker pair with release + unpark, see docs/resources.md).
    if (e.permits.compare_exchange_weak(w, w | claimed, std::memory_order_seq_cst, std::memory_order_acquire)) break;
  }
  SHMSCHED_FAULT_POINT(sem_acquire_granted);
  return true;
}

inline std::uint32_t Permits::release(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder) noexcept {
  if (n == 0) return 0;
  std::uint64_t w = e.permits.load(std::memory_order_acquire);
  std::uint64_t mask = 0;
  std::uint32_t count = 0;
  for (;;) {
    mask = 0;
    count = 0;
    for (unsigned i = 0; i < kSlots && count < n; ++i) {
      const std::uint64_t bit = std::uint64_t{1} << i;
      if ((w & bit) != 0 && e.holders[i].load(std::memory_order_acquire) == holder) {
        mask |= bit;
        ++count;
      }
    }
    if (mask == 0 || (n != UINT32_MAX && count < n)) return 0;  // not held: change nothing
    // (G3) seq_cst: the permits are free from here; pairs with a parker's (G2)/(K1).
    // A CAS, not fetch_and: two threads of one holder releasing at once must not both
    // pick the same slot.
    if (e.permits.compare_exchange_weak(w, w & ~mask, std::memory_order_seq_cst, std::memory_order_acquire)) break;
  }
  SHMSCHED_FAULT_POINT(sem_release_bits_cleared);
  // (G4) release: the ledger slots are free for the next claim.
  free_ledger(e, mask);
  return count;
}

inline bool Permits::acquire(SemaphoreEntry& e, std::uint32_t n, std::uint64_t holder,
                             std::int64_t timeout_ns) noexcept {
  if (try_acquire(e, n, holder)) return true;  // fast path: no clock, no sleep
  // A short spin first: a holder often releases within a microsecond or two.
  for (int spin = 0; spin < 64; ++spin) {
    __builtin_ia32_pause();
    if (try_acquire(e, n, holder)) return true;
  }
  const std::int64_t deadline_ns = monotonic_ns() + timeout_ns;
  for (;;) {
    // Sleep: read the sequence, count ourselves, look again, wait (as consumers do on
    // their doorbell). seq_cst, all four: the Dekker pair with wake_sleepers, which
    // reads `waiters` after a release's (G3).
    const std::uint32_t seen = e.wake_seq.load(std::memory_order_seq_cst);
    e.waiters.fetch_add(1, std::memory_order_seq_cst);
    const bool got = try_acquire(e, n, holder);
    const std::int64_t left = deadline_ns - monotonic_ns();
    // At most 100 ms asleep at a time: a waker that died before its wake costs no more.
    if (!got && left > 0) futex_wait(e.wake_seq, seen, std::min<std::int64_t>(left, 100'000'000));
    e.waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (got) return true;
    if (monotonic_ns() >= deadline_ns) return try_acquire(e, n, holder);
  }
}

inline void Permits::wake_sleepers(SemaphoreEntry& e) noexcept {
  // seq_cst: the Dekker pair with acquire's count-then-look (see there).
  if (e.waiters.load(std::memory_order_seq_cst) != 0) {
    e.wake_seq.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(e.wake_seq, INT32_MAX);
  }
}

inline void Permits::set_capacity(SemaphoreEntry& e, std::uint32_t capacity) noexcept {
  std::uint64_t w = e.permits.load(std::memory_order_acquire);
  // seq_cst: a growth is a release of permits (pairs like G3).
  while (!e.permits.compare_exchange_weak(w, (w & kBits) | (std::uint64_t{capacity} << kSlots),
                                          std::memory_order_seq_cst, std::memory_order_acquire)) {
  }
}

template <class Holds>
std::uint32_t Permits::sweep(SemaphoreEntry& e, Holds&& holds) noexcept {
  std::uint32_t returned = 0;
  for (unsigned i = 0; i < kSlots; ++i) {
    std::uint64_t h = e.holders[i].load(std::memory_order_acquire);
    if (h == 0 || holds(h)) continue;
    // A live claimer's slot is valid; this one's holder is gone: bit first (G3), then
    // the ledger slot (G4), as a release does. Idempotent if repeated.
    const std::uint64_t bit = std::uint64_t{1} << i;
    if ((e.permits.fetch_and(~bit, std::memory_order_seq_cst) & bit) != 0) ++returned;
    e.holders[i].compare_exchange_strong(h, 0, std::memory_order_acq_rel);
  }
  return returned;
}

template <class Holds>
std::string Permits::audit(const SemaphoreEntry& e, Holds&& holds) {
  std::string problems;
  const std::uint64_t p = e.permits.load(std::memory_order_acquire);
  std::uint32_t live = 0;
  for (unsigned i = 0; i < kSlots; ++i) {
    if ((p & (std::uint64_t{1} << i)) == 0) continue;
    const std::uint64_t h = e.holders[i].load(std::memory_order_acquire);
    if (h != 0 && holds(h)) {
      ++live;
    } else {
      problems +=
          "slot " + std::to_string(i) + " is granted to " + (h == 0 ? "nobody" : "a holder that is gone") + "; ";
    }
  }
  if (live != in_use_of(p))
    problems += "in use " + std::to_string(in_use_of(p)) + ", live holders " + std::to_string(live) + "; ";
  return problems;
}

}  // namespace shmsched::detail
