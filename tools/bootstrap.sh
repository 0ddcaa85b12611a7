#!/usr/bin/env bash
# One entry point for the README quick start and for CI.
#   bash tools/bootstrap.sh demo        install what is missing, build, run the demo
#   bash tools/bootstrap.sh test        install what is missing, build, run every test
#   bash tools/bootstrap.sh test-asan   the tests under AddressSanitizer + UBSan
#   bash tools/bootstrap.sh test-tsan   the tests under ThreadSanitizer
#   bash tools/bootstrap.sh lint        clang-format check of every C++ file, clang-tidy on lib/
# Debian 12, as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(g++ cmake ninja-build pkg-config libboost-dev libtbb-dev libconcurrentqueue-dev
          libbenchmark-dev libgtest-dev libcli11-dev nlohmann-json3-dev spin tmux clang libclang-rt-14-dev help2man
          clang-format clang-tidy python3-croniter tzdata)
# The benchmark peers and tools (bench/run): Redis through hiredis, plots, callgrind.
# The build and the tests work without them (the bench smoke test then checks fewer
# rows), so a failure to install them is a warning, not an error.
OPTIONAL_PACKAGES=(redis-server libhiredis-dev gnuplot-nox valgrind)
JOBS=$(nproc)

missing_of() {  # missing_of PKG... : prints the ones not installed
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install_missing() {
  local missing optional
  mapfile -t missing < <(missing_of "${PACKAGES[@]}")
  mapfile -t optional < <(missing_of "${OPTIONAL_PACKAGES[@]}")
  [ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  if [ ${#missing[@]} -ne 0 ]; then
    echo "== installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ ${#optional[@]} -ne 0 ]; then
    echo "== installing benchmark peers: ${optional[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null ||
      echo "== warning: could not install ${optional[*]}; the benchmark rows that need them will be absent"
  fi
}

build() {  # build DIR [cmake args...] [--target T...]
  local dir=$1
  shift
  local args=() targets=()
  while [ $# -gt 0 ]; do
    if [ "$1" = "--target" ]; then
      shift
      targets=("$@")
      break
    fi
    args+=("$1")
    shift
  done
  cmake -S . -B "$dir" -G Ninja "${args[@]}" >/dev/null
  if [ ${#targets[@]} -ne 0 ]; then
    cmake --build "$dir" -j "$JOBS" --target "${targets[@]}"
  else
    cmake --build "$dir" -j "$JOBS"
  fi
}

run_tests() {  # run_tests DIR
  # The soak label repeats tests thousands of times; run it on its own (ctest -L soak).
  ctest --test-dir "$1" --output-on-failure -j "$JOBS" --timeout 300 -LE soak
}

install_missing
case "${1:-}" in
  demo)
    # Only what the demo and the operator's tool need; `test` builds the rest.
    build build -DCMAKE_BUILD_TYPE=Release --target scheduler_demo priority_demo shmctl
    ./build/examples/scheduler_demo
    ;;
  test)
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    run_tests build
    ;;
  test-asan)
    build build-asan -DCMAKE_BUILD_TYPE=Debug "-DSHMSCHED_SANITIZE=address;undefined" \
      -DSHMSCHED_BUILD_BENCH=OFF -DSHMSCHED_BUILD_EXAMPLES=OFF -DSHMSCHED_BUILD_TOOLS=OFF
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      SHMSCHED_STRESS_SCALE=0.2 run_tests build-asan
    ;;
  test-tsan)
    build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMSCHED_SANITIZE=thread \
      -DSHMSCHED_BUILD_BENCH=OFF -DSHMSCHED_BUILD_EXAMPLES=OFF -DSHMSCHED_BUILD_TOOLS=OFF
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 SHMSCHED_STRESS_SCALE=0.05 run_tests build-tsan
    ;;
  lint)
    # Any formatting difference (.clang-format) or clang-tidy finding (.clang-tidy) on
    # the library's sources fails.
    find lib tests tools bench examples \( -name '*.cpp' -o -name '*.hpp' \) -print0 |
      xargs -0 clang-format --dry-run --Werror
    # Configured only: clang-tidy needs the compile commands, not a build.
    cmake -S . -B build-lint -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMSCHED_BUILD_TESTS=OFF \
      -DSHMSCHED_BUILD_BENCH=OFF -DSHMSCHED_BUILD_EXAMPLES=OFF -DSHMSCHED_BUILD_TOOLS=OFF >/dev/null
    run-clang-tidy -p build-lint -j "$JOBS" -quiet "$PWD/lib/src/.*\.cpp\$"
    # And a file reads in a few sittings: none in lib/ over 600 lines.
    long=$(find lib \( -name '*.cpp' -o -name '*.hpp' \) -exec awk 'END { if (NR > 600) print FILENAME ": " NR " lines" }' {} \;)
    [ -z "$long" ] || { echo "lint: files over 600 lines:" >&2; echo "$long" >&2; exit 1; }
    ;;
  *)
    echo "usage: $0 demo|test|test-asan|test-tsan|lint" >&2
    exit 2
    ;;
esac
