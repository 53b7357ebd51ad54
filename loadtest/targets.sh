#!/usr/bin/env bash
# Measures the load tester's targets on this machine and prints one table: each
# target's runs, their median, the target, and whether the median meets it. Every
# run gets a fresh server (loadtest/bench.toml, a fresh data directory); the fan-out
# and gift runs are repeated ROUNDS times, because one run's tail moves by tens of
# percent on a shared machine.
# Usage: loadtest/targets.sh [ROUNDS]   (default 3; about 3 minutes a round)
# Needs `cargo build --release --workspace`. The Node peer runs when
# ../shared/peers/node-ws has its node_modules (`npm ci` there) and `node` is on PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin="${CARGO_TARGET_DIR:-target}/release"
peer="${OVATION_PEER_DIR:-../shared/peers/node-ws}"
source loadtest/bench-server.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs the load tester against URL on a fresh server started by START (a function
# that sets $server), leaving its `key value` report in $work/report.
measure() {
  local start=$1 url=$2
  shift 2
  "$start" || exit 1
  "$bin/loadtest" --url "$url" "$@" > "$work/report" 2> "$work/tester.log"
  stop_server
}

ovation() { start_bench_server "$bin" "$work"; }

node_peer() {
  (cd "$peer" && exec node server.js --listen 127.0.0.1:9090) > "$work/peer.log" 2>&1 &
  server=$!
  wait_until_up http://127.0.0.1:9090 "$work/peer.log"
}

# A report's value for KEY.
field() { awk -v key="$1" '$1 == key {print $2}' "$work/report"; }

# A rate's value for KEY, in whole messages.
rate() { field "$1" | cut -d. -f1; }

# The median of the arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# Prints a table row: NAME, the runs, their median, the target text, and the verdict
# of `median OP LIMIT`.
row() {
  local name=$1 op=$2 limit=$3 target=$4
  shift 4
  local mid
  mid=$(median "$@")
  local verdict
  verdict=$(awk -v m="$mid" -v l="$limit" -v op="$op" 'BEGIN {
    ok = (op == ">=") ? (m >= l) : (m < l); print ok ? "met" : "**not met**" }')
  echo "| $name | $* | $mid | $target | $verdict |"
}

fanout_1k=(--workers 2 fanout --clients 1000 --rate 3050 --duration 8 --warmup 2)
fanout_10k=(--workers 2 fanout --clients 10000 --rate 51 --duration 8 --warmup 2)
rate_1k=() p99_1k=() rate_10k=() p99_10k=() gifts=() gifts_p99=() gaps=0
for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  measure ovation http://127.0.0.1:8080 "${fanout_1k[@]}"
  rate_1k+=("$(rate result.delivered_per_s)") p99_1k+=("$(field result.latency.p99_ms)")
  gaps=$((gaps + $(field result.gaps)))
  measure ovation http://127.0.0.1:8080 "${fanout_10k[@]}"
  rate_10k+=("$(rate result.delivered_per_s)") p99_10k+=("$(field result.latency.p99_ms)")
  gaps=$((gaps + $(field result.gaps)))
  measure ovation http://127.0.0.1:8080 --workers 1 --duration 10 gifts --clients 300 --rooms 300
  gifts+=("$(rate result.confirmed_per_s)") gifts_p99+=("$(field result.confirm_latency.p99_ms)")
done
measure ovation http://127.0.0.1:8080 idle --clients 10000 --rooms 100
idle=$(field result.bytes_per_connection)
measure ovation http://127.0.0.1:8080 --workers 2 slow --clients 1000 --rate 1000 --duration 8 --warmup 2 --rounds 3
slow=$(field p99_ratio)
peer_rate=
if [ -d "$peer/node_modules" ] && command -v node > /dev/null; then
  measure node_peer http://127.0.0.1:9090 "${fanout_10k[@]}"
  peer_rate=$(rate result.delivered_per_s)
fi

echo "| target | runs | median | target | verdict |"
echo "|---|---|---|---|---|"
row "fanout 1,000 @ 3050/s: delivered/s" ">=" 3000000 "at least 3 M" "${rate_1k[@]}"
row "fanout 1,000 @ 3050/s: p99 ms" "<" 100 "under 100" "${p99_1k[@]}"
row "fanout 10,000 @ 51/s: delivered/s" ">=" 500000 "at least 500 k" "${rate_10k[@]}"
row "fanout 10,000 @ 51/s: p99 ms" "<" 100 "under 100" "${p99_10k[@]}"
if [ -n "$peer_rate" ]; then
  ratio=$(awk -v o="$(median "${rate_10k[@]}")" -v p="$peer_rate" 'BEGIN {printf "%.1f", o / p}')
  row "fanout 10,000 @ 51/s: Ovation / Node peer ($peer_rate/s)" ">=" 3 "at least 3x" "$ratio"
else
  echo "| Node peer | skipped: no $peer/node_modules or no node | | at least 3x | |"
fi
row "idle 10,000: bytes per connection" "<" 6145 "at most 6 KiB" "$idle"
row "slow: readers' p99 with 10 % stalled / without" "<" 1.2 "under 1.2" "$slow"
row "gifts, 300 senders: confirmed/s" ">=" 20000 "at least 20,000" "${gifts[@]}"
row "gifts, 300 senders: confirm p99 ms" "<" 50 "under 50" "${gifts_p99[@]}"
echo
echo "sequence gaps over all fan-out runs: $gaps"
