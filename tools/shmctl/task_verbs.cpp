// Verbs about tasks by id: status, result, cancel (also by group, type or queue),
// priority (also by group).
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

std::string queue_name(const Segment& seg, QueueId q) {
  for (const auto& qi : seg.queues())
    if (qi.id == q) return qi.name;
  return std::to_string(q);
}

// ---- status -------------------------------------------------------------------------------

struct StatusArgs {
  std::string name, id;
  bool json = false;
};

nlohmann::ordered_json status_json(const Segment& seg, const TaskInfo& s, std::int64_t now) {
  nlohmann::ordered_json j = {{"id", s.id}, {"status", std::string(to_string(s.status))}};
  if (s.status == TaskStatus::unknown) return j;
  j["type"] = s.type;
  j["queue"] = queue_name(seg, s.queue);
  j["priority"] = s.priority;
  j["attempts"] = s.attempts;
  j["max_attempts"] = s.max_attempts;
  j["pid"] = s.pid;
  j["age_ns"] = now - s.enqueued_ns;
  j["due_in_ns"] = s.not_before_ns == 0 ? 0 : s.not_before_ns - now;
  j["expires_in_ns"] = s.expires_ns == 0 ? nullptr : nlohmann::ordered_json(s.expires_ns - now);
  j["last_error"] = s.last_error;
  j["keep_result"] = s.keep_result;
  if (s.waits_for != 0) j[s.waits_for_group ? "waits_for_group" : "waits_for_task"] = s.waits_for;
  if (s.status == TaskStatus::done) {
    j["result_bytes"] = s.result_bytes;
    j["finished_ago_ns"] = now - s.finished_ns;
  }
  return j;
}

void print_status(const Segment& seg, const TaskInfo& s, std::int64_t now) {
  std::cout << "task " << s.id << ": " << to_string(s.status);
  if (s.status == TaskStatus::unknown) {
    std::cout << " (no record holds it: finished and released, purged, or never enqueued)\n";
    return;
  }
  std::cout << "\n";
  auto field = [](std::string_view key, const std::string& value) {
    std::cout << "  " << key << std::string(12 - key.size(), ' ') << value << "\n";
  };
  field("type", s.type.empty() ? "?" : s.type);
  field("queue", queue_name(seg, s.queue) + " (level " + std::to_string(s.priority) + ")");
  field("attempts", std::to_string(s.attempts) + " of " + std::to_string(s.max_attempts));
  if (s.pid != 0) field("pid", std::to_string(s.pid));
  field("age", format_duration(now - s.enqueued_ns));
  if (s.status == TaskStatus::delayed) field("due in", format_duration(s.not_before_ns - now));
  if (s.waits_for != 0) field("waits for", (s.waits_for_group ? "group " : "task ") + std::to_string(s.waits_for));
  if (s.status == TaskStatus::done) {
    field("finished", format_duration(now - s.finished_ns) + " ago");
    field("result", std::to_string(s.result_bytes) + " bytes, kept for " + format_duration(s.expires_ns - now) +
                        " more ('shmctl result' takes it)");
  } else if (s.expires_ns != 0) {
    field("expires in", format_duration(s.expires_ns - now));
  }
  if (!s.last_error.empty()) field("last error", s.last_error);
}

int run_status(const StatusArgs& a) {
  const TaskId id = parse_task_id(a.id);
  Segment seg = open_segment(a.name, Access::look);
  auto s = task_status(seg, id);
  check(s, "status " + a.id);
  const std::int64_t now = monotonic_ns();
  if (a.json) {
    std::cout << status_json(seg, *s, now).dump(2) << "\n";
  } else {
    print_status(seg, *s, now);
  }
  return kExitOk;
}

// ---- result -------------------------------------------------------------------------------

struct ResultArgs {
  std::string name, id, wait;
  bool json = false;
  CLI::Option* wait_option = nullptr;
};

