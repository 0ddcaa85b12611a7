#!/usr/bin/env python3
"""The floor verdicts of bench/report.py.

A floor is judged on the median of its ratio taken round by round: rows that carry
extra.round are paired with the other side's row of the same round; a round in which one
side failed is left out; the verdict is the median's, "≥" or "≤" the bound. Rows measured
once (no rounds) give one ratio. A peer that is not installed makes the floor "n/a" with
the reason. `report.py rounds` turns rounds of shmsched_bench into such rows.

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

BOOST = "full path (Consumer) ≥ 3x Boost message_queue"
REDIS = "full path (Consumer) ≥ 300x Redis, unpipelined"
BATCH = "batch calls ≥ 8x Boost message_queue"
SINGLE = "one-priority single calls ≥ 0.9x moodycamel single"
WAKE = "sleeping wake-up p50 ≤ 1.2x Boost message_queue's"
problems = []


def rec(scenario, system, round_=None, payload=64, layout=(1, 1), error=None, **fields):
    r = {"scenario": scenario, "system": system, "payload_bytes": payload, "producers": layout[0],
         "consumers": layout[1], "tasks_per_s": None, "p50_us": None, "extra": {}}
    if round_:
        r["extra"]["round"] = round_
    if error:
        r["error"] = error
    r.update(fields)
    return r


def verdicts(records):
    return {label: (xs, med, n, verdict) for label, xs, med, n, verdict in report.floor_rows(records)}


def check(what, got, ratios=None, met=None, verdict=None):
    xs, med, n, v = got
    if ratios is not None and [round(x, 6) for x in xs] != ratios:
        problems.append(f"{what}: ratios {xs}, want {ratios}")
    if met is not None and n != met:
        problems.append(f"{what}: rounds meeting it {n!r}, want {met!r}")
    if verdict is not None and not str(v).startswith(verdict):
        problems.append(f"{what}: verdict {v!r}, want one starting with {verdict!r}")


recs = []
for i, (shm, boost, redis) in enumerate(((5e6, 2e6, 2e4), (7e6, 2e6, 2.5e4), (8e6, 2e6, 2.5e4)), 1):
    recs += [rec("full_path", "shmsched", i, tasks_per_s=shm), rec("full_path", "boost_mq", i, tasks_per_s=boost),
             rec("full_path", "redis", i, tasks_per_s=redis)]
# Rows of other payloads and layouts, and rows measured once, must not enter the floors.
recs += [rec("full_path", "shmsched", payload=256, tasks_per_s=1e3), rec("full_path", "boost_mq", tasks_per_s=1e9),
         rec("full_path", "shmsched", 1, layout=(2, 2), tasks_per_s=1.0)]
# Sleeping wake-up: 1.1x and 1.5x Boost's p50 -> median 1.3x, above the 1.2 bound.
recs += [rec("latency_sleeping", "shmsched", 1, p50_us=55.0), rec("latency_sleeping", "boost_mq", 1, p50_us=50.0),
         rec("latency_sleeping", "shmsched", 2, p50_us=60.0), rec("latency_sleeping", "boost_mq", 2, p50_us=40.0)]
v = verdicts(recs)
check("full path vs Boost", v[BOOST], ratios=[2.5, 3.5, 4.0], met=2, verdict="yes")
check("full path vs Redis", v[REDIS], ratios=[250.0, 280.0, 320.0], met=1, verdict="no")
check("sleeping wake-up (≤)", v[WAKE], ratios=[1.1, 1.5], met=1, verdict="no")
fast = [r for r in recs if r["scenario"] != "latency_sleeping"]
fast += [rec("latency_sleeping", "shmsched", 1, p50_us=40.0), rec("latency_sleeping", "boost_mq", 1, p50_us=50.0)]
check("sleeping wake-up below the bound", verdicts(fast)[WAKE], ratios=[0.8], met=1, verdict="yes")

# Rows measured once: one ratio, no count of rounds.
once = [rec("full_path", "shmsched", tasks_per_s=7e6), rec("full_path", "boost_mq", tasks_per_s=2e6)]
check("no rounds", verdicts(once)[BOOST], ratios=[3.5], met=None, verdict="yes")

# A peer that is not installed: n/a with its reason, whatever the other floors do.
absent = once + [rec("full_path", "redis", error="redis not available: redis-server not found on PATH")]
check("absent peer", verdicts(absent)[REDIS], ratios=[], verdict="n/a (redis not available")


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
        for x in (median * 0.9, median * 1.1):
            benchmarks.append({"name": run, "run_name": run, "run_type": "iteration", "items_per_second": x * 1e6})
        benchmarks.append({"name": run + "_median", "run_name": run, "run_type": "aggregate",
                           "aggregate_name": "median", "items_per_second": median * 1e6})
    return {"context": {}, "benchmarks": benchmarks}


B, Q = "BM_cross_shmsched_process_batch", "BM_cross_boost_mq_process"
L0, M = "BM_cross_shmsched_process_single_level0", "BM_cross_moodycamel_thread_single"
with tempfile.TemporaryDirectory() as tmp:
    paths = []
    # Batches at 9x, 6x, 10x Boost; moodycamel failed in round 2, so that floor has rounds 1 and 3.
    for i, rows in enumerate(({B: (18.0, None), Q: (2.0, None), L0: (10.0, None), M: (10.0, None)},
                              {B: (12.0, None), Q: (2.0, None), L0: (10.0, None), M: (0, "moodycamel failed")},
                              {B: (20.0, None), Q: (2.0, None), L0: (7.0, None), M: (10.0, None)})):
        paths.append(os.path.join(tmp, f"r{i}.json"))
        with open(paths[-1], "w", encoding="utf-8") as f:
            json.dump(gbench_round(rows), f)
    out = os.path.join(tmp, "rounds.jsonl")
    if report.cmd_rounds(argparse.Namespace(inputs=paths, out=out)) != 0:
        problems.append("rounds: non-zero exit")
    with open(out, encoding="utf-8") as f:
        micro = [json.loads(line) for line in f]
    if any(k not in r for r in micro for k in report.REQUIRED):
        problems.append("rounds: a record lacks the required keys")
    v = verdicts(micro)
    check("batch vs Boost, rounds", v[BATCH], ratios=[9.0, 6.0, 10.0], met=2, verdict="yes")
    check("single vs moodycamel, a failed round left out", v[SINGLE], ratios=[1.0, 0.7], met=1, verdict="no")

    doc_path = os.path.join(tmp, "latest.json")
    with open(doc_path, "w", encoding="utf-8") as f:
        json.dump({"machine": {}, "records": micro + recs}, f)
    md_path = os.path.join(tmp, "latest.md")
    report.cmd_markdown(argparse.Namespace(input=doc_path, out=md_path, print_floors=False))
    with open(md_path, encoding="utf-8") as f:
        text = f.read()
    for row in (f"| {BATCH} | 9x, 6x, 10x | 9x | 2 of 3 | yes |", f"| {BOOST} | 2.5x, 3.5x, 4x | 3.5x | 2 of 3 | yes |",
                f"| {WAKE} | 1.1x, 1.5x | 1.3x | 1 of 2 | no |"):
        if row not in text:
            problems.append(f"latest.md lacks the row {row!r}")

if problems:
    print("report_floors_test: FAILED")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print("report_floors_test: ok")
