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

// The files execvp would try for `name`, in order: `name` itself when it has a '/',
// else each directory of `path` (a PATH value; an empty entry is the current one).
std::vector<std::string> candidates(const std::string& name, std::string_view path) {
  if (name.find('/') != std::string::npos) return {name};
  std::vector<std::string> out;
  for (std::size_t start = 0; start <= path.size();) {
    std::size_t end = path.find(':', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view dir = path.substr(start, end - start);
    out.push_back((dir.empty() ? std::string(".") : std::string(dir)) + "/" + name);
    start = end + 1;
  }
  return out;
}

std::string_view path_of(const std::vector<std::string>& envp) {
  for (const auto& e : envp)
    if (e.compare(0, 5, "PATH=") == 0) return std::string_view(e).substr(5);
  return "/bin:/usr/bin";  // glibc's execvp default
}

}  // namespace

SpawnResult spawn_command(const std::vector<std::string>& argv, const std::vector<std::string>& envp, int stdin_fd,
                          int stdout_fd) {
  SpawnResult r;
  if (argv.empty()) {
    r.error = EINVAL;
    return r;
  }
  // Everything the child needs, made here: between vfork and exec it may only make
  // system calls (no allocation, no locks: other threads of this process run on).
  const std::vector<std::string> files = candidates(argv[0], path_of(envp));
  std::vector<char*> args, shell_args, env;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  shell_args.push_back(const_cast<char*>("/bin/sh"));
  shell_args.push_back(nullptr);  // the file, set in the child
  for (std::size_t i = 1; i < argv.size(); ++i) shell_args.push_back(const_cast<char*>(argv[i].c_str()));
  shell_args.push_back(nullptr);
  for (const auto& e : envp) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  const pid_t parent = ::getpid();
  // The child's exec error, written through the memory vfork shares. (Where vfork is
  // a fork -- ThreadSanitizer's -- it stays 0 here; the exit status still says 127/126.)
  volatile int exec_error = 0;

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
    // Its own group (a Ctrl-C at the worker's terminal is the worker's, and a stop
    // signals the group): without it the worker could not stop the command.
    if (::setpgid(0, 0) != 0) ::_exit(126);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);  // the worker died first
    if (stdin_fd == STDIN_FILENO) {
      if (::fcntl(STDIN_FILENO, F_SETFD, 0) != 0) ::_exit(126);  // keep it across the exec
    } else if (stdin_fd >= 0) {
      if (::dup2(stdin_fd, STDIN_FILENO) < 0) ::_exit(126);
    } else {
      const int null = ::open("/dev/null", O_RDONLY);
      if (null < 0 || (null != STDIN_FILENO && ::dup2(null, STDIN_FILENO) < 0)) ::_exit(126);
      if (null != STDIN_FILENO) ::close(null);
    }
    if (stdout_fd >= 0 && stdout_fd != STDOUT_FILENO && ::dup2(stdout_fd, STDOUT_FILENO) < 0) ::_exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // As execvp: the first file that execs wins; a file that is not executable is
    // remembered (EACCES) while later ones are tried; a file that exists but has no
    // "#!" line is run by /bin/sh.
    bool denied = false;
    int err = ENOENT;
    for (const std::string& f : files) {
      ::execve(f.c_str(), args.data(), env.data());
      err = errno;
      if (err == ENOEXEC) {
        shell_args[1] = const_cast<char*>(f.c_str());
        ::execve("/bin/sh", shell_args.data(), env.data());
        err = errno;
        break;
      }
      if (err == EACCES) {
        denied = true;
        continue;
      }
      if (err != ENOENT && err != ENOTDIR && err != ESTALE && err != ENODEV && err != ETIMEDOUT) break;
    }
    if (denied && (err == ENOENT || err == ENOTDIR)) err = EACCES;
    exec_error = err;
    ::_exit(err == ENOENT ? 127 : 126);  // what a shell reports for the same failures
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
