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
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "shmsched/error.hpp"
#include "shmsched/participant.hpp"
#include "shmsched/segment.hpp"
#include "shmsched/task.hpp"

namespace shmsched {

/// What reap_dead() recovered.
struct ReapReport {
  std::uint32_t participants = 0;  ///< dead participants reaped
  std::uint32_t requeued = 0;      ///< tasks they were running, put back in their ring
  std::uint32_t republished = 0;   ///< accepted tasks they had not finished publishing
  std::uint32_t freed = 0;         ///< records they had reserved but not enqueued
  std::uint32_t dead_lettered = 0; ///< tasks that ran out of attempts by dying
};

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
               TaskId* id = nullptr) noexcept;
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
  /// Takes the most urgent task of `queue` (level 0 first, FIFO within a level).
  bool try_take(QueueId queue, Taken& out) noexcept;
  /// Takes up to out.size() tasks of `queue` in priority order; returns how many.
  std::size_t try_take_batch(QueueId queue, std::span<Taken> out) noexcept;
  /// Done: the record is freed.
  Errc complete(const Taken& task) noexcept;
  /// Puts a taken task back at the tail of its ring now, attempt count kept.
  Errc requeue(const Taken& task) noexcept;
  /// Dead-letters a taken task with `reason`.
  Errc dead_letter(const Taken& task, std::string_view reason) noexcept;
  /// Moves delayed tasks whose time has come into their rings; returns how many.
  std::size_t promote_due(std::int64_t now_ns) noexcept;

  // ---- recovery ------------------------------------------------------------------
  /// Reaps every participant whose process is dead (by pid and start time): its
  /// records are finished or undone, its slot freed (epoch + 1, which fences it).
  ReapReport reap_dead() noexcept;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmsched
