#!/usr/bin/env bash
# Fan-out and gift throughput of a cluster of 1, 2 and 3 nodes on this machine,
# sharing the local PostgreSQL (a fresh schema) and Redis (a fresh cluster name).
# Usage: loadtest/cluster-bench.sh [NODES...]   (default: 1 2 3)
# Reports go to target/cluster-bench/; docs/benchmarks.md has the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release"
pg="${OVATION_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}"
redis="${OVATION_BENCH_REDIS:-redis://127.0.0.1:6379/}"
out=target/cluster-bench
mkdir -p "$out"
cargo build --release --workspace --quiet

[ $# -gt 0 ] || set -- 1 2 3
for nodes in "$@"; do
  schema="ovation_bench_$nodes"
  psql "$pg" -qc "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
  ledger="$pg?options=-csearch_path%3D$schema"
  pids=() urls=()
  for i in $(seq 1 "$nodes"); do
    port=$((18100 + i))
    data=$(mktemp -d)
    "$bin/ovation" --listen "127.0.0.1:$port" --data-dir "$data" --dev \
      --token-secret bench-secret-0123456789 --config loadtest/bench.toml \
      --ledger "$ledger" --bus "$redis" --cluster "bench$nodes-$$" >"$out/node-$nodes-$i.log" 2>&1 &
    pids+=($!) urls+=("http://127.0.0.1:$port")
  done
  list=$(IFS=,; echo "${urls[*]}")
  for url in "${urls[@]}"; do
    until curl -sf "$url/healthz" >/dev/null; do sleep 0.2; done
  done
  "$bin/loadtest" --workers 2 --duration 8 --url "$list" --json "$out/fanout-$nodes.json" \
    fanout --clients 1000 --rate 1000
  "$bin/loadtest" --workers 2 --duration 8 --url "$list" --json "$out/gifts-$nodes.json" \
    gifts --clients 300 --rooms 300
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  psql "$pg" -qc "DROP SCHEMA $schema CASCADE"
done
