# Sourced by the benchmark scripts: a fresh Ovation on 127.0.0.1:8080 with
# loadtest/bench.toml, and the fields of a load tester's report.

bench_toml="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench.toml"

# Starts BIN_DIR/ovation with a fresh data directory under WORK and waits until it
# answers; sets $server to its pid. EXTRA, a TOML file, is added to bench.toml.
start_bench_server() {
  local bin_dir=$1 work=$2 extra=${3:-/dev/null}
  rm -rf "$work/data"
  cat "$bench_toml" "$extra" > "$work/bench.toml"
  "$bin_dir/ovation" --listen 127.0.0.1:8080 --data-dir "$work/data" \
    --config "$work/bench.toml" > "$work/server.log" 2>&1 &
  server=$!
  wait_until_up http://127.0.0.1:8080 "$work/server.log"
}

# Waits until the server $server answers at URL; fails if it exits first (see LOG).
wait_until_up() {
  until curl -sf "$1/healthz" > /dev/null; do
    kill -0 "$server" 2> /dev/null || { echo "the server exited; see $2" >&2; return 1; }
    sleep 0.2
  done
}

stop_server() {
  kill "$server"
  wait "$server" 2> /dev/null
}

# `key=value ` for each KEY (a report key without `result.`) found in the report FILE.
report_fields() {
  local file=$1
  shift
  awk -v keys="$*" 'BEGIN {n = split(keys, k, " ")}
    {for (i = 1; i <= n; i++) if ($1 == "result." k[i]) printf "%s=%s ", k[i], $2}' "$file"
}
