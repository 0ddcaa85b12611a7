#!/usr/bin/env python3
"""bench/report.py: turns benchmark output into bench/results/latest.{json,md} and plot inputs.

Python 3 standard library only. bench/run and bench/plot call it; by hand:

  report.py micro MICRO.json [--out F]            Google Benchmark JSON -> JSON Lines records
  report.py rounds R1.json R2.json ... [--out F]   rounds of shmsched_bench -> records with extra.round
  report.py callgrind N1:OUT[,OUT..] N2:OUT[,..]  callgrind outputs -> one record (instructions/task)
  report.py collect --out latest.json NAME=FILE.jsonl ...   merge JSON Lines into latest.json
  report.py markdown latest.json [--out latest.md] [--print-floors]
  report.py plot latest.json --data-dir D --png-dir P [--terminal pngcairo|png]
                                                   gnuplot data + scripts; prints one script per line

Every record has the keys in REQUIRED (numbers or null), optional "extra" (an object; latency
records carry extra.cdf = [[us, cumulative fraction], ...]; a row measured once a round carries
extra.round) and optional "error". collect adds "source": the driver the record came from.

FLOORS and RATIOS below are the one list of the floors and of the ratios the results show.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import sys

REQUIRED = ("scenario", "system", "payload_bytes", "producers", "consumers", "tasks_per_s",
            "p50_us", "p99_us", "p999_us", "cores", "cpu_model")

# Peers in the order the tables and plots show them; systems not listed follow alphabetically.
SYSTEM_ORDER = ("shmsched", "shmsched_no_aging", "shmsched_reserve0", "shmsched_reserve1", "boost_mq",
                "redis", "redis_pipelined", "moodycamel", "tbb", "boost_semaphore", "emulated_incr_decr",
                "shmctl_worker", "xargs")

# An error of this form means a peer is not installed: its rows are absent, the run is not failed.
ABSENT_RE = re.compile(r"\bnot available\b", re.IGNORECASE)


def die(msg, code=1):
    print(f"report.py: {msg}", file=sys.stderr)
    sys.exit(code)


# ----------------------------------------------------------------------------- machine

def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 0


def machine_block(command, extra_fields):
    m = {
        "cores": cores(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    m.update(extra_fields)
    return m


def base_record(scenario, system):
    return {"scenario": scenario, "system": system, "payload_bytes": 64, "producers": 1, "consumers": 1,
            "tasks_per_s": None, "p50_us": None, "p99_us": None, "p999_us": None,
            "cores": cores(), "cpu_model": cpu_model()}


def write_jsonl(records, path):
    out = open(path, "w", encoding="utf-8") if path and path != "-" else sys.stdout
    try:
        for r in records:
            out.write(json.dumps(r, sort_keys=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


# ----------------------------------------------------------------------------- micro

# Google Benchmark decorations of a run name that are not part of what was measured.
_DECORATION = re.compile(r"^(iterations|repeats|min_time|min_warmup_time|threads):|^(manual_time|real_time|process_time)$")

# Which system a shmsched_bench benchmark measures, first match wins.
_MICRO_SYSTEMS = (
    ("shmsched", "shmsched"),
    ("moodycamel", "moodycamel"),
    ("tbb", "tbb"),
    ("boost_mq", "boost_mq"),
    ("boost", "boost_semaphore"),
)

_GBENCH_FIELDS = {"name", "run_name", "run_type", "repetitions", "repetition_index", "threads", "iterations",
                  "real_time", "cpu_time", "time_unit", "family_index", "per_family_instance_index",
                  "aggregate_name", "aggregate_unit", "error_occurred", "error_message", "label"}


def micro_key(run_name):
    parts = run_name.split("/")
    return "/".join([parts[0]] + [p for p in parts[1:] if not _DECORATION.search(p)])


def micro_system(key):
    low = key.lower()
    for pat, system in _MICRO_SYSTEMS:
        if pat in low:
            return system
    return "other"


def cmd_micro(args):
    """One record per benchmark: its median over the repetitions (or its one run), its
    counters in extra; a benchmark that only reported an error carries it."""
    with open(args.input, encoding="utf-8") as f:
        doc = json.load(f)
    rows = {}  # micro key -> {"runs": [...], "median": aggregate or None, "error": message or None}
    for b in doc.get("benchmarks", []):
        row = rows.setdefault(micro_key(b.get("run_name", b.get("name", "?"))),
                              {"runs": [], "median": None, "error": None})
        if b.get("error_occurred"):
            row["error"] = b.get("error_message") or "benchmark reported an error"
        elif b.get("run_type") != "aggregate":
            row["runs"].append(b)
        elif b.get("aggregate_name") == "median":
            row["median"] = b
    records = []
    for key, row in rows.items():
        r = base_record("micro/" + key, micro_system(key))
        src = row["median"] or (row["runs"][0] if len(row["runs"]) == 1 else None)
        if src is None:
            r["error"] = row["error"] or "no median and no single run"
            records.append(r)
            continue
        counters = {k: v for k, v in src.items() if k not in _GBENCH_FIELDS and isinstance(v, (int, float))}
        r["tasks_per_s"] = counters.pop("items_per_second", None)
        r["extra"] = {"value_of": f"median of {len(row['runs'])} repetitions" if row["median"] else "single run",
                      **counters}
        records.append(r)
    write_jsonl(records, args.out)
    return 0


def gbench_medians(path):
    """{micro key: items/s} of one Google Benchmark JSON file: each row's median over its
    repetitions, or its one run's rate. Rows that reported an error are left out."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    medians, single = {}, {}
    for b in doc.get("benchmarks", []):
        v = b.get("items_per_second")
        if b.get("error_occurred") or not isinstance(v, (int, float)):
            continue
        key = micro_key(b.get("run_name", b.get("name", "?")))
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[key] = v
        else:
            single.setdefault(key, v)
    return {**single, **medians}


