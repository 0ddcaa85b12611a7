// Error codes and an expected-style result.
//
// Contract: hot paths (enqueue, take, complete) return an `Errc` directly and never
// throw. Set-up paths (create, open, attach, queue creation) return `Result<T>`, which
// holds either a value or an `Error` (a code plus a human-readable detail). Nothing here
// allocates on the success path of a `Result<void>`.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shmsched {

enum class [[nodiscard]] Errc : std::uint8_t{
    ok = 0,
    // set-up and validation
    invalid_name,       ///< segment, queue or task-type name fails validation
    invalid_layout,     ///< a Layout value is out of range
    invalid_argument,   ///< any other argument is out of range
    exists,             ///< create_only on a name that exists
    not_found,          ///< open_only on a name that does not exist
    foreign_segment,    ///< the object does not start with the shmsched magic
    version_mismatch,   ///< built for another ABI version
    layout_mismatch,    ///< opened with an expected layout that differs
    truncated,          ///< the object is smaller than its header says
    corrupt,            ///< the header is inconsistent with itself, or a record is damaged
    init_timeout,       ///< the creator is alive but did not finish within the bound
    creator_died,       ///< the creator died before marking the segment ready
    permission_denied,  ///< the OS refused access
    system_error,       ///< another OS error; the detail names it
    no_space,           ///< /dev/shm has too little free space for the segment
    // runtime
    payload_too_large,  ///< payload longer than the layout's payload_bytes
    unknown_queue,      ///< no queue with that name or id
    queue_not_set,      ///< TaskOptions::queue names no queue (default-constructed)
    queue_table_full,   ///< max_queues queues exist already
    participant_table_full,
    table_full,         ///< every task record is in use (back-pressure)
    ring_full,          ///< the priority ring is full (back-pressure)
    timeout,            ///< a bounded wait ran out
    fenced,             ///< this participant was reaped; its late writes are refused
    not_attached,       ///< the handle is not attached to a segment
    unknown_semaphore,  ///< no semaphore with that name or id
    semaphore_table_full,
    need_exceeds_capacity,  ///< a task needs more permits than its semaphore has
    unavailable,            ///< no permit free now (try_acquire); a result another reader is taking
    unknown_task,           ///< no task with that id now (finished and released, taken, expired, evicted)
    not_finished,           ///< the task has not finished yet (take_result)
    not_waiting,            ///< the task does not wait (it runs or has finished): it cannot move
    unknown_group,          ///< no group with that id or name now (never created, or deleted)
    group_sealed,           ///< the group is sealed: it takes no more members
    group_table_full,       ///< every group entry is in use (Layout::max_groups)
    group_busy,             ///< the group has members that have not finished: it cannot be deleted
    parent_not_kept,        ///< a task may wait only for a task enqueued with keep_result
    unknown_schedule,       ///< no schedule with that id
    schedule_table_full,    ///< every schedule entry is in use (kMaxSchedules)
};

/// A short, stable, lower-case description of a code.
std::string_view to_string(Errc code) noexcept;

class Error {
 public:
  Error() = default;
  Error(Errc code, std::string detail = {}) : code_(code), detail_(std::move(detail)) {}
  Errc code() const noexcept { return code_; }
  const std::string& detail() const noexcept { return detail_; }
  /// "<code text>: <detail>" (or just the code text without a detail).
  std::string message() const;

 private:
  Errc code_ = Errc::ok;
  std::string detail_;
};

/// What value() throws when the Result holds an error: what() is the error's message.
class BadResultAccess : public std::runtime_error {
 public:
  explicit BadResultAccess(const Error& e) : std::runtime_error(e.message()), error_(e) {}
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

/// Either a T or an Error. `ok()` tells which; `value()` on an error throws
/// BadResultAccess with the error's message.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}
  Result(Errc code, std::string detail = {}) : v_(std::in_place_index<1>, Error(code, std::move(detail))) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  T& value() & {
    check();
    return std::get<0>(v_);
  }
  const T& value() const& {
    check();
    return std::get<0>(v_);
  }
  T&& value() && {
    check();
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  T* operator->() { return &value(); }
  const Error& error() const { return std::get<1>(v_); }
  Errc code() const noexcept { return ok() ? Errc::ok : std::get<1>(v_).code(); }

 private:
  void check() const {
    if (!ok()) throw BadResultAccess(std::get<1>(v_));
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), failed_(true) {}
  Result(Errc code, std::string detail = {}) : err_(code, std::move(detail)), failed_(code != Errc::ok) {}
  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const Error& error() const { return err_; }
  Errc code() const noexcept { return failed_ ? err_.code() : Errc::ok; }

 private:
  Error err_;
  bool failed_ = false;
};

}  // namespace shmsched
