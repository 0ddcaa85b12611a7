#!/usr/bin/env bash
# Builds the segment fuzz target with clang's libFuzzer (+ ASan, UBSan) and runs it for
# a bounded time over the seed corpus. usage: run.sh SOURCE_DIR WORK_DIR [SECONDS]
set -euo pipefail
src=$(readlink -f "$1")
work=$2
seconds=${3:-60}
mkdir -p "$work/corpus"
cp -n "$src"/tests/fuzz/corpus/* "$work/corpus/" 2>/dev/null || true
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I "$src/lib/include" "$src"/lib/src/*.cpp "$src/tests/fuzz/segment_fuzz.cpp" -lrt -lpthread \
  -o "$work/segment_fuzz"
cd "$work"
./segment_fuzz -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 corpus 2>&1 | tee fuzz.log |
  grep -E "^Done|ERROR|SUMMARY" || true
grep -q "ERROR" fuzz.log && exit 1
execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' fuzz.log | tail -1)
echo "fuzz: ${execs:-0} executions in ${seconds} s, no crash, hang or out-of-bounds read"
[ -n "$execs" ]
