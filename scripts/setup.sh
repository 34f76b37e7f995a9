#!/usr/bin/env bash
# Installs what building and testing pgkeel needs on a fresh Debian machine
# with Rust, and nothing that is already there.
set -euo pipefail

need_pkgs=()
# PostgreSQL server binaries (initdb, pg_ctl, ...) for the real-PostgreSQL tiers.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need_pkgs+=(postgresql); fi
# ip netns / veth for the network-fault tests.
if ! command -v ip >/dev/null 2>&1; then need_pkgs+=(iproute2); fi
# iptables for the network stalls of the fault tiers and the stall soak.
if ! command -v iptables >/dev/null 2>&1; then need_pkgs+=(iptables); fi
# openssl for scripts/gen-test-certs.sh (the gRPC TLS tests' certificates).
if ! command -v openssl >/dev/null 2>&1; then need_pkgs+=(openssl); fi
# A C compiler for crates with C parts.
if ! command -v cc >/dev/null 2>&1; then need_pkgs+=(build-essential); fi
# HAProxy with config/examples/haproxy.cfg in front of a real cluster, and
# promtool (only Debian's `prometheus` package ships it) for a live /metrics.
# Both live in /usr/sbin or /usr/bin; root's PATH may lack /usr/sbin.
if ! command -v haproxy >/dev/null 2>&1 && [[ ! -x /usr/sbin/haproxy ]]; then need_pkgs+=(haproxy); fi
if ! command -v promtool >/dev/null 2>&1; then need_pkgs+=(prometheus); fi

if ((${#need_pkgs[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing Debian packages: ${need_pkgs[*]}; run this script as root or install them" >&2
        exit 1
    fi
    echo "setup: installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Without recommends: prometheus would also pull in node-exporter.
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi
for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$comp"
        else
            echo "setup: cargo $comp missing and no rustup to add it" >&2
            exit 1
        fi
    fi
done
