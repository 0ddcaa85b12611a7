// Process identity and liveness, and the clocks the engine uses.
//
// Contract: a process is identified by (pid, start time), where start time is field 22
// of /proc/<pid>/stat (clock ticks since boot). Pids are reused; the pair is not.
// `alive()` is decided by that pair only -- a stopped (SIGSTOP) process is alive, a
// zombie is dead -- never by a missed heartbeat. These functions make system calls and
// are for slow paths (attach, reaping, inspection).
#pragma once

#include <cstdint>

namespace shmsched {

struct ProcessIdentity {
  std::int32_t pid = 0;
  std::uint64_t start_time = 0;

  /// The calling process.
  static ProcessIdentity self() noexcept;
  /// The identity of `pid` now; start_time 0 when there is no such (live) process.
  static ProcessIdentity of(std::int32_t pid) noexcept;
  /// Whether this exact process (pid and start time) still runs; zombies are dead.
  bool alive() const noexcept;
  friend bool operator==(const ProcessIdentity&, const ProcessIdentity&) = default;
};

/// CLOCK_MONOTONIC in nanoseconds (vDSO: no system call on Linux x86-64).
std::int64_t monotonic_ns() noexcept;
/// CLOCK_REALTIME in nanoseconds.
std::int64_t unix_ns() noexcept;

}  // namespace shmsched
