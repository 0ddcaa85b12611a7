#!/usr/bin/env bash
# Every prefetch in the library goes through detail::prefetch (an asm PREFETCHT0): GCC 12
# at -O3 deleted some __builtin_prefetch calls of the take paths, silently, and a take
# from a deep backlog then cost four times as much (docs/benchmarks.md, "Prefetches the
# compiler dropped"). Fails when a __builtin_prefetch appears anywhere else under lib/.
# usage: prefetch_check.sh SOURCE_DIR
set -euo pipefail
src=$1
allowed="$src/lib/include/shmsched/detail/prefetch.hpp"
[ -f "$allowed" ] || { echo "missing $allowed"; exit 1; }
found=$(grep -rn --include='*.hpp' --include='*.cpp' --include='*.h' '__builtin_prefetch' "$src/lib" | grep -v "^$allowed:" || true)
if [ -n "$found" ]; then
  echo "use shmsched::detail::prefetch instead of __builtin_prefetch:"
  echo "$found"
  exit 1
fi
uses=$(grep -rn --include='*.hpp' --include='*.cpp' 'detail::prefetch(' "$src/lib" | wc -l)
echo "prefetches through detail::prefetch: $uses; __builtin_prefetch elsewhere in lib/: none"
[ "$uses" -gt 0 ]
