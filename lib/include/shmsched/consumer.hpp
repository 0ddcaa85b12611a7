// Consumer: a participant that runs W worker threads taking tasks and running handlers.
//
// Contract:
//  * Handlers are registered by task-type name before start(). A handler returns
//    done, retry(after) or fail(reason); an exception counts as fail with its message.
//    A task whose type has no handler here is dead-lettered ("no handler for type").
//  * Home queues are drained first, in the order given, each by strict priority with
//    its aging bound. Help queues are taken from only when every home queue is empty
//    at every level, and only by workers beyond the first `reserve` (those stay free
//    for home work, so a home task never waits behind a long helped task).
//    A primary consumer lists the shared queues as home; a secondary lists its
//    dedicated queue as home and the shared ones as help.
//  * Idle workers spin briefly, then sleep on the process's futex doorbell (with a
//    timeout for housekeeping); producers wake them only when they are asleep.
//  * One housekeeper thread per process (never running handlers) ticks and sleeps until
//    the next delayed task is due; the process holding the segment's janitor lease (a
//    one-second term, taken over from a holder that stops renewing, dead or stopped)
//    reaps dead participants.
//  * request_stop(): stop taking, let running handlers finish (they see the stop
//    token), then deregister. run_until_signal() does this on SIGINT/SIGTERM; a second
//    signal exits at once (the reaper then requeues what was running).
//  * Delivery is at least once: handlers must be idempotent.
//
// Workers are plain std::threads, not a oneTBB task_arena: a worker spends its idle
// time blocked in futex_wait, which would stall an arena's scheduler, and each worker
// needs its own identity (reserved or not) -- see docs/consumer.md.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "shmsched/client.hpp"
#include "shmsched/segment.hpp"
#include "shmsched/task.hpp"

namespace shmsched {

/// How a handler ended.
class Outcome {
 public:
  enum class Kind : std::uint8_t { done, retry, fail };
  static Outcome done() { return Outcome(Kind::done, {}, std::chrono::milliseconds(-1)); }
  /// Done with a result, which a task enqueued with keep_result keeps (up to
  /// Layout::payload_bytes) for Client::take_result and Client::wait; others drop it.
  static Outcome done(std::string result) {
    return Outcome(Kind::done, std::move(result), std::chrono::milliseconds(-1));
  }
  /// Run again after `after` (negative: the task's retry policy decides); counts an attempt.
  static Outcome retry(std::chrono::milliseconds after = std::chrono::milliseconds(-1), std::string why = {}) {
    return Outcome(Kind::retry, std::move(why), after);
  }
  /// Failed; retried per policy while attempts remain, then dead-lettered with `why`.
  static Outcome fail(std::string why) { return Outcome(Kind::fail, std::move(why), std::chrono::milliseconds(-1)); }
  Kind kind() const noexcept { return kind_; }
  /// retry and fail: why. done: the result.
  const std::string& reason() const noexcept { return reason_; }
  const std::string& result() const noexcept { return reason_; }
  std::chrono::milliseconds delay() const noexcept { return delay_; }

