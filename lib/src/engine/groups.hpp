// Groups: the group table, the counted steps that keep a group's counts exact through
// crashes, a group's finish, and the tasks that wait for a group (gates). The API is
// lib/src/groups.cpp; docs/lifecycle.md ("Groups", "Waiting for a group") walks through
// the protocols. The steps:
//
//   (G1) a participant about to move a member's record in a way that changes a count
//        (accepted: added; finished: done, failed, cancelled; a dead letter requeued:
//        failed - 1) notes the step in its own participant entry: the record, the words
//        before and after the move, the counter and its value before and after;
//   (G2) it moves the record (one CAS);
//   (G3) it stores the counter's new value (its own line: only it writes it);
//   (G4) it clears the note.
//   Whoever recovers a dead participant first finishes its noted step (finish_step):
//   if the record moved (G2 happened) and the counter still has its old value, it
//   stores the new one. The counter is a plain store of a known value, so the repair is
//   idempotent and a step counts exactly once, whatever instruction the process died at.
//
//   (F1) finishing members decrement the group's `outstanding` hint after G3 (seq_cst);
//        the one that brings it to 0 (or below) checks the exact counts;
//   (F2) a sealed group whose exact counts are all finished, with no adder in flight, is
//        finished with one CAS sealed -> finished (exactly once), then its waiters are
//        woken and the tasks waiting for it are released (gates).
//   The janitor checks sealed groups by the exact counts once a second (tend_groups), so a
//   hint left off by a crash costs a second, never a group that does not finish.
//
//   (W1) a task that waits for a group sets its bit in waiting_bits, counts itself in
//        the group's `dependents` (seq_cst), and is accepted as waiting (CAS reserved ->
//        waiting); then it looks at the group's word (seq_cst) and releases itself if the
//        group finished meanwhile. A finisher CASes the group's word, then looks at
//        `dependents` (seq_cst) and releases every waiting task of the group it finds:
//        Dekker's pair, so one of them sees the other.
//   (W2) a release claims the waiting task with one CAS (waiting -> running, ours) and
//        queues it, or finishes it as cancelled when the group had failures (unless the
//        task runs anyway). A releaser killed after its claim leaves a running task that
//        never started: recovery settles it again by its gate (settle_gated).
#pragma once

#include "cancel.hpp"
#include "impl.hpp"

