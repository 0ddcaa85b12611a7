// Client: a process's handle on a segment -- the producer API and the consumer
// primitives the consumer runtime is built on.
//
// Contract:
//  * attach() registers this process as a participant; the destructor deregisters it
//    (anything it still owns is put back first). One Client per process is the norm;
//    every member is thread-safe, and all threads act under the process's token.
//  * Hot paths -- enqueue, enqueue_batch, try_take, complete -- are noexcept, take no
//    lock and make no system call: they are atomics on the segment. They return Errc.
//  * Ordering guarantees: FIFO within a (queue, level) across all processes; a taker
//    drains level 0 before level 1, and so on; enqueue returning ok means the task is
//    accepted: it will run to completion, be dead-lettered, or expire, even if any
//    process dies at any instruction (delivery is at least once).
//  * Back-pressure: a full table or ring returns Errc::table_full / ring_full at once;
//    enqueue_wait() waits up to a timeout. Nothing is ever overwritten.
#pragma once

#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmsched/error.hpp"
#include "shmsched/participant.hpp"
#include "shmsched/schedule.hpp"
#include "shmsched/segment.hpp"
#include "shmsched/task.hpp"

namespace shmsched {

/// A dead-lettered task, as listed by Client::dead_letters().
struct DeadLetter {
  TaskId id = kNoTask;
  std::uint64_t type = 0;
  std::string type_name;
  QueueId queue = 0;
  std::uint8_t level = 0;
  std::uint16_t attempts = 0;
  std::string reason;
};

/// Summed counters of one (queue, level) over every participant slot. Approximate
/// while tasks move (each counter is read once, not all at one instant).
struct LevelStats {
  std::uint64_t enqueued = 0, started = 0, done = 0, retried = 0, failed = 0, dead = 0, helped = 0;
};

/// What reap_dead() recovered.
struct ReapReport {
  std::uint32_t participants = 0;      ///< dead participants reaped
  std::uint32_t requeued = 0;          ///< tasks they were running, put back in their ring
  std::uint32_t republished = 0;       ///< accepted tasks they had not finished publishing
  std::uint32_t freed = 0;             ///< records they had reserved but not enqueued
  std::uint32_t dead_lettered = 0;     ///< tasks that ran out of attempts by dying
  std::uint32_t permits_returned = 0;  ///< semaphore permits they held
};

/// The retry policy a taken task was enqueued with. Reads the task's record: call it
/// while this process owns the task (between the take and its outcome).
RetryPolicy retry_policy_of(const Segment& segment, const Taken& task) noexcept;

class Client {
 public:
  static Result<Client> attach(Segment& segment, Role role = Role::producer);

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  /// Deregisters now (the destructor does it too).
  void detach() noexcept;
  Segment& segment() noexcept;
  std::uint16_t token() const noexcept;

  // ---- producer ------------------------------------------------------------------
  Errc enqueue(std::string_view type, std::span<const std::byte> payload, const TaskOptions& options,
               TaskId* id = nullptr) noexcept {
    // The type is hashed here, in the caller: a name known when compiling (a literal, a
    // constexpr string_view) is then hashed when compiling.
    return enqueue_hashed(type, type_hash(type), payload, options, id);
  }
  template <class T>
  Errc enqueue_value(std::string_view type, const T& value, const TaskOptions& options, TaskId* id = nullptr) noexcept {
    return enqueue(type, as_payload(value), options, id);
  }
  Errc enqueue_text(std::string_view type, std::string_view text, const TaskOptions& options,
                    TaskId* id = nullptr) noexcept {
    return enqueue(type, as_payload(text), options, id);
  }
  /// Enqueues tasks in order until one fails; returns how many were accepted, their
  /// ids in `ids` (which must be at least as long as `tasks`), the failure in `*error`.
  std::size_t enqueue_batch(std::span<const TaskSpec> tasks, std::span<TaskId> ids, Errc* error = nullptr) noexcept;
  /// Like enqueue, but waits (spinning, then sleeping briefly) up to `timeout` while
  /// the table or ring is full.
  Errc enqueue_wait(std::string_view type, std::span<const std::byte> payload, const TaskOptions& options,
                    std::chrono::nanoseconds timeout, TaskId* id = nullptr) noexcept;

