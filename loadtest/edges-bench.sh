#!/usr/bin/env bash
# Video across nodes: one publisher on an origin, the same viewers served by the
# origin alone or by two edges, on three nodes of this machine sharing the local
# PostgreSQL (a fresh schema) and Redis (a fresh cluster name per run). Each run
# starts three fresh nodes (ports 18111-18113); ROUNDS rounds (default 3) alternate
#   origin  all viewers on the origin            --url A
#   edges   the same viewers on the two edges    --url A,B,C
#   all     the same viewers over all three      --url A,B,C --spread all
#           (origin and edge viewers in one run: the delay a hop adds)
# and a summary of the medians ends it. Loopback only; stops by itself.
# Usage: loadtest/edges-bench.sh [ROUNDS]
#   VIEWERS (200), KBPS (1000), FPS (30), DURATION (15 s) change the load.
# Reports and node logs go to target/edges-bench/VIEWERS-viewers-KBPS-kbps/;
# docs/benchmarks.md has the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release"
pg="${OVATION_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}"
redis="${OVATION_BENCH_REDIS:-redis://127.0.0.1:6379/}"
rounds="${1:-3}"
viewers="${VIEWERS:-200}" kbps="${KBPS:-1000}" fps="${FPS:-30}" duration="${DURATION:-15}"
out="target/edges-bench/$viewers-viewers-$kbps-kbps"
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.txt "$out"/*.log
cargo build --release --workspace --quiet

schema="ovation_edges_$$"
ledger="$pg?options=-csearch_path%3D$schema"
urls=(http://127.0.0.1:18111 http://127.0.0.1:18112 http://127.0.0.1:18113)
pids=() data=()
stop_nodes() {
  [ ${#pids[@]} -eq 0 ] || { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
  [ ${#data[@]} -eq 0 ] || rm -rf "${data[@]}"
  pids=() data=()
}
cleanup() {
  stop_nodes
  psql "$pg" -qc "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE" || true
  redis-cli -u "$redis" --scan --pattern "edges-$$-*" | xargs -r redis-cli -u "$redis" del >/dev/null
}
trap cleanup EXIT
psql "$pg" -qc "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"

# Three fresh nodes of cluster $1 (their logs named after the run, $2).
start_nodes() {
  local i
  for i in 0 1 2; do
    data+=("$(mktemp -d)")
    "$bin/ovation" --listen "${urls[$i]#http://}" --data-dir "${data[$i]}" --dev \
      --token-secret bench-secret-0123456789 --config loadtest/bench.toml \
      --ledger "$ledger" --bus "$redis" --cluster "$1" >"$out/$2-node$i.log" 2>&1 &
    pids+=($!)
  done
  for url in "${urls[@]}"; do
    for _ in $(seq 150); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.2; done
    curl -sf "$url/healthz" >/dev/null || { echo "$url did not start: see $out/$2-node*.log" >&2; exit 1; }
  done
}

all=$(IFS=,; echo "${urls[*]}")
for round in $(seq 1 "$rounds"); do
  for case in origin edges all; do
    run="$case-$round"
    case $case in
      origin) args=(--url "${urls[0]}") ;;
      edges) args=(--url "$all") ;;
      all) args=(--url "$all" --spread all) ;;
    esac
    start_nodes "edges-$$-$run" "$run"
    echo "== $run" >&2
    "$bin/loadtest" --workers 2 --duration "$duration" --json "$out/$run.json" \
      rtc --viewers "$viewers" --bitrate-kbps "$kbps" --fps "$fps" --viewer-ramp 100 \
      "${args[@]}" >"$out/$run.txt" 2>"$out/$run-tester.log"
    stop_nodes
  done
done

# Medians over the rounds, per case and node.
python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = lambda xs: statistics.median(xs) if xs else float("nan")
for case in ("origin", "edges", "all"):
    runs = [json.load(open(f"{out}/{case}-{r}.json"))["result"] for r in range(1, rounds + 1)]
    print(f"{case}: loss {med([r['loss_percent'] for r in runs]):.3f} %, "
          f"tester {med([r['loadtest_cpu_cores'] for r in runs]):.2f} cores, "
          f"all nodes {med([r['server_cpu_cores'] for r in runs]):.3f} cores, "
          f"machine {med([r['machine_cpu_cores'] for r in runs]):.2f} cores busy")
    for node in runs[0]["per_node"]:
        ns = [r["per_node"][node] for r in runs]
        get = lambda key: med([n[key] for n in ns if n[key] is not None])
        line = (f"  {node:7} viewers {get('viewers'):4.0f}  cpu {get('server_cpu_cores'):.3f} cores  "
                f"egress {get('egress_bytes_per_s') / 1e6:6.2f} MB/s  "
                f"ingress {get('ingress_bytes_per_s') / 1e6:5.2f} MB/s  "
                f"edges {get('edge_sessions'):.0f} pulls {get('pull_sessions'):.0f}")
        if get("viewers"):
            line += (f"  per viewer {get('server_cpu_percent_per_viewer'):.3f} %  "
                     f"p50 {med([n['delay']['p50_ms'] for n in ns]):.1f} "
                     f"p99 {med([n['delay']['p99_ms'] for n in ns]):.1f} ms  "
                     f"loss {get('loss_percent'):.3f} %")
        added = [n["added_delay_p99_ms"] for n in ns if n["added_delay_p99_ms"] is not None]
        if added:
            line += (f"  added p50 {get('added_delay_p50_ms'):+.1f} "
                     f"p99 {med(added):+.1f} ms (runs "
                     + ", ".join(f"{a:+.1f}" for a in added) + ")")
        print(line)
EOF
# What the nodes logged at WARN or ERROR, by message (numbers as N), most frequent first.
echo "node logs, WARN and ERROR:"
sed 's/\x1b\[[0-9;]*m//g' "$out"/*-node*.log | grep -E '^\S+ +(WARN|ERROR) ' |
  sed -E 's/^\S+ +//; s/[0-9]+(\.[0-9]+)*(:[0-9]+)?/N/g' | sort | uniq -c | sort -rn | head -12 || true
