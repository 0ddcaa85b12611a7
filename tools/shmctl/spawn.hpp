// Starting a command from the multi-threaded worker: one exec per command, no copy of
// the worker's memory, and the command dies with the worker.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace shmctl {

struct SpawnResult {
  pid_t pid = -1;      ///< the child, or -1 when none was started
  int exec_error = 0;  ///< errno of the child's failed exec (it then exits 127 or 126)
  int error = 0;       ///< errno of a failure to start the child at all
};

/// Runs argv[0] (searched in the PATH of `envp` when it has no '/'; a file without a
/// "#!" line is run by /bin/sh, as execvp does) with environment `envp` and stdin
/// `stdin_fd` (/dev/null when < 0). The child is made with vfork: it shares the
/// worker's memory until it execs and does nothing but system calls before then. In
/// between it leads a new process group, takes default dispositions for every signal
/// the worker catches (and for SIGINT/SIGTERM), an empty signal mask, and asks for
/// SIGKILL when the spawning thread dies (PR_SET_PDEATHSIG, which posix_spawn cannot
/// set) -- a worker killed hard leaves no command running on while the reaper requeues
/// its task. The spawning thread must outlive the command (it waits for it). The
/// kernel clears PR_SET_PDEATHSIG when the command execs a set-user-ID, set-group-ID or
/// file-capability program (sudo, for instance): such a command outlives a killed worker.
///
/// `stdout_fd` >= 0 becomes the command's standard output (the worker's otherwise).
SpawnResult spawn_command(const std::vector<std::string>& argv, const std::vector<std::string>& envp, int stdin_fd,
                          int stdout_fd = -1);

}  // namespace shmctl
