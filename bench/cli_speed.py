"""How fast the CLI feels: `inletsctl --help`, and `create --provider local` until the
first byte comes back through the tunnel it made.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.procs import BenchError, Procs
from inletsctl.summary import TOKEN_ENV

INLETSCTL = Path(sys.executable).with_name("inletsctl")


def help_time(work: Path, runs: int = 10) -> dict[str, object]:
    """Median wall time of `inletsctl --help`; hyperfine when installed, else timed here."""
    argv = [str(INLETSCTL), "--help"]
    if not INLETSCTL.exists():
        raise BenchError(f"{INLETSCTL} is missing; run `make install`")
    if shutil.which("hyperfine"):
        report = work / "hyperfine.json"
        subprocess.run(
            ["hyperfine", "-N", "--warmup", "2", "--runs", str(runs), "--export-json", str(report)]
            + ["--style", "none", shlex.join(argv)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        median = json.loads(report.read_text())["results"][0]["median"]
        tool = "hyperfine"
    else:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
            times.append(time.perf_counter() - started)
        median, tool = statistics.median(times), "perf_counter"
    return {
        "test": "inletsctl_help_ms",
        "value": round(median * 1000, 1),
        "runs": runs,
        "tool": tool,
    }


BODY = b"first byte through the tunnel\n"


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _page_server() -> Iterator[int]:
    """The user's local web server that the new tunnel will expose."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _first_byte(port: int, deadline: float) -> bool:
    """One GET through the tunnel's data port; True once the page comes back."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=max(0.1, deadline - time.monotonic())
    )
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read() == BODY
    except OSError:
        return False
    finally:
        conn.close()


def _inletsctl(args: Sequence[str], env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [str(INLETSCTL), *args, "-o", "json"], env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise BenchError(f"inletsctl {' '.join(args[:1])} failed: {done.stderr.strip()[-500:]}")
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


def _one_create(
    procs: Procs, engine: Sequence[str], env: dict[str, str], upstream: int
) -> tuple[float, float]:
    """(seconds until `create` returned, seconds until the first byte came back)."""
    started = time.monotonic()
    host = _inletsctl(
        ["create", "--provider", "local", "--http", "--upstream", f"http://127.0.0.1:{upstream}"],
        env,
    )
    created = time.monotonic() - started
    argv = shlex.split(str(host["client_command"]))
    # the printed command reads the token from the environment, as `create` tells the user
    client_env = env | {TOKEN_ENV: str(host["token"])}
    client = procs.start(f"create-client-{host['id']}", [*engine, *argv[1:]], env=client_env)
    try:
        deadline = time.monotonic() + 30
        while not _first_byte(int(str(host["data_port"])), deadline):
            if time.monotonic() > deadline:
                raise BenchError(
                    "no byte came through the tunnel made by `inletsctl create` in 30 s"
                )
            time.sleep(0.01)
        return created, time.monotonic() - started
    finally:
        procs.stop(client)
        _inletsctl(["delete", "--id", str(host["id"])], env)


def create_to_first_byte(
    procs: Procs, work: Path, engine: Sequence[str], runs: int = 5
) -> dict[str, object]:
    """Median time from `inletsctl create --provider local` to a page fetched through it.

    The clock runs across what a user does: create, start the printed client command,
    fetch. State goes to a throw-away directory, and every host is deleted again.
    """
    env = os.environ | {"INLETSCTL_STATE_DIR": str(work / "state"), "NO_COLOR": "1"}
    with _page_server() as upstream:
        times = [_one_create(procs, engine, env, upstream) for _ in range(runs)]
    return {
        "test": "create_local_first_byte_ms",
        "value": round(statistics.median(t for _, t in times) * 1000),
        "create_returned_ms": round(statistics.median(c for c, _ in times) * 1000),
        "runs": runs,
    }
