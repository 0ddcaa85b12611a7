// worker: a consumer process that runs "shell" tasks (see submit). Each task's argv is
// started by spawn_command (spawn.hpp): vfork semantics, never fork() from this
// multi-threaded process, one exec per command. The command leads its own process
// group, gets stdin from /dev/null, an empty signal mask and default SIGINT/SIGTERM
// dispositions, and dies with the worker (PR_SET_PDEATHSIG), so a worker killed hard
// leaves no orphaned commands behind while the reaper requeues their tasks.
//
// Exit status of the command -> outcome: 0 done, 75 (EX_TEMPFAIL) retry, anything else
// or a signal fails the attempt (retried per the task's policy, then dead-lettered).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "common.hpp"
#include "shell_task.hpp"
#include "spawn.hpp"

extern char** environ;

namespace shmctl {

namespace {

using namespace shmsched;
using namespace std::chrono_literals;

struct WorkerArgs {
  std::string name;
  std::vector<std::string> home;
  std::vector<std::string> help;
  unsigned workers = 1;
  unsigned reserve = 0;
  unsigned take_ahead = 1;
  std::string grace = "10s";
  bool verbose = false;
  bool trust_owner = false;
  bool trust_group = false;
  bool trust_others = false;
  unsigned batch = 0;
  std::string batch_wait = "0";
  std::vector<std::string> batch_command;
};

// The command's environment: the worker's, with the task's SHMSCHED_* variables.
std::vector<std::string> command_env(const TaskContext& ctx, const std::string& segment) {
  std::vector<std::string> env;
  static constexpr std::string_view ours[] = {
      "SHMSCHED_TASK_ID=", "SHMSCHED_ATTEMPT=", "SHMSCHED_QUEUE=", "SHMSCHED_SEGMENT="};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view v(*e);
    bool replaced = false;
    for (auto p : ours) replaced |= v.substr(0, p.size()) == p;
    if (!replaced) env.emplace_back(v);
  }
  env.push_back("SHMSCHED_TASK_ID=" + std::to_string(ctx.task.id));
  env.push_back("SHMSCHED_ATTEMPT=" + std::to_string(ctx.task.attempt));
  env.push_back("SHMSCHED_QUEUE=" + std::string(ctx.queue_name));
  env.push_back("SHMSCHED_SEGMENT=" + segment);
  return env;
}

int pidfd_open(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// A command's standard output, kept for a keep_result task: the first `limit` bytes,
// ending in kTruncated when there was more (the rest is read and dropped, so the command
// never blocks on a full pipe).
class OutputCapture {
 public:
  static constexpr std::string_view kTruncated = "[truncated]";
  explicit OutputCapture(std::size_t limit) : limit_(limit) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
      read_ = p[0];
      write_ = p[1];
      (void)::fcntl(write_, F_SETFL, 0);  // the command's end blocks as a normal stdout does
    }
  }
  ~OutputCapture() {
    close_write_end();
    if (read_ >= 0) ::close(read_);
  }
  OutputCapture(const OutputCapture&) = delete;
  OutputCapture& operator=(const OutputCapture&) = delete;
  bool ok() const noexcept { return read_ >= 0; }
  int command_end() const noexcept { return write_; }
  // The end to poll, or -1 once every writer closed it (a closed pipe polls readable
  // for ever).
  int poll_end() const noexcept { return eof_ ? -1 : read_; }
  void close_write_end() noexcept {
    if (write_ >= 0) ::close(write_);
    write_ = -1;
  }
  // Reads what is there now (never blocks).
  void drain() {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(read_, buf, sizeof buf);
      if (n == 0) eof_ = true;
      if (n <= 0) return;
      const auto got = static_cast<std::size_t>(n);
      if (text_.size() < limit_) text_.append(buf, std::min(got, limit_ - text_.size()));
      total_ += got;
    }
  }
  std::string result() const {
    if (total_ <= limit_) return text_;
    if (limit_ <= kTruncated.size()) return text_.substr(0, limit_);
    return text_.substr(0, limit_ - kTruncated.size()) + std::string(kTruncated);
  }

 private:
  std::size_t limit_;
  int read_ = -1, write_ = -1;
  std::string text_;
  std::size_t total_ = 0;
  bool eof_ = false;
};