  // ---- consumer primitives -----------------------------------------------------
  /// Takes the most urgent task of `queue` (level 0 first, FIFO within a level), except
  /// that when the queue has an aging bound and the oldest task of a lower level has
  /// waited longer than it, that task is taken first. `as_helper` counts the take as
  /// help (a consumer taking from a queue that is not its home).
  bool try_take(QueueId queue, Taken& out, bool as_helper = false) noexcept;
  /// The most a take may claim ahead (set_take_ahead).
  static constexpr std::uint32_t kMaxTakeAhead = 16;
  /// Take-ahead, a prefetch count: lets a take of `queue` that finds the buffer below
  /// empty claim up to `n` tasks of the level it takes from in one walk of the ring (1,
  /// the default, claims only the task returned; n <= kMaxTakeAhead). The tasks claimed
  /// and not returned wait in this Client -- running, owned by this process, their
  /// attempt not counted -- and later takes of the queue (try_take, try_take_batch, any
  /// thread) hand them out in the order claimed before looking at the rings again, as
  /// a batch take would have returned them: a more urgent task that arrives meanwhile
  /// waits behind at most n - 1 of them in this Client. Other consumers cannot take
  /// them, but can take every task not held: it trades sharing between consumers and
  /// strict priority for cheaper takes of a backlog. Calling it again, a take of the queue
  /// while it is paused, detaching, and a janitor_tick after a tick in which none was
  /// handed out put the held tasks back at the tail of their levels; the reaper
  /// requeues those of a process that died, uncharged.
  Errc set_take_ahead(QueueId queue, std::uint32_t n) noexcept;
  /// Takes up to out.size() tasks of `queue` in priority order; returns how many.
  std::size_t try_take_batch(QueueId queue, std::span<Taken> out) noexcept;
  /// Done: the record is freed, or, for a task enqueued with keep_result, kept in state
  /// done with an empty result.
  Errc complete(const Taken& task) noexcept;
  /// Done with a result: a keep_result task keeps the first Layout::payload_bytes of
  /// `result` for take_result and wait; for any other task this is complete(task).
  Errc complete(const Taken& task, std::span<const std::byte> result) noexcept;
  /// complete() for each task in order; stops at the first that fails (its code in
  /// *error) and returns how many were completed. Counters are bumped once per run of
  /// equal (queue, level), as try_take_batch returns them.
  std::size_t complete_batch(std::span<const Taken> tasks, Errc* error = nullptr) noexcept;
  /// Puts a taken task back at the tail of its ring now, attempt count kept.
  Errc requeue(const Taken& task) noexcept;
  /// Dead-letters a taken task with `reason`.
  Errc dead_letter(const Taken& task, std::string_view reason) noexcept;
  /// Failed attempt: if attempts remain, the task waits `delay` (or, when delay < 0,
  /// the delay its retry policy gives for this attempt) as delayed and runs again;
  /// otherwise it is dead-lettered with `reason`. `counts_as_failure` says whether the
  /// attempt failed (a handler error) or asked to be retried.
  Errc retry_or_dead_letter(const Taken& task, std::string_view reason, std::chrono::milliseconds delay,
                            bool counts_as_failure) noexcept;

  // ---- semaphores -------------------------------------------------------------------
  /// Changes a semaphore's capacity (0..56); growing hands permits to parked tasks.
  Errc set_capacity(SemId sem, std::uint32_t capacity) noexcept;
  /// Takes n permits for the calling thread if they are free now (no system call).
  Errc try_acquire(SemId sem, std::uint32_t n = 1) noexcept;
  /// Takes n permits, sleeping on a futex while none is free, up to `timeout`.
  Errc acquire(SemId sem, std::uint32_t n, std::chrono::nanoseconds timeout) noexcept;
  /// Returns n permits the calling thread holds (permits belong to the thread that took
  /// them; the reaper returns them all if the process dies).
  Errc release(SemId sem, std::uint32_t n = 1) noexcept;
  /// What a worker gets when it tries to take a task's permits.
  enum class Grant : std::uint8_t { granted, parked, error };
  /// Acquires every need of `task` (all or none). When one is not free, the task is
  /// parked on that semaphore (no longer ours) and Grant::parked is returned.
  Grant acquire_for(const Taken& task, std::span<const Need> needs) noexcept;
  /// Returns the permits `task` holds. When a task parked on one of those semaphores
  /// can now have all its permits, it is handed over: taken by this process, permits
  /// granted, returned in `*next` (run it, then release_for it). Else returns false.
  bool release_for(const Taken& task, std::span<const Need> needs, Taken* next = nullptr) noexcept;
  /// At most `n` tasks of `queue` run at once across all consumers (0 removes the
  /// limit). Built on a semaphore named "queue:<id>" that every consumer adds as a need
  /// of the queue's tasks (when a task declares two needs already, the limit does not
  /// apply to it). n <= 56.
  Errc set_queue_limit(QueueId queue, std::uint32_t n) noexcept;
  /// Rate limits (docs/resources.md, "Rate limits"): at most `per_second` tasks a second
  /// that need `sem` start, `burst` of them at once (0 removes the limit). A task whose
  /// token is not due yet waits for it delayed (not a retry, not a spinning worker).
  Errc set_rate(SemId sem, double per_second, std::uint32_t burst = 1) noexcept;
  /// The same for every task of `queue`.
  Errc set_queue_rate(QueueId queue, double per_second, std::uint32_t burst = 1) noexcept;
  /// Whether `queue` has a rate limit (a consumer then gates each of its tasks).
  bool queue_rated(QueueId queue) const noexcept;
  /// Checks "in use == permits held by live holders" for every semaphore; the error
  /// names each mismatch.
  Result<void> verify_permits() const;

