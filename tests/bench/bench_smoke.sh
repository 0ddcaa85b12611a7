#!/usr/bin/env bash
# Smoke test of the benchmark runner: bench/run --smoke against the binaries of BUILD_DIR,
# then checks its output independently of bench/report.py:
#   latest.json: the machine block, records from every driver (shmsched_bench and its
#   rounds, shmsched_throughput, shmsched_scenarios, and callgrind when valgrind is
#   installed), every record with the required keys and types, latency CDFs well formed,
#   the rows of every floor measured in each of the two rounds;
#   latest.md: a row with a measured ratio for every floor, and the ratio tables;
#   with gnuplot installed: the PNGs exist and are PNG files.
#
#   tests/bench/bench_smoke.sh BUILD_DIR SOURCE_DIR
#
# Exit status 0 when all holds, 1 with one line per problem otherwise, 2 for a usage error.
# The output directory is removed on success and kept (and named) on failure.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build_dir=$1
source_dir=$2
if [ ! -x "$source_dir/bench/run" ]; then
  echo "bench_smoke: $source_dir/bench/run is missing or not executable" >&2
  exit 2
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/shmsched-bench-smoke.XXXXXX")
keep=1
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ "$keep" -eq 0 ]; then
    rm -rf "$out"
  else
    echo "bench_smoke: output kept in $out"
  fi
}
trap cleanup EXIT

start=$(date +%s)
set +e
"$source_dir/bench/run" --smoke --no-build "--build-dir=$build_dir" "--out=$out"
run_rc=$?
set -e
echo "bench_smoke: bench/run --smoke exited $run_rc after $(($(date +%s) - start)) s"

set +e
python3 - "$out" "$run_rc" <<'EOF'
import json, math, os, shutil, sys

out, run_rc = sys.argv[1], int(sys.argv[2])
problems = []
def fail(msg):
    problems.append(msg)

if run_rc != 0:
    fail(f"bench/run --smoke exited {run_rc} (a driver failed or a record carries an error; "
         f"see {out}/raw/*.log and {out}/latest.md)")

REQUIRED = ("scenario", "system", "payload_bytes", "producers", "consumers", "tasks_per_s",
            "p50_us", "p99_us", "p999_us", "cores", "cpu_model")
NUMERIC = ("tasks_per_s", "p50_us", "p99_us", "p999_us")
def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

path = os.path.join(out, "latest.json")
doc = None
if not os.path.isfile(path):
    fail(f"{path} does not exist")
else:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path} is not JSON: {e}")

records = []
if isinstance(doc, dict):
    machine = doc.get("machine")
    if not isinstance(machine, dict):
        fail("latest.json has no 'machine' object")
    else:
        for k in ("cores", "cpu_model", "kernel", "date", "command"):
            if k not in machine:
                fail(f"latest.json machine block lacks '{k}'")
    records = doc.get("records")
    if not isinstance(records, list) or not records:
        fail("latest.json has no records")
        records = []
elif doc is not None:
    fail("latest.json is not a JSON object")

by_source = {}
for i, r in enumerate(records):
    if not isinstance(r, dict):
        fail(f"record {i} is not an object")
        continue
    label = f"record {i} ({r.get('source', '?')}: {r.get('scenario', '?')} / {r.get('system', '?')})"
    by_source.setdefault(r.get("source"), []).append(r)
    missing = [k for k in REQUIRED if k not in r]
    if missing:
        fail(f"{label} lacks required keys: {', '.join(missing)}")
        continue
    if not isinstance(r["scenario"], str) or not isinstance(r["system"], str) or not r["system"]:
        fail(f"{label}: scenario and system must be non-empty strings")
    for k in ("payload_bytes", "producers", "consumers", "cores"):
        if not isinstance(r[k], int) or isinstance(r[k], bool) or r[k] < 0:
            fail(f"{label}: {k} must be a non-negative integer, is {r[k]!r}")
    for k in NUMERIC:
        if r[k] is not None and not is_num(r[k]):
            fail(f"{label}: {k} must be a number or null, is {r[k]!r}")
    if not isinstance(r["cpu_model"], str):
        fail(f"{label}: cpu_model must be a string")
    if "extra" in r and not isinstance(r["extra"], dict):
        fail(f"{label}: extra must be an object")
    if "error" in r and not isinstance(r["error"], str):
        fail(f"{label}: error must be a string")
    cdf = r.get("extra", {}).get("cdf") if isinstance(r.get("extra"), dict) else None
    if cdf is not None:
        ok = isinstance(cdf, list) and cdf and all(
            isinstance(p, list) and len(p) == 2 and is_num(p[0]) and is_num(p[1]) for p in cdf)
        if not ok:
            fail(f"{label}: extra.cdf must be a non-empty list of [us, fraction] pairs")
        else:
            xs = [p[0] for p in cdf]
            ys = [p[1] for p in cdf]
            if xs != sorted(xs) or ys != sorted(ys) or not (0 < ys[-1] <= 1.0 + 1e-9) or abs(ys[-1] - 1) > 1e-6:
                fail(f"{label}: extra.cdf is not a CDF (increasing latencies and fractions ending at 1)")

expected = ["shmsched_bench", "floor_rounds", "shmsched_throughput", "shmsched_scenarios"]
CALLGRIND = ["callgrind_full_path", "callgrind_engine_single", "callgrind_engine_batch"]
if shutil.which("valgrind"):
    expected += CALLGRIND