class ShellRunner {
 public:
  ShellRunner(const Segment& seg, std::string segment, std::chrono::milliseconds grace, bool verbose)
      : seg_(seg), segment_(std::move(segment)), grace_(grace), verbose_(verbose) {
    devnull_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  ~ShellRunner() {
    if (devnull_ >= 0) ::close(devnull_);
  }

  Outcome operator()(TaskContext& ctx) {
    const auto started = std::chrono::steady_clock::now();
    const std::string_view payload(reinterpret_cast<const char*>(ctx.task.payload.data()), ctx.task.payload.size());
    std::vector<std::string> command = decode_argv(payload);
    if (command.empty() || command[0].empty()) return finish(ctx, Outcome::fail("empty command"), started);
    // A keep_result task's result is its command's standard output.
    std::optional<OutputCapture> out;
    if (ctx.task.keep_result) {
      out.emplace(seg_.layout().payload_bytes);
      if (!out->ok()) return finish(ctx, Outcome::retry(1000ms, std::string("pipe: ") + std::strerror(errno)), started);
    }
    const SpawnResult spawned =
        spawn_command(command, command_env(ctx, segment_), devnull_, out ? out->command_end() : -1);
    if (out) out->close_write_end();
    if (spawned.pid < 0)
      return finish(ctx, Outcome::retry(1000ms, std::string("vfork: ") + std::strerror(spawned.error)), started);
    const pid_t pid = spawned.pid;
    if (spawned.exec_error != 0) {
      std::lock_guard<std::mutex> lock(log_);
      std::cerr << "shmctl worker: cannot run '" << command[0] << "': " << std::strerror(spawned.exec_error) << "\n";
    }

    int status = 0;
    const bool stopped_early = wait_child(pid, ctx, status, out ? &*out : nullptr);
    Outcome o = out ? Outcome::done(out->result()) : Outcome::done();
    if (stopped_early && ctx.cancel_requested()) {
      o = Outcome::fail("cancelled");  // the consumer finishes it as cancelled: not retried
    } else if (stopped_early) {
      o = Outcome::retry(0ms, "worker stopped before the command finished");
    } else if (WIFEXITED(status)) {
      const int code = WEXITSTATUS(status);
      if (code == kExitTempFail) {
        // The task's own retry policy, with the jitter drawn here, so the log can say
        // exactly when it runs again.
        const RetryPolicy r = retry_policy_of(seg_, ctx.task);
        auto d = static_cast<double>(nominal_retry_delay(r, ctx.task.attempt).count());
        if (r.jitter_pct != 0) d += d * (static_cast<double>(jitter_draw() % 1000) / 1000.0) * r.jitter_pct / 100.0;
        o = Outcome::retry(std::chrono::milliseconds(static_cast<std::int64_t>(d)),
                           "exit status 75 (temporary failure)");
      } else if (code != 0) {
        o = Outcome::fail("exit status " + std::to_string(code));
      }
    } else if (WIFSIGNALED(status)) {
      o = Outcome::fail("killed by signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) +
                        ")");
    } else {
      o = Outcome::fail("ended with wait status " + std::to_string(status));
    }
    return finish(ctx, std::move(o), started);
  }

 private:
  // Waits for the child. Once the consumer is stopping, the command may finish within
  // the grace period; shortly before it ends the command's group gets SIGTERM, then
  // SIGKILL, and the task is retried -- a clean hand-back instead of leaving it to the
  // reaper. A cancelled task's command gets SIGTERM at once and SIGKILL when it is still
  // there a grace period later. Returns true when the command was stopped either way.
  // The command's output, when captured, is read as it comes.
  bool wait_child(pid_t pid, const TaskContext& ctx, int& status, OutputCapture* out) {
    return wait_child(
        pid, ctx.stop, [&] { return ctx.cancel_requested(); }, status, out);
  }
  template <class Cancelled>
  bool wait_child(pid_t pid, const std::stop_token& stop, Cancelled&& cancelled, int& status, OutputCapture* out) {
    const int pfd = pidfd_open(pid);
    const auto margin = std::min<std::chrono::milliseconds>(1000ms, grace_ / 4);
    std::optional<std::chrono::steady_clock::time_point> stop_seen, cancel_seen;
    bool termed = false, killed = false;
    auto backoff = 1ms;
    for (;;) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid || (r < 0 && errno != EINTR)) break;
      const auto now = std::chrono::steady_clock::now();
      if (!cancel_seen && cancelled()) cancel_seen = now;
      if (stop.stop_requested() && !stop_seen) stop_seen = now;
      const bool term_now = cancel_seen.has_value() || (stop_seen && now >= *stop_seen + grace_ - margin);
      const bool kill_now =
          (cancel_seen && now >= *cancel_seen + grace_) || (stop_seen && now >= *stop_seen + grace_ - margin / 2);
      if (!termed && term_now) {
        ::kill(-pid, SIGTERM);
        termed = true;
      } else if (termed && !killed && kill_now) {
        ::kill(-pid, SIGKILL);
        killed = true;
      }
      if (out != nullptr) out->drain();
      if (pfd >= 0) {
        // Readable when the child exits (or the output has more); the timeout only
        // bounds how late a stop or a cancel is seen.
        pollfd p[2] = {{pfd, POLLIN, 0}, {out != nullptr ? out->poll_end() : -1, POLLIN, 0}};
        (void)::poll(p, 2, 50);
      } else {
        std::this_thread::sleep_for(backoff);
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 20ms);
      }
    }
    if (pfd >= 0) ::close(pfd);
    if (termed) ::kill(-pid, SIGKILL);  // leftovers of the group, if any
    if (out != nullptr) out->drain();   // what the command wrote last
    return termed;
  }

  // A batch (--batch): one run of the worker's command, the tasks' command lines on its
  // standard input (one a line), one outcome a line on its standard output.
 public:
  void run_batch(BatchContext& ctx, const std::vector<std::string>& command) {
    const std::size_t n = ctx.tasks.size();
    std::string input;
    std::vector<bool> bad(n, false);
    for (std::size_t i = 0; i < n; ++i) {
      const Taken& t = ctx.tasks[i];
      std::string line;
      for (const auto& arg :
           decode_argv(std::string_view(reinterpret_cast<const char*>(t.payload.data()), t.payload.size())))
        line += (line.empty() ? "" : " ") + arg;
      if (line.find('\n') != std::string::npos) {
        bad[i] = true;
        ctx.outcomes[i] = Outcome::fail("a batch line may not hold a newline");
        line.clear();
      }
      input += line + "\n";
    }
    const int in = ::memfd_create("shmctl-batch", MFD_CLOEXEC);
    if (in < 0 || ::write(in, input.data(), input.size()) != static_cast<ssize_t>(input.size()) ||
        ::lseek(in, 0, SEEK_SET) != 0) {
      if (in >= 0) ::close(in);
      for (std::size_t i = 0; i < n; ++i)
        if (!bad[i]) ctx.outcomes[i] = Outcome::retry(1000ms, std::string("batch input: ") + std::strerror(errno));
      return;
    }
    OutputCapture out(std::size_t{1} << 20);
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
    env.push_back("SHMSCHED_SEGMENT=" + segment_);
    env.push_back("SHMSCHED_BATCH_SIZE=" + std::to_string(n));
    const SpawnResult spawned = spawn_command(command, env, in, out.ok() ? out.command_end() : -1);
    ::close(in);
    out.close_write_end();
    if (spawned.pid < 0) {
      for (std::size_t i = 0; i < n; ++i)
        if (!bad[i]) ctx.outcomes[i] = Outcome::retry(1000ms, std::string("vfork: ") + std::strerror(spawned.error));
      return;
    }
    int status = 0;
    const bool stopped = wait_child(
        spawned.pid, ctx.stop, [] { return false; }, status, &out);
    const std::string text = out.result();
    std::size_t pos = 0, i = 0;
    for (; i < n && pos < text.size(); ++i) {
      const std::size_t nl = text.find('\n', pos);
      const std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? text.size() : nl + 1;
      if (!bad[i]) ctx.outcomes[i] = outcome_of_line(line);
    }
    // Tasks without an outcome line: the command's exit status decides.
    Outcome rest = Outcome::fail("no outcome line for it (the command wrote " + std::to_string(i) + " of " +
                                 std::to_string(n) + ")");
    if (stopped)
      rest = Outcome::retry(0ms, "worker stopped before the batch command finished");
    else if (WIFEXITED(status) && WEXITSTATUS(status) == kExitTempFail)
      rest = Outcome::retry(-1ms, "exit status 75 (temporary failure)");
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
      rest = Outcome::fail("exit status " + std::to_string(WEXITSTATUS(status)));
    else if (WIFSIGNALED(status))
      rest = Outcome::fail("killed by signal " + std::to_string(WTERMSIG(status)));
    for (; i < n; ++i)
      if (!bad[i]) ctx.outcomes[i] = rest;
    if (verbose_) {
      std::lock_guard<std::mutex> lock(log_);
      std::cerr << "shmctl worker: batch of " << n << " tasks (first " << ctx.tasks[0].id << ") ran\n";
    }
  }

  // "ok", "retry [DURATION]", "fail [REASON]" (docs/shmctl.md, "worker --batch").
  static Outcome outcome_of_line(std::string line) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    const std::size_t sp = line.find(' ');
    const std::string word = line.substr(0, sp);
    const std::string rest = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (word == "ok" || word == "done") return Outcome::done();
    if (word == "fail") return Outcome::fail(rest.empty() ? "failed" : rest);
    if (word == "retry") {
      if (rest.empty()) return Outcome::retry();
      try {
        return Outcome::retry(std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(rest, "retry")),
                              "asked to retry");
      } catch (const Usage&) {
        return Outcome::fail("bad outcome line '" + line + "'");
      }
    }
    return Outcome::fail("bad outcome line '" + line + "' (ok, retry [DURATION], fail [REASON])");
  }

 private:
  Outcome finish(const TaskContext& ctx, Outcome o, std::chrono::steady_clock::time_point started) {
    const bool failed = o.kind() != Outcome::Kind::done;
    if (verbose_ || failed) {
      const auto took = std::chrono::steady_clock::now() - started;
      std::string what = o.kind() == Outcome::Kind::done ? "done" : o.reason();
      if (failed && ctx.cancel_requested()) {
        what = "cancelled: not retried";
      } else if (failed) {
        if (ctx.task.attempt >= ctx.task.max_attempts) {
          what += "; out of attempts: dead-lettered";
        } else if (o.kind() == Outcome::Kind::retry && o.delay().count() >= 0) {
          what += "; will retry in " + format_duration(std::chrono::nanoseconds(o.delay()).count());
        } else {
          // A failure: the library draws the jitter when it schedules the retry.
          const RetryPolicy r = retry_policy_of(seg_, ctx.task);
          what += "; will retry in " +
                  format_duration(std::chrono::nanoseconds(nominal_retry_delay(r, ctx.task.attempt)).count());
          if (r.jitter_pct != 0) what += " (+ up to " + std::to_string(r.jitter_pct) + "% jitter)";
        }
      }
      std::lock_guard<std::mutex> lock(log_);
      std::cerr << "shmctl worker: task " << ctx.task.id << " attempt " << ctx.task.attempt << "/"
                << ctx.task.max_attempts << ": " << what << " (ran "
                << format_duration(std::chrono::duration_cast<std::chrono::nanoseconds>(took).count()) << ")\n";
    }
    return o;
  }

  std::uint64_t jitter_draw() noexcept {
    std::uint64_t r = random_.fetch_add(0x9E3779B97F4A7C15ULL, std::memory_order_relaxed);
    r ^= r >> 31;
    r *= 0xBF58476D1CE4E5B9ULL;
    r ^= r >> 29;
    return r;
  }

  const Segment& seg_;
  std::string segment_;
  std::chrono::milliseconds grace_;
  bool verbose_;
  int devnull_ = -1;
  std::mutex log_;
  std::atomic<std::uint64_t> random_{
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
};

