#include "shmsched/detail/fault.hpp"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <string>

namespace shmsched::fault {

namespace {
constexpr std::array<std::string_view, kPointCount> kNames = {
#define SHMSCHED_X(name) #name,
    SHMSCHED_FAULT_POINT_LIST(SHMSCHED_X)
#undef SHMSCHED_X
};

// Process-local (not in the segment): relaxed is enough, a test arms before it forks
// or before it starts the threads that pass the point.
std::array<std::atomic<std::uint64_t>, kPointCount> g_passes{};
std::atomic<int> g_armed{-1};
std::atomic<std::uint64_t> g_nth{0};
std::atomic<int> g_action{0};
std::atomic<bool> g_env_read{false};

void read_env() noexcept {
  if (g_env_read.exchange(true, std::memory_order_relaxed)) return;
  const char* spec = std::getenv("SHMSCHED_FAULT");
  if (spec == nullptr) return;
  std::string s(spec);
  const auto c1 = s.find(':');
  Point p;
  if (!from_name(s.substr(0, c1), p)) return;
  std::uint64_t nth = 1;
  Action action = Action::kill;
  if (c1 != std::string::npos) {
    const auto c2 = s.find(':', c1 + 1);
    nth = std::strtoull(s.substr(c1 + 1, c2 - c1 - 1).c_str(), nullptr, 10);
    if (c2 != std::string::npos && s.substr(c2 + 1) == "exit") action = Action::exit;
    if (c2 != std::string::npos && s.substr(c2 + 1) == "stop") action = Action::stop;
  }
  arm(p, nth == 0 ? 1 : nth, action);
}
}  // namespace

std::string_view name(Point p) noexcept {
  const auto i = static_cast<std::size_t>(p);
  return i < kPointCount ? kNames[i] : std::string_view("?");
}

bool from_name(std::string_view s, Point& out) noexcept {
  for (std::size_t i = 0; i < kPointCount; ++i) {
    if (kNames[i] == s) {
      out = static_cast<Point>(i);
      return true;
    }
  }
  return false;
}

void arm(Point p, std::uint64_t nth, Action action) noexcept {
  g_env_read.store(true, std::memory_order_relaxed);
  g_nth.store(g_passes[static_cast<std::size_t>(p)].load(std::memory_order_relaxed) + nth, std::memory_order_relaxed);
  g_action.store(static_cast<int>(action), std::memory_order_relaxed);
  g_armed.store(static_cast<int>(p), std::memory_order_relaxed);
}

void disarm() noexcept {
  g_armed.store(-1, std::memory_order_relaxed);
}

std::uint64_t passes(Point p) noexcept {
  return g_passes[static_cast<std::size_t>(p)].load(std::memory_order_relaxed);
}

void hit(Point p) noexcept {
  if (!g_env_read.load(std::memory_order_relaxed)) read_env();
  const auto i = static_cast<std::size_t>(p);
  const std::uint64_t n = g_passes[i].fetch_add(1, std::memory_order_relaxed) + 1;
  if (g_armed.load(std::memory_order_relaxed) == static_cast<int>(i) && n == g_nth.load(std::memory_order_relaxed)) {
    const int action = g_action.load(std::memory_order_relaxed);
    if (action == static_cast<int>(Action::exit)) ::_exit(99);
    if (action == static_cast<int>(Action::stop)) {
      ::kill(::getpid(), SIGSTOP);  // returns once continued
      return;
    }
    ::kill(::getpid(), SIGKILL);
    ::_exit(98);  // not reached
  }
}

}  // namespace shmsched::fault
