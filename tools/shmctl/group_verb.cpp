// shmctl group NAME create|list|show|wait|seal|cancel|delete: groups of tasks
// (docs/lifecycle.md, "Groups").
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common.hpp"
#include "terminal.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

struct GroupArgs {
  std::string name, action, group, ttl = "10m", timeout = "1h", interval = "1s";
  bool json = false, progress = false;
};

nlohmann::ordered_json group_json(const GroupInfo& g, std::int64_t now) {
  return {{"id", g.id},
          {"name", g.name},
          {"state", std::string(to_string(g.state))},
          {"total", g.total},
          {"done", g.done},
          {"failed", g.failed},
          {"cancelled", g.cancelled},
          {"outstanding", g.outstanding()},
          {"running", g.running},
          {"dependents", g.dependents},
          {"age_ns", now - g.created_ns},
          {"finished_ago_ns",
           g.finished_ns == 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(now - g.finished_ns)}};
}

std::string progress_line(const GroupInfo& g) {
  const std::uint64_t fin = g.finished_members();
  const int pct = g.total == 0 ? 100 : static_cast<int>(fin * 100 / g.total);
  const int bar = pct / 5;
  return "[" + std::string(static_cast<std::size_t>(bar), '#') + std::string(static_cast<std::size_t>(20 - bar), '.') +
         "] " + std::to_string(fin) + "/" + std::to_string(g.total) + " (" + std::to_string(g.done) + " done, " +
         std::to_string(g.failed) + " failed, " + std::to_string(g.cancelled) + " cancelled) " +
         std::string(to_string(g.state));
}

void print_group(const GroupInfo& g, std::int64_t now) {
  std::cout << "group " << g.name << " (id " << g.id << "): " << to_string(g.state) << "\n";
  std::cout << "  members     " << g.total << " (" << g.outstanding() << " outstanding, " << g.running << " running)\n";
  std::cout << "  finished    " << g.done << " done, " << g.failed << " failed, " << g.cancelled << " cancelled\n";
  std::cout << "  waiting     " << g.dependents << " task(s) run after it\n";
  std::cout << "  age         " << format_duration(now - g.created_ns) << "\n";
  if (g.finished_ns != 0) std::cout << "  finished    " << format_duration(now - g.finished_ns) << " ago\n";
}

