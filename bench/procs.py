"""Every process the benchmark starts is owned here and ended by its PID.

A benchmark that dies midway must not leave iperf3, nginx or a tunnel server
listening on loopback, so processes are only ever started through `Procs`, whose
`close()` runs from a `finally` in the entry point (and on SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class BenchError(Exception):
    """A step could not run; the message names the step and what to fix."""


class Procs:
    """Starts processes into their own sessions and ends exactly those, by PID."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start `argv`, logging to `<logdir>/<name>.log`.

        Its own session keeps a terminal's Ctrl-C away from it, so teardown happens
        in our order, and lets `stop` reach the children of a shell script.
        """
        log = open(self._logdir / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env=None if env is None else dict(env),
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise BenchError(
                f"{name}: {argv[0]} is not installed (bench/run.sh installs it)"
            ) from exc
        finally:
            log.close()
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the process group we created for it, then SIGKILL after `grace`."""
        if proc in self._running:
            self._running.remove(proc)
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)

    def close(self) -> None:
        for proc in reversed(list(self._running)):
            self.stop(proc)

    def log(self, name: str) -> str:
        """The tail of a process's log, for error messages."""
        path = self._logdir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (bind 0), never a fixed one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def is_listening(port: int, proto: str = "tcp") -> bool:
    """Whether something listens on TCP `port` (or has UDP `port` bound), read from /proc
    so no connection is made.

    Connecting to check would open a stream to iperf3 or nginx and disturb them; a probe
    datagram would be a query the resolver counts.
    """
    state = "0A" if proto == "tcp" else "07"  # TCP_LISTEN; an unconnected UDP socket
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll `ready` until it holds, or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` from /proc (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and all its descendants, live or reaped (cutime/cstime).

    sshd serves a session in a forked child and socat forks per connection, so the
    listener's own counters alone would say they cost nothing.
    """
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        found = stats.get(current)
        if found is not None:
            total += sum(int(found[i]) for i in (11, 12, 13, 14))
        todo += children.get(current, [])
    return total / os.sysconf("SC_CLK_TCK")
