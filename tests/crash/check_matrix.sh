#!/usr/bin/env bash
# The fault-point matrix cannot shrink silently: every point named in
# lib/include/shmsched/detail/fault.hpp must be armed by some test (and those tests fail
# when their process does not die at the point). usage: check_matrix.sh SOURCE_DIR
set -euo pipefail
src=$1
points=$(grep -oE '^\s+X\([a-z_]+\)' "$src/lib/include/shmsched/detail/fault.hpp" | sed -E 's/.*X\(([a-z_]+)\)/\1/')
missing=0
count=0
for p in $points; do
  count=$((count + 1))
  if ! grep -rqE "Point::$p\b" "$src/tests"; then
    echo "fault point '$p' is armed by no test"
    missing=$((missing + 1))
  fi
done
echo "fault points: $count, armed by tests: $((count - missing))"
[ "$missing" -eq 0 ]
