// The permit lease fast path, inline in Client::try_acquire / acquire / release so that
// the lease thread's uncontended take and release cost a plain store and a load or
// three, with no call into the library. The protocol, the revocation and why it is safe
// are in lib/src/semaphore.cpp and docs/resources.md; this header is only the owner's
// side of it.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>

#include "shmsched/detail/atomic.hpp"

namespace shmsched::detail {

/// A Client's lease state, in its Impl. The plain fields are written only by the
/// Client's lease thread (the thread whose tls_lease_of is `id`), and read only by it.
struct LeaseView {
  static constexpr std::uint32_t kNone = UINT32_MAX;  ///< no SemId is this
  std::uint64_t id = 0;                               ///< process-unique, never reused (the Impl's address may be)
  std::atomic<bool> on{true};                         ///< false from detach on: no lease is used after it
  // The lease's semaphore while it is idle (take_sem) or in use (put_sem), else kNone:
  // the fast paths decide with one compare each.
  std::uint32_t take_sem = kNone;
  std::uint32_t put_sem = kNone;
  bool active() const noexcept { return take_sem != kNone || put_sem != kNone; }
  bool busy() const noexcept { return put_sem != kNone; }
  void mark_busy() noexcept {
    put_sem = sem;
    take_sem = kNone;
  }
  void mark_idle() noexcept {
    take_sem = sem;
    put_sem = kNone;
  }
  void mark_none() noexcept { take_sem = put_sem = kNone; }
  std::uint32_t sem = 0;
  std::uint32_t slot = 0;
  std::uint64_t gen = 0;
  std::uint32_t cool = 0;        ///< grants to make without a lease after one was given back
  std::uint64_t busy_word = 0;   ///< the participant's lease word while in use ...
  std::uint64_t idle_word = 0;   ///< ... and while idle
  AtomicU64* word = nullptr;     ///< the participant slot's `lease` (written by the owner only)
  AtomicU64* revoke = nullptr;   ///< its `lease_revoke` (written by revokers)
  AtomicU32* waiters = nullptr;  ///< the leased semaphore's sleeping acquirers
  AtomicU32* parked = nullptr;   ///< and its parked-task hint
};

/// The LeaseView id of the Client whose lease thread the calling thread is (0: none).
extern thread_local constinit std::uint64_t tls_lease_of;

/// The lease thread takes its idle lease: true when the permit is the caller's now.
/// False sends the caller to the slow path (which gives back a revoked lease).
inline bool lease_take(LeaseView& v, std::uint32_t sem) noexcept {
  // The thread check first: the plain fields are the lease thread's alone to read.
  if (tls_lease_of != v.id || v.take_sem != sem || !v.on.load(std::memory_order_relaxed)) return false;
  // relaxed + a compiler fence: the order against a revoker comes from its membarrier.
  v.word->store(v.busy_word, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (v.revoke->load(std::memory_order_relaxed) == v.gen) return false;
  v.mark_busy();
  return true;
}

enum class LeasePut : std::uint8_t { not_a_lease, done, give_back };

/// The lease thread releases its lease: done, or give_back when a waiter, a parked task
/// or a revocation wants the permit (the caller then frees it for real).
inline LeasePut lease_put(LeaseView& v, std::uint32_t sem) noexcept {
  if (tls_lease_of != v.id || v.put_sem != sem || !v.on.load(std::memory_order_relaxed)) return LeasePut::not_a_lease;
  v.mark_idle();
  v.word->store(v.idle_word, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  // relaxed loads: a waiter, parker or revoker that these miss has fenced after its own
  // store and will see the idle lease and take it back itself.
  if (v.waiters->load(std::memory_order_relaxed) != 0 ||
      static_cast<std::int32_t>(v.parked->load(std::memory_order_relaxed)) > 0 ||
      v.revoke->load(std::memory_order_relaxed) == v.gen)
    return LeasePut::give_back;
  return LeasePut::done;
}

}  // namespace shmsched::detail
