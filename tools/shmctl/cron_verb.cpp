// shmctl cron NAME add|list|remove|pause|resume|next: periodic schedules of shell
// commands (docs/schedules.md). A schedule enqueues a "shell" task, as submit does,
// that any `shmctl worker` serving its queue runs.
#include <CLI/CLI.hpp>
#include <ctime>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common.hpp"
#include "shell_task.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

struct CronArgs {
  std::string name, action, id, expression, tz = "UTC", queue, missed = "skip";
  unsigned priority = 0, retries = 2, count = 5;
  std::vector<std::string> needs;
  std::vector<std::string> command;
  bool json = false;
};

// "2026-12-08 02:30 UTC" or, for local time, "2026-12-08 02:30 CET".
std::string format_due(std::int64_t unix_ms, TimeZone zone) {
  if (unix_ms == 0) return "never";
  const auto t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  char buf[64];
  if (zone == TimeZone::utc) {
    ::gmtime_r(&t, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  } else {
    ::localtime_r(&t, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", &tm);
  }
  return buf;
}

std::string command_text(const ScheduleInfo& s) {
  if (s.spec.type != kShellType) return s.spec.type + " task";
  std::string out;
  for (const auto& arg : decode_argv(s.spec.payload)) {
    if (!out.empty()) out += ' ';
    out += arg.find_first_of(" \t'\"") == std::string::npos ? arg : "'" + arg + "'";
  }
  return out;
}

nlohmann::ordered_json schedule_json(const ScheduleInfo& s, const Segment& seg) {
  std::string queue = std::to_string(s.queue);
  for (const auto& q : seg.queues())
    if (q.id == s.queue) queue = q.name;
  return {{"id", s.spec.id},
          {"expression", s.spec.expression},
          {"tz", std::string(to_string(s.spec.zone))},
          {"missed", std::string(to_string(s.spec.missed))},
          {"queue", queue},
          {"priority", s.spec.priority},
          {"type", s.spec.type},
          {"command", s.spec.type == kShellType ? nlohmann::ordered_json(decode_argv(s.spec.payload))
                                                : nlohmann::ordered_json(nullptr)},
          {"paused", s.paused},
          {"next_due_unix_ms",
           s.next_due_ms == 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s.next_due_ms)},
          {"firing", s.firing},
          {"fired", s.fired},
          {"missed_runs", s.missed},
          {"stalls", s.stalls},
          {"last_due_unix_ms",
           s.last_due_ms == 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s.last_due_ms)},
          {"last_late_us", s.last_late_us},
          {"last_task", s.last_task}};
}

