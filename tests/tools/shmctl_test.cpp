// End-to-end tests of shmctl: every verb runs as a subprocess (the binary the build made,
// SHMCTL_BIN) against real named segments, which each test creates under a unique name
// and always destroys. Workers are background shmctl processes that are stopped with
// SIGTERM (graceful) or SIGKILL (crash) and never outlive the test.
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "shmsched/detail/shm_structs.hpp"
#include "shmsched/shmsched.hpp"
#include "test_support.hpp"

#ifndef SHMCTL_BIN
#error "SHMCTL_BIN must name the shmctl binary under test"
#endif

namespace shmsched::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------
// Running shmctl

struct Ran {
  ExitStatus status;
  std::string out;
  std::string err;
  int code() const { return status.exited && !status.timed_out ? status.code : -1; }
};

std::ostream& operator<<(std::ostream& os, const Ran& r) {
  return os << describe(r.status) << "\n--- stdout ---\n" << r.out << "--- stderr ---\n" << r.err;
}

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> v;
  for (auto& a : args) v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

/// Runs `shmctl args...` to completion (killed after `limit`), feeding it `input`;
/// `before_exec` runs in the child first.
Ran shmctl(std::vector<std::string> args, const std::string& input = {}, std::chrono::milliseconds limit = 30s,
           void (*before_exec)() = nullptr) {
  args.insert(args.begin(), SHMCTL_BIN);
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return {};
  }
  auto argv = c_argv(args);
  const pid_t pid = spawn([&] {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    if (before_exec != nullptr) before_exec();
    ::execv(argv[0], argv.data());
    return 127;
  });
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  Ran r;
  std::size_t written = 0;
  int in_fd = in[1];
  if (input.empty()) {
    ::close(in_fd);
    in_fd = -1;
  } else {
    ::fcntl(in_fd, F_SETFL, O_NONBLOCK);
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int open_outputs = 2;
  bool timed_out = false;
  while (open_outputs > 0 || in_fd >= 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in_fd, POLLOUT, 0}};
    if (::poll(p, 3, static_cast<int>(std::min<long long>(left.count(), 100))) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || (p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[65536];
      const ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(p[i].fd);
        (i == 0 ? out[0] : err[0]) = -1;
        --open_outputs;
      }
    }
    if (in_fd >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      const ssize_t n = ::write(in_fd, input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<std::size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) written = input.size();
      if (written == input.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
  }
  for (int fd : {out[0], err[0], in_fd})
    if (fd >= 0) ::close(fd);
  if (timed_out) ::kill(pid, SIGKILL);
  r.status = wait_child(pid, timed_out ? 5s : limit);
  r.status.timed_out |= timed_out;
  return r;
}

/// Makes the permission bits bind this process's user (root included): root gives up
/// the capabilities that override them, for itself and what it execs.
void obey_file_modes() {
  if (::geteuid() != 0) return;
  for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER})
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) ::_exit(125);
}

json parse_json(const Ran& r) {
  try {
    return json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON (" << e.what() << "):\n" << r;
    return json::object();
  }
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

/// Polls `pred` every 20 ms until it holds or `limit` passes.
template <class F>
bool eventually(F pred, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

bool process_gone(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return true;
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  return close != std::string::npos && close + 2 < all.size() && all[close + 2] == 'Z';  // a zombie is gone too
}

// ---------------------------------------------------------------------------------
// Fixture: a unique segment name, a scratch directory, background processes

class Shmctl : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shmctl-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (pid_t pid : background_) {
      ::kill(pid, SIGKILL);
      (void)wait_child(pid, 5s);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  const std::string& name() const { return seg_.name(); }
  std::string path(const std::string& file) const { return dir_ + "/" + file; }

  /// Creates the segment with shmctl itself.
  void create(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"create",   name(), "--capacity", "2048",
                                     "--levels", "4",    "--queues",   "general,urgent"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Ran r = shmctl(args);
    ASSERT_EQ(r.code(), 0) << r;
  }

  /// Starts `shmctl args...` in the background, output to a log file in the scratch dir.
  pid_t start(std::vector<std::string> args, const std::string& log = "worker.log", bool ignore_sigint = false,
              bool close_stdin = false) {
    args.insert(args.begin(), SHMCTL_BIN);
    const std::string log_path = path(log);
    auto argv = c_argv(args);
    const pid_t pid = spawn([&] {
      if (ignore_sigint) ::signal(SIGINT, SIG_IGN);  // as a non-interactive shell's "worker &" does
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0 || null < 0) return 126;
      ::dup2(null, 0);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      if (close_stdin) ::close(0);
      ::execv(argv[0], argv.data());
      return 127;
    });
    background_.push_back(pid);
    return pid;
  }
  pid_t start_worker(std::vector<std::string> extra = {}, bool ignore_sigint = false) {
    std::vector<std::string> args = {"worker", name(), "--home", "general"};
    args.insert(args.end(), extra.begin(), extra.end());
    const pid_t pid = start(args, "worker.log", ignore_sigint);
    // Attached once stat shows a live consumer with this pid.
    EXPECT_TRUE(eventually([&] {
      const json s = stat();
      for (const auto& p : s.value("participants", json::array()))
        if (p["pid"] == pid && p["alive"] == true) return true;
      return false;
    })) << "worker did not attach; log:\n"
        << log();
    return pid;
  }
  /// Sends `sig` and waits for the process to end.
  ExitStatus stop(pid_t pid, int sig = SIGTERM, std::chrono::milliseconds limit = 15s) {
    ::kill(pid, sig);
    const ExitStatus s = wait_child(pid, limit);
    background_.erase(std::remove(background_.begin(), background_.end(), pid), background_.end());
    return s;
  }
  std::string log(const std::string& file = "worker.log") const {
    std::ifstream in(path(file));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  json stat() {
    const Ran r = shmctl({"stat", name(), "--json"});
    if (r.code() != 0) return json::object();
    return parse_json(r);
  }
  const json* queue(const json& s, const std::string& q) {
    for (const auto& x : s.at("queues"))
      if (x.at("name") == q) return &x;
    ADD_FAILURE() << "no queue " << q << " in " << s.dump();
    return nullptr;
  }
  /// Sum of a level counter (or "depth") over a queue's levels.
  std::uint64_t total(const json& s, const std::string& q, const std::string& key) {
    std::uint64_t n = 0;
    if (const json* j = queue(s, q))
      for (const auto& l : j->at("levels")) n += l.at(key).get<std::uint64_t>();
    return n;
  }
  Ran submit(const std::vector<std::string>& command, std::vector<std::string> opts = {}) {
    std::vector<std::string> args = {"submit", name(), "--queue", "general"};
    args.insert(args.end(), opts.begin(), opts.end());
    args.push_back("--");
    args.insert(args.end(), command.begin(), command.end());
    return shmctl(args);
  }
  Ran wait_drained(std::vector<std::string> extra = {"--timeout", "30s"}) {
    std::vector<std::string> args = {"wait", name()};
    args.insert(args.end(), extra.begin(), extra.end());
    return shmctl(args, {}, 60s);
  }

  NameGuard seg_{unique_name("shmctl")};
  std::string dir_;
  std::vector<pid_t> background_;
};

// ---------------------------------------------------------------------------------
// Command line

const char* const kVerbs[] = {"create", "destroy", "ls",       "stat",  "metrics", "top",    "queue",
                              "sem",    "dlq",     "recover",  "wait",  "submit",  "worker", "status",
                              "result", "cancel",  "priority", "group", "cron",    "rate"};

TEST_F(Shmctl, EveryVerbHasHelpAndBadUsageExitsTwo) {
  for (const char* verb : kVerbs) {
    SCOPED_TRACE(verb);
    const Ran r = shmctl({verb, "--help"});
    EXPECT_EQ(r.code(), 0) << r;
    EXPECT_TRUE(contains(r.out, "Usage")) << r;
  }
  const Ran top = shmctl({"--help"});
  EXPECT_EQ(top.code(), 0) << top;
  EXPECT_TRUE(contains(top.out, "worker")) << top;

  create();
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"no-such-verb"},
      {"stat"},
      {"stat", name(), "--no-such-option"},
      {"wait", name(), "--timeout", "soon"},
      {"submit", name(), "--queue", "general"},                           // no command
      {"submit", name(), "--queue", "general", "--stdin", "--", "true"},  // both
      {"sem", name(), "set", "gpu", "57"},
      {"sem", name(), "set", "gpu"},
      {"queue", name(), "shuffle", "general"},
      {"queue", name(), "pause"},
      {"dlq", name(), "requeue"},
      {"dlq", name(), "requeue", "12", "--all"},
      {"dlq", name(), "requeue", "not-a-number"},
      {"status", name()},
      {"status", name(), "not-a-number"},
      {"result", name()},
      {"cancel", name()},
      {"priority", name(), "12"},
      {"priority", name(), "12", "99"},
      {"submit", name(), "--queue", "general", "--at", "tomorrow", "--", "true"},
      {"submit", name(), "--queue", "general", "--at", "2026-02-30T25:00", "--", "true"},
      {"submit", name(), "--queue", "general", "--expires", "0", "--", "true"},
      {"cancel", name(), "12", "--queue", "general"},
      {"result", name(), "12", "--wait", "soon"},
      {"submit", name(), "--queue", "general", "--keep-result", "--result-ttl", "0", "--", "true"},
      {"create", "x", "--mode", "999"},
      {"worker", name()},  // no queues
      {"worker", name(), "--home", "general", "--take-ahead", "0"},
      {"worker", name(), "--home", "general", "--take-ahead", "17"},
  };
  for (const auto& args : bad) {
    std::string line;
    for (const auto& a : args) line += a + " ";
    SCOPED_TRACE(line);
    const Ran r = shmctl(args);
    EXPECT_EQ(r.code(), 2) << r;
    EXPECT_FALSE(r.err.empty()) << r;
  }
  // The worker's "--help" is help, as everywhere; help queues are "--help-with".
  const Ran wh = shmctl({"worker", name(), "--help"});
  EXPECT_EQ(wh.code(), 0) << wh;
  EXPECT_TRUE(contains(wh.out, "--home")) << wh;
  EXPECT_TRUE(contains(wh.out, "--help-with")) << wh;
}

TEST_F(Shmctl, WorkerHelpIsHelpEvenWithAValueAndHelpWithNamesHelpQueues) {
  create();
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"worker", "--help"}, {"worker", name(), "--help"}, {"worker", "-h"}}) {
    const Ran r = shmctl(args);
    EXPECT_EQ(r.code(), 0) << r;
    EXPECT_TRUE(contains(r.out, "Usage: shmctl worker")) << r;
    EXPECT_TRUE(contains(r.out, "--help-with")) << r;
  }
  // A queue after --help is no longer a help queue: nothing is served.
  const Ran h = shmctl({"worker", name(), "--home", "urgent", "--help", "general"}, {}, 10s);
  EXPECT_EQ(h.code(), 0) << h;
  EXPECT_TRUE(contains(h.out, "Usage: shmctl worker")) << h;
  EXPECT_TRUE(stat()["participants"].empty());
  const Ran no_queue = shmctl({"worker", name(), "--help-with"});
  EXPECT_EQ(no_queue.code(), 2) << no_queue;
}

