// Tasks: what a producer enqueues and what a consumer takes.
//
// Contract: a task is a fixed-size record in the segment's task table: type name,
// queue, priority level, attempt count, retry policy, not-before time, expiry, group id,
// resource needs, last error, and inline payload bytes (at most Layout::payload_bytes;
// more is Errc::payload_too_large). Its id is unique per segment: (version of the
// record's state word when it was reserved) << log2(capacity) | record index.
// Payloads are bytes; helpers copy trivially copyable values and strings.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "shmsched/detail/hash.hpp"
#include "shmsched/detail/state_word.hpp"
#include "shmsched/queue.hpp"
#include "shmsched/semaphore.hpp"

namespace shmsched {

using TaskId = std::uint64_t;
inline constexpr TaskId kNoTask = 0;
/// A group of tasks (Client::create_group): (generation << 16) | entry; never 0.
using GroupId = std::uint64_t;

/// How a failed attempt is retried: delay * (backoff_x100/100)^(attempt-1), capped at
/// max_delay, plus up to jitter_pct percent of random extra.
struct RetryPolicy {
  std::chrono::milliseconds delay{1000};
  std::uint16_t backoff_x100 = 200;
  std::chrono::milliseconds max_delay{60000};
  std::uint16_t jitter_pct = 10;
};

/// The hash of a name (detail::name_hash, FNV-1a 64): a task type's is stored as the
/// record's type; a queue's places it in the segment's queue table.
constexpr std::uint64_t type_hash(std::string_view name) noexcept {
  return detail::name_hash(name);
}

/// The queue a task goes to, named by id or by name. A name is copied in (so the
/// QueueRef owns it) and hashed when the QueueRef is made -- when compiling, for a
/// literal. Enqueue finds a named queue by that hash in the segment's queue table,
/// whose entries never move: normally one probe and a 32-byte compare, no string work.
/// A default QueueRef names no queue (Errc::queue_not_set); a name longer than
/// kMaxQueueName names none that can exist (Errc::unknown_queue).
class QueueRef {
 public:
  constexpr QueueRef() noexcept = default;
  constexpr QueueRef(QueueId id) noexcept : id_(id), kind_(Kind::id) {}  // NOLINT(google-explicit-constructor)
  constexpr QueueRef(std::string_view name) noexcept                     // NOLINT(google-explicit-constructor)
      : hash_(type_hash(name)), kind_(name.size() <= kMaxQueueName ? Kind::name : Kind::bad_name) {
    if (kind_ != Kind::name) return;
    len_ = static_cast<std::uint8_t>(name.size());
    for (std::size_t i = 0; i < name.size(); ++i) name_[i] = name[i];
  }
  template <std::size_t N>
  constexpr QueueRef(const char (&name)[N]) noexcept  // NOLINT(google-explicit-constructor)
      : QueueRef(std::string_view(name)) {}
  QueueRef(const std::string& name) noexcept : QueueRef(std::string_view(name)) {}  // NOLINT

  constexpr bool is_set() const noexcept { return kind_ != Kind::none; }
  constexpr bool is_id() const noexcept { return kind_ == Kind::id; }
  constexpr bool is_name() const noexcept { return kind_ == Kind::name; }
  /// The id (meaningful when is_id()).
  constexpr QueueId id() const noexcept { return id_; }
  /// The name (empty unless is_name()).
  constexpr std::string_view name() const noexcept { return {name_, len_}; }
  /// type_hash(name()) (meaningful when is_name()).
  constexpr std::uint64_t hash() const noexcept { return hash_; }

  friend constexpr bool operator==(const QueueRef& a, const QueueRef& b) noexcept {
    return a.kind_ == b.kind_ && a.id_ == b.id_ && a.hash_ == b.hash_ && a.name() == b.name();
  }

