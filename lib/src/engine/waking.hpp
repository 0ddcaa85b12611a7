// Waking sleepers: the sleeper masks per queue and each participant's doorbell.
// Owns: notify (after a task became takeable), the choice of whom to wake, the
// doorbell ring, and dropping a participant's sleep bits. Pairs with
// Client::announce_sleep (client.cpp): the Dekker pairing of docs/ring-protocol.md,
// "Participants, reaping and fencing".
#pragma once

#include "impl.hpp"

namespace shmsched {

// After a task became takeable in queue q: wake one sleeping home consumer, or else
// every sleeper of one helper process. The seq_cst loads pair with the seq_cst
// fetch_or in announce_sleep (Dekker): either the sleeper sees the task on its last
// look, or we see its bit. No bit, no system call.
inline void Client::Impl::notify(QueueId q) noexcept {
  auto& m = core->sleepers[q];
  const std::uint32_t words = core->mask_words();
  // Rotate where the search starts, so a burst of tasks wakes sleepers in every
  // sleeping process rather than only the lowest-numbered one (a process keeps its
  // bit while any of its workers sleeps). Thread-local: no shared counter.
  // The common case -- nobody asleep -- is a load per mask word and no more.
  std::uint64_t any = 0;
  for (std::uint32_t w = 0; w < words; ++w)
    any |= m.home[w].load(std::memory_order_seq_cst) | m.help[w].load(std::memory_order_seq_cst);
  if (any == 0) return;
  thread_local std::uint32_t rotor = 0;
  const std::uint32_t start = rotor++;
  if (const std::uint32_t p = pick(m.home, words, start); p != kNone) return ring_doorbell(p, 1);
  if (const std::uint32_t p = pick(m.help, words, start); p != kNone) return ring_doorbell(p, INT32_MAX);
}

// A set bit of the mask, searching from bit `start` (mod the mask size) onwards.
inline std::uint32_t Client::Impl::pick(const detail::AtomicU64* mask, std::uint32_t words,
                                        std::uint32_t start) noexcept {
  const std::uint32_t bits = words * 64;
  const std::uint32_t from = start % bits;
  for (std::uint32_t k = 0; k <= words; ++k) {
    const std::uint32_t w = (from / 64 + k) % words;
    std::uint64_t v = mask[w].load(std::memory_order_seq_cst);
    if (k == 0) v &= ~std::uint64_t{0} << (from % 64);  // first word: from `from` on
    if (k == words) v = mask[w].load(std::memory_order_seq_cst) & ((std::uint64_t{1} << (from % 64)) - 1);
    if (v != 0) return w * 64 + static_cast<std::uint32_t>(__builtin_ctzll(v));
  }
  return kNone;
}

// Drops participant slot `p` from every queue's sleeper masks (it left, or died).
inline void Client::Impl::clear_sleep_bits(std::uint32_t p) noexcept {
  const std::uint64_t bit = std::uint64_t{1} << (p % 64);
  for (std::uint32_t q = 0; q < core->layout.max_queues; ++q) {
    core->sleepers[q].home[p / 64].fetch_and(~bit, std::memory_order_seq_cst);
    core->sleepers[q].help[p / 64].fetch_and(~bit, std::memory_order_seq_cst);
  }
}

inline void Client::Impl::ring_doorbell(std::uint32_t participant, int n) noexcept {
  if (participant >= core->layout.max_participants) return;
  auto& p = core->participants[participant];
  // seq_cst: a sleeper that read the old value before sleeping is woken by the
  // futex (FUTEX_WAIT compares with the new value and returns at once).
  p.doorbell.fetch_add(1, std::memory_order_seq_cst);
  detail::futex_wake(p.doorbell, n);
}

}  // namespace shmsched
