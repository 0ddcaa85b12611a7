// The engine's public entry points; the protocols live in engine/.
#include <utility>

#include "engine/counters.hpp"
#include "engine/engine.hpp"
#include "shmsched/inspect.hpp"

namespace shmsched {

// -------------------------------------------------------------------------------------

// Out of line and cold (declared so in engine/impl.hpp): note_used calls it once per
// record of the table's first pass, never on the sweep's usual path.
void Client::Impl::raise_mark(std::uint32_t idx) noexcept {
  auto& mark = core->header->records_used;
  std::uint32_t cur = mark.load(std::memory_order_relaxed);
  // seq_cst RMW: a locked instruction, ordered before our reserve CAS, and paired with
  // scan_end's load.
  while (cur <= idx &&
         !mark.compare_exchange_weak(cur, idx + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) {
  }
}

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Client::Client(Client&& o) noexcept : impl_(std::move(o.impl_)) {}
Client& Client::operator=(Client&& o) noexcept {
  if (this != &o) {
    detach();
    impl_ = std::move(o.impl_);
  }
  return *this;
}
Client::~Client() {
  detach();
}

void Client::detach() noexcept {
  if (impl_) impl_->deregister();
}
Segment& Client::segment() noexcept {
  return *impl_->seg;
}
std::uint16_t Client::token() const noexcept {
  return impl_->token;
}

Result<Client> Client::attach(Segment& segment, Role role) {
  if (segment.is_read_only())
    return Error(Errc::permission_denied,
                 "segment '" + segment.name() + "' is open read-only: a participant writes to it (open it read-write)");
  auto impl = std::make_unique<Impl>();
  impl->bind(segment);
  if (!impl->register_participant(role))
    return Error(Errc::participant_table_full, "all " + std::to_string(impl->core->layout.max_participants) +
                                                   " participant slots are taken by live processes");
  return Client(std::move(impl));
}

Errc Client::enqueue_hashed(std::string_view type, std::uint64_t hash, std::span<const std::byte> payload,
                            const TaskOptions& options, TaskId* id) noexcept {
  return impl_->enqueue(type, hash, payload, options, id);
}

std::size_t Client::enqueue_batch(std::span<const TaskSpec> tasks, std::span<TaskId> ids, Errc* error) noexcept {
  std::size_t n = 0;
  Errc e = Errc::ok;
  if (ids.size() < tasks.size()) {
    e = Errc::invalid_argument;
  } else {
    const std::int64_t now = detail::coarse_now_ns();
    Impl::BatchDebts debts;
    while (n < tasks.size()) {
      const TaskSpec& t = tasks[n];
      if (Impl::goes_alone(t.options)) {  // delayed tasks and group members go one by one
        if (e = impl_->enqueue_one(t.type, type_hash(t.type), t.payload, t.options, &ids[n], now, &debts);
            e != Errc::ok)
          break;
        ++n;
        continue;
      }
      QueueId q = 0;
      if (e = impl_->check_spec(t.type, t.payload, t.options, q); e != Errc::ok) break;
      // Runnable tasks go as runs: one ring entry for up to 64 tasks of a (queue, level).
      n += impl_->enqueue_runs(tasks.subspan(n), ids.subspan(n), q, now, debts, e);
      // A table full of kept results gives up the oldest (an eviction) for the rest.
      if (e == Errc::table_full && n < tasks.size() && impl_->evict_result()) e = Errc::ok;
      if (e != Errc::ok) break;
    }
    impl_->settle(debts);
  }
  if (error != nullptr) *error = e;
  return n;
}

Errc Client::enqueue_wait(std::string_view type, std::span<const std::byte> payload, const TaskOptions& options,
                          std::chrono::nanoseconds timeout, TaskId* id) noexcept {
  const std::int64_t deadline = monotonic_ns() + timeout.count();
  const std::uint64_t hash = type_hash(type);
  for (unsigned spin = 0;; ++spin) {
    const Errc e = impl_->enqueue(type, hash, payload, options, id);
    if (e != Errc::table_full && e != Errc::ring_full) return e;
    if (monotonic_ns() >= deadline) return Errc::timeout;
    if (spin < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // waiting, not the fast path
    }
  }
}

bool Client::try_take(QueueId queue, Taken& out, bool as_helper) noexcept {
  return impl_->take(queue, out, as_helper);
}

Errc Client::set_take_ahead(QueueId queue, std::uint32_t n) noexcept {
  if (!impl_->attached) return Errc::not_attached;
  if (queue >= impl_->core->layout.max_queues || detail::named_state(impl_->core->queues[queue].word.load(
                                                     std::memory_order_relaxed)) != detail::QueueEntry::kReady)
    return Errc::unknown_queue;
  if (n == 0 || n > kMaxTakeAhead) return Errc::invalid_argument;
  // The new limit and the give-back of what is held, both under `busy`: a take that
  // held the buffer has finished with it, and one after reads the new limit (fill_ahead
  // reads it under `busy` too), so none is left holding more than the new limit allows.
  Impl::AheadUse use(impl_->take_buffer(queue, true));
  use.get()->limit.store(n, std::memory_order_relaxed);
  impl_->give_back_held(*use.get());
  return Errc::ok;
}

std::size_t Client::try_take_batch(QueueId queue, std::span<Taken> out) noexcept {
  return impl_->take_batch(queue, out);
}

Errc Client::complete(const Taken& task) noexcept {
  if (task.keep_result | task.in_group) [[unlikely]]
    return complete(task, {});
  // No load of the state word first: the freeing CAS expects the word the take left,
  // so it fails (fenced) on a record that is not ours any more.
  if (!impl_->names_record(task)) return Errc::fenced;
  SHMSCHED_FAULT_POINT(complete_before_free);
  const Errc e = impl_->free_record(task.index, task.word);
  if (e == Errc::ok) impl_->bump(impl_->counters(task.queue, task.level).done);
  return e;
}

Errc Client::complete(const Taken& task, std::span<const std::byte> result) noexcept {
  if (!task.keep_result && !task.in_group) return complete(task);
  if (!impl_->names_record(task)) return Errc::fenced;
  SHMSCHED_FAULT_POINT(complete_before_free);
  const Errc e = task.keep_result ? impl_->keep_result(task, result) : impl_->finish_member(task);
  if (e == Errc::ok) impl_->bump(impl_->counters(task.queue, task.level).done);
  return e;
}

std::size_t Client::complete_batch(std::span<const Taken> tasks, Errc* error) noexcept {
  // Counted once per run of equal (queue, level), as try_take_batch hands them out.
  std::size_t n = 0;
  Errc e = Errc::ok;
  std::size_t run = 0;
  for (; n < tasks.size(); ++n) {
    const Taken& t = tasks[n];
    if (!impl_->names_record(t)) {  // as in complete: the CAS decides ownership
      e = Errc::fenced;
      break;
    }
    SHMSCHED_FAULT_POINT(complete_before_free);
    e = t.keep_result ? impl_->keep_result(t, {})
        : t.in_group  ? impl_->finish_member(t)
                      : impl_->free_record(t.index, t.word);
    if (e != Errc::ok) break;
    ++run;
    if (n + 1 == tasks.size() || tasks[n + 1].queue != t.queue || tasks[n + 1].level != t.level) {
      Impl::bump(impl_->counters(t.queue, t.level).done, run);
      run = 0;
    }
  }
  if (run != 0) Impl::bump(impl_->counters(tasks[n - 1].queue, tasks[n - 1].level).done, run);
  if (error != nullptr) *error = e;
  return n;
}

Errc Client::requeue(const Taken& task) noexcept {
  if (!impl_->owns(task)) return Errc::fenced;
  return impl_->requeue_record(task.index, task.word);
}

Errc Client::dead_letter(const Taken& task, std::string_view reason) noexcept {
  if (!impl_->owns(task)) return Errc::fenced;
  Impl::bump(impl_->counters(task.queue, task.level).dead);
  return impl_->dead_letter_record(task.index, task.word, reason);
}

std::size_t Client::promote_due(std::int64_t now_ns) noexcept {
  return impl_->promote_due(now_ns);
}

std::int64_t Client::next_due_ns() const noexcept {
  return static_cast<std::int64_t>(impl_->core->header->delayed_next_due_ns.load(std::memory_order_acquire));
}

std::int64_t Client::sleep_until_due_ns(std::int64_t now_ns, std::int64_t max_ns) const noexcept {
  // seq_cst: in wait_for_due this is (D2)'s load.
  const auto due = static_cast<std::int64_t>(impl_->core->header->delayed_next_due_ns.load(std::memory_order_seq_cst));
  if (due == 0) return max_ns;
  // At least kMinDueSleepNs: a due time that stays in the past (a delayed task whose
  // ring is full is retried later) must not turn the sleep into a spin.
  return std::clamp<std::int64_t>(detail::sub_sat(due, now_ns), std::min<std::int64_t>(kMinDueSleepNs, max_ns), max_ns);
}

std::uint32_t Client::due_seq() const noexcept {
  return impl_->core->header->due_seq.load(std::memory_order_seq_cst);
}

bool Client::wait_for_due(std::uint32_t seen, std::chrono::nanoseconds max) noexcept {
  auto* h = impl_->core->header;
  h->due_waiters.fetch_add(1, std::memory_order_seq_cst);
  // (D2) seq_cst: after announcing ourselves; pairs with (D1) in notify_due.
  std::int64_t sleep_ns = sleep_until_due_ns(monotonic_ns(), max.count());
  if (holds_janitor_lease()) {  // and the next schedule, (D2) too: pairs with (H1)
    const std::int64_t due_ms = h->schedule_due_ms.load(std::memory_order_seq_cst);
    if (due_ms != 0)
      sleep_ns = std::min(sleep_ns, std::max<std::int64_t>(kMinDueSleepNs, (due_ms * 1'000'000) - unix_ns()));
  }
  const bool woken = sleep_ns > 0 && detail::futex_wait(h->due_seq, seen, sleep_ns);
  h->due_waiters.fetch_sub(1, std::memory_order_relaxed);
  return woken;
}

void Client::wake_housekeepers() noexcept {
  impl_->wake_housekeepers();
}

ReapReport Client::reap_dead() noexcept {
  return impl_->reap_dead();
}

TaskOptions& TaskOptions::after(std::chrono::nanoseconds d) {
  not_before_ns = monotonic_ns() + d.count();
  return *this;
}

}  // namespace shmsched

// ---- failure, retries, dead letters ------------------------------------------------

namespace shmsched {

std::chrono::milliseconds nominal_retry_delay(const RetryPolicy& policy, unsigned attempt) noexcept {
  const double cap = static_cast<double>(policy.max_delay.count());
  double d = static_cast<double>(policy.delay.count());
  for (unsigned i = 1; i < attempt && d < cap; ++i) d *= policy.backoff_x100 / 100.0;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::min(d, cap)));
}

