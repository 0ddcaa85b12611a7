// Queues: named sets of priority rings.
//
// Contract: a queue has the segment's L levels; each level is an IndexRing of task
// record indices (0 = most urgent). Queues are created by name at segment creation or
// later by any process, race-safe: the table is open-addressed by a 62-bit name hash,
// the slot is claimed with one CAS, and racing creators of one name converge on the
// same slot (they write identical bytes, with atomics). Queues are never removed, so a
// QueueId stays valid for the segment's life. Names: 1..31 bytes of [A-Za-z0-9_.:-].
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "shmsched/error.hpp"

namespace shmsched {

using QueueId = std::uint16_t;

/// What a queue's aging bound does (Client::set_aging; docs/consumer.md, "Aging").
enum class AgingMode : std::uint8_t {
  serve_first = 0,  ///< a take serves a lower level first while its oldest task waited longer than the bound
  promote = 1,      ///< the janitor moves tasks that waited longer than the bound at their level up one level
};

struct QueueInfo {
  QueueId id = 0;
  std::string name;
  bool paused = false;
};

inline constexpr std::size_t kMaxQueueName = 31;
/// Checks a queue, semaphore or task-type name: 1..max bytes of [A-Za-z0-9_.:-].
Result<void> validate_short_name(std::string_view name, std::size_t max, std::string_view what);

}  // namespace shmsched
