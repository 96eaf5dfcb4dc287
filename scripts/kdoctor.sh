#!/bin/sh
# Run kdoctor from this checkout: scripts/kdoctor.sh check [options]
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
sh "$here/scripts/bootstrap.sh" >&2
exec "$here/.venv/bin/kdoctor" "$@"
