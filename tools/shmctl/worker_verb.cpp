// worker: a consumer process that runs "shell" tasks (see submit). Each task's argv is
// run with fork + execvpe -- not posix_spawn, because the child must ask for SIGKILL on
// its parent's death (PR_SET_PDEATHSIG) between fork and exec, so a worker killed hard
// leaves no orphaned commands behind while the reaper requeues their tasks.
//
// Exit status of the command -> outcome: 0 done, 75 (EX_TEMPFAIL) retry, anything else
// or a signal fails the attempt (retried per the task's policy, then dead-lettered).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include "common.hpp"
#include "shell_task.hpp"

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
  CLI::App* command = nullptr;
  CLI::Option* help_option = nullptr;
};

// Everything the child needs, built before fork: after fork in a threaded process the
// child may only make async-signal-safe calls (no allocation).
struct ChildPlan {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::vector<char*> argv;
  std::vector<char*> envp;
  int stdin_fd = -1;
};

void build_env(ChildPlan& plan, const TaskContext& ctx, const std::string& segment) {
  static constexpr std::string_view ours[] = {
      "SHMSCHED_TASK_ID=", "SHMSCHED_ATTEMPT=", "SHMSCHED_QUEUE=", "SHMSCHED_SEGMENT="};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view v(*e);
    bool replaced = false;
    for (auto p : ours) replaced |= v.substr(0, p.size()) == p;
    if (!replaced) plan.env.emplace_back(v);
  }
  plan.env.push_back("SHMSCHED_TASK_ID=" + std::to_string(ctx.task.id));
  plan.env.push_back("SHMSCHED_ATTEMPT=" + std::to_string(ctx.task.attempt));
  plan.env.push_back("SHMSCHED_QUEUE=" + std::string(ctx.queue_name));
  plan.env.push_back("SHMSCHED_SEGMENT=" + segment);
  for (auto& s : plan.args) plan.argv.push_back(s.data());
  plan.argv.push_back(nullptr);
  for (auto& s : plan.env) plan.envp.push_back(s.data());
  plan.envp.push_back(nullptr);
}

// Async-signal-safe message for a failed exec (strerror may allocate).
const char* exec_error(int e) noexcept {
  switch (e) {
    case ENOENT:
      return "no such file or directory";
    case EACCES:
      return "permission denied";
    case ENOEXEC:
      return "not an executable format";
    case ENOMEM:
      return "out of memory";
    case E2BIG:
      return "argument list too long";
    case ENOTDIR:
      return "not a directory";
    default:
      return "exec failed";
  }
}

