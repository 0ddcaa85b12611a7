#!/usr/bin/env bash
# Model-checks the ring protocol with spin: the model must verify with no error, and a
# mutant of it must fail -- so the check can fail. A model that defines its own mutant
# (`#ifdef MUTANT`, as ring_runs.pml does) is checked with it; otherwise the mutant is a
# consumer that clears the slot before it claims the record, as a Vyukov-style queue
# does (ring.pml).
# usage: check.sh MODEL WORKDIR
set -euo pipefail
model=$(readlink -f "$1")
work=$2
rm -rf "$work" && mkdir -p "$work" && cd "$work"

run() {  # run NAME FILE [SPIN FLAGS] -> prints pan's summary, returns pan's error count
  mkdir -p "$1" && cd "$1"
  spin "${@:3}" -a "$2" >/dev/null
  gcc -O2 -DSAFETY -DCOLLAPSE -w -o pan pan.c  # COLLAPSE: about a third of the memory
  ./pan -m400000 > pan.out 2>&1 || true
  grep -E "errors:|states, stored|assertion violated" pan.out | sed "s/^/  $1: /"
  local errors
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out)
  cd ..
  return "${errors:-1}"
}

status=0
if run model "$model"; then
  echo "model: verified (no assertion violation, no invalid end state)"
else
  echo "model: FAILED"; status=1
fi

if grep -q '#ifdef MUTANT' "$model"; then
  if run mutant "$model" -DMUTANT; then
    echo "mutant (the model's own, -DMUTANT): NOT caught (the model checks too little)"; status=1
  else
    echo "mutant (the model's own, -DMUTANT): caught, as it must be"
  fi
  exit $status
fi

python3 - "$model" mutant.pml <<'PY'
import sys
s = open(sys.argv[1]).read()
a = s.index('          atomic {                                     /* T1 + T2')
b = s.index('          atomic { if :: (head < h + 1)')
claim = s[a:s.index('          CRASH(me);\n', a)]
clear = s[s.index('          atomic {                                     /* R4:'):b]
open(sys.argv[2], 'w').write(s[:a] + clear + '          CRASH(me);\n' + claim + s[b:])
PY
if run mutant "$PWD/mutant.pml"; then
  echo "mutant: NOT caught (the model checks too little)"; status=1
else
  echo "mutant (clear before claim): caught, as it must be"
fi
exit $status