RetryPolicy retry_policy_of(const Segment& segment, const Taken& task) noexcept {
  const detail::Core& core = detail::core_of(segment);
  if (task.index >= core.capacity) return {};
  const detail::TaskHot* hot = core.hot(task.index);
  RetryPolicy p;
  p.delay = std::chrono::milliseconds(hot->retry_delay_ms);
  if ((hot->flags & detail::kHasRetryPolicy) != 0) {
    const detail::TaskCold* cold = core.cold(task.index);
    p.backoff_x100 = cold->retry_backoff_x100;
    p.max_delay = std::chrono::milliseconds(cold->retry_max_delay_ms);
    p.jitter_pct = cold->retry_jitter_pct;
  }
  return p;
}

Errc Client::retry_or_dead_letter(const Taken& task, std::string_view reason, std::chrono::milliseconds delay,
                                  bool counts_as_failure) noexcept {
  auto& im = *impl_;
  if (!im.owns(task)) return Errc::fenced;
  auto* hot = im.core->hot(task.index);
  auto* cold = im.core->cold(task.index);
  auto& c = im.counters(task.queue, task.level);
  if (counts_as_failure) Impl::bump(c.failed);
  if (!reason.empty()) {
    detail::store_error(cold, reason);
    detail::set_field(hot->flags, static_cast<std::uint8_t>(hot->flags | detail::kHasError));
  }
  if (hot->attempts >= hot->max_attempts) {
    Impl::bump(c.dead);
    std::string why = "attempts exhausted (" + std::to_string(hot->attempts) + ")";
    if (!reason.empty()) why += ": " + std::string(reason);
    return im.dead_letter_record(task.index, task.word, why);
  }
  std::int64_t delay_ms = delay.count();
  if (delay_ms < 0) {
    // The policy's delay for this attempt, plus jitter.
    const RetryPolicy policy = retry_policy_of(*im.seg, task);
    double d = static_cast<double>(nominal_retry_delay(policy, hot->attempts).count());
    if (policy.jitter_pct != 0) {
      std::uint64_t r = im.random.fetch_add(0x9E3779B97F4A7C15ULL, std::memory_order_relaxed);
      r ^= r >> 31;
      r *= 0xBF58476D1CE4E5B9ULL;
      d += d * (static_cast<double>(r % 1000) / 1000.0) * policy.jitter_pct / 100.0;
    }
    delay_ms = static_cast<std::int64_t>(d);
  }
  Impl::bump(c.retried);
  std::uint64_t word = task.word;
  return im.delay_record(task.index, word, monotonic_ns() + delay_ms * 1000000);
}