 private:
  Outcome(Kind k, std::string r, std::chrono::milliseconds d) : kind_(k), reason_(std::move(r)), delay_(d) {}
  Kind kind_;
  std::string reason_;
  std::chrono::milliseconds delay_;
};

/// What a handler sees besides the payload.
struct TaskContext {
  const Taken& task;
  const std::stop_token& stop;
  unsigned worker = 0;
  std::string_view queue_name;
  const Client* client = nullptr;  ///< the worker's
  /// Whether Client::cancel asked this task to stop (a load; look as often as it is
  /// worth). A handler that gives up returns anything but done: the task is then
  /// finished as cancelled, not retried.
  bool cancel_requested() const noexcept { return client != nullptr && client->cancel_requested(task); }
};

using Handler = std::function<Outcome(TaskContext&)>;

/// What a batch handler sees (Consumer::on_batch): tasks of one type, in the order they
/// were taken, and one outcome each -- done unless the handler sets another. Each task
/// is completed, retried or failed by its own outcome. An exception fails every task of
/// the batch with its message.
struct BatchContext {
  std::span<const Taken> tasks;
  std::span<Outcome> outcomes;
  const std::stop_token& stop;
  unsigned worker = 0;
  const Client* client = nullptr;  ///< the worker's
};
using BatchHandler = std::function<void(BatchContext&)>;

/// What became of a task a worker of this Consumer ran (Consumer::on_event).
enum class TaskEvent : std::uint8_t {
  done,           ///< completed
  retried,        ///< the handler asked to run it again later (an attempt counted)
  failed,         ///< the attempt failed; it runs again per its retry policy
  dead_lettered,  ///< failed for good (out of attempts, or no handler for its type)
  cancelled,      ///< gave up on a cancel request: not retried
};
/// Called in the worker right after the task's transition, with the reason for retried,
/// failed and dead_lettered. The task has moved on: its id, type, queue, level and
/// attempt are as it ran, but its payload view may already hold another task's bytes.
using EventHook = std::function<void(TaskEvent, const Taken&, std::string_view reason)>;

struct ConsumerOptions {
  std::vector<std::string> home;  ///< drained first, in this order
  std::vector<std::string> help;  ///< only when every home queue is empty
  unsigned workers = 1;
  unsigned reserve = 0;  ///< workers that never help (< workers when help is set)
  /// Empty looks before a worker sleeps.
  unsigned spin = 256;
  /// Longest sleep; also the housekeeping tick.
  std::chrono::milliseconds tick{100};
  /// How long request_stop() lets running handlers finish before giving up on them.
  std::chrono::milliseconds grace{10000};
  Role role = Role::consumer;
  /// Take-ahead of each home queue (Client::set_take_ahead), 1..Client::kMaxTakeAhead:
  /// a take that finds none held claims up to this many tasks, which the workers then
  /// run in order before looking at the rings again. 1 (the default) claims one at a time.
  /// Help queues always take one at a time: tasks held are not there for other consumers
  /// to help with.
  unsigned take_ahead = 1;
};

/// Per-consumer counters (this process only).
struct ConsumerStats {
  std::uint64_t done = 0, retried = 0, failed = 0, dead_lettered = 0, helped = 0, no_handler = 0;
  std::uint64_t parked = 0;     ///< times a task was parked for want of a permit
  std::uint64_t handed = 0;     ///< parked tasks this consumer ran on a permit it freed
  std::uint64_t cancelled = 0;  ///< running tasks given up on a cancel request
  std::uint64_t batches = 0;    ///< batch handler calls
};

class Consumer {
 public:
  /// Attaches to the segment and resolves the queues (an unknown queue is an error).
  static Result<std::unique_ptr<Consumer>> create(Segment& segment, ConsumerOptions options);
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  /// Registers the handler of a task type (before start()).
  void on(std::string_view type, Handler handler);
  /// Registers a batch handler of a task type (before start(); instead of on()). A
  /// worker that takes a task of `type` takes more of the same queue at once, up to
  /// `max_tasks` of that type, waiting up to `max_wait` for more while fewer are queued,
  /// then gets each one's permits (a task whose permits are not free is parked as
  /// usual and leaves the batch, so a batch never holds more permits than its tasks
  /// need) and calls `handler` once with them. Tasks of other types taken meanwhile run
  /// after it with their own handlers. docs/consumer.md, "Batch handlers".
  void on_batch(std::string_view type, std::size_t max_tasks, std::chrono::nanoseconds max_wait, BatchHandler handler);
  /// Registers the hook every worker calls after each task it ran (before start()). An
  /// exception it throws is swallowed: the task has moved on already.
  void on_event(EventHook hook);
  /// A handler that receives the payload decoded as T (trivially copyable); a payload
  /// of another size fails the task.
  template <class T, class F>
  void on_value(std::string_view type, F&& fn) {
    on(type, [f = std::forward<F>(fn)](TaskContext& ctx) -> Outcome {
      T value;
      if (!payload_to(ctx.task.payload, value)) return Outcome::fail("payload size does not match the handler's type");
      return f(value, ctx);
    });
  }

  /// Declares the semaphores every task of `type` needs while it runs (used when the
  /// task itself declares none). An unknown semaphore or a need above its capacity is
  /// an error here, not a hang later.
  Result<void> needs(std::string_view type, const std::vector<std::pair<std::string, std::uint16_t>>& needs);

  void start();
  /// Stop taking tasks; running handlers see their stop token.
  void request_stop() noexcept;
  /// Waits for the workers (up to the grace period after request_stop), then detaches.
  /// Returns false when handlers were still running at the end of the grace period.
  bool join();
  /// start(); wait for SIGINT or SIGTERM; request_stop(); join(). A second signal
  /// exits at once with status 130. Returns the process exit status to use.
  int run_until_signal();
  bool stopping() const noexcept;

  ConsumerStats stats() const noexcept;
  Client& client() noexcept;

 private:
  struct Impl;
  explicit Consumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmsched
