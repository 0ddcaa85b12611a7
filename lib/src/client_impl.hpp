// Client::Impl: the engine's process-local state and the record protocols (shared by
// client.cpp and semaphore.cpp). docs/ring-protocol.md walks through the protocols;
// the labels (S1), (T1), ... name the steps it refers to.
#pragma once

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <string>
#include <thread>

#include <time.h>

#include "shmsched/client.hpp"
#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/fault.hpp"
#include "shmsched/detail/futex.hpp"
#include "shmsched/detail/name_table.hpp"
#include "shmsched/detail/prefetch.hpp"
#include "shmsched/detail/saturate.hpp"

namespace shmsched {

using detail::next_word;
using detail::owner_of;
using detail::state_of;

namespace engine {

using detail::kMaxTypeName;

// CLOCK_MONOTONIC_COARSE: a few ns instead of ~20; enqueue times feed ages and aging
// bounds (milliseconds and up), not latency measurements.
inline std::int64_t coarse_now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

inline bool is_free(std::uint64_t s) noexcept {
  return state_of(s) == TaskState::free || state_of(s) == TaskState::virgin;
}

// enqueued_ns is read by agers that do not own the record: atomic_ref on both sides.
inline std::int64_t load_enqueued(detail::TaskHot* b) noexcept {
  return std::atomic_ref<std::int64_t>(b->enqueued_ns).load(std::memory_order_relaxed);
}

inline std::int64_t load_not_before(detail::TaskHot* b) noexcept {
  // atomic_ref: promoters read it while they do not own the record.
  return std::atomic_ref<std::int64_t>(b->not_before_ns).load(std::memory_order_relaxed);
}
inline void store_not_before(detail::TaskHot* b, std::int64_t v) noexcept {
  std::atomic_ref<std::int64_t>(b->not_before_ns).store(v, std::memory_order_relaxed);
}

// Counters of (queue, level) summed over every participant slot (Client::level_stats
// and inspect()).
// Adds one counter line to `st`. relaxed: figures, each read once.
inline void add_counters(LevelStats& st, const detail::LevelCounters& c) noexcept {
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
inline bool slot_ever_used(const detail::Core& core, std::uint32_t p) noexcept {
  return core.participants[p].word.load(std::memory_order_relaxed) != 0;
}

inline LevelStats sum_level(const detail::Core& core, std::uint32_t queue, std::uint32_t level) noexcept {
  LevelStats st;
  for (std::uint32_t p = 0; p < core.layout.max_participants; ++p)
    if (slot_ever_used(core, p)) add_counters(st, core.counter(p, queue, level));
  return st;
}

// Everything the participant in slot p counted, over every queue and level.
inline LevelStats sum_participant(const detail::Core& core, std::uint32_t p) noexcept {
  LevelStats st;
  if (!slot_ever_used(core, p)) return st;
  for (std::uint32_t q = 0; q < core.layout.max_queues; ++q)
    for (std::uint32_t l = 0; l < core.levels; ++l) add_counters(st, core.counter(p, q, l));
  return st;
}

inline void copy_cstr(char* dst, std::size_t cap, std::string_view s) noexcept {
  const std::size_t n = std::min(s.size(), cap - 1);
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

}  // namespace engine
using namespace engine;

struct Client::Impl {
  Segment* seg = nullptr;
  detail::Core* core = nullptr;
  detail::ParticipantSlot* me = nullptr;
  std::uint32_t slot = 0;  // 0-based
  std::uint32_t epoch = 0;
  std::uint16_t token = 0;
  bool attached = false;
  // Where this process's allocation sweep goes on from (process-local).
  std::atomic<std::uint32_t> cursor{0};
  // The record this process freed last: reserving it again reuses lines still in this
  // core's cache (a hint; the record's CAS decides).
  static constexpr std::uint32_t kNone = UINT32_MAX;
  std::atomic<std::uint32_t> recent{kNone};
  // When this process last swept the whole table and found it full (0 = not lately).
  std::atomic<std::int64_t> last_full_ns{0};
  // The last type this process registered, to skip the registry on repeats.
  std::atomic<std::uint64_t> last_type{0};
  // When this process last looked at lower levels for aged tasks (coarse ns).
  std::atomic<std::int64_t> last_aging_check{0};
  std::atomic<std::int64_t> last_reap{0};
  std::atomic<std::uint64_t> random{0x9E3779B97F4A7C15ULL};
  // Per queue ring, this process's own head cursor (IndexRing::try_pop): a level that
  // was empty when this process last looked costs one load to look at again. Shared by
  // the process's threads; any value ever stored is valid.
  std::unique_ptr<detail::AtomicU64[]> pop_cursor;
  // And its tail cursor per queue ring, for pushes (the same idea for producers).
  std::unique_ptr<detail::AtomicU64[]> push_cursor;
  // The queue rings' views, made once (Core::ring computes them on every call).
  std::unique_ptr<IndexRing<>[]> queue_rings;

  // Per queue, the records this process claimed ahead of its single takes
  // (Client::set_take_ahead): running, owned by us, their attempt not yet counted,
  // handed out in the order they were claimed. One thread uses a buffer at a time:
  // `busy` is taken with an exchange, and a take that finds it taken takes as if
  // take-ahead were off, so no take waits for another thread (set_take_ahead and
  // detach do wait, yielding, for a take to finish with it).
  struct alignas(detail::kCacheLine) Ahead {
    std::atomic<std::uint32_t> limit{1};  // how many a take may claim; 1 = off
    std::atomic<bool> busy{false};
    // How many records are held: changed under `busy` only, read without it as a hint
    // (relaxed: under `busy` the flag's acquire and release order it).
    std::atomic<std::uint32_t> count{0};
    std::uint32_t held() const noexcept { return count.load(std::memory_order_relaxed); }
    void set_held(std::uint32_t n) noexcept { count.store(n, std::memory_order_relaxed); }
    // The rest only under `busy`.
    std::uint32_t level = 0;  // the level of the records held
    std::uint32_t next = 0;   // index of the next to hand out
    // Fills and hand-outs so far (written under `busy`): a janitor tick that finds it
    // unchanged since the last tick while records are held gives them back.
    std::atomic<std::uint32_t> moves{0};
    std::uint32_t seen_moves = 0;  // the value the last tick saw (under `busy`)
    std::uint32_t index[kMaxTakeAhead];
    std::uint64_t word[kMaxTakeAhead];
  };
  std::unique_ptr<Ahead[]> ahead;  // one per queue

  // This participant's counters, (queue, level) at queue * levels + level.
  detail::LevelCounters* my_counters = nullptr;
  detail::LevelCounters& counters(std::uint32_t q, std::uint32_t level) const noexcept {
    return my_counters[q * core->levels + level];
  }
  // Whose records and permits a recovery takes back: every token of participant slot
  // `index` (1-based, as in tokens) except `keep` (0: none). Older epochs of a slot are
  // dead by construction (the epoch moves on only at reaping, deregistering or takeover),
  // so this also finishes a recovery whose reaper died part-way.
  struct DeadSlot {
    std::uint32_t index = 0;
    std::uint16_t keep = 0;
    bool matches(std::uint16_t tok) const noexcept {
      return tok != 0 && detail::token_index(tok) == index && tok != keep;
    }
  };

  static void bump(detail::AtomicU64& c, std::uint64_t n = 1) noexcept {
    // relaxed RMW on a line only this process writes: exact, never shared on a hot path.
    c.fetch_add(n, std::memory_order_relaxed);
  }

  // ---- waking ----------------------------------------------------------------------

  // After a task became takeable in queue q: wake one sleeping home consumer, or else
  // every sleeper of one helper process. The seq_cst loads pair with the seq_cst
  // fetch_or in announce_sleep (Dekker): either the sleeper sees the task on its last
  // look, or we see its bit. No bit, no system call.
  void notify(QueueId q) noexcept {
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
    if (const std::uint32_t p = pick(m.home, words, start); p != kNone) return ring(p, 1);
    if (const std::uint32_t p = pick(m.help, words, start); p != kNone) return ring(p, INT32_MAX);
  }

  // A set bit of the mask, searching from bit `start` (mod the mask size) onwards.
  static std::uint32_t pick(const detail::AtomicU64* mask, std::uint32_t words, std::uint32_t start) noexcept {
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
  void clear_sleep_bits(std::uint32_t p) noexcept {
    const std::uint64_t bit = std::uint64_t{1} << (p % 64);
    for (std::uint32_t q = 0; q < core->layout.max_queues; ++q) {
      core->sleepers[q].home[p / 64].fetch_and(~bit, std::memory_order_seq_cst);
      core->sleepers[q].help[p / 64].fetch_and(~bit, std::memory_order_seq_cst);
    }
  }

  void ring(std::uint32_t slot_index, int n) noexcept {
    if (slot_index >= core->layout.max_participants) return;
    auto& p = core->participants[slot_index];
    // seq_cst: a sleeper that read the old value before sleeping is woken by the
    // futex (FUTEX_WAIT compares with the new value and returns at once).
    p.doorbell.fetch_add(1, std::memory_order_seq_cst);
    detail::futex_wake(p.doorbell, n);
  }

  // ---- records ----------------------------------------------------------------

  // Starts fetching the lines of record idx that its next owner writes first (its hot
  // line and the start of its payload), for writing: issued before the CAS that takes
  // the record, the fetches overlap that CAS's own miss instead of following it (a
  // locked instruction waits for every earlier load and store, so a miss after one CAS
  // stalls the next). A hint: no effect on what is read or written.
  //
  // Across processes each side mostly works on lines the other side wrote long before
  // (the queue between them is deep), so both also fetch kAhead records ahead: the
  // producer along its allocation sweep, the consumer along the ring it pops (the
  // distance and what it bought: docs/benchmarks.md).
  static constexpr std::uint32_t kAhead = 8;
  // How many records ahead a batch's fill fetches the lines it writes next. Fetching
  // all of a batch's records as it reserved them asked for more lines at once than the
  // core keeps in flight; one fill this far ahead made a producer alone in its thread
  // a fifth to a third faster (BM_backlog_shmsched_enqueue_batch, docs/benchmarks.md).
  static constexpr std::uint32_t kFillAhead = 8;
  // How many members of a run a batch take fetches at once, and control words per line.
  static constexpr std::uint32_t kMaxRunFetch = 16;
  static constexpr std::uint32_t kCtrlPerLine = detail::kCacheLine / sizeof(detail::TaskCtrl);
  void prefetch_body(std::uint32_t idx) const noexcept {
    detail::prefetch(core->hot(idx));
    detail::prefetch(core->payload(idx));
  }

  // What a record must be to be taken from ring `rid`: queued in a queue ring, parked
  // in a semaphore's park ring.
  TaskState takeable(std::uint16_t rid) const noexcept {
    return core->is_park_ring(rid) ? TaskState::parked : TaskState::queued;
  }

  // Whether the entry for record v at `pos` of ring `rid` is a leftover: the record is
  // not (any more) takeable there. Loads state first (T1), then where, as claim() does.
  bool is_stale(std::uint16_t rid, std::uint64_t pos, std::uint32_t v) const noexcept {
    if (v >= core->capacity) return true;
    auto& c = core->ctrl[v];
    const std::uint64_t s = c.state.load(std::memory_order_acquire);  // (T1)
    return state_of(s) != takeable(rid) || c.where.load(std::memory_order_relaxed) != detail::make_where(rid, pos);
  }

  // Claim record v found at `pos` of ring `rid`: one CAS from queued to `to` owned by
  // us. This CAS is the linearisation point of a pop.
  // `fetch`: start fetching the record's lines first (a caller that fetched them
  // already passes false).
  Claim claim(std::uint16_t rid, std::uint64_t pos, std::uint32_t v, TaskState to, std::uint64_t& out,
              bool fetch = true) noexcept {
    if (v >= core->capacity) return Claim::stale;  // corrupt entry: clear it
    auto& c = core->ctrl[v];
    if (fetch) {
      // Fetched first: the load below and the CAS after it both need the line.
      detail::prefetch(&c);
      prefetch_body(v);  // the taker reads both and counts the attempt in the hot line
    }
    // (T1) acquire: pairs with (S1) of whoever made the record takeable, so `where`
    // and the body it wrote are visible.
    std::uint64_t s = c.state.load(std::memory_order_acquire);
    for (;;) {
      if (state_of(s) != takeable(rid)) return Claim::stale;
      // relaxed: ordered after (T1); a later rewrite of `where` would need a state
      // change first, which makes the CAS below fail.
      if (c.where.load(std::memory_order_relaxed) != detail::make_where(rid, pos)) return Claim::stale;
      const std::uint64_t next = next_word(s, to, token);
      // (T2) acq_rel: acquires the body from the previous owner and releases our
      // ownership; on failure reload (acquire) and decide again.
      if (c.state.compare_exchange_weak(s, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        out = next;
        return Claim::taken;
      }
    }
  }

  // (W1) Sets `where` of a record whose state word we last left as `word`, if it still
  // is: only the owner may write `where`, so a producer fenced while it ran (judged dead,
  // its records given to others by recovery) stops here instead of overwriting the
  // `where` of someone else's task. The load is relaxed: our own last write, unless
  // another process has moved the record since. The store is relaxed: published by the
  // state CAS (S1) that follows, or by the ring's publishing CAS (R3).
  static bool set_where(detail::TaskCtrl& c, std::uint64_t word, std::uint64_t wh) noexcept {
    if (c.state.load(std::memory_order_relaxed) != word) return false;
    c.where.store(wh, std::memory_order_relaxed);
    return true;
  }

  // Moves records first .. first + n - 1 (owned by us, their state words in `words`) to
  // `target` owned by us, each with `where` = wh first (W1) and then its own CAS (S1).
  // Returns how many moved; fewer than n means a record was not ours any more (we were
  // fenced). `words` only ever hold words we wrote: a failed CAS leaves its entry as it
  // was, so whatever frees them afterwards can only free our own records.
  std::uint32_t move_run(std::uint32_t first, std::uint32_t n, std::uint64_t* words, TaskState target,
                         std::uint64_t wh) noexcept {
    for (std::uint32_t k = 0; k < n; ++k) {
      auto& c = core->ctrl[first + k];
      if (!set_where(c, words[k], wh)) return k;
      std::uint64_t expected = words[k];
      const std::uint64_t next = next_word(expected, target, token);
      // (S1) acq_rel: releases the body and `where` to the next owner (pairs with T1).
      if (!c.state.compare_exchange_strong(expected, next, std::memory_order_acq_rel, std::memory_order_acquire))
        return k;
      words[k] = next;
      if (k + 1 < n) SHMSCHED_FAULT_POINT(enqueue_run_mid_publish);
    }
    return n;
  }

  // Put the run of records first .. first + n - 1 into ring `rid` as one entry, moving
  // each to `target` owned by us on the first attempt (move_run) unless `moved` says the
  // caller did. On return `words` are the records' words as we left them.
  // PushStatus::aborted means a record was not ours (we were fenced); records moved
  // before it stay queued under our (fenced) token and the reaper republishes them.
  PushStatus push_run(std::uint32_t first, std::uint32_t n, std::uint64_t* words, std::uint16_t rid, TaskState target,
                      bool moved = false) noexcept {
    auto prepare = [&](std::uint64_t pos) noexcept {
      const std::uint64_t wh = detail::make_where(rid, pos);
      if (moved) {
        for (std::uint32_t k = 0; k < n; ++k)
          if (!set_where(core->ctrl[first + k], words[k], wh)) return false;  // fenced
        return true;
      }
      moved = move_run(first, n, words, target, wh) == n;
      return moved;
    };
    auto stale = [&](std::uint64_t pos, std::uint32_t v) noexcept { return is_stale(rid, pos, v); };
    if (rid < core->ring_count()) return queue_rings[rid].try_push(first, prepare, stale, &push_cursor[rid], n);
    return core->ring(rid).try_push(first, prepare, stale, nullptr, n);  // a park ring
  }
  PushStatus push_record(std::uint32_t idx, std::uint64_t& word, std::uint16_t rid, TaskState target) noexcept {
    return push_run(idx, 1, &word, rid, target);
  }

  // Free a record we own: one CAS. Nothing indexes free records; allocation sweeps.
  Errc free_record(std::uint32_t idx, std::uint64_t word) noexcept {
    // (S5) release: our last reads and writes of the body happen-before the next
    // owner's (S0) acquire.
    if (!core->ctrl[idx].state.compare_exchange_strong(word, next_word(word, TaskState::free, token),
                                                       std::memory_order_release, std::memory_order_relaxed))
      return Errc::fenced;
    recent.store(idx, std::memory_order_relaxed);
    return Errc::ok;
  }

  // Raises the records_used mark past record `idx` before it is reserved (SegmentHeader).
  // Past the first pass over the table this is one load and a compare.
  void note_used(std::uint32_t idx) noexcept {
    // relaxed: a hint whether to raise; raise_mark's RMW decides.
    if (__builtin_expect(idx >= core->header->records_used.load(std::memory_order_relaxed), 0)) raise_mark(idx);
  }
  [[gnu::noinline, gnu::cold]] void raise_mark(std::uint32_t idx) noexcept {
    auto& mark = core->header->records_used;
    std::uint32_t cur = mark.load(std::memory_order_relaxed);
    // seq_cst RMW: a locked instruction, ordered before our reserve CAS, and paired with
    // scan_end's load.
    while (cur <= idx &&
           !mark.compare_exchange_weak(cur, idx + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) {
    }
  }

  // Reserve a free record by sweeping the control words from this process's cursor.
  // Records are freed roughly in the order they were reserved, so the record after the
  // last one reserved is usually free: one load and one CAS. A full sweep that finds
  // none means the table is full (back-pressure).
  [[gnu::always_inline]] Errc alloc(std::uint32_t& idx, std::uint64_t& word) noexcept {
    if (const std::uint32_t r = recent.load(std::memory_order_relaxed); r != kNone && r < core->capacity) {
      recent.store(kNone, std::memory_order_relaxed);
      auto& c = core->ctrl[r];
      std::uint64_t s = c.state.load(std::memory_order_relaxed);
      if (is_free(s)) {
        const std::uint64_t next = next_word(s, TaskState::reserved, token);
        // (S0) as below.
        if (c.state.compare_exchange_strong(s, next, std::memory_order_acquire, std::memory_order_relaxed)) {
          idx = r;
          word = next;
          SHMSCHED_FAULT_POINT(task_alloc_reserved);
          return Errc::ok;
        }
      }
    }
    const std::uint32_t mask = core->capacity - 1;
    std::uint32_t i = cursor.load(std::memory_order_relaxed);
    // Within 20 us of a sweep that found the table full, look only at the next 64
    // records (the oldest reservations, so the likeliest to be free again): a producer
    // spinning on back-pressure then costs a few lines, not a sweep of the whole table
    // through lines the consumers are writing. The first reservation after that clears
    // the mark, so a table that is not full costs no clock read.
    std::uint32_t limit = core->capacity;
    const std::int64_t full_at = last_full_ns.load(std::memory_order_relaxed);
    if (full_at != 0 && monotonic_ns() - full_at < 20'000) limit = std::min<std::uint32_t>(limit, 64);
    for (std::uint32_t n = 0; n < limit; ++n, ++i) {
      auto& c = core->ctrl[i & mask];
      std::uint64_t s = c.state.load(std::memory_order_relaxed);
      if (!is_free(s)) continue;
      const std::uint64_t next = next_word(s, TaskState::reserved, token);
      note_used(i & mask);
      // The records the sweep reaches a few calls from now, and their control line:
      // their misses overlap this call's work instead of stalling those calls.
      prefetch_body((i + kAhead) & mask);
      detail::prefetch(&core->ctrl[(i + 2 * kAhead) & mask]);
      // (S0) acquire: pairs with (S5) of the record's last owner; we may now write it.
      if (c.state.compare_exchange_strong(s, next, std::memory_order_acquire, std::memory_order_relaxed)) {
        cursor.store(i + 1, std::memory_order_relaxed);
        if (full_at != 0) last_full_ns.store(0, std::memory_order_relaxed);  // relaxed: a hint
        idx = i & mask;
        word = next;
        SHMSCHED_FAULT_POINT(task_alloc_reserved);
        return Errc::ok;
      }
    }
    if (limit == core->capacity) {
      last_full_ns.store(monotonic_ns(), std::memory_order_relaxed);
      cursor.store(i, std::memory_order_relaxed);
    }
    return Errc::table_full;
  }

  // Reserve exactly record `idx` if it is free (the next member of a run): one load
  // and one CAS, no sweep.
  bool alloc_at(std::uint32_t idx, std::uint64_t& word) noexcept {
    note_used(idx);
    detail::prefetch(&core->ctrl[(idx + 2 * kAhead) & (core->capacity - 1)]);
    return reserve_at(idx, word);
  }
  // The same, for a caller that raised the records_used mark past idx itself.
  bool reserve_at(std::uint32_t idx, std::uint64_t& word) noexcept {
    auto& c = core->ctrl[idx];
    std::uint64_t s = c.state.load(std::memory_order_relaxed);
    if (!is_free(s)) return false;
    const std::uint64_t next = next_word(s, TaskState::reserved, token);
    // (S0) as in alloc.
    if (!c.state.compare_exchange_strong(s, next, std::memory_order_acquire, std::memory_order_relaxed)) return false;
    word = next;
    SHMSCHED_FAULT_POINT(task_alloc_reserved);
    return true;
  }

  // ---- type registry -------------------------------------------------------------

  void register_type(std::uint64_t h, std::string_view name) noexcept {
    if (last_type.load(std::memory_order_relaxed) == h) return;
    const std::uint64_t key = h >> 2;
    for (std::uint32_t probe = 0; probe < detail::kMaxTypes; ++probe) {
      auto& e = core->types[(key + probe) % detail::kMaxTypes];
      // (Y1) acquire: pairs with (Y2); a ready entry's name is visible.
      std::uint64_t w = e.word.load(std::memory_order_acquire);
      if (w == detail::TypeEntry::kFree) {
        const std::uint64_t claimed = (key << 2) | detail::TypeEntry::kClaimed;
        if (e.word.compare_exchange_strong(w, claimed, std::memory_order_acquire, std::memory_order_acquire)) {
          copy_cstr(e.name, sizeof e.name, name);
          // (Y2) release: publishes the name.
          e.word.store((key << 2) | detail::TypeEntry::kReady, std::memory_order_release);
          last_type.store(h, std::memory_order_relaxed);
          return;
        }
      }
      if ((w >> 2) != key) continue;
      // Ours, or being written by a racer with the same name (or a hash twin, which
      // keeps this name unshown: names are for people, the hash is what dispatches).
      last_type.store(h, std::memory_order_relaxed);
      return;
    }
  }

  // type_name for the take path: the calling thread remembers the last name it looked up
  // for this Client. A ready type entry never changes (types are never unregistered), so
  // the view stays valid while the segment is mapped, which outlives the Client; the
  // Client's id (never reused) keys the memory, not the Impl's address.
  std::string_view type_name_cached(std::uint64_t h) const noexcept {
    struct Last {
      std::uint64_t client = 0, hash = 0;
      std::string_view name;
    };
    thread_local Last last;
    const std::uint64_t me = client_id;
    if (last.client == me && last.hash == h) return last.name;
    const std::string_view n = type_name(h);
    if (!n.empty()) last = {me, h, n};
    return n;
  }

  std::string_view type_name(std::uint64_t h) const noexcept { return core->type_name(h); }

  // ---- delayed index -------------------------------------------------------------

  void mark_delayed(std::uint32_t idx, std::int64_t not_before) noexcept {
    // seq_cst with the state CAS before it and the re-check in promote_due: a promoter
    // that clears a stale bit and then reads the state either sees `delayed` or its
    // clear is ordered before this set (see docs/ring-protocol.md, "delayed index").
    core->delayed_bits[idx / 64].fetch_or(std::uint64_t{1} << (idx % 64), std::memory_order_seq_cst);
    auto& due = core->header->delayed_next_due_ns;
    std::uint64_t cur = due.load(std::memory_order_relaxed);
    const auto nb = static_cast<std::uint64_t>(not_before);
    while ((cur == 0 || nb < cur) && !due.compare_exchange_weak(cur, nb, std::memory_order_seq_cst)) {
    }
  }

  // After a delayed task was added: if it is now the earliest, a sleeping consumer of
  // its queue is woken to shorten its sleep to that time (only when one sleeps).
  // Housekeepers asleep in wait_for_due are woken too, so a due time comes on time
  // while every worker of every consumer is busy.
  void notify_due(std::uint32_t idx, std::int64_t not_before) noexcept {
    auto* h = core->header;
    if (h->delayed_next_due_ns.load(std::memory_order_relaxed) != static_cast<std::uint64_t>(not_before)) return;
    notify(core->hot(idx)->queue);
    // (D1) seq_cst: after the due time's seq_cst merge (mark_delayed); pairs with (D2)
    // in wait_for_due: either the sleeper sees the new due time or we see it waiting.
    if (h->due_waiters.load(std::memory_order_seq_cst) != 0) wake_housekeepers();
  }
  void wake_housekeepers() noexcept {
    core->header->due_seq.fetch_add(1, std::memory_order_seq_cst);
    detail::futex_wake(core->header->due_seq, INT32_MAX);
  }

  // Move record idx (word, owned by us) to delayed until `not_before`.
  Errc delay_record(std::uint32_t idx, std::uint64_t& word, std::int64_t not_before) noexcept {
    store_not_before(core->hot(idx), not_before);
    const std::uint64_t next = next_word(word, TaskState::delayed, token);
    // (S2) seq_cst: releases the body; ordered before the bit set (see mark_delayed).
    if (!core->ctrl[idx].state.compare_exchange_strong(word, next, std::memory_order_seq_cst)) return Errc::fenced;
    word = next;
    SHMSCHED_FAULT_POINT(delayed_after_state);
    mark_delayed(idx, not_before);
    notify_due(idx, not_before);
    return Errc::ok;
  }

  // Queue a record we own (running/reserved) into its ring; if the ring is full, it
  // waits as delayed and is retried by promote_due (never dropped, never overwritten).
  Errc requeue_record(std::uint32_t idx, std::uint64_t word) noexcept {
    auto* b = core->hot(idx);
    if (const char* defect = record_defect(idx)) return dead_letter_record(idx, word, defect);
    const QueueId q = b->queue;
    const PushStatus st = push_record(idx, word, core->ring_id(q, b->level), TaskState::queued);
    if (st == PushStatus::ok) {
      notify(q);
      return Errc::ok;
    }
    if (st == PushStatus::aborted) return Errc::fenced;
    return delay_record(idx, word, monotonic_ns() + 10'000'000);
  }

  // The one check of a record's fields that are used as an index, a length or a count:
  // null when they are in range, else the reason the record is quarantined (dead-
  // lettered, never run, never used to index anything). A damaged segment must not
  // take down the process that reads it.
  const char* record_defect(std::uint32_t idx) const noexcept {
    const auto* b = core->hot(idx);
    if (b->queue >= core->layout.max_queues ||
        detail::named_state(core->queues[b->queue].word.load(std::memory_order_relaxed)) != detail::QueueEntry::kReady)
      return "corrupt record: no such queue";
    if (b->level >= core->levels) return "corrupt record: priority level out of range";
    if (b->payload_len > core->layout.payload_bytes) return "corrupt record: payload length out of range";
    for (int k = 0; k < 2; ++k)
      if (b->need_count[k] != 0 &&
          (b->need_sem[k] >= core->layout.max_semaphores || b->need_count[k] > kMaxSemaphoreCapacity))
        return "corrupt record: need out of range";
    return nullptr;
  }

  Errc dead_letter_record(std::uint32_t idx, std::uint64_t word, std::string_view reason) noexcept {
    copy_cstr(core->cold(idx)->last_error, sizeof(detail::TaskCold::last_error), reason);
    core->hot(idx)->flags |= detail::kHasError;
    const std::uint64_t next = next_word(word, TaskState::dead, token);
    // (S3) acq_rel: releases last_error to whoever lists dead letters.
    if (!core->ctrl[idx].state.compare_exchange_strong(word, next, std::memory_order_acq_rel)) return Errc::fenced;
    return Errc::ok;
  }

  // ---- recovery ------------------------------------------------------------------

  // Finish or undo everything the (dead, or departing) owner `dead` left in records.
  void recover_records(DeadSlot dead, ReapReport& rep) noexcept {
    for (std::uint32_t idx = 0, end = core->scan_end(); idx < end; ++idx) {
      auto& c = core->ctrl[idx];
      std::uint64_t s = c.state.load(std::memory_order_acquire);
      if (s == 0 || !dead.matches(owner_of(s))) continue;
      switch (state_of(s)) {
        case TaskState::reserved:  // never accepted: give the record back
          if (free_record(idx, s) == Errc::ok) ++rep.freed;
          break;
        case TaskState::free:  // drop the dead owner's name
          c.state.compare_exchange_strong(s, next_word(s, TaskState::free, 0), std::memory_order_acq_rel);
          break;
        case TaskState::queued:
        case TaskState::parked: {
          const std::uint64_t wh = c.where.load(std::memory_order_relaxed);
          const std::uint16_t rid = detail::where_ring(wh);
          if (core->valid_ring(rid) && core->ring(rid).holds(detail::where_pos(wh), idx)) {
            // Published: drop the dead owner's name from it (a consumer racing us just
            // wins; its CAS reloads).
            c.state.compare_exchange_strong(s, next_word(s, state_of(s), 0), std::memory_order_acq_rel);
            break;
          }
          // Accepted but never published (died between S1 and R3): publish it.
          const std::uint64_t next = next_word(s, TaskState::running, token);
          if (c.state.compare_exchange_strong(s, next, std::memory_order_acq_rel) &&
              requeue_record(idx, next) == Errc::ok)
            ++rep.republished;
          break;
        }
        case TaskState::running: {
          const std::uint64_t next = next_word(s, TaskState::running, token);
          if (!c.state.compare_exchange_strong(s, next, std::memory_order_acq_rel)) break;
          auto* b = core->hot(idx);
          if (const char* defect = record_defect(idx)) {
            if (dead_letter_record(idx, next, defect) == Errc::ok) ++rep.dead_lettered;
          } else if (b->attempts >= b->max_attempts) {
            if (dead_letter_record(idx, next, "consumer died while running it") == Errc::ok) {
              ++rep.dead_lettered;
              bump(counters(b->queue, b->level).dead);
            }
          } else if (requeue_record(idx, next) == Errc::ok) {
            ++rep.requeued;
          }
          break;
        }
        case TaskState::delayed:
          mark_delayed(idx, load_not_before(core->hot(idx)));
          break;
        case TaskState::virgin:  // owns nothing
        case TaskState::dead:    // owned by nobody in particular: stays a dead letter
          break;
      }
      SHMSCHED_FAULT_POINT(reap_mid_records);
    }
  }

  // ---- semaphores (semaphore.cpp) ---------------------------------------------------
  /// The entry of a ready semaphore, or null. Inline: every grant and release starts here.
  detail::SemaphoreEntry* sem_entry(std::uint32_t sem) const noexcept {
    if (sem >= core->layout.max_semaphores) return nullptr;
    auto* e = &core->semaphores[sem];
    // acquire: pairs with the release that made the entry ready (name and capacity set).
    return detail::named_state(e->word.load(std::memory_order_acquire)) == detail::SemaphoreEntry::kReady ? e : nullptr;
  }
  bool sem_try_acquire(std::uint32_t sem, std::uint32_t n, std::uint64_t holder) noexcept {
    auto* e = sem_entry(sem);
    return e != nullptr && sem_try_acquire(e, n, holder);
  }
  bool sem_try_acquire(detail::SemaphoreEntry* e, std::uint32_t n, std::uint64_t holder) noexcept;
  std::uint32_t sem_release(std::uint32_t sem, std::uint32_t n, std::uint64_t holder) noexcept {
    auto* e = sem_entry(sem);
    return e != nullptr ? sem_release(e, n, holder) : 0;
  }
  std::uint32_t sem_release(detail::SemaphoreEntry* e, std::uint32_t n, std::uint64_t holder) noexcept;
  void sem_after_release(std::uint32_t sem) noexcept;
  /// After permits of `sem` (entry `e`) were freed: wake sleeping acquirers and move
  /// parked tasks to their queues, each only when someone is there (two loads otherwise).
  void sem_freed(detail::SemaphoreEntry* e, std::uint32_t sem) noexcept;

  std::uint64_t client_id = 0;  // process-unique, never reused; set at attach
  std::uint32_t sweep_ledgers(DeadSlot dead) noexcept;
  /// Whether a ledger holder still holds: judged by liveness, or with `dead` given, by
  /// not being one of its tokens.
  bool holder_valid(std::uint64_t holder, const DeadSlot* dead) const noexcept;
  bool pop_parked(detail::SemaphoreEntry* e, std::uint32_t sem, std::uint32_t& v, std::uint64_t& w) noexcept;
  std::size_t unpark_to_queues(std::uint32_t sem, std::size_t reserved = 0, bool after_park = false) noexcept;
  std::uint32_t parked_need(std::uint32_t v, std::uint32_t sem) const noexcept;
  bool repark(std::uint32_t v, std::uint64_t w, std::uint32_t sem) noexcept;

  bool slot_process_alive(const detail::ParticipantSlot& p, std::uint64_t w) const noexcept {
    const auto pid = static_cast<std::int32_t>(p.pid.load(std::memory_order_relaxed));
    const std::uint64_t start = p.start_time.load(std::memory_order_relaxed);
    if (detail::pword_state(w) == detail::ParticipantSlot::kRegistering) {
      const auto rpid = static_cast<std::int32_t>(detail::pword_aux(w));
      if (start == 0 || pid != rpid) return ProcessIdentity::of(rpid).start_time != 0;
    }
    return ProcessIdentity{pid, start}.alive();
  }

  // The participant holding `token` is alive and active with that token.
  bool token_alive(std::uint16_t tok) const noexcept {
    const std::uint32_t i = detail::token_index(tok);
    if (i == 0 || i > core->layout.max_participants) return false;
    const auto& p = core->participants[i - 1];
    const std::uint64_t w = p.word.load(std::memory_order_acquire);
    if (detail::pword_epoch(w) != detail::token_epoch(tok)) return false;
    if (detail::pword_state(w) != detail::ParticipantSlot::kActive &&
        detail::pword_state(w) != detail::ParticipantSlot::kReaping)
      return false;
    return slot_process_alive(p, w);
  }

  ReapReport reap_dead() noexcept {
    ReapReport rep;
    for (std::uint32_t i = 0; i < core->layout.max_participants; ++i) {
      if (i == slot) continue;
      auto& p = core->participants[i];
      std::uint64_t w = p.word.load(std::memory_order_acquire);
      const std::uint64_t st = detail::pword_state(w);
      if (st == detail::ParticipantSlot::kFree) continue;
      if (st == detail::ParticipantSlot::kReaping) {
        // Someone reaps it; take over only if that reaper died too.
        if (token_alive(static_cast<std::uint16_t>(detail::pword_aux(w)))) continue;
      } else if (slot_process_alive(p, w)) {
        continue;
      }
      const std::uint32_t epoch = detail::pword_epoch(w);
      // (P3) acq_rel: we own the slot's recovery now.
      if (!p.word.compare_exchange_strong(w, detail::pword(detail::ParticipantSlot::kReaping, epoch, token),
                                          std::memory_order_acq_rel))
        continue;
      SHMSCHED_FAULT_POINT(reap_after_claim);
      clear_sleep_bits(i);
      // Permits first: once a task is requeued another consumer may take it, and its
      // new run must not find the dead run's permit still granted.
      rep.permits_returned += sweep_ledgers(DeadSlot{i + 1, 0});
      recover_records(DeadSlot{i + 1, 0}, rep);
      me->reaped.fetch_add(1, std::memory_order_relaxed);
      // (P4) release: the slot is free again with epoch + 1, which fences the old token.
      p.word.store(detail::pword(detail::ParticipantSlot::kFree, epoch + 1, 0), std::memory_order_release);
      ++rep.participants;
    }
    return rep;
  }

  void deregister() noexcept {
    if (!attached) return;
    // Records held ahead go back first, in the order claimed and queued: the sweep
    // below would requeue them in index order, or dead-letter one whose attempts
    // were used up by earlier runs although this process never ran it.
    if (ahead != nullptr)
      for (std::uint32_t q = 0; q < core->layout.max_queues; ++q)
        if (ahead[q].held() != 0) give_back_ahead(static_cast<QueueId>(q), true);
    ReapReport rep;
    sweep_ledgers(DeadSlot{slot + 1, 0});
    recover_records(DeadSlot{slot + 1, 0}, rep);
    clear_sleep_bits(slot);
    SHMSCHED_FAULT_POINT(participant_deregister);
    me->activity.store(static_cast<std::uint32_t>(Activity::stopping), std::memory_order_relaxed);
    std::uint64_t w = detail::pword(detail::ParticipantSlot::kActive, epoch,
                                    static_cast<std::uint32_t>(me->pid.load(std::memory_order_relaxed)));
    // (P4') release: as (P4); fails only if we were reaped meanwhile.
    me->word.compare_exchange_strong(w, detail::pword(detail::ParticipantSlot::kFree, epoch + 1, 0),
                                     std::memory_order_release);
    attached = false;
  }

  // ---- enqueue -------------------------------------------------------------------

  // The ready queue `ref` names, in `q`.
  Errc resolve_queue(const QueueRef& ref, QueueId& q) const noexcept {
    if (ref.is_id()) {
      q = ref.id();
      // relaxed: readiness only; nothing written with the entry is read here.
      const bool ready =
          q < core->layout.max_queues &&
          detail::named_state(core->queues[q].word.load(std::memory_order_relaxed)) == detail::QueueEntry::kReady;
      return ready ? Errc::ok : Errc::unknown_queue;
    }
    if (ref.is_name()) {
      const std::int64_t i = detail::find_named(core->queues, core->layout.max_queues, ref.name(), ref.hash());
      q = static_cast<QueueId>(i);
      return i >= 0 ? Errc::ok : Errc::unknown_queue;
    }
    return ref.is_set() ? Errc::unknown_queue : Errc::queue_not_set;
  }

  // Checks a task and resolves its queue into `q`. `known`: the caller has just resolved
  // this same QueueRef for another task, to *known (a queue, once ready, stays ready).
  Errc check_spec(std::string_view type, std::span<const std::byte> payload, const TaskOptions& o, QueueId& q,
                  const QueueId* known = nullptr) const noexcept {
    if (!attached) return Errc::not_attached;
    if (type.empty() || type.size() > kMaxTypeName) return Errc::invalid_name;
    if (payload.size() > core->layout.payload_bytes) return Errc::payload_too_large;
    if (known != nullptr) {
      q = *known;
    } else if (Errc e = resolve_queue(o.queue, q); e != Errc::ok) {
      return e;
    }
    if (o.priority >= core->levels || o.max_attempts == 0) return Errc::invalid_argument;
    Need needs[2] = {o.needs[0], o.needs[1]};
    merge_needs(needs);  // a semaphore named twice needs the sum
    for (const Need& n : needs) {
      if (n.count == 0) continue;
      const detail::SemaphoreEntry* e = sem_entry(n.sem);
      if (e == nullptr) return Errc::unknown_semaphore;
      if (n.count > (e->permits.load(std::memory_order_relaxed) >> detail::SemaphoreEntry::kSlots))
        return Errc::need_exceeds_capacity;
    }
    return Errc::ok;
  }

  // `th` is type_hash(type).
  Errc enqueue(std::string_view type, std::uint64_t th, std::span<const std::byte> payload, const TaskOptions& o,
               TaskId* id) noexcept {
    return enqueue_one(type, th, payload, o, id, coarse_now_ns(), nullptr);
  }

  // What a batch owes once it is published: counter bumps per (queue, level) and a
  // look at each queue's sleepers. A look after the last publication covers every
  // earlier one (each publishing CAS is seq_cst and precedes it), so a batch wakes as
  // surely as single calls do, with one look per queue instead of one per task.
  struct BatchDebts {
    static constexpr std::size_t kMax = 16;  // more distinct pairs settle early, still exactly
    struct Debt {
      QueueId queue;
      std::uint8_t level;
      std::uint32_t count;
    };
    Debt debts[kMax];
    std::size_t n = 0;
  };
  void owe(BatchDebts& b, QueueId q, std::uint8_t level, std::uint32_t count = 1) noexcept {
    if (b.n != 0 && b.debts[b.n - 1].queue == q && b.debts[b.n - 1].level == level) {  // a run: the usual case
      b.debts[b.n - 1].count += count;
      return;
    }
    for (std::size_t i = 0; i < b.n; ++i) {
      if (b.debts[i].queue == q && b.debts[i].level == level) {
        b.debts[i].count += count;
        return;
      }
    }
    if (b.n == BatchDebts::kMax) settle(b);
    b.debts[b.n++] = {q, level, count};
  }
  void settle(BatchDebts& b) noexcept {
    for (std::size_t i = 0; i < b.n; ++i) {
      bump(counters(b.debts[i].queue, b.debts[i].level).enqueued, b.debts[i].count);
      bool seen = false;  // one look per queue
      for (std::size_t j = 0; j < i; ++j) seen |= b.debts[j].queue == b.debts[i].queue;
      if (!seen) notify(b.debts[i].queue);
    }
    b.n = 0;
  }

  // Writes the body of record idx (reserved by us, state word `word`) for a task of
  // type hash `th`; returns its id.
  TaskId fill_record(std::uint32_t idx, std::uint64_t word, std::uint64_t th, std::span<const std::byte> payload,
                     const TaskOptions& o, QueueId q, std::int64_t now) noexcept {
    auto* b = core->hot(idx);
    const TaskId tid = core->make_id(detail::version_of(word), idx);
    std::atomic_ref<std::uint64_t>(b->id).store(tid, std::memory_order_relaxed);  // ledger checks read it
    b->type_hash = th;
    std::atomic_ref<std::int64_t>(b->enqueued_ns).store(now, std::memory_order_relaxed);
    store_not_before(b, o.not_before_ns);
    b->expires_ns = o.expires_ns;
    b->payload_len = static_cast<std::uint32_t>(payload.size());
    std::atomic_ref<std::uint16_t>(b->queue).store(q, std::memory_order_relaxed);  // inspect reads it
    b->level = o.priority;
    b->attempts = 0;
    b->max_attempts = o.max_attempts;
    b->retry_delay_ms = static_cast<std::uint32_t>(o.retry.delay.count());
    Need needs[2] = {o.needs[0], o.needs[1]};
    merge_needs(needs);
    for (int k = 0; k < 2; ++k) {
      b->need_sem[k] = needs[k].count != 0 ? needs[k].sem : 0;
      b->need_count[k] = needs[k].count;
    }
    std::uint8_t flags = 0;
    const RetryPolicy defaults{};
    if (o.retry.backoff_x100 != defaults.backoff_x100 || o.retry.max_delay != defaults.max_delay ||
        o.retry.jitter_pct != defaults.jitter_pct || o.group_id != 0) {
      auto* cold = core->cold(idx);
      cold->group_id = o.group_id;
      cold->retry_max_delay_ms = static_cast<std::uint32_t>(o.retry.max_delay.count());
      cold->retry_backoff_x100 = o.retry.backoff_x100;
      cold->retry_jitter_pct = o.retry.jitter_pct;
      flags = detail::kHasRetryPolicy | (o.group_id != 0 ? detail::kHasGroup : 0);
    }
    b->flags = flags;
    if (!payload.empty()) std::memcpy(core->payload(idx), payload.data(), payload.size());
    return tid;
  }

  // One task; `now` is the coarse enqueue time (shared by a batch). With `batch`, the
  // counter bump and the wake-up look are left to the batch (settle).
  [[gnu::always_inline]] Errc enqueue_one(std::string_view type, std::uint64_t th, std::span<const std::byte> payload,
                                          const TaskOptions& o, TaskId* id, std::int64_t now,
                                          BatchDebts* batch) noexcept {
    QueueId q = 0;
    if (Errc e = check_spec(type, payload, o, q); e != Errc::ok) return e;
    std::uint32_t idx = 0;
    std::uint64_t word = 0;
    if (Errc e = alloc(idx, word); e != Errc::ok) return e;
    register_type(th, type);
    const TaskId tid = fill_record(idx, word, th, payload, o, q, now);
    SHMSCHED_FAULT_POINT(enqueue_before_queued);
    Errc result = Errc::ok;
    if (o.not_before_ns != 0 && o.not_before_ns > monotonic_ns()) {
      result = delay_record(idx, word, o.not_before_ns);
    } else {
      const PushStatus st = push_record(idx, word, core->ring_id(q, o.priority), TaskState::queued);
      if (st == PushStatus::aborted) return Errc::fenced;
      if (st == PushStatus::full) {
        (void)free_record(idx, word);  // not accepted: give the record back
        return Errc::ring_full;
      }
      if (batch != nullptr) {
        owe(*batch, q, o.priority);
        if (id != nullptr) *id = tid;
        return Errc::ok;
      }
      notify(q);
    }
    if (result != Errc::ok) return result;
    bump(counters(q, o.priority).enqueued);
    if (id != nullptr) *id = tid;
    return Errc::ok;
  }

  // Enqueues tasks from tasks[0] on as runs: records of one (queue, level) reserved side
  // by side and published as one ring entry each (each record still moves by its own
  // CAS). Returns how many tasks from tasks[0] on were accepted, with `error` for the
  // first that was not (ok when the stretch simply ended at a task to go one by one).
  // tasks[0] must be valid and runnable now.
  //
  // The stretch is the tasks from tasks[0] on that are valid and runnable now, at most
  // kStretch of them over at most kGroups (queue, level) pairs. When every queue ring
  // has a slot per record (ring_capacity >= task_capacity, the default), the stretch's
  // tasks are grouped by (queue, level), so a batch of mixed priorities still makes
  // long runs. That is safe because such a ring is never full (docs/ring-protocol.md,
  // "Runs": the entries between the head and a pusher each hold a queued record of
  // their own, and the pusher holds one more). Runs are then published
  // group by group (FIFO per level holds: a group keeps its tasks' order), and only a
  // full table can refuse tasks -- before anything is published, so exactly a suffix
  // is refused, as single calls would. With smaller rings the runs are only of
  // consecutive tasks and are published in task order, so a full ring refuses exactly
  // a suffix too.
  static constexpr std::size_t kStretch = 256;
  static constexpr std::size_t kGroups = 16;

  // Whether task t may follow `prev` (checked already, its queue resolved to prev_q) in
  // a stretch; t's queue in `q`. When it shares prev's type, its queue and having no
  // needs (the usual batch), what is left to check is a few compares; anything else
  // gets the full check.
  Errc check_next(const TaskSpec& t, const TaskSpec& prev, QueueId prev_q, QueueId& q) const noexcept {
    const TaskOptions& o = t.options;
    const bool same_queue = o.queue == prev.options.queue;
    if (same_queue && t.type.data() == prev.type.data() && t.type.size() == prev.type.size() &&
        (o.needs[0].count | o.needs[1].count) == 0 && t.payload.size() <= core->layout.payload_bytes &&
        o.priority < core->levels && o.max_attempts != 0) {
      q = prev_q;
      return Errc::ok;
    }
    return check_spec(t.type, t.payload, o, q, same_queue ? &prev_q : nullptr);
  }

  // `q0` is tasks[0]'s queue, resolved by the caller's check.
  std::size_t enqueue_runs(std::span<const TaskSpec> tasks, std::span<TaskId> ids, QueueId q0, std::int64_t now,
                           BatchDebts& debts, Errc& error) noexcept {
    constexpr std::uint32_t kMaxRun = IndexRing<>::kMaxRun;
    const bool grouped = core->ring_capacity >= core->capacity;
    error = Errc::ok;
    // The stretch, and each task's group: tasks of one group in task order in `order`.
    struct Group {
      std::uint16_t rid, count, start;
      QueueId queue;
    };
    Group groups[kGroups];
    std::uint8_t group_of[kStretch];
    // Which group a ring's tasks went to, by the ring id's low bits (checked: ids that
    // share them fall back to a scan).
    std::uint8_t group_by_rid[kGroups];
    std::fill(group_by_rid, group_by_rid + kGroups, std::uint8_t{kGroups});
    std::size_t ngroups = 0, len = 0;
    const std::size_t limit = std::min(tasks.size(), kStretch);
    QueueId q = q0;
    for (; len < limit; ++len) {
      const TaskSpec& t = tasks[len];
      const TaskOptions& o = t.options;
      if (len != 0) {
        if (o.not_before_ns != 0) break;  // goes one by one
        error = check_next(t, tasks[len - 1], q, q);
        if (error != Errc::ok) break;
      }
      const std::uint16_t rid = core->ring_id(q, o.priority);
      std::size_t g = ngroups;
      if (len != 0 && groups[group_of[len - 1]].rid == rid) {
        g = group_of[len - 1];
      } else if (grouped) {
        const std::size_t hinted = group_by_rid[rid % kGroups];
        if (hinted < ngroups && groups[hinted].rid == rid) {
          g = hinted;
        } else {
          for (std::size_t k = 0; k < ngroups; ++k)
            if (groups[k].rid == rid) {
              g = k;
              break;
            }
        }
      }
      if (g == ngroups) {
        if (ngroups == kGroups) break;  // the next stretch takes it
        groups[ngroups++] = Group{rid, 0, 0, q};
        group_by_rid[rid % kGroups] = static_cast<std::uint8_t>(g);
      }
      ++groups[g].count;
      group_of[len] = static_cast<std::uint8_t>(g);
    }
    std::uint16_t order[kStretch];
    for (std::uint16_t g = 0, at = 0; g < ngroups; ++g) {
      groups[g].start = at;
      at = static_cast<std::uint16_t>(at + groups[g].count);
      groups[g].count = 0;
    }
    for (std::size_t i = 0; i < len; ++i) {
      Group& g = groups[group_of[i]];
      order[g.start + g.count++] = static_cast<std::uint16_t>(i);
    }
    // Reserve group by group, each run as far as the records after its first are free;
    // a run starts at the record after the previous run when that one is free (the
    // usual case: the table is freed roughly in the order it is filled), else where the
    // sweep finds one. A full table cuts the stretch at the first task left without a
    // record. Places, not tasks, index the records' state words: order[j]'s record has
    // its word in word_at[j], and a run's words lie side by side.
    struct Run {
      std::uint32_t first;  // first record
      std::uint16_t at, n;  // its tasks: order[at .. at + n)
    };
    Run runs[kStretch];
    std::uint64_t word_at[kStretch];
    std::size_t nruns = 0, cut = len;
    const std::uint32_t capacity = core->capacity;
    std::uint32_t next = capacity;  // the record after the last run
    for (std::size_t g = 0; g < ngroups; ++g) {
      const std::uint16_t end = static_cast<std::uint16_t>(groups[g].start + groups[g].count);
      for (std::uint16_t j = groups[g].start; j < end;) {
        if (order[j] >= cut) break;  // so are this group's later tasks
        std::uint32_t first = next;
        if (first >= capacity || !alloc_at(first, word_at[j])) {
          if (Errc e = alloc(first, word_at[j]); e != Errc::ok) {
            cut = order[j];
            error = e;
            break;
          }
        }
        const std::uint32_t room =
            std::min<std::uint32_t>({static_cast<std::uint32_t>(end - j), kMaxRun, capacity - first});
        note_used(first + room - 1);  // once for the whole run (the mark may end up a little high)
        std::uint32_t n = 1;
        for (; n < room && order[j + n] < cut; ++n) {
          if ((first + n) % kCtrlPerLine == 0) detail::prefetch(&core->ctrl[(first + n + 2 * kAhead) & (capacity - 1)]);
          if (!reserve_at(first + n, word_at[j + n])) break;
        }
        runs[nruns++] = Run{first, j, static_cast<std::uint16_t>(n)};
        // The record after the run, unless the run stopped because that one is in use.
        next = n < room && order[j + n] < cut ? capacity : first + n;
        j = static_cast<std::uint16_t>(j + n);
      }
    }
    // Drop what lies past the cut: the tail of runs (a group's tasks are in order).
    std::size_t kept = 0, nspare = 0;
    std::uint32_t spare[kStretch];  // records given back here, for the second chance below
    for (std::size_t k = 0; k < nruns; ++k) {
      Run r = runs[k];
      for (; r.n != 0 && order[r.at + r.n - 1] >= cut; --r.n)
        if (free_record(r.first + r.n - 1, word_at[r.at + r.n - 1]) == Errc::ok) spare[nspare++] = r.first + r.n - 1;
      if (r.n != 0) runs[kept++] = r;
    }
    nruns = kept;
    if (cut < len && grouped) {
      // The records freed above went to tasks past the cut that an earlier group took
      // first: give them, in task order, to the tasks from the cut on, so the stretch is
      // cut where single calls would have found the table full.
      std::uint16_t place[kStretch];  // inverse of order
      for (std::uint16_t j = 0; j < len; ++j) place[order[j]] = j;
      std::size_t last_run[kGroups];
      std::fill(last_run, last_run + kGroups, SIZE_MAX);
      for (std::size_t k = 0; k < nruns; ++k) last_run[group_of[order[runs[k].at]]] = k;
      const std::size_t from = cut;
      cut = len;
      error = Errc::ok;
      for (std::size_t i = from; i < len; ++i) {
        const std::size_t g = group_of[i];
        const std::uint16_t j = place[i];
        // Onto the group's last run when the task follows its tasks and its next record is free.
        if (last_run[g] != SIZE_MAX) {
          Run& r = runs[last_run[g]];
          if (r.at + r.n == j && r.n < kMaxRun && r.first + r.n < capacity && alloc_at(r.first + r.n, word_at[j])) {
            ++r.n;
            continue;
          }
        }
        // The records just given back first (a sweep right after finding the table full
        // looks only a little way ahead), then the sweep.
        std::uint32_t x = 0;
        bool got = false;
        while (!got && nspare != 0) {
          x = spare[--nspare];
          got = alloc_at(x, word_at[j]);
        }
        if (!got) {
          if (Errc e = alloc(x, word_at[j]); e != Errc::ok) {
            cut = i;
            error = e;
            break;
          }
        }
        last_run[g] = nruns;
        runs[nruns++] = Run{x, j, 1};
      }
    }
    if (nruns != 0) cursor.store(runs[nruns - 1].first + runs[nruns - 1].n, std::memory_order_relaxed);
    // Fill the records run by run (each run's records lie side by side), then publish.
    std::uint64_t last_hash = 0;
    std::string_view last_type;
    // Each fill fetches the lines of the record kFillAhead on (the next run usually
    // starts right after this one; when it does not, a fetch is wasted, nothing else).
    if (nruns != 0)
      for (std::uint32_t d = 0; d < kFillAhead; ++d) prefetch_body((runs[0].first + d) & (capacity - 1));
    for (std::size_t k = 0; k < nruns; ++k) {
      const Run& r = runs[k];
      for (std::uint16_t m = 0; m < r.n; ++m) {
        prefetch_body((r.first + m + kFillAhead) & (capacity - 1));
        const std::uint16_t i = order[r.at + m];
        const TaskSpec& t = tasks[i];
        if (last_type.data() == nullptr || t.type.data() != last_type.data() || t.type.size() != last_type.size()) {
          last_hash = type_hash(t.type);
          last_type = t.type;
          register_type(last_hash, t.type);
        }
        ids[i] = fill_record(r.first + m, word_at[r.at + m], last_hash, t.payload, t.options, groups[group_of[i]].queue,
                             now);
      }
    }
    SHMSCHED_FAULT_POINT(enqueue_before_queued);
    // Every record queued first, then the runs published: once one is published, no
    // later step can find us fenced, so a fenced producer has published nothing. Until
    // its run is published a queued record names no ring, and recovery of a producer
    // that dies here publishes it (as for one record between S1 and R3). move_run
    // leaves each word as the record now is (queued, or reserved where it stopped).
    bool fenced = false;
    for (std::size_t k = 0; k < nruns && !fenced; ++k) {
      const Run& r = runs[k];
      fenced = move_run(r.first, r.n, &word_at[r.at], TaskState::queued, detail::make_where(detail::kNoRing, 0)) != r.n;
    }
    if (fenced) {
      // Our records were taken back: give back what is still ours (the exact words
      // make these CASes fail on records recovery already moved) and accept nothing.
      for (std::size_t k = 0; k < nruns; ++k)
        for (std::uint16_t m = 0; m < runs[k].n; ++m) (void)free_record(runs[k].first + m, word_at[runs[k].at + m]);
      error = Errc::fenced;
      return 0;
    }
    for (std::size_t k = 0; k < nruns; ++k) {
      const Run& r = runs[k];
      const Group& g = groups[group_of[order[r.at]]];
      const PushStatus st = push_run(r.first, r.n, &word_at[r.at], g.rid, TaskState::queued, true);
      if (st == PushStatus::ok) {
        owe(debts, g.queue, tasks[order[r.at]].options.priority, r.n);
        continue;
      }
      // A full ring: without grouping, this run and every later one hold exactly the
      // tasks from the first refused on; they are given back (queued in no ring, so no
      // taker can have them). With grouping only a corrupt segment gets here, and tasks
      // published earlier may lie past the count returned. Fenced (aborted): what is
      // still ours is given back the same way (the exact words fail on the rest).
      std::size_t first_refused = cut;
      for (std::size_t later = k; later < nruns; ++later)
        for (std::uint16_t m = 0; m < runs[later].n; ++m) {
          (void)free_record(runs[later].first + m, word_at[runs[later].at + m]);
          first_refused = std::min<std::size_t>(first_refused, order[runs[later].at + m]);
        }
      error = st == PushStatus::full ? Errc::ring_full : Errc::fenced;
      return first_refused;
    }
    return cut;
  }

  // ---- take ----------------------------------------------------------------------

  bool takeable_queue(QueueId q) const noexcept {
    return attached && q < core->layout.max_queues &&
           (core->queues[q].flags.load(std::memory_order_relaxed) & detail::QueueEntry::kPaused) == 0;
  }

  bool take(QueueId q, Taken& out, bool as_helper) noexcept {
    if (!takeable_queue(q)) {
      if (attached && q < core->layout.max_queues) give_back_ahead(q, false);  // paused: hold nothing back
      return false;
    }
    AheadUse use(ahead_of(q));
    Ahead* const a = use.get();
    std::uint32_t aged = 0;
    if (const std::uint32_t bound = core->queues[q].aging_ms.load(std::memory_order_relaxed); bound != 0)
      aged = aged_level(q, std::int64_t{bound} * 1000000);
    if (aged != 0) {
      // The records held of that level are its oldest.
      if (a != nullptr && a->held() != 0 && a->level == aged && hand_out(*a, q, out)) return took(out, as_helper);
      if (pop_level<true>(q, aged, std::span<Taken>(&out, 1)) != 0) return took(out, as_helper);
    }
    // Records held are handed out before the rings are looked at again: the looks at
    // the more urgent levels, lines the producers write, are what take-ahead saves. A
    // more urgent task that arrives meanwhile waits here behind at most limit - 1 held
    // tasks (any other consumer can take it at once).
    if (a != nullptr && a->held() != 0 && hand_out(*a, q, out)) return took(out, as_helper);
    const std::uint16_t base = core->ring_id(q, 0);
    for (std::uint32_t level = 0; level < core->levels; ++level) {
      const auto rid = static_cast<std::uint16_t>(base + level);
      // The cheap look first: most levels are empty most of the time. The same look
      // tells take_front what the head holds.
      const std::uint64_t pos = pop_cursor[rid].load(std::memory_order_relaxed);
      const std::uint64_t w = queue_rings[rid].look(pos);
      if (queue_rings[rid].empty_in(pos, w)) continue;
      if (a != nullptr) {  // holding none (hand_out above used them up)
        // Claim ahead; claim again when every record claimed had expired (dead-lettered).
        while (fill_ahead(*a, q, level) != 0)
          if (hand_out(*a, q, out)) return took(out, as_helper);
        continue;  // the level is empty now
      }
      if (take_front(q, level, rid, pos, w, out)) return took(out, as_helper);
      if (pop_level<true>(q, level, std::span<Taken>(&out, 1)) != 0) return took(out, as_helper);
    }
    return false;
  }

  // ---- take-ahead ----------------------------------------------------------------

  // A thread's use of one queue's take-ahead buffer for one take: get() is null when
  // take-ahead is off for the queue or another thread is using the buffer.
  class AheadUse {
   public:
    explicit AheadUse(Ahead* a) noexcept : a_(a) {}
    ~AheadUse() {
      // release: what we changed in the buffer is seen by the next thread to take it.
      if (a_ != nullptr) a_->busy.store(false, std::memory_order_release);
    }
    AheadUse(const AheadUse&) = delete;
    AheadUse& operator=(const AheadUse&) = delete;
    Ahead* get() const noexcept { return a_; }

   private:
    Ahead* a_;
  };
  // Queue q's buffer for the calling thread, or null (see AheadUse). The buffer is taken
  // when take-ahead is on or when it still holds records (it was just turned off by a
  // thread that could not take the buffer to give them back).
  Ahead* ahead_of(QueueId q) noexcept {
    const Ahead& a = ahead[q];
    // relaxed: a hint; fill_ahead reads the limit again under `busy`.
    if (a.limit.load(std::memory_order_relaxed) <= 1 && a.held() == 0) return nullptr;
    return take_buffer(q, false);
  }
  // Takes queue q's buffer for the calling thread (release it with an AheadUse); when
  // another thread has it, waits for it with `wait` (not a hot path: a take holds it
  // for a few microseconds), else returns null.
  Ahead* take_buffer(QueueId q, bool wait) noexcept {
    Ahead& a = ahead[q];
    // acquire: pairs with AheadUse's release; the buffer as the last user left it.
    while (a.busy.exchange(true, std::memory_order_acquire)) {
      if (!wait) return nullptr;
      std::this_thread::yield();
    }
    return &a;
  }

  // Claims up to the limit's worth of records at the head of `level` into a's buffer
  // (empty); returns how many. The same walk, claims and orderings as a batch take.
  std::uint32_t fill_ahead(Ahead& a, QueueId q, std::uint32_t level) noexcept {
    const std::uint16_t rid = core->ring_id(q, level);
    const std::uint32_t want = std::clamp<std::uint32_t>(a.limit.load(std::memory_order_relaxed), 1, kMaxTakeAhead);
    std::uint32_t n = 0;
    std::uint64_t w = 0;
    auto claim_fn = [&](std::uint64_t pos, std::uint32_t v) noexcept {
      return claim(rid, pos, v, TaskState::running, w);
    };
    auto take_fn = [&](std::uint32_t v) noexcept {
      a.index[n] = v;
      a.word[n] = w;
      ++n;
      SHMSCHED_FAULT_POINT(take_ahead_held);
    };
    // No look further ahead (prefetch_ahead): a take that claims ahead mostly runs
    // right behind the producers, and fetching the slots and records they are still
    // writing takes those lines from them. Each claim still fetches its own record's
    // lines first.
    auto ahead_fn = [](std::uint64_t, std::uint32_t, std::uint32_t) noexcept {};
    queue_rings[rid].try_pop_many(claim_fn, want, take_fn, &pop_cursor[rid], ahead_fn);
    a.level = level;
    a.next = 0;
    a.set_held(n);
    moved(a);
    // Workers of ours asleep would leave the held records to this thread alone: wake
    // them. Best effort (a relaxed load, no system call when none sleeps): a worker
    // that announces its sleep while we hold the buffer sleeps at most a tick, and
    // this thread hands the records out meanwhile.
    if (n > 1 && me->sleepers.load(std::memory_order_relaxed) != 0) ring(slot, static_cast<int>(n - 1));
    return n;
  }
  static void moved(Ahead& a) noexcept {
    // relaxed: written under `busy` only; read by janitor ticks as a hint.
    a.moves.store(a.moves.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // From janitor_tick: gives back what a queue's buffer has held since the last tick
  // without a fill or a hand-out (no take of the queue came, or every worker is busy
  // with a long task): those tasks are then there for other consumers.
  void age_ahead() noexcept {
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
  bool hand_out(Ahead& a, QueueId q, Taken& out) noexcept {
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
  void give_back_ahead(QueueId q, bool wait) noexcept {
    if (!wait && ahead[q].held() == 0) return;
    AheadUse use(take_buffer(q, wait));
    if (use.get() != nullptr) give_back_held(*use.get());
  }
  // The records a holds, back at the tail of their level (under `busy`).
  void give_back_held(Ahead& a) noexcept {
    for (; a.held() != 0; ++a.next, a.set_held(a.held() - 1)) (void)requeue_record(a.index[a.next], a.word[a.next]);
    moved(a);
  }

  // A single take of the entry at our cursor `pos` of ring `rid`, which held w
  // (IndexRing::pop_front): false when that is not the simple case, or when the task
  // taken had expired (dead-lettered, as pop_level does); the caller then goes on with
  // pop_level.
  bool take_front(QueueId q, std::uint32_t level, std::uint16_t rid, std::uint64_t pos, std::uint64_t w,
                  Taken& out) noexcept {
    std::uint64_t word = 0;
    bool counts = false;
    auto claim_fn = [&](std::uint64_t p, std::uint32_t v) noexcept {
      return claim(rid, p, v, TaskState::running, word);
    };
    auto take_fn = [&](std::uint32_t v) noexcept {
      SHMSCHED_FAULT_POINT(take_after_claim);
      fill_taken(v, word, out);
      counts = !expired_on_take(q, level, v, word);
    };
    auto ahead_fn = [&](std::uint64_t p, std::uint32_t, std::uint32_t) noexcept { prefetch_ahead(rid, p); };
    return queue_rings[rid].pop_front(pos, w, claim_fn, take_fn, pop_cursor[rid], ahead_fn) && counts;
  }

  // Whether record v, just taken with state word w from queue q's ring of `level`,
  // must not be handed out: damaged (record_defect, or not of the ring it was in:
  // quarantined) or expired while queued (dead-lettered on purpose, never run).
  bool expired_on_take(QueueId q, std::uint32_t level, std::uint32_t v, std::uint64_t w) noexcept {
    const auto* b = core->hot(v);
    if (const char* defect = record_defect(v); defect != nullptr || b->queue != q || b->level != level) [[unlikely]] {
      bump(counters(q, level).dead);
      (void)dead_letter_record(v, w, defect != nullptr ? defect : "corrupt record: not of the ring it was in");
      return true;
    }
    const std::int64_t expires = b->expires_ns;
    if (expires == 0 || monotonic_ns() <= expires) return false;
    bump(counters(q, level).dead);
    (void)dead_letter_record(v, w, "expired before it started");
    return true;
  }

  // The ring slot a take kAhead pops from now looks at, and the record of the entry
  // kAhead positions on: their lines arrive while this take's claim, reads and the
  // caller's handler run (the next takes then find them near).
  [[gnu::always_inline]] void prefetch_ahead(std::uint16_t rid, std::uint64_t pos) const noexcept {
    queue_rings[rid].prefetch(pos + 2 * kAhead);
    const std::uint32_t v = queue_rings[rid].value_at(pos + kAhead);
    if (v < core->capacity) {
      detail::prefetch(&core->ctrl[v]);
      prefetch_body(v);
    }
  }

  bool took(Taken& out, bool as_helper) noexcept {
    out.helped = as_helper;
    auto& c = counters(out.queue, out.level);
    bump(c.started);
    if (as_helper) bump(c.helped);
    return true;
  }

  // The most urgent level > 0 whose oldest task has waited longer than `bound_ns`, or
  // 0. Looks at most once a millisecond per process (between looks, strict priority).
  std::uint32_t aged_level(QueueId q, std::int64_t bound_ns) noexcept {
    const std::int64_t now = coarse_now_ns();
    std::int64_t last = last_aging_check.load(std::memory_order_relaxed);
    if (now - last < 1000000 || !last_aging_check.compare_exchange_strong(last, now, std::memory_order_relaxed))
      return 0;
    for (std::uint32_t level = 1; level < core->levels; ++level) {
      std::uint32_t v = 0;
      if (!core->ring(core->ring_id(q, level)).peek_head(v) || v >= core->capacity) continue;
      if (detail::sub_sat(now, load_enqueued(core->hot(v))) > bound_ns) return level;
    }
    return 0;
  }

  // Takes up to out.size() tasks, draining each level before looking at the next.
  std::size_t take_batch(QueueId q, std::span<Taken> out) noexcept {
    if (!takeable_queue(q)) {
      if (attached && q < core->layout.max_queues) give_back_ahead(q, false);  // as in take
      return 0;
    }
    AheadUse use(ahead_of(q));
    std::size_t n = 0;
    if (Ahead* const a = use.get(); a != nullptr) {  // records held first, as in take
      while (n < out.size() && hand_out(*a, q, out[n])) ++n;
      if (n != 0) bump(counters(q, a->level).started, n);
    }
    for (std::uint32_t level = 0; level < core->levels && n < out.size(); ++level) {
      const std::size_t got = pop_level<false>(q, level, out.subspan(n));
      if (got != 0) bump(counters(q, level).started, got);
      n += got;
    }
    return n;
  }

  // Starts fetching the lines of run members front .. end - 1 that a batch take is
  // about to claim (at most kMaxRunFetch of them, none past the table); returns the
  // member it stopped before.
  [[gnu::always_inline]] std::uint32_t prefetch_run(std::uint32_t front, std::uint32_t end) const noexcept {
    const std::uint32_t last = std::min<std::uint32_t>({end, front + kMaxRunFetch, core->capacity});
    for (std::uint32_t x = front; x < last; ++x) {
      if (x == front || x % kCtrlPerLine == 0) detail::prefetch(&core->ctrl[x]);
      prefetch_body(x);
    }
    return last;
  }

  // Takes up to out.size() tasks of one level in ring order (a run is taken from its
  // front, several of its tasks at once); returns how many. A task found expired is
  // dead-lettered on the way and not counted.
  // kOne: out has one element, known when compiled (single takes: the ring code then
  // folds away its bookkeeping for several).
  template <bool kOne>
  [[gnu::always_inline]] std::size_t pop_level(QueueId q, std::uint32_t level, std::span<Taken> out) noexcept {
    const std::uint16_t rid = core->ring_id(q, level);
    std::size_t n = 0;
    std::uint64_t w = 0;
    // The records ahead_fn started fetching: [fetched_from, fetched_to).
    std::uint32_t fetched_from = 0, fetched_to = 0;
    TypeNames names;
    auto claim_fn = [&](std::uint64_t pos, std::uint32_t v) noexcept {
      return claim(rid, pos, v, TaskState::running, w, kOne || v < fetched_from || v >= fetched_to);
    };
    auto take_fn = [&](std::uint32_t v) noexcept {
      SHMSCHED_FAULT_POINT(take_after_claim);
      fill_taken(v, w, out[n], names);
      if (!expired_on_take(q, level, v, w)) ++n;
    };
    // What prefetch_ahead fetches, and for a batch the members of the entry.
    auto ahead_fn = [&](std::uint64_t pos, std::uint32_t front, std::uint32_t end) noexcept {
      // The members of this entry (a run of a batch): their lines arrive together
      // instead of one claim's miss after another, and their claims fetch nothing more.
      if constexpr (!kOne) {
        fetched_from = front;
        fetched_to = prefetch_run(front, end);
        // And the next entry's members, so that they arrive while this entry's are
        // claimed (BM_backlog_shmsched_take_batch measures a batch take from a backlog).
        std::uint32_t after = 0;
        const std::uint32_t run = queue_rings[rid].run_at(pos + 1, after);
        prefetch_run(after, after + run);
      }
      prefetch_ahead(rid, pos);
    };
    for (;;) {
      const std::size_t want = kOne ? 1 - n : out.size() - n;
      if (want == 0) return n;
      if (queue_rings[rid].try_pop_many(claim_fn, want, take_fn, &pop_cursor[rid], ahead_fn) < want) return n;
    }
  }

  // The last type name a take looked up, for the tasks after it (a batch's are
  // usually of one type).
  struct TypeNames {
    std::uint64_t hash = 0;
    std::string_view name;
  };

  // Fills `out` for record v, which we own with state word w, and counts the attempt.
  // Inlined into every take path: it is most of a take's instructions, and a call
  // would add to each take.
  [[gnu::always_inline]] void fill_taken(std::uint32_t v, std::uint64_t w, Taken& out) noexcept {
    TypeNames names;
    fill_taken(v, w, out, names);
  }
  [[gnu::always_inline]] void fill_taken(std::uint32_t v, std::uint64_t w, Taken& out, TypeNames& names) noexcept {
    auto* b = core->hot(v);
    const std::uint16_t attempt = ++b->attempts;
    const std::uint64_t th = b->type_hash;
    if (th != names.hash || names.name.empty()) names = TypeNames{th, type_name_cached(th)};
    out.index = v;
    out.word = w;
    out.id = b->id;
    out.queue = b->queue;
    out.level = b->level;
    out.attempt = attempt;
    out.max_attempts = b->max_attempts;
    out.type = th;
    out.type_name = names.name;
    out.payload = std::span<const std::byte>(core->payload(v),
                                             std::min<std::uint32_t>(b->payload_len, core->layout.payload_bytes));
    out.enqueued_ns = load_enqueued(b);
    out.helped = false;
    for (int k = 0; k < 2; ++k) out.needs[k] = Need{b->need_sem[k], b->need_count[k]};
  }

  // Whether t could be ours: attached, and its index within the table.
  bool names_record(const Taken& t) const noexcept { return attached && t.index < core->capacity; }
  bool owns(const Taken& t) const noexcept {
    return names_record(t) && core->ctrl[t.index].state.load(std::memory_order_relaxed) == t.word;
  }

  std::size_t promote_due(std::int64_t now) noexcept {
    auto& due = core->header->delayed_next_due_ns;
    const std::uint64_t next_due = due.load(std::memory_order_acquire);
    if (next_due == 0 || static_cast<std::uint64_t>(now) < next_due) return 0;
    // Take the hint; whatever is not due yet is merged back with fetch-min below, and
    // producers merge theirs concurrently, so no due time is forgotten.
    due.store(0, std::memory_order_seq_cst);
    std::uint64_t pending = UINT64_MAX;
    std::size_t promoted = 0;
    const std::uint32_t words = (core->capacity + 63) / 64;
    for (std::uint32_t wi = 0; wi < words; ++wi) {
      std::uint64_t bits = core->delayed_bits[wi].load(std::memory_order_seq_cst);
      while (bits != 0) {
        const unsigned bi = static_cast<unsigned>(__builtin_ctzll(bits));
        bits &= bits - 1;
        const std::uint32_t idx = wi * 64 + bi;
        const std::uint64_t bit = std::uint64_t{1} << bi;
        auto& c = core->ctrl[idx];
        std::uint64_t s = c.state.load(std::memory_order_seq_cst);
        if (state_of(s) != TaskState::delayed) {
          // A leftover bit: clear it, then look again in case the record was delayed
          // anew in between (its producer's set may have come before our clear).
          core->delayed_bits[wi].fetch_and(~bit, std::memory_order_seq_cst);
          if (state_of(c.state.load(std::memory_order_seq_cst)) == TaskState::delayed) {
            core->delayed_bits[wi].fetch_or(bit, std::memory_order_seq_cst);
            pending = std::min<std::uint64_t>(pending, static_cast<std::uint64_t>(now));
          }
          continue;
        }
        const std::int64_t nb = load_not_before(core->hot(idx));
        if (nb > now) {
          pending = std::min<std::uint64_t>(pending, static_cast<std::uint64_t>(nb));
          continue;
        }
        const std::uint64_t mine = next_word(s, TaskState::running, token);
        // (S4) acq_rel: we hold the due record (a reaper requeues it if we die).
        if (!c.state.compare_exchange_strong(s, mine, std::memory_order_acq_rel)) continue;
        SHMSCHED_FAULT_POINT(promote_after_claim);
        core->delayed_bits[wi].fetch_and(~bit, std::memory_order_seq_cst);
        store_not_before(core->hot(idx), 0);
        if (requeue_record(idx, mine) == Errc::ok) ++promoted;
      }
    }
    if (pending != UINT64_MAX) {
      std::uint64_t cur = due.load(std::memory_order_relaxed);
      while ((cur == 0 || pending < cur) && !due.compare_exchange_weak(cur, pending, std::memory_order_seq_cst)) {
      }
    }
    return promoted;
  }
};

}  // namespace shmsched
