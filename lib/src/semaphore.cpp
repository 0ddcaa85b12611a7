// The semaphore API: Segment's table (create, find, list) and Client's permits (direct
// acquire and release, a task's acquire_for and release_for, capacity, audit). The
// permits are the semaphore layer's (permits.hpp); parking and holders, the engine's
// (engine/parking.hpp, engine/holders.hpp). See semaphore.hpp for the contract and
// docs/resources.md for the protocol.

#include "engine/engine.hpp"
#include "permits.hpp"
#include "rate.hpp"
#include "shmsched/detail/name_table.hpp"

namespace shmsched {

namespace {
using detail::Permits;
using detail::SemaphoreEntry;
}  // namespace

// ---- table -----------------------------------------------------------------------------

Result<SemId> Segment::create_semaphore(std::string_view name, std::uint32_t capacity) noexcept {
  try {
    if (auto v = validate_short_name(name, kMaxSemaphoreName, "semaphore"); !v) return v.error();
    if (capacity > kMaxSemaphoreCapacity)
      return Error(Errc::invalid_argument, "semaphore capacity must be 0.." + std::to_string(kMaxSemaphoreCapacity));
    if (is_read_only()) {
      if (auto s = find_semaphore(name); s || s.code() != Errc::unknown_semaphore) return s;
      return Error(
          Errc::permission_denied,
          "segment '" + this->name() + "' is open read-only: cannot create semaphore '" + std::string(name) + "'");
    }
    auto& core = this->core();
    // The first capacity set wins; an existing semaphore keeps its capacity.
    const std::int64_t i =
        detail::claim_named(core.semaphores, core.layout.max_semaphores, name, [&](SemaphoreEntry& e) {
          std::uint64_t zero = 0;
          e.permits.compare_exchange_strong(zero, std::uint64_t{capacity} << Permits::kSlots,
                                            std::memory_order_relaxed);
        });
    if (i < 0)
      return Error(Errc::semaphore_table_full, "no room for semaphore '" + std::string(name) + "' (max_semaphores " +
                                                   std::to_string(core.layout.max_semaphores) + ")");
    return static_cast<SemId>(i);
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

Result<SemId> Segment::find_semaphore(std::string_view name) const noexcept {
  try {
    if (auto v = validate_short_name(name, kMaxSemaphoreName, "semaphore"); !v) return v.error();
    const auto& core = this->core();
    const std::int64_t i = detail::find_named(core.semaphores, core.layout.max_semaphores, name);
    if (i < 0) return Error(Errc::unknown_semaphore, "no semaphore named '" + std::string(name) + "'");
    return static_cast<SemId>(i);
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

std::vector<SemaphoreInfo> Segment::semaphores() const {
  std::vector<SemaphoreInfo> out;
  const auto& core = this->core();
  for (std::uint32_t i = 0; i < core.layout.max_semaphores; ++i) {
    const auto& e = core.semaphores[i];
    if (detail::named_state(e.word.load(std::memory_order_acquire)) != SemaphoreEntry::kReady) continue;
    const std::uint64_t p = e.permits.load(std::memory_order_acquire);
    SemaphoreInfo info{static_cast<SemId>(i),
                       detail::read_name(e.name),
                       Permits::capacity_of(p),
                       Permits::in_use_of(p),
                       0,
                       e.waiters.load(std::memory_order_relaxed),
                       detail::rate_per_second(e.rate),
                       detail::rate_burst(e.rate),
                       e.rate.granted.load(std::memory_order_relaxed),
                       e.rate.delayed.load(std::memory_order_relaxed)};
    for (std::uint32_t l = 0; l < core.levels; ++l) info.parked += core.ring(core.park_ring_id(i, l)).depth_guess();
    out.push_back(std::move(info));
  }
  return out;
}

// ---- Client --------------------------------------------------------------------------------

Errc Client::set_capacity(SemId sem, std::uint32_t capacity) noexcept {
  auto* e = impl_->permits.entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  if (capacity > kMaxSemaphoreCapacity) return Errc::invalid_argument;
  Permits::set_capacity(*e, capacity);
  impl_->permits_freed(*e, sem);
  return Errc::ok;
}

Errc Client::set_queue_limit(QueueId queue, std::uint32_t n) noexcept {
  auto& core = *impl_->core;
  if (queue >= core.layout.max_queues ||
      detail::named_state(core.queues[queue].word.load(std::memory_order_acquire)) != detail::QueueEntry::kReady)
    return Errc::unknown_queue;
  if (n > kMaxSemaphoreCapacity) return Errc::invalid_argument;
  if (n == 0) {
    core.queues[queue].limit_sem.store(0, std::memory_order_release);
    return Errc::ok;
  }
  auto sem = impl_->seg->create_semaphore("queue:" + std::to_string(queue), n);
  if (!sem) return sem.code();
  if (const Errc e = set_capacity(*sem, n); e != Errc::ok) return e;
  // release: consumers that see the limit see the semaphore ready.
  core.queues[queue].limit_sem.store(std::uint32_t{*sem} + 1, std::memory_order_release);
  return Errc::ok;
}

Errc Client::try_acquire(SemId sem, std::uint32_t n) noexcept {
  auto* e = impl_->permits.entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  if (n > kMaxSemaphoreCapacity) return Errc::need_exceeds_capacity;
  return Permits::try_acquire(*e, n, impl_->direct_holder()) ? Errc::ok : Errc::unavailable;
}

Errc Client::acquire(SemId sem, std::uint32_t n, std::chrono::nanoseconds timeout) noexcept {
  auto* e = impl_->permits.entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  if (n > kMaxSemaphoreCapacity) return Errc::need_exceeds_capacity;
  return Permits::acquire(*e, n, impl_->direct_holder(), timeout.count()) ? Errc::ok : Errc::timeout;
}

Errc Client::release(SemId sem, std::uint32_t n) noexcept {
  auto* e = impl_->permits.entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  const std::uint32_t done = Permits::release(*e, n, impl_->direct_holder());
  impl_->permits_freed(*e, sem);
  return done == n ? Errc::ok : Errc::invalid_argument;  // released fewer than asked: not held
}

Errc Client::set_rate(SemId sem, double per_second, std::uint32_t burst) noexcept {
  auto* e = impl_->permits.entry(sem);
  if (e == nullptr) return Errc::unknown_semaphore;
  if (!(per_second >= 0) || per_second > 1e9 || burst == 0) return Errc::invalid_argument;
  detail::set_rate(e->rate, per_second, burst);
  return Errc::ok;
}

Errc Client::set_queue_rate(QueueId queue, double per_second, std::uint32_t burst) noexcept {
  if (!impl_->attached || queue >= impl_->core->layout.max_queues) return Errc::unknown_queue;
  if (!(per_second >= 0) || per_second > 1e9 || burst == 0) return Errc::invalid_argument;
  detail::set_rate(impl_->core->queues[queue].rate, per_second, burst);
  return Errc::ok;
}

bool Client::queue_rated(QueueId queue) const noexcept {
  return queue < impl_->core->layout.max_queues && detail::rate_limited(impl_->core->queues[queue].rate);
}

// The rate gate of acquire_for: a token of every rate limit the task is under (its
// queue's, its semaphores'), unless it holds the ones it waited for. True: go on. False:
// its tokens are not due, and it waits for the latest, delayed (or it was not ours).
bool Client::Impl::rate_gate(const Taken& task, std::span<const Need> needs, Grant& g, bool& limited) noexcept {
  detail::RateLimit* limits[3] = {};
  std::size_t n = 0;
  if (task.queue < core->layout.max_queues && detail::rate_limited(core->queues[task.queue].rate))
    limits[n++] = &core->queues[task.queue].rate;
  for (const Need& need : needs)
    if (need.count != 0)
      if (auto* e = permits.entry(need.sem); e != nullptr && detail::rate_limited(e->rate)) limits[n++] = &e->rate;
  limited = n != 0;
  if (n == 0) return true;
  auto* cold = core->cold(task.index);
  if (cold->rate_token == task.id) return true;  // waited for them: they are due now
  const std::int64_t now = monotonic_ns();
  std::int64_t due = now;
  for (std::size_t i = 0; i < n; ++i) due = std::max(due, detail::take_token(*limits[i], now));
  if (due <= now) return true;
  for (std::size_t i = 0; i < n; ++i) limits[i]->delayed.fetch_add(1, std::memory_order_relaxed);
  // Waiting is not an attempt (as parking): the run that follows counts it.
  auto* b = core->hot(task.index);
  detail::set_field(b->attempts, static_cast<std::uint16_t>(b->attempts - 1));
  counters(task.queue, task.level).started.fetch_sub(1, std::memory_order_relaxed);  // our own line, as bump
  cold->rate_token = task.id;
  std::uint64_t word = task.word;
  g = delay_record(task.index, word, due) == Errc::ok ? Grant::parked : Grant::error;
  return false;
}

Client::Grant Client::acquire_for(const Taken& task, std::span<const Need> needs) noexcept {
  auto& im = *impl_;
  if (!im.owns(task)) return Grant::error;
  bool limited = false;
  if (Grant g = Grant::granted; !im.rate_gate(task, needs, g, limited)) return g;
  // Ascending semaphore order, never blocking: no deadlock between tasks with
  // overlapping needs, whatever order they list them in.
  // A semaphore named twice is one need of the sum (merge_needs). A need above the
  // capacity parks, and stays parked (unpark_to_queues moves a task only when its need
  // is free) until the capacity is raised.
  Need sorted[2] = {};
  for (std::size_t i = 0; i < needs.size() && i < 2; ++i) sorted[i] = needs[i];
  merge_needs(sorted);
  const std::size_t k = sorted[1].count != 0 ? 2 : sorted[0].count != 0 ? 1 : 0;
  if (k == 2 && sorted[1].sem < sorted[0].sem) std::swap(sorted[0], sorted[1]);
  const std::uint64_t holder = Impl::task_holder(task);
  SemaphoreEntry* held[2] = {};
  for (std::size_t i = 0; i < k; ++i) {
    SemaphoreEntry* e = im.permits.entry(sorted[i].sem);
    if (e != nullptr && Permits::try_acquire(*e, sorted[i].count, holder)) {
      held[i] = e;
      continue;
    }
    for (std::size_t j = 0; j < i; ++j) Permits::release(*held[j], UINT32_MAX, holder);
    for (std::size_t j = 0; j < i; ++j) Permits::wake_sleepers(*held[j]);
    if (e == nullptr) {
      // Either way the task is not ours: dead-lettered, or fenced (recovery has it).
      (void)im.dead_letter_record(task.index, task.word, "needs an unknown semaphore");
      return Grant::error;
    }
    // Park on the semaphore that was not free (its rate tokens, if it waited for them,
    // stay its own).
    return im.park(task, *e, sorted[i].sem);
  }
  if (limited) im.core->cold(task.index)->rate_token = 0;  // used: a later attempt takes new ones
  return Grant::granted;
}

bool Client::release_for(const Taken& task, std::span<const Need> needs, Taken* next) noexcept {
  auto& im = *impl_;
  const std::uint64_t holder = Impl::task_holder(task);
  std::uint32_t sems[2];
  std::size_t k = 0;
  for (const Need& n : needs) {
    if (n.count == 0 || k == 2) continue;
    SemaphoreEntry* e = im.permits.entry(n.sem);
    if (e != nullptr && Permits::release(*e, UINT32_MAX, holder) != 0) {
      Permits::wake_sleepers(*e);
      sems[k++] = n.sem;
    }
  }
  return im.hand_over(std::span<const std::uint32_t>(sems, k), next);
}

Result<void> Client::verify_permits() const {
  std::string problems;
  const auto& im = *impl_;
  for (std::uint32_t sem = 0; sem < im.permits.size(); ++sem) {
    const auto* e = im.permits.entry(sem);
    if (e == nullptr) continue;
    const std::string p = Permits::audit(*e, [&](std::uint64_t h) { return im.holder_valid(h, nullptr); });
    if (!p.empty()) problems += "semaphore '" + detail::read_name(e->name) + "': " + p;
  }
  if (!problems.empty()) return Result<void>(Errc::corrupt, problems);
  return {};
}

}  // namespace shmsched
