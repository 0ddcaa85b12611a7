// Inspect: a read-only snapshot of a segment for operators and tools (shmctl).
//
// Contract: inspect() only loads; it never writes to the segment, so it is safe on a
// segment whose processes are live (figures are approximate: each is read once, not all
// at one instant) and on one whose processes are dead. Any process may call it.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "shmsched/client.hpp"
#include "shmsched/detail/state_word.hpp"
#include "shmsched/participant.hpp"
#include "shmsched/segment.hpp"
#include "shmsched/semaphore.hpp"

namespace shmsched {

/// Records counted by state, indexed by TaskState (each record's state read once, so
/// the counts are not of one instant).
struct StateCounts {
  std::array<std::uint64_t, kTaskStates> by_state{};
  std::uint64_t& operator[](TaskState s) noexcept { return by_state[static_cast<std::size_t>(s)]; }
  std::uint64_t operator[](TaskState s) const noexcept { return by_state[static_cast<std::size_t>(s)]; }
  /// Records a producer may reserve: free, or never used (virgin).
  std::uint64_t reservable() const noexcept { return (*this)[TaskState::free] + (*this)[TaskState::virgin]; }
  /// Accepted and not yet finished (is_outstanding).
  std::uint64_t outstanding() const noexcept {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < kTaskStates; ++i)
      if (is_outstanding(static_cast<TaskState>(i))) n += by_state[i];
    return n;
  }
};

struct LevelSnapshot {
  std::uint64_t depth = 0;          ///< entries in the ring (approximate)
  std::int64_t oldest_age_ns = -1;  ///< age of the entry at the head, -1 when empty
  LevelStats counters;
};

struct QueueSnapshot {
  QueueId id = 0;
  std::string name;
  bool paused = false;
  std::uint32_t aging_ms = 0;
  bool aging_promotes = false;  ///< AgingMode::promote
  double rate = 0;              ///< queue-wide rate limit, tasks a second (0 = none)
  std::uint32_t burst = 0;
  std::uint64_t rate_granted = 0;  ///< tokens taken
  std::uint64_t rate_delayed = 0;  ///< tasks that waited for their token
  std::int32_t limit = -1;         ///< concurrency limit, -1 = none
  std::vector<LevelSnapshot> levels;
  /// Records of this queue by state: those in a state that names a queue (names_queue).
  /// Parked tasks wait on a semaphore but still belong to the queue they will run from.
  StateCounts records;
  std::uint64_t depth() const noexcept;
  /// Accepted and not yet finished.
  std::uint64_t outstanding() const noexcept { return records.outstanding(); }
};

struct ParticipantSnapshot {
  std::uint32_t slot = 0;
  std::uint16_t token = 0;
  std::int32_t pid = 0;
  std::uint64_t start_time = 0;
  Role role = Role::producer;
  std::string state;   ///< "active", "registering" or "reaping"
  bool alive = false;  ///< by pid and start time
  Activity activity = Activity::idle;
  std::uint64_t current_task = 0;
  std::uint64_t processed = 0;  ///< handler runs (a consumer adds them up in batches)
  /// What this slot counted over every queue and level, bumped as each task moves (the
  /// counts of earlier holders of the slot included): a rate from two snapshots of one
  /// process does not lag as `processed` may.
  LevelStats counters;
  std::int64_t heartbeat_age_ns = -1;
  std::uint32_t workers = 0;
  std::uint32_t sleepers = 0;
};

struct Snapshot {
  std::string name;
  Layout layout;
  std::size_t size_bytes = 0;
  ProcessIdentity creator;
  std::vector<QueueSnapshot> queues;
  std::vector<ParticipantSnapshot> participants;
  std::vector<SemaphoreInfo> semaphores;
  std::vector<GroupInfo> groups;  ///< every group not deleted (as Client::groups)
  /// Every record of the table by state.
  StateCounts records;
  std::uint16_t janitor_token = 0;
  std::int32_t janitor_pid = 0;
  /// Kept results dropped unread: their time ran out, or the table needed the record.
  std::uint64_t results_expired = 0;
  std::uint64_t results_evicted = 0;
};

/// The dead-lettered tasks, at most `max`, in record order. Loads only, like
/// inspect(): works on a segment opened read-only. Client::dead_letters() is this.
std::vector<DeadLetter> dead_letters(const Segment& segment, std::size_t max = SIZE_MAX);

/// Reads the whole segment once. Never writes to it.
Snapshot inspect(const Segment& segment);

/// The task `id` names (see Client::status, which is this), read without attaching: works
/// on a segment opened read-only.
Result<TaskInfo> task_status(const Segment& segment, TaskId id);

/// Client::find_group, group_info and groups, for a segment opened read-only.
Result<GroupId> find_group(const Segment& segment, std::string_view name);
Result<GroupInfo> group_info(const Segment& segment, GroupId group);
std::vector<GroupInfo> groups(const Segment& segment);

}  // namespace shmsched
