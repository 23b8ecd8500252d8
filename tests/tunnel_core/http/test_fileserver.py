"""``tunnel-core http fileserver`` as a real process: auth, traversal, browsing."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import Engine, EngineProcess, free_port, wait_for

pytestmark = pytest.mark.network
TOKEN = "file-token-123"


def raw_get(port: int, target: str, auth: str | None = f"admin:{TOKEN}") -> tuple[int, bytes]:
    """One request sent byte for byte (clients would normalise ``..`` away)."""
    head = f"GET {target} HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n"
    if auth is not None:
        head += f"Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall((head + "\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def webroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.txt").write_text("hello from the webroot\n")
    (root / "sub" / "<b>odd&name<i>.txt").write_text("odd\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape-dir").symlink_to(tmp_path)
    return root


def start(engine: Engine, webroot: Path, *extra: str) -> tuple[EngineProcess, int]:
    port = free_port()
    process = engine.start(
        "http", "fileserver", "--webroot", str(webroot), "--port", str(port),
        "--token-env", "FILE_TOKEN", *extra, env={"FILE_TOKEN": TOKEN},
    )  # fmt: skip
    wait_for(lambda: listening(port) or process.proc.poll() is not None)
    assert process.proc.poll() is None, process.stderr()
    return process, port


def test_auth_is_required_and_files_are_served(engine: Engine, webroot: Path) -> None:
    _, port = start(engine, webroot)
    assert raw_get(port, "/index.txt", auth=None)[0] == 401
    assert raw_get(port, "/index.txt", auth=f"root:{TOKEN}")[0] == 401
    assert raw_get(port, "/index.txt", auth="admin:wrong")[0] == 401
    assert raw_get(port, "/index.txt") == (200, b"hello from the webroot\n")
    assert raw_get(port, "/sub/%3Cb%3Eodd%26name%3Ci%3E.txt") == (200, b"odd\n")


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/escape",
        "/escape-dir/secret.txt",
        "/..%5csecret.txt",
        "/index.txt%00.png",
    ],
)
def test_nothing_outside_the_webroot_is_reachable(
    engine: Engine, webroot: Path, target: str
) -> None:
    _, port = start(engine, webroot)
    status, body = raw_get(port, target)
    assert status in (400, 403, 404)
    assert b"outside" not in body


def test_listing_only_with_allow_browsing_and_escaped(engine: Engine, webroot: Path) -> None:
    _, closed = start(engine, webroot)
    assert raw_get(closed, "/")[0] == 403
    assert raw_get(closed, "/sub/")[0] == 403
    _, port = start(engine, webroot, "--allow-browsing")
    status, body = raw_get(port, "/sub/")
    assert status == 200
    assert b"&lt;b&gt;odd&amp;name&lt;i&gt;.txt" in body
    assert b"<b>" not in body


def test_a_missing_webroot_is_a_usage_error(engine: Engine, tmp_path: Path) -> None:
    process = engine.start(
        "http", "fileserver", "--webroot", str(tmp_path / "nope"), "--port", str(free_port()),
        "--token", TOKEN,
    )  # fmt: skip
    assert process.wait_exit() == 2
    assert "--webroot" in process.stderr() and TOKEN not in process.stderr()
    assert os.path.exists(process.log)
