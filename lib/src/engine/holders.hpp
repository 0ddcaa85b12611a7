// Who holds a permit: the engine's holder words in the semaphore layer's ledger, whether
// a holder still holds, and the reaper's sweep of the permits of the dead. The ledger
// itself is the semaphore layer's (permits.hpp); what a holder means is the engine's.
#pragma once

#include "impl.hpp"

namespace shmsched {

// A task holder names one run of a record: its index and the version of the state word
// the running worker holds. A requeued task's next run has another version, so a permit
// of a dead (or abandoned) run can never pass for the new run's.
inline std::uint64_t Client::Impl::task_holder(const Taken& t) noexcept {
  return detail::kHolderTask | ((detail::version_of(t.word) & kRunVersionMask) << 20) | t.index;
}

// A direct holder is this thread of this participant: threads of one process never
// release each other's permits, so a release's CAS only ever clears bits its own caller
// holds (no ABA through another thread's release and re-grant of the same slot).
inline std::uint64_t Client::Impl::direct_holder() const noexcept {
  static std::atomic<std::uint32_t> next_thread{1};
  // Constant-initialised (no TLS init call on every use); numbered on first use.
  thread_local std::uint32_t thread = 0;
  while (thread == 0) thread = next_thread.fetch_add(1, std::memory_order_relaxed) & 0x3FFFFFFF;  // 0: not yet
  return detail::kHolderParticipant | (std::uint64_t{thread} << 16) | token;
}

// A holder is stale when it is the dead participant, or a task that is not running any
// more (or runs under the dead one).
inline bool Client::Impl::holder_valid(std::uint64_t holder, const DeadOwner* dead) const noexcept {
  const std::uint64_t kind = holder & detail::kHolderKindMask;
  if (kind == detail::kHolderParticipant) {
    // A direct holder: valid while its process is.
    const auto tok = static_cast<std::uint16_t>(holder & 0xFFFF);
    return dead != nullptr ? !dead->matches(tok) : token_alive(tok);
  }
  if (kind != detail::kHolderTask) return false;
  const auto idx = static_cast<std::uint32_t>(holder & 0xFFFFF);
  if (idx >= core->capacity) return false;
  const std::uint64_t s = core->ctrl[idx].state.load(std::memory_order_acquire);
  if (detail::state_of(s) != TaskState::running ||
      (detail::version_of(s) & kRunVersionMask) != ((holder >> 20) & kRunVersionMask))
    return false;
  return dead != nullptr ? !dead->matches(owner_of(s)) : token_alive(owner_of(s));
}

// Returns every permit whose ledger holder is stale for `dead` (the reaper's step).
inline std::uint32_t Client::Impl::sweep_ledgers(DeadOwner dead) noexcept {
  std::uint32_t returned = 0;
  for (std::uint32_t sem = 0; sem < permits.size(); ++sem) {
    auto* e = permits.entry(sem);
    if (e == nullptr) continue;
    const std::uint32_t n =
        detail::Permits::sweep(*e, [&](std::uint64_t holder) { return holder_valid(holder, &dead); });
    if (n != 0) permits_freed(*e, sem);
    returned += n;
  }
  return returned;
}

}  // namespace shmsched