TEST_F(Shmctl, VersionPrintsTheProjectVersion) {
  const Ran r = shmctl({"--version"});
  EXPECT_EQ(r.code(), 0) << r;
  EXPECT_TRUE(std::regex_match(r.out, std::regex(R"(shmctl [0-9]+\.[0-9]+\.[0-9]+\n)"))) << r;
  const Ran help = shmctl({"--help"});
  EXPECT_TRUE(contains(help.out, "--version")) << help;
}

TEST_F(Shmctl, UsageLinesNameShmctlAndShowRequiredOperands) {
  for (const char* verb : kVerbs) {
    SCOPED_TRACE(verb);
    const Ran r = shmctl({verb, "--help"});
    EXPECT_EQ(r.code(), 0) << r;
    EXPECT_TRUE(contains(r.out, std::string("Usage: shmctl ") + verb + " ")) << r;
    if (std::string(verb) != "ls") {
      EXPECT_TRUE(contains(r.out, "] NAME")) << "NAME shown as required\n" << r;
      EXPECT_FALSE(contains(r.out, "[NAME]")) << r;
    }
  }
  const Ran missing = shmctl({"worker", "--home", "general"});
  EXPECT_EQ(missing.code(), 2) << missing;
  EXPECT_TRUE(contains(missing.err, "NAME")) << missing;
}

TEST_F(Shmctl, DurationsAreDecimalNumbersWithAUnit) {
  create();
  for (const char* bad : {"", "0x10", "1e3", "inf", "nan", "-1s", "+5s", " 5s", "5 s", "1.", ".5s", "5sec", "0x1p3"}) {
    SCOPED_TRACE(std::string("'") + bad + "'");
    const Ran r = shmctl({"wait", name(), "--timeout", bad}, {}, 10s);
    EXPECT_EQ(r.code(), 2) << r;
    EXPECT_TRUE(contains(r.err, "is not a duration")) << r;
  }
  for (const char* good : {"0", "2", "1500ms", "1.5s", "250us", "1m", "1h", "100000ns"}) {
    SCOPED_TRACE(good);
    const Ran r = shmctl({"wait", name(), "--timeout", good}, {}, 10s);
    EXPECT_EQ(r.code(), 0) << r;
  }
  const Ran delay = submit({"true"}, {"--delay", ""});
  EXPECT_EQ(delay.code(), 2) << delay;
  const Ran open = shmctl({"stat", name(), "--open-timeout", "1e3"});
  EXPECT_EQ(open.code(), 2) << open;
  EXPECT_EQ(stat()["queued"], 0);
}

TEST_F(Shmctl, EmptyCommandsAndNegativeCountsAreUsageErrors) {
  create();
  ASSERT_EQ(shmctl({"sem", name(), "set", "s", "2"}).code(), 0);
  const std::vector<std::vector<std::string>> bad = {
      {"submit", name(), "--queue", "general", "--", ""},
      {"submit", name(), "--queue", "general", "--", "", "arg"},
      {"submit", name(), "--queue", "general", "--needs", "s:-1", "--", "true"},
      {"submit", name(), "--queue", "general", "--needs", "s:0", "--", "true"},
      {"submit", name(), "--queue", "general", "--needs", "s:", "--", "true"},
      {"submit", name(), "--queue", "general", "--priority", "-1", "--", "true"},
      {"submit", name(), "--queue", "general", "--retries", "-1", "--", "true"},
      {"dlq", name(), "list", "--max", "-1"},
      {"dlq", name(), "list", "--max", "1.5"},
      {"worker", name(), "--home", "general", "--workers", "-1"},
  };
  for (const auto& args : bad) {
    std::string line;
    for (const auto& a : args) line += "'" + a + "' ";
    SCOPED_TRACE(line);
    const Ran r = shmctl(args, {}, 10s);
    EXPECT_EQ(r.code(), 2) << r;
    EXPECT_FALSE(r.err.empty()) << r;
  }
  const json s = stat();
  EXPECT_EQ(s["queued"], 0);
  EXPECT_EQ(total(s, "general", "enqueued"), 0u);
  EXPECT_EQ(shmctl({"dlq", name(), "list", "--max", "3"}).code(), 0);
  EXPECT_EQ(submit({"true"}, {"--needs", "s:2"}).code(), 0);
}

TEST_F(Shmctl, StdinBatchWithABadLineEnqueuesNothing) {
  create({"--payload", "64"});
  const std::string batch = "echo one\necho two\necho " + std::string(100, 'x') + "\necho four\n";
  const Ran r = shmctl({"submit", name(), "--queue", "general", "--stdin"}, batch);
  EXPECT_EQ(r.code(), 1) << r;
  EXPECT_TRUE(contains(r.err, "line 3")) << r;
  EXPECT_TRUE(contains(r.err, "nothing was enqueued")) << r;
  json s = stat();
  EXPECT_EQ(s["queued"], 0) << s.dump();
  EXPECT_EQ(total(s, "general", "enqueued"), 0u);

  const Ran ok = shmctl({"submit", name(), "--queue", "general", "--stdin"}, "echo one\n\necho two\n");
  EXPECT_EQ(ok.code(), 0) << ok;
  const std::vector<std::string> ids = split_lines(ok.out);
  ASSERT_EQ(ids.size(), 2u) << ok;  // one id a line
  for (const auto& id : ids) EXPECT_EQ(parse_json(shmctl({"status", name(), id, "--json"}))["status"], "queued");
  EXPECT_EQ(stat()["queued"], 2);
}

// ---------------------------------------------------------------------------------
// create, stat, metrics, ls, destroy

TEST_F(Shmctl, CreateThenStatJsonMatchesWhatWasEnqueued) {
  create({"--semaphores", "gpu:3", "--mode", "0640"});
  struct stat st {};
  ASSERT_EQ(::stat(seg_.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  const Ran again = shmctl({"create", name()});
  EXPECT_EQ(again.code(), 1) << again;
  EXPECT_TRUE(contains(again.err, "exists")) << again;

  for (int i = 0; i < 3; ++i) ASSERT_EQ(submit({"true"}).code(), 0);
  for (int i = 0; i < 2; ++i) {
    const Ran r = shmctl({"submit", name(), "--queue", "urgent", "--priority", "2", "--", "true"});
    ASSERT_EQ(r.code(), 0) << r;
  }
  ASSERT_EQ(submit({"true"}, {"--delay", "1h"}).code(), 0);

  const json s = stat();
  ASSERT_TRUE(s.contains("queues")) << s.dump();
  EXPECT_EQ(s["name"], name());
  EXPECT_EQ(s["layout"]["levels"], 4);
  EXPECT_EQ(s["layout"]["task_capacity"], 2048);
  std::set<std::string> names;
  for (const auto& q : s["queues"]) names.insert(q["name"].get<std::string>());
  EXPECT_EQ(names, (std::set<std::string>{"general", "urgent"}));
  const json* general = queue(s, "general");
  const json* urgent = queue(s, "urgent");
  ASSERT_TRUE(general && urgent);
  ASSERT_EQ((*general)["levels"].size(), 4u);
  EXPECT_EQ((*general)["levels"][0]["depth"], 3);
  EXPECT_EQ((*general)["levels"][0]["enqueued"], 4);  // three queued, one delayed
  EXPECT_EQ((*urgent)["levels"][2]["depth"], 2);
  EXPECT_EQ((*urgent)["levels"][0]["depth"], 0);
  EXPECT_EQ((*urgent)["depth"], 2);
  EXPECT_EQ((*general)["levels"][0]["done"], 0);
  EXPECT_GE((*general)["levels"][0]["oldest_age_ns"].get<std::int64_t>(), 0);
  EXPECT_EQ((*urgent)["levels"][0]["oldest_age_ns"], -1);
  EXPECT_EQ(s["queued"], 5);
  EXPECT_EQ(s["delayed"], 1);
  EXPECT_EQ(s["running"], 0);
  EXPECT_EQ(s["dead_letters"], 0);
  EXPECT_TRUE(s["participants"].empty()) << "submitters detach when they exit";
  ASSERT_EQ(s["semaphores"].size(), 1u);
  EXPECT_EQ(s["semaphores"][0]["name"], "gpu");
  EXPECT_EQ(s["semaphores"][0]["capacity"], 3);
  EXPECT_EQ(s["semaphores"][0]["in_use"], 0);
  EXPECT_EQ(s["creator"]["alive"], false);

  const Ran text = shmctl({"stat", name()});
  ASSERT_EQ(text.code(), 0) << text;
  for (const char* want : {"general", "urgent", "gpu", "queued 5", "delayed 1"})
    EXPECT_TRUE(contains(text.out, want)) << want << "\n" << text;
}

TEST_F(Shmctl, MetricsAreValidPrometheusText) {
  create({"--semaphores", "gpu:3"});
  for (int i = 0; i < 3; ++i) ASSERT_EQ(submit({"true"}).code(), 0);
  const Ran r = shmctl({"metrics", name()});
  ASSERT_EQ(r.code(), 0) << r;
  for (const char* want :
       {"shmsched_queue_depth{queue=\"general\",level=\"0\"} 3\n",
        "shmsched_queue_depth{queue=\"urgent\",level=\"0\"} 0\n",
        "shmsched_tasks_total{queue=\"general\",level=\"0\",outcome=\"enqueued\"} 3\n",
        "shmsched_tasks_total{queue=\"general\",level=\"0\",outcome=\"done\"} 0\n",
        "# TYPE shmsched_tasks_total counter\n", "# TYPE shmsched_queue_depth gauge\n",
        "shmsched_semaphore_capacity{semaphore=\"gpu\"} 3\n", "shmsched_semaphore_in_use{semaphore=\"gpu\"} 0\n",
        "shmsched_participants{alive=\"true\"} 0\n", "shmsched_delayed 0\n", "shmsched_dead_letters 0\n",
        "shmsched_running 0\n"})
    EXPECT_TRUE(contains(r.out, want)) << want << "\n" << r;
  // Every sample is NAME{labels} VALUE, and its family was announced with HELP and TYPE.
  const std::regex sample(R"(^([a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$)");
  std::set<std::string> helped, typed;
  std::istringstream in(r.out);
  int samples = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# HELP ", 0) == 0) {
      helped.insert(line.substr(7, line.find(' ', 7) - 7));
    } else if (line.rfind("# TYPE ", 0) == 0) {
      typed.insert(line.substr(7, line.find(' ', 7) - 7));
    } else {
      std::smatch m;
      ASSERT_TRUE(std::regex_match(line, m, sample)) << "bad line: " << line;
      EXPECT_TRUE(helped.count(m[1]) && typed.count(m[1])) << "no HELP/TYPE before " << line;
      ++samples;
    }
  }
  EXPECT_GT(samples, 20);
  const Ran labelled = shmctl({"metrics", name(), "--segment-label"});
  EXPECT_TRUE(contains(labelled.out, "shmsched_running{segment=\"" + name() + "\"} 0\n")) << labelled;
}

