// Open-addressed tables of named entries in the segment (queues, semaphores).
//
// An entry has a 64-bit `word` packing [name hash >> 2 : 62][state : 2] (kFree,
// kCreating, kReady) and a 32-byte name held in atomics. A creator claims the first free
// slot of the name's probe sequence with one CAS; racing creators of the same name meet
// in that slot and all write the same bytes (atomics, so no data race), and whoever
// finishes first publishes it ready with a release store. Entries are never removed, so
// a probe sequence never changes and an index stays valid for the segment's life.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "shmsched/detail/atomic.hpp"
#include "shmsched/detail/hash.hpp"
#include "shmsched/detail/shm_structs.hpp"

namespace shmsched::detail {

inline void write_name(AtomicU64 (&dst)[4], std::string_view name) noexcept {
  char buf[32] = {};
  std::memcpy(buf, name.data(), name.size() < 31 ? name.size() : 31);
  for (std::size_t i = 0; i < 4; ++i) {
    std::uint64_t w;
    std::memcpy(&w, buf + 8 * i, 8);
    // relaxed: published by the release store of the entry's word (N2).
    dst[i].store(w, std::memory_order_relaxed);
  }
}

inline std::string read_name(const AtomicU64 (&src)[4]) {
  char buf[33] = {};
  for (std::size_t i = 0; i < 4; ++i) {
    const std::uint64_t w = src[i].load(std::memory_order_relaxed);
    std::memcpy(buf + 8 * i, &w, 8);
  }
  return std::string(buf, ::strnlen(buf, 31));
}

/// Whether an entry's name is `name` (no allocation: the enqueue path compares with it).
inline bool name_equals(const AtomicU64 (&src)[4], std::string_view name) noexcept {
  if (name.size() > 31) return false;
  char buf[32] = {};
  std::memcpy(buf, name.data(), name.size());
  for (std::size_t i = 0; i < 4; ++i) {
    std::uint64_t w;
    std::memcpy(&w, buf + 8 * i, 8);
    if (src[i].load(std::memory_order_relaxed) != w) return false;
  }
  return true;
}

/// Index of the entry named `name`, creating it if needed; -1 when the table is full.
/// `finish(entry)` runs before an entry in kCreating is published (it must be
/// idempotent: every racing creator runs it).
template <class Entry, class Finish>
std::int64_t claim_named(Entry* table, std::uint32_t n, std::string_view name, Finish&& finish) {
  const std::uint64_t h = name_hash(name) >> kNamedStateBits;
  for (std::uint32_t probe = 0; probe < n; ++probe) {
    const std::uint32_t i = static_cast<std::uint32_t>((h + probe) % n);
    Entry& e = table[i];
    // (N1) acquire: pairs with (N2); a ready entry's name is visible.
    std::uint64_t w = e.word.load(std::memory_order_acquire);
    if (w == Entry::kFree) {
      const std::uint64_t claim = (h << kNamedStateBits) | Entry::kCreating;
      if (e.word.compare_exchange_strong(w, claim, std::memory_order_acq_rel, std::memory_order_acquire)) w = claim;
    }
    if ((w >> kNamedStateBits) != h) continue;  // another name lives here
    if (named_state(w) == Entry::kCreating) {
      // Whoever claimed it (maybe dead) writes what we write: finish it.
      write_name(e.name, name);
      finish(e);
      std::uint64_t expect = w;
      // (N2) release: publishes the name and what `finish` wrote; pairs with (N1).
      e.word.compare_exchange_strong(expect, (h << kNamedStateBits) | Entry::kReady, std::memory_order_release,
                                     std::memory_order_relaxed);
    }
    if (read_name(e.name) == name) return i;
  }
  return -1;
}

/// Index of the ready entry named `name`, or -1. `hash` is name_hash(name).
template <class Entry>
std::int64_t find_named(const Entry* table, std::uint32_t n, std::string_view name, std::uint64_t hash) noexcept {
  const std::uint64_t h = hash >> kNamedStateBits;
  for (std::uint32_t probe = 0; probe < n; ++probe) {
    const std::uint32_t i = static_cast<std::uint32_t>((h + probe) % n);
    const Entry& e = table[i];
    const std::uint64_t w = e.word.load(std::memory_order_acquire);  // (N1)
    if (w == Entry::kFree) break;
    if ((w >> kNamedStateBits) == h && named_state(w) == Entry::kReady && name_equals(e.name, name)) return i;
  }
  return -1;
}
template <class Entry>
std::int64_t find_named(const Entry* table, std::uint32_t n, std::string_view name) noexcept {
  return find_named(table, n, name, name_hash(name));
}

}  // namespace shmsched::detail
