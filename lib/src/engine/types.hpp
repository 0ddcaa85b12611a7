// The type registry: task type names by hash, in the segment (Y1, Y2). A name is for
// people (inspection, logs); the hash is what dispatches. Entries are never removed.
#pragma once

#include "impl.hpp"

namespace shmsched {

inline void Client::Impl::register_type(std::uint64_t h, std::string_view name) noexcept {
  if (last_type.load(std::memory_order_relaxed) == h) return;
  const std::uint64_t key = h >> 2;
  for (std::uint32_t probe = 0; probe < detail::kMaxTypes; ++probe) {
    auto& e = core->types[(key + probe) % detail::kMaxTypes];
    // (Y1) acquire: pairs with (Y2); a ready entry's name is visible.
    std::uint64_t w = e.word.load(std::memory_order_acquire);
    if (w == detail::TypeEntry::kFree) {
      const std::uint64_t claimed = (key << 2) | detail::TypeEntry::kClaimed;
      if (e.word.compare_exchange_strong(w, claimed, std::memory_order_acquire, std::memory_order_acquire)) {
        detail::copy_cstr(e.name, sizeof e.name, name);
        // (Y2) release: publishes the name.
        e.word.store((key << 2) | detail::TypeEntry::kReady, std::memory_order_release);
        last_type.store(h, std::memory_order_relaxed);
        return;
      }
    }
    if ((w >> 2) != key) continue;
    // Ours, or being written by a racer with the same name (or a hash twin, which
    // keeps this name unshown: names are for people, the hash is what dispatches).
    last_type.store(h, std::memory_order_relaxed);
    return;
  }
}

// type_name for the take path: the calling thread remembers the last name it looked up
// for this Client. A ready type entry never changes (types are never unregistered), so
// the view stays valid while the segment is mapped, which outlives the Client; the
// Client's id (never reused) keys the memory, not the Impl's address.
inline std::string_view Client::Impl::type_name_cached(std::uint64_t h) const noexcept {
  struct Last {
    std::uint64_t client = 0, hash = 0;
    std::string_view name;
  };
  thread_local Last last;
  const std::uint64_t me = client_id;
  if (last.client == me && last.hash == h) return last.name;
  const std::string_view n = type_name(h);
  if (!n.empty()) last = {me, h, n};
  return n;
}

inline std::string_view Client::Impl::type_name(std::uint64_t h) const noexcept {
  return core->type_name(h);
}

}  // namespace shmsched
