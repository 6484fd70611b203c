#!/usr/bin/env bash
# Installs what the tests need, checks the gates (format, clippy, rustdoc,
# plugin MSRV: scripts/gates.sh), builds the whole workspace (the end-to-end
# tests load the plugin .so files and start the binaries it produces) and
# runs every test. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# The real Python fedmsg, for interop tests (venv in $VENV).
export VENV="${VENV:-$HOME/.cache/pyfedmsg-venv}"
shared="$(cd .. && pwd)/shared"
if [[ -x "$shared/pyfedmsg/setup.sh" ]]; then
    (cd "$shared/pyfedmsg" && ./setup.sh) || { echo "test.sh: pyfedmsg setup failed" >&2; exit 1; }
else
    echo "test.sh: $shared/pyfedmsg not found (needed for interop tests)" >&2
    exit 1
fi

scripts/gates.sh

cargo build --workspace --locked

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-tests=pass --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