TEST_F(Shmctl, LsListsSegmentsAndTheOnesThatDoNotOpen) {
  create();
  ASSERT_EQ(submit({"true"}).code(), 0);
  NameGuard foreign(unique_name("shmctl-junk"));
  const std::vector<char> junk(8192, 'x');
  ASSERT_TRUE(write_new_file(foreign.path(), junk.data(), junk.size()));

  const Ran r = shmctl({"ls"});
  ASSERT_EQ(r.code(), 0) << r;
  EXPECT_TRUE(contains(r.out, name())) << r;
  EXPECT_TRUE(contains(r.out, foreign.name())) << r;
  const Ran j = shmctl({"ls", "--json"});
  ASSERT_EQ(j.code(), 0) << j;
  bool saw_ours = false, saw_junk = false;
  for (const auto& e : parse_json(j)) {
    if (e["name"] == name()) {
      saw_ours = true;
      EXPECT_EQ(e["ok"], true);
      EXPECT_EQ(e["depth"], 1);
      EXPECT_EQ(e["queues"], 2);
    } else if (e["name"] == foreign.name()) {
      saw_junk = true;
      EXPECT_EQ(e["ok"], false);
      EXPECT_TRUE(contains(e["error"].get<std::string>(), "not a shmsched segment")) << e.dump();
    }
  }
  EXPECT_TRUE(saw_ours && saw_junk) << j;
}

TEST_F(Shmctl, DestroyRefusesWhileConsumersLiveUnlessForced) {
  create();
  const pid_t worker = start_worker();
  const Ran refused = shmctl({"destroy", name()});
  EXPECT_EQ(refused.code(), 1) << refused;
  EXPECT_TRUE(contains(refused.err, std::to_string(worker))) << refused;
  EXPECT_TRUE(file_exists(seg_.path()));

  const Ran forced = shmctl({"destroy", name(), "--force"});
  EXPECT_EQ(forced.code(), 0) << forced;
  EXPECT_FALSE(file_exists(seg_.path()));
  EXPECT_TRUE(stop(worker).ok()) << log();  // it keeps its mapping and stops cleanly

  const Ran gone = shmctl({"destroy", name()});
  EXPECT_EQ(gone.code(), 1) << gone;
  EXPECT_TRUE(contains(gone.err, "no such segment")) << gone;

  // Without consumers it just goes.
  create();
  const Ran plain = shmctl({"destroy", name()});
  EXPECT_EQ(plain.code(), 0) << plain;
  EXPECT_FALSE(file_exists(seg_.path()));
}

// ---------------------------------------------------------------------------------
// Damaged and foreign objects: an error and exit 1 from every verb, never a crash or a
// hang, and the file is left as it was.

TEST_F(Shmctl, CorruptForeignAndUnfinishedSegmentsAreErrorsNotCrashes) {
  Layout small;
  small.levels = 2;
  small.task_capacity = 64;
  small.payload_bytes = 64;
  small.max_queues = 4;
  small.max_participants = 8;
  small.max_semaphores = 4;
  auto real = [&](const NameGuard& g) {
    CreateOptions co;
    co.queues = {"q"};
    auto s = Segment::create(g.name(), small, co);
    EXPECT_TRUE(s.ok()) << why(s);
    return s.ok() ? s->size_bytes() : 0;
  };
  using detail::SegmentHeader;
  struct Case {
    const char* what;
    std::function<void(const NameGuard&)> make;
  };
  const pid_t gone = dead_pid();
  const std::vector<Case> cases = {
      {"foreign bytes",
       [](const NameGuard& g) {
         std::vector<char> junk(8192);
         for (std::size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>(splitmix64(i));
         ASSERT_TRUE(write_new_file(g.path(), junk.data(), junk.size()));
       }},
      {"tiny foreign file", [](const NameGuard& g) { ASSERT_TRUE(write_new_file(g.path(), "hello", 5)); }},
      {"empty object", [](const NameGuard& g) { ASSERT_TRUE(write_new_file(g.path(), "", 0)); }},
      {"truncated",
       [&](const NameGuard& g) {
         const std::size_t full = real(g);
         ASSERT_EQ(::truncate(g.path().c_str(), static_cast<off_t>(full / 2)), 0);
       }},
      {"other ABI version",
       [&](const NameGuard& g) {
         real(g);
         ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, abi_version), detail::kAbiVersion + 1));
       }},
      {"corrupt header",
       [&](const NameGuard& g) {
         real(g);
         ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, layout_hash), std::uint64_t{0x1234}));
       }},
      {"creator died half-way",
       [&](const NameGuard& g) {
         real(g);
         ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, init_state),
                                 static_cast<std::uint32_t>(detail::InitState::initializing)));
         ASSERT_TRUE(patch_value(g.path(), offsetof(SegmentHeader, creator_pid), std::int32_t{gone}));
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    NameGuard g(unique_name("shmctl-bad"));
    c.make(g);
    const FileSnapshot before = snapshot(g.path());
    ASSERT_TRUE(before.exists);
    const std::string n = g.name();
    const std::vector<std::vector<std::string>> verbs = {
        {"stat", n},
        {"stat", n, "--json"},
        {"metrics", n},
        {"top", n, "--iterations", "1"},
        {"queue", n, "list"},
        {"queue", n, "add", "extra"},
        {"queue", n, "pause", "q"},
        {"sem", n, "list"},
        {"sem", n, "set", "s", "1"},
        {"dlq", n, "list"},
        {"dlq", n, "purge"},
        {"recover", n},
        {"wait", n, "--timeout", "100ms"},
        {"submit", n, "--queue", "q", "--", "true"},
        {"worker", n, "--home", "q"},
        {"destroy", n},
    };
    for (auto args : verbs) {
      SCOPED_TRACE(args[0]);
      args.insert(args.begin(), {"--open-timeout", "100ms"});
      const Ran r = shmctl(args, {}, 10s);
      EXPECT_EQ(r.code(), 1) << r;
      EXPECT_TRUE(contains(r.err, "shmctl: ")) << r;
      EXPECT_FALSE(r.status.signaled) << r;
    }
    EXPECT_TRUE(snapshot(g.path()) == before) << "a refused verb changed the file";

    const Ran ls = shmctl({"ls", "--json", "--timeout", "100ms"});
    ASSERT_EQ(ls.code(), 0) << ls;
    bool listed = false;
    for (const auto& e : parse_json(ls))
      if (e["name"] == n) listed = e["ok"] == false && !e["error"].get<std::string>().empty();
    EXPECT_TRUE(listed) << ls;

    const Ran forced = shmctl({"--open-timeout", "100ms", "destroy", n, "--force"});
    EXPECT_EQ(forced.code(), 0) << forced;
    EXPECT_FALSE(file_exists(g.path()));
  }
}

// ---------------------------------------------------------------------------------
// submit + worker

TEST_F(Shmctl, SubmitAndWorkerRunAThousandCommandsExactlyOnce) {
  create();
  // One task first, to check the printed id is the one the command sees.
  const std::string one = path("one");
  const Ran single = submit({"sh", "-c", "echo $SHMSCHED_TASK_ID > " + one});
  ASSERT_EQ(single.code(), 0) << single;
  const std::string id = single.out.substr(0, single.out.find('\n'));
  ASSERT_FALSE(id.empty());

  constexpr int kTasks = 1000;
  const std::string out = path("ran");
  std::string input;
  for (int i = 0; i < kTasks; ++i) input += "echo \"$SHMSCHED_TASK_ID " + std::to_string(i) + "\" >> " + out + "\n";
  input += "\n   \n";  // blank lines are skipped
  const Ran bulk = shmctl({"submit", name(), "--queue", "general", "--stdin"}, input);
  ASSERT_EQ(bulk.code(), 0) << bulk;
  EXPECT_EQ(split_lines(bulk.out).size(), static_cast<std::size_t>(kTasks));

  // Take-ahead on: a take claims up to 8 commands, and the four workers run them.
  const pid_t worker = start_worker({"--workers", "4", "--take-ahead", "8"});
  const Ran w = wait_drained({"--timeout", "45s", "--progress"});
  ASSERT_EQ(w.code(), 0) << w << log();
  EXPECT_TRUE(contains(w.out, "drained")) << w;
  const ExitStatus st = stop(worker);
  EXPECT_TRUE(st.ok()) << describe(st) << "\n" << log();
  EXPECT_TRUE(contains(log(), "stopped: done " + std::to_string(kTasks + 1))) << log();
  EXPECT_TRUE(contains(log(), "take-ahead 8")) << log();

  ASSERT_EQ(lines_of(one), std::vector<std::string>{id});
  std::map<int, int> runs;
  std::set<std::string> ids;
  for (const auto& line : lines_of(out)) {
    std::istringstream in(line);
    std::string task;
    int i = -1;
    in >> task >> i;
    ASSERT_TRUE(i >= 0 && i < kTasks) << line;
    ++runs[i];
    ids.insert(task);
  }
  EXPECT_EQ(runs.size(), static_cast<std::size_t>(kTasks));
  for (const auto& [i, n] : runs) EXPECT_EQ(n, 1) << "command " << i << " ran " << n << " times";
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kTasks)) << "every task has its own id";

  const json s = stat();
  EXPECT_EQ(total(s, "general", "enqueued"), kTasks + 1u);
  EXPECT_EQ(total(s, "general", "done"), kTasks + 1u);
  EXPECT_EQ(total(s, "general", "failed"), 0u);
  EXPECT_EQ(s["running"], 0);
  EXPECT_EQ(s["queued"], 0);
}

TEST_F(Shmctl, ExitSeventyFiveRetriesWithTheNextAttempt) {
  create();
  const std::string out = path("attempts");
  const Ran r = submit({"sh", "-c", "echo $SHMSCHED_ATTEMPT >> " + out + "; [ $SHMSCHED_ATTEMPT -ge 3 ] || exit 75"},
                       {"--retries", "4", "--retry-delay", "20ms"});
  ASSERT_EQ(r.code(), 0) << r;
  const pid_t worker = start_worker();
  ASSERT_EQ(wait_drained().code(), 0) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{"1", "2", "3"}));
  const json s = stat();
  EXPECT_EQ(total(s, "general", "retried"), 2u);
  EXPECT_EQ(total(s, "general", "failed"), 0u) << "a retry request is not a failure";
  EXPECT_EQ(total(s, "general", "done"), 1u);
  EXPECT_EQ(s["dead_letters"], 0);
}

