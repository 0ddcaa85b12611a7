#include "shmsched/error.hpp"

#include <cstdio>
#include <cstdlib>

#include "shmsched/detail/state_word.hpp"

namespace shmsched {

// One case per code, no default: a new code does not compile until it has its text.
std::string_view to_string(Errc code) noexcept {  // NOLINT(readability-function-size)
  switch (code) {
    case Errc::ok:
      return "ok";
    case Errc::invalid_name:
      return "invalid name";
    case Errc::invalid_layout:
      return "invalid layout";
    case Errc::invalid_argument:
      return "invalid argument";
    case Errc::exists:
      return "segment already exists";
    case Errc::not_found:
      return "no such segment";
    case Errc::foreign_segment:
      return "not a shmsched segment";
    case Errc::version_mismatch:
      return "segment ABI version mismatch";
    case Errc::layout_mismatch:
      return "segment layout mismatch";
    case Errc::truncated:
      return "segment is truncated";
    case Errc::corrupt:
      return "corrupt segment data";
    case Errc::init_timeout:
      return "segment initialisation did not finish in time";
    case Errc::creator_died:
      return "segment creator died during initialisation";
    case Errc::permission_denied:
      return "permission denied";
    case Errc::system_error:
      return "system error";
    case Errc::no_space:
      return "no space for the segment";
    case Errc::payload_too_large:
      return "payload too large";
    case Errc::unknown_queue:
      return "unknown queue";
    case Errc::queue_not_set:
      return "the task names no queue (set TaskOptions::queue to a queue's name or id)";
    case Errc::queue_table_full:
      return "queue table full";
    case Errc::participant_table_full:
      return "participant table full";
    case Errc::table_full:
      return "task table full";
    case Errc::ring_full:
      return "priority ring full";
    case Errc::timeout:
      return "timed out";
    case Errc::fenced:
      return "participant was reaped (fenced)";
    case Errc::not_attached:
      return "not attached";
    case Errc::unknown_semaphore:
      return "unknown semaphore";
    case Errc::semaphore_table_full:
      return "semaphore table full";
    case Errc::need_exceeds_capacity:
      return "task needs more permits than the semaphore's capacity";
    case Errc::unavailable:
      return "not available now";
    case Errc::unknown_task:
      return "unknown task";
    case Errc::not_finished:
      return "task not finished";
    case Errc::not_waiting:
      return "task not waiting";
    case Errc::unknown_group:
      return "unknown group";
    case Errc::group_sealed:
      return "group sealed";
    case Errc::group_table_full:
      return "group table full";
    case Errc::group_busy:
      return "group has unfinished members";
    case Errc::parent_not_kept:
      return "parent task does not keep its outcome (enqueue it with keep_result)";
    case Errc::unknown_schedule:
      return "unknown schedule";
    case Errc::schedule_table_full:
      return "schedule table full";
  }
  return "unknown error";
}

std::string Error::message() const {
  std::string m(to_string(code_));
  if (!detail_.empty()) {
    m += ": ";
    m += detail_;
  }
  return m;
}

namespace detail {

void illegal_transition(std::uint64_t from_word, TaskState to) noexcept {
  const std::string_view from = to_string(state_of(from_word)), next = to_string(to);
  std::fprintf(stderr, "shmsched: illegal task state transition %.*s -> %.*s (state word 0x%llx)\n",
               static_cast<int>(from.size()), from.data(), static_cast<int>(next.size()), next.data(),
               static_cast<unsigned long long>(from_word));
  std::abort();
}

}  // namespace detail
}  // namespace shmsched
