// The hash of a short name (task type, queue, semaphore): FNV-1a 64. Records carry a
// type's hash instead of its name, and the named tables of the segment are addressed by
// it, so every process must compute the same value: it is part of the segment format.
#pragma once

#include <cstdint>
#include <string_view>

namespace shmsched::detail {

constexpr std::uint64_t name_hash(std::string_view name) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace shmsched::detail
