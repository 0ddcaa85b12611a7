// stat and metrics: one read-only snapshot (shmsched::inspect) of a segment, shown to a
// person, a program (JSON) or Prometheus (text exposition format).
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.hpp"

namespace shmctl {
namespace {

using namespace shmsched;
using json = nlohmann::ordered_json;

// The consumer marks itself busy from start to stop; whether its workers actually work
// shows in how many of them sleep. A process whose every worker sleeps is idle.
const char* activity_name(const ParticipantSnapshot& p) {
  if (p.activity == Activity::busy && p.workers > 0 && p.sleepers >= p.workers) return "idle";
  switch (p.activity) {
    case Activity::idle:
      return "idle";
    case Activity::busy:
      return "busy";
    case Activity::stopping:
      return "stopping";
  }
  return "?";
}

json roles_json(Role r) {
  json out = json::array();
  if (has_role(r, Role::producer)) out.push_back("producer");
  if (has_role(r, Role::consumer)) out.push_back("consumer");
  if (has_role(r, Role::observer)) out.push_back("observer");
  return out;
}

json snapshot_json(const Snapshot& s) {
  json j;
  j["name"] = s.name;
  j["size_bytes"] = s.size_bytes;
  j["layout"] = {{"levels", s.layout.levels},
                 {"task_capacity", s.layout.task_capacity},
                 {"payload_bytes", s.layout.payload_bytes},
                 {"ring_capacity", s.layout.effective_ring_capacity()},
                 {"max_queues", s.layout.max_queues},
                 {"max_participants", s.layout.max_participants},
                 {"max_semaphores", s.layout.max_semaphores},
                 {"max_groups", s.layout.max_groups}};
  j["creator"] = {{"pid", s.creator.pid}, {"start_time", s.creator.start_time}, {"alive", s.creator.alive()}};
  j["records"] = json::object();
  for (std::size_t i = 0; i < kTaskStates; ++i) {  // virgin records are counted as free
    const auto st = static_cast<TaskState>(i);
    if (st != TaskState::virgin)
      j["records"][std::string(to_string(st))] = st == TaskState::free ? s.records.reservable() : s.records[st];
  }
  j["queued"] = s.records[TaskState::queued];
  j["running"] = s.records[TaskState::running];
  j["delayed"] = s.records[TaskState::delayed];
  j["parked"] = s.records[TaskState::parked];
  j["waiting"] = s.records[TaskState::waiting];
  j["dead_letters"] = s.records[TaskState::dead];
  j["results"] = {{"kept", s.records[TaskState::done]}, {"expired", s.results_expired}, {"evicted", s.results_evicted}};
  j["janitor"] = {{"token", s.janitor_token}, {"pid", s.janitor_pid}};
  j["queues"] = json::array();
  for (const auto& q : s.queues) {
    json jq{{"id", q.id},
            {"name", q.name},
            {"paused", q.paused},
            {"aging_ms", q.aging_ms},
            {"aging", q.aging_ms == 0    ? "off"
                      : q.aging_promotes ? "promote"
                                         : "serve_first"},
            {"rate",
             {{"per_second", q.rate}, {"burst", q.burst}, {"granted", q.rate_granted}, {"delayed", q.rate_delayed}}},
            {"limit", q.limit},
            {"depth", q.depth()},
            {"queued", q.records[TaskState::queued]},
            {"running", q.records[TaskState::running]},
            {"delayed", q.records[TaskState::delayed]},
            {"parked", q.records[TaskState::parked]},
            {"levels", json::array()}};
    for (std::size_t l = 0; l < q.levels.size(); ++l) {
      const LevelSnapshot& lv = q.levels[l];
      jq["levels"].push_back({{"level", l},
                              {"depth", lv.depth},
                              {"oldest_age_ns", lv.oldest_age_ns},
                              {"enqueued", lv.counters.enqueued},
                              {"started", lv.counters.started},
                              {"done", lv.counters.done},
                              {"failed", lv.counters.failed},
                              {"retried", lv.counters.retried},
                              {"dead", lv.counters.dead},
                              {"helped", lv.counters.helped}});
    }
    j["queues"].push_back(std::move(jq));
  }
  j["participants"] = json::array();
  for (const auto& p : s.participants) {
    j["participants"].push_back({{"slot", p.slot},
                                 {"token", p.token},
                                 {"pid", p.pid},
                                 {"start_time", p.start_time},
                                 {"role", roles_json(p.role)},
                                 {"state", p.state},
                                 {"alive", p.alive},
                                 {"activity", activity_name(p)},
                                 {"workers", p.workers},
                                 {"sleepers", p.sleepers},
                                 {"current_task", p.current_task},
                                 {"processed", p.processed},
                                 {"heartbeat_age_ns", p.heartbeat_age_ns},
                                 {"janitor", p.token == s.janitor_token && s.janitor_token != 0}});
  }
  j["semaphores"] = json::array();
  for (const auto& m : s.semaphores) {
    j["semaphores"].push_back(
        {{"id", m.id},
         {"name", m.name},
         {"capacity", m.capacity},
         {"in_use", m.in_use},
         {"parked", m.parked},
         {"waiters", m.waiters},
         {"rate",
          {{"per_second", m.rate}, {"burst", m.burst}, {"granted", m.rate_granted}, {"delayed", m.rate_delayed}}}});
  }
  j["groups"] = json::array();
  for (const auto& g : s.groups) {
    j["groups"].push_back({{"id", g.id},
                           {"name", g.name},
                           {"state", std::string(to_string(g.state))},
                           {"total", g.total},
                           {"done", g.done},
                           {"failed", g.failed},
                           {"cancelled", g.cancelled},
                           {"running", g.running},
                           {"dependents", g.dependents}});
  }
  return j;
}

std::string print_stat(const Snapshot& s, bool all_levels) {
  std::ostringstream o;
  const Layout& l = s.layout;
  o << "segment " << s.name << "  " << format_bytes(s.size_bytes) << "  " << l.levels << " levels, " << l.task_capacity
    << " tasks, " << l.payload_bytes << "-byte payloads, " << l.max_queues << " queues, " << l.max_participants
    << " participants, " << l.max_semaphores << " semaphores\n";
  o << "creator pid " << s.creator.pid << (s.creator.alive() ? " (alive)" : " (gone)") << "  janitor ";
  if (s.janitor_token == 0) {
    o << "none";
  } else {
    o << "pid " << s.janitor_pid;
  }
  o << "\n";
  o << "tasks: " << outstanding_counts(s.records, "  ") << "  dead-lettered " << s.records[TaskState::dead]
    << "  reserved " << s.records[TaskState::reserved] << "  free " << s.records.reservable() << "\n";
  if (s.records[TaskState::done] + s.results_expired + s.results_evicted != 0)
    o << "results: kept " << s.records[TaskState::done] << "  expired unread " << s.results_expired
      << "  evicted unread " << s.results_evicted << "\n";

  o << "\nqueues\n";
  if (s.queues.empty()) {
    o << "  (none)\n";
  } else {
    Table t({"QUEUE", "LEVEL", "DEPTH", "ENQUEUED", "STARTED", "DONE", "FAILED", "RETRIED", "DEAD", "HELPED", "OLDEST"},
            {false, true, true, true, true, true, true, true, true, true, true});
    for (const auto& q : s.queues) {
      std::string qname = q.name;
      if (q.paused) qname += " (paused)";
      if (q.limit >= 0) qname += " (limit " + std::to_string(q.limit) + ")";
      if (q.rate > 0) qname += " (rate " + rate_text(q.rate, q.burst) + ")";
      if (q.records[TaskState::running] + q.records[TaskState::delayed] + q.records[TaskState::parked] != 0)
        qname += " (running " + std::to_string(q.records[TaskState::running]) + ", delayed " +
                 std::to_string(q.records[TaskState::delayed]) + ", parked " +
                 std::to_string(q.records[TaskState::parked]) + ")";
      auto quiet = [](const LevelSnapshot& x) {
        const LevelStats& c = x.counters;
        return x.depth == 0 && c.enqueued == 0 && c.started == 0 && c.done == 0 && c.dead == 0;
      };
      bool any = false;
      for (const auto& x : q.levels) any |= !quiet(x);
      bool shown = false;
      for (std::size_t lv = 0; lv < q.levels.size(); ++lv) {
        const LevelSnapshot& x = q.levels[lv];
        const LevelStats& c = x.counters;
        // A queue that never saw a task still gets its level 0 line, so every queue is listed.
        if (!all_levels && quiet(x) && (any || lv != 0)) continue;
        t.add({shown ? "" : qname, std::to_string(lv), std::to_string(x.depth), std::to_string(c.enqueued),
               std::to_string(c.started), std::to_string(c.done), std::to_string(c.failed), std::to_string(c.retried),
               std::to_string(c.dead), std::to_string(c.helped), format_duration(x.oldest_age_ns)});
        shown = true;
      }
    }
    o << t.render(2);
  }

  o << "\nparticipants\n";
  if (s.participants.empty()) {
    o << "  (none)\n";
  } else {
    Table t({"PID", "ROLE", "STATE", "ALIVE", "ACTIVITY", "WORKERS", "SLEEPING", "CURRENT", "PROCESSED", "HEARTBEAT"},
            {true, false, false, false, false, true, true, true, true, true});
    for (const auto& p : s.participants) {
      std::string role = role_names(p.role);
      if (p.token == s.janitor_token && s.janitor_token != 0) role += " (janitor)";
      t.add({std::to_string(p.pid), role, p.state, p.alive ? "yes" : "NO", activity_name(p), std::to_string(p.workers),
             std::to_string(p.sleepers), p.current_task == 0 ? "-" : std::to_string(p.current_task),
             std::to_string(p.processed), format_duration(p.heartbeat_age_ns)});
    }
    o << t.render(2);
  }

  o << "\nsemaphores\n";
  if (s.semaphores.empty()) {
    o << "  (none)\n";
  } else {
    Table t({"SEMAPHORE", "CAPACITY", "IN USE", "PARKED", "WAITERS", "RATE", "WAITED"},
            {false, true, true, true, true, false, true});
    for (const auto& m : s.semaphores)
      t.add({m.name, std::to_string(m.capacity), std::to_string(m.in_use), std::to_string(m.parked),
             std::to_string(m.waiters), m.rate > 0 ? rate_text(m.rate, m.burst) : "-",
             m.rate > 0 ? std::to_string(m.rate_delayed) : "-"});
    o << t.render(2);
  }
  if (!s.groups.empty()) {
    o << "\ngroups\n";
    Table t({"GROUP", "STATE", "TOTAL", "DONE", "FAILED", "CANCELLED", "RUNNING", "WAITING"},
            {false, false, true, true, true, true, true, true});
    for (const auto& g : s.groups)
      t.add({g.name, std::string(to_string(g.state)), std::to_string(g.total), std::to_string(g.done),
             std::to_string(g.failed), std::to_string(g.cancelled), std::to_string(g.running),
             std::to_string(g.dependents)});
    o << t.render(2);
  }
  return o.str();
}

// ---- Prometheus -------------------------------------------------------------------------

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

class Exposition {
 public:
  explicit Exposition(std::string common_labels) : common_(std::move(common_labels)) {}
  void family(const char* name, const char* type, const char* help) {
    o_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << "\n";
  }
  // labels: {{"queue", "general"}, ...}
  template <class V>
  void sample(const char* name, const std::vector<std::pair<const char*, std::string>>& labels, V value) {
    o_ << name;
    std::string l = common_;
    for (const auto& [k, v] : labels) {
      if (!l.empty()) l += ',';
      l += k;
      l += "=\"" + escape_label(v) + "\"";
    }
    if (!l.empty()) o_ << '{' << l << '}';
    o_ << ' ' << value << "\n";
  }
  std::string str() const { return o_.str(); }

 private:
  std::string common_;
  std::ostringstream o_;
};

std::string print_metrics(const Snapshot& s, bool segment_label) {
  Exposition e(segment_label ? "segment=\"" + escape_label(s.name) + "\"" : "");
  e.family("shmsched_queue_depth", "gauge", "Tasks waiting in a queue's priority ring (approximate).");
  for (const auto& q : s.queues)
    for (std::size_t l = 0; l < q.levels.size(); ++l)
      e.sample("shmsched_queue_depth", {{"queue", q.name}, {"level", std::to_string(l)}}, q.levels[l].depth);
  e.family("shmsched_queue_oldest_age_seconds", "gauge",
           "Age of the task at the head of a priority ring; 0 when it is empty.");
  for (const auto& q : s.queues)
    for (std::size_t l = 0; l < q.levels.size(); ++l)
      e.sample("shmsched_queue_oldest_age_seconds", {{"queue", q.name}, {"level", std::to_string(l)}},
               q.levels[l].oldest_age_ns < 0 ? 0.0 : static_cast<double>(q.levels[l].oldest_age_ns) / 1e9);
  e.family("shmsched_queue_tasks", "gauge", "Tasks of a queue by state (records read once each).");
  for (const auto& q : s.queues) {
    for (std::size_t i = 0; i < kTaskStates; ++i)
      if (const auto st = static_cast<TaskState>(i); is_outstanding(st))
        e.sample("shmsched_queue_tasks", {{"queue", q.name}, {"state", std::string(to_string(st))}}, q.records[st]);
  }
  e.family("shmsched_queue_paused", "gauge", "1 when the queue is paused (not taken from).");
  for (const auto& q : s.queues) e.sample("shmsched_queue_paused", {{"queue", q.name}}, q.paused ? 1 : 0);
  e.family("shmsched_tasks_total", "counter",
           "Tasks per queue, level and outcome since the segment was created, summed over participants.");
  for (const auto& q : s.queues) {
    for (std::size_t l = 0; l < q.levels.size(); ++l) {
      const LevelStats& c = q.levels[l].counters;
      const std::string lv = std::to_string(l);
      const std::pair<const char*, std::uint64_t> outcomes[] = {
          {"enqueued", c.enqueued}, {"started", c.started}, {"done", c.done},    {"failed", c.failed},
          {"retried", c.retried},   {"dead", c.dead},       {"helped", c.helped}};
      for (const auto& [outcome, v] : outcomes)
        e.sample("shmsched_tasks_total", {{"queue", q.name}, {"level", lv}, {"outcome", outcome}}, v);
    }
  }
  e.family("shmsched_semaphore_capacity", "gauge", "Permits a semaphore has.");
  for (const auto& m : s.semaphores) e.sample("shmsched_semaphore_capacity", {{"semaphore", m.name}}, m.capacity);
  e.family("shmsched_semaphore_in_use", "gauge", "Permits granted now.");
  for (const auto& m : s.semaphores) e.sample("shmsched_semaphore_in_use", {{"semaphore", m.name}}, m.in_use);
  e.family("shmsched_semaphore_parked", "gauge", "Tasks parked waiting for a permit (approximate).");
  for (const auto& m : s.semaphores) e.sample("shmsched_semaphore_parked", {{"semaphore", m.name}}, m.parked);
  e.family("shmsched_semaphore_waiters", "gauge", "Direct acquirers asleep on the semaphore.");
  for (const auto& m : s.semaphores) e.sample("shmsched_semaphore_waiters", {{"semaphore", m.name}}, m.waiters);
  e.family("shmsched_rate_limit_per_second", "gauge",
           "Rate limit of a semaphore or a queue, tasks a second (0 = none).");
  for (const auto& m : s.semaphores) e.sample("shmsched_rate_limit_per_second", {{"semaphore", m.name}}, m.rate);
  for (const auto& q : s.queues) e.sample("shmsched_rate_limit_per_second", {{"queue", q.name}}, q.rate);
  e.family("shmsched_rate_delayed_total", "counter", "Tasks that waited for a rate limit's token.");
  for (const auto& m : s.semaphores)
    if (m.rate > 0 || m.rate_delayed != 0)
      e.sample("shmsched_rate_delayed_total", {{"semaphore", m.name}}, m.rate_delayed);
  for (const auto& q : s.queues)
    if (q.rate > 0 || q.rate_delayed != 0) e.sample("shmsched_rate_delayed_total", {{"queue", q.name}}, q.rate_delayed);
  std::size_t alive = 0;
  for (const auto& p : s.participants) alive += p.alive ? 1 : 0;
  e.family("shmsched_participants", "gauge", "Attached processes, by whether they are alive.");
  e.sample("shmsched_participants", {{"alive", "true"}}, alive);
  e.sample("shmsched_participants", {{"alive", "false"}}, s.participants.size() - alive);
  std::size_t busy = 0, idle = 0;
  for (const auto* p : live_consumers(s)) {
    const std::size_t sleeping = std::min<std::size_t>(p->sleepers, p->workers);
    busy += p->workers - sleeping;
    idle += sleeping;
  }
  e.family("shmsched_consumer_workers", "gauge", "Worker threads of live consumers, awake or asleep.");
  e.sample("shmsched_consumer_workers", {{"state", "awake"}}, busy);
  e.sample("shmsched_consumer_workers", {{"state", "asleep"}}, idle);
  e.family("shmsched_queued", "gauge", "Task records queued in a ring.");
  e.sample("shmsched_queued", {}, s.records[TaskState::queued]);
  e.family("shmsched_running", "gauge", "Task records running now.");
  e.sample("shmsched_running", {}, s.records[TaskState::running]);
  e.family("shmsched_delayed", "gauge", "Task records waiting for their not-before time (retries, --delay).");
  e.sample("shmsched_delayed", {}, s.records[TaskState::delayed]);
  e.family("shmsched_parked", "gauge", "Task records parked on a semaphore.");
  e.sample("shmsched_parked", {}, s.records[TaskState::parked]);
  e.family("shmsched_waiting", "gauge", "Task records waiting for a group to finish.");
  e.sample("shmsched_waiting", {}, s.records[TaskState::waiting]);
  e.family("shmsched_group_members", "gauge", "Members of a group by what became of them (outstanding: not finished).");
  for (const auto& g : s.groups) {
    e.sample("shmsched_group_members", {{"group", g.name}, {"state", "outstanding"}}, g.outstanding());
    e.sample("shmsched_group_members", {{"group", g.name}, {"state", "done"}}, g.done);
    e.sample("shmsched_group_members", {{"group", g.name}, {"state", "failed"}}, g.failed);
    e.sample("shmsched_group_members", {{"group", g.name}, {"state", "cancelled"}}, g.cancelled);
  }
  e.family("shmsched_dead_letters", "gauge", "Dead-lettered task records.");
  e.sample("shmsched_dead_letters", {}, s.records[TaskState::dead]);
  e.family("shmsched_results_kept", "gauge", "Finished keep_result tasks whose result is not yet taken.");
  e.sample("shmsched_results_kept", {}, s.records[TaskState::done]);
  e.family("shmsched_results_dropped_total", "counter", "Kept results dropped unread, by why.");
  e.sample("shmsched_results_dropped_total", {{"reason", "expired"}}, s.results_expired);
  e.sample("shmsched_results_dropped_total", {{"reason", "evicted"}}, s.results_evicted);
  e.family("shmsched_task_capacity", "gauge", "Task records in the segment's table.");
  e.sample("shmsched_task_capacity", {}, s.layout.task_capacity);
  return e.str();
}

struct StatArgs {
  std::string name;
  bool json = false;
  bool all_levels = false;
};
struct MetricsArgs {
  std::string name;
  bool segment_label = false;
};

}  // namespace

void add_stat_verbs(CLI::App& app, Verbs& verbs) {
  {
    auto a = std::make_shared<StatArgs>();
    auto* c = app.add_subcommand("stat", "Show a segment's queues, participants and semaphores");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_flag("--json", a->json, "Print JSON (keys: docs/shmctl.md)");
    c->add_flag("--all-levels", a->all_levels, "Also list levels that never saw a task");
    verbs.push_back({c, [a] {
                       Segment seg = open_segment(a->name, Access::look);
                       const Snapshot s = inspect(seg);
                       if (a->json) {
                         std::cout << snapshot_json(s).dump(2) << "\n";
                       } else {
                         std::cout << print_stat(s, a->all_levels);
                       }
                       return kExitOk;
                     }});
  }
  {
    auto a = std::make_shared<MetricsArgs>();
    auto* c = app.add_subcommand("metrics", "Print a segment's metrics in the Prometheus text format");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_flag("--segment-label", a->segment_label, "Add segment=\"NAME\" to every series");
    verbs.push_back({c, [a] {
                       Segment seg = open_segment(a->name, Access::look);
                       std::cout << print_metrics(inspect(seg), a->segment_label);
                       return kExitOk;
                     }});
  }
}

}  // namespace shmctl