// Prints a taken result: the value as it is (a command's output), or the failure.
int print_result(const TaskResult& r, bool json) {
  if (json) {
    nlohmann::ordered_json j = {{"id", r.id}, {"status", std::string(to_string(r.status))}};
    if (r.status == TaskStatus::done) j["value"] = r.value;
    if (r.status == TaskStatus::dead) j["error"] = r.error;
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else if (r.status == TaskStatus::done) {
    std::cout << r.value;
  } else {
    std::cerr << "shmctl: task " << r.id << " failed: " << r.error << "\n";
  }
  return r.status == TaskStatus::done ? kExitOk : kExitFailure;
}

int run_result(const ResultArgs& a) {
  const TaskId id = parse_task_id(a.id);
  const bool waits = a.wait_option->count() > 0;
  const auto wait = waits ? parse_duration(a.wait, "--wait") : std::chrono::nanoseconds(0);
  Segment seg = open_segment(a.name, Access::change);
  auto client = Client::attach(seg, Role::observer);
  check(client, "attach");
  auto r = waits ? client->wait(id, wait) : client->take_result(id);
  if (!r) {
    switch (r.code()) {
      case Errc::not_finished:
        throw Failure("task " + a.id + " has not finished (wait for it with --wait DUR)");
      case Errc::unknown_task:
        throw Failure("task " + a.id +
                      " holds no result: it was not submitted with --keep-result, its result was read or "
                      "expired, or there is no such task");
      default:
        throw Failure("result " + a.id + ": " + r.error().message());
    }
  }
  return print_result(*r, a.json);
}

// ---- cancel -------------------------------------------------------------------------------

struct CancelArgs {
  std::string name, id, type, queue, group;
};

int run_cancel(const CancelArgs& a) {
  const int ways = static_cast<int>(!a.id.empty()) + static_cast<int>(!a.type.empty()) +
                   static_cast<int>(!a.queue.empty()) + static_cast<int>(!a.group.empty());
  if (ways != 1) throw Usage("cancel takes one of: ID, --group G, --type T, --queue Q");
  Segment seg = open_segment(a.name, Access::change);
  auto client = Client::attach(seg, Role::observer);
  check(client, "attach");
  if (!a.id.empty()) {
    const TaskId id = parse_task_id(a.id);
    auto r = client->cancel(id);
    if (!r && r.code() == Errc::unknown_task)
      throw Failure("task " + a.id + " is unknown (finished and released, or no such task)");
    check(r, "cancel " + a.id);
    switch (*r) {
      case CancelOutcome::cancelled:
        std::cout << "cancelled task " << id << "\n";
        break;
      case CancelOutcome::requested:
        std::cout << "task " << id << " is running: asked it to stop (a shmctl worker stops its command)\n";
        break;
      case CancelOutcome::finished:
        std::cout << "task " << id << " had finished: nothing to cancel\n";
        break;
    }
    return kExitOk;
  }
  CancelCounts n;
  if (!a.queue.empty()) {
    auto q = seg.find_queue(a.queue);
    check(q, "cancel --queue");
    n = client->cancel_queue(*q);
  } else if (!a.type.empty()) {
    n = client->cancel_type(a.type);
  } else {
    n = client->cancel_group(resolve_group(seg, a.group));
  }
  std::cout << "cancelled " << n.cancelled << " waiting task(s), asked " << n.requested << " running to stop\n";
  return kExitOk;
}

// ---- priority -----------------------------------------------------------------------------

struct PriorityArgs {
  std::string name, id;
  std::vector<std::string> args;  // ID LEVEL, or LEVEL with --group
  unsigned level = 0;
  std::string group;
};

int run_priority(PriorityArgs a) {
  if (a.args.size() != (!a.group.empty() ? 1u : 2u))
    throw Usage("give ID LEVEL, or --group G LEVEL (shmctl priority NAME ID LEVEL)");
  if (a.group.empty()) a.id = a.args[0];
  const std::string& level_text = a.args.back();
  if (level_text.empty() || level_text.size() > 3 || level_text.find_first_not_of("0123456789") != std::string::npos)
    throw Usage("LEVEL must be a level number, 0 = most urgent (got '" + level_text + "')");
  a.level = static_cast<unsigned>(std::stoul(level_text));
  Segment seg = open_segment(a.name, Access::change);
  if (a.level >= seg.layout().levels)
    throw Usage("LEVEL must be 0.." + std::to_string(seg.layout().levels - 1) + " (the segment has " +
                std::to_string(seg.layout().levels) + " levels)");
  auto client = Client::attach(seg, Role::observer);
  check(client, "attach");
  const auto level = static_cast<std::uint8_t>(a.level);
  if (!a.group.empty()) {
    std::cout << "moved " << client->set_group_priority(resolve_group(seg, a.group), level)
              << " waiting task(s) of group " << a.group << " to level " << a.level << "\n";
    return kExitOk;
  }
  const TaskId id = parse_task_id(a.id);
  switch (const Errc e = client->set_priority(id, level)) {
    case Errc::ok:
      std::cout << "task " << id << " waits at level " << a.level << " now\n";
      return kExitOk;
    case Errc::not_waiting:
      throw Failure("task " + a.id + " does not wait (it runs or has finished): it cannot move");
    case Errc::unknown_task:
      throw Failure("task " + a.id + " is unknown (finished and released, or no such task)");
    default:
      check(e, "priority " + a.id);
      return kExitFailure;
  }
}

}  // namespace

void add_task_verbs(CLI::App& app, Verbs& verbs) {
  {
    auto a = std::make_shared<PriorityArgs>();
    auto* c = app.add_subcommand("priority", "Move a waiting task (or a group's) to another level");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_option("ID LEVEL", a->args, "Task id (not with --group) and the new level, 0 = most urgent");
    c->add_option("--group", a->group, "Every waiting task of this group (its name or id)");
    verbs.push_back({c, [a] { return run_priority(*a); }});
  }
  {
    auto a = std::make_shared<CancelArgs>();
    auto* c =
        app.add_subcommand("cancel", "Cancel a task (or a group's, a type's or a queue's): waiting ones never run");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_option("ID", a->id, "Task id, as submit printed it");
    c->add_option("--group", a->group, "Every task of this group (its name or id)");
    c->add_option("--type", a->type, "Every task of this type");
    c->add_option("--queue", a->queue, "Every task of this queue (a purge)");
    verbs.push_back({c, [a] { return run_cancel(*a); }});
  }
  {
    auto a = std::make_shared<ResultArgs>();
    auto* c = app.add_subcommand("result", "Print (and take) a finished --keep-result task's result");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_option("ID", a->id, "Task id, as submit printed it")->required();
    a->wait_option = c->add_option("--wait", a->wait, "Wait this long for the task to finish (10s, 2m)");
    c->add_flag("--json", a->json, "Print it as JSON");
    c->footer("Reading a result takes it: the record is freed. A failed task's reason goes to stderr, exit 1.");
    verbs.push_back({c, [a] { return run_result(*a); }});
  }
  auto a = std::make_shared<StatusArgs>();
  auto* c = app.add_subcommand("status", "Show what became of a task: its state, queue, attempts, worker, last error");
  c->add_option("NAME", a->name, "Segment name")->required();
  c->add_option("ID", a->id, "Task id, as submit printed it")->required();
  c->add_flag("--json", a->json, "Print it as JSON");
  verbs.push_back({c, [a] { return run_status(*a); }});
}

}  // namespace shmctl
