#!/bin/sh
# Make .venv with kdoctor installed, on a machine that has only python3 (Debian 12).
# Usage: scripts/bootstrap.sh [EXTRA]   e.g. "test" installs the test extra too.
set -eu
cd "$(dirname "$0")/.."
extra="${1:-}"
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian splits venv/ensurepip out of python3.
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3-venv is missing: run 'sudo apt-get install python3-venv'" >&2
        exit 3
    fi
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=".venv/.kdoctor-installed${extra:+-$extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # One progress line; pip's own output goes to a log, shown only when it fails.
    log=.venv/bootstrap.log
    echo "kdoctor: installing kdoctor${extra:+ and its $extra tools} into .venv (log: $log)" >&2
    target="."
    [ -n "$extra" ] && target=".[$extra]"
    if ! { .venv/bin/python -m pip install --quiet --upgrade pip || true
           .venv/bin/python -m pip install --quiet -e "$target"; } >"$log" 2>&1; then
        echo "kdoctor: installing failed; the end of $log:" >&2
        tail -n 30 "$log" >&2
        exit 3
    fi
    touch "$stamp"
fi
