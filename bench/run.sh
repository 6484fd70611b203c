#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: builds our hub, the benchmark driver and the
# sink plugins in release mode, then runs every workload against our hub
# and the Python fedmsg-hub (shared/pyfedmsg, venv in $VENV, default
# ~/.cache/pyfedmsg-venv) and writes the medians, the machine and the
# commands. Extra arguments go to `fedmsg-bench suite`, e.g.
#   bench/run.sh --runs 1 --hubs ours          # quick look at our hub only
#   bench/run.sh --markdown /tmp/b.md          # leave BENCHMARKS.md alone
# Takes about ten minutes (the Python hub validates ~900 signed msg/s).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked \
    -p fedmsg-hub -p fedmsg-bench \
    -p fedmsg-bench-counter -p fedmsg-bench-counter-2 \
    -p fedmsg-bench-counter-3 -p fedmsg-bench-counter-4

# The driver starts every hub in its own process group and stops it (also
# when interrupted; the hubs die with it otherwise, PR_SET_PDEATHSIG). The
# trap covers the driver itself if this script is interrupted.
driver=""
trap 'if [ -n "$driver" ]; then kill -TERM "$driver" 2>/dev/null || true; wait "$driver" 2>/dev/null || true; fi' EXIT INT TERM
target/release/fedmsg-bench suite --markdown BENCHMARKS.md --json target/bench-results.json "$@" &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
exit "$status"
