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
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/ovation" --listen 127.0.0.1:8080 --data-dir "$work/data" \
  --config loadtest/bench.toml > "$work/server.log" 2>&1 &
server=$!
until curl -sf http://127.0.0.1:8080/healthz > /dev/null; do sleep 0.2; done
"$bin/loadtest" --workers 2 "${chat[@]}" --duration 14 --warmup 2 > "$work/chat" 2> /dev/null &
load=$!
sleep 6
"$bin/loadtest" --workers 1 --duration 8 gifts --clients 20 --rooms 20 > "$work/gifts" 2> /dev/null
wait "$load"
kill "$server"
wait "$server" 2> /dev/null
pick() { awk -v keys="$2" 'BEGIN {n = split(keys, k, " ")} {for (i = 1; i <= n; i++) if ($1 == "result." k[i]) printf "%s=%s ", k[i], $2}' "$1"; }
echo "chat: $(pick "$work/chat" "delivered_per_s latency.p50_ms latency.p99_ms gaps")"
echo "gifts: $(pick "$work/gifts" "confirmed_per_s confirm_latency.p50_ms confirm_latency.p99_ms errors")"
