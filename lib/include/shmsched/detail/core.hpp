// Core: process-local typed views of one mapped segment (pointers computed once from
// the base address and the SegmentMap; none of them is stored in the segment).
#pragma once

#include <cstddef>
#include <cstdint>

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
  RingHeader* free_hdr = nullptr;
  AtomicU64* free_slots = nullptr;
  QueueEntry* queues = nullptr;
  RingHeader* ring_hdrs = nullptr;
  AtomicU64* ring_slots = nullptr;
  ParticipantSlot* participants = nullptr;
  SemaphoreEntry* semaphores = nullptr;
  AtomicU64* delayed_bits = nullptr;
  std::uint32_t capacity = 0;
  std::uint32_t ring_capacity = 0;
  std::uint32_t levels = 0;
  unsigned index_bits = 0;  // log2(capacity)

  void bind(std::byte* b, const Layout& l) noexcept;

  TaskBody* body(std::uint32_t i) const noexcept { return reinterpret_cast<TaskBody*>(bodies + stride * i); }
  std::byte* payload(std::uint32_t i) const noexcept { return bodies + stride * i + kBodyHeaderBytes; }
  std::uint16_t ring_id(std::uint32_t queue, std::uint32_t level) const noexcept {
    return static_cast<std::uint16_t>(queue * levels + level);
  }
  std::uint32_t ring_count() const noexcept { return layout.max_queues * levels; }
  /// The ring with this id (a queue ring or kFreeRingId); valid ids only.
  IndexRing<> ring(std::uint16_t id) const noexcept {
    if (id == kFreeRingId) return IndexRing<>(free_hdr, free_slots, capacity);
    return IndexRing<>(ring_hdrs + id, ring_slots + std::uint64_t{id} * ring_capacity, ring_capacity);
  }
  bool valid_ring(std::uint16_t id) const noexcept { return id == kFreeRingId || id < ring_count(); }
  std::uint64_t make_id(std::uint64_t version, std::uint32_t index) const noexcept {
    return (version << index_bits) | index;
  }
  std::uint32_t id_index(std::uint64_t id) const noexcept {
    return static_cast<std::uint32_t>(id & ((std::uint64_t{1} << index_bits) - 1));
  }
};

}  // namespace shmsched::detail
