// queue, sem, dlq, recover: the verbs that change a live segment. Each acts through the
// library's own race-safe operations, so it is safe while producers and consumers run.
#include <CLI/CLI.hpp>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "common.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

// A Client registered as an observer: the operations below need a participant token
// (dead letters, capacities, reaping), never to own tasks.
Client attach_observer(Segment& seg) {
  auto c = Client::attach(seg, Role::observer);
  if (!c) throw Failure("attach to '" + seg.name() + "': " + c.error().message());
  return std::move(c.value());
}

std::map<QueueId, std::string> queue_names(const Segment& seg) {
  std::map<QueueId, std::string> out;
  for (const auto& q : seg.queues()) out[q.id] = q.name;
  return out;
}

// ---- queue --------------------------------------------------------------------------------

struct QueueArgs {
  std::string name, action, queue, bound;
  bool promote = false;
  int from = -1, to = -1;
};

// queue aging QUEUE DUR [--promote] and queue boost QUEUE --from P --to P2.
int run_queue_policy(const QueueArgs& a, Segment& seg, QueueId id) {
  const std::uint32_t levels = seg.layout().levels;
  if (a.action == "aging") {
    if (a.bound.empty()) throw Usage("usage: shmctl queue NAME aging QUEUE DURATION [--promote] (0 turns it off)");
    const auto bound = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(a.bound, "DURATION"));
    if (bound.count() > UINT32_MAX) throw Usage("the aging bound is too long");
    Client client = attach_observer(seg);
    client.set_aging(id, bound, a.promote ? AgingMode::promote : AgingMode::serve_first);
    if (bound.count() == 0) {
      std::cout << "queue '" << a.queue << "': aging off\n";
    } else if (a.promote) {
      std::cout << "queue '" << a.queue << "': a task that waits longer than " << a.bound
                << " at its level moves up one level\n";
    } else {
      std::cout << "queue '" << a.queue << "': a level whose oldest task waited longer than " << a.bound
                << " is served first\n";
    }
    return kExitOk;
  }
  if (a.from < 0 || a.to < 0) throw Usage("usage: shmctl queue NAME boost QUEUE --from P --to P2");
  if (static_cast<std::uint32_t>(a.from) >= levels || static_cast<std::uint32_t>(a.to) >= levels)
    throw Usage("--from and --to must be levels 0.." + std::to_string(levels - 1));
  if (a.from == a.to) throw Usage("--from and --to are the same level");
  Client client = attach_observer(seg);
  const std::size_t moved = client.shift_level(id, static_cast<std::uint8_t>(a.from), static_cast<std::uint8_t>(a.to));
  std::cout << "moved " << moved << " waiting task(s) of queue '" << a.queue << "' from level " << a.from
            << " to level " << a.to << "\n";
  return kExitOk;
}

int run_queue(const QueueArgs& a) {
  if (a.action != "list" && a.queue.empty()) throw Usage("queue " + a.action + ": missing QUEUE");
  if (a.action != "aging" && !a.bound.empty()) throw Usage("queue " + a.action + " takes no DURATION");
  if (a.action == "list" && !a.queue.empty()) throw Usage("queue list takes no QUEUE");
  Segment seg = open_segment(a.name, a.action == "list" ? Access::look : Access::change);
  if (a.action == "list") {
    const Snapshot s = inspect(seg);
    Table t({"ID", "QUEUE", "STATE", "DEPTH", "AGING", "LIMIT"}, {true, false, false, true, true, true});
    for (const auto& q : s.queues)
      t.add({std::to_string(q.id), q.name, q.paused ? "paused" : "active", std::to_string(q.depth()),
             q.aging_ms == 0 ? "-" : std::to_string(q.aging_ms) + "ms" + (q.aging_promotes ? " promote" : ""),
             q.limit < 0 ? "-" : std::to_string(q.limit)});
    if (t.empty()) {
      std::cout << "no queues\n";
    } else {
      std::cout << t.render();
    }
    return kExitOk;
  }
  if (a.action == "add") {
    const bool existed = seg.find_queue(a.queue).ok();
    auto id = seg.create_queue(a.queue);
    check(id, "queue add '" + a.queue + "'");
    std::cout << "queue '" << a.queue << "' " << (existed ? "already exists" : "created") << " (id " << *id << ")\n";
    return kExitOk;
  }
  auto id = seg.find_queue(a.queue);
  check(id, "queue " + a.action);
  if (a.action == "aging" || a.action == "boost") return run_queue_policy(a, seg, *id);
  const bool pause = a.action == "pause";
  check(seg.set_paused(*id, pause), "queue " + a.action + " '" + a.queue + "'");
  std::cout << "queue '" << a.queue << "' " << (pause ? "paused: consumers take no new tasks from it" : "resumed")
            << "\n";
  return kExitOk;
}

