// Enqueue of a batch as runs: records of one (queue, level) reserved side by side and
// published as one ring entry each (each record still moves by its own CAS).
// docs/ring-protocol.md: "Runs".
//
// A stretch is the tasks from tasks[0] on that are valid and runnable now, at most
// kStretch of them over at most kGroups (queue, level) pairs. It goes through five
// phases, each a function below:
//
//   form      the stretch's tasks, grouped by (queue, level), and their order by group;
//   reserve   a run of side-by-side records per group as far as they are free; a full
//             table cuts the stretch at the first task left without a record;
//   trim      what lies past the cut is given back, and (grouped) given again, in task
//             order, to the tasks from the cut on;
//   fill      each record's body;
//   publish   every record queued, then each run pushed into its ring as one entry.
//
// When every queue ring has a slot per record (ring_capacity >= task_capacity, the
// default), the tasks are grouped by (queue, level), so a batch of mixed priorities
// still makes long runs. That is safe because such a ring is never full ("Runs": the
// entries between the head and a pusher each hold a queued record of their own, and
// the pusher holds one more). Runs are then published group by group (FIFO per level
// holds: a group keeps its tasks' order), and only a full table can refuse tasks --
// before anything is published, so exactly a suffix is refused, as single calls would.
// With smaller rings the runs are only of consecutive tasks and are published in task
// order, so a full ring refuses exactly a suffix too.
#pragma once

#include "impl.hpp"