// A segment that users other than this worker's can write lets them enqueue "shell"
// tasks: commands this worker would run as its own user. Refused unless the operator
// says so.
void check_writers(const WorkerArgs& a) {
  const std::string path = "/dev/shm/" + Segment::object_name(a.name);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Failure("worker: cannot check who may write " + path + ": " + std::strerror(errno));
  if (st.st_uid != ::geteuid() && (st.st_mode & S_IWUSR) != 0 && !a.trust_owner)
    throw Failure("worker: segment '" + a.name + "' (" + path + ") belongs to uid " + std::to_string(st.st_uid) +
                  ", who can write it: they could submit commands this worker runs as uid " +
                  std::to_string(::geteuid()) +
                  ". Run the worker as that user or, if they are trusted, pass "
                  "--trust-owner");
  const bool group = (st.st_mode & S_IWGRP) != 0 && !a.trust_group;
  const bool others = (st.st_mode & S_IWOTH) != 0 && !a.trust_others;
  if (!group && !others) return;
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  std::string who = group && others ? "its group and by other users" : group ? "its group" : "other users";
  std::string flags = group && others ? "--trust-group --trust-others" : group ? "--trust-group" : "--trust-others";
  throw Failure("worker: segment '" + a.name + "' (" + path + ", mode " + mode + ") is writable by " + who +
                ": they could submit commands this worker runs as uid " + std::to_string(::geteuid()) +
                ". Restrict it (chmod " +
                (group && others ? "go-w"
                 : group         ? "g-w"
                                 : "o-w") +
                " " + path + ") or, if they are trusted, pass " + flags);
}

