#!/usr/bin/env bash
# Starts the loopback example cluster — two pgkeel data nodes and one
# pgkeel-witness, from config/examples/two-plus-witness — and shows its
# status. `scripts/demo.sh stop` stops it; data stays in ./demo-data.
set -euo pipefail
cd "$(dirname "$0")/.."

example=config/examples/two-plus-witness
run=demo-data/run
mkdir -p "$run"

stop() {
    for pidfile in "$run"/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" && echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
        fi
        rm -f "$pidfile"
    done
}

if [[ ${1:-} == stop ]]; then
    stop
    exit 0
fi

./scripts/setup.sh
cargo build --release --bins
bin=target/release
[[ -n ${CARGO_TARGET_DIR:-} ]] && bin=$CARGO_TARGET_DIR/release

start() { # name binary config
    local pidfile=$run/$1.pid
    if [[ -e $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "$1 already runs (pid $(cat "$pidfile"))"
        return
    fi
    "$bin/$2" --config "$3" >>"$run/$1.log" 2>&1 &
    echo $! >"$pidfile"
    echo "started $1 (pid $!, log $run/$1.log)"
}
start node1 pgkeel "$example/node1.yaml"
start node2 pgkeel "$example/node2.yaml"
start witness1 pgkeel-witness "$example/witness.yaml"

ctl() { "$bin/pgkeelctl" --endpoint 127.0.0.1:7001 "$@"; }
for _ in $(seq 1 50); do
    if ctl raft status --format json 2>/dev/null | grep -q '"leader":{'; then
        break
    fi
    sleep 0.2
done
ctl raft status
echo
echo "Try: $bin/pgkeelctl -c $example/node1.yaml store put hello world"
echo "     $bin/pgkeelctl --endpoint 127.0.0.1:7003 store get hello --linearizable"
echo "Stop: scripts/demo.sh stop"