TEST_F(Shmctl, TooLongCommandIsAClearError) {
  create({"--payload", "64"});
  const Ran r = submit({"echo", std::string(100, 'x')});
  EXPECT_EQ(r.code(), 1) << r;
  EXPECT_TRUE(contains(r.err, "64 bytes")) << r;
  const Ran fits = submit({"echo", std::string(40, 'x')});
  EXPECT_EQ(fits.code(), 0) << fits;
  const Ran unknown = shmctl({"submit", name(), "--queue", "nope", "--", "true"});
  EXPECT_EQ(unknown.code(), 1) << unknown;
  EXPECT_TRUE(contains(unknown.err, "nope")) << unknown;
}

TEST_F(Shmctl, SemaphoreNeedsLimitHowManyCommandsRunAtOnce) {
  create();
  ASSERT_EQ(shmctl({"sem", name(), "set", "lock", "1"}).code(), 0);
  const Ran missing = submit({"true"}, {"--needs", "nosuch"});
  EXPECT_EQ(missing.code(), 1) << missing;
  const Ran too_many = submit({"true"}, {"--needs", "lock:2"});
  EXPECT_EQ(too_many.code(), 1) << too_many;
  // Each command holds a directory as a mutex: if two ran at once, mkdir would fail.
  const std::string lock = path("lockdir");
  for (int i = 0; i < 6; ++i) {
    const Ran r = submit({"sh", "-c", "mkdir " + lock + " || exit 3; sleep 0.05; rmdir " + lock},
                         {"--retries", "0", "--needs", "lock"});  // a list option right before "--"
    ASSERT_EQ(r.code(), 0) << r;
  }
  const pid_t worker = start_worker({"--workers", "3"});
  ASSERT_EQ(wait_drained().code(), 0) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  const json s = stat();
  EXPECT_EQ(total(s, "general", "done"), 6u) << log();
  EXPECT_EQ(total(s, "general", "failed"), 0u) << log();
  EXPECT_EQ(s["semaphores"][0]["in_use"], 0);

  // Resize: the existing semaphore gets the new capacity.
  const Ran grow = shmctl({"sem", name(), "set", "lock", "4"});
  EXPECT_EQ(grow.code(), 0) << grow;
  EXPECT_TRUE(contains(grow.out, "1 -> 4")) << grow;
  EXPECT_EQ(stat()["semaphores"][0]["capacity"], 4);
  const Ran list = shmctl({"sem", name(), "list"});
  EXPECT_EQ(list.code(), 0) << list;
  EXPECT_TRUE(contains(list.out, "lock")) << list;
}

TEST_F(Shmctl, WorkerHelpsWithHelpQueuesOnlyWhenIdle) {
  create();
  const std::string out = path("helped");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(submit({"sh", "-c", "echo $SHMSCHED_QUEUE >> " + out}).code(), 0);
  const pid_t worker = start({"worker", name(), "--home", "urgent", "--help-with", "general", "--workers", "2"});
  ASSERT_EQ(wait_drained({"--timeout", "10s"}).code(), 0) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{"general", "general", "general"}));
  const json s = stat();
  EXPECT_EQ(total(s, "general", "helped"), 3u);
  EXPECT_EQ(total(s, "general", "done"), 3u);
}

TEST_F(Shmctl, StoppedWorkerLetsCommandsFinishWithinTheGrace) {
  create();
  const std::string done = path("finished");
  ASSERT_EQ(submit({"sh", "-c", "sleep 0.5; touch " + done}).code(), 0);
  pid_t worker = start_worker({"--grace", "5s"});
  ASSERT_TRUE(eventually([&] { return stat().value("running", 0) == 1; })) << log();
  ExitStatus st = stop(worker);
  EXPECT_TRUE(st.ok()) << describe(st) << "\n" << log();
  EXPECT_TRUE(file_exists(done)) << "the running command was cut short\n" << log();
  EXPECT_EQ(total(stat(), "general", "done"), 1u);

  // One that would overrun the grace is stopped and handed back, not lost.
  ASSERT_EQ(submit({"sleep", "30"}).code(), 0);
  worker = start_worker({"--grace", "1s"});
  ASSERT_TRUE(eventually([&] { return stat().value("running", 0) == 1; })) << log();
  const auto t0 = std::chrono::steady_clock::now();
  st = stop(worker);
  EXPECT_TRUE(st.ok()) << describe(st) << "\n" << log();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  const json s = stat();
  EXPECT_EQ(s["running"], 0);
  EXPECT_EQ(s["queued"].get<int>() + s["delayed"].get<int>(), 1) << s.dump();
}

// ---------------------------------------------------------------------------------
// dlq, recover, wait, queue

TEST_F(Shmctl, DeadLettersCanBeListedRequeuedAndPurged) {
  create();
  const std::string marker = path("marker");
  const Ran a = submit({"test", "-e", marker}, {"--retries", "0"});
  const Ran b = submit({"false"}, {"--retries", "0"});
  ASSERT_EQ(a.code(), 0) << a;
  ASSERT_EQ(b.code(), 0) << b;
  const std::string id_a = a.out.substr(0, a.out.find('\n'));
  const std::string id_b = b.out.substr(0, b.out.find('\n'));
  const pid_t worker = start_worker();
  ASSERT_EQ(wait_drained().code(), 0) << log();

  const Ran list = shmctl({"dlq", name(), "list"});
  ASSERT_EQ(list.code(), 0) << list;
  EXPECT_TRUE(contains(list.out, id_a) && contains(list.out, id_b)) << list;
  EXPECT_TRUE(contains(list.out, "exit status 1")) << list;
  const json dead = parse_json(shmctl({"dlq", name(), "list", "--json"}));
  ASSERT_EQ(dead.size(), 2u) << dead.dump();
  for (const auto& d : dead) {
    EXPECT_EQ(d["type"], "shell");
    EXPECT_EQ(d["queue"], "general");
    EXPECT_EQ(d["attempts"], 1);
  }
  EXPECT_EQ(stat()["dead_letters"], 2);

  // Fix the cause, requeue that one: it runs and succeeds.
  { std::ofstream(marker) << "x"; }
  const Ran rq = shmctl({"dlq", name(), "requeue", id_a});
  EXPECT_EQ(rq.code(), 0) << rq;
  ASSERT_EQ(wait_drained().code(), 0) << log();
  const json left = parse_json(shmctl({"dlq", name(), "list", "--json"}));
  ASSERT_EQ(left.size(), 1u) << left.dump();
  EXPECT_EQ(std::to_string(left[0]["id"].get<std::uint64_t>()), id_b);
  EXPECT_EQ(total(stat(), "general", "done"), 1u);

  const Ran not_dead = shmctl({"dlq", name(), "requeue", id_a});
  EXPECT_EQ(not_dead.code(), 1) << not_dead;
  EXPECT_TRUE(contains(not_dead.err, "not a dead letter")) << not_dead;

  const Ran all = shmctl({"dlq", name(), "requeue", "--all"});
  EXPECT_EQ(all.code(), 0) << all;
  EXPECT_TRUE(contains(all.out, "requeued 1")) << all;
  ASSERT_EQ(wait_drained().code(), 0) << log();  // `false` fails again and is dead again
  EXPECT_TRUE(stop(worker).ok()) << log();

  const Ran purge = shmctl({"dlq", name(), "purge"});
  EXPECT_EQ(purge.code(), 0) << purge;
  EXPECT_TRUE(contains(purge.out, "purged 1")) << purge;
  const Ran empty = shmctl({"dlq", name(), "list"});
  EXPECT_TRUE(contains(empty.out, "no dead letters")) << empty;
  EXPECT_EQ(stat()["dead_letters"], 0);
}

TEST_F(Shmctl, StatusFollowsASubmittedTaskFromQueuedToRunningToItsEnd) {
  create();
  const std::string pidfile = path("child.pid");
  const Ran failing = submit({"false"}, {"--retries", "0"});  // first: one worker runs them in turn
  const Ran sleeper = submit({"sh", "-c", "echo $$ > " + pidfile + "; exec sleep 30"});
  ASSERT_EQ(sleeper.code(), 0) << sleeper;
  ASSERT_EQ(failing.code(), 0) << failing;
  const std::string id = sleeper.out.substr(0, sleeper.out.find('\n'));
  const std::string failed = failing.out.substr(0, failing.out.find('\n'));

  json s = parse_json(shmctl({"status", name(), id, "--json"}));
  EXPECT_EQ(s["status"], "queued") << s.dump();
  EXPECT_EQ(s["type"], "shell");
  EXPECT_EQ(s["queue"], "general");
  EXPECT_EQ(s["attempts"], 0);
  const Ran text = shmctl({"status", name(), id});
  EXPECT_EQ(text.code(), 0) << text;
  EXPECT_TRUE(contains(text.out, "task " + id + ": queued")) << text;

  const pid_t worker = start_worker();
  ASSERT_TRUE(eventually([&] { return lines_of(pidfile).size() == 1; })) << log();
  s = parse_json(shmctl({"status", name(), id, "--json"}));
  EXPECT_EQ(s["status"], "running") << s.dump();
  EXPECT_EQ(s["pid"], worker) << "the worker process runs it";
  EXPECT_EQ(s["attempts"], 1);
  s = parse_json(shmctl({"status", name(), failed, "--json"}));
  EXPECT_EQ(s["status"], "dead") << s.dump();
  EXPECT_TRUE(contains(s["last_error"].get<std::string>(), "exit status 1")) << s.dump();

  // Killed: the task still shows the dead worker until it is reaped, then waits again.
  EXPECT_TRUE(stop(worker, SIGKILL).signaled);
  ASSERT_EQ(shmctl({"recover", name()}).code(), 0);
  s = parse_json(shmctl({"status", name(), id, "--json"}));
  EXPECT_EQ(s["status"], "queued") << s.dump();
  EXPECT_EQ(s["pid"], 0) << s.dump();
  const Ran unknown = shmctl({"status", name(), "12345678"});
  EXPECT_EQ(unknown.code(), 0) << unknown;
  EXPECT_TRUE(contains(unknown.out, "unknown")) << unknown;
}

