// Take-ahead: records a process claims ahead of its single takes, per queue, handed
// out in claim order (Client::set_take_ahead); given back at the tail of their level
// when idle for a janitor tick, when the queue pauses, or at detach.
#pragma once

#include "impl.hpp"

namespace shmsched {

// Queue q's buffer for the calling thread, or null (see AheadUse). The buffer is taken
// when take-ahead is on or when it still holds records (it was just turned off by a
// thread that could not take the buffer to give them back).
inline Client::Impl::Ahead* Client::Impl::ahead_of(QueueId q) noexcept {
  const Ahead& a = ahead[q];
  // relaxed: a hint; fill_ahead reads the limit again under `busy`.
  if (a.limit.load(std::memory_order_relaxed) <= 1 && a.held() == 0) return nullptr;
  return take_buffer(q, false);
}

// Takes queue q's buffer for the calling thread (release it with an AheadUse); when
// another thread has it, waits for it with `wait` (not a hot path: a take holds it
// for a few microseconds), else returns null.
inline Client::Impl::Ahead* Client::Impl::take_buffer(QueueId q, bool wait) noexcept {
  Ahead& a = ahead[q];
  // acquire: pairs with AheadUse's release; the buffer as the last user left it.
  while (a.busy.exchange(true, std::memory_order_acquire)) {
    if (!wait) return nullptr;
    std::this_thread::yield();
  }
  return &a;
}

// Claims up to the limit's worth of records at the head of `level` into a's buffer
// (empty); returns how many.
inline std::uint32_t Client::Impl::fill_ahead(Ahead& a, QueueId q, std::uint32_t level) noexcept {
  const std::uint32_t want = std::clamp<std::uint32_t>(a.limit.load(std::memory_order_relaxed), 1, kMaxTakeAhead);
  const auto n = static_cast<std::uint32_t>(pop_level<Pop::ahead>(q, level, want, nullptr, &a));
  a.level = level;
  a.next = 0;
  a.set_held(n);
  moved(a);
  // Workers of ours asleep would leave the held records to this thread alone: wake
  // them. Best effort (a relaxed load, no system call when none sleeps): a worker
  // that announces its sleep while we hold the buffer sleeps at most a tick, and
  // this thread hands the records out meanwhile.
  if (n > 1 && me->sleepers.load(std::memory_order_relaxed) != 0) ring_doorbell(slot, static_cast<int>(n - 1));
  return n;
}

inline void Client::Impl::moved(Ahead& a) noexcept {
  // relaxed: written under `busy` only; read by janitor ticks as a hint.
  a.moves.store(a.moves.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// From janitor_tick: gives back what a queue's buffer has held since the last tick
// without a fill or a hand-out (no take of the queue came, or every worker is busy
// with a long task): those tasks are then there for other consumers.
inline void Client::Impl::age_ahead() noexcept {
  for (std::uint32_t q = 0; q < core->layout.max_queues; ++q) {
    if (ahead[q].held() == 0) continue;
    // Taken by another thread: someone is taking, which is progress.
    AheadUse use(take_buffer(static_cast<QueueId>(q), false));
    if (use.get() == nullptr) continue;
    Ahead& a = *use.get();
    const std::uint32_t m = a.moves.load(std::memory_order_relaxed);
    if (a.held() != 0 && m == a.seen_moves) {
      give_back_held(a);
    } else {
      a.seen_moves = m;
    }
  }
}

// Hands out the next record a holds: true with `out` filled and the attempt counted,
// false once none is left. One found expired is dead-lettered, as a take does.
inline bool Client::Impl::hand_out(Ahead& a, QueueId q, Taken& out) noexcept {
  while (a.held() != 0) {
    const std::uint32_t v = a.index[a.next];
    const std::uint64_t w = a.word[a.next];
    ++a.next;
    a.set_held(a.held() - 1);
    moved(a);
    // Still ours? A record held a while may have been taken back if this process
    // was fenced; then it is not ours to run (relaxed: our own last write, unless
    // someone else's CAS moved it, which is all this tells apart).
    if (core->ctrl[v].state.load(std::memory_order_relaxed) != w) continue;
    fill_taken(v, w, out);
    if (!expired_on_take(q, a.level, v, w)) return true;
  }
  return false;
}

// Puts the records held for queue q back at the tail of their level (queued, attempt
// uncounted). `wait`: wait for a thread using the buffer to finish (detach); else
// give up when one is (a take of a paused queue: the next one gives them back).
inline void Client::Impl::give_back_ahead(QueueId q, bool wait) noexcept {
  if (!wait && ahead[q].held() == 0) return;
  AheadUse use(take_buffer(q, wait));
  if (use.get() != nullptr) give_back_held(*use.get());
}

// The records a holds, back at the tail of their level (under `busy`).
inline void Client::Impl::give_back_held(Ahead& a) noexcept {
  for (; a.held() != 0; ++a.next, a.set_held(a.held() - 1)) (void)requeue_record(a.index[a.next], a.word[a.next]);
  moved(a);
}

}  // namespace shmsched
