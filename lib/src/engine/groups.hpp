// Groups: the group table, the counted steps that keep a group's counts exact through
// crashes, a group's finish, and the tasks that wait for a group (gates). The API is
// lib/src/groups.cpp; docs/lifecycle.md ("Groups", "Waiting for a group") walks through
// the protocols. The steps:
//
//   (G1) a thread about to move a member's record in a way that changes a count
//        (accepted: added; finished: done, failed, cancelled; a dead letter requeued:
//        failed - 1) holds a lane of its participant and notes the step in the lane's
//        note: the record, the words before and after the move, the counter and its
//        value before and after;
//   (G2) it moves the record (one CAS);
//   (G3) it stores the counter's new value (the lane's line: only its holder writes it);
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
//   (W1) a task that waits for a group counts itself in the group's `dependents`
//        (seq_cst), is accepted as waiting (CAS reserved -> waiting), sets its bit in
//        waiting_bits; then it looks at the group's word (seq_cst) and releases itself if
//        the group finished meanwhile. A finisher CASes the group's word, then looks at
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
// `word`. seq_cst: a look of the Dekker pairs below (and an acquire of the creator's
// publication of name and base).
inline detail::GroupEntry* Client::Impl::group_entry(GroupId id, std::uint64_t* word) const noexcept {
  const std::uint32_t gi = detail::group_index_of(id);
  if (id == 0 || gi >= core->layout.max_groups) return nullptr;
  detail::GroupEntry& e = core->groups[gi];
  const std::uint64_t w = e.word.load(std::memory_order_seq_cst);
  const std::uint64_t st = detail::group_state(w);
  if (detail::group_gen(w) != detail::group_gen_of(id) || st < detail::GroupEntry::kOpen) return nullptr;
  if (word != nullptr) *word = w;
  return &e;
}

// The exact counts of group entry gi: the sums over participants' lanes less the base.
namespace detail {
inline std::array<std::uint64_t, 4> group_sums(const Core& core, std::uint32_t gi) noexcept {
  std::array<std::uint64_t, 4> s{};
  for (std::uint32_t p = 0; p < core.layout.max_participants; ++p) {
    if (core.participants[p].word.load(std::memory_order_relaxed) == 0) continue;  // never used: counted nothing
    for (std::uint32_t lane = 0; lane < kGroupLanes; ++lane) {
      const auto& c = core.group_counter(p, lane, gi);
      // acquire: a counter read after a finisher's hint decrement sees what it counted.
      for (unsigned k = 0; k < 4; ++k) s[k] += c.n[k].load(std::memory_order_acquire);
    }
  }
  const auto& e = core.groups[gi];
  for (unsigned k = 0; k < 4; ++k) s[k] -= e.base[k].load(std::memory_order_relaxed);
  return s;
}

// Whether a lane of any participant is adding a member to group g (its announcement).
inline bool adder_in_flight(const Core& core, GroupId g) noexcept {
  for (std::uint32_t p = 0; p < core.layout.max_participants; ++p)
    for (std::uint32_t lane = 0; lane < kGroupLanes; ++lane)
      if (core.group_note(p, lane).adding.load(std::memory_order_seq_cst) == g + 1) return true;
  return false;
}
}  // namespace detail

inline std::array<std::uint64_t, 4> Client::Impl::group_sums(std::uint32_t gi) const noexcept {
  return detail::group_sums(*core, gi);
}

