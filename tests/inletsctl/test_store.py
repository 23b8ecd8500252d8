from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inletsctl.errors import HostUnknown, StateError
from inletsctl.store import SCHEMA_VERSION, HostRecord, Store


def record(host_id: str, **kw: object) -> HostRecord:
    base: dict[str, object] = dict(
        id=host_id,
        provider="local",
        name=f"inlets-{host_id}",
        status="creating",
        mode="tcp",
        engine="tunnel-core",
        control_port=8123,
        data_port=8000,
        fingerprint="sha256:" + "a" * 64,
        token="secret-token",
    )
    base.update(kw)
    return HostRecord(**base)  # type: ignore[arg-type]


def test_round_trip_and_file_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.add(record("h1", additional={"pid": "12"}))
    got = store.get("h1")
    assert got.token == "secret-token"
    assert got.additional == {"pid": "12"}
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


def test_update_and_delete_marks_not_drops(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(record("h1"))
    store.update("h1", status="active", ip="192.0.2.1")
    store.update("h1", status="deleted")
    assert [r.id for r in store.all()] == []
    everything = store.all(include_deleted=True)
    assert [(r.id, r.status, r.ip) for r in everything] == [("h1", "deleted", "192.0.2.1")]


def test_unknown_id(tmp_path: Path) -> None:
    with pytest.raises(HostUnknown, match="nope"):
        Store(tmp_path).get("nope")
    with pytest.raises(HostUnknown):
        Store(tmp_path).update("nope", status="active")


def test_find_by_provider_id_among_live_rows(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(record("h1", provider_id="i-1", status="deleted"))
    store.add(record("h2", provider_id="i-1", provider="ec2"))
    store.add(record("h3", provider_id="droplet-7", provider="digitalocean"))
    found = store.find_provider_id("i-1")
    assert found is not None and found.id == "h2"
    assert store.find_provider_id("i-1", "hetzner") is None, "only that provider's, if given"
    assert store.find_provider_id("") is None, "no provider id yet matches nothing"


def test_find_by_ip_skips_deleted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(record("a", ip="192.0.2.7"))
    store.add(record("b", ip="192.0.2.7", status="deleted"))
    assert [r.id for r in store.find_ip("192.0.2.7")] == ["a"]


def test_newer_schema_is_refused_and_kept(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(record("h1"))
    with sqlite3.connect(store.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="schema") as info:
        store.all()
    assert "Upgrade" in info.value.hint
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM hosts").fetchone()[0] == 1


#: the schema of the first release, as its files are on users' disks
V1_HOSTS = """
CREATE TABLE hosts (
    id TEXT PRIMARY KEY, provider TEXT NOT NULL, provider_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL, region TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,
    ip TEXT NOT NULL DEFAULT '', mode TEXT NOT NULL, engine TEXT NOT NULL,
    control_port INTEGER NOT NULL, data_port INTEGER NOT NULL, ports TEXT NOT NULL DEFAULT '',
    domains TEXT NOT NULL DEFAULT '', fingerprint TEXT NOT NULL, token TEXT NOT NULL,
    additional TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL
)
"""


def test_a_version_1_file_is_migrated_in_place_keeping_its_rows(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with sqlite3.connect(store.path) as conn:
        conn.execute(V1_HOSTS)
        conn.execute(
            "INSERT INTO hosts (id, provider, name, status, mode, engine, control_port,"
            " data_port, fingerprint, token, created_at, updated_at) VALUES"
            " ('old', 'hetzner', 'n', 'ready', 'tcp', 'tunnel-core', 8123, 8000, 'f', 't', 1, 1)"
        )
        conn.execute("PRAGMA user_version = 1")
    old = store.get("old")
    assert (old.provider, old.status, old.token, old.upstream) == ("hetzner", "ready", "t", "")
    assert old.allow_ips == ""  # schema 3: everyone, as before --allow-ips existed
    assert old.dns == ""  # schema 4: no DNS records, as before --dns existed
    assert store.update("old", upstream="10.0.0.5").upstream == "10.0.0.5"
    store.add(record("new", upstream="http://127.0.0.1:3000"))
    assert store.get("new").upstream == "http://127.0.0.1:3000"
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_corrupt_file_is_an_error_not_a_reset(tmp_path: Path) -> None:
    store = Store(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    junk = b"this is not a database" * 100
    store.path.write_bytes(junk)
    with pytest.raises(StateError, match="unreadable"):
        store.all()
    assert store.path.read_bytes() == junk


def test_two_processes_writing_at_once_both_recorded(tmp_path: Path) -> None:
    """Two real processes insert 40 rows each, interleaved; none may be lost."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from inletsctl.store import HostRecord, Store
        store = Store(Path(sys.argv[1]))
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()
        for i in range(40):
            store.add(HostRecord(id=f"{sys.argv[2]}-{i}", provider="local", name="n",
                status="creating", mode="tcp", engine="tunnel-core", control_port=1,
                data_port=2, fingerprint="f", token="t"))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    try:
        for p in procs:  # both are up before either writes, so the writes overlap
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.close()
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
    ids = {r.id for r in Store(tmp_path).all()}
    assert ids == {f"{t}-{i}" for t in ("p1", "p2") for i in range(40)}
