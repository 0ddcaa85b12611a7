#include "spawn.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

namespace shmctl {
namespace {

// The file execvp would run for `name`, searched in `path` (a PATH value).
std::string resolve(const std::string& name, std::string_view path) {
  if (name.find('/') != std::string::npos) return name;
  int first_error = ENOENT;
  std::string found;
  for (std::size_t start = 0; start <= path.size();) {
    std::size_t end = path.find(':', start);
    if (end == std::string_view::npos) end = path.size();
    std::string dir(path.substr(start, end - start));
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
      first_error = EACCES;
      if (found.empty()) found = candidate;  // exec reports EACCES on it, as execvp would
    }
    start = end + 1;
  }
  if (first_error == EACCES) return found;
  return {};  // ENOENT
}

std::string_view path_of(const std::vector<std::string>& envp) {
  for (const auto& e : envp)
    if (e.compare(0, 5, "PATH=") == 0) return std::string_view(e).substr(5);
  return "/usr/local/bin:/usr/bin:/bin";
}

}  // namespace

SpawnResult spawn_command(const std::vector<std::string>& argv, const std::vector<std::string>& envp, int stdin_fd) {
  SpawnResult r;
  if (argv.empty()) {
    r.error = EINVAL;
    return r;
  }
  // Everything the child needs, made here: between vfork and exec it may only make
  // system calls (no allocation, no locks: other threads of this process run on).
  const std::string file = resolve(argv[0], path_of(envp));
  std::vector<char*> args, shell_args, env;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  shell_args.push_back(const_cast<char*>("/bin/sh"));
  shell_args.push_back(const_cast<char*>(file.c_str()));
  for (std::size_t i = 1; i < argv.size(); ++i) shell_args.push_back(const_cast<char*>(argv[i].c_str()));
  shell_args.push_back(nullptr);
  for (const auto& e : envp) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  const pid_t parent = ::getpid();
  volatile int exec_error = file.empty() ? ENOENT : 0;

  // Blocked in the child from its first instruction, so no handler of ours runs in it
  // (it shares our memory) before the dispositions are reset.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::vfork();
  if (pid == 0) {
    for (int s = 1; s < NSIG; ++s) {
      struct sigaction sa {};
      if (s == SIGKILL || s == SIGSTOP || ::sigaction(s, nullptr, &sa) != 0) continue;
      const bool caught = sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
      if (!caught && !(s == SIGINT || s == SIGTERM)) continue;  // ignored stays ignored, as with posix_spawn
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      (void)::sigaction(s, &dfl, nullptr);
    }
    (void)::setpgid(0, 0);  // its own group: a Ctrl-C at the worker's terminal is the worker's
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);  // the worker died first
    if (stdin_fd >= 0) {
      if (::dup2(stdin_fd, STDIN_FILENO) < 0) ::_exit(126);
    } else {
      const int null = ::open("/dev/null", O_RDONLY);
      if (null < 0 || ::dup2(null, STDIN_FILENO) < 0) ::_exit(126);
      if (null != STDIN_FILENO) ::close(null);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (exec_error == 0) {
      ::execve(file.c_str(), args.data(), env.data());
      if (errno == ENOEXEC) ::execve("/bin/sh", shell_args.data(), env.data());
      exec_error = errno;
    }
    ::_exit(exec_error == ENOENT ? 127 : 126);  // what a shell reports for the same failures
  }
  const int vfork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    r.error = vfork_errno;
    return r;
  }
  r.pid = pid;
  r.exec_error = exec_error;
  return r;
}

}  // namespace shmctl