def cmd_rounds(args):
    """One record per row and round of several invocations of shmsched_bench (rounds):
    scenario "micro/<benchmark>", its median rate, extra.round. The rows of a floor ran
    within a minute of each other in a round, so their ratio is taken within the round;
    on a host whose speed moves in phases lasting minutes, the median over rounds says
    more than one run can."""
    records = []
    for i, path in enumerate(args.inputs, 1):
        try:
            rates = gbench_medians(path)
        except (OSError, json.JSONDecodeError) as e:
            die(f"rounds: cannot read {path}: {e}")
        for key, v in sorted(rates.items()):
            r = base_record("micro/" + key, micro_system(key))
            r["tasks_per_s"] = v
            r["extra"] = {"round": i}
            records.append(r)
    if not records:
        die("rounds: no rates in any round", 1)
    write_jsonl(records, args.out)
    return 0


# ----------------------------------------------------------------------------- callgrind

# shmsched_scenarios --callgrind-workload=W: W -> what its row says it counts.
CALLGRIND_WORKLOADS = {
    "full_path": "full path",
    "engine_single": "engine single calls (enqueue, take, complete)",
    "engine_batch": "engine batch calls of 64",
    "engine_semaphore": "engine single calls, each task holding a permit",
}


def callgrind_ir(path):
    """Total Ir of one callgrind output file, from its summary: (or totals:) line."""
    events = ["Ir"]
    summary = totals = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split(":", 1)[1].split()
            elif line.startswith("summary:"):
                summary = line.split(":", 1)[1].split()
            elif line.startswith("totals:"):
                totals = line.split(":", 1)[1].split()
    vals = summary or totals
    if not vals:
        raise ValueError(f"{path}: no summary: or totals: line")
    idx = events.index("Ir") if "Ir" in events else 0
    return int(vals[idx])


def cmd_callgrind(args):
    points = []
    for spec in args.points:
        n, _, files = spec.partition(":")
        if not files:
            die(f"callgrind: expected N:FILE[,FILE...], got {spec!r}", 2)
        try:
            ir = sum(callgrind_ir(p) for p in files.split(",") if p)
        except (OSError, ValueError) as e:
            die(f"callgrind: {e}")
        points.append((int(n), ir))
    points.sort()
    if len(points) < 2 or points[-1][0] == points[0][0]:
        die("callgrind: need two runs with different task counts", 2)
    (n1, ir1), (n2, ir2) = points[0], points[-1]
    if ir2 <= ir1:
        die(f"callgrind: {n2} tasks took no more instructions than {n1} ({ir2} <= {ir1}): "
            "is the task count honoured?")
    r = base_record("callgrind_" + args.workload, "shmsched")
    r["extra"] = {"instructions_per_task": (ir2 - ir1) / (n2 - n1),
                  "tasks": [n1, n2], "ir": [ir1, ir2],
                  "note": f"valgrind --tool=callgrind on shmsched_scenarios --callgrind-workload={args.workload}; "
                          "(Ir2 - Ir1) / (N2 - N1) cancels start-up and tear-down"}
    write_jsonl([r], args.out)
    return 0


# ----------------------------------------------------------------------------- collect

def missing_keys(r):
    return [k for k in REQUIRED if k not in r]


def is_absent(r):
    return bool(r.get("error")) and bool(ABSENT_RE.search(str(r["error"])))


def real_errors(records):
    return [r for r in records if r.get("error") and not is_absent(r)]


def read_steps(path):
    steps = []
    if not path or not os.path.exists(path):
        return steps
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5:
                continue
            name, status, rc, secs, log = parts[:5]
            note = parts[5] if len(parts) > 5 else ""
            step = {"name": name, "status": status, "seconds": float(secs or 0), "log": log}
            if rc not in ("", "-"):
                step["exit_code"] = int(rc)
            if note:
                step["note"] = note
            steps.append(step)
    return steps


def cmd_collect(args):
    records, problems = [], []
    for spec in args.inputs:
        source, sep, path = spec.partition("=")
        if not sep:
            die(f"collect: expected NAME=FILE, got {spec!r}", 2)
        if not os.path.exists(path):
            problems.append(f"{source}: {path} does not exist")
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(f"{source}: {path}:{lineno}: not JSON ({e})")
                    continue
                if not isinstance(r, dict):
                    problems.append(f"{source}: {path}:{lineno}: not a JSON object")
                    continue
                miss = missing_keys(r)
                if miss:
                    problems.append(f"{source}: {path}:{lineno}: missing keys {', '.join(miss)}")
                r["source"] = source
                records.append(r)
    fields = {}
    for kv in args.field or []:
        k, _, v = kv.partition("=")
        fields[k] = v
    doc = {"machine": machine_block(args.command, fields), "records": records}
    steps = read_steps(args.steps)
    if steps:
        doc["steps"] = steps
    if problems:
        doc["problems"] = problems
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    for p in problems:
        print(f"report.py: {p}", file=sys.stderr)
    errs = real_errors(records)
    for r in errs:
        print(f"report.py: error record: {r['scenario']} / {r['system']}: {r['error']}", file=sys.stderr)
    by_source = {}
    for r in records:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    print("collected " + ", ".join(f"{n} from {s}" for s, n in by_source.items()) + f" -> {args.out}")
    return 1 if problems or errs else 0


# ----------------------------------------------------------------------------- helpers

