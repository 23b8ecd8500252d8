"""Benchmarks of the tunnel engine and the CLI, side by side with other tunnels.

Never part of `make test`: figures depend on the machine, so they are measured and
reported here, never asserted. `bash bench/run.sh` (or `make bench`) is the entry point.
"""