namespace shmsched {

// Enqueues tasks from tasks[0] on as runs. Returns how many tasks from tasks[0] on were
// accepted, with `error` for the first that was not (ok when the stretch simply ended
// at a task to go one by one). tasks[0] must be valid and runnable now; `q0` is its
// queue, resolved by the caller's check.
inline std::size_t Client::Impl::enqueue_runs(std::span<const TaskSpec> tasks, std::span<TaskId> ids, QueueId q0,
                                              std::int64_t now, BatchDebts& debts, Errc& error) noexcept {
  Stretch s;
  s.grouped = core->ring_capacity >= core->capacity;
  form_stretch(s, tasks, q0);
  reserve_runs(s);
  trim_to_cut(s);
  if (s.nruns != 0) cursor.store(s.runs[s.nruns - 1].first + s.runs[s.nruns - 1].n, std::memory_order_relaxed);
  fill_runs(s, tasks, ids, now);
  const std::size_t accepted = publish_runs(s, tasks, debts);
  error = s.error;
  return accepted;
}

// Form: the tasks of the stretch and each one's group; then `order`, the tasks of one
// group side by side in task order.
inline void Client::Impl::form_stretch(Stretch& s, std::span<const TaskSpec> tasks, QueueId q0) noexcept {
  // Which group a ring's tasks went to, by the ring id's low bits (checked: ids that
  // share them fall back to a scan).
  std::uint8_t group_by_rid[kGroups];
  std::fill(group_by_rid, group_by_rid + kGroups, std::uint8_t{kGroups});
  const std::size_t limit = std::min(tasks.size(), kStretch);
  QueueId q = q0;
  for (; s.len < limit; ++s.len) {
    const TaskSpec& t = tasks[s.len];
    if (s.len != 0) {
      if (goes_alone(t.options)) break;  // goes one by one
      s.error = check_next(t, tasks[s.len - 1], q, q);
      if (s.error != Errc::ok) break;
    }
    const std::uint16_t rid = core->ring_id(q, t.options.priority);
    std::size_t g = s.ngroups;
    if (s.len != 0 && s.groups[s.group_of[s.len - 1]].rid == rid) {
      g = s.group_of[s.len - 1];
    } else if (s.grouped) {
      const std::size_t hinted = group_by_rid[rid % kGroups];
      if (hinted < s.ngroups && s.groups[hinted].rid == rid) {
        g = hinted;
      } else {
        for (std::size_t k = 0; k < s.ngroups && g == s.ngroups; ++k)
          if (s.groups[k].rid == rid) g = k;
      }
    }
    if (g == s.ngroups) {
      if (s.ngroups == kGroups) break;  // the next stretch takes it
      s.groups[s.ngroups++] = Stretch::Group{rid, 0, 0, q};
      group_by_rid[rid % kGroups] = static_cast<std::uint8_t>(g);
    }
    ++s.groups[g].count;
    s.group_of[s.len] = static_cast<std::uint8_t>(g);
  }
  std::uint16_t at = 0;
  for (std::size_t g = 0; g < s.ngroups; ++g) {
    s.groups[g].start = at;
    at = static_cast<std::uint16_t>(at + s.groups[g].count);
    s.groups[g].count = 0;
  }
  for (std::size_t i = 0; i < s.len; ++i) {
    Stretch::Group& g = s.groups[s.group_of[i]];
    s.order[g.start + g.count++] = static_cast<std::uint16_t>(i);
  }
  s.cut = s.len;
}

// Reserve: group by group, each run as far as the records after its first are free. A
// run starts at the record after the previous run when that one is free (the usual
// case: the table is freed roughly in the order it is filled), else where the sweep
// finds one. Places, not tasks, index the records' state words: order[j]'s record has
// its word in word_at[j], and a run's words lie side by side.
inline void Client::Impl::reserve_runs(Stretch& s) noexcept {
  constexpr std::uint32_t kMaxRun = IndexRing<>::kMaxRun;
  const std::uint32_t capacity = core->capacity;
  std::uint32_t next = capacity;  // the record after the last run
  for (std::size_t g = 0; g < s.ngroups; ++g) {
    const auto end = static_cast<std::uint16_t>(s.groups[g].start + s.groups[g].count);
    for (std::uint16_t j = s.groups[g].start; j < end;) {
      if (s.order[j] >= s.cut) break;  // so are this group's later tasks
      std::uint32_t first = next;
      if (first >= capacity || !alloc_at(first, s.word_at[j])) {
        if (Errc e = alloc(first, s.word_at[j]); e != Errc::ok) {
          s.cut = s.order[j];
          s.error = e;
          break;
        }
      }
      const std::uint32_t room =
          std::min<std::uint32_t>({static_cast<std::uint32_t>(end - j), kMaxRun, capacity - first});
      note_used(first + room - 1);  // once for the whole run (the mark may end up a little high)
      std::uint32_t n = 1;
      for (; n < room && s.order[j + n] < s.cut; ++n) {
        if ((first + n) % kCtrlPerLine == 0)
          detail::prefetch(&core->ctrl[(first + n + 2 * kPrefetchDistance) & (capacity - 1)]);
        if (!reserve_at(first + n, s.word_at[j + n])) break;
      }
      s.runs[s.nruns++] = Stretch::Run{first, j, static_cast<std::uint16_t>(n)};
      // The record after the run, unless the run stopped because that one is in use.
      next = n < room && s.order[j + n] < s.cut ? capacity : first + n;
      j = static_cast<std::uint16_t>(j + n);
    }
  }
}

// Trim: drops what lies past the cut (the tail of runs: a group's tasks are in order).
// Grouped, the records freed went to tasks past the cut that an earlier group took
// first: they are given, in task order, to the tasks from the cut on, so the stretch is
// cut where single calls would have found the table full.
inline void Client::Impl::trim_to_cut(Stretch& s) noexcept {
  std::size_t kept = 0;
  for (std::size_t k = 0; k < s.nruns; ++k) {
    Stretch::Run r = s.runs[k];
    for (; r.n != 0 && s.order[r.at + r.n - 1] >= s.cut; --r.n)
      if (free_record(r.first + r.n - 1, s.word_at[r.at + r.n - 1]) == Errc::ok)
        s.spare[s.nspare++] = r.first + r.n - 1;
    if (r.n != 0) s.runs[kept++] = r;
  }
  s.nruns = kept;
  if (s.cut < s.len && s.grouped) reserve_past_cut(s);
}

inline void Client::Impl::reserve_past_cut(Stretch& s) noexcept {
  constexpr std::uint32_t kMaxRun = IndexRing<>::kMaxRun;
  std::uint16_t place[kStretch];  // inverse of order
  for (std::size_t j = 0; j < s.len; ++j) place[s.order[j]] = static_cast<std::uint16_t>(j);
  std::size_t last_run[kGroups];
  std::fill(last_run, last_run + kGroups, SIZE_MAX);
  for (std::size_t k = 0; k < s.nruns; ++k) last_run[s.group_of[s.order[s.runs[k].at]]] = k;
  const std::size_t from = s.cut;
  s.cut = s.len;
  s.error = Errc::ok;
  for (std::size_t i = from; i < s.len; ++i) {
    const std::size_t g = s.group_of[i];
    const std::uint16_t j = place[i];
    // Onto the group's last run when the task follows its tasks and its next record is free.
    if (last_run[g] != SIZE_MAX) {
      Stretch::Run& r = s.runs[last_run[g]];
      if (r.at + r.n == j && r.n < kMaxRun && r.first + r.n < core->capacity && alloc_at(r.first + r.n, s.word_at[j])) {
        ++r.n;
        continue;
      }
    }
    // The records just given back first (a sweep right after finding the table full
    // looks only a little way ahead), then the sweep.
    std::uint32_t x = 0;
    bool got = false;
    while (!got && s.nspare != 0) {
      x = s.spare[--s.nspare];
      got = alloc_at(x, s.word_at[j]);
    }
    if (!got) {
      if (Errc e = alloc(x, s.word_at[j]); e != Errc::ok) {
        s.cut = i;
        s.error = e;
        return;
      }
    }
    last_run[g] = s.nruns;
    s.runs[s.nruns++] = Stretch::Run{x, j, 1};
  }
}

// Fill: the records run by run (each run's records lie side by side). Each fill fetches
// the lines of the record kFillPrefetch on (the next run usually starts right after this
// one; when it does not, a fetch is wasted, nothing else).
inline void Client::Impl::fill_runs(Stretch& s, std::span<const TaskSpec> tasks, std::span<TaskId> ids,
                                    std::int64_t now) noexcept {
  const std::uint32_t mask = core->capacity - 1;
  std::uint64_t last_hash = 0;
  std::string_view last_type;
  if (s.nruns != 0)
    for (std::uint32_t d = 0; d < kFillPrefetch; ++d) prefetch_body((s.runs[0].first + d) & mask);
  for (std::size_t k = 0; k < s.nruns; ++k) {
    const Stretch::Run& r = s.runs[k];
    for (std::uint16_t m = 0; m < r.n; ++m) {
      prefetch_body((r.first + m + kFillPrefetch) & mask);
      const std::uint16_t i = s.order[r.at + m];
      const TaskSpec& t = tasks[i];
      if (last_type.data() == nullptr || t.type.data() != last_type.data() || t.type.size() != last_type.size()) {
        last_hash = type_hash(t.type);
        last_type = t.type;
        register_type(last_hash, t.type);
      }
      ids[i] = fill_record(r.first + m, s.word_at[r.at + m], last_hash, t.payload, t.options,
                           s.groups[s.group_of[i]].queue, now);
    }
  }
}

// Publish: every record queued first, then the runs pushed. Once one run is pushed no
// later step can find us fenced, so a fenced producer has published nothing. Until its
// run is pushed a queued record names no ring, and recovery of a producer that dies here
// publishes it (as for one record between S1 and R3). move_run leaves each word as the
// record now is (queued, or reserved where it stopped). Returns how many tasks from
// tasks[0] on were accepted.
inline std::size_t Client::Impl::publish_runs(Stretch& s, std::span<const TaskSpec> tasks, BatchDebts& debts) noexcept {
  SHMSCHED_FAULT_POINT(enqueue_before_queued);
  bool fenced = false;
  for (std::size_t k = 0; k < s.nruns && !fenced; ++k) {
    const Stretch::Run& r = s.runs[k];
    fenced = move_run(r.first, r.n, &s.word_at[r.at], TaskState::queued, detail::make_where(detail::kNoRing, 0)) != r.n;
  }
  if (fenced) {
    // Our records were taken back: give back what is still ours (the exact words make
    // these CASes fail on records recovery already moved) and accept nothing.
    give_back_runs(s, 0);
    s.error = Errc::fenced;
    return 0;
  }
  for (std::size_t k = 0; k < s.nruns; ++k) {
    const Stretch::Run& r = s.runs[k];
    const Stretch::Group& g = s.groups[s.group_of[s.order[r.at]]];
    const PushStatus st = push_run(r.first, r.n, &s.word_at[r.at], g.rid, TaskState::queued, true);
    if (st == PushStatus::ok) {
      owe(debts, g.queue, tasks[s.order[r.at]].options.priority, r.n);
      continue;
    }
    // A full ring: without grouping, this run and every later one hold exactly the
    // tasks from the first refused on; they are given back (queued in no ring, so no
    // taker can have them). With grouping only a corrupt segment gets here, and tasks
    // published earlier may lie past the count returned. Fenced (aborted): what is
    // still ours is given back the same way (the exact words fail on the rest).
    s.error = st == PushStatus::full ? Errc::ring_full : Errc::fenced;
    return give_back_runs(s, k);
  }
  return s.cut;
}

// Frees the records of runs `from` on that are still ours; returns the first task
// (in task order) among them, or the cut when there is none.
inline std::size_t Client::Impl::give_back_runs(Stretch& s, std::size_t from) noexcept {
  std::size_t first_refused = s.cut;
  for (std::size_t k = from; k < s.nruns; ++k)
    for (std::uint16_t m = 0; m < s.runs[k].n; ++m) {
      (void)free_record(s.runs[k].first + m, s.word_at[s.runs[k].at + m]);
      first_refused = std::min<std::size_t>(first_refused, s.order[s.runs[k].at + m]);
    }
  return first_refused;
}

}  // namespace shmsched
