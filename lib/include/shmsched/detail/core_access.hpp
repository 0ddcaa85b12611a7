// The one door to a segment's internals for the engine, the inspector, tests and
// benchmarks: Segment::core() is private, and this header names who may call it.
// Programs use the public headers only.
#pragma once

#include "shmsched/detail/core.hpp"
#include "shmsched/segment.hpp"

namespace shmsched::detail {

struct CoreAccess {
  static Core& of(Segment& s) noexcept { return s.core(); }
  static const Core& of(const Segment& s) noexcept { return s.core(); }
};

inline Core& core_of(Segment& s) noexcept {
  return CoreAccess::of(s);
}
inline const Core& core_of(const Segment& s) noexcept {
  return CoreAccess::of(s);
}

}  // namespace shmsched::detail
