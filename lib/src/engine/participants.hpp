// Participants: binding a Client to a segment, registering it in the participant table
// (P1, P2), taking over the slot of a dead participant, judging liveness, reaping the
// dead (P3, P4) and deregistering. What a dead participant left in records is
// recovery.hpp's. docs/ring-protocol.md: "Participants, reaping and fencing".
#pragma once

#include "impl.hpp"

namespace shmsched {

// The process-local views of `segment`, made once.
inline void Client::Impl::bind(Segment& segment) {
  seg = &segment;
  core = &detail::core_of(segment);
  my_counters = &core->counter(0, 0, 0);                                   // slot 0 until a slot is claimed, as `slot`
  pop_cursor = std::make_unique<detail::AtomicU64[]>(core->ring_count());  // value-initialised: 0
  push_cursor = std::make_unique<detail::AtomicU64[]>(core->ring_count());
  queue_rings = std::make_unique<IndexRing<>[]>(core->ring_count());
  ahead = std::make_unique<Ahead[]>(core->layout.max_queues);
  permits = detail::Permits(core->semaphores, core->layout.max_semaphores);
  static std::atomic<std::uint64_t> next_client_id{1};
  client_id = next_client_id.fetch_add(1, std::memory_order_relaxed);  // relaxed: only uniqueness matters
  for (std::uint32_t r = 0; r < core->ring_count(); ++r) queue_rings[r] = core->ring(static_cast<std::uint16_t>(r));
}

// Claims a free participant slot, or else takes over the slot of a dead participant;
// false when every slot is held by a live process.
inline bool Client::Impl::register_participant(Role role) noexcept {
  const auto self = ProcessIdentity::self();
  for (std::uint32_t i = 0; i < core->layout.max_participants; ++i) {
    const std::uint64_t w = core->participants[i].word.load(std::memory_order_acquire);
    if (detail::pword_state(w) == detail::ParticipantEntry::kFree &&
        claim_slot(i, w, detail::pword_epoch(w), role, self)) {
      activate(self);
      return true;
    }
  }
  // No free slot. A slot whose process is dead (or whose reaper died) is taken over
  // rather than refused: with epoch + 1, which fences the dead token; the new token goes
  // active and then recovers the dead one's records and permits. Without this a table
  // full of dead participants would wedge the segment until some live consumer's janitor
  // reaped it. A takeover that dies part-way leaves a dead active participant; whoever
  // reaps or takes over the slot next recovers every older epoch of it too (DeadOwner).
  for (std::uint32_t i = 0; i < core->layout.max_participants; ++i) {
    auto& p = core->participants[i];
    const std::uint64_t w = p.word.load(std::memory_order_acquire);
    const std::uint64_t st = detail::pword_state(w);
    const bool dead = st == detail::ParticipantEntry::kReaping
                          ? !token_alive(static_cast<std::uint16_t>(detail::pword_aux(w)))
                          : st != detail::ParticipantEntry::kFree && !participant_alive(p, w);
    if (!dead || !claim_slot(i, w, detail::next_epoch(detail::pword_epoch(w)), role, self)) continue;
    activate(self);
    SHMSCHED_FAULT_POINT(participant_takeover_claimed);
    clear_sleep_bits(i);
    ReapReport rep;
    const DeadOwner old{i + 1, token};
    sweep_ledgers(old);
    recover_records(old, rep);
    p.reaped.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

// Claims slot i, whose word is `w`, as epoch `epoch` and fills it in; false when the
// word changed under us.
inline bool Client::Impl::claim_slot(std::uint32_t i, std::uint64_t w, std::uint32_t new_epoch, Role role,
                                     const ProcessIdentity& self) noexcept {
  auto& p = core->participants[i];
  // (P1) acq_rel: claims the slot; the pid in the word lets a reaper judge a
  // registrant that dies before writing its start time.
  if (!p.word.compare_exchange_strong(
          w, detail::pword(detail::ParticipantEntry::kRegistering, new_epoch, static_cast<std::uint32_t>(self.pid)),
          std::memory_order_acq_rel))
    return false;
  SHMSCHED_FAULT_POINT(participant_register_claimed);
  p.pid.store(static_cast<std::uint32_t>(self.pid), std::memory_order_relaxed);
  p.start_time.store(self.start_time, std::memory_order_relaxed);
  p.role.store(static_cast<std::uint32_t>(role), std::memory_order_relaxed);
  p.heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
  p.activity.store(static_cast<std::uint32_t>(Activity::idle), std::memory_order_relaxed);
  p.current_task.store(0, std::memory_order_relaxed);
  p.sleepers.store(0, std::memory_order_relaxed);
  p.help_sleepers.store(0, std::memory_order_relaxed);
  p.workers.store(0, std::memory_order_relaxed);
  p.reaped.store(0, std::memory_order_relaxed);
  p.processed.store(0, std::memory_order_relaxed);
  me = &p;
  slot = i;
  my_counters = &core->counter(i, 0, 0);
  epoch = new_epoch;
  token = detail::make_token(i + 1, new_epoch);
  attached = true;
  return true;
}

inline void Client::Impl::activate(const ProcessIdentity& self) noexcept {
  // (P2) release: publishes pid, start time and role; pairs with readers' acquire.
  me->word.store(detail::pword(detail::ParticipantEntry::kActive, epoch, static_cast<std::uint32_t>(self.pid)),
                 std::memory_order_release);
}

inline bool Client::Impl::participant_alive(const detail::ParticipantEntry& p, std::uint64_t w) const noexcept {
  const auto pid = static_cast<std::int32_t>(p.pid.load(std::memory_order_relaxed));
  const std::uint64_t start = p.start_time.load(std::memory_order_relaxed);
  if (detail::pword_state(w) == detail::ParticipantEntry::kRegistering) {
    const auto rpid = static_cast<std::int32_t>(detail::pword_aux(w));
    if (start == 0 || pid != rpid) return ProcessIdentity::of(rpid).start_time != 0;
  }
  return ProcessIdentity{pid, start}.alive();
}

// The participant holding `token` is alive and active with that token.
inline bool Client::Impl::token_alive(std::uint16_t tok) const noexcept {
  const std::uint32_t i = detail::token_index(tok);
  if (i == 0 || i > core->layout.max_participants) return false;
  const auto& p = core->participants[i - 1];
  const std::uint64_t w = p.word.load(std::memory_order_acquire);
  if (detail::pword_epoch(w) != detail::token_epoch(tok)) return false;
  if (detail::pword_state(w) != detail::ParticipantEntry::kActive &&
      detail::pword_state(w) != detail::ParticipantEntry::kReaping)
    return false;
  return participant_alive(p, w);
}

inline ReapReport Client::Impl::reap_dead() noexcept {
  ReapReport rep;
  for (std::uint32_t i = 0; i < core->layout.max_participants; ++i) {
    if (i == slot) continue;
    auto& p = core->participants[i];
    std::uint64_t w = p.word.load(std::memory_order_acquire);
    const std::uint64_t st = detail::pword_state(w);
    if (st == detail::ParticipantEntry::kFree) continue;
    if (st == detail::ParticipantEntry::kReaping) {
      // Someone reaps it; take over only if that reaper died too.
      if (token_alive(static_cast<std::uint16_t>(detail::pword_aux(w)))) continue;
    } else if (participant_alive(p, w)) {
      continue;
    }
    const std::uint32_t epoch = detail::pword_epoch(w);
    // (P3) acq_rel: we own the slot's recovery now.
    if (!p.word.compare_exchange_strong(w, detail::pword(detail::ParticipantEntry::kReaping, epoch, token),
                                        std::memory_order_acq_rel))
      continue;
    SHMSCHED_FAULT_POINT(reap_after_claim);
    clear_sleep_bits(i);
    // Permits first: once a task is requeued another consumer may take it, and its
    // new run must not find the dead run's permit still granted.
    rep.permits_returned += sweep_ledgers(DeadOwner{i + 1, 0});
    recover_records(DeadOwner{i + 1, 0}, rep);
    me->reaped.fetch_add(1, std::memory_order_relaxed);
    // (P4) release: the slot is free again with epoch + 1, which fences the old token.
    p.word.store(detail::pword(detail::ParticipantEntry::kFree, detail::next_epoch(epoch), 0),
                 std::memory_order_release);
    ++rep.participants;
  }
  return rep;
}

inline void Client::Impl::deregister() noexcept {
  if (!attached) return;
  // Records held ahead go back first, in the order claimed and queued: the sweep
  // below would requeue them in index order, or dead-letter one whose attempts
  // were used up by earlier runs although this process never ran it.
  if (ahead != nullptr)
    for (std::uint32_t q = 0; q < core->layout.max_queues; ++q)
      if (ahead[q].held() != 0) give_back_ahead(static_cast<QueueId>(q), true);
  ReapReport rep;
  sweep_ledgers(DeadOwner{slot + 1, 0});
  recover_records(DeadOwner{slot + 1, 0}, rep);
  clear_sleep_bits(slot);
  SHMSCHED_FAULT_POINT(participant_deregister);
  me->activity.store(static_cast<std::uint32_t>(Activity::stopping), std::memory_order_relaxed);
  std::uint64_t w = detail::pword(detail::ParticipantEntry::kActive, epoch,
                                  static_cast<std::uint32_t>(me->pid.load(std::memory_order_relaxed)));
  // (P4') release: as (P4); fails only if we were reaped meanwhile.
  me->word.compare_exchange_strong(w, detail::pword(detail::ParticipantEntry::kFree, detail::next_epoch(epoch), 0),
                                   std::memory_order_release);
  attached = false;
}

}  // namespace shmsched
