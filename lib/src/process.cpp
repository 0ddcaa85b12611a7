#include "shmsched/process.hpp"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace shmsched {

namespace {
// Reads /proc/<pid>/stat; returns the start time (field 22) and whether the process is
// a zombie or dead (field 3 is 'Z' or 'X'). 0 when there is no such process.
std::uint64_t read_start_time(std::int32_t pid, bool* gone) noexcept {
  if (gone) *gone = true;
  if (pid <= 0) return 0;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and parentheses: fields resume after
  // the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] == '\0') return 0;
  p += 2;  // now at field 3 (state)
  const char state = *p;
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return 0;
    ++p;
  }
  const std::uint64_t start = std::strtoull(p, nullptr, 10);
  if (gone) *gone = (state == 'Z' || state == 'X');
  return start;
}
}  // namespace

ProcessIdentity ProcessIdentity::self() noexcept {
  static const ProcessIdentity cached_for_pid = [] {
    ProcessIdentity id;
    id.pid = static_cast<std::int32_t>(::getpid());
    id.start_time = read_start_time(id.pid, nullptr);
    return id;
  }();
  // After fork() the cached value belongs to the parent.
  if (cached_for_pid.pid == static_cast<std::int32_t>(::getpid())) return cached_for_pid;
  ProcessIdentity id;
  id.pid = static_cast<std::int32_t>(::getpid());
  id.start_time = read_start_time(id.pid, nullptr);
  return id;
}

ProcessIdentity ProcessIdentity::of(std::int32_t pid) noexcept {
  bool gone = true;
  const std::uint64_t st = read_start_time(pid, &gone);
  return ProcessIdentity{pid, gone ? 0 : st};
}

bool ProcessIdentity::alive() const noexcept {
  if (pid <= 0 || start_time == 0) return false;
  bool gone = true;
  const std::uint64_t st = read_start_time(pid, &gone);
  return !gone && st == start_time;
}

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::int64_t unix_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace shmsched