def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        die(f"cannot read {path}: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        die(f"{path}: not a results document (want an object with a 'records' list)")
    return doc


def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def system_key(s):
    return (SYSTEM_ORDER.index(s), s) if s in SYSTEM_ORDER else (len(SYSTEM_ORDER), s)


def good(records, scenario):
    return [r for r in records if r.get("scenario") == scenario and not r.get("error")]


def median_of(rows, field, get=None):
    vals = [get(r, field) if get else num(r.get(field)) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def rate(v):
    if v is None:
        return "—"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:#.3g}".rstrip(".") + f" {unit}"
    return f"{v:#.3g}".rstrip(".")


def us(v):
    if v is None:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.3g} s"
    if v >= 1000:
        return f"{v / 1000:.3g} ms"
    return f"{v:.3g} µs"


def g(v, digits=4):
    """A number for a table: at most `digits` significant digits, no exponent below 1e9."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or (abs(v) >= 10 ** digits and v == int(v)):
        return str(int(v))
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt_ratio(x):
    if x is None:
        return "—"
    return f"{x:.3g}x" if x < 100 else f"{x:,.0f}x"


def layout(r):
    return f"{r.get('producers')}P/{r.get('consumers')}C"


def extra(r, key):
    e = r.get("extra")
    return e.get(key) if isinstance(e, dict) else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


# ----------------------------------------------------------------------------- markdown

def full_path_groups(records):
    """{(payload, producers, consumers): {system: median tasks/s}} over full_path records."""
    groups = {}
    for r in good(records, "full_path"):
        k = (r.get("payload_bytes"), r.get("producers"), r.get("consumers"))
        groups.setdefault(k, {}).setdefault(r["system"], []).append(r)
    return {k: {s: median_of(rows, "tasks_per_s") for s, rows in v.items()} for k, v in groups.items()}


def sort_layout_key(k):
    payload, p, c = k
    return (p or 0, c or 0, payload or 0)


# ----------------------------------------------------------------------------- floors, ratios

def sel(scenario, system=None, field="tasks_per_s", payload=None, layout=None):
    """The rows a ratio takes a value from: a scenario, a system, the field, and for the
    full path a payload and a layout (producers, consumers)."""
    return {"scenario": scenario, "system": system, "field": field, "payload": payload, "layout": layout}


def matches(r, s):
    if r.get("scenario") != s["scenario"] or r.get("error"):
        return False
    if s["system"] is not None and r.get("system") != s["system"]:
        return False
    if s["payload"] is not None and r.get("payload_bytes") != s["payload"]:
        return False
    return s["layout"] is None or (r.get("producers"), r.get("consumers")) == s["layout"]


def FP(system):
    return sel("full_path", system, payload=64, layout=(1, 1))


def MICRO(name):
    return sel("micro/" + name)


# The floors: (label, numerator, denominator, op, bound). Each is judged on the median of
# its ratio taken round by round (bench/run measures the rows of every floor once a round:
# shmsched_throughput --rounds, and rounds of shmsched_bench); "≥" is met when that median
# is at least the bound, "≤" when it is at most.
FLOORS = (
    ("full path (Consumer) ≥ 3x Boost message_queue", FP("shmsched"), FP("boost_mq"), "≥", 3.0),
    ("full path (Consumer) ≥ 300x Redis, unpipelined", FP("shmsched"), FP("redis"), "≥", 300.0),
    ("batch calls ≥ 8x Boost message_queue", MICRO("BM_cross_shmsched_process_batch"),
     MICRO("BM_cross_boost_mq_process"), "≥", 8.0),
    ("one-priority single calls ≥ 0.9x moodycamel single", MICRO("BM_cross_shmsched_process_single_level0"),
     MICRO("BM_cross_moodycamel_thread_single"), "≥", 0.9),
    ("sleeping wake-up p50 ≤ 1.2x Boost message_queue's", sel("latency_sleeping", "shmsched", "p50_us"),
     sel("latency_sleeping", "boost_mq", "p50_us"), "≤", 1.2),
    ("result round trip (keep_result + wait) ≥ 100x Redis as a result backend",
     sel("result_round_trip", "shmsched"), sel("result_round_trip", "redis"), "≥", 100.0),
    ("chain of 1,000 dependent tasks: link p50 ≤ 2x the sleeping wake-up p50", sel("chain", "shmsched", "p50_us"),
     sel("latency_sleeping", "shmsched", "p50_us"), "≤", 2.0),
    ("100,000 tasks as a group ≤ 1.3x the time of the same tasks without one", MICRO("BM_group_round/0"),
     MICRO("BM_group_round/1"), "≤", 1.3),
    ("10,000 tasks through 1,000/s (burst 10): wall ≤ 1.02x the ideal", sel("rate_limit", "shmsched", "wall_ms"),
     sel("rate_limit", "ideal", "wall_ms"), "≤", 1.02),
    ("10,000 tasks through 1,000/s (burst 10): wall ≥ 0.98x the ideal", sel("rate_limit", "shmsched", "wall_ms"),
     sel("rate_limit", "ideal", "wall_ms"), "≥", 0.98),
    ("batch handler ≥ 3x a per-task handler, 1 µs a call", sel("batch_handler", "batch"),
     sel("batch_handler", "per_task"), "≥", 3.0),
    ("rate limit: most starts within one interval ≤ the burst", sel("rate_limit_window", "shmsched", "max_started"),
     sel("rate_limit_window", "burst", "max_started"), "≤", 1.0),
)

# Ratios shown for context, without a floor: (label, numerator, denominator). For
# throughput > 1 means the first is faster.
RATIOS = (
    ("one thread, enqueue + take: shmsched / moodycamel", MICRO("BM_pair_shmsched_client/0"),
     MICRO("BM_pair_moodycamel")),
    ("one thread, enqueue + take: shmsched / tbb", MICRO("BM_pair_shmsched_client/0"), MICRO("BM_pair_tbb")),
    ("process single calls, priorities 0..7 / Boost message_queue", MICRO("BM_cross_shmsched_process_single"),
     MICRO("BM_cross_boost_mq_process")),
    ("process single calls, priorities 0..7 / moodycamel thread single",
     MICRO("BM_cross_shmsched_process_single"), MICRO("BM_cross_moodycamel_thread_single")),
    ("process single calls, one priority / tbb thread single", MICRO("BM_cross_shmsched_process_single_level0"),
     MICRO("BM_cross_tbb_thread_single")),
    ("process batch calls / moodycamel thread bulk", MICRO("BM_cross_shmsched_process_batch"),
     MICRO("BM_cross_moodycamel_thread_bulk")),
    ("4 threads on one queue: shmsched / moodycamel", MICRO("BM_mpmc_shmsched/4"), MICRO("BM_mpmc_moodycamel/4")),
    ("4 threads on one queue: shmsched / tbb", MICRO("BM_mpmc_shmsched/4"), MICRO("BM_mpmc_tbb/4")),
    ("semaphore pair, uncontended: shmsched / Boost try_wait", MICRO("BM_sem_pair_shmsched_try"),
     MICRO("BM_sem_pair_boost_try")),
    ("semaphore, 2 processes, capacity 1: shmsched / Boost", MICRO("BM_sem_contended_shmsched"),
     MICRO("BM_sem_contended_boost")),
    ("full path, 64 B 1P/1C: shmsched / Redis pipelined", FP("shmsched"), FP("redis_pipelined")),
    ("scarce resource, wall time: emulated INCR/DECR + retry / shmsched",
     sel("scarce_resource", "emulated_incr_decr", "wall_ms"), sel("scarce_resource", "shmsched", "wall_ms")),
    ("shell tasks: shmctl worker / xargs -P", sel("shell_tasks", "shmctl_worker"), sel("shell_tasks", "xargs")),
)


def value(r, field):
    return num(r.get(field)) if field in r else num(extra(r, field))


def values_by_round(records, s, rounds_only):
    """{round: median value} of the rows `s` selects; round 0 for rows measured once."""
    by = {}
    for r in records:
        if matches(r, s):
            rnd = extra(r, "round") or 0
            v = value(r, s["field"])
            if v is not None and (rnd or not rounds_only):
                by.setdefault(rnd, []).append(v)
    return {k: statistics.median(v) for k, v in by.items()}


def round_ratios(records, a, b):
    """Ratios of a over b, one a round in which both ran; or, when no round has both, the
    one ratio of the medians of all their rows."""
    na, nb = values_by_round(records, a, True), values_by_round(records, b, True)
    both = sorted(set(na) & set(nb))
    if both:
        return [ratio(na[k], nb[k]) for k in both], True
    ma = median_of([r for r in records if matches(r, a)], a["field"], value)
    mb = median_of([r for r in records if matches(r, b)], b["field"], value)
    x = ratio(ma, mb)
    return ([] if x is None else [x]), False


def floor_rows(records):
    """(label, ratios, median, rounds meeting it, verdict) a floor."""
    rows = []
    for label, a, b, op, bound in FLOORS:
        xs, in_rounds = round_ratios(records, a, b)
        xs = [x for x in xs if x is not None]
        if not xs:
            why = None
            for s in (a, b):
                why = why or next((r["error"] for r in records if r.get("scenario") == s["scenario"]
                                   and r.get("system") == s["system"] and r.get("error")), None)
            rows.append((label, [], None, None, f"n/a ({why or 'not measured'})"))
            continue
        ok = (lambda x: x >= bound) if op == "≥" else (lambda x: x <= bound)
        med = statistics.median(xs)
        rows.append((label, xs, med, sum(1 for x in xs if ok(x)) if in_rounds else None,
                     "yes" if ok(med) else "no"))
    return rows


def context_value(records, s):
    """The median of the rows `s` selects: of those measured once when there are any (the
    micro step's, not its rounds'), else of every round."""
    rows = [r for r in records if matches(r, s)]
    once = [r for r in rows if not extra(r, "round")]
    return median_of(once or rows, s["field"], value)


def ratio_rows(records):
    rows = []
    for label, a, b in RATIOS:
        ma, mb = context_value(records, a), context_value(records, b)
        x = ratio(ma, mb)
        if x is not None:
            rows.append((label, fmt_ratio(x), f"{g(ma, 3)} vs {g(mb, 3)}" if a["field"] != "tasks_per_s"
                         else f"{rate(ma)}/s vs {rate(mb)}/s"))
    return rows


def cmd_markdown(args):
    doc = load(args.input)
    recs = doc["records"]
    m = doc.get("machine", {})
    L = ["# shmsched benchmark results", ""]
    L += [f"* machine: {m.get('cores', '?')} cores, {m.get('cpu_model', '?')}, Linux {m.get('kernel', '?')}"
          + (f", load average at start {m['load_at_start']}" if m.get("load_at_start") else ""),
          f"* date: {m.get('date', '?')}",
          f"* command: `{m.get('command', '?')}`"]
    for k in ("mode", "build", "git"):
        if m.get(k):
            L.append(f"* {k}: {m[k]}")
    L += ["", "Ratios are shmsched over the peer, taken within this one run. For throughput > 1 means "
          "shmsched is faster; for latency < 1 means shmsched is faster. A floor is judged on the median "
          "of its ratio taken round by round: the rows of every floor run once a round, within seconds "
          "of each other, so a slow phase of a shared host falls on both.", ""]

    steps = doc.get("steps", [])
    bad = [s for s in steps if s.get("status") not in ("ok",)]
    if bad:
        L += ["## Steps that did not complete", ""]
        L += table(["step", "status", "exit code", "note", "log"],
                   [(s["name"], s["status"], s.get("exit_code", "—"), s.get("note", ""), f"`{s.get('log', '')}`")
                    for s in bad])
        L.append("")

    L += ["## Floors", ""]
    L += table(["floor", "ratio, round by round", "median", "rounds meeting it", "met?"],
               [(label, ", ".join(fmt_ratio(x) for x in xs) or "—", fmt_ratio(med),
                 "—" if n is None else f"{n} of {len(xs)}", verdict)
                for label, xs, med, n, verdict in floor_rows(recs)])
    L.append("")

    fp = full_path_groups(recs)
    if fp:
        peers = sorted({s for v in fp.values() for s in v if s != "shmsched"}, key=system_key)
        L += ["## Full path: enqueue → no-op handler → ack (tasks/s)", "",
              "Rows run once a round are the medians of their rounds.", ""]
        head = ["payload", "layout", "shmsched"]
        for p in peers:
            head += [p, f"shmsched / {p}"]
        rows = []
        for k in sorted(fp, key=sort_layout_key):
            v = fp[k]
            row = [f"{k[0]} B", f"{k[1]}P/{k[2]}C", rate(v.get("shmsched"))]
            for p in peers:
                row += [rate(v.get(p)), fmt_ratio(ratio(v.get("shmsched"), v.get(p)))]
            rows.append(row)
        L += table(head, rows)
        L.append("")

    lat_rows = []
    for sc in ("latency_busy", "latency_sleeping"):
        by = {}
        for r in good(recs, sc):
            by.setdefault(r["system"], []).append(r)
        base = by.get("shmsched")
        for s in sorted(by, key=system_key):
            q = {f: median_of(by[s], f) for f in ("p50_us", "p99_us", "p999_us")}
            b = {f: median_of(base, f) for f in ("p50_us", "p99_us")} if base else {}
            lat_rows.append((sc, s, us(q["p50_us"]), us(q["p99_us"]), us(q["p999_us"]),
                             "—" if s == "shmsched" else fmt_ratio(ratio(b.get("p50_us"), q["p50_us"])),
                             "—" if s == "shmsched" else fmt_ratio(ratio(b.get("p99_us"), q["p99_us"]))))
    if lat_rows:
        L += ["## Latency, enqueue → handler start", "",
              "`latency_busy`: the consumer is running; `latency_sleeping`: it is asleep and must be woken "
              "(medians of the rounds' percentiles).", ""]
        L += table(["scenario", "system", "p50", "p99", "p99.9", "shmsched / it, p50", "shmsched / it, p99"],
                   lat_rows)
        L.append("")

    sc_by = {}
    for r in good(recs, "scaling"):
        sc_by.setdefault(r.get("producers"), {}).setdefault(r["system"], []).append(r)
    if sc_by:
        systems = sorted({s for v in sc_by.values() for s in v}, key=system_key)
        peers = [s for s in systems if s != "shmsched"]
        L += ["## Scaling: N producers + N consumers (tasks/s)", ""]
        head = ["N"] + systems + [f"shmsched / {p}" for p in peers]
        rows = []
        for n in sorted(sc_by, key=lambda x: x or 0):
            v = {s: median_of(rows_, "tasks_per_s") for s, rows_ in sc_by[n].items()}
            rows.append([n] + [rate(v.get(s)) for s in systems]
                        + [fmt_ratio(ratio(v.get("shmsched"), v.get(p))) for p in peers])
        L += table(head, rows)
        L.append("")

    beh = []

    def opt(r, key, label, suffix=""):
        v = extra(r, key)
        return f", {label} {g(v)}{suffix}" if v is not None else ""

    for r in sorted(good(recs, "priority"), key=lambda r: system_key(r["system"])):
        beh.append(("priority", r["system"], f"inversions {g(extra(r, 'inversions'))}"
                    + opt(r, "inverted_runs", "inverted runs") + opt(r, "fifo_violations", "FIFO violations")
                    + (f", {rate(num(r.get('tasks_per_s')))} tasks/s" if num(r.get("tasks_per_s")) else "")))
    for r in sorted(good(recs, "starvation"), key=lambda r: system_key(r["system"])):
        beh.append(("starvation", r["system"], f"max wait {g(extra(r, 'max_wait_ms'))} ms, aging bound "
                    f"{g(extra(r, 'aging_bound_ms'))} ms" + opt(r, "tolerance_ms", "tolerance", " ms")
                    + f", within bound: {'yes' if extra(r, 'within_bound') else 'no'}"
                    + (f"; p50 {us(num(r.get('p50_us')))}, p99 {us(num(r.get('p99_us')))}"
                       if num(r.get("p50_us")) is not None else "")))
    for r in sorted(good(recs, "primary_secondary"), key=lambda r: system_key(r["system"])):
        beh.append(("primary_secondary", r["system"],
                    f"p50 {us(num(r.get('p50_us')))}, p99 {us(num(r.get('p99_us')))}, "
                    f"p99.9 {us(num(r.get('p999_us')))}" + opt(r, "helped", "helped")))
    for r in sorted(good(recs, "scarce_resource"), key=lambda r: system_key(r["system"])):
        beh.append(("scarce_resource", r["system"],
                    f"wall / ideal {g(extra(r, 'wall_over_ideal'))}" + opt(r, "wall_ms", "wall", " ms")
                    + opt(r, "max_concurrent", "max concurrent") + opt(r, "in_use_after", "in use after")
                    + opt(r, "retries", "retries")))
    for sys_ in ("shmctl_worker", "xargs"):
        rows_ = [r for r in good(recs, "shell_tasks") if r.get("system") == sys_]
        if rows_:
            beh.append(("shell_tasks", sys_, f"{rate(median_of(rows_, 'tasks_per_s'))} tasks/s "
                        f"(median of {len(rows_)} rounds)"))
    if beh:
        L += ["## Scheduling behaviour and shell tasks", ""]
        L += table(["scenario", "system", "result"], beh)
        L.append("")

    cg = []
    for workload, what in CALLGRIND_WORKLOADS.items():
        rows_ = [r for r in good(recs, "callgrind_" + workload) if num(extra(r, "instructions_per_task"))]
        if rows_:
            cg.append((what, f"{num(extra(rows_[0], 'instructions_per_task')):,.0f}"))
    if cg:
        L += ["## Instructions per task (callgrind)", ""]
        L += table(["workload", "instructions per task"], cg)
        L.append("")

    rr = ratio_rows(recs)
    if rr:
        L += ["## Other ratios (no floor)", ""]
        L += table(["ratio", "value", "values"], rr)
        L.append("")

    micro = [r for r in recs if str(r.get("scenario", "")).startswith("micro/") and not extra(r, "round")]
    if micro:
        L += ["## Micro-benchmarks (shmsched_bench)", ""]
        L += table(["benchmark", "system", "tasks/s", "note"],
                   [(r["scenario"][len("micro/"):], r["system"], rate(num(r.get("tasks_per_s"))),
                     r.get("error") or extra(r, "value_of") or "")
                    for r in sorted(micro, key=lambda r: r["scenario"])])
        L.append("")

    absent = [r for r in recs if is_absent(r)]
    errors = real_errors(recs)
    if absent or errors or doc.get("problems"):
        L += ["## Absent rows and errors", ""]
        seen = set()
        for r in absent:
            k = (r["system"], r["error"])
            if k not in seen:
                seen.add(k)
                L.append(f"* absent: {r['system']}: {r['error']}")
        for r in errors:
            L.append(f"* **error**: {r['scenario']} / {r['system']}: {r['error']}")
        for p in doc.get("problems", []):
            L.append(f"* **problem**: {p}")
        L.append("")

    text = "\n".join(L)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if args.print_floors:
        print("floors:")
        for label, xs, med, n, verdict in floor_rows(recs):
            print(f"  [{verdict}] {label}: median {fmt_ratio(med)} of " + (", ".join(fmt_ratio(x) for x in xs) or "—"))
    return 0


# ----------------------------------------------------------------------------- plots

def gp_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def terminal_line(term, width, height):
    if term == "pngcairo":
        return f'set terminal pngcairo size {width},{height} font "sans,10" noenhanced'
    return f"set terminal png size {width},{height} noenhanced"


def machine_subtitle(doc):
    m = doc.get("machine", {})
    return f"{m.get('cores', '?')} cores, {m.get('cpu_model', '?')}, {m.get('date', '')[:10]}"


def plot_full_path(doc, data_dir, png_dir, term):
    fp = full_path_groups(doc["records"])
    if not fp:
        return None, "no full_path records"
    systems = sorted({s for v in fp.values() for s in v if v[s] is not None}, key=system_key)
    if not systems:
        return None, "no full_path rates"
    keys = sorted(fp, key=lambda k: (k != (64, 1, 1),) + sort_layout_key(k))
    dat = os.path.join(data_dir, "full_path.dat")
    lab = os.path.join(data_dir, "full_path_labels.dat")
    n = len(systems)
    gap = 1
    with open(dat, "w", encoding="utf-8") as f, open(lab, "w", encoding="utf-8") as g:
        f.write("# group " + " ".join(systems) + "\n")
        for i, k in enumerate(keys):
            vals = [fp[k].get(s) for s in systems]
            tic = f"{k[0]} B {k[1]}P/{k[2]}C"
            shm = fp[k].get("shmsched")
            for s in systems:
                x = ratio(shm, fp[k].get(s)) if s != "shmsched" else None
                if x is not None:
                    tic += f"\nshmsched = {fmt_ratio(x)} {s}"
            f.write(gp_str(tic) + " "
                    + " ".join("?" if v is None else repr(float(v)) for v in vals) + "\n")
            for j, v in enumerate(vals):
                if v is not None:
                    x = i + (j - (n - 1) / 2.0) / (n + gap)
                    g.write(f"{x:.4f} {float(v)!r} {gp_str(rate(v).replace(' ', ''))}\n")
    vals = [v for k in keys for v in fp[k].values() if v]
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals) * 3))
    png = os.path.join(png_dir, "full_path_throughput.png")
    plots = [f"{gp_str(dat)} using {j + 2}:xtic(1) title {gp_str(s)}" for j, s in enumerate(systems)]
    plots.append(f"{gp_str(lab)} using 1:2:3 with labels offset 0,0.7 font \",8\" notitle")
    gp = [terminal_line(term, 1100, 620),
          f"set output {gp_str(png)}",
          f"set title {gp_str('full path: enqueue -> no-op handler -> ack, tasks/s (log scale)  —  ' + machine_subtitle(doc))}",
          'set datafile missing "?"',
          "set style data histograms",
          f"set style histogram clustered gap {gap}",
          "set style fill solid 0.85 border -1",
          "set boxwidth 1",
          "set logscale y",
          f"set yrange [{lo}:{hi}]",
          f"set xrange [-0.6:{len(keys) - 0.4}]",
          f"set bmargin {4 + len(systems)}",
          'set format y "%.0s%c"',
          'set ylabel "tasks/s"',
          f'set xlabel "payload and layout (P producer / C consumer processes); ratios: shmsched over the peer" '
          f'offset 0,-{len(systems) - 1}',
          "set grid ytics mytics",
          "set key top right",
          "set xtics nomirror",
          "plot " + ", \\\n     ".join(plots)]
    return write_gp(data_dir, "full_path", gp), png


def cdf_points(r):
    cdf = extra(r, "cdf")
    if isinstance(cdf, list) and cdf:
        pts = [(num(p[0]), num(p[1])) for p in cdf if isinstance(p, (list, tuple)) and len(p) >= 2]
        pts = [(x, y) for x, y in pts if x is not None and y is not None and x > 0]
        if pts:
            return pts, True
    pts = [(num(r.get(f)), q) for f, q in (("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999))]
    return [(x, y) for x, y in pts if x is not None and x > 0], False


def plot_latency(doc, scenario, title, data_dir, png_dir, term, unit):
    # A system measured once a round is drawn from its round with the median p50.
    by = {}
    for r in good(doc["records"], scenario):
        by.setdefault((r["system"], layout(r)), []).append(r)
    rows = []
    for k in sorted(by, key=lambda k: (system_key(k[0]), k[1])):
        rs = sorted(by[k], key=lambda r: num(r.get("p50_us")) or 0)
        rows.append(rs[(len(rs) - 1) // 2])
    p50s = [num(r.get("p50_us")) for r in rows if num(r.get("p50_us"))]
    scale = 1.0
    if p50s and min(p50s) >= 20000:  # waits of tens of ms and more: plot in ms
        scale, unit = 1000.0, "ms"
    series = []
    min_tail = 1.0
    xs_all = []
    for i, r in enumerate(rows):
        pts, full = cdf_points(r)
        if not pts:
            continue
        pts = [(x / scale, y) for x, y in pts]
        min_tail = min([min_tail] + [1.0 - y for _, y in pts if 1.0 - y > 1e-9])
        xs_all.extend(x for x, _ in pts)
        if full and pts[0][1] > 0:
            # The CDF starts at 0 just below its first bucket (buckets are 2^(1/16) wide).
            pts.insert(0, (pts[0][0] / 2 ** (1 / 16), 0.0))
        name = r["system"] + ("" if (r.get("producers"), r.get("consumers")) == (1, 1) else f" {layout(r)}")
        dat = os.path.join(data_dir, f"{scenario}_{i}.dat")
        with open(dat, "w", encoding="utf-8") as f:
            f.write("# us cumulative_fraction tail(1-fraction)\n")
            for x, y in pts:
                tail = 1.0 - y
                f.write(f"{x!r} {y!r} {repr(tail) if tail > 1e-9 else '?'}\n")
        p50, p99 = num(r.get("p50_us")), num(r.get("p99_us"))
        label = name + (f"  (p50 {us(p50)}, p99 {us(p99)})" if p50 and p99 else "")
        if unit != "µs":
            label = label.replace("µs", unit)
        series.append((dat, label, full))
    if not series:
        return None, f"no {scenario} records with a CDF or percentiles"
    png = os.path.join(png_dir, f"{scenario}_cdf.png")
    # The aging bound, where a scenario has one (starvation).
    bounds = sorted({num(extra(r, "aging_bound_ms")) for r in rows} - {None, 0})
    marks = []
    for b in bounds:
        x = b * 1000.0 / scale
        marks.append(f"set arrow from {x!r}, graph 0 to {x!r}, graph 1 nohead dt 2 lc rgb 'gray40'")
        marks.append(f"set label {gp_str(f'aging bound {g(b)} ms')} at {x!r}, graph 0.5 right offset -0.5,0 "
                     "tc rgb 'gray40'")

    def plot_cmd(col):
        parts = []
        for k, (dat, label, full) in enumerate(series):
            style = "steps" if full else "linespoints"
            parts.append(f"{gp_str(dat)} using 1:{col} with {style} lw 2 lc {k + 1} title {gp_str(label)}")
        return "plot " + ", \\\n     ".join(parts)

    gp = [terminal_line(term, 1200, 580),
          f"set output {gp_str(png)}",
          'set datafile missing "?"',
          "set multiplot layout 1,2 title " + gp_str(f"{title}  —  {machine_subtitle(doc)}"),
          "set logscale x",
          f"set xrange [{10 ** math.floor(math.log10(min(xs_all))):g}:{10 ** math.ceil(math.log10(max(xs_all))):g}]",
          'set format x "%g"',
          f'set xlabel "latency ({unit}, log scale)"',
          "set grid xtics mxtics ytics",
          "set bmargin 7",
          "set key at screen 0.5, screen 0.015 center bottom horizontal maxcols 3 width 2",
          'set ylabel "cumulative fraction"',
          "set yrange [0:1]",
          'set title "CDF"',
          *marks,
          plot_cmd(2),
          "set logscale y",
          f"set yrange [{max(1e-7, 10 ** math.floor(math.log10(min_tail))):g}:1]",
          'set format y "%g"',
          'set ylabel "fraction slower (1 - CDF, log scale)"',
          'set title "tail (colours as on the left)"',
          "unset key",
          plot_cmd(3),
          "unset multiplot"]
    return write_gp(data_dir, scenario, gp), png


def plot_scaling(doc, data_dir, png_dir, term):
    by = {}
    for r in good(doc["records"], "scaling"):
        v = num(r.get("tasks_per_s"))
        if v is not None:
            by.setdefault(r["system"], {}).setdefault(r.get("producers") or 0, []).append(v)
    if not by:
        return None, "no scaling records"
    series = []
    allv = []
    for i, s in enumerate(sorted(by, key=system_key)):
        dat = os.path.join(data_dir, f"scaling_{i}.dat")
        with open(dat, "w", encoding="utf-8") as f:
            f.write("# N tasks_per_s\n")
            for n in sorted(by[s]):
                v = statistics.median(by[s][n])
                allv.append(v)
                f.write(f"{n} {v!r}\n")
        series.append((dat, s))
    ns = sorted({n for s in by.values() for n in s})
    png = os.path.join(png_dir, "scaling.png")
    log = max(allv) / max(min(allv), 1e-9) > 20
    c = doc.get("machine", {}).get("cores")
    gp = [terminal_line(term, 1000, 600),
          f"set output {gp_str(png)}",
          f"set title {gp_str('scaling: N producer + N consumer processes, total tasks/s  —  ' + machine_subtitle(doc))}",
          'set xlabel "N (producers = consumers = N processes)"',
          'set ylabel "tasks/s' + (' (log scale)"' if log else '"'),
          f"set xrange [{max(0, ns[0] - 0.5)}:{ns[-1] + 0.5}]",
          "set xtics 1",
          ("set logscale y" if log else f"set yrange [0:{max(allv) * 1.12!r}]"),
          'set format y "%.1s%c"',
          "set grid",
          "set key top right"]
    if isinstance(c, int) and c > 0:
        gp.append(f"set arrow from {c / 2.0}, graph 0 to {c / 2.0}, graph 1 nohead dt 2 lc rgb 'gray40'")
        gp.append(f"set label {gp_str(f'2N = {c} cores')} at {c / 2.0}, graph 0.95 offset 0.5,0 tc rgb 'gray40'")
    gp.append("plot " + ", \\\n     ".join(f"{gp_str(d)} using 1:2 with linespoints lw 2 pt 7 title {gp_str(s)}"
                                           for d, s in series))
    return write_gp(data_dir, "scaling", gp), png


def write_gp(data_dir, name, lines):
    path = os.path.join(data_dir, f"{name}.gp")
    with open(path, "w", encoding="utf-8") as f:
        f.write("# generated by bench/report.py plot\n" + "\n".join(lines) + "\n")
    return path


def cmd_plot(args):
    doc = load(args.input)
    os.makedirs(args.data_dir, exist_ok=True)
    os.makedirs(args.png_dir, exist_ok=True)
    data_dir = os.path.abspath(args.data_dir)
    png_dir = os.path.abspath(args.png_dir)
    unit = "µs" if args.terminal == "pngcairo" else "us"
    jobs = [
        plot_full_path(doc, data_dir, png_dir, args.terminal),
        plot_latency(doc, "latency_busy", "latency, consumer busy: enqueue -> handler start",
                     data_dir, png_dir, args.terminal, unit),
        plot_latency(doc, "latency_sleeping", "latency, consumer asleep: enqueue -> handler start",
                     data_dir, png_dir, args.terminal, unit),
        plot_latency(doc, "primary_secondary", "primary / secondary: enqueue -> handler start",
                     data_dir, png_dir, args.terminal, unit),
        plot_latency(doc, "starvation", "starvation: level-7 wait, enqueue -> handler start, under a level-0 flood",
                     data_dir, png_dir, args.terminal, unit),
        plot_scaling(doc, data_dir, png_dir, args.terminal),
    ]
    for script, png_or_reason in jobs:
        if script:
            print(f"{script}\t{png_or_reason}")
        else:
            print(f"report.py: no plot: {png_or_reason}", file=sys.stderr)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("micro", help="Google Benchmark JSON -> JSON Lines records")
    p.add_argument("input")
    p.add_argument("--out", default="-")
    p.set_defaults(fn=cmd_micro)
    p = sub.add_parser("rounds", help="Google Benchmark JSON of several rounds -> records with extra.round")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", default="-")
    p.set_defaults(fn=cmd_rounds)
    p = sub.add_parser("callgrind", help="callgrind outputs of two task counts -> one record")
    p.add_argument("points", nargs="+", metavar="N:FILE[,FILE...]")
    p.add_argument("--workload", default="full_path", choices=list(CALLGRIND_WORKLOADS))
    p.add_argument("--out", default="-")
    p.set_defaults(fn=cmd_callgrind)
    p = sub.add_parser("collect", help="merge JSON Lines files into latest.json")
    p.add_argument("inputs", nargs="*", metavar="NAME=FILE")
    p.add_argument("--out", required=True)
    p.add_argument("--command", default="")
    p.add_argument("--steps", help="TSV: name, status, exit code, seconds, log, note")
    p.add_argument("--field", action="append", metavar="KEY=VALUE", help="extra machine field")
    p.set_defaults(fn=cmd_collect)
    p = sub.add_parser("markdown", help="latest.json -> latest.md")
    p.add_argument("input")
    p.add_argument("--out")
    p.add_argument("--print-floors", action="store_true")
    p.set_defaults(fn=cmd_markdown)
    p = sub.add_parser("plot", help="latest.json -> gnuplot data and scripts")
    p.add_argument("input")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--png-dir", required=True)
    p.add_argument("--terminal", choices=("pngcairo", "png"), default="pngcairo")
    p.set_defaults(fn=cmd_plot)
    args = ap.parse_args()
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
