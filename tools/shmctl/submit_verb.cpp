// submit: enqueue shell commands as "shell" tasks, one from the command line or many
// from stdin (one command line each, run with /bin/sh -c).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <memory>
#include <string_view>

#include "common.hpp"
#include "shell_task.hpp"

namespace shmctl {
namespace {

using namespace shmsched;

struct SubmitArgs {
  std::string name;
  std::string queue;
  unsigned priority = 0;
  std::vector<std::string> needs;
  unsigned retries = 2;
  std::string retry_delay = "1s";
  std::string delay;
  std::string at;
  std::string expires;
  std::string block = "10s";
  bool from_stdin = false;
  bool keep_result = false;
  std::string result_ttl = "10m";
  std::string group, then_group, after;
  bool run_anyway = false;
  std::vector<std::string> command;
  CLI::Option* delay_option = nullptr;
  CLI::Option* expires_option = nullptr;
};

// "2026-12-07T15:30", "2026-12-07T15:30:00", "2026-12-07 15:30:00Z",
// "2026-12-07T15:30:00+01:00": a wall-clock time, in UTC with Z or an offset, else in
// the host's local time (its zone, DST included, as mktime sees it).
std::chrono::system_clock::time_point parse_wall_time(const std::string& text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, used = 0;
  char sep = 0;
  const int n = std::sscanf(text.c_str(), "%4d-%2d-%2d%c%2d:%2d%n", &y, &mo, &d, &sep, &h, &mi, &used);
  if (n < 6 || (sep != 'T' && sep != ' ')) throw Usage("--at " + text + ": give YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]");
  std::string_view rest = std::string_view(text).substr(static_cast<std::size_t>(used));
  if (rest.size() >= 3 && rest[0] == ':' && std::isdigit(static_cast<unsigned char>(rest[1])) &&
      std::isdigit(static_cast<unsigned char>(rest[2]))) {
    sec = (rest[1] - '0') * 10 + (rest[2] - '0');
    rest.remove_prefix(3);
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || h < 0 || mi < 0)
    throw Usage("--at " + text + ": not a valid date and time");
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  std::time_t t = 0;
  if (rest.empty()) {
    tm.tm_isdst = -1;  // the zone's rules say whether DST applies then
    t = std::mktime(&tm);
  } else if (rest == "Z") {
    t = ::timegm(&tm);
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
             std::isdigit(static_cast<unsigned char>(rest[1])) && std::isdigit(static_cast<unsigned char>(rest[2])) &&
             std::isdigit(static_cast<unsigned char>(rest[4])) && std::isdigit(static_cast<unsigned char>(rest[5]))) {
    const int off = ((rest[1] - '0') * 10 + (rest[2] - '0')) * 3600 + ((rest[4] - '0') * 10 + (rest[5] - '0')) * 60;
    t = ::timegm(&tm) - (rest[0] == '+' ? off : -off);
  } else {
    throw Usage("--at " + text + ": the zone must be Z or +HH:MM / -HH:MM (none: local time)");
  }
  if (t == static_cast<std::time_t>(-1)) throw Usage("--at " + text + ": not a representable time");
  return std::chrono::system_clock::from_time_t(t);
}

std::string explain(Errc e, const Segment& seg, std::size_t payload_size) {
  switch (e) {
    case Errc::payload_too_large:
      return "the command is " + std::to_string(payload_size) + " bytes encoded, but segment '" + seg.name() +
             "' holds at most " + std::to_string(seg.layout().payload_bytes) + " bytes per task";
    case Errc::table_full:
    case Errc::ring_full:
    case Errc::timeout:
      return std::string(to_string(e)) + ": the segment is full (back-pressure); start workers, or raise --block";
    case Errc::group_sealed:
      return "the group is sealed: it takes no more members (create another group)";
    case Errc::unknown_group:
      return "the group was deleted";
    case Errc::unknown_task:
      return "no task with the --after id now (never enqueued, or its result was taken, expired or evicted)";
    case Errc::parent_not_kept:
      return "the --after task was submitted without --keep-result: nothing would keep its outcome for this task";
    default:
      return std::string(to_string(e));
  }
}

int run_submit(const SubmitArgs& a) {
  if (a.from_stdin == !a.command.empty())
    throw Usage(a.from_stdin ? "--stdin reads the commands from stdin; give no COMMAND"
                             : "missing COMMAND (shmctl submit NAME --queue Q -- COMMAND [ARGS...])");
  if (!a.from_stdin && a.command[0].empty())
    throw Usage("the COMMAND is empty (shmctl submit NAME --queue Q -- COMMAND)");
  if (a.retries + 1 > 0xFFFF) throw Usage("--retries is too large");
  const auto retry_delay = parse_duration(a.retry_delay, "--retry-delay");
  const auto block = parse_duration(a.block, "--block");
  const auto result_ttl = parse_duration(a.result_ttl, "--result-ttl");
  if (result_ttl < std::chrono::seconds(1) || result_ttl > std::chrono::seconds(UINT32_MAX))
    throw Usage("--result-ttl must be 1s or more");
  std::chrono::nanoseconds delay{0};
  if (a.delay_option->count() > 0 && !a.at.empty()) throw Usage("give --delay or --at, not both");
  if (a.delay_option->count() > 0) delay = parse_duration(a.delay, "--delay");
  if (!a.at.empty()) {  // a wall-clock time: the delay from now (a time past runs at once)
    delay = std::max(std::chrono::nanoseconds(0), parse_wall_time(a.at) - std::chrono::system_clock::now());
  }
  std::chrono::nanoseconds expires{0};
  if (a.expires_option->count() > 0) {
    expires = parse_duration(a.expires, "--expires");
    if (expires.count() <= 0) throw Usage("--expires must be positive");
  }
  const auto need_items = split_list(a.needs);
  if (need_items.size() > 2) throw Usage("--needs: a task may need at most two semaphores");
  std::vector<NeedSpec> need_specs;
  for (const auto& n : need_items) need_specs.push_back(parse_need(n));
  Segment seg = open_segment(a.name, Access::change);

  TaskOptions opts;
  auto q = seg.find_queue(a.queue);
  check(q, "submit");
  opts.queue = *q;
  if (a.priority >= seg.layout().levels)
    throw Usage("--priority must be 0.." + std::to_string(seg.layout().levels - 1) + " (the segment has " +
                std::to_string(seg.layout().levels) + " levels)");
  opts.priority = static_cast<std::uint8_t>(a.priority);
  opts.max_attempts = static_cast<std::uint16_t>(a.retries + 1);
  opts.retry.delay = std::chrono::duration_cast<std::chrono::milliseconds>(retry_delay);
  for (std::size_t i = 0; i < need_specs.size(); ++i) opts.needs[i] = resolve_need(seg, need_specs[i]);
  opts.keep_result = a.keep_result;
  opts.result_ttl = std::chrono::duration_cast<std::chrono::seconds>(result_ttl);

  // Checked before anything is enqueued, so the message can say how long it is and what fits.
  auto validate = [&](const std::string& payload) {
    if (payload.size() > seg.layout().payload_bytes)
      throw Failure(explain(Errc::payload_too_large, seg, payload.size()));
  };
  auto client = Client::attach(seg, Role::producer);
  check(client, "attach");
  if (!a.group.empty()) opts.group_id = resolve_group(seg, a.group);
  if (!a.then_group.empty()) opts.after_group = resolve_group(seg, a.then_group);
  if (!a.after.empty()) {
    if (!a.then_group.empty()) throw Usage("--after and --then-group: a task waits for one parent task or one group");
    if (a.after.find(',') != std::string::npos)
      throw Usage(
          "--after takes one task id: for several parents, make them a group (--group G) and use "
          "--then-group G");
    opts.after_task = parse_task_id(a.after);
  }
  if (a.run_anyway && a.then_group.empty() && a.after.empty())
    throw Usage("--run-anyway goes with --then-group or --after");
  opts.run_anyway = a.run_anyway;
  auto submit_one = [&](const std::string& payload, TaskId* id) {
    TaskOptions o = opts;
    if (delay.count() > 0) o.after(delay);
    if (expires.count() > 0) o.expires_ns = monotonic_ns() + expires.count();
    const Errc e = client->enqueue_wait(kShellType, as_payload(std::string_view(payload)), o, block, id);
    if (e != Errc::ok) throw Failure(explain(e, seg, payload.size()));
  };

  if (!a.from_stdin) {
    const std::string payload = encode_argv(a.command);
    validate(payload);
    TaskId id = kNoTask;
    submit_one(payload, &id);
    std::cout << id << "\n";
    return kExitOk;
  }
  // Every line is checked first: a batch with a bad line enqueues nothing.
  std::vector<std::string> payloads;
  std::size_t line_no = 0;
  for (std::string line; std::getline(std::cin, line);) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines are not commands
    try {
      if (line.find('\0') != std::string::npos) throw Failure("the line holds a NUL byte");
      payloads.push_back(encode_argv({"/bin/sh", "-c", line}));
      validate(payloads.back());
    } catch (const Failure& e) {
      throw Failure("line " + std::to_string(line_no) + ": " + e.what() + " (nothing was enqueued)");
    }
  }
  if (std::cin.bad()) throw Failure("reading stdin failed (nothing was enqueued)");
  // One id a line, in the order of the commands, each as soon as it is enqueued.
  std::size_t count = 0;
  for (const auto& payload : payloads) {
    try {
      TaskId id = kNoTask;
      submit_one(payload, &id);
      std::cout << id << "\n";
    } catch (const Failure& e) {
      std::cout.flush();
      throw Failure("command " + std::to_string(count + 1) + " of " + std::to_string(payloads.size()) + ": " +
                    e.what() + " (" + std::to_string(count) + " command(s) before it were enqueued)");
    }
    ++count;
  }
  return kExitOk;
}

}  // namespace