 private:
  enum class Kind : std::uint8_t { none, id, name, bad_name };
  std::uint64_t hash_ = 0;
  QueueId id_ = 0;
  Kind kind_ = Kind::none;
  std::uint8_t len_ = 0;
  char name_[kMaxQueueName + 1] = {};
};

/// The delay `policy` gives the retry after attempt `attempt` (1 = the first), before
/// jitter: delay * (backoff_x100/100)^(attempt-1), capped at max_delay.
std::chrono::milliseconds nominal_retry_delay(const RetryPolicy& policy, unsigned attempt) noexcept;

/// Everything about a task except its type and payload.
struct TaskOptions {
  QueueRef queue;                  ///< required: a queue id or name
  std::uint8_t priority = 0;       ///< level, 0 = most urgent; < Layout::levels
  std::uint16_t max_attempts = 3;  ///< >= 1
  RetryPolicy retry{};
  std::int64_t not_before_ns = 0;  ///< CLOCK_MONOTONIC; 0 = runnable now (see after())
  std::int64_t expires_ns = 0;     ///< CLOCK_MONOTONIC; 0 = never
  /// The group it is a member of (Client::create_group); 0 = none. The group must be
  /// open (not sealed).
  GroupId group_id = 0;
  /// A group it waits for: accepted as waiting, it is queued once the group is sealed
  /// and every member has finished (a chord's completion task); 0 = none.
  GroupId after_group = 0;
  /// A task it waits for (a dependency): accepted as waiting, it is queued once that
  /// task is done; 0 = none. The parent must keep its outcome (enqueued with
  /// keep_result) and not have been taken yet. A task waits for one gate: a parent task
  /// or a group (for several parents, make them a group). See docs/lifecycle.md.
  TaskId after_task = 0;
  /// With after_task: the task receives its parent's result as its payload (a pipeline,
  /// `A | B | C`); its own payload is replaced. The parent's result stays kept.
  bool pipe = false;
  /// Run even when its gate (the group, or the parent task) finished with failures: a
  /// failed or cancelled member or parent (else it is cancelled, with the reason).
  bool run_anyway = false;
  /// Semaphores the task needs while it runs (up to two; count 0 = unused).
  Need needs[2] = {};
  /// Keep the record after the task finishes, holding its result (up to
  /// Layout::payload_bytes) or its failure, until it is taken (Client::take_result,
  /// Client::wait), `result_ttl` passes, or the table needs the record (an eviction,
  /// counted in Snapshot::results_evicted). Off: the record is freed when the task is
  /// done, and nothing can wait for it.
  bool keep_result = false;
  std::chrono::seconds result_ttl{600};  ///< 1 s .. about 136 years

  /// Sets not_before to now + d.
  TaskOptions& after(std::chrono::nanoseconds d);
};

/// One task of a batch.
struct TaskSpec {
  std::string_view type;
  std::span<const std::byte> payload;
  TaskOptions options;
};

template <class T>
std::span<const std::byte> as_payload(const T& value) noexcept {
  static_assert(std::is_trivially_copyable_v<T>, "payloads of this kind must be trivially copyable");
  return std::as_bytes(std::span<const T, 1>(&value, 1));
}
inline std::span<const std::byte> as_payload(std::string_view s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}
/// Copies a payload back into a trivially copyable value; false when the size differs.
template <class T>
bool payload_to(std::span<const std::byte> payload, T& out) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  if (payload.size() != sizeof(T)) return false;
  std::memcpy(&out, payload.data(), sizeof(T));
  return true;
}

/// A task taken by a consumer. Valid until completed, retried or dead-lettered; the
/// views point into the segment (no copy).
struct Taken {
  std::uint32_t index = 0;
  std::uint64_t word = 0;  ///< the record's state word as this consumer set it
  TaskId id = kNoTask;
  QueueId queue = 0;
  std::uint8_t level = 0;
  std::uint16_t attempt = 0;  ///< 1 on the first run
  std::uint16_t max_attempts = 0;
  std::uint64_t type = 0;
  std::string_view type_name;
  std::span<const std::byte> payload;
  std::int64_t enqueued_ns = 0;
  bool helped = false;       ///< taken by a helper (from a queue not its home)
  bool keep_result = false;  ///< enqueued with keep_result: complete() keeps its result
  bool in_group = false;     ///< a member of a group: its finish is counted there
  Need needs[2] = {};        ///< the task's own needs (count 0 = unused)
  explicit operator bool() const noexcept { return id != kNoTask; }
};

/// What a task id names now (Client::status).
enum class TaskStatus : std::uint8_t {
  unknown,    ///< no such task now: finished and its record released, purged, or never accepted
  queued,     ///< waits in its queue's ring at its priority level
  delayed,    ///< waits for its not-before time (a delay, or a retry's backoff)
  parked,     ///< waits for a semaphore permit
  running,    ///< a worker holds it
  dead,       ///< failed for good: a dead letter, with its reason
  done,       ///< finished, its result kept (keep_result) until taken, expired or evicted
  cancelled,  ///< cancelled before it ran (or while it ran), kept (keep_result) like a result
  waiting,    ///< waits for its gate: a parent task (after_task) or a group (after_group)
};

constexpr std::string_view to_string(TaskStatus s) noexcept {
  switch (s) {
    case TaskStatus::unknown:
      return "unknown";
    case TaskStatus::queued:
      return "queued";
    case TaskStatus::delayed:
      return "delayed";
    case TaskStatus::parked:
      return "parked";
    case TaskStatus::running:
      return "running";
    case TaskStatus::dead:
      return "dead";
    case TaskStatus::done:
      return "done";
    case TaskStatus::cancelled:
      return "cancelled";
    case TaskStatus::waiting:
      return "waiting";
  }
  return "?";
}