  // ---- what became of a task -------------------------------------------------------
  /// The task `id` names, read from its record in O(1) without owning it. A record is
  /// reused under a new id, so an id whose record now holds another task, or none,
  /// answers TaskStatus::unknown, never that task's state. Errors: out of memory only.
  Result<TaskInfo> status(TaskId id) const;
  /// What a finished keep_result task left: done (its result, which this takes: the
  /// record is freed, so a second take finds unknown_task) or dead (its reason; the dead
  /// letter stays). Errors: unknown_task (no record holds it), not_finished, unavailable
  /// (another reader is taking it this moment).
  Result<TaskResult> take_result(TaskId id);
  /// Sleeps (futex, no polling) until the keep_result task `id` has finished, for at
  /// most `timeout`, then take_result(id). Errors: timeout, unknown_task, and
  /// invalid_argument for a task without keep_result (nothing is kept to wait for).
  Result<TaskResult> wait(TaskId id, std::chrono::nanoseconds timeout);

  // ---- groups (docs/lifecycle.md: "Groups") -----------------------------------------
  /// Creates an open group. Errors: invalid_name, exists (a group of that name is not
  /// deleted yet), group_table_full.
  Result<GroupId> create_group(std::string_view name, const GroupOptions& options = {});
  /// The group named `name`. Errors: unknown_group.
  Result<GroupId> find_group(std::string_view name) const;
  /// Seals a group: it takes no more members, and finishes (its waiting tasks are
  /// released) once every member has finished. Sealing a sealed or finished group does
  /// nothing. Errors: unknown_group.
  Errc seal_group(GroupId group) noexcept;
  /// Deletes a group whose members have all finished (sealed or not): its entry is free
  /// for another group. Errors: unknown_group, group_busy.
  Errc delete_group(GroupId group) noexcept;
  /// The group's counts now, with `running` and `dependents` counted from the table.
  Result<GroupInfo> group_info(GroupId group) const;
  /// Every group not deleted, as group_info.
  std::vector<GroupInfo> groups() const;
  /// Sleeps (futex, no polling) until the group has finished, for at most `timeout`,
  /// calling `progress` (when given) with its counts about every `interval` and once at
  /// the end. Returns its counts. Errors: timeout, unknown_group.
  Result<GroupInfo> wait_group(GroupId group, std::chrono::nanoseconds timeout,
                               const std::function<void(const GroupInfo&)>& progress = {},
                               std::chrono::nanoseconds interval = std::chrono::milliseconds(100));
  /// Checks every group's counts against a recount of its members in the task table
  /// (members outstanding = accepted - finished; dead letters <= failed) and that no
  /// released waiting task waits for a finished group. Meaningful when no task moves
  /// meanwhile (the crash tests run it after the workers stopped); the error names each
  /// mismatch.
  Result<void> verify_groups() const;

  // ---- schedules (docs/schedules.md) --------------------------------------------------
  /// Adds a periodic schedule; its first due time is the first after now. Errors:
  /// invalid_name (id, type), invalid_argument (expression, zone, priority, payload too
  /// long), exists, unknown_queue, unknown_semaphore, need_exceeds_capacity,
  /// schedule_table_full; each with a message.
  Result<void> add_schedule(const ScheduleSpec& spec);
  /// Removes a schedule; a due time already claimed still enqueues. Errors: unknown_schedule.
  Errc remove_schedule(std::string_view id) noexcept;
  /// A paused schedule enqueues nothing; resumed, it goes on from the next due time
  /// after now (the due times in between are not runs it missed). Errors: unknown_schedule.
  Errc pause_schedule(std::string_view id) noexcept;
  Errc resume_schedule(std::string_view id) noexcept;
  /// One schedule, or every schedule, as it is now.
  Result<ScheduleInfo> schedule(std::string_view id) const;
  std::vector<ScheduleInfo> schedules() const;
  /// Enqueues the task of every schedule whose due time has come (Unix ms `now_ms`);
  /// returns how many it enqueued. Any process may call it, and any number at once:
  /// each due time fires once. A consumer's housekeeper calls it while it holds the
  /// janitor lease, and sleeps until the next due time.
  std::size_t fire_schedules(std::int64_t now_ms) noexcept;
  /// Whether this participant holds the janitor lease now.
  bool holds_janitor_lease() const noexcept;