TEST_F(Shmctl, AKeptResultIsTheCommandsOutputAndIsReadOnce) {
  create({"--payload", "64"});
  const Ran quick = submit({"sh", "-c", "echo hello from $SHMSCHED_TASK_ID"}, {"--keep-result"});
  const Ran chatty = submit({"seq", "1", "1000"}, {"--keep-result"});
  const Ran slow = submit({"sh", "-c", "sleep 0.5; echo slow"}, {"--keep-result"});
  const Ran failing = submit({"sh", "-c", "echo partial; exit 3"}, {"--keep-result", "--retries", "0"});
  const Ran plain = submit({"echo", "not kept"});
  for (const Ran* r : {&quick, &chatty, &slow, &failing, &plain}) ASSERT_EQ(r->code(), 0) << *r;
  auto id_of = [](const Ran& r) { return r.out.substr(0, r.out.find('\n')); };
  const Ran early = shmctl({"result", name(), id_of(quick)});
  EXPECT_EQ(early.code(), 1) << early;
  EXPECT_TRUE(contains(early.err, "has not finished")) << early;

  const pid_t worker = start_worker();
  const Ran waited = shmctl({"result", name(), id_of(slow), "--wait", "20s"});
  EXPECT_EQ(waited.code(), 0) << waited << log();
  EXPECT_EQ(waited.out, "slow\n");

  ASSERT_EQ(wait_drained().code(), 0) << log();
  json s = parse_json(shmctl({"status", name(), id_of(quick), "--json"}));
  EXPECT_EQ(s["status"], "done") << s.dump();
  EXPECT_EQ(s["keep_result"], true);
  const Ran first = shmctl({"result", name(), id_of(quick)});
  EXPECT_EQ(first.code(), 0) << first;
  EXPECT_EQ(first.out, "hello from " + id_of(quick) + "\n");
  const Ran second = shmctl({"result", name(), id_of(quick)});
  EXPECT_EQ(second.code(), 1) << "a result is read once: " << second;
  EXPECT_TRUE(contains(second.err, "holds no result")) << second;

  const json cut = parse_json(shmctl({"result", name(), id_of(chatty), "--json"}));
  const std::string value = cut["value"].get<std::string>();
  EXPECT_EQ(value.size(), 64u) << value;
  EXPECT_EQ(value.substr(0, 6), "1\n2\n3\n");
  EXPECT_EQ(value.substr(value.size() - 11), "[truncated]");

  const Ran failed = shmctl({"result", name(), id_of(failing)});
  EXPECT_EQ(failed.code(), 1) << failed;
  EXPECT_TRUE(contains(failed.err, "exit status 3")) << failed;
  EXPECT_EQ(shmctl({"result", name(), id_of(plain)}).code(), 1) << "a plain task keeps nothing";
  EXPECT_TRUE(stop(worker).ok()) << log();
}

TEST_F(Shmctl, CancelledTasksNeverRunAndARunningOneIsStopped) {
  create();
  const std::string pidfile = path("child.pid"), never = path("never"), after = path("after");
  const Ran running = submit({"sh", "-c", "echo $$ > " + pidfile + "; exec sleep 30"});
  const Ran waiting = submit({"touch", never});
  const Ran later = submit({"touch", after});
  for (const Ran* r : {&running, &waiting, &later}) ASSERT_EQ(r->code(), 0) << *r;
  auto id_of = [](const Ran& r) { return r.out.substr(0, r.out.find('\n')); };
  const Ran c1 = shmctl({"cancel", name(), id_of(waiting)});
  EXPECT_EQ(c1.code(), 0) << c1;
  EXPECT_TRUE(contains(c1.out, "cancelled task " + id_of(waiting))) << c1;

  const pid_t worker = start_worker();
  ASSERT_TRUE(eventually([&] { return lines_of(pidfile).size() == 1; })) << log();
  const pid_t child = std::stoi(lines_of(pidfile)[0]);
  const Ran c2 = shmctl({"cancel", name(), id_of(running)});
  EXPECT_EQ(c2.code(), 0) << c2;
  EXPECT_TRUE(contains(c2.out, "is running: asked it to stop")) << c2;
  EXPECT_TRUE(eventually([&] { return process_gone(child); }, 5s)) << "the cancelled command still runs";
  ASSERT_EQ(wait_drained().code(), 0) << log();
  EXPECT_TRUE(fs::exists(after)) << "the task after the cancelled ones runs";
  EXPECT_FALSE(fs::exists(never)) << "a cancelled task ran";
  EXPECT_EQ(parse_json(shmctl({"status", name(), id_of(running), "--json"}))["status"], "unknown")
      << "a cancelled running task is not retried";
  EXPECT_EQ(stat()["dead_letters"], 0);
  const Ran gone = shmctl({"cancel", name(), id_of(running)});
  EXPECT_EQ(gone.code(), 1) << gone;
  EXPECT_TRUE(stop(worker).ok()) << log();

  for (int i = 0; i < 3; ++i) ASSERT_EQ(submit({"true"}).code(), 0);
  const Ran purge = shmctl({"cancel", name(), "--queue", "general"});
  EXPECT_EQ(purge.code(), 0) << purge;
  EXPECT_TRUE(contains(purge.out, "cancelled 3 waiting")) << purge;
  EXPECT_EQ(stat()["queued"], 0);
}

// A wall-clock time in UTC, `ahead` from now: "YYYY-MM-DDTHH:MM:SS" + `zone`.
std::string utc_in(std::chrono::seconds ahead, const std::string& zone = "Z") {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() + ahead);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf + zone;
}

TEST_F(Shmctl, SubmitAtAWallClockTimeAndWithAnExpiry) {
  create();
  auto id_of = [](const Ran& r) { return r.out.substr(0, r.out.find('\n')); };
  const Ran at = submit({"true"}, {"--at", utc_in(std::chrono::hours(1))});
  ASSERT_EQ(at.code(), 0) << at;
  json s = parse_json(shmctl({"status", name(), id_of(at), "--json"}));
  EXPECT_EQ(s["status"], "delayed") << s.dump();
  const double due_s = s["due_in_ns"].get<double>() * 1e-9;
  EXPECT_GT(due_s, 3590);
  EXPECT_LT(due_s, 3601);
  // The same moment written with an offset: two hours ahead of UTC means 1 h from now.
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() + std::chrono::hours(3));
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+02:00", &tm);
  const Ran offset = submit({"true"}, {"--at", buf});
  ASSERT_EQ(offset.code(), 0) << offset;
  const double due_offset = parse_json(shmctl({"status", name(), id_of(offset), "--json"}))["due_in_ns"].get<double>();
  EXPECT_NEAR(due_offset * 1e-9, 3600, 10);
  const Ran past = submit({"true"}, {"--at", utc_in(-std::chrono::hours(1))});
  EXPECT_EQ(parse_json(shmctl({"status", name(), id_of(past), "--json"}))["status"], "queued")
      << "a past time runs now";

  const Ran expiring = submit({"true"}, {"--expires", "1ms"});
  ASSERT_EQ(expiring.code(), 0) << expiring;
  std::this_thread::sleep_for(20ms);
  const pid_t worker = start_worker();
  ASSERT_TRUE(eventually([&] {
    return parse_json(shmctl({"status", name(), id_of(expiring), "--json"}))["status"] == "dead";
  })) << log();
  EXPECT_EQ(parse_json(shmctl({"status", name(), id_of(expiring), "--json"}))["last_error"],
            "expired before it started");
  EXPECT_TRUE(stop(worker).ok()) << log();
}

TEST_F(Shmctl, PriorityMovesAWaitingTask) {
  create();
  auto id_of = [](const Ran& r) { return r.out.substr(0, r.out.find('\n')); };
  const Ran r = submit({"true"}, {"--priority", "3"});
  const Ran p = shmctl({"priority", name(), id_of(r), "1"});
  EXPECT_EQ(p.code(), 0) << p;
  EXPECT_EQ(parse_json(shmctl({"status", name(), id_of(r), "--json"}))["priority"], 1);
  const Ran unknown = shmctl({"priority", name(), "12345", "0"});
  EXPECT_EQ(unknown.code(), 1) << unknown;
}

// A chord from the command line: members in a group, a last step after it, the group
// sealed; wait shows the progress and exits 0 once every member was done.
TEST_F(Shmctl, AGroupRunsItsMembersThenItsLastStep) {
  create();
  const Ran made = shmctl({"group", name(), "create", "batch"});
  ASSERT_EQ(made.code(), 0) << made;
  EXPECT_EQ(shmctl({"group", name(), "create", "batch"}).code(), 1) << "a name is one group's";
  const std::string out = path("members"), last = path("last");
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(submit({"sh", "-c", "echo " + std::to_string(i) + " >> " + out}, {"--group", "batch"}).code(), 0);
  const Ran then = submit({"sh", "-c", "wc -l < " + out + " > " + last}, {"--then-group", "batch"});
  ASSERT_EQ(then.code(), 0) << then;
  const std::string then_id = then.out.substr(0, then.out.find('\n'));
  EXPECT_EQ(parse_json(shmctl({"status", name(), then_id, "--json"}))["status"], "waiting");
  json g = parse_json(shmctl({"group", name(), "show", "batch", "--json"}));
  EXPECT_EQ(g["state"], "open");
  EXPECT_EQ(g["total"], 5);
  EXPECT_EQ(g["dependents"], 1);
  const Ran list = shmctl({"group", name(), "list"});
  EXPECT_TRUE(contains(list.out, "batch")) << list;
  const json st = stat();
  EXPECT_EQ(st["waiting"], 1);
  ASSERT_EQ(st["groups"].size(), 1u);
  EXPECT_EQ(st["groups"][0]["name"], "batch");
  const Ran metrics = shmctl({"metrics", name()});
  EXPECT_TRUE(contains(metrics.out, "shmsched_group_members{group=\"batch\",state=\"outstanding\"} 5")) << metrics;
  EXPECT_TRUE(contains(metrics.out, "shmsched_waiting 1")) << metrics;

  const pid_t worker = start_worker();
  const Ran early = shmctl({"group", name(), "wait", "batch", "--timeout", "300ms"});
  EXPECT_EQ(early.code(), 1) << "not sealed: it may still grow " << early;
  ASSERT_EQ(shmctl({"group", name(), "seal", "batch"}).code(), 0);
  EXPECT_EQ(submit({"true"}, {"--group", "batch"}).code(), 1) << "a sealed group takes no member";
  const Ran waited = shmctl({"group", name(), "wait", "batch", "--progress", "--every", "10ms", "--timeout", "20s"});
  EXPECT_EQ(waited.code(), 0) << waited;
  EXPECT_TRUE(contains(waited.out, "5/5 (5 done, 0 failed, 0 cancelled) finished")) << waited;
  ASSERT_TRUE(eventually([&] { return lines_of(last).size() == 1; })) << log();
  EXPECT_EQ(lines_of(last)[0], "5") << "the last step ran after every member";
  EXPECT_EQ(lines_of(out).size(), 5u);
  EXPECT_TRUE(stop(worker).ok()) << log();
  EXPECT_EQ(shmctl({"group", name(), "delete", "batch"}).code(), 0);
  EXPECT_EQ(shmctl({"group", name(), "show", "batch"}).code(), 1);
}