void add_submit_verb(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<SubmitArgs>();
  auto* c = app.add_subcommand("submit", "Enqueue a shell command (or one per stdin line) as a \"shell\" task");
  c->add_option("NAME", a->name, "Segment name")->required();
  c->add_option("--queue", a->queue, "Queue to enqueue into")->required();
  whole_number(c->add_option("--priority", a->priority, "Level, 0 = most urgent"))->capture_default_str();
  list_option(
      c->add_option("--needs", a->needs, "Semaphore permits the task holds while it runs: SEM[:N] (at most two)"));
  whole_number(c->add_option("--retries", a->retries, "Retries after a failed attempt (attempts = retries + 1)"))
      ->capture_default_str();
  c->add_option("--retry-delay", a->retry_delay, "Delay before the first retry (doubles each retry, max 60s)")
      ->capture_default_str();
  a->delay_option = c->add_option("--delay", a->delay, "Run no sooner than this from now (500ms, 10s, 2m)");
  c->add_option("--at", a->at,
                "Run no sooner than this wall-clock time: YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM] (no zone: local time)");
  a->expires_option =
      c->add_option("--expires", a->expires, "Drop the task (a dead letter) if it has not started within this");
  c->add_option("--block", a->block, "How long to wait while the segment is full")->capture_default_str();
  c->add_flag("--stdin", a->from_stdin,
              "Read one command per line from stdin (run as /bin/sh -c LINE); prints one id a line");
  c->add_flag("--keep-result", a->keep_result,
              "Keep the command's standard output as the task's result (shmctl result reads it)");
  c->add_option("--result-ttl", a->result_ttl, "How long a kept result waits to be read")->capture_default_str();
  c->add_option("--group", a->group, "Make it a member of this open group (name or id; shmctl group NAME create G)");
  c->add_option("--then-group", a->then_group,
                "Wait for this group to finish first (sealed, every member finished), then run: a chord's last step");
  c->add_option("--after", a->after,
                "Wait for this task to be done first, then run (it must have been submitted with --keep-result); "
                "cancelled when it fails or is cancelled");
  c->add_flag("--run-anyway", a->run_anyway,
              "With --then-group or --after: run even when members or the parent failed or were cancelled "
              "(else it is cancelled)");
  c->add_option("COMMAND", a->command, "The command and its arguments, after --");
  c->footer("Example: shmctl submit jobs --queue general -- convert in.png out.jpg\nPrints the task id.");
  verbs.push_back({c, [a] { return run_submit(*a); }});
}

}  // namespace shmctl
