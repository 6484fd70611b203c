#!/usr/bin/env bash
# The habits CI enforces, before any test runs (scripts/test.sh calls this):
#
#   * formatting (cargo fmt), lints (clippy, warnings are errors, with the
#     workspace's [workspace.lints]) and rustdoc (warnings are errors);
#   * the plugin MSRV: plugin-api and the example plugins build, tests
#     included, with the Rust version plugin-api's Cargo.toml promises
#     (`rust-version`), installed with rustup when missing;
#   * a plugin built with `panic = "abort"` is refused at compile time, with
#     the message saying why (export_plugin!);
#   * the fuzz targets (their own workspace under fuzz/) still compile.
#
# The MSRV and panic builds use target directories of their own under
# target/ so they never invalidate the main build.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== gates: %s\n' "$*"; }

if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

msrv=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys
m = json.load(sys.stdin)
print(next(p["rust_version"] for p in m["packages"] if p["name"] == "fedmsg-plugin-api"))')
step "plugin MSRV: plugin-api and the examples on Rust $msrv"
if ! command -v rustup >/dev/null 2>&1; then
    echo "gates: rustup is needed to install Rust $msrv for the MSRV check" >&2
    exit 1
fi
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
cargo "+$msrv" build --locked --all-targets --target-dir target/msrv \
    -p fedmsg-plugin-api -p fedmsg-example-tally -p fedmsg-example-echo

step "a plugin built with panic = \"abort\" is refused"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if cargo check --locked -p fedmsg-example-echo --target-dir target/panic-abort \
    --config 'profile.dev.panic="abort"' >"$log" 2>&1; then
    cat "$log" >&2
    echo "gates: a plugin built with panic = \"abort\" compiled; export_plugin! must refuse it" >&2
    exit 1
fi
if ! grep -q 'plugins must be built with `panic = "unwind"`' "$log"; then
    cat "$log" >&2
    echo "gates: the panic = \"abort\" build failed, but not with export_plugin!'s message" >&2
    exit 1
fi
echo "refused, with export_plugin!'s message"

step "the fuzz targets compile"
(cd fuzz && cargo check --locked --bins)

step "all passed"