std::vector<DeadLetter> Client::dead_letters(std::size_t max) const {
  return shmsched::dead_letters(*impl_->seg, max);
}

Errc Client::requeue_dead(TaskId id) noexcept {
  auto& im = *impl_;
  const std::uint32_t idx = im.core->id_index(id);
  auto& c = im.core->ctrl[idx];
  std::uint64_t s = c.state.load(std::memory_order_acquire);
  if (detail::state_of(s) != TaskState::dead || im.core->hot(idx)->id != id) return Errc::invalid_argument;
  if (im.record_defect(idx) != nullptr) return Errc::corrupt;  // stays a dead letter; its reason says why
  const std::uint64_t mine = next_word(s, TaskState::running, im.token);
  auto* hot = im.core->hot(idx);
  if ((hot->flags & detail::kHasGroup) != 0) {
    // A member's revival takes it back out of its group's failed count (a counted step),
    // announced as an addition: only while the group has not finished.
    if (auto* ge = im.group_entry(im.core->cold(idx)->group_id)) {
      const GroupId g = im.core->cold(idx)->group_id;
      Impl::Lane lane(im);
      if (const Errc e = im.announce(lane, ge, g, true); e != Errc::ok) return e;
      const Errc moved = im.counted_move(
          idx, s, mine, detail::GroupCounters::kFailed, ~std::uint64_t{0},
          [&]() noexcept {
            std::uint64_t w = s;
            return c.state.compare_exchange_strong(w, mine, std::memory_order_acq_rel) ? Errc::ok
                                                                                       : Errc::invalid_argument;
          },
          &lane);
      im.unannounce(lane, ge, g, moved != Errc::ok);
      if (moved != Errc::ok) return moved;
    } else if (!c.state.compare_exchange_strong(s, mine, std::memory_order_acq_rel)) {
      return Errc::invalid_argument;
    }
  } else if (!c.state.compare_exchange_strong(s, mine, std::memory_order_acq_rel)) {
    return Errc::invalid_argument;
  }
  Impl::bump(im.counters(hot->queue, hot->level).enqueued);  // back in flight: counts as enqueued again
  detail::set_field(hot->attempts, std::uint16_t{0});
  detail::set_field(hot->flags, static_cast<std::uint8_t>(hot->flags & ~detail::kHasError));
  return im.requeue_record(idx, mine);
}