for src in expected:
    rows = by_source.get(src, [])
    good = [r for r in rows if not r.get("error")]
    if not rows:
        fail(f"no records from {src}")
    elif not good:
        fail(f"every record from {src} carries an error (first: {rows[0].get('error')})")
for r in by_source.get("shmsched_bench", []):
    if not str(r.get("scenario", "")).startswith("micro/"):
        fail(f"shmsched_bench record with scenario {r.get('scenario')!r}: want micro/<benchmark>")
        break
if records and not any(r.get("scenario") == "full_path" and r.get("system") == "shmsched"
                       and is_num(r.get("tasks_per_s")) and r["tasks_per_s"] > 0 for r in records):
    fail("no full_path record of shmsched with tasks_per_s > 0")
rounds = {}
for r in by_source.get("floor_rounds", []):
    rnd = r.get("extra", {}).get("round")
    if not isinstance(rnd, int) or rnd < 1:
        fail(f"floor_rounds record {r.get('scenario')!r}: extra.round must be a round number, is {rnd!r}")
    rounds.setdefault(r.get("scenario"), set()).add(rnd)
for name in ("micro/BM_cross_shmsched_process_batch", "micro/BM_cross_boost_mq_process",
             "micro/BM_cross_shmsched_process_single_level0", "micro/BM_cross_moodycamel_thread_single"):
    if rounds.get(name) != {1, 2}:
        fail(f"floor_rounds: {name} ran in rounds {sorted(rounds.get(name, []))}, want [1, 2]")
for system in ("shmsched", "boost_mq"):
    for sc in ("full_path", "latency_sleeping"):
        got = sorted(r.get("extra", {}).get("round", 0) for r in by_source.get("shmsched_throughput", [])
                     if r.get("scenario") == sc and r.get("system") == system and r.get("payload_bytes") == 64
                     and r.get("producers") == 1 and r.get("consumers") == 1)
        if [x for x in got if x] != [1, 2]:
            fail(f"shmsched_throughput: {sc} / {system} at 64 B 1P/1C ran in rounds {got}, want 1 and 2")
cg = [r for src in CALLGRIND for r in by_source.get(src, []) if not r.get("error")]
for r in cg:
    ipt = r.get("extra", {}).get("instructions_per_task")
    if not is_num(ipt) or ipt <= 0:
        fail(f"callgrind record: extra.instructions_per_task must be a positive number, is {ipt!r}")

md = os.path.join(out, "latest.md")
if not os.path.isfile(md) or os.path.getsize(md) == 0:
    fail(f"{md} does not exist or is empty")
else:
    text = open(md, encoding="utf-8").read()
    for needle in ("## Floors", "| floor | ratio, round by round | median | rounds meeting it | met? |",
                   "## Full path", "shmsched / boost_mq", "## Other ratios (no floor)"):
        if needle not in text:
            fail(f"latest.md lacks {needle!r}")
    # Every floor has a row with a measured ratio (Redis may be absent: then n/a with its reason).
    for label in ("full path (Consumer) ≥ 3x Boost message_queue", "full path (Consumer) ≥ 300x Redis",
                  "batch calls ≥ 8x Boost message_queue", "one-priority single calls ≥ 0.9x moodycamel single",
                  "sleeping wake-up p50 ≤ 1.2x Boost message_queue's"):
        row = next((line for line in text.splitlines() if line.startswith("| " + label)), None)
        if row is None:
            fail(f"latest.md has no floor row {label!r}")
        elif row.rstrip(" |").endswith("n/a (not measured)") or ("Redis" not in label and "| n/a" in row):
            fail(f"latest.md floor row without a measurement: {row}")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
def check_png(name):
    p = os.path.join(out, name)
    if not os.path.isfile(p):
        fail(f"{p} does not exist")
        return
    with open(p, "rb") as f:
        head = f.read(8)
    if head != PNG_MAGIC or os.path.getsize(p) < 1000:
        fail(f"{p} is not a PNG file (or nearly empty: {os.path.getsize(p)} bytes)")

if shutil.which("gnuplot"):
    want = ["full_path_throughput.png"]
    good = [r for r in records if isinstance(r, dict) and not r.get("error")]
    for sc in ("latency_busy", "latency_sleeping"):
        if any(r.get("scenario") == sc for r in good):
            want.append(f"{sc}_cdf.png")
    if any(r.get("scenario") == "scaling" and is_num(r.get("tasks_per_s")) for r in good):
        want.append("scaling.png")
    for name in want:
        check_png(name)
    for name in sorted(os.listdir(out)):
        if name.endswith(".png") and name not in want:
            check_png(name)
else:
    print("bench_smoke: gnuplot is not installed, the plots are not checked")

counts = ", ".join(f"{len(v)} from {k}" for k, v in by_source.items())
if problems:
    print(f"bench_smoke: FAILED ({len(problems)} problems; records: {counts or 'none'})")
    for p in problems:
        print(f"  - {p}")
    sys.exit(1)
print(f"bench_smoke: ok ({counts})")
EOF
check_rc=$?
set -e
if [ "$check_rc" -eq 0 ]; then
  keep=0
  exit 0
fi
exit 1
