// Semaphores: named counting semaphores in the segment, shared by every process.
//
// Contract:
//  * Created or opened by name (race-safe; 1..31 bytes), with a capacity of 0..56
//    permits, changeable at run time: shrinking stops new grants until in-use falls
//    below the new capacity; nothing running is stopped.
//  * A grant is one CAS on the semaphore's permit word (capacity and grant bitmap in one
//    64-bit word), so the capacity is never exceeded, and it is recorded in the ledger
//    against its holder -- a task (while it runs) or a participant (direct use) -- so the
//    reaper returns exactly the permits a dead process held. No lock, no system call on
//    try_acquire/release; acquire() sleeps on a futex only while none is free.
//  * Resource-aware dispatch: a task may need up to two semaphores (TaskOptions::needs,
//    or a handler's declared needs). A worker acquires all of them or none (ascending
//    order, never blocking, so no deadlock); when they are not free the task is parked
//    on that semaphore and the worker moves on; a release hands the freed permit to the
//    oldest parked task of the most urgent level.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace shmsched {

using SemId = std::uint16_t;

/// A task's need of one semaphore (count 0 = no need).
struct Need {
  SemId sem = 0;
  std::uint16_t count = 0;
};

/// A need list in its one form: a semaphore named twice is one need of the summed count
/// (in the first place), and unused places have count 0.
inline void merge_needs(Need (&needs)[2]) noexcept {
  if (needs[0].count != 0 && needs[1].count != 0 && needs[0].sem == needs[1].sem) {
    const unsigned sum = unsigned{needs[0].count} + needs[1].count;
    needs[0].count = static_cast<std::uint16_t>(sum > 0xFFFF ? 0xFFFF : sum);
    needs[1] = Need{};
  }
  if (needs[0].count == 0 && needs[1].count != 0) {
    needs[0] = needs[1];
    needs[1] = Need{};
  }
}

struct SemaphoreInfo {
  SemId id = 0;
  std::string name;
  std::uint32_t capacity = 0;
  std::uint32_t in_use = 0;        ///< permits granted now and in use
  std::uint64_t parked = 0;        ///< tasks parked on it (approximate)
  std::uint32_t waiters = 0;       ///< direct acquirers asleep
  double rate = 0;                 ///< tasks a second that may start with it (0 = no rate limit)
  std::uint32_t burst = 0;         ///< of those, how many at once
  std::uint64_t rate_granted = 0;  ///< tokens taken
  std::uint64_t rate_delayed = 0;  ///< tasks that waited for their token
};

inline constexpr std::uint32_t kMaxSemaphoreCapacity = 56;

inline constexpr std::size_t kMaxSemaphoreName = 31;

}  // namespace shmsched
