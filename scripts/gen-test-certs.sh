#!/usr/bin/env bash
# Makes a private CA and certificates signed by it for pgkeel's gRPC port
# (raft.tls) and pgkeelctl, with openssl. For tests and labs; keys are
# written fresh each time and never belong in the repository.
#
#   scripts/gen-test-certs.sh DIR NAME[=SAN,...]...
#
# DIR gets ca.crt and ca.key (made once, reused when they exist) and, for
# each NAME, NAME.crt and NAME.key: an EC P-256 certificate valid for both
# TLS server and client use. SANs are openssl subjectAltName entries; the
# default is DNS:localhost,IP:127.0.0.1. Each node's certificate must name
# the host of its raft.peers address. Example:
#
#   scripts/gen-test-certs.sh /etc/pgkeel/tls \
#       node1=DNS:db1.example.com,IP:10.0.0.1 node2=IP:10.0.0.2 \
#       witness1=IP:10.0.0.3 admin
set -euo pipefail

if (($# < 2)); then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "gen-test-certs: openssl not found; run scripts/setup.sh or install openssl" >&2
    exit 1
fi
dir=$1
shift
mkdir -p "$dir"
umask 077

if [[ ! -f $dir/ca.crt || ! -f $dir/ca.key ]]; then
    openssl req -x509 -new -nodes -days 3650 \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" \
        -subj "/CN=pgkeel CA $(date -u +%Y%m%dT%H%M%SZ)" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

ext=$(mktemp)
trap 'rm -f "$ext" "$dir"/*.csr' EXIT
for spec in "$@"; do
    name=${spec%%=*}
    san=DNS:localhost,IP:127.0.0.1
    [[ $spec == *=* ]] && san=${spec#*=}
    if [[ ! $name =~ ^[A-Za-z0-9._-]+$ ]]; then
        echo "gen-test-certs: \"$name\" is not a file name; use letters, digits, '.', '_' and '-'" >&2
        exit 2
    fi
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=$san" >"$ext"
    openssl req -new -nodes \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -days 825 -in "$dir/$name.csr" \
        -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
    echo "$dir/$name.crt ($san)"
done
# Certificates are public; keys stay 0600.
chmod 644 "$dir/ca.crt" "$dir"/*.crt
