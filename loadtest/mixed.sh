#!/usr/bin/env bash
# Gifts during a chat load: how long a paying viewer waits for the confirmation while
# the hub is busy. Starts a fresh server (loadtest/bench.toml), runs the chat load
# given as arguments (default: 10,000 clients in 100 rooms at 5,000 messages/s) and,
# 6 s into it, 20 gift senders in rooms of their own for 8 s; prints the chat's rate
# and p99 and the gifts' rate and confirmation latency.
# Usage: loadtest/mixed.sh [CHAT SCENARIO ARGS...]   (needs a release build)
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release"
chat=("$@")
[ ${#chat[@]} -eq 0 ] && chat=(rooms --clients 10000 --rooms 100 --rate 5000)
source loadtest/bench-server.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start_bench_server "$bin" "$work" || exit 1
"$bin/loadtest" --workers 2 "${chat[@]}" --duration 14 --warmup 2 > "$work/chat" 2> /dev/null &
load=$!
sleep 6
"$bin/loadtest" --workers 1 --duration 8 gifts --clients 20 --rooms 20 > "$work/gifts" 2> /dev/null
wait "$load"
stop_server
echo "chat: $(report_fields "$work/chat" delivered_per_s latency.p50_ms latency.p99_ms gaps)"
echo "gifts: $(report_fields "$work/gifts" confirmed_per_s confirm_latency.p50_ms confirm_latency.p99_ms errors)"