void safe_write(int fd, const char* s) noexcept {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

[[noreturn]] void child_exec(const ChildPlan& plan, pid_t parent) noexcept {
  // Own process group: a Ctrl-C at the worker's terminal asks the worker to stop
  // gracefully; it must not kill the commands it lets finish.
  ::setpgid(0, 0);
  // The "parent" the kernel watches is the forking worker thread; it outlives the
  // command (it waits for it), so this fires only when the worker process dies.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the worker died before prctl took effect
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the worker blocks SIGINT/SIGTERM; commands must not
  if (plan.stdin_fd >= 0) ::dup2(plan.stdin_fd, STDIN_FILENO);
  ::execvpe(plan.argv[0], plan.argv.data(), plan.envp.data());
  const int e = errno;
  safe_write(STDERR_FILENO, "shmctl worker: cannot run '");
  safe_write(STDERR_FILENO, plan.argv[0]);
  safe_write(STDERR_FILENO, "': ");
  safe_write(STDERR_FILENO, exec_error(e));
  safe_write(STDERR_FILENO, "\n");
  ::_exit(e == ENOENT ? 127 : 126);  // what a shell reports for the same failures
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

class ShellRunner {
 public:
  ShellRunner(std::string segment, std::chrono::milliseconds grace, bool verbose)
      : segment_(std::move(segment)), grace_(grace), verbose_(verbose) {
    devnull_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  ~ShellRunner() {
    if (devnull_ >= 0) ::close(devnull_);
  }

  Outcome operator()(TaskContext& ctx) {
    const auto started = std::chrono::steady_clock::now();
    ChildPlan plan;
    const std::string_view payload(reinterpret_cast<const char*>(ctx.task.payload.data()), ctx.task.payload.size());
    plan.args = decode_argv(payload);
    if (plan.args.empty() || plan.args[0].empty()) return finish(ctx, Outcome::fail("empty command"), started);
    plan.stdin_fd = devnull_;
    build_env(plan, ctx, segment_);

    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) return finish(ctx, Outcome::retry(1000ms, std::string("fork: ") + std::strerror(errno)), started);
    if (pid == 0) child_exec(plan, parent);
    ::setpgid(pid, pid);  // also here: whichever runs first, the group exists before we signal it

    int status = 0;
    const bool stopped_early = wait_child(pid, ctx, status);
    Outcome o = Outcome::done();
    if (stopped_early) {
      o = Outcome::retry(0ms, "worker stopped before the command finished");
    } else if (WIFEXITED(status)) {
      const int code = WEXITSTATUS(status);
      if (code == kExitTempFail) {
        o = Outcome::retry(std::chrono::milliseconds(-1), "exit status 75 (temporary failure)");
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
  // reaper. Returns true when the command was stopped that way.
  bool wait_child(pid_t pid, const TaskContext& ctx, int& status) {
    const int pfd = pidfd_open(pid);
    const auto margin = std::min<std::chrono::milliseconds>(1000ms, grace_ / 4);
    std::optional<std::chrono::steady_clock::time_point> stop_seen;
    bool termed = false, killed = false;
    auto backoff = 1ms;
    for (;;) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid || (r < 0 && errno != EINTR)) break;
      if (ctx.stop.stop_requested()) {
        const auto now = std::chrono::steady_clock::now();
        if (!stop_seen) stop_seen = now;
        if (!termed && now >= *stop_seen + grace_ - margin) {
          ::kill(-pid, SIGTERM);
          termed = true;
        } else if (termed && !killed && now >= *stop_seen + grace_ - margin / 2) {
          ::kill(-pid, SIGKILL);
          killed = true;
        }
      }
      if (pfd >= 0) {
        // Readable when the child exits; the timeout only bounds how late a stop is seen.
        pollfd p{pfd, POLLIN, 0};
        (void)::poll(&p, 1, 50);
      } else {
        std::this_thread::sleep_for(backoff);
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 20ms);
      }
    }
    if (pfd >= 0) ::close(pfd);
    if (termed) ::kill(-pid, SIGKILL);  // leftovers of the group, if any
    return termed;
  }

  Outcome finish(const TaskContext& ctx, Outcome o, std::chrono::steady_clock::time_point started) {
    const bool failed = o.kind() != Outcome::Kind::done;
    if (verbose_ || failed) {
      const auto took = std::chrono::steady_clock::now() - started;
      std::string what = o.kind() == Outcome::Kind::done ? "done" : o.reason();
      if (failed)
        what += ctx.task.attempt >= ctx.task.max_attempts ? "; out of attempts: dead-lettered" : "; will retry";
      std::lock_guard<std::mutex> lock(log_);
      std::cerr << "shmctl worker: task " << ctx.task.id << " attempt " << ctx.task.attempt << "/"
                << ctx.task.max_attempts << ": " << what << " ("
                << format_duration(std::chrono::duration_cast<std::chrono::nanoseconds>(took).count()) << ")\n";
    }
    return o;
  }

  std::string segment_;
  std::chrono::milliseconds grace_;
  bool verbose_;
  int devnull_ = -1;
  std::mutex log_;
};

int run_worker(WorkerArgs& a) {
  // "--help" alone asks for help; "--help Q,..." names the queues to help with.
  if (a.help_option->count() > 0) {
    bool any = false;
    for (const auto& h : a.help) any |= !h.empty();
    if (!any) {
      std::cout << a.command->help();
      return kExitOk;
    }
  }
  if (a.name.empty()) throw Usage("worker: missing NAME (shmctl worker NAME --home Q[,Q...])");
  const auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(a.grace, "--grace"));
  if (grace.count() <= 0) throw Usage("--grace must be positive");
  ConsumerOptions co;
  co.home = split_list(a.home);
  co.help = split_list(a.help);
  if (co.home.empty() && co.help.empty()) throw Usage("worker: give --home (and/or --help) queues");
  if (a.workers == 0) throw Usage("--workers must be at least 1");
  if (a.reserve > a.workers) throw Usage("--reserve must not exceed --workers");
  if (a.take_ahead == 0 || a.take_ahead > Client::kMaxTakeAhead)
    throw Usage("--take-ahead must be 1.." + std::to_string(Client::kMaxTakeAhead));
  co.workers = a.workers;
  co.reserve = a.reserve;
  co.take_ahead = a.take_ahead;
  co.grace = grace;

  Segment seg = open_segment(a.name);
  auto consumer = Consumer::create(seg, co);
  check(consumer, "worker");
  auto runner = std::make_shared<ShellRunner>(a.name, grace, a.verbose);
  (*consumer)->on(kShellType, [runner](TaskContext& ctx) { return (*runner)(ctx); });

  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s.empty() ? std::string("-") : s;
  };
  std::cerr << "shmctl worker: pid " << ::getpid() << " serving '" << a.name << "' (home " << join(co.home) << ", help "
            << join(co.help) << ", " << co.workers << " worker(s), reserve " << co.reserve << ", take-ahead "
            << co.take_ahead << "); SIGINT/SIGTERM stop it gracefully" << std::endl;
  const int rc = (*consumer)->run_until_signal();
  const ConsumerStats st = (*consumer)->stats();
  std::cerr << "shmctl worker: stopped: done " << st.done << ", retried " << st.retried << ", failed " << st.failed
            << ", dead-lettered " << st.dead_lettered << ", helped " << st.helped << std::endl;
  return rc;
}

}  // namespace

