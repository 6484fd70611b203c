#!/usr/bin/env bash
# Writes the upstream fedmsg.meta test cases (fedmsg_meta_fedora_infrastructure
# 0.31.0 + fedmsg 1.1.7's test_meta.py) as one JSON file, with the real Python
# fedmsg of the reference venv.  See extract.py's docstring for the format.
#
#   meta/tests/upstream/extract.sh [OUT]    # OUT defaults to target/meta-upstream-cases.json
#   VENV=/path/to/venv meta/tests/upstream/extract.sh
#
# Needs the venv made by shared/pyfedmsg/setup.sh (default
# ~/.cache/pyfedmsg-venv) and, on the first run only, PyPI: the upstream sdist
# and python-fedora are fetched into ${XDG_CACHE_HOME:-~/.cache}/fedmsg-meta-upstream
# (or $FEDMSG_META_UPSTREAM_CACHE), never into this repository.
# Extra arguments after OUT go to extract.py (e.g. --all-fields).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pyfedmsg-venv}"
OUT="${1:-$ROOT/target/meta-upstream-cases.json}"
shift || true

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import fedmsg.meta, fedmsg.tests.test_meta' 2>/dev/null; then
    echo "extract.sh: no usable fedmsg venv at $VENV (need python with fedmsg 1.1.7)." >&2
    echo "extract.sh: create it with: shared/pyfedmsg/setup.sh (or ../shared/pyfedmsg/setup.sh" >&2
    echo "extract.sh: from the project root), or point VENV at an existing one." >&2
    exit 3
fi

exec "$VENV/bin/python" "$HERE/extract.py" "$OUT" "$@"
