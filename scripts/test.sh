#!/usr/bin/env bash
# The whole test suite: formatting, lints, the witness's dependency
# boundary, and every test tier that runs here. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== the witness build pulls in no PostgreSQL, REST or TLS crates"
witness_deps=$(cargo tree -e normal --no-default-features --prefix none --format '{p}')
if grep -E '^(tokio-postgres|axum|rustls|tokio-rustls|ring) ' <<<"$witness_deps"; then
    echo "FAIL: pgkeel-witness's dependency path includes the crates above" >&2
    exit 1
fi
cargo build --profile witness --no-default-features --bin pgkeel-witness

echo "== the witness of a TLS cluster (--features tls) adds rustls and nothing else"
witness_deps=$(cargo tree -e normal --no-default-features --features tls --prefix none --format '{p}')
if grep -E '^(tokio-postgres|axum|prometheus-client) ' <<<"$witness_deps"; then
    echo "FAIL: pgkeel-witness --features tls's dependency path includes the crates above" >&2
    exit 1
fi
cargo check --no-default-features --features tls --bins

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --lib --bins --tests 2>&1 | tee "$log"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