void add_worker_verb(CLI::App& app, Verbs& verbs) {
  auto a = std::make_shared<WorkerArgs>();
  auto* c = app.add_subcommand("worker", "Run shell tasks as a consumer until SIGINT/SIGTERM");
  // "--help" is also the option naming help queues: -h prints help, and so does a bare
  // --help (see run_worker).
  c->set_help_flag("-h", "Print this help message and exit (so does --help without queues)");
  c->add_option("NAME", a->name, "Segment name");
  list_option(c->add_option("--home", a->home, "Queues drained first, in this order: Q[,Q...]"));
  // Zero values allowed: a bare --help is the request for help.
  a->help_option =
      list_option(c->add_option("--help", a->help, "Queues helped with only while every home queue is empty"))
          ->expected(0, 1);
  c->add_option("--workers", a->workers, "Worker threads (commands run at once)")->capture_default_str();
  c->add_option("--reserve", a->reserve, "Workers that never help (stay free for home work)")->capture_default_str();
  c->add_option("--take-ahead", a->take_ahead,
                "Tasks a take may claim at once from a home queue, run before looking again (1-16)")
      ->capture_default_str();
  c->add_option("--grace", a->grace, "On SIGINT/SIGTERM, how long running commands may take to finish")
      ->capture_default_str();
  c->add_flag("-v,--verbose", a->verbose, "Log every task (failures are always logged)");
  c->footer(
      "Each command runs with SHMSCHED_TASK_ID, SHMSCHED_ATTEMPT, SHMSCHED_QUEUE and SHMSCHED_SEGMENT set.\n"
      "Exit 0 = done, 75 = retry, anything else or a signal = failed attempt.");
  a->command = c;
  verbs.push_back({c, [a] { return run_worker(*a); }});
}

}  // namespace shmctl
