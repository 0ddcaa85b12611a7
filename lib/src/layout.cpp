#include <algorithm>
#include <bit>
#include <string>

#include "shmsched/detail/shm_structs.hpp"
#include "shmsched/layout.hpp"

namespace shmsched {

namespace {
Result<void> bad(std::string what) {
  return Result<void>(Errc::invalid_layout, std::move(what));
}
}  // namespace

Result<void> Layout::validate() const {
  if (levels < 1 || levels > kMaxLevels)
    return bad("levels must be 1.." + std::to_string(kMaxLevels) + ", got " + std::to_string(levels));
  if (task_capacity < 2 || task_capacity > kMaxTasks || !std::has_single_bit(task_capacity))
    return bad("task_capacity must be a power of two in 2.." + std::to_string(kMaxTasks) + ", got " +
               std::to_string(task_capacity));
  if (payload_bytes > kMaxPayload || payload_bytes % 8 != 0)
    return bad("payload_bytes must be a multiple of 8 up to " + std::to_string(kMaxPayload) + ", got " +
               std::to_string(payload_bytes));
  if (ring_capacity != 0 && (ring_capacity < 2 || ring_capacity > kMaxTasks || !std::has_single_bit(ring_capacity)))
    return bad("ring_capacity must be 0 or a power of two in 2.." + std::to_string(kMaxTasks) + ", got " +
               std::to_string(ring_capacity));
  if (max_queues < 1 || max_queues > kMaxQueues)
    return bad("max_queues must be 1.." + std::to_string(kMaxQueues) + ", got " + std::to_string(max_queues));
  if (max_participants < 1 || max_participants > kMaxParticipants)
    return bad("max_participants must be 1.." + std::to_string(kMaxParticipants) + ", got " +
               std::to_string(max_participants));
  if (max_semaphores > kMaxSemaphores)
    return bad("max_semaphores must be 0.." + std::to_string(kMaxSemaphores) + ", got " +
               std::to_string(max_semaphores));
  if (max_groups > kMaxGroups)
    return bad("max_groups must be 0.." + std::to_string(kMaxGroups) + ", got " + std::to_string(max_groups));
  return {};
}

std::uint64_t Layout::hash() const noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::uint32_t v : {levels, task_capacity, payload_bytes, effective_ring_capacity(), max_queues, max_participants,
                          max_semaphores, max_groups}) {
    for (int i = 0; i < 4; ++i) {
      h ^= (v >> (8 * i)) & 0xFF;
      h *= 0x100000001b3ULL;
    }
  }
  return h;
}

namespace detail {

SegmentMap SegmentMap::compute(const Layout& l) noexcept {
  auto up = [](std::uint64_t x, std::uint64_t a) { return (x + a - 1) / a * a; };
  SegmentMap m;
  std::uint64_t off = 0;
  auto take = [&](std::uint64_t bytes, std::uint64_t align = kCacheLine) {
    off = up(off, align);
    const std::uint64_t at = off;
    off += bytes;
    return at;
  };
  const std::uint64_t cap = l.task_capacity;
  const std::uint64_t rings = std::uint64_t{l.max_queues} * l.levels;
  m.header = take(4096, 4096);
  m.task_ctrl = take(cap * sizeof(TaskCtrl));
  m.cold_offset = sizeof(TaskHot) + up(l.payload_bytes, kCacheLine);
  m.body_stride = m.cold_offset + sizeof(TaskCold);
  m.task_body = take(cap * m.body_stride, 4096);
  m.types = take(std::uint64_t{kMaxTypes} * sizeof(TypeEntry));
  m.queues = take(std::uint64_t{l.max_queues} * sizeof(QueueEntry));
  m.ring_hdrs = take(rings * sizeof(RingHeader));
  m.rings = take(rings * l.effective_ring_capacity() * sizeof(AtomicU64), 4096);
  m.participants = take(std::uint64_t{l.max_participants} * sizeof(ParticipantEntry));
  m.semaphores = take(std::uint64_t{l.max_semaphores} * sizeof(SemaphoreEntry));
  // Tasks parked on a semaphore wait in per-level rings of their own; a full park ring
  // sends the task back as delayed (it is retried), so they need not be table-sized.
  m.park_capacity = std::min<std::uint32_t>(l.task_capacity, 8192);
  const std::uint64_t parks = std::uint64_t{l.max_semaphores} * l.levels;
  m.park_hdrs = take(parks * sizeof(RingHeader));
  m.park_rings = take(parks * m.park_capacity * sizeof(AtomicU64), 4096);
  m.delayed_bits = take((cap + 63) / 64 * sizeof(AtomicU64));
  m.sleepers = take(std::uint64_t{l.max_queues} * sizeof(SleepMasks));
  m.counters = take(std::uint64_t{l.max_participants} * l.max_queues * l.levels * sizeof(LevelCounters), 4096);
  m.groups = take(std::uint64_t{l.max_groups} * sizeof(GroupEntry));
  m.group_notes = take(std::uint64_t{l.max_participants} * kGroupLanes * sizeof(GroupNote));
  m.group_counters = take(std::uint64_t{l.max_participants} * kGroupLanes * l.max_groups * sizeof(GroupCounters), 4096);
  m.waiting_bits = take((cap + 63) / 64 * sizeof(AtomicU64));
  m.schedules = take(std::uint64_t{kMaxSchedules} * sizeof(ScheduleEntry));
  m.total = up(off, 4096);
  return m;
}

}  // namespace detail
}  // namespace shmsched
