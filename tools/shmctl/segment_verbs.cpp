// create, destroy, ls: the life cycle of segments on a host.
#include <dirent.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "common.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

constexpr const char* kShmDir = "/dev/shm";
constexpr std::string_view kPrefix = "shmsched.";

unsigned parse_mode(const std::string& text) {
  char* end = nullptr;
  const unsigned long v = std::strtoul(text.c_str(), &end, 8);
  if (text.empty() || *end != '\0' || v > 0777)
    throw Usage("--mode: '" + text + "' is not an octal permission mode within 0777 (e.g. 0600, 0660)");
  return static_cast<unsigned>(v);
}

// "gpu:2" -> (gpu, 2)
std::pair<std::string, std::uint32_t> parse_sem_spec(const std::string& spec) {
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size())
    throw Usage("--semaphores: '" + spec + "' is not NAME:CAPACITY");
  char* end = nullptr;
  const std::string num = spec.substr(colon + 1);
  const unsigned long cap = std::strtoul(num.c_str(), &end, 10);
  if (*end != '\0' || cap > kMaxSemaphoreCapacity)
    throw Usage("--semaphores: capacity of '" + spec + "' must be 0.." + std::to_string(kMaxSemaphoreCapacity));
  return {spec.substr(0, colon), static_cast<std::uint32_t>(cap)};
}

struct CreateArgs {
  std::string name;
  Layout layout;
  std::vector<std::string> queues;
  std::vector<std::string> semaphores;
  std::string mode = "0600";
};

int run_create(const CreateArgs& a) {
  CreateOptions co;
  co.mode = parse_mode(a.mode);
  co.queues = split_list(a.queues);
  std::vector<std::pair<std::string, std::uint32_t>> sems;
  for (const auto& s : split_list(a.semaphores)) sems.push_back(parse_sem_spec(s));
  auto seg = Segment::create(a.name, a.layout, co);
  if (!seg) throw Failure(seg.error().message());
  for (const auto& [sname, cap] : sems) {
    auto r = seg->create_semaphore(sname, cap);
    if (!r) {
      // Half-made is worse than not made: take it away so the command can be rerun.
      (void)Segment::destroy(a.name);
      throw Failure("create '" + a.name + "': semaphore '" + sname + "': " + r.error().message());
    }
  }
  const Layout& l = seg->layout();
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", co.mode);
  std::cout << "created segment '" << a.name << "' (" << format_bytes(seg->size_bytes()) << ", " << l.levels
            << " levels, " << l.task_capacity << " tasks, " << l.payload_bytes << "-byte payloads, mode " << mode
            << ")\n";
  std::string qs;
  for (const auto& q : seg->queues()) qs += (qs.empty() ? "" : ", ") + q.name;
  std::cout << "queues: " << (qs.empty() ? "(none; add with 'shmctl queue " + a.name + " add QUEUE')" : qs) << "\n";
  if (!sems.empty()) {
    std::string ss;
    for (const auto& s : seg->semaphores())
      ss += (ss.empty() ? "" : ", ") + s.name + " (capacity " + std::to_string(s.capacity) + ")";
    std::cout << "semaphores: " << ss << "\n";
  }
  return kExitOk;
}

struct DestroyArgs {
  std::string name;
  bool force = false;
};

