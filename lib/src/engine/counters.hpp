// The per-participant counters of (queue, level), summed for Client::level_stats and
// inspect(). Reads only: each participant writes its own lines (Client::Impl::bump).
#pragma once

#include <atomic>
#include <cstdint>

#include "shmsched/client.hpp"
#include "shmsched/detail/core.hpp"

namespace shmsched::detail {

// Adds one counter line to `st`. relaxed: figures, each read once.
inline void add_counters(LevelStats& st, const LevelCounters& c) noexcept {
  st.enqueued += c.enqueued.load(std::memory_order_relaxed);
  st.started += c.started.load(std::memory_order_relaxed);
  st.done += c.done.load(std::memory_order_relaxed);
  st.retried += c.retried.load(std::memory_order_relaxed);
  st.failed += c.failed.load(std::memory_order_relaxed);
  st.dead += c.dead.load(std::memory_order_relaxed);
  st.helped += c.helped.load(std::memory_order_relaxed);
}

// A slot never registered (word 0: free, epoch 0) has counted nothing: its lines are
// skipped, so a snapshot of a fresh segment does not make tmpfs allocate them. relaxed:
// a participant registering meanwhile counts from after this snapshot.
inline bool participant_ever_used(const Core& core, std::uint32_t p) noexcept {
  return core.participants[p].word.load(std::memory_order_relaxed) != 0;
}

inline LevelStats sum_level(const Core& core, std::uint32_t queue, std::uint32_t level) noexcept {
  LevelStats st;
  for (std::uint32_t p = 0; p < core.layout.max_participants; ++p)
    if (participant_ever_used(core, p)) add_counters(st, core.counter(p, queue, level));
  return st;
}

// Everything the participant in slot p counted, over every queue and level.
inline LevelStats sum_participant(const Core& core, std::uint32_t p) noexcept {
  LevelStats st;
  if (!participant_ever_used(core, p)) return st;
  for (std::uint32_t q = 0; q < core.layout.max_queues; ++q)
    for (std::uint32_t l = 0; l < core.levels; ++l) add_counters(st, core.counter(p, q, l));
  return st;
}

}  // namespace shmsched::detail
