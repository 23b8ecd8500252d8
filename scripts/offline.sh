#!/usr/bin/env bash
# Runs a command with loopback as its only network: DESIGN.md, "Tests and the network".
# As root, in a new network namespace whose one link, lo, is brought up, so a packet to a
# public-looking address (what fakes and moto hand out) fails at once with ENETUNREACH, from
# every process the command starts. Without root or unshare the command runs plainly (then
# only pytest-socket guards, and only in-process connects). Used by `make test` for pytest
# alone: installs happen before, outside.
set -euo pipefail
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
  && unshare -n ip link set lo up 2>/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec "$@"' offline "$@"
fi
echo "offline.sh: no network namespace (needs root and unshare); running $1 as it is" >&2
exec "$@"
