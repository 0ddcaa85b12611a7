// Semaphores: table, grants and the holder ledger, parking and hand-over.
// See semaphore.hpp for the contract and docs/resources.md for the protocol.

#include <bit>

#include "engine/engine.hpp"
#include "shmsched/detail/name_table.hpp"

namespace shmsched {

namespace {
using detail::SemaphoreEntry;
constexpr unsigned kSlots = SemaphoreEntry::kSlots;
constexpr std::uint64_t kBits = SemaphoreEntry::kBitmapMask;

std::uint32_t capacity_of(std::uint64_t permits) noexcept {
  return static_cast<std::uint32_t>(permits >> kSlots);
}
// Bit count without a libgcc call (the library is built for baseline x86-64, which has
// no POPCNT instruction); a handful of ALU operations.
std::uint32_t in_use_of(std::uint64_t permits) noexcept {
  std::uint64_t x = permits & kBits;
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<std::uint32_t>((x * 0x0101010101010101ULL) >> 56);
}
// A task holder names one run of a record: its index and the version of the state word
// the running worker holds. A requeued task's next run has another version, so a permit
// of a dead (or abandoned) run can never pass for the new run's.
constexpr std::uint64_t kRunVersionMask = (std::uint64_t{1} << 42) - 1;
std::uint64_t task_holder(const Taken& t) noexcept {
  return detail::kHolderTask | ((detail::version_of(t.word) & kRunVersionMask) << 20) | t.index;
}
// A direct holder is this thread of this participant: threads of one process never
// release each other's permits, so a release's CAS only ever clears bits its own caller
// holds (no ABA through another thread's release and re-grant of the same slot).
std::uint32_t thread_number() noexcept {
  static std::atomic<std::uint32_t> next_thread{1};
  // Constant-initialised (no TLS init call on every use); numbered on first use.
  thread_local std::uint32_t thread = 0;
  while (thread == 0) thread = next_thread.fetch_add(1, std::memory_order_relaxed) & 0x3FFFFFFF;  // 0: not yet
  return thread;
}

std::uint64_t participant_holder(std::uint16_t token) noexcept {
  return detail::kHolderParticipant | (std::uint64_t{thread_number()} << 16) | token;
}
}  // namespace

// ---- table -----------------------------------------------------------------------------

Result<SemId> Segment::create_semaphore(std::string_view name, std::uint32_t capacity) noexcept {
  try {
    if (auto v = validate_short_name(name, kMaxSemaphoreName, "semaphore"); !v) return v.error();
    if (capacity > kMaxSemaphoreCapacity)
      return Error(Errc::invalid_argument, "semaphore capacity must be 0.." + std::to_string(kMaxSemaphoreCapacity));
    if (is_read_only()) {
      if (auto s = find_semaphore(name); s || s.code() != Errc::unknown_semaphore) return s;
      return Error(
          Errc::permission_denied,
          "segment '" + this->name() + "' is open read-only: cannot create semaphore '" + std::string(name) + "'");
    }
    auto& core = this->core();
    // The first capacity set wins; an existing semaphore keeps its capacity.
    const std::int64_t i =
        detail::claim_named(core.semaphores, core.layout.max_semaphores, name, [&](SemaphoreEntry& e) {
          std::uint64_t zero = 0;
          e.permits.compare_exchange_strong(zero, std::uint64_t{capacity} << kSlots, std::memory_order_relaxed);
        });
    if (i < 0)
      return Error(Errc::semaphore_table_full, "no room for semaphore '" + std::string(name) + "' (max_semaphores " +
                                                   std::to_string(core.layout.max_semaphores) + ")");
    return static_cast<SemId>(i);
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

Result<SemId> Segment::find_semaphore(std::string_view name) const noexcept {
  try {
    if (auto v = validate_short_name(name, kMaxSemaphoreName, "semaphore"); !v) return v.error();
    const auto& core = this->core();
    const std::int64_t i = detail::find_named(core.semaphores, core.layout.max_semaphores, name);
    if (i < 0) return Error(Errc::unknown_semaphore, "no semaphore named '" + std::string(name) + "'");
    return static_cast<SemId>(i);
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

std::vector<SemaphoreInfo> Segment::semaphores() const {
  std::vector<SemaphoreInfo> out;
  const auto& core = this->core();
  for (std::uint32_t i = 0; i < core.layout.max_semaphores; ++i) {
    const auto& e = core.semaphores[i];
    if (detail::named_state(e.word.load(std::memory_order_acquire)) != SemaphoreEntry::kReady) continue;
    const std::uint64_t p = e.permits.load(std::memory_order_acquire);
    SemaphoreInfo info{static_cast<SemId>(i),
                       detail::read_name(e.name),
                       capacity_of(p),
                       in_use_of(p),
                       0,
                       e.waiters.load(std::memory_order_relaxed)};
    for (std::uint32_t l = 0; l < core.levels; ++l) info.parked += core.ring(core.park_ring_id(i, l)).depth_guess();
    out.push_back(std::move(info));
  }
  return out;
}

// ---- grants and the ledger ---------------------------------------------------------------

// Grant n permits of `e` to `holder`, or nothing. (G1) claims n free ledger slots,
// (G2) sets their bits in the permit word if the capacity allows -- one CAS, the grant.
bool Client::Impl::sem_try_acquire(SemaphoreEntry* e, std::uint32_t n, std::uint64_t holder) noexcept {
  if (n > kSlots) return false;
  if (n == 0) return true;
  // Cheap look first: no ledger writes when the capacity is used up.
  std::uint64_t w = e->permits.load(std::memory_order_acquire);
  if (in_use_of(w) + n > capacity_of(w)) return false;
  std::uint64_t claimed = 0;
  std::uint32_t count = 0;
  for (unsigned i = 0; i < kSlots && count < n; ++i) {
    std::uint64_t free = 0;
    // (G1) acq_rel: the ledger slot is ours; a slot with holder 0 never has its bit set.
    if (e->holders[i].load(std::memory_order_relaxed) == 0 &&
        e->holders[i].compare_exchange_strong(free, holder, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      claimed |= std::uint64_t{1} << i;
      ++count;
    }
  }
  auto undo = [&] {
    for (std::uint64_t m = claimed; m != 0; m &= m - 1)
      e->holders[std::countr_zero(m)].store(0, std::memory_order_release);
    return false;
  };
  if (count < n) return undo();
  SHMSCHED_FAULT_POINT(sem_acquire_ledger);
  w = e->permits.load(std::memory_order_acquire);
  for (;;) {
    if (in_use_of(w) + n > capacity_of(w) || (w & claimed) != 0) return undo();
    // (G2) seq_cst: the grant. seq_cst also orders it before a parker's later look at
    // the park rings (the Dekker pair with release + unpark, see docs/resources.md).
    if (e->permits.compare_exchange_weak(w, w | claimed, std::memory_order_seq_cst, std::memory_order_acquire)) break;
  }
  SHMSCHED_FAULT_POINT(sem_acquire_granted);
  return true;
}

// Return up to n permits of `sem` held by `holder` (n = UINT32_MAX: all). (G3) clears the
// bits, then (G4) the ledger slots.
std::uint32_t Client::Impl::sem_release(SemaphoreEntry* e, std::uint32_t n, std::uint64_t holder) noexcept {
  if (n == 0) return 0;
  std::uint64_t w = e->permits.load(std::memory_order_acquire);
  std::uint64_t mask = 0;
  std::uint32_t count = 0;
  for (;;) {
    mask = 0;
    count = 0;
    for (unsigned i = 0; i < kSlots && count < n; ++i) {
      const std::uint64_t bit = std::uint64_t{1} << i;
      if ((w & bit) != 0 && e->holders[i].load(std::memory_order_acquire) == holder) {
        mask |= bit;
        ++count;
      }
    }
    if (mask == 0 || (n != UINT32_MAX && count < n)) return 0;  // not held: change nothing
    // (G3) seq_cst: the permits are free from here; pairs with a parker's (G2)/(K1).
    // A CAS, not fetch_and: two threads of one holder releasing at once must not both
    // pick the same slot.
    if (e->permits.compare_exchange_weak(w, w & ~mask, std::memory_order_seq_cst, std::memory_order_acquire)) break;
  }
  SHMSCHED_FAULT_POINT(sem_release_bits_cleared);
  // (G4) release: the ledger slots are free for the next claim.
  for (std::uint64_t m = mask; m != 0; m &= m - 1) e->holders[std::countr_zero(m)].store(0, std::memory_order_release);
  return count;
}

void Client::Impl::sem_freed(SemaphoreEntry* e, std::uint32_t sem) noexcept {
  // seq_cst loads: the Dekker pairs of sem_after_release (waiters) and unpark (K3).
  if (e->waiters.load(std::memory_order_seq_cst) != 0) sem_after_release(sem);
  if (static_cast<std::int32_t>(e->parked_hint.load(std::memory_order_seq_cst)) > 0) unpark_to_queues(sem);
}

void Client::Impl::sem_after_release(std::uint32_t sem) noexcept {
  auto* e = sem_entry(sem);
  if (e == nullptr) return;
  if (e->waiters.load(std::memory_order_seq_cst) != 0) {
    e->wake_seq.fetch_add(1, std::memory_order_seq_cst);
    detail::futex_wake(e->wake_seq, INT32_MAX);
  }
}

// A ledger holder is stale when it is the dead participant, or a task that is not
// running any more (or runs under the dead one).
bool Client::Impl::holder_valid(std::uint64_t holder, const DeadOwner* dead) const noexcept {
  const std::uint64_t kind = holder & detail::kHolderKindMask;
  if (kind == detail::kHolderParticipant) {
    // A direct holder: valid while its process is.
    const auto tok = static_cast<std::uint16_t>(holder & 0xFFFF);
    return dead != nullptr ? !dead->matches(tok) : token_alive(tok);
  }
  if (kind != detail::kHolderTask) return false;
  const std::uint32_t idx = static_cast<std::uint32_t>(holder & 0xFFFFF);
  if (idx >= core->capacity) return false;
  const std::uint64_t s = core->ctrl[idx].state.load(std::memory_order_acquire);
  if (detail::state_of(s) != TaskState::running ||
      (detail::version_of(s) & kRunVersionMask) != ((holder >> 20) & kRunVersionMask))
    return false;
  return dead != nullptr ? !dead->matches(owner_of(s)) : token_alive(owner_of(s));
}

// Returns every permit whose ledger holder is stale for `dead` (the reaper's step).
std::uint32_t Client::Impl::sweep_ledgers(DeadOwner dead) noexcept {
  std::uint32_t returned = 0;
  for (std::uint32_t sem = 0; sem < core->layout.max_semaphores; ++sem) {
    auto* e = sem_entry(sem);
    if (e == nullptr) continue;
    bool freed = false;
    for (unsigned i = 0; i < kSlots; ++i) {
      std::uint64_t h = e->holders[i].load(std::memory_order_acquire);
      if (h == 0 || holder_valid(h, &dead)) continue;
      // A live claimer's slot is valid; this one's holder is gone: bit first (G3),
      // then the ledger slot (G4), as a release does. Idempotent if repeated.
      const std::uint64_t bit = std::uint64_t{1} << i;
      if ((e->permits.fetch_and(~bit, std::memory_order_seq_cst) & bit) != 0) {
        ++returned;
        freed = true;
      }
      e->holders[i].compare_exchange_strong(h, 0, std::memory_order_acq_rel);
    }
    if (freed) sem_freed(e, sem);
  }
  return returned;
}

// Claims the oldest parked task of the most urgent level of `sem` for this process (state
// running): its record index in `v`, its state word in `w`. False when none is parked.
bool Client::Impl::pop_parked(SemaphoreEntry* e, std::uint32_t sem, std::uint32_t& v, std::uint64_t& w) noexcept {
  for (std::uint32_t level = 0; level < core->levels; ++level) {
    const std::uint16_t rid = core->park_ring_id(sem, level);
    auto c = [&](std::uint64_t pos, std::uint32_t val) noexcept { return claim(rid, pos, val, TaskState::running, w); };
    while (core->ring(rid).try_pop(c, v)) {
      SHMSCHED_FAULT_POINT(unpark_after_claim);
      e->parked_hint.fetch_sub(1, std::memory_order_relaxed);
      const char* defect = record_defect(v);
      if (defect == nullptr) return true;
      (void)dead_letter_record(v, w, defect);  // quarantined, never handed on
    }
  }
  return false;
}

// How many permits of `sem` the parked record `v` waits for: its own need, else 1 (a
// need declared by a consumer for its type, or a queue's limit, is one permit).
std::uint32_t Client::Impl::parked_need(std::uint32_t v, std::uint32_t sem) const noexcept {
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
// back to the tail of its park ring (re-parked, as acquire_for parks), so a task that
// cannot run now is never cycled between its queue and its park ring by the workers.
// A re-park is followed by one more look at the permit word: a release that came while
// the task was out of its ring found nothing to unpark, and is caught here.
std::size_t Client::Impl::unpark_to_queues(std::uint32_t sem, std::size_t reserved, bool after_park) noexcept {
  auto* e = sem_entry(sem);
  if (e == nullptr) return 0;
  // (K3) seq_cst: a parker increments the hint after its publishing CAS and before its
  // own look at the permits (K1), so either we see the hint or it sees our release.
  // The parker's own look (after_park) does not read the hint: it knows it parked one,
  // and the janitor's recount may have stored a count from before its increment.
  if (!after_park && static_cast<std::int32_t>(e->parked_hint.load(std::memory_order_seq_cst)) <= 0) return 0;
  std::size_t moved = 0, taken = reserved;
  constexpr int kMaxReparks = 8;  // bounds one call's walk over tasks that need more
  for (int reparks = 0;;) {
    const std::uint64_t p = e->permits.load(std::memory_order_seq_cst);  // (K2)
    // As many as there are free permits: more would only park again.
    if (in_use_of(p) + taken >= capacity_of(p)) return moved;
    const std::uint32_t free = capacity_of(p) - in_use_of(p) - static_cast<std::uint32_t>(taken);
    std::uint64_t w = 0;
    std::uint32_t v = 0;
    if (!pop_parked(e, sem, v, w)) return moved;
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
    if (!repark(v, w, sem)) continue;
    // seq_cst, after the re-park's publishing CAS and hint increment: as (K1).
    if (e->permits.load(std::memory_order_seq_cst) == p) return moved;
  }
  return moved;
}

// Puts a task this process claimed from a park ring of `sem` back at that ring's tail.
// False when it could not be parked again and went elsewhere (delayed when the ring is
// full, or lost to recovery).
bool Client::Impl::repark(std::uint32_t v, std::uint64_t w, std::uint32_t sem) noexcept {
  auto* e = sem_entry(sem);
  const std::uint16_t rid = core->park_ring_id(sem, core->hot(v)->level);
  const PushStatus st = push_record(v, w, rid, TaskState::parked);
  if (st == PushStatus::aborted) return false;
  if (st == PushStatus::full) {
    // No room to park: retry soon (failing, we were fenced: recovery has the task).
    (void)delay_record(v, w, monotonic_ns() + 10'000'000);
    return false;
  }
  e->parked_hint.fetch_add(1, std::memory_order_seq_cst);
  return true;
}

// ---- Client --------------------------------------------------------------------------------

Errc Client::set_capacity(SemId sem, std::uint32_t capacity) noexcept {
  auto* e = impl_->sem_entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  if (capacity > kMaxSemaphoreCapacity) return Errc::invalid_argument;
  std::uint64_t w = e->permits.load(std::memory_order_acquire);
  // seq_cst: a growth is a release of permits (pairs like G3).
  while (!e->permits.compare_exchange_weak(w, (w & kBits) | (std::uint64_t{capacity} << kSlots),
                                           std::memory_order_seq_cst, std::memory_order_acquire)) {
  }
  impl_->sem_freed(e, sem);
  return Errc::ok;
}

Errc Client::set_queue_limit(QueueId queue, std::uint32_t n) noexcept {
  auto& core = *impl_->core;
  if (queue >= core.layout.max_queues ||
      detail::named_state(core.queues[queue].word.load(std::memory_order_acquire)) != detail::QueueEntry::kReady)
    return Errc::unknown_queue;
  if (n > kMaxSemaphoreCapacity) return Errc::invalid_argument;
  if (n == 0) {
    core.queues[queue].limit_sem.store(0, std::memory_order_release);
    return Errc::ok;
  }
  auto sem = impl_->seg->create_semaphore("queue:" + std::to_string(queue), n);
  if (!sem) return sem.code();
  if (const Errc e = set_capacity(*sem, n); e != Errc::ok) return e;
  // release: consumers that see the limit see the semaphore ready.
  core.queues[queue].limit_sem.store(std::uint32_t{*sem} + 1, std::memory_order_release);
  return Errc::ok;
}

Errc Client::try_acquire(SemId sem, std::uint32_t n) noexcept {
  auto* e = impl_->sem_entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  if (n > kMaxSemaphoreCapacity) return Errc::need_exceeds_capacity;
  return impl_->sem_try_acquire(e, n, participant_holder(impl_->token)) ? Errc::ok : Errc::unavailable;
}

Errc Client::acquire(SemId sem, std::uint32_t n, std::chrono::nanoseconds timeout) noexcept {
  auto* e = impl_->sem_entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  if (n > kMaxSemaphoreCapacity) return Errc::need_exceeds_capacity;
  auto& im = *impl_;
  const std::uint64_t holder = participant_holder(im.token);
  if (im.sem_try_acquire(e, n, holder)) return Errc::ok;  // fast path: no clock, no sleep
  // A short spin first: a holder often releases within a microsecond or two.
  for (int spin = 0; spin < 64; ++spin) {
    __builtin_ia32_pause();
    if (im.sem_try_acquire(e, n, holder)) return Errc::ok;
  }
  const std::int64_t deadline = monotonic_ns() + timeout.count();
  for (;;) {
    if (im.sem_try_acquire(e, n, holder)) return Errc::ok;
    // Sleep: read the sequence, count ourselves, look again, wait (as consumers do on
    // their doorbell; a release bumps the sequence when it sees a waiter).
    const std::uint32_t seen = e->wake_seq.load(std::memory_order_seq_cst);
    e->waiters.fetch_add(1, std::memory_order_seq_cst);
    const bool got = im.sem_try_acquire(e, n, holder);
    const std::int64_t left = deadline - monotonic_ns();
    if (!got && left > 0) detail::futex_wait(e->wake_seq, seen, std::min<std::int64_t>(left, 100'000'000));
    e->waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (got) return Errc::ok;
    if (monotonic_ns() >= deadline) return im.sem_try_acquire(e, n, holder) ? Errc::ok : Errc::timeout;
  }
}

Errc Client::release(SemId sem, std::uint32_t n) noexcept {
  auto* e = impl_->sem_entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  const std::uint32_t done = impl_->sem_release(e, n, participant_holder(impl_->token));
  impl_->sem_freed(e, sem);
  return done == n ? Errc::ok : Errc::invalid_argument;  // released fewer than asked: not held
}

Client::Grant Client::acquire_for(const Taken& task, std::span<const Need> needs) noexcept {
  auto& im = *impl_;
  if (!im.owns(task)) return Grant::error;
  // Ascending semaphore order, never blocking: no deadlock between tasks with
  // overlapping needs, whatever order they list them in.
  // A semaphore named twice is one need of the sum (merge_needs). A need above the
  // capacity parks, and stays parked (unpark_to_queues moves a task only when its need
  // is free) until the capacity is raised.
  Need sorted[2] = {};
  for (std::size_t i = 0; i < needs.size() && i < 2; ++i) sorted[i] = needs[i];
  merge_needs(sorted);
  const std::size_t k = sorted[1].count != 0 ? 2 : sorted[0].count != 0 ? 1 : 0;
  if (k == 2 && sorted[1].sem < sorted[0].sem) std::swap(sorted[0], sorted[1]);
  const std::uint64_t holder = task_holder(task);
  for (std::size_t i = 0; i < k; ++i) {
    if (im.sem_try_acquire(sorted[i].sem, sorted[i].count, holder)) continue;
    for (std::size_t j = 0; j < i; ++j) im.sem_release(sorted[j].sem, UINT32_MAX, holder);
    for (std::size_t j = 0; j < i; ++j) im.sem_after_release(sorted[j].sem);
    if (im.sem_entry(sorted[i].sem) == nullptr) {
      // Either way the task is not ours: dead-lettered, or fenced (recovery has it).
      (void)im.dead_letter_record(task.index, task.word, "needs an unknown semaphore");
      return Grant::error;
    }
    // Park on the semaphore that was not free. Waiting is not an attempt: the take
    // that counted one is undone, and the run that follows the unpark counts it.
    --im.core->hot(task.index)->attempts;
    std::uint64_t word = task.word;
    const std::uint16_t rid = im.core->park_ring_id(sorted[i].sem, task.level);
    const PushStatus st = im.push_record(task.index, word, rid, TaskState::parked);
    if (st == PushStatus::aborted) return Grant::error;
    if (st == PushStatus::full) {
      // No room to park: retry soon. Failing, we were fenced (the reaper has the task).
      if (im.delay_record(task.index, word, monotonic_ns() + 10'000'000) != Errc::ok) return Grant::error;
      return Grant::parked;
    }
    SHMSCHED_FAULT_POINT(park_after_push);
    im.sem_entry(sorted[i].sem)->parked_hint.fetch_add(1, std::memory_order_seq_cst);  // before (K1)
    // (K1) A release may have come between our failed try and the park: look again
    // (seq_cst, after the seq_cst publishing CAS of the park ring).
    im.unpark_to_queues(sorted[i].sem, 0, true);
    return Grant::parked;
  }
  return Grant::granted;
}

bool Client::release_for(const Taken& task, std::span<const Need> needs, Taken* next) noexcept {
  auto& im = *impl_;
  const std::uint64_t holder = task_holder(task);
  std::uint32_t sems[2];
  std::size_t k = 0;
  for (const Need& n : needs)
    if (n.count != 0 && k < 2 && im.sem_release(n.sem, UINT32_MAX, holder) != 0) sems[k++] = n.sem;
  for (std::size_t i = 0; i < k; ++i) im.sem_after_release(sems[i]);
  // Hand-over: the oldest parked task of the most urgent level on a semaphore we just
  // freed is claimed here and returned to run in our place (it acquires its permits
  // with acquire_for, and parks again if someone was faster). Every other semaphore we
  // freed, and the rest of the permits of this one, unpark to the queues: a release
  // that frees several permits, or permits of two semaphores, leaves no parked task
  // behind a free permit.
  bool handed = false;
  for (std::size_t i = 0; i < k; ++i) {
    const std::uint32_t sem = sems[i];
    auto* e = im.sem_entry(sem);
    // (K3) as in unpark_to_queues: nothing parked, nothing to hand over.
    if (e == nullptr || static_cast<std::int32_t>(e->parked_hint.load(std::memory_order_seq_cst)) <= 0) continue;
    std::size_t reserved = 0;
    std::uint64_t w = 0;
    std::uint32_t v = 0;
    if (next != nullptr && !handed && im.pop_parked(e, sem, v, w)) {
      im.fill_taken(v, w, *next);  // counts the attempt this run is
      handed = true;
      reserved = im.parked_need(v, sem);
    }
    im.unpark_to_queues(sem, reserved);
  }
  return handed;
}

Result<void> Client::verify_permits() const {
  std::string problems;
  const auto& core = *impl_->core;
  for (std::uint32_t sem = 0; sem < core.layout.max_semaphores; ++sem) {
    const auto* e = impl_->sem_entry(sem);
    if (e == nullptr) continue;
    const std::uint64_t p = e->permits.load(std::memory_order_acquire);
    std::uint32_t live = 0;
    for (unsigned i = 0; i < kSlots; ++i) {
      if ((p & (std::uint64_t{1} << i)) == 0) continue;
      const std::uint64_t h = e->holders[i].load(std::memory_order_acquire);
      if (h != 0 && impl_->holder_valid(h, nullptr)) {
        ++live;
      } else {
        problems += "semaphore '" + detail::read_name(e->name) + "' slot " + std::to_string(i) + " is granted to " +
                    (h == 0 ? std::string("nobody") : "a holder that is gone") + "; ";
      }
    }
    if (live != in_use_of(p))
      problems += "semaphore '" + detail::read_name(e->name) + "': in use " + std::to_string(in_use_of(p)) +
                  ", live holders " + std::to_string(live) + "; ";
  }
  if (!problems.empty()) return Result<void>(Errc::corrupt, problems);
  return {};
}

}  // namespace shmsched
