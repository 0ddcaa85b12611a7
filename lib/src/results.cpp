// Client's kept results (take_result, wait), cancel and re-prioritise. The protocols are
// engine/results.hpp's, engine/cancel.hpp's and engine/priority.hpp's.

#include "engine/engine.hpp"

namespace shmsched {

Result<TaskResult> Client::take_result(TaskId id) {
  try {
    TaskResult out;
    if (const Errc e = impl_->take_result(id, out); e != Errc::ok) return Error(e, "task " + std::to_string(id));
    return out;
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

Result<TaskResult> Client::wait(TaskId id, std::chrono::nanoseconds timeout) {
  auto& im = *impl_;
  const std::uint32_t idx = im.core->id_index(id);
  if (id == kNoTask || idx >= im.core->capacity) return Error(Errc::unknown_task, "task " + std::to_string(id));
  auto& state = im.core->ctrl[idx].state;
  auto& waiters = im.core->header->result_waiters;
  const std::int64_t now = monotonic_ns();
  const std::int64_t deadline = timeout.count() > INT64_MAX - now ? INT64_MAX : now + timeout.count();
  for (;;) {
    // Read the word before the look, so that a finish after the look changes it (the
    // futex compares the word's low half, which changes on every transition).
    const std::uint64_t seen = state.load(std::memory_order_seq_cst);
    auto r = take_result(id);
    if (r || (r.code() != Errc::not_finished && r.code() != Errc::unavailable)) return r;
    if ((detail::peek_field(im.core->hot(idx)->flags) & detail::kKeepResult) == 0)
      return Error(Errc::invalid_argument,
                   "task " + std::to_string(id) + " was not enqueued with keep_result: nothing is kept to wait for");
    const std::int64_t left = deadline - monotonic_ns();
    if (left <= 0) return Error(Errc::timeout, "task " + std::to_string(id) + " has not finished");
    // seq_cst, count then look: the Dekker pair with publish_outcome (a finisher's
    // CAS, then its look at the count). At most 100 ms asleep at a time: a finisher that
    // died between its CAS and its wake costs no more.
    waiters.fetch_add(1, std::memory_order_seq_cst);
    if (state.load(std::memory_order_seq_cst) == seen)
      detail::futex_wait_low(state, static_cast<std::uint32_t>(seen), std::min<std::int64_t>(left, 100'000'000));
    waiters.fetch_sub(1, std::memory_order_seq_cst);
  }
}

Result<CancelOutcome> Client::cancel(TaskId id) noexcept {
  CancelOutcome out{};
  if (const Errc e = impl_->cancel(id, out); e != Errc::ok) return Result<CancelOutcome>(e, "");
  return out;
}

CancelCounts Client::cancel_queue(QueueId queue) noexcept {
  return impl_->cancel_matching(queue, 0, 0);
}

CancelCounts Client::cancel_type(std::string_view type) noexcept {
  return impl_->cancel_matching(Impl::kAnyQueue, type_hash(type), 0);
}

CancelCounts Client::cancel_group(std::uint64_t group_id) noexcept {
  if (group_id == 0) return {};
  return impl_->cancel_matching(Impl::kAnyQueue, 0, group_id);
}

Errc Client::set_priority(TaskId id, std::uint8_t level) noexcept {
  return impl_->set_priority(id, level);
}

std::size_t Client::set_group_priority(std::uint64_t group_id, std::uint8_t level) noexcept {
  if (group_id == 0 || level >= impl_->core->levels) return 0;
  return impl_->set_group_priority(group_id, level);
}

bool Client::cancel_requested(const Taken& task) const noexcept {
  return impl_->cancel_requested(task);
}

Errc Client::finish_cancelled(const Taken& task) noexcept {
  if (!impl_->owns(task)) return Errc::fenced;
  return impl_->finish_cancelled(task.index, task.word);
}

}  // namespace shmsched
