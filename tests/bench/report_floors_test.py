#!/usr/bin/env python3
"""The floor verdicts of bench/report.py on micro-benchmark ratios.

A floor is met when the medians meet it and, where both benchmarks ran several
repetitions, the best repetitions meet it too: a peer whose repetitions fall into a slow
and a fast mode must not let shmsched pass by its slow mode alone.

usage: report_floors_test.py SOURCE_DIR
"""
import importlib.util
import os
import sys

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

if problems:
    print("report_floors_test: FAILED")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print("report_floors_test: ok")