// ---- sem ----------------------------------------------------------------------------------

struct SemArgs {
  std::string name, action, sem;
  std::vector<std::string> rest;  // CAPACITY for set
};

int run_sem(const SemArgs& a) {
  if (a.action == "list") {
    if (!a.sem.empty()) throw Usage("sem list takes no SEM");
    Segment seg = open_segment(a.name, Access::look);
    const auto sems = seg.semaphores();
    if (sems.empty()) {
      std::cout << "no semaphores\n";
      return kExitOk;
    }
    Table t({"ID", "SEMAPHORE", "CAPACITY", "IN USE", "PARKED", "WAITERS"}, {true, false, true, true, true, true});
    for (const auto& m : sems)
      t.add({std::to_string(m.id), m.name, std::to_string(m.capacity), std::to_string(m.in_use),
             std::to_string(m.parked), std::to_string(m.waiters)});
    std::cout << t.render();
    return kExitOk;
  }
  // set SEM CAPACITY
  if (a.sem.empty() || a.rest.size() != 1) throw Usage("usage: shmctl sem NAME set SEM CAPACITY");
  char* end = nullptr;
  const unsigned long cap = std::strtoul(a.rest[0].c_str(), &end, 10);
  if (a.rest[0].empty() || *end != '\0' || a.rest[0][0] == '-' || cap > kMaxSemaphoreCapacity)
    throw Usage("CAPACITY must be 0.." + std::to_string(kMaxSemaphoreCapacity) + ", got '" + a.rest[0] + "'");
  Segment seg = open_segment(a.name, Access::change);
  std::int64_t before = -1;
  if (auto id = seg.find_semaphore(a.sem); id.ok())
    for (const auto& m : seg.semaphores())
      if (m.id == *id) before = m.capacity;
  // Creates it with this capacity, or returns the existing one unchanged ...
  auto id = seg.create_semaphore(a.sem, static_cast<std::uint32_t>(cap));
  check(id, "sem set '" + a.sem + "'");
  if (before >= 0 && before != static_cast<std::int64_t>(cap)) {
    // ... which set_capacity then resizes (growing hands permits to parked tasks).
    Client client = attach_observer(seg);
    check(client.set_capacity(*id, static_cast<std::uint32_t>(cap)), "sem set '" + a.sem + "'");
  }
  SemaphoreInfo now;
  for (const auto& m : seg.semaphores())
    if (m.id == *id) now = m;
  if (before < 0) {
    std::cout << "semaphore '" << a.sem << "' created with capacity " << now.capacity << "\n";
  } else if (before == now.capacity) {
    std::cout << "semaphore '" << a.sem << "' capacity " << now.capacity << " (unchanged), in use " << now.in_use
              << "\n";
  } else {
    std::cout << "semaphore '" << a.sem << "' capacity " << before << " -> " << now.capacity << ", in use "
              << now.in_use << ", parked " << now.parked << "\n";
    if (now.in_use > now.capacity)
      std::cout << "note: " << now.in_use << " permits are still held; no new grants until fewer than " << now.capacity
                << " are in use (nothing running is stopped)\n";
  }
  return kExitOk;
}

// ---- rate ---------------------------------------------------------------------------------

struct RateArgs {
  std::string name, action, queue;
  std::vector<std::string> rest;  // [RESOURCE] RATE
  unsigned burst = 1;
};

int run_rate(const RateArgs& a) {
  const bool on_queue = !a.queue.empty();
  if (a.rest.size() != (on_queue ? 1u : 2u))
    throw Usage(
        "usage: shmctl rate NAME set RESOURCE RATE [--burst B] | shmctl rate NAME set --queue Q RATE [--burst B]");
  const std::string& rate_text_arg = a.rest.back();
  char* end = nullptr;
  const double per_second = std::strtod(rate_text_arg.c_str(), &end);
  if (rate_text_arg.empty() || *end != '\0' || !(per_second >= 0) || per_second > 1e9)
    throw Usage("RATE must be tasks a second, 0..1e9 (0 removes the limit), got '" + rate_text_arg + "'");
  if (a.burst == 0) throw Usage("--burst must be 1 or more");
  Segment seg = open_segment(a.name, Access::change);
  Client client = attach_observer(seg);
  if (on_queue) {
    auto q = seg.find_queue(a.queue);
    check(q, "rate set --queue");
    check(client.set_queue_rate(*q, per_second, a.burst), "rate set --queue " + a.queue);
    std::cout << "queue '" << a.queue << "': "
              << (per_second == 0 ? "no rate limit"
                                  : "at most " + rate_text(per_second, a.burst) + " of its tasks start")
              << "\n";
    return kExitOk;
  }
  const std::string& resource = a.rest[0];
  bool created = false;
  auto id = seg.find_semaphore(resource);
  if (!id) {
    // A resource that exists only for its rate: the most permits, so only the rate binds.
    id = seg.create_semaphore(resource, kMaxSemaphoreCapacity);
    check(id, "rate set " + resource);
    created = true;
  }
  check(client.set_rate(*id, per_second, a.burst), "rate set " + resource);
  std::cout << "resource '" << resource << "'"
            << (created ? " (created, capacity " + std::to_string(kMaxSemaphoreCapacity) + ")" : "") << ": "
            << (per_second == 0 ? "no rate limit"
                                : "at most " + rate_text(per_second, a.burst) + " of the tasks that need it start")
            << "\n";
  return kExitOk;
}

// ---- dlq ----------------------------------------------------------------------------------

struct DlqArgs {
  std::string name, action, id;
  bool all = false;
  bool json = false;
  std::size_t max = 0;
};

int run_dlq(const DlqArgs& a) {
  const bool requeue = a.action == "requeue";
  if (requeue && a.all == !a.id.empty()) throw Usage("dlq requeue takes either one task ID or --all");
  if (!requeue && (a.all || !a.id.empty())) throw Usage("dlq " + a.action + " takes no ID or --all");
  if (a.json && a.action != "list") throw Usage("--json applies to dlq list only");
  const std::uint64_t id = a.id.empty() ? 0 : parse_task_id(a.id);
  const bool list = a.action == "list";
  Segment seg = open_segment(a.name, list ? Access::look : Access::change);
  if (list) {
    const auto names = queue_names(seg);
    const auto dead = dead_letters(seg, a.max == 0 ? SIZE_MAX : a.max);
    if (a.json) {
      nlohmann::ordered_json out = nlohmann::ordered_json::array();
      for (const auto& d : dead) {
        const auto q = names.find(d.queue);
        out.push_back({{"id", d.id},
                       {"type", d.type_name},
                       {"queue", q == names.end() ? std::to_string(d.queue) : q->second},
                       {"level", d.level},
                       {"attempts", d.attempts},
                       {"reason", d.reason}});
      }
      std::cout << out.dump(2) << "\n";
      return kExitOk;
    }
    if (dead.empty()) {
      std::cout << "no dead letters\n";
      return kExitOk;
    }
    Table t({"ID", "TYPE", "QUEUE", "LEVEL", "ATTEMPTS", "REASON"}, {true, false, false, true, true, false});
    for (const auto& d : dead) {
      const auto q = names.find(d.queue);
      t.add({std::to_string(d.id), d.type_name.empty() ? "?" : d.type_name,
             q == names.end() ? std::to_string(d.queue) : q->second, std::to_string(d.level),
             std::to_string(d.attempts), d.reason});
    }
    std::cout << t.render();
    return kExitOk;
  }
  Client client = attach_observer(seg);
  if (requeue && a.all) {
    const std::size_t n = client.requeue_all_dead();
    std::cout << "requeued " << n << " dead letter(s)\n";
    return kExitOk;
  }
  if (requeue) {
    const Errc e = client.requeue_dead(id);
    if (e == Errc::invalid_argument)
      throw Failure("task " + a.id + " is not a dead letter (see 'shmctl dlq " + a.name + " list')");
    check(e, "requeue " + a.id);
    std::cout << "requeued task " << id << " with a fresh attempt count\n";
    return kExitOk;
  }
  const std::size_t n = client.purge_dead();  // purge
  std::cout << "purged " << n << " dead letter(s)\n";
  return kExitOk;
}

// ---- recover ------------------------------------------------------------------------------

