#!/usr/bin/env bash
# Builds the hub and the bundled/example plugins in release mode and runs the
# hub on the repository's own ./fedmsg.d (loopback endpoints, plugins and
# state under ./.run). Extra arguments go to fedmsg-hub.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked -p fedmsg-hub -p fedmsg-tools -p fedmsg-example-tally -p fedmsg-example-echo -p fedmsg-datanommer -p fedmsg-busmon

mkdir -p .run/plugins .run/state
for lib in fedmsg_example_tally fedmsg_example_echo fedmsg_datanommer fedmsg_busmon; do
    cp -f "target/release/lib$lib.so" .run/plugins/
done
exec target/release/fedmsg-hub "$@"
