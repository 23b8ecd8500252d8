"""Which event loop each role runs on (the choice is measured; see tunnel_core.runner)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tunnel_core.errors import ConfigError
from tunnel_core.runner import wants_uvloop


@pytest.mark.parametrize(
    ("choice", "server", "client"),
    [("auto", True, False), ("uvloop", True, True), ("asyncio", False, False)],
)
def test_the_loop_per_role(choice: str, server: bool, client: bool) -> None:
    assert (wants_uvloop("server", choice), wants_uvloop("client", choice)) == (server, client)


def test_an_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TUNNEL_CORE_LOOP"):
        wants_uvloop("server", "trio")


def test_the_cli_refuses_an_unknown_loop_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tunnel_core", "tcp", "client", "--url", "wss://127.0.0.1:1",
         "--token", "t", "--tls-fingerprint", "sha256:" + "0" * 64, "--ports", "8080"],
        env={"TUNNEL_CORE_LOOP": "trio", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "TUNNEL_CORE_LOOP" in done.stderr


_HEAP_OR_MMAP = """
import ctypes, sys
from tunnel_core import runner

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2


def mmapped() -> int:
    before = mallinfo2().hblks
    block = bytearray(600_000)  # a read-sized block: 256 KiB and more
    return mallinfo2().hblks - before


async def engine(stop):  # what runner.run runs: an engine's main
    print(mmapped())
    return 0


if sys.argv[1] == "engine":
    sys.exit(runner.run(engine, role="client"))
print(mmapped())
"""


def test_the_engine_on_the_stdlib_loop_keeps_read_sized_blocks_on_the_heap() -> None:
    """glibc mmaps a block over 128 KiB by default (and unmaps it when freed)."""
    pytest.importorskip("ctypes")

    def mmapped(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _HEAP_OR_MMAP, mode],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TUNNEL_CORE_LOOP": "asyncio"},
        )
        if "mallinfo2" in done.stderr:  # not glibc, or older than 2.33
            pytest.skip("no glibc mallinfo2 here")
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    assert mmapped("default") == 1
    assert mmapped("engine") == 0