namespace shmsched {

namespace detail {
inline constexpr std::uint64_t kGroupStateMask = 0xF;
inline constexpr unsigned kGroupGenShift = 4;
inline constexpr unsigned kGroupIndexBits = 16;
constexpr std::uint64_t group_state(std::uint64_t w) noexcept {
  return w & kGroupStateMask;
}
constexpr std::uint64_t group_gen(std::uint64_t w) noexcept {
  return w >> kGroupGenShift;
}
constexpr std::uint64_t group_word(std::uint64_t gen, std::uint64_t state) noexcept {
  return (gen << kGroupGenShift) | state;
}
constexpr GroupId make_group_id(std::uint64_t gen, std::uint32_t index) noexcept {
  return (gen << kGroupIndexBits) | index;
}
constexpr std::uint32_t group_index_of(GroupId id) noexcept {
  return static_cast<std::uint32_t>(id & ((1u << kGroupIndexBits) - 1));
}
constexpr std::uint64_t group_gen_of(GroupId id) noexcept {
  return id >> kGroupIndexBits;
}
}  // namespace detail

// The entry of group `id` when it exists (created, not deleted), else null; its word in
// `word`. acquire: pairs with the creator's release that published name and base.
inline detail::GroupEntry* Client::Impl::group_entry(GroupId id, std::uint64_t* word) const noexcept {
  const std::uint32_t gi = detail::group_index_of(id);
  if (id == 0 || gi >= core->layout.max_groups) return nullptr;
  detail::GroupEntry& e = core->groups[gi];
  const std::uint64_t w = e.word.load(std::memory_order_acquire);
  const std::uint64_t st = detail::group_state(w);
  if (detail::group_gen(w) != detail::group_gen_of(id) || st < detail::GroupEntry::kOpen) return nullptr;
  if (word != nullptr) *word = w;
  return &e;
}

// The exact counts of group entry gi: the sums over participants less the base.
namespace detail {
inline std::array<std::uint64_t, 4> group_sums(const Core& core, std::uint32_t gi) noexcept {
  std::array<std::uint64_t, 4> s{};
  for (std::uint32_t p = 0; p < core.layout.max_participants; ++p) {
    if (core.participants[p].word.load(std::memory_order_relaxed) == 0) continue;  // never used: counted nothing
    const auto& c = core.group_counter(p, gi);
    // acquire: a counter read after a finisher's hint decrement sees what it counted.
    for (unsigned k = 0; k < 4; ++k) s[k] += c.n[k].load(std::memory_order_acquire);
  }
  const auto& e = core.groups[gi];
  for (unsigned k = 0; k < 4; ++k) s[k] -= e.base[k].load(std::memory_order_relaxed);
  return s;
}
}  // namespace detail

inline std::array<std::uint64_t, 4> Client::Impl::group_sums(std::uint32_t gi) const noexcept {
  return detail::group_sums(*core, gi);
}

// (G1..G4) Moves record idx, ours with word `from`, by `move` (its one CAS: `to` is the
// word it writes; it returns ok when it moved), counting `delta` in counter `field` of
// the record's group, if it has one that still exists.
template <class Move>
inline Errc Client::Impl::counted_move(std::uint32_t idx, std::uint64_t from, std::uint64_t to, unsigned field,
                                       std::uint64_t delta, Move&& move) noexcept {
  const auto* b = core->hot(idx);
  if ((b->flags & detail::kHasGroup) == 0) return move();
  const GroupId g = detail::peek_field(core->cold(idx)->group_id);
  if (group_entry(g) == nullptr) return move();  // deleted: nothing left to count in
  const std::uint32_t gi = detail::group_index_of(g);
  auto& ctr = core->group_counter(slot, gi).n[field];
  const std::uint64_t before = ctr.load(std::memory_order_relaxed);  // ours alone
  // (G1) relaxed fields, then the word with release: a recoverer that reads the word
  // (acquire) reads the fields that go with it.
  me->step_record.store(idx, std::memory_order_relaxed);
  me->step_counter.store(gi * 4 + field, std::memory_order_relaxed);
  me->step_before.store(before, std::memory_order_relaxed);
  me->step_after.store(before + delta, std::memory_order_relaxed);
  me->step_to.store(to, std::memory_order_relaxed);
  me->step_word.store(from, std::memory_order_release);
  SHMSCHED_FAULT_POINT(group_step_noted);
  const Errc e = move();  // (G2)
  if (e == Errc::ok) {
    SHMSCHED_FAULT_POINT(group_step_moved);
    ctr.store(before + delta, std::memory_order_release);  // (G3) release: read by group_sums (acquire)
  }
  me->step_word.store(0, std::memory_order_release);  // (G4)
  if (e == Errc::ok && field != detail::GroupCounters::kAdded && delta == 1) member_finished(gi, g);
  return e;
}

// Finishes the noted step of participant slot p (dead, or ourselves after a takeover):
// idempotent, so a recoverer that dies part-way leaves it for the next.
inline void Client::Impl::finish_step(std::uint32_t p) noexcept {
  auto& pe = core->participants[p];
  const std::uint64_t from = pe.step_word.load(std::memory_order_acquire);
  if (from == 0) return;
  const std::uint32_t idx = pe.step_record.load(std::memory_order_relaxed);
  const std::uint32_t ci = pe.step_counter.load(std::memory_order_relaxed);
  const std::uint64_t to = pe.step_to.load(std::memory_order_relaxed);
  if (idx < core->capacity && ci / 4 < core->layout.max_groups) {
    const std::uint64_t now = core->ctrl[idx].state.load(std::memory_order_acquire);
    // The move happened when the record holds the word it wrote, or -- when the record
    // was the stepper's own (reserved or running: nobody else moves it) -- any later
    // word. A dead letter is anyone's to move, so from one only the exact word tells.
    const bool own = state_of(from) == TaskState::reserved || state_of(from) == TaskState::running;
    const bool moved = now == to || (own && detail::version_of(now) >= detail::version_of(to));
    auto& ctr = core->group_counter(p, ci / 4).n[ci % 4];
    if (moved && ctr.load(std::memory_order_relaxed) == pe.step_before.load(std::memory_order_relaxed))
      ctr.store(pe.step_after.load(std::memory_order_relaxed), std::memory_order_release);
  }
  pe.step_word.store(0, std::memory_order_release);
}

// (F1) A member of group g (entry gi) finished: the one that brings the hint to zero
// checks the exact counts.
inline void Client::Impl::member_finished(std::uint32_t gi, GroupId g) noexcept {
  auto& e = core->groups[gi];
  // seq_cst: after our count (G3); pairs with the sealer's CAS and look (seal_group).
  if (e.outstanding.fetch_sub(1, std::memory_order_seq_cst) <= 1) try_finish_group(g);
}

// (F2) Finishes group g if it is sealed and every member has finished, with no adder in
// flight; true when this call finished it.
inline bool Client::Impl::try_finish_group(GroupId g) noexcept {
  std::uint64_t w = 0;
  detail::GroupEntry* e = group_entry(g, &w);
  if (e == nullptr || detail::group_state(w) != detail::GroupEntry::kSealed) return false;
  const std::uint32_t gi = detail::group_index_of(g);
  // An adder announces itself before it looks at the group (add_member): one that saw it
  // open may not have counted its member yet. seq_cst: the other half of that pair.
  // A dead adder's flag stays until its recoverer has finished its step.
  for (std::uint32_t p = 0; p < core->layout.max_participants; ++p)
    if (core->participants[p].adding_group.load(std::memory_order_seq_cst) == g + 1) return false;
  const auto s = group_sums(gi);
  if (s[0] != s[1] + s[2] + s[3]) return false;
  SHMSCHED_FAULT_POINT(group_before_finish);
  // acq_rel: exactly one finisher; the counts read above happen-before the release.
  if (!e->word.compare_exchange_strong(w, detail::group_word(detail::group_gen(w), detail::GroupEntry::kFinished),
                                       std::memory_order_seq_cst))
    return false;
  e->finished_ns.store(detail::coarse_now_ns(), std::memory_order_relaxed);
  e->outstanding.store(0, std::memory_order_relaxed);
  if (e->waiters.load(std::memory_order_seq_cst) != 0) detail::futex_wake_low(e->word, INT32_MAX);
  // seq_cst: (W1)'s finisher half, after the CAS above.
  if (e->dependents.load(std::memory_order_seq_cst) != 0) release_dependents(g);
  return true;
}

// The janitor's duty, once a second: finish sealed groups the hint missed (a member's
// finisher died between its count and its hint), delete finished groups past their
// time, and settle waiting tasks whose gate finished without releasing them.
inline void Client::Impl::tend_groups(std::int64_t now) noexcept {
  for (std::uint32_t gi = 0; gi < core->layout.max_groups; ++gi) {
    auto& e = core->groups[gi];
    std::uint64_t w = e.word.load(std::memory_order_acquire);
    const GroupId g = detail::make_group_id(detail::group_gen(w), gi);
    if (detail::group_state(w) == detail::GroupEntry::kSealed) {
      try_finish_group(g);
    } else if (detail::group_state(w) == detail::GroupEntry::kFinished) {
      const std::int64_t ttl = e.ttl_s.load(std::memory_order_relaxed);
      if (ttl != 0 && detail::sub_sat(now, e.finished_ns.load(std::memory_order_relaxed)) > ttl * 1'000'000'000)
        e.word.compare_exchange_strong(w, detail::group_word(detail::group_gen(w), detail::GroupEntry::kFree),
                                       std::memory_order_acq_rel);
    }
  }
  if (core->header->waiting_tasks.load(std::memory_order_relaxed) != 0) release_waiting(0);
}

// ---- gates ----------------------------------------------------------------------------

// What record idx's gate says now.
inline Client::Impl::GateOutcome Client::Impl::gate_of(std::uint32_t idx) const noexcept {
  const GroupId g = detail::peek_field(core->cold(idx)->gate);
  std::uint64_t w = 0;
  if (group_entry(g, &w) == nullptr) return {GateOutcome::failed_members, 0, 0, true};
  if (detail::group_state(w) != detail::GroupEntry::kFinished) return {GateOutcome::pending, 0, 0, false};
  const auto s = group_sums(detail::group_index_of(g));
  if (s[2] == 0 && s[3] == 0) return {GateOutcome::ok, 0, 0, false};
  return {GateOutcome::failed_members, s[2], s[3], false};
}

// (W2) Queues record idx (ours, running with word `mine`, never started) by its gate's
// outcome: queued, cancelled with the reason, or back to waiting while it is pending.
inline Errc Client::Impl::settle_gated(std::uint32_t idx, std::uint64_t mine) noexcept {
  auto* b = core->hot(idx);
  const GateOutcome out = gate_of(idx);
  if (out.outcome == GateOutcome::pending) {
    const std::uint64_t next = next_word(mine, TaskState::waiting, 0);
    core->waiting_bits[idx / 64].fetch_or(std::uint64_t{1} << (idx % 64), std::memory_order_seq_cst);
    // seq_cst: a finisher that CASes the group after our look scans and finds this.
    if (!core->ctrl[idx].state.compare_exchange_strong(mine, next, std::memory_order_seq_cst)) return Errc::fenced;
    // Look again after the CAS (W1): a group that finished in between left it to us.
    if (gate_of(idx).outcome != GateOutcome::pending) release_waiting(idx + 1);
    return Errc::ok;
  }
  core->header->waiting_tasks.fetch_sub(1, std::memory_order_relaxed);  // a hint
  if (out.outcome == GateOutcome::failed_members && (b->flags & detail::kRunAnyway) == 0) {
    char why[80];
    if (out.deleted) {
      std::snprintf(why, sizeof why, "the group it waited for was deleted");
    } else {
      std::snprintf(why, sizeof why, "its group finished with %llu failed and %llu cancelled",
                    static_cast<unsigned long long>(out.failed), static_cast<unsigned long long>(out.cancelled));
    }
    detail::store_error(core->cold(idx), why);
    detail::set_field(b->flags, static_cast<std::uint8_t>(b->flags | detail::kHasError));
    return finish_cancelled(idx, mine);
  }
  return requeue_record(idx, mine);
}

// Releases waiting tasks whose gate is not pending: only record `one - 1` when `one` is
// not 0, else every waiting record (of any gate). O(table / 64) plus the waiting ones.
inline std::size_t Client::Impl::release_waiting(std::uint32_t one) noexcept {
  std::size_t n = 0;
  const std::uint32_t words = (core->capacity + 63) / 64;
  const std::uint32_t first = one != 0 ? (one - 1) / 64 : 0, last = one != 0 ? first + 1 : words;
  for (std::uint32_t wi = first; wi < last; ++wi) {
    std::uint64_t bits = core->waiting_bits[wi].load(std::memory_order_seq_cst);
    if (one != 0) bits &= std::uint64_t{1} << ((one - 1) % 64);
    while (bits != 0) {
      const std::uint32_t idx = wi * 64 + static_cast<std::uint32_t>(std::countr_zero(bits));
      bits &= bits - 1;
      auto& c = core->ctrl[idx];
      std::uint64_t s = c.state.load(std::memory_order_seq_cst);
      if (state_of(s) != TaskState::waiting) {
        core->waiting_bits[wi].fetch_and(~(std::uint64_t{1} << (idx % 64)), std::memory_order_seq_cst);
        // A task accepted as waiting between our load and the clear set its bit first
        // and looks at its gate after its CAS: it settles itself.
        if (state_of(c.state.load(std::memory_order_seq_cst)) == TaskState::waiting)
          core->waiting_bits[wi].fetch_or(std::uint64_t{1} << (idx % 64), std::memory_order_seq_cst);
        continue;
      }
      if (gate_of(idx).outcome == GateOutcome::pending) continue;
      const std::uint64_t mine = next_word(s, TaskState::running, token);
      // acq_rel, as a take's claim: of a release, a cancel and a move exactly one wins.
      if (!c.state.compare_exchange_strong(s, mine, std::memory_order_acq_rel)) continue;
      core->waiting_bits[wi].fetch_and(~(std::uint64_t{1} << (idx % 64)), std::memory_order_relaxed);
      SHMSCHED_FAULT_POINT(gate_after_claim);
      if (settle_gated(idx, mine) == Errc::ok) ++n;
    }
  }
  return n;
}

inline std::size_t Client::Impl::release_dependents(GroupId) noexcept {
  return release_waiting(0);
}

// A group member done without keep_result: freed, counted done (G1..G4).
inline Errc Client::Impl::finish_member(const Taken& t) noexcept {
  return counted_move(t.index, t.word, next_word(t.word, TaskState::free, token), detail::GroupCounters::kDone, 1,
                      [&]() noexcept { return free_record(t.index, t.word); });
}

// ---- members --------------------------------------------------------------------------

inline bool Client::Impl::goes_alone(const TaskOptions& o) noexcept {
  return (static_cast<std::uint64_t>(o.not_before_ns) | o.group_id | o.after_group) != 0;
}

// A task with a group or a gate: enqueue_one's slow path. A member's adder announces
// itself (adding_group) and counts itself in the hint before it looks at the group
// (seq_cst): of it and a sealer, either it sees the seal and backs off, or the sealer
// and every finisher see it in flight. Its acceptance is a counted step (added).
inline Errc Client::Impl::enqueue_member(std::string_view type, std::uint64_t th, std::span<const std::byte> payload,
                                         const TaskOptions& o, TaskId* id, std::int64_t now) noexcept {
  QueueId q = 0;
  if (Errc e = check_spec(type, payload, o, q); e != Errc::ok) return e;
  if (o.after_group != 0 && group_entry(o.after_group) == nullptr) return Errc::unknown_group;
  if (o.group_id != 0 && o.group_id == o.after_group) return Errc::invalid_argument;  // would wait for itself
  detail::GroupEntry* ge = nullptr;
  if (o.group_id != 0) {
    ge = group_entry(o.group_id);
    if (ge == nullptr) return Errc::unknown_group;
    me->adding_group.store(o.group_id + 1, std::memory_order_seq_cst);
    ge->outstanding.fetch_add(1, std::memory_order_seq_cst);
    std::uint64_t w = 0;
    if (group_entry(o.group_id, &w) == nullptr || detail::group_state(w) != detail::GroupEntry::kOpen) {
      const Errc e = group_entry(o.group_id) == nullptr ? Errc::unknown_group : Errc::group_sealed;
      unannounce(ge, o.group_id);
      return e;
    }
  }
  const Errc e = accept_member(type, th, payload, o, q, id, now);
  if (ge != nullptr) {
    if (e == Errc::ok) {
      me->adding_group.store(0, std::memory_order_seq_cst);
    } else {
      unannounce(ge, o.group_id);
    }
  }
  return e;
}

// An adder that did not add: it leaves, then gives back its count in the hint, and
// finishes the group if that was the last thing it waited for.
inline void Client::Impl::unannounce(detail::GroupEntry* ge, GroupId g) noexcept {
  me->adding_group.store(0, std::memory_order_seq_cst);
  if (ge->outstanding.fetch_sub(1, std::memory_order_seq_cst) <= 1) try_finish_group(g);
}

inline Errc Client::Impl::accept_member(std::string_view type, std::uint64_t th, std::span<const std::byte> payload,
                                        const TaskOptions& o, QueueId q, TaskId* id, std::int64_t now) noexcept {
  std::uint32_t idx = 0;
  std::uint64_t word = 0;
  if (Errc e = alloc(idx, word); e != Errc::ok) {
    if (e != Errc::table_full || !evict_result()) return e;
    if (e = alloc(idx, word); e != Errc::ok) return e;
  }
  register_type(th, type);
  const TaskId tid = fill_record(idx, word, th, payload, o, q, now);
  auto* b = core->hot(idx);
  if (o.after_group != 0) {
    detail::set_field(core->cold(idx)->gate, o.after_group);
    detail::set_field(b->flags, static_cast<std::uint8_t>(b->flags | detail::kHasGate | detail::kGateGroup |
                                                          (o.run_anyway ? detail::kRunAnyway : 0)));
  }
  SHMSCHED_FAULT_POINT(enqueue_before_queued);
  const std::uint64_t from = word;
  Errc e = Errc::ok;
  PushStatus st = PushStatus::ok;
  if (o.after_group != 0) {  // (W1)
    core->waiting_bits[idx / 64].fetch_or(std::uint64_t{1} << (idx % 64), std::memory_order_seq_cst);
    group_entry(o.after_group)->dependents.fetch_add(1, std::memory_order_seq_cst);  // checked above; never freed
    core->header->waiting_tasks.fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t to = next_word(word, TaskState::waiting, token);
    e = counted_move(idx, from, to, detail::GroupCounters::kAdded, 1, [&]() noexcept {
      std::uint64_t w = from;
      // seq_cst: (W1)'s waiter half, before the look at the group below.
      return core->ctrl[idx].state.compare_exchange_strong(w, to, std::memory_order_seq_cst) ? Errc::ok : Errc::fenced;
    });
    if (e == Errc::ok && gate_of(idx).outcome != GateOutcome::pending) release_waiting(idx + 1);
  } else if (o.not_before_ns != 0 && o.not_before_ns > monotonic_ns()) {
    const std::uint64_t to = next_word(word, TaskState::delayed, token);
    e = counted_move(idx, from, to, detail::GroupCounters::kAdded, 1, [&]() noexcept {
      std::uint64_t w = from;
      return delay_record(idx, w, o.not_before_ns);
    });
  } else {
    const std::uint64_t to = next_word(word, TaskState::queued, token);
    e = counted_move(idx, from, to, detail::GroupCounters::kAdded, 1, [&]() noexcept {
      std::uint64_t w = from;
      st = push_record(idx, w, core->ring_id(q, o.priority), TaskState::queued);
      return st == PushStatus::ok ? Errc::ok : Errc::fenced;
    });
    if (st == PushStatus::full) {
      (void)free_record(idx, word);  // not accepted: give the record back
      return Errc::ring_full;
    }
    if (e == Errc::ok) notify(q);
  }
  if (e != Errc::ok) return e;
  bump(counters(q, o.priority).enqueued);
  if (id != nullptr) *id = tid;
  return Errc::ok;
}

}  // namespace shmsched
