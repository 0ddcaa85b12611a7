// Participants: the processes attached to a segment.
//
// Contract: each attached process holds one slot of the participant table. Its *token*
// (16 bits: slot index 1..1023 in bits 0..9, slot epoch in bits 10..15) is what task
// state words record as owner. A slot is freed with epoch + 1, so a process that was
// reaped and comes back with a stale handle cannot pass for the slot's next holder: its
// compare-exchanges against records expect its old token and fail (fencing).
//
// Who may call what: a process registers and deregisters itself; any process may reap
// a slot whose process is dead by (pid, start time) -- see Client::reap_dead.
#pragma once

#include <atomic>
#include <cstdint>

namespace shmsched {

enum class Role : std::uint32_t {
  producer = 1,
  consumer = 2,
  observer = 4,  ///< operator tools: attach to act, never own tasks long
};
constexpr Role operator|(Role a, Role b) noexcept {
  return static_cast<Role>(static_cast<std::uint32_t>(a) | static_cast<std::uint32_t>(b));
}
constexpr bool has_role(Role set, Role r) noexcept {
  return (static_cast<std::uint32_t>(set) & static_cast<std::uint32_t>(r)) != 0;
}

enum class Activity : std::uint32_t { idle = 0, busy = 1, stopping = 2 };

/// What a process shows others about itself (inspect; shmctl stat and top): how many
/// workers it runs, whether it is busy or stopping, and the task a worker runs. Its own
/// threads write it, each a relaxed store (figures that are read once, ordering
/// nothing). From Client::status_board(); valid while the Client is attached.
class StatusBoard {
 public:
  void set_workers(std::uint32_t n) noexcept { workers_->store(n, std::memory_order_relaxed); }
  void set_activity(Activity a) noexcept { activity_->store(static_cast<std::uint32_t>(a), std::memory_order_relaxed); }
  /// The task one of the workers runs now (0: none).
  void set_current_task(std::uint64_t id) noexcept { current_task_->store(id, std::memory_order_relaxed); }

 private:
  friend class Client;
  StatusBoard(std::atomic<std::uint32_t>* workers, std::atomic<std::uint32_t>* activity,
              std::atomic<std::uint64_t>* current_task) noexcept
      : workers_(workers), activity_(activity), current_task_(current_task) {}
  std::atomic<std::uint32_t>* workers_;
  std::atomic<std::uint32_t>* activity_;
  std::atomic<std::uint64_t>* current_task_;
};

namespace detail {
inline constexpr unsigned kTokenIndexBits = 10;
inline constexpr std::uint16_t kTokenIndexMask = (1u << kTokenIndexBits) - 1;
inline constexpr std::uint16_t kTokenEpochMask = 0x3F;
constexpr std::uint16_t make_token(std::uint32_t index, std::uint32_t epoch) noexcept {
  return static_cast<std::uint16_t>(((epoch & kTokenEpochMask) << kTokenIndexBits) | (index & kTokenIndexMask));
}
constexpr std::uint32_t token_index(std::uint16_t token) noexcept {
  return token & kTokenIndexMask;
}
constexpr std::uint32_t token_epoch(std::uint16_t token) noexcept {
  return (token >> kTokenIndexBits) & kTokenEpochMask;
}

// Participant slot word: [aux : 32][epoch : 6][state : 4]
constexpr std::uint64_t pword(std::uint64_t state, std::uint32_t epoch, std::uint32_t aux) noexcept {
  return (std::uint64_t{aux} << 32) | (std::uint64_t{epoch & kTokenEpochMask} << 4) | state;
}
// The epoch a slot gets when it is freed (fencing its last token): the next one, never 0
// again once the slot was used, so that a used slot's word is never 0 (the word of a
// slot never registered, whose counters readers skip).
constexpr std::uint32_t next_epoch(std::uint32_t epoch) noexcept {
  const std::uint32_t e = (epoch + 1) & kTokenEpochMask;
  return e == 0 ? 1 : e;
}
constexpr std::uint64_t pword_state(std::uint64_t w) noexcept {
  return w & 0xF;
}
constexpr std::uint32_t pword_epoch(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>((w >> 4) & kTokenEpochMask);
}
constexpr std::uint32_t pword_aux(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>(w >> 32);
}
}  // namespace detail

}  // namespace shmsched