// A lane of this participant, held by one thread for one count step or one addition:
// taken from a process-local bitmap (a thread that finds every lane taken yields until
// one is given back: kGroupLanes threads of one process counting at the same instant).
// A thread that holds one already borrows it: a step nested in an adder's (its waiting
// task cancelled at once by its gate) comes after the adder's own step was cleared (G4),
// and a thread never waits for a second lane while it holds one, so threads of one
// process cannot all wait holding one each.
inline thread_local Client::Impl::Lane::Held Client::Impl::Lane::held_{};
inline Client::Impl::Lane::Lane(Impl& im) noexcept : im_(im) {
  if (held_.im == &im) {
    index_ = held_.index;
    borrowed_ = true;
    return;
  }
  for (std::uint32_t spin = 0;; ++spin) {
    std::uint32_t busy = im.lanes_busy.load(std::memory_order_relaxed);
    while (busy != (1u << detail::kGroupLanes) - 1) {
      const auto free = static_cast<std::uint32_t>(std::countr_one(busy));
      // acquire: what the lane's last holder wrote in its note is ours to overwrite.
      if (im.lanes_busy.compare_exchange_weak(busy, busy | (1u << free), std::memory_order_acquire)) {
        index_ = free;
        held_ = {&im, free};
        return;
      }
    }
    std::this_thread::yield();
  }
}
inline Client::Impl::Lane::~Lane() {
  if (borrowed_) return;
  held_ = {};
  im_.lanes_busy.fetch_and(~(1u << index_), std::memory_order_release);
}
inline detail::GroupNote& Client::Impl::Lane::note() const noexcept {
  return im_.core->group_note(im_.slot, index_);
}

// (G1..G4) Moves record idx, ours with word `from`, by `move` (its one CAS: `to` is the
// word it writes; it returns ok when it moved), counting `delta` in counter `field` of
// the record's group, if it has one that still exists. `held`: the lane its caller holds
// (an adder's), or null to take one.
template <class Move>
inline Errc Client::Impl::counted_move(std::uint32_t idx, std::uint64_t from, std::uint64_t to, unsigned field,
                                       std::uint64_t delta, Move&& move, const Lane* held) noexcept {
  const auto* b = core->hot(idx);
  if ((b->flags & detail::kHasGroup) == 0) return move();
  const GroupId g = detail::peek_field(core->cold(idx)->group_id);
  if (group_entry(g) == nullptr) return move();  // deleted: nothing left to count in
  const std::uint32_t gi = detail::group_index_of(g);
  std::optional<Lane> own;
  if (held == nullptr) held = &own.emplace(*this);
  detail::GroupNote& note = held->note();
  auto& ctr = core->group_counter(slot, held->index(), gi).n[field];
  const std::uint64_t before = ctr.load(std::memory_order_relaxed);  // this lane's alone
  // (G1) relaxed fields, then `from` with release: a recoverer that reads it (acquire)
  // reads the fields that go with it.
  note.record.store(idx, std::memory_order_relaxed);
  note.counter.store(gi * 4 + field, std::memory_order_relaxed);
  note.before.store(before, std::memory_order_relaxed);
  note.after.store(before + delta, std::memory_order_relaxed);
  note.to.store(to, std::memory_order_relaxed);
  note.from.store(from, std::memory_order_release);
  SHMSCHED_FAULT_POINT(group_step_noted);
  const Errc e = move();  // (G2)
  if (e == Errc::ok) {
    SHMSCHED_FAULT_POINT(group_step_moved);
    ctr.store(before + delta, std::memory_order_release);  // (G3) release: read by group_sums (acquire)
  }
  note.from.store(0, std::memory_order_release);  // (G4)
  own.reset();
  if (e == Errc::ok && field != detail::GroupCounters::kAdded && delta == 1) member_finished(gi, g);
  return e;
}

