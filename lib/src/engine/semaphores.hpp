// The engine's inline entry to the semaphore table: the entry lookup every grant and
// release starts with. The grants, the ledger and parking: semaphore.cpp.
#pragma once

#include "impl.hpp"

namespace shmsched {

/// The entry of a ready semaphore, or null. Inline: every grant and release starts here.
inline detail::SemaphoreEntry* Client::Impl::sem_entry(std::uint32_t sem) const noexcept {
  if (sem >= core->layout.max_semaphores) return nullptr;
  auto* e = &core->semaphores[sem];
  // acquire: pairs with the release that made the entry ready (name and capacity set).
  return detail::named_state(e->word.load(std::memory_order_acquire)) == detail::SemaphoreEntry::kReady ? e : nullptr;
}

inline bool Client::Impl::sem_try_acquire(std::uint32_t sem, std::uint32_t n, std::uint64_t holder) noexcept {
  auto* e = sem_entry(sem);
  return e != nullptr && sem_try_acquire(e, n, holder);
}

inline std::uint32_t Client::Impl::sem_release(std::uint32_t sem, std::uint32_t n, std::uint64_t holder) noexcept {
  auto* e = sem_entry(sem);
  return e != nullptr ? sem_release(e, n, holder) : 0;
}

}  // namespace shmsched
