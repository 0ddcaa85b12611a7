#include "shmsched/inspect.hpp"

#include <array>
#include <atomic>

#include "engine/counters.hpp"
#include "engine/support.hpp"
#include "permits.hpp"
#include "rate.hpp"
#include "shmsched/detail/core_access.hpp"
#include "shmsched/detail/saturate.hpp"

namespace shmsched {

std::uint64_t QueueSnapshot::depth() const noexcept {
  std::uint64_t d = 0;
  for (const auto& l : levels) d += l.depth;
  return d;
}

namespace {

// Counts every record by state into `s`, and per queue id into `per_queue` (the
// records whose state names a queue).
void count_records(const detail::Core& core, Snapshot& s, std::vector<StateCounts>& per_queue) {
  const std::uint32_t end = core.scan_end();
  s.records[TaskState::virgin] += core.capacity - end;  // past the mark: never used
  for (std::uint32_t i = 0; i < end; ++i) {
    const TaskState st = detail::state_of(core.ctrl[i].state.load(std::memory_order_acquire));
    if (static_cast<std::size_t>(st) >= kTaskStates) continue;  // a damaged word: no state
    ++s.records[st];
    if (!names_queue(st)) continue;
    // relaxed: the owner may move the record on meanwhile; a figure read once.
    const std::uint16_t qid = std::atomic_ref<std::uint16_t>(core.hot(i)->queue).load(std::memory_order_relaxed);
    if (qid < per_queue.size()) ++per_queue[qid][st];
  }
}

QueueSnapshot queue_snapshot(const detail::Core& core, const QueueInfo& qi, const StateCounts& records,
                             std::int64_t now) {
  QueueSnapshot q;
  q.id = qi.id;
  q.name = qi.name;
  q.paused = qi.paused;
  q.records = records;
  const auto& e = core.queues[qi.id];
  q.aging_ms = e.aging_ms.load(std::memory_order_relaxed);
  q.aging_promotes = (e.flags.load(std::memory_order_relaxed) & detail::QueueEntry::kAgingPromotes) != 0;
  q.rate = detail::rate_per_second(e.rate);
  q.burst = detail::rate_burst(e.rate);
  q.rate_granted = e.rate.granted.load(std::memory_order_relaxed);
  q.rate_delayed = e.rate.delayed.load(std::memory_order_relaxed);
  const std::uint32_t limit = e.limit_sem.load(std::memory_order_acquire);
  if (limit != 0 && limit - 1 < core.layout.max_semaphores)
    q.limit = static_cast<std::int32_t>(detail::Permits::capacity(core.semaphores[limit - 1]));
  for (std::uint32_t level = 0; level < core.levels; ++level) {
    LevelSnapshot l;
    const IndexRing<> ring = core.ring(core.ring_id(qi.id, level));
    l.depth = ring.values_guess();
    std::uint32_t v = 0;
    if (ring.peek_head(v) && v < core.capacity && l.depth != 0)
      l.oldest_age_ns = std::max<std::int64_t>(0, detail::sub_sat(now, detail::load_enqueued(core.hot(v))));
    l.counters = detail::sum_level(core, qi.id, level);
    q.levels.push_back(l);
  }
  return q;
}

// Participant slot i (not free, its word `w`) as inspect() shows it.
ParticipantSnapshot participant_snapshot(const detail::Core& core, std::uint32_t i, std::uint64_t w,
                                         std::int64_t mono) {
  const auto& p = core.participants[i];
  const std::uint64_t st = detail::pword_state(w);
  ParticipantSnapshot ps;
  ps.slot = i;
  ps.token = detail::make_token(i + 1, detail::pword_epoch(w));
  ps.pid = static_cast<std::int32_t>(p.pid.load(std::memory_order_relaxed));
  ps.start_time = p.start_time.load(std::memory_order_relaxed);
  ps.role = static_cast<Role>(p.role.load(std::memory_order_relaxed));
  ps.state = st == detail::ParticipantEntry::kActive        ? "active"
             : st == detail::ParticipantEntry::kRegistering ? "registering"
                                                            : "reaping";
  ps.alive = ProcessIdentity{ps.pid, ps.start_time}.alive();
  ps.activity = static_cast<Activity>(p.activity.load(std::memory_order_relaxed));
  ps.current_task = p.current_task.load(std::memory_order_relaxed);
  ps.processed = p.processed.load(std::memory_order_relaxed);
  ps.counters = detail::sum_participant(core, i);
  const std::int64_t hb = p.heartbeat_ns.load(std::memory_order_relaxed);
  ps.heartbeat_age_ns = hb > 0 ? std::max<std::int64_t>(0, mono - hb) : -1;
  ps.workers = p.workers.load(std::memory_order_relaxed);
  ps.sleepers = p.sleepers.load(std::memory_order_relaxed);
  return ps;
}

}  // namespace

Snapshot inspect(const Segment& segment) {
  const detail::Core& core = detail::core_of(segment);
  Snapshot s;
  s.name = segment.name();
  s.layout = segment.layout();
  s.size_bytes = segment.size_bytes();
  s.creator = segment.creator();
  const std::int64_t now = detail::coarse_now_ns();
  const std::int64_t mono = monotonic_ns();

  std::vector<StateCounts> per_queue(core.layout.max_queues);
  count_records(core, s, per_queue);
  for (const QueueInfo& qi : segment.queues())
    if (qi.id < per_queue.size()) s.queues.push_back(queue_snapshot(core, qi, per_queue[qi.id], now));
  for (std::uint32_t i = 0; i < core.layout.max_participants; ++i) {
    const std::uint64_t w = core.participants[i].word.load(std::memory_order_acquire);
    if (detail::pword_state(w) != detail::ParticipantEntry::kFree)
      s.participants.push_back(participant_snapshot(core, i, w, mono));
  }
  s.semaphores = segment.semaphores();
  s.results_expired = core.header->results_expired.load(std::memory_order_relaxed);
  s.groups = groups(segment);
  s.results_evicted = core.header->results_evicted.load(std::memory_order_relaxed);
  s.janitor_token = static_cast<std::uint16_t>(core.header->janitor_lease.load(std::memory_order_acquire));
  if (const std::uint32_t ji = detail::token_index(s.janitor_token); ji != 0 && ji <= core.layout.max_participants)
    s.janitor_pid = static_cast<std::int32_t>(core.participants[ji - 1].pid.load(std::memory_order_relaxed));
  return s;
}

std::vector<DeadLetter> dead_letters(const Segment& segment, std::size_t max) {
  std::vector<DeadLetter> out;
  const detail::Core& core = detail::core_of(segment);
  for (std::uint32_t i = 0, end = core.scan_end(); i < end && out.size() < max; ++i) {
    const std::uint64_t s = core.ctrl[i].state.load(std::memory_order_acquire);
    if (detail::state_of(s) != TaskState::dead) continue;
    // Dead letters are not written by anyone until requeued or purged; re-check the
    // word after copying so a concurrent requeue is not reported half-read.
    const auto* hot = core.hot(i);
    DeadLetter d;
    d.id = hot->id;
    d.type = hot->type_hash;
    d.type_name = std::string(core.type_name(hot->type_hash));
    d.queue = hot->queue;
    d.level = hot->level;
    d.attempts = hot->attempts;
    if (hot->flags & detail::kHasError) {
      const auto* cold = core.cold(i);
      d.reason = detail::load_error(cold);
    }
    if (core.ctrl[i].state.load(std::memory_order_acquire) == s) out.push_back(std::move(d));
  }
  return out;
}

}  // namespace shmsched