  // ---- re-prioritise -----------------------------------------------------------------
  /// Moves a waiting task (queued, delayed, parked, or waiting for its gate: it waits on
  /// at the new level) to `level`, at the tail of that level (FIFO within it). Exactly one of this and a concurrent
  /// take wins. Errors: unknown_task, not_waiting (it runs or has finished), invalid_argument (no such level).
  Errc set_priority(TaskId id, std::uint8_t level) noexcept;
  /// set_priority for every waiting task of a group; how many moved.
  std::size_t set_group_priority(std::uint64_t group_id, std::uint8_t level) noexcept;

  // ---- cancel ------------------------------------------------------------------------
  /// Cancels task `id`: one that waits (queued, delayed, parked, waiting) will not run -- its
  /// record is freed, or with keep_result kept as cancelled; exactly one of this and a
  /// concurrent take wins. One that runs is asked to stop (its handler sees
  /// TaskContext::cancel_requested; shmctl worker stops the command). Errors: unknown_task.
  Result<CancelOutcome> cancel(TaskId id) noexcept;
  /// cancel() for every task of a queue (a purge), of a type, or of a group.
  CancelCounts cancel_queue(QueueId queue) noexcept;
  CancelCounts cancel_type(std::string_view type) noexcept;
  CancelCounts cancel_group(std::uint64_t group_id) noexcept;
  /// Whether cancel() asked the running task `task` (taken by this process) to stop.
  bool cancel_requested(const Taken& task) const noexcept;
  /// Finishes a task taken by this process as cancelled (it does not run again): freed,
  /// or with keep_result kept as cancelled. For a worker whose handler gave up on a task
  /// cancel_requested() named.
  Errc finish_cancelled(const Taken& task) noexcept;

  // ---- dead letters ----------------------------------------------------------------
  std::vector<DeadLetter> dead_letters(std::size_t max = SIZE_MAX) const;
  /// Puts a dead-lettered task back in its ring with a fresh attempt count.
  Errc requeue_dead(TaskId id) noexcept;
  std::size_t requeue_all_dead() noexcept;
  std::size_t purge_dead() noexcept;

  // ---- sleeping and waking (the consumer runtime) --------------------------------
  /// Doorbell value to pass to sleep(); read it before the last look for work.
  std::uint32_t doorbell() const noexcept;
  /// Marks this process as sleeping on `home` and `help` queues (producers then wake
  /// it). Call, look for work once more, then sleep(); always pair with wake_up().
  void announce_sleep(std::span<const QueueId> home, std::span<const QueueId> help) noexcept;
  /// Sleeps on the doorbell until rung or `timeout`; false on timeout.
  bool sleep(std::uint32_t seen, std::chrono::nanoseconds timeout) noexcept;
  /// Undoes announce_sleep for one worker.
  void wake_up(std::span<const QueueId> home, std::span<const QueueId> help) noexcept;
  /// Rings this process's own doorbell, waking all its sleepers (shutdown).
  void ring_own_doorbell() noexcept;