// A member that fails for good: the group finishes with a failure, wait exits 1, and the
// step after it is cancelled with the reason (unless --run-anyway).
TEST_F(Shmctl, AGroupWithAFailedMemberCancelsItsLastStep) {
  create();
  ASSERT_EQ(shmctl({"group", name(), "create", "b"}).code(), 0);
  ASSERT_EQ(submit({"false"}, {"--group", "b", "--retries", "0"}).code(), 0);
  const Ran then = submit({"true"}, {"--then-group", "b", "--keep-result"});
  const Ran anyway = submit({"true"}, {"--then-group", "b", "--run-anyway", "--keep-result"});
  ASSERT_EQ(shmctl({"group", name(), "seal", "b"}).code(), 0);
  const pid_t worker = start_worker();
  const Ran waited = shmctl({"group", name(), "wait", "b", "--timeout", "20s"});
  EXPECT_EQ(waited.code(), 1) << waited;
  EXPECT_TRUE(contains(waited.out, "1 failed")) << waited;
  auto id_of = [](const Ran& r) { return r.out.substr(0, r.out.find('\n')); };
  ASSERT_TRUE(eventually([&] {
    return parse_json(shmctl({"status", name(), id_of(anyway), "--json"}))["status"] == "done";
  })) << log();
  json s = parse_json(shmctl({"status", name(), id_of(then), "--json"}));
  EXPECT_EQ(s["status"], "cancelled");
  EXPECT_TRUE(contains(s["last_error"].get<std::string>(), "1 failed")) << s.dump();
  EXPECT_TRUE(stop(worker).ok()) << log();
  EXPECT_EQ(shmctl({"submit", name(), "--queue", "general", "--run-anyway", "--", "true"}).code(), 2);
}

// --after: a chain of commands runs in order; a step after a failed one is cancelled with
// the reason; a parent submitted without --keep-result is refused with the fix.
TEST_F(Shmctl, SubmitAfterRunsAChainInOrder) {
  create();
  auto id_of = [](const Ran& r) { return r.out.substr(0, r.out.find('\n')); };
  const std::string out = path("chain");
  std::string prev;
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    std::vector<std::string> extra{"--keep-result"};
    if (!prev.empty()) extra.insert(extra.end(), {"--after", prev});
    const Ran r = submit({"sh", "-c", "echo " + std::to_string(i) + " >> " + out}, extra);
    ASSERT_EQ(r.code(), 0) << r;
    prev = id_of(r);
    ids.push_back(prev);
  }
  const json s = parse_json(shmctl({"status", name(), ids[1], "--json"}));
  EXPECT_EQ(s["status"], "waiting");
  EXPECT_EQ(std::to_string(s["waits_for_task"].get<std::uint64_t>()), ids[0]);
  const Ran failing = submit({"false"}, {"--keep-result", "--retries", "0", "--after", ids[3]});
  const Ran after_failing = submit({"true"}, {"--keep-result", "--after", id_of(failing)});
  const Ran plain = submit({"true"});
  const Ran refused = submit({"true"}, {"--after", id_of(plain)});
  EXPECT_EQ(refused.code(), 1) << refused;
  EXPECT_TRUE(contains(refused.err, "--keep-result")) << refused;
  EXPECT_EQ(submit({"true"}, {"--after", "1,2"}).code(), 2) << "one parent: several make a group";

  const pid_t worker = start_worker();
  ASSERT_TRUE(eventually([&] {
    return parse_json(shmctl({"status", name(), id_of(after_failing), "--json"}))["status"] == "cancelled";
  })) << log();
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{"0", "1", "2", "3"})) << "in order, each once";
  const json cancelled = parse_json(shmctl({"status", name(), id_of(after_failing), "--json"}));
  EXPECT_EQ(cancelled["last_error"], "its parent task failed");
  EXPECT_TRUE(stop(worker).ok()) << log();
}

TEST_F(Shmctl, RecoverRequeuesTheTasksOfAKilledWorker) {
  create();
  const std::string pidfile = path("child.pid");
  ASSERT_EQ(submit({"sh", "-c", "echo $$ > " + pidfile + "; exec sleep 30"}).code(), 0);
  const pid_t worker = start_worker();
  ASSERT_TRUE(eventually([&] { return lines_of(pidfile).size() == 1; })) << log();
  const pid_t child = std::stoi(lines_of(pidfile)[0]);
  ASSERT_EQ(stat()["running"], 1);

  const ExitStatus st = stop(worker, SIGKILL);
  EXPECT_TRUE(st.signaled);
  // The command dies with its worker (PR_SET_PDEATHSIG), so nothing runs twice at once.
  EXPECT_TRUE(eventually([&] { return process_gone(child); }, 5s)) << "command " << child << " outlived its worker";

  json s = stat();
  ASSERT_EQ(s["participants"].size(), 1u);
  EXPECT_EQ(s["participants"][0]["alive"], false);
  const Ran r = shmctl({"recover", name()});
  ASSERT_EQ(r.code(), 0) << r;
  EXPECT_TRUE(contains(r.out, "reaped 1 dead participant")) << r;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(requeued \(were running\)\s+1)"))) << r;
  s = stat();
  EXPECT_EQ(s["running"], 0);
  EXPECT_EQ(s["queued"], 1);
  EXPECT_TRUE(s["participants"].empty());
  const Ran again = shmctl({"recover", name()});
  EXPECT_EQ(again.code(), 0) << again;
  EXPECT_TRUE(contains(again.out, "reaped 0")) << again;
}

TEST_F(Shmctl, WaitReturnsWhenDrainedAndFailsOnTimeout) {
  create();
  const Ran idle = wait_drained({"--timeout", "5s"});
  EXPECT_EQ(idle.code(), 0) << idle;

  ASSERT_EQ(submit({"true"}).code(), 0);
  auto t0 = std::chrono::steady_clock::now();
  const Ran timeout = wait_drained({"--timeout", "300ms"});
  EXPECT_EQ(timeout.code(), 1) << timeout;
  EXPECT_TRUE(contains(timeout.err, "timed out")) << timeout;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  // Per queue: the other queue is drained, this one is not.
  EXPECT_EQ(wait_drained({"--queue", "urgent", "--timeout", "2s"}).code(), 0);
  EXPECT_EQ(wait_drained({"--queue", "general", "--timeout", "200ms"}).code(), 1);
  EXPECT_EQ(wait_drained({"--queue", "nosuch", "--timeout", "200ms"}).code(), 1);

  const pid_t worker = start_worker();
  const Ran drained = wait_drained({"--queue", "general", "--timeout", "10s"});
  EXPECT_EQ(drained.code(), 0) << drained << log();
  EXPECT_EQ(wait_drained({"--timeout", "10s"}).code(), 0);
  EXPECT_TRUE(stop(worker).ok()) << log();

  // A delayed task is not drained.
  ASSERT_EQ(submit({"true"}, {"--delay", "1h"}).code(), 0);
  t0 = std::chrono::steady_clock::now();
  const Ran delayed = wait_drained({"--timeout", "200ms", "--progress"});
  EXPECT_EQ(delayed.code(), 1) << delayed;
  EXPECT_TRUE(contains(delayed.err, "delayed 1")) << delayed;
  EXPECT_TRUE(contains(delayed.err, "left")) << "progress lines on a non-terminal\n" << delayed;
  EXPECT_EQ(wait_drained({"--queue", "general", "--timeout", "200ms"}).code(), 1);
}

TEST_F(Shmctl, QueuesCanBeAddedPausedAndResumed) {
  create();
  const Ran add = shmctl({"queue", name(), "add", "bulk"});
  EXPECT_EQ(add.code(), 0) << add;
  EXPECT_TRUE(contains(add.out, "created")) << add;
  const Ran again = shmctl({"queue", name(), "add", "bulk"});
  EXPECT_EQ(again.code(), 0) << again;
  EXPECT_TRUE(contains(again.out, "already exists")) << again;
  EXPECT_EQ(shmctl({"queue", name(), "pause", "nosuch"}).code(), 1);
  EXPECT_EQ(shmctl({"queue", name(), "add", "bad/name"}).code(), 1);

  ASSERT_EQ(shmctl({"queue", name(), "pause", "bulk"}).code(), 0);
  EXPECT_EQ((*queue(stat(), "bulk"))["paused"], true);
  const std::string out = path("bulk-ran");
  ASSERT_EQ(shmctl({"submit", name(), "--queue", "bulk", "--", "touch", out}).code(), 0);
  const pid_t worker = start({"worker", name(), "--home", "bulk"});
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(wait_drained({"--queue", "bulk", "--timeout", "200ms"}).code(), 1);
  EXPECT_FALSE(file_exists(out)) << "a paused queue was taken from";

  ASSERT_EQ(shmctl({"queue", name(), "resume", "bulk"}).code(), 0);
  EXPECT_EQ(wait_drained({"--queue", "bulk", "--timeout", "10s"}).code(), 0) << log();
  EXPECT_TRUE(file_exists(out));
  EXPECT_TRUE(stop(worker).ok()) << log();
  const Ran list = shmctl({"queue", name(), "list"});
  EXPECT_EQ(list.code(), 0) << list;
  EXPECT_TRUE(contains(list.out, "bulk") && contains(list.out, "active")) << list;
}

// ---------------------------------------------------------------------------------
// top