// Finishes the noted steps of participant slot p (dead, or ourselves after a takeover)
// and drops its announcements: idempotent, so a recoverer that dies part-way leaves it
// for the next.
inline void Client::Impl::finish_step(std::uint32_t p) noexcept {
  for (std::uint32_t lane = 0; lane < detail::kGroupLanes; ++lane) {
    detail::GroupNote& note = core->group_note(p, lane);
    const std::uint64_t from = note.from.load(std::memory_order_acquire);
    const std::uint32_t idx = note.record.load(std::memory_order_relaxed);
    const std::uint32_t ci = note.counter.load(std::memory_order_relaxed);
    const std::uint64_t to = note.to.load(std::memory_order_relaxed);
    if (from != 0 && idx < core->capacity && ci / 4 < core->layout.max_groups) {
      const std::uint64_t now = core->ctrl[idx].state.load(std::memory_order_acquire);
      // The move happened when the record holds the word it wrote, or -- when the record
      // was the stepper's own (reserved or running: nobody else moves it) -- any later
      // word. A dead letter is anyone's to move, so from one only the exact word tells.
      const bool own = state_of(from) == TaskState::reserved || state_of(from) == TaskState::running;
      const bool moved = now == to || (own && detail::version_of(now) >= detail::version_of(to));
      auto& ctr = core->group_counter(p, lane, ci / 4).n[ci % 4];
      if (moved && ctr.load(std::memory_order_relaxed) == note.before.load(std::memory_order_relaxed))
        ctr.store(note.after.load(std::memory_order_relaxed), std::memory_order_release);
    }
    note.from.store(0, std::memory_order_release);
    note.adding.store(0, std::memory_order_seq_cst);
  }
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
  // An adder announces itself before it looks at the group (enqueue_member): one that
  // saw it open may not have counted its member yet. A dead adder's announcement stays
  // until its recoverer has finished its step.
  if (detail::adder_in_flight(*core, g)) return false;
  const auto s = group_sums(detail::group_index_of(g));
  if (s[0] != s[1] + s[2] + s[3]) return false;
  SHMSCHED_FAULT_POINT(group_before_finish);
  // seq_cst: exactly one finisher; (W1)'s finisher half, before the look at dependents.
  if (!e->word.compare_exchange_strong(w, detail::group_word(detail::group_gen(w), detail::GroupEntry::kFinished),
                                       std::memory_order_seq_cst))
    return false;
  e->finished_ns.store(detail::coarse_now_ns(), std::memory_order_relaxed);
  e->outstanding.store(0, std::memory_order_relaxed);
  if (e->waiters.load(std::memory_order_seq_cst) != 0) detail::futex_wake_low(e->word, INT32_MAX);
  if (e->dependents.load(std::memory_order_seq_cst) != 0) release_waiting();
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
  release_dependents();
}

// ---- gates ----------------------------------------------------------------------------

// What record idx's gate says now: its group's (kGateGroup) or its parent task's.
inline Client::Impl::GateOutcome Client::Impl::gate_of(std::uint32_t idx) const noexcept {
  const std::uint64_t g = detail::peek_field(core->cold(idx)->gate);
  if ((detail::peek_field(core->hot(idx)->flags) & detail::kGateGroup) == 0) return parent_outcome(g);
  std::uint64_t w = 0;
  if (group_entry(g, &w) == nullptr) return {GateOutcome::failed_members, 0, 0, true};
  if (detail::group_state(w) != detail::GroupEntry::kFinished) return {GateOutcome::pending, 0, 0, false};
  const auto s = group_sums(detail::group_index_of(g));
  if (s[2] == 0 && s[3] == 0) return {GateOutcome::ok, 0, 0, false};
  return {GateOutcome::failed_members, s[2], s[3], false};
}

// What parent task p left: pending while it will still run; ok when it is done; failed
// when it was dead-lettered (failed = 1) or cancelled (cancelled = 1); gone (deleted)
// when no record holds it any more (its outcome was taken, expired or evicted). The
// first load is seq_cst: (W1)'s waiter half, against the parent's finishing CAS and
// publish_outcome's fence.
inline Client::Impl::GateOutcome Client::Impl::parent_outcome(TaskId p) const noexcept {
  const std::uint32_t pi = core->id_index(p);
  if (p == kNoTask || pi >= core->capacity) return {GateOutcome::failed_members, 0, 0, true};
  const auto& state = core->ctrl[pi].state;
  for (;;) {
    const std::uint64_t s = state.load(std::memory_order_seq_cst);
    const bool same = detail::peek_field(core->hot(pi)->id) == p;
    // acquire, then the word again: the id we read belongs to word s (a record's id
    // changes only while it is reserved, after its word moved).
    std::atomic_thread_fence(std::memory_order_acquire);
    if (state.load(std::memory_order_relaxed) != s) continue;  // it moved: look again
    if (!same) return {GateOutcome::failed_members, 0, 0, true};
    const TaskState st = state_of(s);
    if (is_outstanding(st)) return {GateOutcome::pending, 0, 0, false};
    if (st == TaskState::done) return {GateOutcome::ok, 0, 0, false};
    if (st == TaskState::dead) return {GateOutcome::failed_members, 1, 0, false};
    if (st == TaskState::cancelled) return {GateOutcome::failed_members, 0, 1, false};
    return {GateOutcome::failed_members, 0, 0, true};  // freed (or being reused)
  }
}

