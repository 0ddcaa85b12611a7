// Enqueue of one task: checking the task, resolving its queue, writing its record and
// publishing it (or delaying it), and the debts a batch settles once at its end
// (counters and one wake-up look per queue). The batch's runs: enqueue_batch.hpp.
#pragma once

#include "impl.hpp"

namespace shmsched {

// The ready queue `ref` names, in `q`.
inline Errc Client::Impl::resolve_queue(const QueueRef& ref, QueueId& q) const noexcept {
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
inline Errc Client::Impl::check_spec(std::string_view type, std::span<const std::byte> payload, const TaskOptions& o,
                                     QueueId& q, const QueueId* known) const noexcept {
  if (!attached) return Errc::not_attached;
  if (type.empty() || type.size() > detail::kMaxTypeName) return Errc::invalid_name;
  if (payload.size() > core->layout.payload_bytes) return Errc::payload_too_large;
  if (known != nullptr) {
    q = *known;
  } else if (Errc e = resolve_queue(o.queue, q); e != Errc::ok) {
    return e;
  }
  if (o.priority >= core->levels || o.max_attempts == 0) return Errc::invalid_argument;
  if (o.keep_result && (o.result_ttl.count() < 1 || o.result_ttl.count() > UINT32_MAX)) return Errc::invalid_argument;
  Need needs[2] = {o.needs[0], o.needs[1]};
  merge_needs(needs);  // a semaphore named twice needs the sum
  for (const Need& n : needs) {
    if (n.count == 0) continue;
    const detail::SemaphoreEntry* e = permits.entry(n.sem);
    if (e == nullptr) return Errc::unknown_semaphore;
    if (n.count > detail::Permits::capacity(*e)) return Errc::need_exceeds_capacity;
  }
  return Errc::ok;
}

// `th` is type_hash(type).
inline Errc Client::Impl::enqueue(std::string_view type, std::uint64_t th, std::span<const std::byte> payload,
                                  const TaskOptions& o, TaskId* id) noexcept {
  return enqueue_one(type, th, payload, o, id, detail::coarse_now_ns(), nullptr);
}

inline void Client::Impl::owe(BatchDebts& b, QueueId q, std::uint8_t level, std::uint32_t count) noexcept {
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

inline void Client::Impl::settle(BatchDebts& b) noexcept {
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
inline TaskId Client::Impl::fill_record(std::uint32_t idx, std::uint64_t word, std::uint64_t th,
                                        std::span<const std::byte> payload, const TaskOptions& o, QueueId q,
                                        std::int64_t now) noexcept {
  auto* b = core->hot(idx);
  const TaskId tid = core->make_id(detail::version_of(word), idx);
  std::atomic_ref<std::uint64_t>(b->id).store(tid, std::memory_order_relaxed);  // ledger checks read it
  detail::set_field(b->type_hash, th);
  std::atomic_ref<std::int64_t>(b->enqueued_ns).store(now, std::memory_order_relaxed);
  detail::store_not_before(b, o.not_before_ns);
  detail::set_field(b->expires_ns, o.expires_ns);
  b->payload_len = static_cast<std::uint32_t>(payload.size());
  std::atomic_ref<std::uint16_t>(b->queue).store(q, std::memory_order_relaxed);  // inspect reads it
  detail::set_field(b->level, o.priority);
  detail::set_field(b->attempts, std::uint16_t{0});
  detail::set_field(b->max_attempts, o.max_attempts);
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
      o.retry.jitter_pct != defaults.jitter_pct || o.group_id != 0 || o.keep_result) {
    auto* cold = core->cold(idx);
    detail::set_field(cold->group_id, o.group_id);  // cancel_group reads it without owning the record
    cold->retry_max_delay_ms = static_cast<std::uint32_t>(o.retry.max_delay.count());
    cold->retry_backoff_x100 = o.retry.backoff_x100;
    cold->retry_jitter_pct = o.retry.jitter_pct;
    cold->result_ttl_s = static_cast<std::uint32_t>(o.result_ttl.count());
    flags =
        detail::kHasRetryPolicy | (o.group_id != 0 ? detail::kHasGroup : 0) | (o.keep_result ? detail::kKeepResult : 0);
  }
  detail::set_field(b->flags, flags);
  if (!payload.empty()) std::memcpy(core->payload(idx), payload.data(), payload.size());
  return tid;
}

// One task; `now` is the coarse enqueue time (shared by a batch). With `batch`, the
// counter bump and the wake-up look are left to the batch (settle).
[[gnu::always_inline]] inline Errc Client::Impl::enqueue_one(std::string_view type, std::uint64_t th,
                                                             std::span<const std::byte> payload, const TaskOptions& o,
                                                             TaskId* id, std::int64_t now, BatchDebts* batch) noexcept {
  if ((o.group_id | o.after_group | o.after_task | static_cast<std::uint64_t>(o.pipe)) != 0) [[unlikely]]
    return enqueue_member(type, th, payload, o, id, now);
  QueueId q = 0;
  if (Errc e = check_spec(type, payload, o, q); e != Errc::ok) return e;
  std::uint32_t idx = 0;
  std::uint64_t word = 0;
  if (Errc e = alloc(idx, word); e != Errc::ok) [[unlikely]] {
    // A table full of kept results gives up the oldest (an eviction) to take this task.
    if (e != Errc::table_full || !evict_result()) return e;
    if (e = alloc(idx, word); e != Errc::ok) return e;
  }
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

// Whether task t may follow `prev` (checked already, its queue resolved to prev_q) in
// a stretch; t's queue in `q`. When it shares prev's type, its queue and having no
// needs (the usual batch), what is left to check is a few compares; anything else
// gets the full check.
inline Errc Client::Impl::check_next(const TaskSpec& t, const TaskSpec& prev, QueueId prev_q,
                                     QueueId& q) const noexcept {
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

}  // namespace shmsched
