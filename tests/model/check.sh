#!/usr/bin/env bash
# Model-checks a protocol with spin: the model must verify with no error, and a mutant
# of it must fail -- so the check can fail. A model that defines its own mutants
# (`#ifdef MUTANT`, as ring_runs.pml does; semaphore.pml also has MUTANT_<name>s) is
# checked with each of them; otherwise the mutant is a consumer that clears the slot
# before it claims the record, as a Vyukov-style queue does (ring.pml).
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

# The model's own mutants: every macro it tests with `#ifdef MUTANT...` (MUTANT,
# MUTANT_X, ...), each checked alone with -D<name>.
mutants=$(grep -o '^#ifn\?def MUTANT[A-Z0-9_]*' "$model" | sed 's/^#ifn\?def //' | sort -u || true)
if [ -n "$mutants" ]; then
  for m in $mutants; do
    dir=mutant; [ "$m" = MUTANT ] || dir="mutant-$m"
    if run "$dir" "$model" "-D$m"; then
      echo "mutant (the model's own, -D$m): NOT caught (the model checks too little)"; status=1
    else
      echo "mutant (the model's own, -D$m): caught, as it must be"
    fi
  done
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