// (pipe) Copies the result of parent p (done) into the payload of record idx (ours);
// false when p's record moved on during the copy (taken, expired or evicted): the bytes
// read may be another task's, and the task is settled as if its parent were gone.
inline bool Client::Impl::pipe_result(std::uint32_t idx, TaskId p) noexcept {
  const std::uint32_t pi = core->id_index(p);
  const std::uint32_t n = std::min(detail::peek_field(core->hot(pi)->payload_len), core->layout.payload_bytes);
  // The parent's bytes were released by its K-done CAS, which parent_outcome acquired.
  if (n != 0) std::memcpy(core->payload(idx), core->payload(pi), n);
  // acquire, then the word: a record is written again only after it was freed and
  // reserved, which changes its word or its id.
  std::atomic_thread_fence(std::memory_order_acquire);
  const std::uint64_t s = core->ctrl[pi].state.load(std::memory_order_relaxed);
  const bool same = state_of(s) == TaskState::done && detail::peek_field(core->hot(pi)->id) == p;
  detail::set_field(core->hot(idx)->payload_len, same ? n : 0);  // bytes of unknown origin are not passed on
  return same;
}

// Why a task is cancelled by its gate's outcome (failed_members), into `why`.
inline void Client::Impl::gate_reason(std::uint32_t idx, const GateOutcome& out, std::span<char> why) const noexcept {
  const bool group = (core->hot(idx)->flags & detail::kGateGroup) != 0;
  if (group && out.deleted) {
    std::snprintf(why.data(), why.size(), "the group it waited for was deleted");
  } else if (group) {
    std::snprintf(why.data(), why.size(), "its group finished with %llu failed and %llu cancelled",
                  static_cast<unsigned long long>(out.failed), static_cast<unsigned long long>(out.cancelled));
  } else if (out.deleted) {
    std::snprintf(why.data(), why.size(), "its parent's outcome was taken, expired or evicted before it was read");
  } else {
    std::snprintf(why.data(), why.size(), "its parent task %s", out.failed != 0 ? "failed" : "was cancelled");
  }
}

// (W2) Queues record idx (ours, running with word `mine`, never started) by its gate's
// outcome: queued, cancelled with the reason, or back to waiting while it is pending.
inline Errc Client::Impl::settle_gated(std::uint32_t idx, std::uint64_t mine) noexcept {
  auto* b = core->hot(idx);
  const GateOutcome out = gate_of(idx);
  if (out.outcome == GateOutcome::pending) {
    const std::uint64_t next = next_word(mine, TaskState::waiting, 0);
    // seq_cst: (W1) as a producer's acceptance.
    if (!core->ctrl[idx].state.compare_exchange_strong(mine, next, std::memory_order_seq_cst)) return Errc::fenced;
    mark_waiting(idx);
    return Errc::ok;
  }
  GateOutcome settled = out;
  if (settled.outcome == GateOutcome::ok && (b->flags & (detail::kPipe | detail::kGateGroup)) == detail::kPipe &&
      !pipe_result(idx, core->cold(idx)->gate))
    settled = {GateOutcome::failed_members, 0, 0, true};
  drop_gate(idx);
  if (settled.outcome == GateOutcome::failed_members && (b->flags & detail::kRunAnyway) == 0) {
    char why[80];
    gate_reason(idx, settled, why);
    return finish_cancelled(idx, mine, why);
  }
  return requeue_record(idx, mine);
}