int list(Segment& seg, bool json) {
  const auto all = schedules(seg);
  if (json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::array();
    for (const auto& s : all) j.push_back(schedule_json(s, seg));
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  if (all.empty()) {
    std::cout << "no schedules (shmctl cron " << seg.name() << " add ID 'EXPR' --queue Q -- COMMAND)\n";
    return kExitOk;
  }
  Table t({"ID", "WHEN", "TZ", "QUEUE", "P", "STATE", "NEXT", "FIRED", "MISSED", "COMMAND"},
          {false, false, false, false, true, false, false, true, true, false});
  for (const auto& s : all) {
    std::string queue = std::to_string(s.queue);
    for (const auto& q : seg.queues())
      if (q.id == s.queue) queue = q.name;
    t.add({s.spec.id, s.spec.expression, std::string(to_string(s.spec.zone)), queue, std::to_string(s.spec.priority),
           s.paused ? "paused" : (s.firing ? "firing" : "active"),
           s.paused ? "-" : format_due(s.next_due_ms, s.spec.zone), std::to_string(s.fired), std::to_string(s.missed),
           command_text(s)});
  }
  std::cout << t.render();
  return kExitOk;
}

int add(Segment& seg, Client& client, const CronArgs& a) {
  if (a.command.empty() || a.command[0].empty())
    throw Usage("missing COMMAND (shmctl cron NAME add ID 'EXPR' --queue Q -- COMMAND [ARGS...])");
  if (a.queue.empty()) throw Usage("cron add needs --queue Q");
  if (a.retries + 1 > 0xFFFF) throw Usage("--retries is too large");
  auto zone = parse_time_zone(a.tz);
  if (!zone) throw Usage("--tz " + a.tz + ": " + zone.error().detail());
  ScheduleSpec s;
  s.id = a.id;
  s.expression = a.expression;
  s.zone = *zone;
  s.missed = a.missed == "once" ? MissedRuns::run_once : MissedRuns::skip;
  s.type = std::string(kShellType);
  s.payload = encode_argv(a.command);
  auto q = seg.find_queue(a.queue);
  check(q, "cron add");
  s.queue = *q;
  if (a.priority >= seg.layout().levels)
    throw Usage("--priority must be 0.." + std::to_string(seg.layout().levels - 1));
  s.priority = static_cast<std::uint8_t>(a.priority);
  s.max_attempts = static_cast<std::uint16_t>(a.retries + 1);
  const auto items = split_list(a.needs);
  if (items.size() > 2) throw Usage("--needs: a task may need at most two semaphores");
  for (std::size_t i = 0; i < items.size(); ++i) s.needs[i] = resolve_need(seg, parse_need(items[i]));
  check(client.add_schedule(s), "cron add " + a.id);
  auto info = client.schedule(a.id);
  check(info, "cron add " + a.id);
  std::cout << "added schedule " << a.id << " (" << a.expression << ", " << to_string(s.zone) << "): next run "
            << format_due(info->next_due_ms, s.zone) << "\n";
  return kExitOk;
}

int next(const Segment& seg, const CronArgs& a) {
  auto info = schedule(seg, a.id);
  check(info, "cron next " + a.id);
  auto r = Recurrence::parse(info.value().spec.expression);
  check(r, "cron next " + a.id);
  if (info->paused) std::cout << "(paused: these are the times it would run)\n";
  std::int64_t t = info->next_due_ms;
  for (unsigned k = 0; k < a.count && t != 0; ++k) {
    std::cout << format_due(t, info->spec.zone);
    if (info->spec.zone == TimeZone::local) std::cout << "  (" << format_due(t, TimeZone::utc) << ")";
    std::cout << "\n";
    // An interval's times count from its anchor: the due time before is one of them.
    const auto n = r->next_after(t, info->spec.zone, r->every_ms > 0 ? t - r->every_ms : 0);
    t = n ? *n : 0;
  }
  return kExitOk;
}

int run_cron(const CronArgs& a) {
  const bool takes_id = a.action != "list";
  if (takes_id == a.id.empty())
    throw Usage(takes_id ? "cron " + a.action + " needs a schedule id: shmctl cron NAME " + a.action + " ID"
                         : "cron list takes no id");
  if (a.action == "add" && a.expression.empty())
    throw Usage("cron add needs an expression: shmctl cron NAME add ID 'EXPR' ...");
  if (a.action != "add" && !a.expression.empty()) throw Usage("cron " + a.action + " takes no expression");
  const bool look = a.action == "list" || a.action == "next";
  Segment seg = open_segment(a.name, look ? Access::look : Access::change);
  if (a.action == "list") return list(seg, a.json);  // reading needs no participant
  if (a.action == "next") return next(seg, a);
  auto client = Client::attach(seg, Role::observer);
  check(client, "attach");
  if (a.action == "add") return add(seg, *client, a);
  Errc e = Errc::ok;
  if (a.action == "remove") e = client->remove_schedule(a.id);
  if (a.action == "pause") e = client->pause_schedule(a.id);
  if (a.action == "resume") e = client->resume_schedule(a.id);
  if (e == Errc::unknown_schedule) throw Failure("no schedule '" + a.id + "' (shmctl cron " + a.name + " list)");
  check(e, "cron " + a.action + " " + a.id);
  std::cout << (a.action == "remove"  ? "removed"
                : a.action == "pause" ? "paused"
                                      : "resumed")
            << " schedule " << a.id << "\n";
  return kExitOk;
}

}  // namespace

void add_cron_verb(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<CronArgs>();
  auto* c = app.add_subcommand("cron", "Periodic schedules of shell commands: add, list, remove, pause, resume, next");
  c->add_option("NAME", a->name, "Segment name")->required();
  c->add_option("ACTION", a->action, "add ID 'EXPR' | list | remove ID | pause ID | resume ID | next ID")
      ->required()
      ->check(CLI::IsMember({"add", "list", "remove", "pause", "resume", "next"}));
  c->add_option("ID", a->id, "The schedule's id (1..31 of [A-Za-z0-9_.:-])");
  c->add_option("EXPR", a->expression,
                "add: a cron expression ('*/5 * * * *', '30 2 * * mon-fri', @daily ...) or '@every 90s'");
  c->add_option("--tz", a->tz, "add: read the expression in UTC or local (the host's zone)")->capture_default_str();
  c->add_option("--queue", a->queue, "add: the queue the command is enqueued into");
  whole_number(c->add_option("--priority", a->priority, "add: its level (0 = most urgent)"));
  list_option(c->add_option("--needs", a->needs, "add: semaphore permits it holds while it runs: SEM[:N]"));
  whole_number(c->add_option("--retries", a->retries, "add: retries after a failed attempt"))->capture_default_str();
  c->add_option("--missed", a->missed, "add: runs missed while nothing was alive: skip, or once")
      ->check(CLI::IsMember({"skip", "once"}))
      ->capture_default_str();
  whole_number(c->add_option("--count", a->count, "next: how many due times to show"))->capture_default_str();
  c->add_flag("--json", a->json, "list: print JSON");
  c->add_option("COMMAND", a->command, "add: the command and its arguments (after --)");
  c->footer(
      "Example: shmctl cron jobs add nightly '30 2 * * *' --tz local --queue general -- /usr/local/bin/backup\n"
      "The janitor (a consumer process's housekeeper) enqueues it at each due time, once;\n"
      "'shmctl worker jobs --home general' runs it.");
  verbs.push_back({c, [a] { return run_cron(*a); }});
}

}  // namespace shmctl
