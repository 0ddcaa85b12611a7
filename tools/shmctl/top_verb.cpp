// top: a live view of one segment. On a terminal it redraws a full screen every
// interval (depth bars per level, rates from counter deltas, consumers, semaphores) and
// quits on 'q'; when stdout is not a terminal it prints a plain snapshot per interval,
// so it can be logged or tested.
#include <poll.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <sstream>

#include "common.hpp"
#include "terminal.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

struct TopArgs {
  std::string name;
  std::string interval = "1s";
  unsigned iterations = 0;
};

std::string rate(std::uint64_t now, std::uint64_t before, double dt) {
  if (dt <= 0 || now < before) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(now - before) / dt);
  return buf;
}

std::string bar(std::uint64_t value, std::uint64_t max, int width) {
  if (width <= 0) return {};
  int fill = max == 0 ? 0 : static_cast<int>(std::ceil(static_cast<double>(value) * width / static_cast<double>(max)));
  fill = std::clamp(fill, value > 0 ? 1 : 0, width);
  return std::string(static_cast<std::size_t>(fill), '#') + std::string(static_cast<std::size_t>(width - fill), '.');
}

std::string clock_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// One frame as lines. `prev` is the snapshot of the previous frame (rates), or null.
std::vector<std::string> render(const Snapshot& s, const Snapshot* prev, double dt, int cols, bool quit_hint) {
  std::vector<std::string> lines;
  auto text = [&](const std::string& t) {
    std::istringstream in(t);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  };
  {
    std::ostringstream o;
    o << "shmctl top  segment " << s.name << "  " << clock_now();
    if (quit_hint) o << "  (q quits)";
    lines.push_back(o.str());
  }
  {
    std::ostringstream o;
    o << "tasks: " << outstanding_counts(s.records, "  ") << "  dead-lettered " << s.records[TaskState::dead]
      << "  free " << s.records.reservable() << "/" << s.layout.task_capacity;
    lines.push_back(o.str());
  }
  lines.emplace_back();

  // Queues: one line per level that has work or history (level 0 for an idle queue).
  struct Row {
    std::string queue;
    std::size_t level;
    const LevelSnapshot* now;
    const LevelSnapshot* before;
  };
  std::vector<Row> rows;
  std::uint64_t max_depth = 0;
  for (const auto& q : s.queues) {
    const QueueSnapshot* pq = nullptr;
    if (prev != nullptr)
      for (const auto& x : prev->queues)
        if (x.id == q.id) pq = &x;
    auto active = [](const LevelSnapshot& x) {
      return x.depth != 0 || x.counters.enqueued != 0 || x.counters.started != 0;
    };
    const bool any = std::any_of(q.levels.begin(), q.levels.end(), active);
    bool first = true;
    for (std::size_t l = 0; l < q.levels.size(); ++l) {
      const auto& lv = q.levels[l];
      if (!active(lv) && (any || l != 0)) continue;
      std::string qn = first ? q.name + (q.paused ? " (paused)" : "") +
                                   (q.rate > 0 ? " (rate " + rate_text(q.rate, q.burst) + ")" : "")
                             : "";
      rows.push_back({qn, l, &lv, pq != nullptr && l < pq->levels.size() ? &pq->levels[l] : nullptr});
      max_depth = std::max(max_depth, lv.depth);
      first = false;
    }
  }
  {
    // Columns besides the bar take about 80; the bar gets the rest (10..60).
    const int bar_width = std::clamp(cols - 84, 10, 60);
    Table t({"QUEUE", "LVL", "DEPTH", "", "ENQ/s", "DONE/s", "FAIL/s", "DEAD/s", "OLDEST"},
            {false, true, true, false, true, true, true, true, true});
    for (const auto& r : rows) {
      const LevelStats& c = r.now->counters;
      const LevelStats* b = r.before != nullptr ? &r.before->counters : nullptr;
      t.add({r.queue, std::to_string(r.level), std::to_string(r.now->depth), bar(r.now->depth, max_depth, bar_width),
             b ? rate(c.enqueued, b->enqueued, dt) : "-", b ? rate(c.done, b->done, dt) : "-",
             b ? rate(c.failed, b->failed, dt) : "-", b ? rate(c.dead, b->dead, dt) : "-",
             format_duration(r.now->oldest_age_ns)});
    }
    if (rows.empty()) {
      lines.push_back("no queues");
    } else {
      text(t.render());
    }
  }
  lines.emplace_back();

  // Consumers (live or not: a dead one still holding a slot is worth seeing).
  {
    Table t({"CONSUMER", "WORKERS", "BUSY", "IDLE", "STATE", "PROCESSED", "DONE/s", "HEARTBEAT", "CURRENT TASK"},
            {true, true, true, true, false, true, true, true, true});
    std::size_t n = 0;
    for (const auto& p : s.participants) {
      if (!has_role(p.role, Role::consumer)) continue;
      ++n;
      const ParticipantSnapshot* pp = nullptr;
      if (prev != nullptr)
        for (const auto& x : prev->participants)
          if (x.slot == p.slot && x.pid == p.pid && x.start_time == p.start_time) pp = &x;
      const std::uint32_t asleep = std::min(p.sleepers, p.workers);
      std::string state = p.alive ? (p.activity == Activity::stopping ? "stopping" : "running") : "DEAD";
      if (p.token == s.janitor_token && s.janitor_token != 0) state += ",janitor";
      t.add({std::to_string(p.pid), std::to_string(p.workers), std::to_string(p.workers - asleep),
             std::to_string(asleep), state, std::to_string(p.processed),
             pp ? rate(p.counters.done, pp->counters.done, dt) : "-", format_duration(p.heartbeat_age_ns),
             p.current_task == 0 ? "-" : std::to_string(p.current_task)});
    }
    if (n == 0) {
      lines.push_back("no consumers attached");
    } else {
      text(t.render());
    }
    const std::size_t others = s.participants.size() - n;
    if (others != 0) lines.push_back("(" + std::to_string(others) + " other participant(s): producers, observers)");
  }
  lines.emplace_back();

  if (s.semaphores.empty()) {
    lines.push_back("no semaphores");
  } else {
    Table t({"SEMAPHORE", "", "IN USE", "PARKED", "WAITERS", "RATE"}, {false, false, true, true, true, false});
    for (const auto& m : s.semaphores)
      t.add({m.name, "[" + bar(m.in_use, m.capacity, std::clamp<int>(static_cast<int>(m.capacity), 4, 20)) + "]",
             std::to_string(m.in_use) + "/" + std::to_string(m.capacity), std::to_string(m.parked),
             std::to_string(m.waiters), m.rate > 0 ? rate_text(m.rate, m.burst) : "-"});
    text(t.render());
  }
  if (!s.groups.empty()) {
    lines.emplace_back();
    Table t({"GROUP", "", "FINISHED", "FAILED", "CANCELLED", "RUNNING", "STATE"},
            {false, false, true, true, true, true, false});
    for (const auto& g : s.groups)
      t.add({g.name, "[" + bar(g.finished_members(), g.total, 20) + "]",
             std::to_string(g.finished_members()) + "/" + std::to_string(g.total), std::to_string(g.failed),
             std::to_string(g.cancelled), std::to_string(g.running), std::string(to_string(g.state))});
    text(t.render());
  }
  return lines;
}