TEST_F(Shmctl, TopPrintsPlainSnapshotsWhenNotOnATerminal) {
  create({"--semaphores", "gpu:2"});
  for (int i = 0; i < 3; ++i) ASSERT_EQ(submit({"true"}).code(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  const Ran r = shmctl({"top", name(), "--iterations", "3", "--interval", "100ms"}, {}, 10s);
  ASSERT_EQ(r.code(), 0) << r;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "escape codes on a non-terminal";
  std::size_t frames = 0;
  for (std::size_t pos = 0; (pos = r.out.find("shmctl top", pos)) != std::string::npos; ++pos) ++frames;
  EXPECT_EQ(frames, 3u) << r;
  EXPECT_TRUE(contains(r.out, "general")) << r;
  EXPECT_TRUE(contains(r.out, "gpu")) << r;
  EXPECT_TRUE(contains(r.out, "queued 3")) << r;
}

TEST_F(Shmctl, TopRendersFullScreenUnderTmuxAndQuitsOnQ) {
  if (std::system("command -v tmux >/dev/null 2>&1") != 0) {
    // Without tmux there is no terminal to test on: check the plain fallback instead
    // (CI lists tmux in tools/bootstrap.sh for this test).
    create();
    const Ran r = shmctl({"top", name(), "--iterations", "1"}, {}, 10s);
    EXPECT_EQ(r.code(), 0) << r;
    EXPECT_TRUE(contains(r.out, "shmctl top")) << r;
    return;
  }
  create({"--semaphores", "gpu:2"});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(submit({"true"}).code(), 0);
  const std::string sock = "shmctl-test-" + std::to_string(::getpid()) + "-" + name();
  const std::string status_file = path("top.status");
  const std::string tmux = "tmux -L '" + sock + "' ";
  struct Server {
    std::string cmd;
    ~Server() { (void)std::system((cmd + "kill-server >/dev/null 2>&1").c_str()); }
  } server{tmux};
  const std::string inner = std::string(SHMCTL_BIN) + " top " + name() + "; echo \\$? > " + status_file;
  ASSERT_EQ(std::system((tmux + "new-session -d -s top -x 120 -y 40 \"" + inner + "\"").c_str()), 0);
  auto capture = [&] {
    std::string screen;
    if (FILE* p = ::popen((tmux + "capture-pane -p -t top 2>/dev/null").c_str(), "r")) {
      char buf[4096];
      for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) screen.append(buf, n);
      ::pclose(p);
    }
    return screen;
  };
  std::string screen;
  // Two frames: the second shows rates.
  EXPECT_TRUE(eventually(
      [&] {
        screen = capture();
        return contains(screen, "(q quits)") && contains(screen, "0.0");
      },
      8s))
      << screen;
  EXPECT_TRUE(contains(screen, "segment " + name())) << screen;
  EXPECT_TRUE(contains(screen, "general")) << screen;
  EXPECT_TRUE(contains(screen, "#####")) << "depth bar\n" << screen;
  EXPECT_TRUE(contains(screen, "gpu")) << screen;
  EXPECT_TRUE(contains(screen, "queued 5")) << screen;

  ASSERT_EQ(std::system((tmux + "send-keys -t top q").c_str()), 0);
  EXPECT_TRUE(eventually([&] { return lines_of(status_file) == std::vector<std::string>{"0"}; }, 5s))
      << "top did not quit on q\n"
      << capture();
}

// ---------------------------------------------------------------------------------
// worker: who may feed it, what it reports, how it starts commands

TEST_F(Shmctl, WorkerRefusesASegmentOthersMayWriteUnlessTrusted) {
  create({"--mode", "0660"});
  const Ran group = shmctl({"worker", name(), "--home", "general"}, {}, 10s);
  EXPECT_EQ(group.code(), 1) << group;
  EXPECT_TRUE(contains(group.err, "writable by its group")) << group;
  EXPECT_TRUE(contains(group.err, "--trust-group")) << group;
  EXPECT_TRUE(stat()["participants"].empty()) << "a refused worker attached";

  ASSERT_EQ(::chmod(seg_.path().c_str(), 0606), 0);
  const Ran others = shmctl({"worker", name(), "--home", "general", "--trust-group"}, {}, 10s);
  EXPECT_EQ(others.code(), 1) << others;
  EXPECT_TRUE(contains(others.err, "writable by other users")) << others;
  EXPECT_TRUE(contains(others.err, "--trust-others")) << others;

  ASSERT_EQ(::chmod(seg_.path().c_str(), 0666), 0);
  const pid_t worker = start_worker({"--trust-group", "--trust-others"});
  EXPECT_TRUE(stop(worker).ok()) << log();

  ASSERT_EQ(::chmod(seg_.path().c_str(), 0640), 0);  // readable is fine
  const pid_t again = start_worker();
  EXPECT_TRUE(stop(again).ok()) << log();
}

// A segment another user owns (and so can write) is refused too: a root worker would
// run that user's commands as root. Needs root to give the segment away.
TEST_F(Shmctl, WorkerRefusesASegmentAnotherUserOwnsUnlessTrusted) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a segment to another user needs root";
  create();
  ASSERT_EQ(::chown(seg_.path().c_str(), 65534, 65534), 0) << std::strerror(errno);
  const Ran refused = shmctl({"worker", name(), "--home", "general"}, {}, 10s);
  EXPECT_EQ(refused.code(), 1) << refused;
  EXPECT_TRUE(contains(refused.err, "belongs to uid 65534")) << refused;
  EXPECT_TRUE(contains(refused.err, "--trust-owner")) << refused;
  EXPECT_TRUE(stat()["participants"].empty()) << "a refused worker attached";
  const pid_t worker = start_worker({"--trust-owner"});
  EXPECT_TRUE(stop(worker).ok()) << log();
}

TEST_F(Shmctl, StatShowsAConsumerWhoseWorkersAllSleepAsIdle) {
  create();
  const pid_t worker = start_worker({"--workers", "2"});
  auto me = [&](const json& s) -> json {
    for (const auto& p : s.value("participants", json::array()))
      if (p["pid"] == worker) return p;
    return json::object();
  };
  ASSERT_TRUE(eventually([&] {
    const json p = me(stat());
    return p.value("workers", 0) == 2 && p.value("sleepers", 0) == 2;
  })) << stat().dump();
  EXPECT_EQ(me(stat())["activity"], "idle") << stat().dump();
  const Ran text = shmctl({"stat", name()});
  EXPECT_TRUE(
      std::regex_search(text.out, std::regex(std::to_string(worker) + R"( +consumer[^\n]* +active +yes +idle )")))
      << text;

  ASSERT_EQ(submit({"sleep", "3"}).code(), 0);
  EXPECT_TRUE(eventually([&] { return me(stat()).value("activity", "") == "busy"; })) << stat().dump();
  EXPECT_TRUE(stop(worker, SIGKILL).signaled);
}

TEST_F(Shmctl, WorkerLogShowsTheRetryDelayNotTheRunTime) {
  create();
  const std::string once = path("once");
  ASSERT_EQ(submit({"sh", "-c", "[ -e " + once + " ] || { touch " + once + "; exit 75; }"},
                   {"--retries", "1", "--retry-delay", "700ms"})
                .code(),
            0);
  ASSERT_EQ(submit({"false"}, {"--retries", "1", "--retry-delay", "300ms"}).code(), 0);
  const pid_t worker = start_worker();
  ASSERT_EQ(wait_drained().code(), 0) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  const std::string l = log();
  // 700ms plus up to 10 % jitter, drawn by the worker so the log is exact.
  EXPECT_TRUE(std::regex_search(
      l, std::regex(R"(exit status 75 \(temporary failure\); will retry in 7[0-7][0-9]ms \(ran [0-9.]+m?s\))")))
      << l;
  EXPECT_TRUE(contains(l, "exit status 1; will retry in 300ms (+ up to 10% jitter) (ran ")) << l;
  EXPECT_TRUE(contains(l, "exit status 1; out of attempts: dead-lettered (ran ")) << l;
}

// Commands start as execvp would start them: found in PATH, a script without a "#!"
// line run by /bin/sh; a missing or non-executable one fails its attempt with the
// shell's status (127, 126) and the worker says why.
TEST_F(Shmctl, CommandsAreFoundAndStartedAsExecvpWouldAndAMissingOneSaysSo) {
  create();
  const std::string bin = path("bin");
  fs::create_directory(bin);
  const std::string out = path("ran");
  { std::ofstream(bin + "/no-shebang") << "echo \"no shebang $1\" >> " << out << "\n"; }
  fs::permissions(bin + "/no-shebang", fs::perms::owner_all);
  { std::ofstream(bin + "/not-executable") << "#!/bin/sh\nexit 0\n"; }
  fs::permissions(bin + "/not-executable", fs::perms::owner_read | fs::perms::owner_write);
  ASSERT_EQ(submit({"no-shebang", "arg"}).code(), 0);
  ASSERT_EQ(submit({"no-such-command-anywhere"}, {"--retries", "0"}).code(), 0);
  ASSERT_EQ(submit({bin + "/not-executable"}, {"--retries", "0"}).code(), 0);
  const std::string saved = ::getenv("PATH") != nullptr ? ::getenv("PATH") : "";
  ::setenv("PATH", (bin + ":" + saved).c_str(), 1);  // the worker's PATH is the commands'
  const pid_t worker = start_worker();
  ::setenv("PATH", saved.c_str(), 1);
  ASSERT_EQ(wait_drained().code(), 0) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{"no shebang arg"})) << log();
  const json dead = parse_json(shmctl({"dlq", name(), "list", "--json"}));
  std::set<std::string> reasons;
  for (const auto& d : dead) reasons.insert(d["reason"].get<std::string>());
  EXPECT_EQ(reasons, (std::set<std::string>{"attempts exhausted (1): exit status 126",
                                            "attempts exhausted (1): exit status 127"}))
      << dead.dump();
  EXPECT_TRUE(contains(log(), "cannot run 'no-such-command-anywhere': No such file or directory")) << log();
  EXPECT_TRUE(contains(log(), "not-executable': Permission denied")) << log();
}

TEST_F(Shmctl, CommandsStartWithDefaultSignalsAnEmptyMaskAndTheirOwnGroup) {
  create();
  const std::string out = path("signals");
  // $$ of "sh -c" is the command's own pid: the worker execs it in the spawned process.
  // The masks are read by the shell itself (builtins only): a forked reader could see
  // the shell's mask while the shell blocks every signal around its own fork.
  const Ran submitted =
      submit({"sh", "-c",
              "o=" + out + ";while read k v;do case $k in Sig[BI]*)echo $k $v;;esac;done</proc/$$/status>$o" +
                  ";echo \"pid $$ pgid $(cut -d')' -f2 /proc/$$/stat|cut -d' ' -f4)\">>$o;readlink /proc/$$/fd/0>>$o"});
  ASSERT_EQ(submitted.code(), 0) << submitted;
  const pid_t worker = start_worker({}, /*ignore_sigint=*/true);
  ASSERT_EQ(wait_drained().code(), 0) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  const auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 4u) << log();
  auto mask = [&](const std::string& key) -> unsigned long long {
    for (const auto& l : lines)
      if (l.rfind(key, 0) == 0) return std::stoull(l.substr(key.size()), nullptr, 16);
    ADD_FAILURE() << "no " << key;
    return ~0ull;
  };
  EXPECT_EQ(mask("SigBlk:"), 0u) << "the worker's blocked SIGINT/SIGTERM leaked into the command";
  const unsigned long long ign = mask("SigIgn:");
  EXPECT_EQ(ign & (1ull << (SIGINT - 1)), 0u) << "SIGINT ignored in the command";
  EXPECT_EQ(ign & (1ull << (SIGTERM - 1)), 0u) << "SIGTERM ignored in the command";
  std::istringstream ids(lines[2]);
  std::string w1, w2;
  long pid = 0, pgid = -1;
  ids >> w1 >> pid >> w2 >> pgid;
  EXPECT_EQ(pid, pgid) << "the command leads its own process group: " << lines[2];
  EXPECT_EQ(lines[3], "/dev/null");
}

// A worker started with its stdin closed opens /dev/null as descriptor 0 for its
// commands' stdin: they still get it (it is not closed on their exec).
TEST_F(Shmctl, CommandsGetDevNullAsStdinWhenTheWorkerHasNone) {
  create();
  const std::string out = path("stdin");
  ASSERT_EQ(submit({"sh", "-c", "readlink /proc/$$/fd/0 > " + out}).code(), 0);
  const pid_t worker = start({"worker", name(), "--home", "general"}, "worker.log", false, /*close_stdin=*/true);
  ASSERT_EQ(wait_drained().code(), 0) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{"/dev/null"})) << log();
}

