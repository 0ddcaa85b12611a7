// Verbs about one task by its id: status.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

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
  if (s.expires_ns != 0) field("expires in", format_duration(s.expires_ns - now));
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

}  // namespace

void add_task_verbs(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<StatusArgs>();
  auto* c = app.add_subcommand("status", "Show what became of a task: its state, queue, attempts, worker, last error");
  c->add_option("NAME", a->name, "Segment name")->required();
  c->add_option("ID", a->id, "Task id, as submit printed it")->required();
  c->add_flag("--json", a->json, "Print it as JSON");
  verbs.push_back({c, [a] { return run_status(*a); }});
}

}  // namespace shmctl