std::size_t Client::requeue_all_dead() noexcept {
  std::size_t n = 0;
  for (std::uint32_t i = 0, end = impl_->core->scan_end(); i < end; ++i) {
    const std::uint64_t s = impl_->core->ctrl[i].state.load(std::memory_order_acquire);
    if (detail::state_of(s) == TaskState::dead && requeue_dead(impl_->core->hot(i)->id) == Errc::ok) ++n;
  }
  return n;
}

std::size_t Client::purge_dead() noexcept {
  std::size_t n = 0;
  for (std::uint32_t i = 0, end = impl_->core->scan_end(); i < end; ++i) {
    std::uint64_t s = impl_->core->ctrl[i].state.load(std::memory_order_acquire);
    if (detail::state_of(s) != TaskState::dead) continue;
    if (impl_->core->ctrl[i].state.compare_exchange_strong(s, next_word(s, TaskState::free, impl_->token),
                                                           std::memory_order_acq_rel))
      ++n;
  }
  return n;
}

// ---- sleeping and waking -------------------------------------------------------------

std::uint32_t Client::doorbell() const noexcept {
  // seq_cst: read before announce_sleep's seq_cst bit sets and the last look for work.
  return impl_->me->doorbell.load(std::memory_order_seq_cst);
}

namespace {
void set_bits(detail::Core& core, std::uint32_t slot, std::span<const QueueId> qs, bool help, bool on) noexcept {
  const std::uint64_t bit = std::uint64_t{1} << (slot % 64);
  for (QueueId q : qs) {
    if (q >= core.layout.max_queues) continue;
    detail::AtomicU64* words = help ? core.sleepers[q].help : core.sleepers[q].home;
    auto& word = words[slot / 64];
    // seq_cst: the sleeper half of the Dekker pair with notify()'s loads.
    if (on) {
      word.fetch_or(bit, std::memory_order_seq_cst);
    } else {
      word.fetch_and(~bit, std::memory_order_seq_cst);
    }
  }
}
}  // namespace