// A user who may only read a segment can still look at it: the verbs that only look open
// it read-only; the verbs that change it say why they cannot, and change nothing.
TEST_F(Shmctl, VerbsThatOnlyLookWorkOnASegmentTheCallerMayOnlyRead) {
  create();
  {
    Segment seg = Segment::open(name()).value();
    Client c = Client::attach(seg, Role::producer | Role::consumer).value();
    ASSERT_EQ(c.enqueue_text("shell", "false", TaskOptions{.queue = "general"}), Errc::ok);
    Taken t;
    ASSERT_TRUE(c.try_take(seg.find_queue("general").value(), t));
    ASSERT_EQ(c.dead_letter(t, "kept for the reader"), Errc::ok);
  }
  ASSERT_EQ(::chmod(("/dev/shm/" + Segment::object_name(name())).c_str(), 0444), 0);
  auto reader = [](std::vector<std::string> args) { return shmctl(std::move(args), {}, 30s, obey_file_modes); };

  const Ran st = reader({"stat", name(), "--json"});
  ASSERT_EQ(st.code(), 0) << st;
  EXPECT_EQ(parse_json(st)["dead_letters"], 1) << st;
  const Ran dlq = reader({"dlq", name(), "list"});
  EXPECT_EQ(dlq.code(), 0) << dlq;
  EXPECT_TRUE(contains(dlq.out, "kept for the reader")) << dlq;
  for (std::vector<std::string> look : {std::vector<std::string>{"stat", name()},
                                        {"metrics", name()},
                                        {"queue", name(), "list"},
                                        {"sem", name(), "list"},
                                        {"top", name(), "--iterations", "1"},
                                        {"wait", name(), "--timeout", "5s"},
                                        {"ls"}}) {
    const Ran r = reader(look);
    EXPECT_EQ(r.code(), 0) << look[0] << ": " << r;
  }
  for (std::vector<std::string> change :
       {std::vector<std::string>{"submit", name(), "--queue", "general", "--", "true"},
        {"queue", name(), "pause", "general"},
        {"dlq", name(), "requeue", "--all"},
        {"recover", name()}}) {
    const Ran r = reader(change);
    EXPECT_EQ(r.code(), 1) << change[0] << ": " << r;
    EXPECT_TRUE(contains(r.err, "may not be read and written")) << change[0] << ": " << r;
  }
  ASSERT_EQ(::chmod(("/dev/shm/" + Segment::object_name(name())).c_str(), 0600), 0);
  const Ran after = shmctl({"stat", name(), "--json"});
  const json s = parse_json(after);
  EXPECT_EQ(s["dead_letters"], 1) << after;
  EXPECT_EQ(s["queued"], 0) << after;
}

TEST_F(Shmctl, CronAddsListsPausesAndRemovesSchedules) {
  create();
  Ran r = shmctl({"cron", name(), "add", "nightly", "30 2 * * mon-fri", "--tz", "local", "--queue", "general", "--",
                  "/usr/bin/backup", "--all"});
  ASSERT_EQ(r.code(), 0) << r;
  EXPECT_TRUE(contains(r.out, "next run")) << r;
  ASSERT_EQ(shmctl({"cron", name(), "add", "often", "@every 90s", "--queue", "urgent", "--priority", "2", "--missed",
                    "once", "--", "echo", "hello world"})
                .code(),
            0);
  // Refused with the reason, and nothing added.
  const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
      {{"cron", name(), "add", "bad", "61 * * * *", "--queue", "general", "--", "x"}, "minute"},
      {{"cron", name(), "add", "bad", "@every 1s", "--queue", "nope", "--", "x"}, "nope"},
      {{"cron", name(), "add", "bad", "@every 1s", "--queue", "general", "--tz", "Mars/Base", "--", "x"}, "local"},
      {{"cron", name(), "add", "nightly", "@daily", "--queue", "general", "--", "x"}, "exists"},
      {{"cron", name(), "remove", "ghost"}, "no schedule 'ghost'"},
  };
  for (const auto& [args, words] : refused) {
    const Ran bad = shmctl(args);
    EXPECT_NE(bad.code(), 0) << bad;
    EXPECT_TRUE(contains(bad.err, words)) << bad;
  }
  EXPECT_EQ(shmctl({"cron", name(), "add", "x", "@hourly", "--queue", "general"}).code(), 2) << "no command";
  json list = parse_json(shmctl({"cron", name(), "list", "--json"}));
  ASSERT_EQ(list.size(), 2u) << list.dump();
  EXPECT_EQ(list[0]["id"], "nightly");
  EXPECT_EQ(list[0]["tz"], "local");
  EXPECT_EQ(list[0]["command"], json::array({"/usr/bin/backup", "--all"}));
  EXPECT_EQ(list[1]["queue"], "urgent");
  EXPECT_EQ(list[1]["priority"], 2);
  EXPECT_EQ(list[1]["missed"], "once");
  const std::string table = shmctl({"cron", name(), "list"}).out;
  EXPECT_TRUE(contains(table, "echo 'hello world'")) << table;
  // next: whole minutes a day apart (weekdays), in order.
  const Ran next = shmctl({"cron", name(), "next", "nightly", "--count", "3"});
  ASSERT_EQ(next.code(), 0) << next;
  EXPECT_EQ(std::count(next.out.begin(), next.out.end(), '\n'), 3) << next;
  EXPECT_TRUE(contains(next.out, ":30:00")) << next;
  ASSERT_EQ(shmctl({"cron", name(), "pause", "often"}).code(), 0);
  EXPECT_EQ(parse_json(shmctl({"cron", name(), "list", "--json"}))[1]["paused"], true);
  ASSERT_EQ(shmctl({"cron", name(), "resume", "often"}).code(), 0);
  EXPECT_EQ(parse_json(shmctl({"cron", name(), "list", "--json"}))[1]["paused"], false);
  ASSERT_EQ(shmctl({"cron", name(), "remove", "often"}).code(), 0);
  EXPECT_EQ(parse_json(shmctl({"cron", name(), "list", "--json"})).size(), 1u);
}

TEST_F(Shmctl, CronRunsItsCommandAtEachDueTimeThroughAWorker) {
  create();
  const std::string out = path("ticks");
  ASSERT_EQ(shmctl({"cron", name(), "add", "tick", "@every 200ms", "--queue", "general", "--", "sh", "-c",
                    "echo tick >> " + out})
                .code(),
            0);
  const pid_t worker = start_worker();
  ASSERT_TRUE(eventually([&] { return lines_of(out).size() >= 5; })) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  const json s = parse_json(shmctl({"cron", name(), "list", "--json"}))[0];
  const auto fired = s["fired"].get<std::uint64_t>();
  EXPECT_GE(fired, 5u);
  EXPECT_EQ(s["missed_runs"], 0);
  // Every occurrence enqueued ran once, or still waits in the queue.
  const std::uint64_t ran = lines_of(out).size();
  const json st = stat();
  EXPECT_EQ(ran + st["queued"].get<std::uint64_t>(), fired) << s.dump() << st.dump();
}

TEST_F(Shmctl, QueueBoostShiftsALevelAndAgingPromotes) {
  create();
  std::vector<std::string> low;
  for (int i = 0; i < 3; ++i) {
    const Ran r = submit({"true"}, {"--priority", "3"});
    ASSERT_EQ(r.code(), 0) << r;
    low.push_back(r.out.substr(0, r.out.find('\n')));
  }
  const Ran mid = submit({"true"}, {"--priority", "1"});
  const Ran moved = shmctl({"queue", name(), "boost", "general", "--from", "3", "--to", "0"});
  ASSERT_EQ(moved.code(), 0) << moved;
  EXPECT_TRUE(contains(moved.out, "moved 3 waiting task(s)")) << moved;
  for (const auto& id : low) EXPECT_EQ(parse_json(shmctl({"status", name(), id, "--json"}))["priority"], 0);
  EXPECT_EQ(parse_json(shmctl({"status", name(), mid.out.substr(0, mid.out.find('\n')), "--json"}))["priority"], 1);
  EXPECT_EQ(shmctl({"queue", name(), "boost", "general", "--from", "3"}).code(), 2);
  EXPECT_EQ(shmctl({"queue", name(), "boost", "general", "--from", "9", "--to", "0"}).code(), 2);
  EXPECT_EQ(shmctl({"queue", name(), "boost", "nope", "--from", "1", "--to", "0"}).code(), 1);
  const Ran aging = shmctl({"queue", name(), "aging", "general", "250ms", "--promote"});
  ASSERT_EQ(aging.code(), 0) << aging;
  EXPECT_TRUE(contains(shmctl({"queue", name(), "list"}).out, "250ms promote"));
  const json q = *queue(stat(), "general");
  EXPECT_EQ(q["aging_ms"], 250);
  EXPECT_EQ(q["aging"], "promote");
  EXPECT_EQ(shmctl({"queue", name(), "aging", "general", "soon"}).code(), 2);
}

TEST_F(Shmctl, WorkerBatchRunsOneCommandPerBatchWithAnOutcomePerLine) {
  create();
  for (const char* item : {"a1", "a2", "a3", "a4", "bad5", "odd6"})
    ASSERT_EQ(submit({item, "x"}, {"--retries", "0"}).code(), 0);
  const std::string lines = path("lines"), batches = path("batches");
  const std::string script = "while read l; do echo \"$l\" >> " + lines +
                             "; case $l in bad*) echo 'fail nope';; odd*) echo maybe;; *) echo ok;; esac; done; echo "
                             "$SHMSCHED_BATCH_SIZE >> " +
                             batches;
  const pid_t worker = start_worker({"--batch", "3", "--", "sh", "-c", script});
  ASSERT_TRUE(eventually([&] {
    const json s = stat();
    return s.contains("queued") && s["queued"] == 0 && s["dead_letters"] == 2 && lines_of(lines).size() == 6;
  })) << log();
  EXPECT_TRUE(stop(worker).ok()) << log();
  EXPECT_EQ(lines_of(batches), (std::vector<std::string>{"3", "3"})) << "one command per batch of three";
  auto got = lines_of(lines);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"a1 x", "a2 x", "a3 x", "a4 x", "bad5 x", "odd6 x"}));
  const std::string dlq = shmctl({"dlq", name(), "list"}).out;
  EXPECT_TRUE(contains(dlq, "nope")) << dlq;
  EXPECT_TRUE(contains(dlq, "bad outcome line")) << dlq;
  EXPECT_EQ(total(stat(), "general", "done"), 4u);
  EXPECT_EQ(shmctl({"worker", name(), "--home", "general", "--batch", "3"}).code(), 2) << "no command";
}

}  // namespace
}  // namespace shmsched::test
