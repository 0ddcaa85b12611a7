// The permit lease fast path, inline in Client::try_acquire / acquire / release so that
// the lease thread's uncontended take and release cost a plain store and a load, with
// no call into the library. The protocol, the revocation and why it is safe are in
// lib/src/semaphore.cpp and docs/resources.md; this header is only the owner's side.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>

#include "shmsched/detail/atomic.hpp"

namespace shmsched::detail {

/// The lease words of a participant slot, on their own line: `lease` is written only by
/// the slot's lease thread ([gen:32][sem:16][slot:8][state:8]), `revoke` by revokers
/// (the highest generation taken back).
struct LeaseWords {
  AtomicU64 lease{0};
  AtomicU64 revoke{0};
};

/// The lease word: [gen:32][sem:16][slot:8][state:8]; state none, idle or busy.
inline constexpr std::uint64_t kLeaseNone = 0, kLeaseIdle = 1, kLeaseBusy = 2;
/// The bits a fast path compares: the semaphore and the state.
inline constexpr std::uint64_t kLeaseMatch = 0xFFFF00FFULL;
constexpr std::uint64_t lease_word(std::uint64_t gen, std::uint32_t sem, std::uint32_t slot,
                                   std::uint64_t state) noexcept {
  return (gen << 32) | (std::uint64_t{sem & 0xFFFF} << 16) | (std::uint64_t{slot & 0xFF} << 8) | state;
}

/// A Client's lease state, in its Impl. The plain fields are written only by the
/// Client's lease thread (the thread whose tls_lease_of is `id`), and read only by it.
struct LeaseView {
  static constexpr std::uint64_t kDetached = UINT64_MAX;  ///< `id` from detach on: no thread's tls_lease_of
  /// Process-unique, never reused (the Impl's address may be). Atomic only because
  /// detach stores kDetached into it; relaxed everywhere (detach's contract: the lease
  /// thread is the detaching thread, or not inside the Client).
  std::atomic<std::uint64_t> id{0};
  constexpr LeaseView() noexcept = default;
  constexpr explicit LeaseView(std::uint64_t i) noexcept : id(i) {}
  LeaseWords* words = nullptr;  ///< the participant slot's lease line (set at attach)
  std::uint32_t cool = 0;       ///< grants to make without a lease after one was given back
  /// The lease word, for the lease thread's slow paths (relaxed: its own last store).
  std::uint64_t word() const noexcept { return words->lease.load(std::memory_order_relaxed); }
  bool active() const noexcept { return (word() & 0xFF) != 0; }
  /// Whether the lease is on `sem` and in `state` (kLeaseIdle or kLeaseBusy).
  bool is(std::uint32_t sem, std::uint64_t state) const noexcept {
    return (word() & kLeaseMatch) == ((std::uint64_t{sem} << 16) | state);
  }
};

/// The LeaseView id of the Client whose lease thread the calling thread is (0: none).
extern thread_local constinit std::uint64_t tls_lease_of;

/// The lease view of a Client that has none (moved from): its id is kDetached, so the
/// fast paths need no null check.
extern constinit LeaseView g_no_lease;

/// The lease thread takes its idle lease: true when the permit is the caller's now.
/// False sends the caller to the slow path (which gives back a revoked lease).
inline bool lease_take(LeaseView& v, std::uint32_t sem) noexcept {
  // The thread check first: the lease word is the lease thread's alone to write.
  if (__builtin_expect(tls_lease_of != v.id.load(std::memory_order_relaxed), 0)) return false;
  LeaseWords* const w = v.words;
  // relaxed: our own last store (nobody else writes it).
  const std::uint64_t lw = w->lease.load(std::memory_order_relaxed);
  if (__builtin_expect((lw & kLeaseMatch) != ((std::uint64_t{sem} << 16) | kLeaseIdle), 0)) return false;
  // relaxed + a compiler fence: the order against a revoker comes from its membarrier.
  w->lease.store(lw + (kLeaseBusy - kLeaseIdle), std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (__builtin_expect(w->revoke.load(std::memory_order_relaxed) != (lw >> 32), 1)) return true;
  // Revoked: back to idle (as a revoker may find it anyway), for the slow path to give back.
  w->lease.store(lw, std::memory_order_relaxed);
  return false;
}

enum class LeasePut : std::uint8_t { not_a_lease, done, give_back };

/// The lease thread releases its lease: done, or give_back when it was revoked (the
/// caller then frees the permit for real and wakes whoever waits for it).
///
/// Only the revocation is looked at: a direct acquirer about to sleep and a parker about
/// to park both failed a grant first, and a failed grant revokes every lease of the
/// semaphore, busy ones included (revoke_idle_leases), so whoever waits for this permit
/// has marked it.
inline LeasePut lease_put(LeaseView& v, std::uint32_t sem) noexcept {
  if (__builtin_expect(tls_lease_of != v.id.load(std::memory_order_relaxed), 0)) return LeasePut::not_a_lease;
  LeaseWords* const w = v.words;
  const std::uint64_t lw = w->lease.load(std::memory_order_relaxed);  // relaxed: our own last store
  if (__builtin_expect((lw & kLeaseMatch) != ((std::uint64_t{sem} << 16) | kLeaseBusy), 0))
    return LeasePut::not_a_lease;
  w->lease.store(lw - (kLeaseBusy - kLeaseIdle), std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  // relaxed: a revoker that this misses has fenced after its own store and will see the
  // idle lease and take it back itself.
  if (__builtin_expect(w->revoke.load(std::memory_order_relaxed) == (lw >> 32), 0)) return LeasePut::give_back;
  return LeasePut::done;
}

}  // namespace shmsched::detail