/// The status a record in state `s` shows for the task it holds. No `default:`: a new
/// TaskState fails to compile here (-Wswitch-enum) until it is given a status.
constexpr TaskStatus status_of(TaskState s) noexcept {
  switch (s) {
    case TaskState::virgin:
    case TaskState::free:
    case TaskState::reserved:
      return TaskStatus::unknown;
    case TaskState::queued:
      return TaskStatus::queued;
    case TaskState::delayed:
      return TaskStatus::delayed;
    case TaskState::parked:
      return TaskStatus::parked;
    case TaskState::running:
      return TaskStatus::running;
    case TaskState::dead:
      return TaskStatus::dead;
    case TaskState::done:
      return TaskStatus::done;
    case TaskState::cancelled:
      return TaskStatus::cancelled;
    case TaskState::waiting:
      return TaskStatus::waiting;
  }
  return TaskStatus::unknown;
}

/// What Client::cancel did.
enum class CancelOutcome : std::uint8_t {
  cancelled,  ///< it was waiting (queued, delayed, parked): it will not run
  requested,  ///< it is running: its handler is asked to stop (TaskContext::cancel_requested)
  finished,   ///< it had finished already (done, dead, cancelled): nothing changed
};

/// What a cancel of many tasks did (Client::cancel_queue, cancel_type, cancel_group).
struct CancelCounts {
  std::size_t cancelled = 0;  ///< were waiting: will not run
  std::size_t requested = 0;  ///< were running: their handlers are asked to stop
  std::size_t finished = 0;   ///< had finished meanwhile
};

/// A task as Client::status found it: one consistent reading of its record.
struct TaskInfo {
  TaskId id = kNoTask;
  TaskStatus status = TaskStatus::unknown;  ///< unknown: the other fields are not set
  std::string type;
  QueueId queue = 0;
  std::uint8_t priority = 0;
  std::uint16_t attempts = 0;  ///< runs started so far (a running task's run included)
  std::uint16_t max_attempts = 0;
  std::int32_t pid = 0;            ///< running: the worker's process; 0 otherwise
  std::int64_t enqueued_ns = 0;    ///< CLOCK_MONOTONIC_COARSE when enqueued
  std::int64_t not_before_ns = 0;  ///< CLOCK_MONOTONIC before which it does not run; 0 = none
  std::int64_t expires_ns = 0;     ///< CLOCK_MONOTONIC after which it (done: its result) is dropped; 0 = never
  std::int64_t finished_ns = 0;    ///< done: CLOCK_MONOTONIC_COARSE when it finished
  std::uint32_t result_bytes = 0;  ///< done: the size of its result
  bool keep_result = false;        ///< enqueued with keep_result
  bool cancel_requested = false;   ///< running: Client::cancel asked its handler to stop
  std::string last_error;          ///< the last failure's reason (dead: why), or empty
  /// waiting: the task (TaskOptions::after_task) or the group (after_group, with
  /// waits_for_group) it waits for; 0 otherwise.
  std::uint64_t waits_for = 0;
  bool waits_for_group = false;
};

/// Where a group is in its life.
enum class GroupState : std::uint8_t {
  open,      ///< takes members
  sealed,    ///< takes no more; finishes when every member has finished
  finished,  ///< sealed and every member finished; its waiting tasks were released
};
constexpr std::string_view to_string(GroupState s) noexcept {
  switch (s) {
    case GroupState::open:
      return "open";
    case GroupState::sealed:
      return "sealed";
    case GroupState::finished:
      return "finished";
  }
  return "?";
}

/// A group as Client::group_info found it. total = members accepted; done, failed
/// (dead-lettered) and cancelled are the finished ones; the rest are outstanding, and of
/// those `running` run now (counted from the table when asked: nothing on the take path
/// writes it). dependents: tasks that wait for the group.
struct GroupInfo {
  GroupId id = 0;
  std::string name;
  GroupState state = GroupState::open;
  std::uint64_t total = 0, done = 0, failed = 0, cancelled = 0;
  std::uint64_t running = 0;     ///< counted from the table (group_info, groups); 0 from wait_group
  std::uint64_t dependents = 0;  ///< tasks waiting for it now (counted from the table, as running)
  std::int64_t created_ns = 0;   ///< CLOCK_MONOTONIC_COARSE
  std::int64_t finished_ns = 0;  ///< CLOCK_MONOTONIC_COARSE; 0 while not finished
  std::uint64_t finished_members() const noexcept { return done + failed + cancelled; }
  std::uint64_t outstanding() const noexcept { return total - finished_members(); }
};

/// Options of Client::create_group.
struct GroupOptions {
  /// A finished group is deleted this long after it finished (its id then answers
  /// unknown_group); 0 keeps it until delete_group.
  std::chrono::seconds ttl{600};
};

/// What a finished task left (Client::take_result, Client::wait).
struct TaskResult {
  TaskId id = kNoTask;
  TaskStatus status = TaskStatus::unknown;  ///< done, dead or cancelled
  std::string value;                        ///< done: the handler's result bytes
  std::string error;                        ///< dead: why; cancelled: "cancelled", or its gate's reason
  std::int64_t finished_ns = 0;             ///< done: CLOCK_MONOTONIC_COARSE when it finished
};

}  // namespace shmsched