// A participant's home bits are set while any of its workers sleeps, its help bits
// while a worker that may help sleeps (reserved workers never count there), so a help
// wake only goes to a process with a sleeper able to take the task.
void Client::announce_sleep(std::span<const QueueId> home, std::span<const QueueId> help) noexcept {
  auto& im = *impl_;
  im.me->sleepers.fetch_add(1, std::memory_order_seq_cst);
  set_bits(*im.core, im.slot, home, false, true);
  if (!help.empty()) {
    im.me->help_sleepers.fetch_add(1, std::memory_order_seq_cst);
    set_bits(*im.core, im.slot, help, true, true);
  }
}

namespace {
// Counts one sleeper of a class out; the last one clears that class's bits. If another
// worker announced meanwhile, our clear may have erased its bits: set them again and
// make every sleeper here look once more (at worst a task waits for a tick, never lost).
bool leave(detail::AtomicU32& count, detail::Core& core, std::uint32_t slot, std::span<const QueueId> qs, bool help) {
  if (count.fetch_sub(1, std::memory_order_seq_cst) != 1) return false;
  set_bits(core, slot, qs, help, false);
  if (count.load(std::memory_order_seq_cst) == 0) return false;
  set_bits(core, slot, qs, help, true);
  return true;
}
}  // namespace

bool Client::sleep(std::uint32_t seen, std::chrono::nanoseconds timeout) noexcept {
  return detail::futex_wait(impl_->me->doorbell, seen, timeout.count());
}

void Client::wake_up(std::span<const QueueId> home, std::span<const QueueId> help) noexcept {
  auto& im = *impl_;
  bool ring = leave(im.me->sleepers, *im.core, im.slot, home, false);
  if (!help.empty()) ring |= leave(im.me->help_sleepers, *im.core, im.slot, help, true);
  if (ring) ring_own_doorbell();
}

void Client::ring_own_doorbell() noexcept {
  impl_->ring_doorbell(impl_->slot, INT32_MAX);
}

// ---- housekeeping ----------------------------------------------------------------

