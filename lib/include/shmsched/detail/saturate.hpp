// Saturating arithmetic for times read from the segment: a corrupt (or foreign) segment
// may hold any value there, and an overflowing subtraction is undefined behaviour.
#pragma once

#include <cstdint>
#include <limits>

namespace shmsched::detail {

/// a - b, clamped to the range of int64 instead of overflowing.
inline std::int64_t sub_sat(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t d = 0;
  if (__builtin_sub_overflow(a, b, &d))
    return b < 0 ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
  return d;
}

}  // namespace shmsched::detail
