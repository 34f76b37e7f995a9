#!/usr/bin/env bash
# Starts the loopback example cluster — two pgkeel data nodes running
# PostgreSQL and one pgkeel-witness, from config/examples/two-plus-witness —
# and prints `pgkeelctl list`.
#
#   scripts/demo.sh          start (or show, if it already runs)
#   scripts/demo.sh stop     stop every process it started and remove its data
#
# Everything lives in $PGKEEL_DEMO_DIR (default /var/tmp/pgkeel-demo): the
# example configs are copied there with their data directories pointed at it,
# because PostgreSQL runs as the `postgres` user and must be able to reach
# them (a checkout under /root is not reachable).
set -euo pipefail
cd "$(dirname "$0")/.."

example=config/examples/two-plus-witness
demo=${PGKEEL_DEMO_DIR:-/var/tmp/pgkeel-demo}
bin=${CARGO_TARGET_DIR:-target}/release

stop() {
    for pidfile in "$demo"/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
        fi
        rm -f "$pidfile"
    done
    rm -rf "$demo"
    echo "removed $demo"
}

if [[ ${1:-} == stop ]]; then
    stop
    exit 0
fi

./scripts/setup.sh
cargo build --release --bins

mkdir -p "$demo"
chmod 755 "$demo"
for f in node1 node2 witness; do
    sed "s#data_dir: ./demo-data#data_dir: $demo/data#" "$example/$f.yaml" >"$demo/$f.yaml"
done

start() { # name binary
    local pidfile=$demo/$1.pid
    if [[ -e $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "$1 already runs (pid $(cat "$pidfile"))"
        return
    fi
    "$bin/$2" --config "$demo/$1.yaml" >>"$demo/$1.log" 2>&1 &
    echo $! >"$pidfile"
    echo "started $1 (pid $!, log $demo/$1.log)"
}
start node1 pgkeel
start node2 pgkeel
start witness pgkeel-witness

ctl() { "$bin/pgkeelctl" --endpoint 127.0.0.1:7001 "$@"; }
for _ in $(seq 1 150); do
    if ctl list --format json 2>/dev/null | grep -q '"state":"streaming"'; then
        break
    fi
    sleep 0.2
done
ctl list
echo
echo "Raft:   $bin/pgkeelctl --endpoint 127.0.0.1:7001 raft status"
echo "SQL:    psql 'postgresql://postgres:demo-superuser-password@127.0.0.1:5433,127.0.0.1:5434/postgres?target_session_attrs=read-write'"
echo "Stop:   scripts/demo.sh stop"
