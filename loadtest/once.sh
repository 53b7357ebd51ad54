#!/bin/bash
# One run on a fresh server: starts DIR/ovation on 127.0.0.1:8080 (loadtest/bench.toml
# plus AB_EXTRA, if set), runs DIR/loadtest with the given arguments, and prints every
# `result.` key of its report and the server's CPU seconds.
#   AB_EXTRA=$PWD/loadtest/pk.toml loadtest/once.sh DIR --workers 2 pk --viewers 5000
set -u
dir=$1
shift
source "$(dirname "$0")/bench-server.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start_bench_server "$dir" "$work" "${AB_EXTRA:-/dev/null}" || exit 1
"$dir/loadtest" "$@" > "$work/report" 2> "$work/tester.log"
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$server/stat")
stop_server
awk '$1 ~ /^result\./ {sub(/^result\./, "", $1); printf "%s=%s ", $1, $2}' "$work/report"
echo "server_cpu_s=$cpu"