int run_destroy(const DestroyArgs& a) {
  if (auto v = Segment::validate_name(a.name); !v) throw Usage(v.error().message());
  const auto timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(globals().open_timeout, "--open-timeout"));
  auto seg = try_open_segment(a.name, timeout, Access::look);
  if (!seg) {
    if (seg.code() == Errc::not_found) throw Failure(seg.error().message());
    // A damaged or foreign object cannot be checked for consumers; removing it is the
    // operator's call.
    if (!a.force)
      throw Failure("cannot check segment '" + a.name + "' for consumers: " + seg.error().message() +
                    " (use --force to remove it anyway)");
    std::cerr << "shmctl: warning: removing segment '" << a.name << "' that does not open: " << seg.error().message()
              << "\n";
  } else {
    const Snapshot snap = inspect(*seg);
    const auto consumers = live_consumers(snap);
    if (!consumers.empty()) {
      std::string pids;
      for (const auto* p : consumers) pids += (pids.empty() ? "" : ", ") + std::to_string(p->pid);
      if (!a.force)
        throw Failure("segment '" + a.name + "' has " + std::to_string(consumers.size()) +
                      " live consumer(s) attached (pid " + pids + "); stop them first, or use --force");
      std::cerr << "shmctl: warning: destroying segment '" << a.name << "' under live consumer(s) (pid " << pids
                << "); they keep their mapping until they exit\n";
    }
    if (const auto left = snap.records.outstanding() + snap.records[TaskState::dead]; left != 0)
      std::cerr << "shmctl: note: " << left << " task(s) (queued, running, delayed, parked or dead-lettered) are "
                << "discarded with it\n";
  }
  auto r = Segment::destroy(a.name);
  if (!r) throw Failure(r.error().message());
  std::cout << "destroyed segment '" << a.name << "'\n";
  return kExitOk;
}

struct LsArgs {
  bool json = false;
  std::string timeout = "200ms";
};

struct LsEntry {
  std::string name;
  std::uint64_t file_size = 0;
  bool ok = false;
  std::string error;
  std::uint64_t size = 0;
  std::int32_t creator_pid = 0;
  bool creator_alive = false;
  std::size_t participants = 0, alive = 0, consumers = 0;
  std::uint64_t depth = 0, running = 0, delayed = 0, parked = 0, dead = 0;
  std::size_t queues = 0;
};

