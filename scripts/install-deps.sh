#!/usr/bin/env bash
# Installs the system packages the build and the tests need (Debian, as root).
# Idempotent: packages already present are left alone, and apt is not touched
# at all when everything is there.
set -euo pipefail

packages=(build-essential pkg-config libssl-dev libzmq3-dev openssl)
# PostgreSQL server tools (initdb, pg_ctl): the datanommer tests start
# throwaway clusters of their own (tests/src/pg.rs).
packages+=(postgresql)
# IRC server for the IRC bot's end-to-end tests (tests/src/ircd.rs starts
# its own instances on free loopback ports).
packages+=(ngircd)
# Headless Chromium and its WebDriver server for busmon's browser test
# (tests/src/browser.rs drives them on loopback; the test fails without
# them rather than skipping).
packages+=(chromium chromium-driver)
# A machine with its own Python (e.g. pyenv) needs no Debian python3.
if ! { command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null; }; then
    packages+=(python3 python3-venv)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Debian starts the packaged ngircd on port 6667; the tests need only
    # the binary, so a machine that just got it does not keep a server.
    if [[ " ${missing[*]} " == *" ngircd "* ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now ngircd >/dev/null 2>&1 || true
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: no cargo on PATH; installing Debian's rust toolchain"
    apt-get install -y -qq --no-install-recommends cargo rustc
fi
