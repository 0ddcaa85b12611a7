// wait: block until a segment (or one queue) has drained -- nothing queued, delayed,
// parked or running -- for deploy scripts. It polls inspect() every ~50 ms: a tool
// that waits for minutes does not need a wake-up protocol of its own, and polling
// never writes to the segment.
#include <poll.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <deque>
#include <iostream>
#include <memory>
#include <optional>

#include "common.hpp"
#include "terminal.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

struct WaitArgs {
  std::string name;
  std::string queue;
  std::string timeout;
  std::string poll = "50ms";
  bool progress = false;
  CLI::Option* timeout_option = nullptr;
};

struct Progress {
  std::uint64_t left = 0;       // tasks not finished yet
  std::uint64_t completed = 0;  // done + dead-lettered, cumulative (counters)
  StateCounts records;          // of the segment, or of the queue
  bool drained = false;
};

// Segment-wide: the record states are exact for each record (one scan of the table),
// so "all zero" means nothing was live at any moment of the scan.
//
// One queue: its records by state (queued, running, delayed or parked), from the
// snapshot's scan of the task table.
Progress measure(const Snapshot& s, std::optional<QueueId> queue) {
  Progress p;
  p.records = s.records;
  const std::uint64_t all = s.records.outstanding();
  if (!queue) {
    p.left = all;
    for (const auto& q : s.queues)
      for (const auto& l : q.levels) p.completed += l.counters.done + l.counters.dead;
    p.drained = all == 0;
    return p;
  }
  for (const auto& q : s.queues) {
    if (q.id != *queue) continue;
    for (const auto& l : q.levels) p.completed += l.counters.done + l.counters.dead;
    p.records = q.records;
    p.left = q.outstanding();
  }
  p.drained = p.left == 0;
  return p;
}

std::string describe(const Progress& p) {
  return std::to_string(p.left) + " task(s) left (" + outstanding_counts(p.records) + ")";
}

// Rate over the last few seconds of samples, for the ETA.
class RateMeter {
 public:
  void add(double t, std::uint64_t completed) {
    samples_.push_back({t, completed});
    while (samples_.size() > 2 && samples_.front().t < t - 5.0) samples_.pop_front();
  }
  double per_second() const {
    if (samples_.size() < 2) return 0;
    const auto& a = samples_.front();
    const auto& b = samples_.back();
    if (b.t - a.t < 0.2 || b.completed < a.completed) return 0;
    return static_cast<double>(b.completed - a.completed) / (b.t - a.t);
  }

 private:
  struct Sample {
    double t;
    std::uint64_t completed;
  };
  std::deque<Sample> samples_;
};

std::string progress_line(const Progress& p, std::uint64_t total, double rate, int width) {
  const double frac = total == 0 ? 1.0 : 1.0 - static_cast<double>(p.left) / static_cast<double>(total);
  const int bar_width = std::clamp(width - 50, 10, 40);
  const int fill = static_cast<int>(std::clamp(frac, 0.0, 1.0) * bar_width);
  char buf[256];
  std::string eta = "-";
  if (rate > 0) eta = format_duration(static_cast<std::int64_t>(static_cast<double>(p.left) / rate * 1e9));
  std::snprintf(buf, sizeof buf, "[%s%s] %3d%%  %llu left  %.1f/s  ETA %s", std::string(fill, '#').c_str(),
                std::string(bar_width - fill, '.').c_str(), static_cast<int>(frac * 100),
                static_cast<unsigned long long>(p.left), rate, eta.c_str());
  return buf;
}

int run_wait(const WaitArgs& a) {
  const auto poll_every = parse_duration(a.poll, "--poll");
  std::optional<std::chrono::nanoseconds> timeout;
  // Given at all, it must be a duration: "--timeout ''" is not "forever".
  if (a.timeout_option->count() > 0) timeout = parse_duration(a.timeout, "--timeout");
  Segment seg = open_segment(a.name, Access::look);
  std::optional<QueueId> queue;
  if (!a.queue.empty()) {
    auto q = seg.find_queue(a.queue);
    check(q, "wait");
    queue = *q;
  }
  const std::string what = queue ? "queue '" + a.queue + "'" : "segment '" + a.name + "'";
  const bool draw = a.progress && is_terminal(STDERR_FILENO);
  StopSignals signals;

  const auto start = std::chrono::steady_clock::now();
  RateMeter meter;
  std::uint64_t total = 0, completed0 = 0;
  double last_print = -1;
  for (bool first = true;; first = false) {
    const Progress p = measure(inspect(seg), queue);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (first) completed0 = p.completed;
    // What this wait has seen to do: what was left at first, plus what arrived since.
    total = std::max(total, p.left + (p.completed - std::min(p.completed, completed0)));
    meter.add(t, p.completed);
    if (a.progress && !p.drained) {
      if (draw && t - last_print >= 0.1) {
        std::fprintf(stderr, "\r%s\x1b[K", progress_line(p, total, meter.per_second(), terminal_size(2).cols).c_str());
        last_print = t;
      } else if (!draw && (last_print < 0 || t - last_print >= 1.0)) {
        std::fprintf(stderr, "%s\n", progress_line(p, total, meter.per_second(), 100).c_str());
        last_print = t;
      }
    }
    if (p.drained) {
      if (draw) std::fprintf(stderr, "\r\x1b[K");
      std::cout << what << " drained";
      if (!first) std::cout << " after " << format_duration(static_cast<std::int64_t>(t * 1e9));
      std::cout << "\n";
      return kExitOk;
    }
    if (stop_requested().load()) {
      if (draw) std::fprintf(stderr, "\n");
      throw Failure("interrupted while waiting for " + what + ": " + describe(p));
    }
    if (timeout && std::chrono::steady_clock::now() - start >= *timeout) {
      if (draw) std::fprintf(stderr, "\n");
      throw Failure("timed out after " + a.timeout + " waiting for " + what + " to drain: " + describe(p));
    }
    auto nap = std::chrono::duration_cast<std::chrono::milliseconds>(poll_every);
    if (timeout) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          start + *timeout - std::chrono::steady_clock::now() + std::chrono::milliseconds(1));
      nap = std::clamp(left, std::chrono::milliseconds(1), nap);
    }
    ::poll(nullptr, 0, static_cast<int>(nap.count()));  // returns early on a signal
  }
}

}  // namespace

void add_wait_verb(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<WaitArgs>();
  auto* c = app.add_subcommand("wait", "Block until nothing is queued, delayed, parked or running (exit 1 on timeout)");
  c->add_option("NAME", a->name, "Segment name")->required();
  c->add_option("--queue", a->queue, "Wait for this queue only");
  a->timeout_option =
      c->add_option("--timeout", a->timeout, "Give up after this long (500ms, 10s, 2m); default: wait forever");
  c->add_flag("--progress", a->progress, "Show progress with rate and ETA on stderr");
  c->add_option("--poll", a->poll, "How often to look")->capture_default_str();
  verbs.push_back({c, [a] { return run_wait(*a); }});
}

}  // namespace shmctl