int run_group(const GroupArgs& a) {
  const bool needs_group = a.action != "list";
  if (needs_group == a.group.empty())
    throw Usage(needs_group ? "group " + a.action + " needs a group: shmctl group NAME " + a.action + " G"
                            : "group list takes no group");
  Segment seg = open_segment(a.name, a.action == "list" || a.action == "show" ? Access::look : Access::change);
  const std::int64_t now = monotonic_ns();
  if (a.action == "list" || a.action == "show") {
    // Reading needs no participant: it works on a segment open read-only.
    if (a.action == "show") {
      auto g = group_info(seg, resolve_group(seg, a.group));
      check(g, "group show");
      if (a.json) {
        std::cout << group_json(*g, now).dump(2) << "\n";
      } else {
        print_group(*g, now);
      }
      return kExitOk;
    }
    const auto gs = groups(seg);
    if (a.json) {
      nlohmann::ordered_json j = nlohmann::ordered_json::array();
      for (const auto& g : gs) j.push_back(group_json(g, now));
      std::cout << j.dump(2) << "\n";
      return kExitOk;
    }
    if (gs.empty()) {
      std::cout << "no groups (shmctl group " << a.name << " create G)\n";
      return kExitOk;
    }
    Table t({"GROUP", "ID", "STATE", "TOTAL", "DONE", "FAILED", "CANCELLED", "RUNNING", "WAITING", "AGE"},
            {false, true, false, true, true, true, true, true, true, true});
    for (const auto& g : gs)
      t.add({g.name, std::to_string(g.id), std::string(to_string(g.state)), std::to_string(g.total),
             std::to_string(g.done), std::to_string(g.failed), std::to_string(g.cancelled), std::to_string(g.running),
             std::to_string(g.dependents), format_duration(now - g.created_ns)});
    std::cout << t.render();
    return kExitOk;
  }
  auto client = Client::attach(seg, Role::observer);
  check(client, "attach");
  if (a.action == "create") {
    const auto ttl = parse_duration(a.ttl, "--ttl");
    auto g = client->create_group(a.group, GroupOptions{std::chrono::duration_cast<std::chrono::seconds>(ttl)});
    check(g, "group create " + a.group);
    std::cout << *g << "\n";
    return kExitOk;
  }
  const GroupId g = resolve_group(seg, a.group);
  if (a.action == "seal") {
    check(client->seal_group(g), "group seal " + a.group);
    auto info = client->group_info(g);
    std::cout << "sealed group " << a.group << (info && info->state == GroupState::finished ? ": finished" : "")
              << "\n";
    return kExitOk;
  }
  if (a.action == "cancel") {
    const CancelCounts n = client->cancel_group(g);
    std::cout << "cancelled " << n.cancelled << " waiting task(s) of group " << a.group << ", asked " << n.requested
              << " running to stop\n";
    return kExitOk;
  }
  if (a.action == "delete") {
    const Errc e = client->delete_group(g);
    if (e == Errc::group_busy)
      throw Failure("group " + a.group + " has members that have not finished (cancel them, or wait for it)");
    check(e, "group delete " + a.group);
    std::cout << "deleted group " << a.group << "\n";
    return kExitOk;
  }
  // wait
  const bool tty = a.progress && is_terminal(1);
  std::function<void(const GroupInfo&)> report;
  if (a.progress)
    report = [&](const GroupInfo& i) {
      if (tty) {
        std::cout << "\r" << progress_line(i) << std::flush;
      } else {
        std::cout << progress_line(i) << "\n" << std::flush;
      }
    };
  auto r = client->wait_group(g, parse_duration(a.timeout, "--timeout"), report, parse_duration(a.interval, "--every"));
  if (tty) std::cout << "\n";
  if (!r && r.code() == Errc::timeout) throw Failure("group " + a.group + " has not finished within " + a.timeout);
  check(r, "group wait " + a.group);
  if (!a.progress) std::cout << progress_line(*r) << "\n";
  return r->failed + r->cancelled == 0 ? kExitOk : kExitFailure;
}

}  // namespace

void add_group_verb(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<GroupArgs>();
  auto* c =
      app.add_subcommand("group", "Groups of tasks: create, list, show, wait (with progress), seal, cancel, delete");
  c->add_option("NAME", a->name, "Segment name")->required();
  c->add_option("ACTION", a->action, "create G | list | show G | wait G | seal G | cancel G | delete G")
      ->required()
      ->check(CLI::IsMember({"create", "list", "show", "wait", "seal", "cancel", "delete"}));
  c->add_option("G", a->group, "The group: its name (or id)");
  c->add_option("--ttl", a->ttl, "create: delete the group this long after it finished (0 = keep)")
      ->capture_default_str();
  c->add_option("--timeout", a->timeout, "wait: give up after this long (exit 1)")->capture_default_str();
  c->add_flag("--progress", a->progress, "wait: show a progress bar (a line per report when not a terminal)");
  c->add_option("--every", a->interval, "wait --progress: how often to report")->capture_default_str();
  c->add_flag("--json", a->json, "list, show: print JSON");
  c->footer(
      "A chord: shmctl group jobs create batch; shmctl submit jobs --queue q --group batch -- CMD (many);\n"
      "shmctl submit jobs --queue q --then-group batch -- REDUCE; shmctl group jobs seal batch.\n"
      "wait exits 0 when every member was done, 1 when some failed or were cancelled.");
  verbs.push_back({c, [a] { return run_group(*a); }});
}

}  // namespace shmctl
