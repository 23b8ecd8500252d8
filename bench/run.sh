#!/usr/bin/env bash
# `make bench`: tunnel-core side by side with direct loopback, socat, `ssh -R` and stunnel.
# Installs the load tools when run as root on Debian/Ubuntu, raises the descriptor limit for
# the 10,000-connection test, then runs `python -m bench` (arguments are passed on; see
# bench/README.md). JSON lines go to stdout, progress and a summary table to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# asyncio debug mode (exported by the Makefile for tests) would slow every tunnel process.
unset PYTHONASYNCIODEBUG
PACKAGES="socat openssh-server openssh-client iperf3 wrk stunnel4 nginx-light hey hyperfine redis-server redis-tools postgresql dnsperf dnsmasq-base"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "bench: installing$missing" >&2
    apt-get update -qq
    available=""
    for p in $missing; do
      if [ -n "$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)"')" ]; then
        available="$available $p"
      else
        echo "bench: $p is not in this distribution's archive; its measurements will be missing" >&2
      fi
    done
    # shellcheck disable=SC2086 # word splitting is wanted: one package per word
    [ -z "$available" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends $available >/dev/null
  fi
fi

# 10,000 tunnelled connections need more descriptors than the usual soft limit of 1024.
ulimit -n "$(ulimit -Hn)"

"$PY" -m bench "$@" &
pid=$!
# Forward an interrupt to the harness, which ends every process it started, by PID.
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true' INT TERM
wait "$pid"