int run_recover(const std::string& name) {
  Segment seg = open_segment(name, Access::change);
  std::size_t dead_before = 0;
  for (const auto& p : inspect(seg).participants) dead_before += p.alive ? 0 : 1;
  auto c = Client::attach(seg, Role::observer);
  if (!c) {
    if (c.code() == Errc::participant_table_full)
      throw Failure("all " + std::to_string(seg.layout().max_participants) +
                    " participant slots are held by live processes; nothing is dead, so there is nothing to recover");
    throw Failure("attach: " + c.error().message());
  }
  const ReapReport r = c->reap_dead();
  std::cout << "reaped " << r.participants << " dead participant(s)";
  if (dead_before != r.participants)
    std::cout << " (" << dead_before << " seen dead before; with the table full, attaching took over a dead slot and "
              << "recovered it, and a janitor may have reaped others meanwhile)";
  std::cout << "\n";
  Table t({"RECOVERED", "COUNT"}, {false, true});
  t.add({"requeued (were running)", std::to_string(r.requeued)});
  t.add({"republished (accepted, not yet queued)", std::to_string(r.republished)});
  t.add({"freed (reserved, never accepted)", std::to_string(r.freed)});
  t.add({"dead-lettered (out of attempts)", std::to_string(r.dead_lettered)});
  t.add({"semaphore permits returned", std::to_string(r.permits_returned)});
  std::cout << t.render();
  return kExitOk;
}

}  // namespace

void add_admin_verbs(CLI::App& app, Verbs& verbs) {
  {
    auto a = std::make_shared<QueueArgs>();
    auto* c = app.add_subcommand("queue", "Add, pause, resume or list queues; set aging; shift a level's tasks");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_option("ACTION", a->action,
                  "add | pause | resume | list | aging QUEUE DURATION [--promote] | boost QUEUE --from P --to P2")
        ->required()
        ->check(CLI::IsMember({"add", "pause", "resume", "list", "aging", "boost"}));
    c->add_option("QUEUE", a->queue, "Queue name (1..31 of [A-Za-z0-9_.:-])");
    c->add_option("DURATION", a->bound, "aging: the bound (0 = off)");
    c->add_flag("--promote", a->promote,
                "aging: move tasks that waited longer than the bound up one level (else: serve that level first)");
    whole_number(c->add_option("--from", a->from, "boost: the level whose waiting tasks move"));
    whole_number(c->add_option("--to", a->to, "boost: the level they move to"));
    verbs.push_back({c, [a] { return run_queue(*a); }});
  }
  {
    auto a = std::make_shared<RateArgs>();
    auto* c = app.add_subcommand("rate", "Rate limits (tasks a second, with a burst) on a resource or a queue");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_option("ACTION", a->action, "set")->required()->check(CLI::IsMember({"set"}));
    c->add_option("ARGS", a->rest, "RESOURCE RATE, or RATE with --queue (0 removes the limit)");
    c->add_option("--queue", a->queue, "Limit every task of this queue instead of a resource");
    whole_number(c->add_option("--burst", a->burst, "How many may start at once"))->capture_default_str();
    c->footer(
        "Tasks name a resource with 'submit --needs RESOURCE', as a semaphore (a new resource gets\n"
        "capacity 56, so only its rate binds). A task whose token is not due waits for it, delayed.");
    verbs.push_back({c, [a] { return run_rate(*a); }});
  }
  {
    auto a = std::make_shared<SemArgs>();
    auto* c = app.add_subcommand("sem", "Create, resize or list semaphores");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_option("ACTION", a->action, "set SEM CAPACITY | list")->required()->check(CLI::IsMember({"set", "list"}));
    c->add_option("SEM", a->sem, "Semaphore name (set)");
    c->add_option("CAPACITY", a->rest, "Permits, 0..56 (set)");
    verbs.push_back({c, [a] { return run_sem(*a); }});
  }
  {
    auto a = std::make_shared<DlqArgs>();
    auto* c = app.add_subcommand("dlq", "List, requeue or purge dead-lettered tasks");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_option("ACTION", a->action, "list | requeue ID | requeue --all | purge")
        ->required()
        ->check(CLI::IsMember({"list", "requeue", "purge"}));
    c->add_option("ID", a->id, "Task id (requeue)");
    c->add_flag("--all", a->all, "Requeue every dead letter");
    c->add_flag("--json", a->json, "Print the list as JSON");
    whole_number(c->add_option("--max", a->max, "List at most N (0 = all)"));
    verbs.push_back({c, [a] { return run_dlq(*a); }});
  }
  {
    auto name = std::make_shared<std::string>();
    auto* c = app.add_subcommand("recover", "Reap dead participants now: requeue their tasks, return their permits");
    c->add_option("NAME", *name, "Segment name")->required();
    verbs.push_back({c, [name] { return run_recover(*name); }});
  }
}

}  // namespace shmctl