int run_top(const TopArgs& a) {
  const auto interval = parse_duration(a.interval, "--interval");
  if (interval < std::chrono::milliseconds(50)) throw Usage("--interval must be at least 50ms");
  Segment seg = open_segment(a.name, Access::look);
  const bool interactive = is_terminal(STDOUT_FILENO);
  StopSignals signals;
  std::unique_ptr<RawTerminal> raw;
  const bool keyboard = interactive && is_terminal(STDIN_FILENO);
  if (interactive) raw = std::make_unique<RawTerminal>(STDIN_FILENO, STDOUT_FILENO);

  std::unique_ptr<Snapshot> prev;
  auto prev_time = std::chrono::steady_clock::now();
  for (unsigned iter = 0; !stop_requested().load(); ++iter) {
    Snapshot snap = inspect(seg);
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - prev_time).count();
    const TermSize size = terminal_size(STDOUT_FILENO);
    const auto lines = render(snap, prev.get(), dt, interactive ? size.cols : 100, keyboard);
    if (interactive) {
      // Home, then each line cleared to its end, then the rest of the screen: no flicker.
      std::string frame = "\x1b[H";
      const std::size_t max_lines = static_cast<std::size_t>(std::max(1, size.rows - 1));
      for (std::size_t i = 0; i < lines.size() && i < max_lines; ++i) {
        std::string l = lines[i];
        if (l.size() > static_cast<std::size_t>(size.cols)) l.resize(static_cast<std::size_t>(size.cols));
        frame += l + "\x1b[K\r\n";
      }
      frame += "\x1b[J";
      std::fwrite(frame.data(), 1, frame.size(), stdout);
    } else {
      for (const auto& l : lines) std::fputs((l + "\n").c_str(), stdout);
      std::fputs("\n", stdout);
    }
    std::fflush(stdout);
    prev = std::make_unique<Snapshot>(std::move(snap));
    prev_time = now;
    if (a.iterations != 0 && iter + 1 >= a.iterations) break;

    // Wait for the next refresh, or a key.
    const auto deadline = now + interval;
    bool quit = false;
    while (!quit && !stop_requested().load()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd pfd{keyboard ? STDIN_FILENO : -1, POLLIN, 0};
      const int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (r > 0 && (pfd.revents & POLLIN) != 0) {
        char buf[64];
        const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
        for (ssize_t i = 0; i < n; ++i)
          if (buf[i] == 'q' || buf[i] == 'Q') quit = true;
        if (n == 0) pfd.fd = -1;  // end of input: keep refreshing
      }
    }
    if (quit) break;
  }
  raw.reset();
  return kExitOk;
}

}  // namespace

void add_top_verb(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<TopArgs>();
  auto* c = app.add_subcommand("top", "Live view of a segment: depths, rates, consumers, semaphores (q quits)");
  c->add_option("NAME", a->name, "Segment name")->required();
  c->add_option("--interval", a->interval, "Refresh interval")->capture_default_str();
  c->add_option("--iterations", a->iterations, "Stop after N refreshes (0 = until q or a signal)")
      ->capture_default_str();
  verbs.push_back({c, [a] { return run_top(*a); }});
}

}  // namespace shmctl
