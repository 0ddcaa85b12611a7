// Periodic schedules: a task enqueued at every due time of a cron expression or a fixed
// interval, by whoever holds the janitor lease (docs/schedules.md).
//
// Contract: a schedule lives in the segment (ScheduleEntry, up to kMaxSchedules) and is
// added, paused, resumed and removed by any process (Client). Each due time is claimed
// by one CAS that names its claimer and advanced by one more, so every due time
// enqueues its task exactly once, across kills of the firer at any instruction and
// across janitor hand-over (a dead claimer's due time is advanced, or given back to be
// fired again, by whoever reaps it). A due time found more than kMissedAfterMs late
// (nothing alive to fire it) is missed: dropped (MissedRuns::skip) or all such folded
// into one run (MissedRuns::run_once).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmsched/cron.hpp"
#include "shmsched/queue.hpp"
#include "shmsched/semaphore.hpp"
#include "shmsched/task.hpp"

namespace shmsched {

/// What a schedule does with due times that passed while nothing fired them.
enum class MissedRuns : std::uint8_t {
  skip = 0,      ///< drop them; the next run is the next due time from now
  run_once = 1,  ///< one run for all of them, at once; then the next due time from now
};
std::string_view to_string(MissedRuns m) noexcept;

/// A due time this late (or later) when first looked at counts as missed.
inline constexpr std::int64_t kMissedAfterMs = 60'000;

/// What to add: when (expression, zone), what to do with missed runs, and the task.
struct ScheduleSpec {
  std::string id;          ///< 1..31 bytes of [A-Za-z0-9_.:-], unique in the segment
  std::string expression;  ///< cron or @every (cron.hpp), up to 95 bytes
  TimeZone zone = TimeZone::utc;
  MissedRuns missed = MissedRuns::skip;
  std::string type;     ///< the task's type
  std::string payload;  ///< its payload: at most 512 bytes and the layout's payload_bytes
  QueueRef queue;
  std::uint8_t priority = 0;
  Need needs[2] = {};
  std::uint16_t max_attempts = 3;
};

/// A schedule as it is now.
struct ScheduleInfo {
  ScheduleSpec spec;
  QueueId queue = 0;
  bool paused = false;
  std::int64_t next_due_ms = 0;   ///< Unix ms of the next due time (0: none comes)
  bool firing = false;            ///< a firer has claimed the next due time
  std::uint64_t fired = 0;        ///< occurrences enqueued
  std::uint64_t missed = 0;       ///< due times dropped or folded into one run
  std::uint64_t stalls = 0;       ///< firings put off because the queue or the table was full
  std::int64_t last_due_ms = 0;   ///< the last occurrence's due time (0: none yet)
  std::int64_t last_late_us = 0;  ///< how long after its due time it was enqueued
  TaskId last_task = kNoTask;
};

class Segment;
/// Every schedule of a segment (or the one named `id`: unknown_schedule if none), read
/// without attaching: works on a segment open read-only.
std::vector<ScheduleInfo> schedules(const Segment& segment);
Result<ScheduleInfo> schedule(const Segment& segment, std::string_view id);

}  // namespace shmsched