// Record idx (ours, claimed out of waiting) waits for nothing any more: settled by its
// gate, or cancelled. A recoverer of its next owner then requeues it as any task instead
// of settling it again (its gate may be gone by then). The flag goes first and the count
// after it: an owner killed between them leaves the count high (an extra pass), never
// low (a waiting task nobody looks for).
inline void Client::Impl::drop_gate(std::uint32_t idx) noexcept {
  auto* b = core->hot(idx);
  detail::set_field(b->flags, static_cast<std::uint8_t>(b->flags & ~detail::kHasGate));
  core->header->waiting_tasks.fetch_sub(1, std::memory_order_relaxed);  // a hint, see accept_member
}

// (W1, after the CAS to waiting) Sets record idx's bit in the waiting index -- after the
// CAS, so that a scan that clears the bit of a record it found not waiting cannot clear
// this one unseen (it looks at the state again after its clear) -- then looks at the
// gate (seq_cst) and releases the record itself if its group finished meanwhile.
inline void Client::Impl::mark_waiting(std::uint32_t idx) noexcept {
  core->waiting_bits[idx / 64].fetch_or(std::uint64_t{1} << (idx % 64), std::memory_order_seq_cst);
  if (gate_of(idx).outcome != GateOutcome::pending) try_release(idx);
}

// (W2) Releases record idx if it waits and its gate is not pending; true when it did.
inline bool Client::Impl::try_release(std::uint32_t idx) noexcept {
  auto& c = core->ctrl[idx];
  std::uint64_t s = c.state.load(std::memory_order_seq_cst);
  if (state_of(s) != TaskState::waiting || gate_of(idx).outcome == GateOutcome::pending) return false;
  const std::uint64_t mine = next_word(s, TaskState::running, token);
  // acq_rel, as a take's claim: of a release, a cancel and a move exactly one wins.
  if (!c.state.compare_exchange_strong(s, mine, std::memory_order_acq_rel)) return false;
  core->waiting_bits[idx / 64].fetch_and(~(std::uint64_t{1} << (idx % 64)), std::memory_order_relaxed);
  SHMSCHED_FAULT_POINT(gate_after_claim);
  return settle_gated(idx, mine) == Errc::ok;
}

// Releases every waiting task whose gate is not pending, and drops the bits of records
// that do not wait. O(table / 64) plus the waiting ones. A release that finishes a task
// (cancelled by its gate) may release that task's dependents in turn: a call made while
// this thread already releases for this segment asks the running call for another pass
// instead of nesting, so a chain of any length cancels in constant stack.
inline std::size_t Client::Impl::release_waiting() noexcept {
  thread_local const Impl* releasing = nullptr;
  thread_local bool again = false;
  if (releasing == this) {
    again = true;
    return 0;
  }
  const Impl* outer = releasing;
  releasing = this;
  std::size_t n = 0;
  do {
    again = false;
    n += release_pass();
  } while (again);
  releasing = outer;
  return n;
}

// One pass of release_waiting over the waiting index.
inline std::size_t Client::Impl::release_pass() noexcept {
  std::size_t n = 0;
  const std::uint32_t words = (core->capacity + 63) / 64;
  for (std::uint32_t wi = 0; wi < words; ++wi) {
    std::uint64_t bits = core->waiting_bits[wi].load(std::memory_order_seq_cst);
    while (bits != 0) {
      const std::uint32_t idx = wi * 64 + static_cast<std::uint32_t>(std::countr_zero(bits));
      const std::uint64_t bit = std::uint64_t{1} << (idx % 64);
      bits &= bits - 1;
      auto& c = core->ctrl[idx];
      if (state_of(c.state.load(std::memory_order_seq_cst)) != TaskState::waiting) {
        core->waiting_bits[wi].fetch_and(~bit, std::memory_order_seq_cst);
        // A record accepted as waiting since our load set its bit after its CAS: set again.
        if (state_of(c.state.load(std::memory_order_seq_cst)) == TaskState::waiting)
          core->waiting_bits[wi].fetch_or(bit, std::memory_order_seq_cst);
        continue;
      }
      n += try_release(idx) ? 1 : 0;
    }
  }
  return n;
}

// A group member done without keep_result: freed, counted done (G1..G4).
inline Errc Client::Impl::finish_member(const Taken& t) noexcept {
  return counted_move(t.index, t.word, next_word(t.word, TaskState::free, token), detail::GroupCounters::kDone, 1,
                      [&]() noexcept { return free_record(t.index, t.word); });
}

// ---- members --------------------------------------------------------------------------

inline bool Client::Impl::goes_alone(const TaskOptions& o) noexcept {
  return (static_cast<std::uint64_t>(o.not_before_ns) | o.group_id | o.after_group | o.after_task |
          static_cast<std::uint64_t>(o.pipe)) != 0;
}

// Whether a task may wait for parent task p: Errc::ok, or why not.
inline Errc Client::Impl::check_parent(TaskId p) const noexcept {
  const GateOutcome out = parent_outcome(p);
  if (out.deleted) return Errc::unknown_task;
  const auto flags = detail::peek_field(core->hot(core->id_index(p))->flags);
  return (flags & detail::kKeepResult) != 0 ? Errc::ok : Errc::parent_not_kept;
}

// A task with a group or a gate: enqueue_one's slow path. A member's adder announces
// itself (its lane's note) and counts itself in the hint before it looks at the group
// (seq_cst): of it and a sealer (or a deleter), either it sees the seal and backs off, or
// the sealer and every finisher see it in flight and the group does not finish before
// its member is counted. Its acceptance is a counted step (added) on the same lane.
inline Errc Client::Impl::enqueue_member(std::string_view type, std::uint64_t th, std::span<const std::byte> payload,
                                         const TaskOptions& o, TaskId* id, std::int64_t now) noexcept {
  QueueId q = 0;
  if (Errc e = check_spec(type, payload, o, q); e != Errc::ok) return e;
  if (o.after_group != 0 && group_entry(o.after_group) == nullptr) return Errc::unknown_group;
  if (o.group_id != 0 && o.group_id == o.after_group) return Errc::invalid_argument;  // would wait for itself
  if ((o.after_group != 0 && o.after_task != 0) || (o.pipe && o.after_task == 0))
    return Errc::invalid_argument;  // one gate; a pipe needs a parent task
  if (o.after_task != 0) {
    if (Errc e = check_parent(o.after_task); e != Errc::ok) return e;
  }
  if (o.group_id == 0) return accept_member(type, th, payload, o, q, id, now, nullptr);
  detail::GroupEntry* ge = group_entry(o.group_id);
  if (ge == nullptr) return Errc::unknown_group;
  Lane lane(*this);
  const Errc opened = announce(lane, ge, o.group_id, false);
  if (opened != Errc::ok) return opened;
  const Errc e = accept_member(type, th, payload, o, q, id, now, &lane);
  unannounce(lane, ge, o.group_id, e != Errc::ok);
  return e;
}

// An adder (or a reviver of a dead member) announces itself on its lane and counts
// itself in the hint, then looks at the group (all seq_cst): open, or with `sealed_ok`
// sealed too; else it backs off.
inline Errc Client::Impl::announce(const Lane& lane, detail::GroupEntry* ge, GroupId g, bool sealed_ok) noexcept {
  lane.note().adding.store(g + 1, std::memory_order_seq_cst);
  ge->outstanding.fetch_add(1, std::memory_order_seq_cst);
  std::uint64_t w = 0;
  const bool alive = group_entry(g, &w) != nullptr;
  const std::uint64_t st = detail::group_state(w);
  if (alive && (st == detail::GroupEntry::kOpen || (sealed_ok && st == detail::GroupEntry::kSealed))) return Errc::ok;
  unannounce(lane, ge, g, true);
  return alive ? Errc::group_sealed : Errc::unknown_group;
}

// The adder leaves (its member counted, or `undo`: not added, so its count in the hint
// is given back), then looks whether the group can finish: a finisher that found it in
// flight left that to it.
inline void Client::Impl::unannounce(const Lane& lane, detail::GroupEntry* ge, GroupId g, bool undo) noexcept {
  lane.note().adding.store(0, std::memory_order_seq_cst);
  const std::int64_t left = undo ? ge->outstanding.fetch_sub(1, std::memory_order_seq_cst) - 1
                                 : ge->outstanding.load(std::memory_order_seq_cst);
  if (left <= 0) try_finish_group(g);
}

inline Errc Client::Impl::accept_member(std::string_view type, std::uint64_t th, std::span<const std::byte> payload,
                                        const TaskOptions& o, QueueId q, TaskId* id, std::int64_t now,
                                        const Lane* lane) noexcept {
  std::uint32_t idx = 0;
  std::uint64_t word = 0;
  if (Errc e = alloc(idx, word); e != Errc::ok) {
    if (e != Errc::table_full || !evict_result()) return e;
    if (e = alloc(idx, word); e != Errc::ok) return e;
  }
  register_type(th, type);
  const TaskId tid = fill_record(idx, word, th, payload, o, q, now);
  auto* b = core->hot(idx);
  const bool gated = (o.after_group | o.after_task) != 0;
  if (gated) {
    detail::set_field(core->cold(idx)->gate, o.after_group != 0 ? o.after_group : o.after_task);
    detail::set_field(b->flags, static_cast<std::uint8_t>(
                                    b->flags | detail::kHasGate | (o.after_group != 0 ? detail::kGateGroup : 0) |
                                    (o.pipe ? detail::kPipe : 0) | (o.run_anyway ? detail::kRunAnyway : 0)));
  }
  SHMSCHED_FAULT_POINT(enqueue_before_queued);
  const std::uint64_t from = word;
  Errc e = Errc::ok;
  if (gated) {  // (W1)
    if (o.after_group != 0) {
      if (auto* gate = group_entry(o.after_group)) gate->dependents.fetch_add(1, std::memory_order_seq_cst);
    }
    // seq_cst: counted before the CAS and the look at the gate; a parent task's finisher
    // looks at this count after its finishing CAS (publish_outcome), Dekker's pair.
    core->header->waiting_tasks.fetch_add(1, std::memory_order_seq_cst);
    const std::uint64_t to = next_word(word, TaskState::waiting, token);
    e = counted_move(
        idx, from, to, detail::GroupCounters::kAdded, 1,
        [&]() noexcept {
          std::uint64_t w = from;
          // seq_cst: (W1)'s waiter half, before the look at the group (mark_waiting).
          return core->ctrl[idx].state.compare_exchange_strong(w, to, std::memory_order_seq_cst) ? Errc::ok
                                                                                                 : Errc::fenced;
        },
        lane);
    if (e == Errc::ok) mark_waiting(idx);
  } else if (o.not_before_ns != 0 && o.not_before_ns > monotonic_ns()) {
    const std::uint64_t to = next_word(word, TaskState::delayed, token);
    e = counted_move(
        idx, from, to, detail::GroupCounters::kAdded, 1,
        [&]() noexcept {
          std::uint64_t w = from;
          return delay_record(idx, w, o.not_before_ns);
        },
        lane);
  } else {
    const std::uint64_t to = next_word(word, TaskState::queued, token);
    bool moved = false;
    e = counted_move(
        idx, from, to, detail::GroupCounters::kAdded, 1,
        [&]() noexcept {
          std::uint64_t w = from;
          const PushStatus st = push_record(idx, w, core->ring_id(q, o.priority), TaskState::queued);
          moved = w != from;
          if (st == PushStatus::ok) return Errc::ok;
          if (st == PushStatus::full && moved)  // accepted, but no slot after all: waits as delayed, as requeue_record
            return delay_record(idx, w, monotonic_ns() + 10'000'000);
          return st == PushStatus::full ? Errc::ring_full : Errc::fenced;
        },
        lane);
    if (e == Errc::ring_full) {
      (void)free_record(idx, word);  // never moved: not accepted, give the record back
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
