// Core: process-local typed views of one mapped segment (pointers computed once from
// the base address and the SegmentMap; none of them is stored in the segment).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "shmsched/detail/shm_structs.hpp"
#include "shmsched/detail/state_word.hpp"
#include "shmsched/layout.hpp"
#include "shmsched/ring.hpp"

namespace shmsched::detail {

struct Core {
  std::byte* base = nullptr;
  SegmentMap map{};
  Layout layout{};
  SegmentHeader* header = nullptr;
  TaskCtrl* ctrl = nullptr;
  std::byte* bodies = nullptr;
  std::uint64_t stride = 0;
  TypeEntry* types = nullptr;
  QueueEntry* queues = nullptr;
  RingHeader* ring_hdrs = nullptr;
  AtomicU64* ring_slots = nullptr;
  ParticipantEntry* participants = nullptr;
  SemaphoreEntry* semaphores = nullptr;
  RingHeader* park_hdrs = nullptr;
  AtomicU64* park_slots = nullptr;
  AtomicU64* delayed_bits = nullptr;
  SleepMasks* sleepers = nullptr;
  LevelCounters* counters = nullptr;
  GroupEntry* groups = nullptr;
  GroupNote* group_notes = nullptr;
  GroupCounters* group_counters = nullptr;
  AtomicU64* waiting_bits = nullptr;
  ScheduleEntry* schedules = nullptr;
  std::uint32_t capacity = 0;
  std::uint32_t ring_capacity = 0;
  std::uint32_t levels = 0;
  unsigned index_bits = 0;  // log2(capacity)

  void bind(std::byte* b, const Layout& l) noexcept;

  /// Where a scan of the task records may stop: no record at or past it was ever used.
  std::uint32_t scan_end() const noexcept {
    // seq_cst: pairs with the raise in alloc (see SegmentHeader::records_used).
    return std::min(capacity, header->records_used.load(std::memory_order_seq_cst));
  }

  /// The name registered for type hash `h`; empty when none is.
  std::string_view type_name(std::uint64_t h) const noexcept {
    const std::uint64_t key = h >> 2;
    for (std::uint32_t probe = 0; probe < kMaxTypes; ++probe) {
      const auto& e = types[(key + probe) % kMaxTypes];
      const std::uint64_t w = e.word.load(std::memory_order_acquire);  // (Y1) in lib/src/engine/types.hpp
      if (w == TypeEntry::kFree) break;
      if (w == ((key << 2) | TypeEntry::kReady)) return std::string_view(e.name, ::strnlen(e.name, sizeof e.name));
    }
    return {};
  }

  TaskHot* hot(std::uint32_t i) const noexcept { return reinterpret_cast<TaskHot*>(bodies + stride * i); }
  std::byte* payload(std::uint32_t i) const noexcept { return bodies + stride * i + sizeof(TaskHot); }
  TaskCold* cold(std::uint32_t i) const noexcept {
    return reinterpret_cast<TaskCold*>(bodies + stride * i + map.cold_offset);
  }
  std::uint16_t ring_id(std::uint32_t queue, std::uint32_t level) const noexcept {
    return static_cast<std::uint16_t>(queue * levels + level);
  }
  std::uint32_t ring_count() const noexcept { return layout.max_queues * levels; }
  /// Ring ids: queue rings are queue * levels + level; park rings follow them,
  /// ring_count() + semaphore * levels + level. Valid ids only.
  IndexRing<> ring(std::uint16_t id) const noexcept {
    if (id < ring_count())
      return IndexRing<>(ring_hdrs + id, ring_slots + std::uint64_t{id} * ring_capacity, ring_capacity);
    const std::uint32_t p = id - ring_count();
    return IndexRing<>(park_hdrs + p, park_slots + std::uint64_t{p} * map.park_capacity, map.park_capacity);
  }
  bool valid_ring(std::uint16_t id) const noexcept { return id < ring_count() + layout.max_semaphores * levels; }
  bool is_park_ring(std::uint16_t id) const noexcept { return id >= ring_count(); }
  std::uint16_t park_ring_id(std::uint32_t sem, std::uint32_t level) const noexcept {
    return static_cast<std::uint16_t>(ring_count() + sem * levels + level);
  }
  /// Counters of participant slot `p` (0-based) for (queue, level).
  LevelCounters& counter(std::uint32_t p, std::uint32_t queue, std::uint32_t level) const noexcept {
    return counters[(std::uint64_t{p} * layout.max_queues + queue) * levels + level];
  }
  /// Group counters of lane `lane` of participant slot `p` (0-based) for group entry
  /// `g`: a lane's counters for every group lie side by side, on lines it alone writes.
  GroupCounters& group_counter(std::uint32_t p, std::uint32_t lane, std::uint32_t g) const noexcept {
    return group_counters[(std::uint64_t{p} * kGroupLanes + lane) * layout.max_groups + g];
  }
  GroupNote& group_note(std::uint32_t p, std::uint32_t lane) const noexcept {
    return group_notes[std::uint64_t{p} * kGroupLanes + lane];
  }
  std::uint32_t mask_words() const noexcept { return (layout.max_participants + 1 + 63) / 64; }
  std::uint64_t make_id(std::uint64_t version, std::uint32_t index) const noexcept {
    return (version << index_bits) | index;
  }
  std::uint32_t id_index(std::uint64_t id) const noexcept {
    return static_cast<std::uint32_t>(id & ((std::uint64_t{1} << index_bits) - 1));
  }
};

}  // namespace shmsched::detail