int run_worker(WorkerArgs& a) {
  const auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(a.grace, "--grace"));
  if (grace.count() <= 0) throw Usage("--grace must be positive");
  ConsumerOptions co;
  co.home = split_list(a.home);
  co.help = split_list(a.help);
  if (co.home.empty() && co.help.empty()) throw Usage("worker: give --home (and/or --help-with) queues");
  if (a.workers == 0) throw Usage("--workers must be at least 1");
  if (a.reserve > a.workers) throw Usage("--reserve must not exceed --workers");
  if (a.take_ahead == 0 || a.take_ahead > Client::kMaxTakeAhead)
    throw Usage("--take-ahead must be 1.." + std::to_string(Client::kMaxTakeAhead));
  co.workers = a.workers;
  co.reserve = a.reserve;
  co.take_ahead = a.take_ahead;
  co.grace = grace;

  Segment seg = open_segment(a.name, Access::change);
  check_writers(a);
  auto consumer = Consumer::create(seg, co);
  check(consumer, "worker");
  auto runner = std::make_shared<ShellRunner>(seg, a.name, grace, a.verbose);
  if (a.batch != 0) {
    if (a.batch_command.empty() || a.batch_command[0].empty())
      throw Usage("worker --batch N needs the batch command: shmctl worker NAME --home Q --batch N -- COMMAND");
    const auto wait = parse_duration(a.batch_wait, "--batch-wait");
    const std::vector<std::string> command = a.batch_command;
    (*consumer)->on_batch(kShellType, a.batch, wait,
                          [runner, command](BatchContext& ctx) { runner->run_batch(ctx, command); });
  } else {
    if (!a.batch_command.empty()) throw Usage("a COMMAND for the worker goes with --batch N");
    (*consumer)->on(kShellType, [runner](TaskContext& ctx) { return (*runner)(ctx); });
  }

  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s.empty() ? std::string("-") : s;
  };
  std::cerr << "shmctl worker: pid " << ::getpid() << " serving '" << a.name << "' (home " << join(co.home)
            << ", help-with " << join(co.help) << ", " << co.workers << " worker(s), reserve " << co.reserve
            << ", take-ahead " << co.take_ahead << "); SIGINT/SIGTERM stop it gracefully" << std::endl;
  const int rc = (*consumer)->run_until_signal();
  const ConsumerStats st = (*consumer)->stats();
  std::cerr << "shmctl worker: stopped: done " << st.done << ", retried " << st.retried << ", failed " << st.failed
            << ", dead-lettered " << st.dead_lettered << ", cancelled " << st.cancelled << ", helped " << st.helped
            << std::endl;
  return rc;
}

}  // namespace

