#!/usr/bin/env python3
"""Shell tasks per second: `shmctl worker` against `xargs -P`, the same commands.

    bench/shell_tasks.py --shmctl PATH [--tasks N] [--workers W] [--rounds R] [--out FILE]

Each round, for each system (alternating which goes first):

  shmctl_worker  a segment gets N "shell" tasks (`shmctl submit --stdin`, one command line
                 each, run with /bin/sh -c), then `shmctl worker --workers W` is started and
                 the clock runs from its start until `shmctl wait` sees nothing left.
  xargs          the same N lines fed to `xargs -P W -I{} /bin/sh -c {}`, from its start
                 to its exit.

Both start /bin/sh once per task; the worker starts each command through its
`shmctl __worker-exec` helper first (PR_SET_PDEATHSIG, then exec), so it execs twice per
task where xargs execs once. Writes one JSON Lines record per system and round
(scenario "shell_tasks", tasks_per_s) to --out (default stdout); bench/report.py shows
the ratio of the medians.
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (base_record, write_jsonl)

COMMAND = "true"


def run_shmctl(shmctl, tasks, workers, name):
    lines = "".join(f"{COMMAND}\n" for _ in range(tasks))
    subprocess.run([shmctl, "destroy", name, "--force"], capture_output=True)
    capacity = 1024
    while capacity < tasks:
        capacity *= 2
    subprocess.run([shmctl, "create", name, "--queues", "bench", "--capacity", str(capacity)], check=True,
                   capture_output=True)
    try:
        subprocess.run([shmctl, "submit", name, "--queue", "bench", "--stdin"], input=lines.encode(), check=True,
                       capture_output=True)
        start = time.monotonic()
        worker = subprocess.Popen([shmctl, "worker", name, "--home", "bench", "--workers", str(workers)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            subprocess.run([shmctl, "wait", name, "--poll", "1ms", "--timeout", "600s"], check=True,
                           capture_output=True)
            secs = time.monotonic() - start
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        return secs
    finally:
        subprocess.run([shmctl, "destroy", name, "--force"], capture_output=True)


def run_xargs(tasks, workers):
    lines = "".join(f"{COMMAND}\n" for _ in range(tasks))
    start = time.monotonic()
    subprocess.run(["xargs", "-P", str(workers), "-I{}", "/bin/sh", "-c", "{}"], input=lines.encode(), check=True)
    return time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shmctl", required=True, help="the shmctl binary")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="-")
    args = ap.parse_args()
    name = f"bench-shell-{os.getpid()}"
    records = []
    for rnd in range(args.rounds):
        order = ("shmctl_worker", "xargs") if rnd % 2 == 0 else ("xargs", "shmctl_worker")
        for system in order:
            r = report.base_record("shell_tasks", system)
            r["consumers"] = args.workers
            r["payload_bytes"] = len(COMMAND)
            try:
                secs = (run_shmctl(args.shmctl, args.tasks, args.workers, name) if system == "shmctl_worker"
                        else run_xargs(args.tasks, args.workers))
                r["tasks_per_s"] = args.tasks / secs
                r["extra"] = {"tasks": args.tasks, "workers": args.workers, "seconds": round(secs, 4),
                              "round": rnd + 1, "command": f"/bin/sh -c {COMMAND}"}
                print(f"shell_tasks: round {rnd + 1} {system}: {args.tasks} tasks on {args.workers} workers in "
                      f"{secs:.3f} s, {args.tasks / secs:.0f} tasks/s", file=sys.stderr)
            except (subprocess.SubprocessError, OSError) as e:
                err = getattr(e, "stderr", None)
                r["error"] = str(e) + (f": {err.decode(errors='replace').strip()}" if err else "")
                print(f"shell_tasks: {system}: {e}", file=sys.stderr)
            records.append(r)
    report.write_jsonl(records, args.out)
    return 1 if any(r.get("error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