int run_ls(const LsArgs& a) {
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(a.timeout, "--timeout"));
  std::vector<std::string> names;
  {
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(kShmDir), ::closedir);
    if (!dir) throw Failure(std::string("cannot read ") + kShmDir + ": " + std::strerror(errno));
    while (const dirent* e = ::readdir(dir.get())) {
      const std::string_view n(e->d_name);
      if (n.size() > kPrefix.size() && n.substr(0, kPrefix.size()) == kPrefix)
        names.emplace_back(n.substr(kPrefix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  std::vector<LsEntry> entries;
  for (const auto& name : names) {
    LsEntry e;
    e.name = name;
    struct stat st {};
    if (::stat((std::string(kShmDir) + "/" + std::string(kPrefix) + name).c_str(), &st) == 0)
      e.file_size = static_cast<std::uint64_t>(st.st_size);
    if (auto v = Segment::validate_name(name); !v) {
      e.error = v.error().message();
    } else if (auto seg = try_open_segment(name, timeout, Access::look); !seg) {
      e.error = seg.error().message();
    } else {
      const Snapshot s = inspect(*seg);
      e.ok = true;
      e.size = s.size_bytes;
      e.creator_pid = s.creator.pid;
      e.creator_alive = s.creator.alive();
      e.participants = s.participants.size();
      for (const auto& p : s.participants) {
        if (p.alive) ++e.alive;
        if (p.alive && has_role(p.role, Role::consumer)) ++e.consumers;
      }
      for (const auto& q : s.queues) e.depth += q.depth();
      e.queues = s.queues.size();
      e.running = s.records[TaskState::running];
      e.delayed = s.records[TaskState::delayed];
      e.parked = s.records[TaskState::parked];
      e.dead = s.records[TaskState::dead];
    }
    entries.push_back(std::move(e));
  }

  if (a.json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& e : entries) {
      nlohmann::ordered_json j{{"name", e.name}, {"file_size", e.file_size}, {"ok", e.ok}};
      if (e.ok) {
        j["size_bytes"] = e.size;
        j["creator_pid"] = e.creator_pid;
        j["creator_alive"] = e.creator_alive;
        j["participants"] = e.participants;
        j["alive"] = e.alive;
        j["consumers"] = e.consumers;
        j["queues"] = e.queues;
        j["depth"] = e.depth;
        j["running"] = e.running;
        j["delayed"] = e.delayed;
        j["parked"] = e.parked;
        j["dead_letters"] = e.dead;
      } else {
        j["error"] = e.error;
      }
      out.push_back(std::move(j));
    }
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  if (entries.empty()) {
    std::cout << "no shmsched segments in " << kShmDir << "\n";
    return kExitOk;
  }
  Table t({"NAME", "SIZE", "CREATOR", "PARTICIPANTS", "DEPTH", "RUNNING", "DELAYED", "DEAD", "STATUS"},
          {false, true, true, true, true, true, true, true, false});
  for (const auto& e : entries) {
    if (!e.ok) {
      t.add({e.name, format_bytes(e.file_size), "-", "-", "-", "-", "-", "-", "error: " + e.error});
      continue;
    }
    t.add({e.name, format_bytes(e.size), std::to_string(e.creator_pid) + (e.creator_alive ? "" : " (gone)"),
           std::to_string(e.alive) + "/" + std::to_string(e.participants), std::to_string(e.depth),
           std::to_string(e.running), std::to_string(e.delayed), std::to_string(e.dead),
           e.consumers == 0 ? "ok, no consumers" : "ok, " + std::to_string(e.consumers) + " consumer(s)"});
  }
  std::cout << t.render();
  return kExitOk;
}

}  // namespace

void add_segment_verbs(CLI::App& app, Verbs& verbs) {
  {
    auto a = std::make_shared<CreateArgs>();
    auto* c = app.add_subcommand("create", "Create a segment (fails if the name exists)");
    c->add_option("NAME", a->name, "Segment name ([A-Za-z0-9_.-], object /dev/shm/shmsched.NAME)")->required();
    c->add_option("--levels", a->layout.levels, "Priority levels per queue (1..16)")->capture_default_str();
    c->add_option("--capacity", a->layout.task_capacity, "Task records (a power of two)")->capture_default_str();
    c->add_option("--payload", a->layout.payload_bytes, "Inline payload bytes per task (a multiple of 8)")
        ->capture_default_str();
    c->add_option("--ring-capacity", a->layout.ring_capacity, "Slots per priority ring (0 = same as --capacity)")
        ->capture_default_str();
    c->add_option("--max-queues", a->layout.max_queues, "Queue table size")->capture_default_str();
    c->add_option("--max-participants", a->layout.max_participants, "Attached processes at once")
        ->capture_default_str();
    c->add_option("--max-semaphores", a->layout.max_semaphores, "Semaphore table size")->capture_default_str();
    c->add_option("--max-groups", a->layout.max_groups, "Group table size (groups alive at once)")
        ->capture_default_str();
    list_option(c->add_option("--queues", a->queues, "Queues to create with it: Q1,Q2,..."));
    list_option(c->add_option("--semaphores", a->semaphores, "Semaphores to create with it: NAME:CAPACITY,..."));
    c->add_option("--mode", a->mode, "Permission bits, octal")->capture_default_str();
    verbs.push_back({c, [a] { return run_create(*a); }});
  }
  {
    auto a = std::make_shared<DestroyArgs>();
    auto* c = app.add_subcommand("destroy", "Remove a segment (refused while live consumers are attached)");
    c->add_option("NAME", a->name, "Segment name")->required();
    c->add_flag("--force", a->force,
                "Remove it even with live consumers attached, or when it does not open (corrupt, foreign)");
    verbs.push_back({c, [a] { return run_destroy(*a); }});
  }
  {
    auto a = std::make_shared<LsArgs>();
    auto* c = app.add_subcommand("ls", "List the segments on this host (/dev/shm/shmsched.*)");
    c->add_flag("--json", a->json, "Print JSON instead of a table");
    c->add_option("--timeout", a->timeout, "How long to wait for a segment that is being initialised")
        ->capture_default_str();
    verbs.push_back({c, [a] { return run_ls(*a); }});
  }
}

}  // namespace shmctl