bool Client::janitor_tick(std::int64_t now_ns) noexcept {
  auto& im = *impl_;
  auto* h = im.core->header;
  im.me->heartbeat_ns.store(now_ns, std::memory_order_relaxed);  // every consumer beats, lease or not
  im.age_ahead();                                                // this process's own duty, lease or not
  std::uint64_t lease = h->janitor_lease.load(std::memory_order_acquire);
  if (lease != im.token) {
    const std::int64_t renewed = h->janitor_renewed_ns.load(std::memory_order_relaxed);
    // The lease is a term: a holder that has not renewed for kJanitorTermNs is replaced,
    // dead or not. A stopped (SIGSTOP) or wedged holder must not keep everyone's dead
    // from being reaped; when it runs again it finds another token here and knows it
    // lost the lease (every duty is CAS-safe, so a late duty of its own is harmless).
    if (lease != 0 && detail::sub_sat(now_ns, renewed) < kJanitorTermNs) return false;
    // (J1) acq_rel: one janitor at a time (two would still be safe: every duty is CAS).
    if (!h->janitor_lease.compare_exchange_strong(lease, im.token, std::memory_order_acq_rel)) return false;
  }
  h->janitor_renewed_ns.store(now_ns, std::memory_order_relaxed);
  im.me->heartbeat_ns.store(now_ns, std::memory_order_relaxed);
  im.promote_due(now_ns);
  im.fire_schedules(unix_ns() / 1'000'000);
  for (std::uint32_t sem = 0; sem < im.permits.size(); ++sem) im.tend_parked(sem);
  im.promote_aged();
  const std::int64_t last = im.last_reap.load(std::memory_order_relaxed);
  if (now_ns - last > 1'000'000'000) {
    im.last_reap.store(now_ns, std::memory_order_relaxed);
    im.reap_dead();
    im.expire_results(now_ns);
    im.tend_groups(now_ns);
  }
  return true;
}

std::size_t Client::shift_level(QueueId queue, std::uint8_t from, std::uint8_t to) noexcept {
  if (!impl_->attached || queue >= impl_->core->layout.max_queues || from >= impl_->core->levels ||
      to >= impl_->core->levels || from == to)
    return 0;
  return impl_->shift_level(queue, from, to);
}

std::size_t Client::fire_schedules(std::int64_t now_ms) noexcept {
  return impl_->fire_schedules(now_ms);
}

bool Client::holds_janitor_lease() const noexcept {
  // relaxed: a hint for the housekeeper; every duty is CAS-safe without the lease.
  return impl_->attached && impl_->core->header->janitor_lease.load(std::memory_order_relaxed) == impl_->token;
}

void Client::set_aging(QueueId queue, std::chrono::milliseconds bound, AgingMode mode) noexcept {
  if (queue >= impl_->core->layout.max_queues) return;
  auto& e = impl_->core->queues[queue];
  // relaxed: a policy takers and the janitor read as a hint.
  if (mode == AgingMode::promote) {
    e.flags.fetch_or(detail::QueueEntry::kAgingPromotes, std::memory_order_relaxed);
  } else {
    e.flags.fetch_and(~detail::QueueEntry::kAgingPromotes, std::memory_order_relaxed);
  }
  e.aging_ms.store(static_cast<std::uint32_t>(bound.count()), std::memory_order_relaxed);
}

LevelStats Client::level_stats(QueueId queue, std::uint8_t level) const noexcept {
  const auto& core = *impl_->core;
  if (queue >= core.layout.max_queues || level >= core.levels) return {};
  return detail::sum_level(core, queue, level);
}

void Client::count_processed(std::uint64_t n) noexcept {
  impl_->me->processed.fetch_add(n, std::memory_order_relaxed);
}

StatusBoard Client::status_board() noexcept {
  auto* me = impl_->me;
  return StatusBoard(&me->workers, &me->activity, &me->current_task);
}

bool Client::queue_limit(QueueId queue, SemId& sem) const noexcept {
  if (queue >= impl_->core->layout.max_queues) return false;
  // acquire: pairs with set_queue_limit's release, which publishes the semaphore first.
  const std::uint32_t limit = impl_->core->queues[queue].limit_sem.load(std::memory_order_acquire);
  if (limit == 0) return false;
  sem = static_cast<SemId>(limit - 1);
  return true;
}

}  // namespace shmsched
