#!/bin/bash
# Compares builds back to back: starts a fresh server from DIR_S on 127.0.0.1:8080
# (loadtest/bench.toml), runs the load tester from DIR_L with the given arguments,
# and prints its rate and latency, the server's CPU seconds and CPU per delivery,
# and the load tester's CPU.
#   loadtest/ab.sh DIR_S DIR_L --workers 2 fanout --clients 10000 --rate 50 --duration 8
# Copy each build's target/release/{ovation,loadtest} into its own DIR first.
# AB_EXTRA: a TOML file added to the server's configuration; AB_SETUP: a command run
# with the server's data directory once it answers, before the load starts.
set -u
server_dir=$1
tester_dir=$2
shift 2
source "$(dirname "$0")/bench-server.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start_bench_server "$server_dir" "$work" "${AB_EXTRA:-/dev/null}" || exit 1
if [ -n "${AB_SETUP:-}" ]; then $AB_SETUP "$work/data" > /dev/null || { stop_server; exit 1; }; fi
/usr/bin/time -f "tester_cpu_s=%U+%S" "$tester_dir/loadtest" "$@" > "$work/report" 2> "$work/tester.log"
delivered=$(awk '$1 == "result.delivered" {print $2}' "$work/report")
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$server/stat")
stop_server
report_fields "$work/report" delivered_per_s latency.p50_ms latency.p99_ms gaps \
  confirmed_per_s confirm_latency.p50_ms confirm_latency.p99_ms confirm_latency.max_ms
echo -n "server_cpu_s=$cpu us_per_delivery=$(awk -v c="$cpu" -v d="${delivered:-0}" 'BEGIN {if (d > 0) printf "%.2f", c * 1e6 / d; else print "-"}') "
tail -1 "$work/tester.log"