  // ---- housekeeping --------------------------------------------------------------
  /// Gives back tasks this process has held ahead (set_take_ahead) since the last tick
  /// without handing one out. Then, if this process holds (or can take over) the
  /// janitor lease: make delayed tasks due and, at most once a second, reap dead
  /// participants. Returns true when it acted as janitor.
  bool janitor_tick(std::int64_t now_ns) noexcept;
  /// Sets the aging bound of a queue (0 disables) and what it does (AgingMode).
  void set_aging(QueueId queue, std::chrono::milliseconds bound, AgingMode mode = AgingMode::serve_first) noexcept;
  /// Moves every waiting task of `queue` at level `from` to level `to` (the tail of
  /// that level, in their order); returns how many moved. An operator's manual shift.
  std::size_t shift_level(QueueId queue, std::uint8_t from, std::uint8_t to) noexcept;
  LevelStats level_stats(QueueId queue, std::uint8_t level) const noexcept;
  /// Records that `n` handlers finished (any outcome); shown per participant.
  void count_processed(std::uint64_t n = 1) noexcept;
  /// This process's status board (workers, activity, current task). Attached only.
  StatusBoard status_board() noexcept;
  /// The semaphore that bounds how many tasks of `queue` run at once
  /// (set_queue_limit), in `sem`; false when the queue has no limit.
  bool queue_limit(QueueId queue, SemId& sem) const noexcept;
  /// Moves delayed tasks whose time has come into their rings; returns how many. Any
  /// process may call it at any time (idle consumers do); it is one load when nothing
  /// is due.
  std::size_t promote_due(std::int64_t now_ns) noexcept;
  /// When the earliest delayed task is due (CLOCK_MONOTONIC ns), or 0 if none.
  std::int64_t next_due_ns() const noexcept;
  /// How long to sleep from `now_ns` until the earliest delayed task is due: at most
  /// `max_ns`, at least kMinDueSleepNs (or max_ns, if smaller).
  std::int64_t sleep_until_due_ns(std::int64_t now_ns, std::int64_t max_ns) const noexcept;
  static constexpr std::int64_t kMinDueSleepNs = 100'000;
  /// The housekeepers' futex word: read it, look at your own stop condition, then pass
  /// it to wait_for_due, so a wake between the two is not lost.
  std::uint32_t due_seq() const noexcept;
  /// Sleeps until the earliest delayed task may be due, a new earlier one is enqueued,
  /// wake_housekeepers() is called (since due_seq() returned `seen`), or `max` passes
  /// (a futex wait, no polling). For a consumer's housekeeping thread. True when woken
  /// before the time.
  bool wait_for_due(std::uint32_t seen, std::chrono::nanoseconds max) noexcept;
  /// Wakes every thread in wait_for_due (in every process).
  void wake_housekeepers() noexcept;
  /// A janitor lease not renewed for this long is taken over by the next tick of
  /// another consumer, whether its holder is dead, stopped or only slow.
  static constexpr std::int64_t kJanitorTermNs = 1'000'000'000;

  // ---- recovery ------------------------------------------------------------------
  /// Reaps every participant whose process is dead (by pid and start time): its
  /// records are finished or undone, its slot freed (epoch + 1, which fences it).
  ReapReport reap_dead() noexcept;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl) noexcept;
  // enqueue with the type's hash already taken (hash == type_hash(type)).
  Errc enqueue_hashed(std::string_view type, std::uint64_t hash, std::span<const std::byte> payload,
                      const TaskOptions& options, TaskId* id) noexcept;
  std::unique_ptr<Impl> impl_;
};

/// RAII permits of a semaphore for code that uses it directly: acquired by the
/// factory, released by the destructor (or release()). Permits belong to the thread that
/// took them, so a Permit is released on the thread that acquired it; it may be moved
/// within that thread only.
class [[nodiscard]] Permit {
 public:
  Permit() = default;
  /// Takes n permits, waiting up to `timeout` (futex sleep, no polling).
  static Result<Permit> acquire(Client& client, SemId sem, std::uint32_t n, std::chrono::nanoseconds timeout) {
    const Errc e = client.acquire(sem, n, timeout);
    if (e != Errc::ok) return Result<Permit>(e, "semaphore " + std::to_string(sem));
    return Permit(client, sem, n);
  }
  /// Takes n permits if they are free now.
  static Result<Permit> try_acquire(Client& client, SemId sem, std::uint32_t n = 1) {
    const Errc e = client.try_acquire(sem, n);
    if (e != Errc::ok) return Result<Permit>(e, "semaphore " + std::to_string(sem));
    return Permit(client, sem, n);
  }
  Permit(Permit&& o) noexcept : client_(o.client_), sem_(o.sem_), n_(o.n_) { o.client_ = nullptr; }
  Permit& operator=(Permit&& o) noexcept {
    if (this != &o) {
      release();
      client_ = o.client_;
      sem_ = o.sem_;
      n_ = o.n_;
      o.client_ = nullptr;
    }
    return *this;
  }
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;
  ~Permit() { release(); }
  /// Returns the permits now (idempotent).
  void release() noexcept {
    if (client_ != nullptr) (void)client_->release(sem_, n_);
    client_ = nullptr;
  }
  bool held() const noexcept { return client_ != nullptr; }
  std::uint32_t count() const noexcept { return n_; }

 private:
  Permit(Client& c, SemId s, std::uint32_t n) : client_(&c), sem_(s), n_(n) {}
  Client* client_ = nullptr;
  SemId sem_ = 0;
  std::uint32_t n_ = 0;
};

}  // namespace shmsched
