#!/bin/bash
# Purchase notifications beside the gift storm, on fresh servers from BIN_DIR (with
# loadtest/payments.toml): the gift storm alone, purchases alone, and both at once.
#   loadtest/purchases.sh BIN_DIR [ROUNDS]
set -u
bin_dir=$1
rounds=${2:-3}
source "$(dirname "$0")/bench-server.sh"
extra="$(cd "$(dirname "$0")" && pwd)/payments.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gifts=(--workers 1 --duration 10 gifts --clients 300 --rooms 300)
purchases=(--workers 1 --duration 10 purchases --senders 50)
fields="confirmed_per_s confirm_latency.p99_ms credited_per_s answer_latency.p50_ms answer_latency.p99_ms errors"
for round in $(seq 1 "$rounds"); do
  start_bench_server "$bin_dir" "$work" "$extra" || exit 1
  "$bin_dir/loadtest" "${gifts[@]}" > "$work/gifts" 2> /dev/null
  stop_server
  echo "round $round gifts alone:     $(report_fields "$work/gifts" $fields)"
  start_bench_server "$bin_dir" "$work" "$extra" || exit 1
  "$bin_dir/loadtest" "${purchases[@]}" > "$work/purchases" 2> /dev/null
  stop_server
  echo "round $round purchases alone: $(report_fields "$work/purchases" $fields)"
  start_bench_server "$bin_dir" "$work" "$extra" || exit 1
  "$bin_dir/loadtest" "${gifts[@]}" > "$work/gifts" 2> /dev/null &
  gift_storm=$!
  "$bin_dir/loadtest" "${purchases[@]}" > "$work/purchases" 2> /dev/null
  wait "$gift_storm"
  stop_server
  echo "round $round both, gifts:     $(report_fields "$work/gifts" $fields)"
  echo "round $round both, purchases: $(report_fields "$work/purchases" $fields)"
done
