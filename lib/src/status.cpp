// task_status (Client::status): a task's state and fields by id, read without owning the record.
//
// The record's state word versions every transition, so the read is a seqlock's: the
// word, then the fields (relaxed atomics, written by owners with detail::set_field),
// then the word again; equal words mean no transition came between, so the fields are
// those of one moment of the task the id names. The id check (the record's id field
// against the asked one, read inside the same window) keeps a reused record from
// answering for another task.

#include "engine/impl.hpp"
#include "shmsched/inspect.hpp"

namespace shmsched {

namespace {

// The fields of record `i`, read inside the caller's window; false when the record holds
// another task.
bool read_fields(const detail::Core& core, std::uint32_t i, TaskId id, TaskInfo& out) {
  const detail::TaskHot* b = core.hot(i);
  if (detail::peek_field(b->id) != id) return false;
  const std::uint64_t th = detail::peek_field(b->type_hash);
  out.type = std::string(core.type_name(th));
  out.queue = detail::peek_field(b->queue);
  out.priority = detail::peek_field(b->level);
  out.attempts = detail::peek_field(b->attempts);
  out.max_attempts = detail::peek_field(b->max_attempts);
  out.enqueued_ns = detail::peek_field(b->enqueued_ns);
  out.not_before_ns = detail::peek_field(b->not_before_ns);
  out.expires_ns = detail::peek_field(b->expires_ns);
  const std::uint8_t flags = detail::peek_field(b->flags);
  out.keep_result = (flags & detail::kKeepResult) != 0;
  out.last_error.clear();
  if ((flags & detail::kHasError) != 0) out.last_error = detail::load_error(core.cold(i));
  out.waits_for = 0;
  out.waits_for_group = false;
  if (out.status == TaskStatus::waiting && (flags & detail::kHasGate) != 0) {
    out.waits_for = detail::peek_field(core.cold(i)->gate);
    out.waits_for_group = (flags & detail::kGateGroup) != 0;
  }
  if (out.status == TaskStatus::running) out.cancel_requested = detail::peek_field(core.cold(i)->cancel_id) == id;
  if (out.status == TaskStatus::done || out.status == TaskStatus::cancelled) {
    out.result_bytes = detail::peek_field(b->payload_len);
    out.finished_ns = detail::peek_field(core.cold(i)->finished_ns);
  }
  return true;
}

std::int32_t pid_of(const detail::Core& core, std::uint16_t token) {
  const std::uint32_t p = detail::token_index(token);
  if (p == 0 || p > core.layout.max_participants) return 0;
  return static_cast<std::int32_t>(core.participants[p - 1].pid.load(std::memory_order_relaxed));
}

}  // namespace

Result<TaskInfo> task_status(const Segment& segment, TaskId id) {
  try {
    const detail::Core& core = detail::core_of(segment);
    TaskInfo info;
    info.id = id;
    const std::uint32_t i = core.id_index(id);
    if (id == kNoTask || i >= core.capacity) return info;
    const auto& state = core.ctrl[i].state;
    // A task moves a few times in its life; a window that keeps closing on a moving
    // task is tried again, a bounded number of times.
    for (int tries = 0; tries < 64; ++tries) {
      // acquire: the fields the last transition's owner wrote before it are visible.
      const std::uint64_t before = state.load(std::memory_order_acquire);
      const TaskStatus st = status_of(detail::state_of(before));
      if (st == TaskStatus::unknown) return info;
      TaskInfo read = info;
      read.status = st;
      if (!read_fields(core, i, id, read)) return info;
      // acquire fence: the field loads above come before the word's second load, so a
      // field written by a later owner (after its claiming CAS, a locked instruction
      // that later stores do not pass on x86-64) shows as a changed word.
      std::atomic_thread_fence(std::memory_order_acquire);
      if (state.load(std::memory_order_relaxed) != before) continue;
      if (st == TaskStatus::running) read.pid = pid_of(core, detail::owner_of(before));
      return read;
    }
    return Error(Errc::timeout, "task " + std::to_string(id) + " kept moving while its status was read");
  } catch (...) {
    return Error(Errc::system_error, "out of memory");
  }
}

Result<TaskInfo> Client::status(TaskId id) const {
  return task_status(*impl_->seg, id);
}

}  // namespace shmsched