void add_worker_verb(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<WorkerArgs>();
  auto* c = app.add_subcommand("worker", "Run shell tasks as a consumer until SIGINT/SIGTERM");
  c->add_option("NAME", a->name, "Segment name")->required();
  list_option(c->add_option("--home", a->home, "Queues drained first, in this order: Q[,Q...]"));
  list_option(
      c->add_option("--help-with", a->help, "Queues helped with only while every home queue is empty: Q[,Q...]"));
  whole_number(c->add_option("--workers", a->workers, "Worker threads (commands run at once)"))->capture_default_str();
  whole_number(c->add_option("--reserve", a->reserve, "Workers that never help (stay free for home work)"))
      ->capture_default_str();
  whole_number(c->add_option("--take-ahead", a->take_ahead,
                             "Tasks a take may claim at once from a home queue, run before looking again (1-16)"))
      ->capture_default_str();
  c->add_option("--grace", a->grace, "On SIGINT/SIGTERM, how long running commands may take to finish")
      ->capture_default_str();
  c->add_flag("--trust-owner", a->trust_owner,
              "Serve a segment another user owns (its owner can make this worker run commands)");
  c->add_flag("--trust-group", a->trust_group,
              "Serve a segment its group may write (members can make this worker run commands)");
  c->add_flag("--trust-others", a->trust_others,
              "Serve a segment other users may write (any local user can make this worker run commands)");
  c->add_flag("-v,--verbose", a->verbose, "Log every task (failures are always logged)");
  whole_number(c->add_option("--batch", a->batch,
                             "Run COMMAND once per batch of up to N tasks, their command lines on its stdin"));
  c->add_option("--batch-wait", a->batch_wait, "--batch: wait this long for more tasks while fewer are queued")
      ->capture_default_str();
  c->add_option("COMMAND", a->batch_command, "--batch: the command that runs each batch (after --)");
  c->footer(
      "Each command runs with SHMSCHED_TASK_ID, SHMSCHED_ATTEMPT, SHMSCHED_QUEUE and SHMSCHED_SEGMENT set.\n"
      "Exit 0 = done, 75 = retry, anything else or a signal = failed attempt.\n"
      "A task submitted with --keep-result keeps the command's standard output as its result\n"
      "(the first payload-size bytes, ending in [truncated] when there was more).\n"
      "A segment writable by another user is refused without --trust-owner / --trust-group / --trust-others.\n"
      "--batch N -- COMMAND: COMMAND reads one task a line on stdin and writes one outcome a line, in order:\n"
      "'ok', 'retry [DURATION]' or 'fail [REASON]'; tasks without a line take the exit status's outcome.");
  verbs.push_back({c, [a] { return run_worker(*a); }});
}

}  // namespace shmctl
