// shmctl: the operator's tool for shmsched segments. One binary, one verb per task an
// operator has: create and destroy segments, look at them (ls, stat, top, metrics),
// change them (queue, sem, dlq, recover), drain them (wait), and feed and serve them
// with shell commands (submit, worker). docs/shmctl.md describes every verb.
//
// Exit statuses: 0 success, 1 a reported error (message on stderr), 2 bad usage.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>

#include "common.hpp"

#ifndef SHMSCHED_VERSION
#error "SHMSCHED_VERSION must be defined (tools/CMakeLists.txt passes the project version)"
#endif

int main(int argc, char** argv) {
  using namespace shmctl;
  CLI::App app{"shmctl: inspect, operate and feed shmsched scheduler segments (/dev/shm/shmsched.<name>)", "shmctl"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("shmctl ") + SHMSCHED_VERSION, "Print the version and exit");
  // Global options may follow the verb too ("shmctl stat jobs --open-timeout 5s").
  app.fallthrough();
  app.add_option("--open-timeout", globals().open_timeout,
                 "How long to wait for a segment whose creator is still initialising it (default 1s)");
  app.footer(
      "Exit status: 0 success, 1 reported error, 2 bad usage.\n"
      "Run 'shmctl VERB --help' for a verb's options.");

  Verbs verbs;
  add_segment_verbs(app, verbs);
  add_stat_verbs(app, verbs);
  add_top_verb(app, verbs);
  add_admin_verbs(app, verbs);
  add_task_verbs(app, verbs);
  add_group_verb(app, verbs);
  add_cron_verb(app, verbs);
  add_wait_verb(app, verbs);
  add_submit_verb(app, verbs);
  add_worker_verb(app, verbs);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);  // prints the problem and the hint on stderr
    return kExitUsage;
  }

  try {
    for (const Verb& v : verbs)
      if (v.command->parsed()) return v.run();
    std::cerr << "shmctl: no verb given\n";
    return kExitUsage;
  } catch (const Usage& e) {
    std::cerr << "shmctl: " << e.what() << "\n";
    return kExitUsage;
  } catch (const Failure& e) {
    std::cerr << "shmctl: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << "shmctl: " << e.what() << "\n";
    return kExitFailure;
  }
}
