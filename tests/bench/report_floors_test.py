#!/usr/bin/env python3
"""The floor verdicts of bench/report.py on micro-benchmark ratios.

A floor is met when the medians meet it and, where both benchmarks ran several
repetitions, the best repetitions meet it too: a peer whose repetitions fall into a slow
and a fast mode must not let shmsched pass by its slow mode alone.

And `report.py rounds`: one record per floor whose two rows ran in every round, with
the ratio taken within each round and the count of rounds that meet the floor.

usage: report_floors_test.py SOURCE_DIR
"""
import argparse
import importlib.util
import json
import os
import sys
import tempfile

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
spec = importlib.util.spec_from_file_location("report", os.path.join(src, "bench", "report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

LABEL = "engine: process single calls ≥ 1x moodycamel thread single"
problems = []


def verdict(ours, peer):
    """The verdict of LABEL for medians and repetitions (M/s) of shmsched and moodycamel."""
    recs = []
    for name, (median, runs) in (("BM_cross_shmsched_process_single", ours),
                                 ("BM_cross_moodycamel_thread_single", peer)):
        r = {"scenario": "micro/" + name, "tasks_per_s": median * 1e6}
        if runs is not None:
            r["extra"] = {"items_per_second_runs": [x * 1e6 for x in runs]}
        recs.append(r)
    rows = {label: met for label, _, met in report.micro_floors(recs)}
    return rows.get(LABEL)


def expect(what, got, want_prefix):
    if got is None or not got.startswith(want_prefix):
        problems.append(f"{what}: verdict {got!r}, want one starting with {want_prefix!r}")


# The medians and the best repetitions both meet it.
expect("both meet", verdict((12.0, [12.0, 11.5, 12.2]), (10.0, [10.0, 9.5, 11.0])), "yes")
# A bimodal peer: its median is its slow mode, its best is its fast mode.
expect("medians only", verdict((11.7, [12.2, 11.7, 8.2]), (9.1, [22.4, 9.0, 9.1])),
       "no (the medians meet it")
# The medians fall short.
expect("medians short", verdict((8.0, [8.0, 8.5, 7.9]), (10.0, [10.0, 9.5, 10.2])), "no")
if verdict((8.0, [8.0]), (10.0, [10.0])) != "no":
    problems.append("medians short, one repetition each: want 'no'")
# One repetition each: the medians decide.
expect("one repetition", verdict((12.0, None), (10.0, None)), "yes")



def gbench_round(rows):
    """A Google Benchmark JSON document: rows {run name: (median M/s, error or None)},
    each with two repetitions around its median and the median aggregate."""
    benchmarks = []
    for name, (median, error) in rows.items():
        run = name + "/iterations:1/repeats:2/manual_time"
        if error:
            benchmarks.append({"name": run, "run_name": run, "run_type": "iteration",
                               "error_occurred": True, "error_message": error})
            continue
        for v in (median * 0.9, median * 1.1):
            benchmarks.append({"name": run, "run_name": run, "run_type": "iteration", "items_per_second": v * 1e6})
        benchmarks.append({"name": run + "_median", "run_name": run, "run_type": "aggregate",
                           "aggregate_name": "median", "items_per_second": median * 1e6})
    return {"context": {}, "benchmarks": benchmarks}


SINGLE, BOOST = "BM_cross_shmsched_process_single", "BM_cross_boost_mq_process/1024/0"
MOODY = "BM_cross_moodycamel_thread_single"
TWO = "BM_cross_two_transfers_thread"
REF_LABEL = ("(no floor) process single / two line transfers in a row "
             "(what a take right behind its producer waits out)")
BOOST_LABEL = "engine: process → process single calls ≥ 5x Boost message_queue"
with tempfile.TemporaryDirectory() as tmp:
    paths = []
    # Round 1 meets both floors, round 2 neither; round 3's moodycamel row failed.
    for i, rows in enumerate(({SINGLE: (15.0, None), BOOST: (2.5, None), MOODY: (14.0, None), TWO: (10.0, None)},
                              {SINGLE: (10.0, None), BOOST: (2.5, None), MOODY: (16.0, None), TWO: (10.0, None)},
                              {SINGLE: (14.0, None), BOOST: (2.0, None), MOODY: (0, "moodycamel failed"),
                               TWO: (7.0, None)})):
        paths.append(os.path.join(tmp, f"r{i}.json"))
        with open(paths[-1], "w", encoding="utf-8") as f:
            json.dump(gbench_round(rows), f)
    out = os.path.join(tmp, "rounds.jsonl")
    rc = report.cmd_rounds(argparse.Namespace(inputs=paths, out=out))
    with open(out, encoding="utf-8") as f:
        recs = {r["extra"]["label"]: r for r in map(json.loads, f)}
    if rc != 0:
        problems.append(f"rounds: exit {rc}, want 0")
    if LABEL in recs:
        problems.append("rounds: a floor whose peer row failed in one round has a record")
    r = recs.get(BOOST_LABEL)
    if r is None:
        problems.append(f"rounds: no record for {BOOST_LABEL!r}; got {sorted(recs)}")
    else:
        got = [round(x, 6) for x in r["extra"]["ratios"]]
        if got != [6.0, 4.0, 7.0]:
            problems.append(f"rounds: ratios {got}, want [6.0, 4.0, 7.0] (each round's medians)")
        if r["extra"]["rounds_met"] != 2:
            problems.append(f"rounds: rounds_met {r['extra']['rounds_met']}, want 2")
        if r.get("scenario") != "floor_rounds" or any(k not in r for k in report.REQUIRED):
            problems.append(f"rounds: record lacks the required keys or scenario: {r}")
    ref = recs.get(REF_LABEL)
    if ref is None:
        problems.append(f"rounds: no record for the reference {REF_LABEL!r}")
    elif ref["extra"]["rounds_met"] is not None or [round(x, 6) for x in ref["extra"]["ratios"]] != [1.5, 1.0, 2.0]:
        problems.append(f"rounds: reference record {ref['extra']}, want ratios [1.5, 1.0, 2.0] and no count")
    md = report.cmd_markdown  # the table: one row per floor record
    doc_path = os.path.join(tmp, "latest.json")
    with open(doc_path, "w", encoding="utf-8") as f:
        json.dump({"machine": {}, "records": list(recs.values())}, f)
    md_path = os.path.join(tmp, "latest.md")
    md(argparse.Namespace(input=doc_path, out=md_path, print_floors=False))
    with open(md_path, encoding="utf-8") as f:
        text = f.read()
    if f"| {BOOST_LABEL} | 6x, 4x, 7x | 6x | 2 of 3 |" not in text:
        problems.append("latest.md lacks the round-by-round row '| ... | 6x, 4x, 7x | 6x | 2 of 3 |'")
    if f"| {REF_LABEL} | 1.5x, 1x, 2x | 1.5x | — |" not in text:
        problems.append("latest.md lacks the reference row '| ... | 1.5x, 1x, 2x | 1.5x | — |'")


# The shell-task floor: medians of the rounds of each system, errors left out.
def shell_verdict(worker, xargs):
    recs = [{"scenario": "shell_tasks", "system": "shmctl_worker", "tasks_per_s": v} for v in worker]
    recs += [{"scenario": "shell_tasks", "system": "xargs", "tasks_per_s": v} for v in xargs]
    recs.append({"scenario": "shell_tasks", "system": "shmctl_worker", "tasks_per_s": 1e9, "error": "broken"})
    return report.shell_floor(recs)[2]


expect("shell: medians meet it", shell_verdict([2100, 1500, 2200], [1700, 1800, 1600]), "yes")
expect("shell: medians short", shell_verdict([1500, 2500, 1600], [1700, 1800, 1600]), "no")
expect("shell: no rows", report.shell_floor([])[2], "n/a")

if problems:
    print("report_floors_test: FAILED")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print("report_floors_test: ok")
