"""Host state: which hosts inletsctl made, where, and how to reach them.

SQLite (stdlib) in the user state dir (``INLETSCTL_STATE_DIR`` overrides it), file
mode 0600 because it holds the tunnel tokens the user asked us to keep. WAL and a
busy timeout let two CLIs write at once without losing a row. The schema version
lives in ``PRAGMA user_version``; a newer or unreadable file is an error, never
silently replaced. Rows are marked deleted (or gone), never dropped.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import platformdirs

from inletsctl.errors import HostUnknown, StateError

STATE_DIR_ENV = "INLETSCTL_STATE_DIR"
DB_NAME = "hosts.sqlite3"
#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0

#: A host's ``status`` is the provider's word (``providers.models.HostStatus``:
#: creating, active, failed, deleting, deleted) plus two that only inletsctl can
#: know, because only it probes the tunnel server: ``ready`` (the control port
#: answered TLS with the pinned certificate and /healthz was ok) and ``unready``
#: (``create --wait`` gave up at ``--timeout``; the host is kept for ``logs``).
#: ``active`` on its own means the cloud runs the VM and nobody checked the server.
READY = "ready"
UNREADY = "unready"
#: ``prune`` found that the provider no longer has the host, though inletsctl never
#: deleted it (deleted in the console, reclaimed by the cloud). Kept, not dropped: the
#: row still names the id that ``delete --id`` removes any leftovers by.
GONE = "gone"
DELETED = "deleted"
#: statuses of hosts that no longer exist: hidden from ``list`` unless ``--all``
ENDED = (DELETED, GONE)
_LIVE = f"status NOT IN ({', '.join(repr(s) for s in ENDED)})"

#: ``_MIGRATIONS[n]`` takes a file from schema ``n`` to ``n + 1``; a file is carried
#: through each step it lacks, so old state is upgraded in place, never rebuilt.
_MIGRATIONS: tuple[str, ...] = (
    """
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    region TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    ip TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL,
    engine TEXT NOT NULL,
    control_port INTEGER NOT NULL,
    data_port INTEGER NOT NULL,
    ports TEXT NOT NULL DEFAULT '',
    domains TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL,
    token TEXT NOT NULL,
    additional TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
""",
    # 2: the --upstream given at create, so `get` and `connect` forward to the same service
    "ALTER TABLE hosts ADD COLUMN upstream TEXT NOT NULL DEFAULT ''",
    # 3: --allow-ips given at create ("" = everyone), CIDRs comma-separated
    "ALTER TABLE hosts ADD COLUMN allow_ips TEXT NOT NULL DEFAULT ''",
    # 4: create --dns: the DNS provider, each domain's zone and the records made (JSON)
    "ALTER TABLE hosts ADD COLUMN dns TEXT NOT NULL DEFAULT ''",
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class HostRecord:
    """One host as inletsctl remembers it. ``token`` is the tunnel token, not a cloud secret."""

    id: str
    provider: str
    name: str
    status: str
    mode: str
    engine: str
    control_port: int
    data_port: int
    fingerprint: str
    token: str = field(repr=False)
    provider_id: str = ""
    region: str = ""
    ip: str = ""
    ports: str = ""
    domains: str = ""
    #: what the client forwards to, as given at create ("" = the mode's default)
    upstream: str = ""
    #: the data ports' allowed sources as given at create, CIDRs ("" = everyone)
    allow_ips: str = ""
    #: ``create --dns``: JSON of ``inletsctl.hosts.DnsState`` ("" = no records)
    dns: str = ""
    additional: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


def state_dir() -> Path:
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else Path(platformdirs.user_state_dir("inletsctl"))


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL once per file, so readers never block the writer.

    SQLite answers "database is locked" at once, without its busy handler, when two
    connections switch a new file's journal mode at the same moment; so retry here,
    bounded by the same timeout as every other lock wait.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Store:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = state_dir() if directory is None else directory
        self.path = self.directory / DB_NAME

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot open the host state at {self.path}: {exc.strerror}",
                hint=f"Check the directory's permissions, or set {STATE_DIR_ENV}.",
            ) from exc
        try:
            with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)) as conn:
                conn.row_factory = sqlite3.Row
                self._migrate(conn)
                with conn:
                    yield conn
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"the host state at {self.path} is unreadable: {exc}",
                hint="Move the file aside (it is not replaced automatically) and retry.",
            ) from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _use_wal(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the host state at {self.path} has schema {version}; "
                f"this inletsctl knows {SCHEMA_VERSION}",
                hint="Upgrade inletsctl, or set INLETSCTL_STATE_DIR to another directory.",
            )
        if version < SCHEMA_VERSION:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                # read again under the lock: a second process may have migrated meanwhile
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for step in _MIGRATIONS[version:]:
                    conn.execute(step)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def add(self, record: HostRecord) -> HostRecord:
        now = time.time()
        record = replace(record, created_at=now, updated_at=now)
        row = asdict(record)
        row["additional"] = json.dumps(dict(record.additional), sort_keys=True)
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._connect() as conn:
            conn.execute(f"INSERT INTO hosts ({cols}) VALUES ({marks})", row)
        return record

    def update(self, host_id: str, **changes: object) -> HostRecord:
        if "additional" in changes:
            changes["additional"] = json.dumps(changes["additional"], sort_keys=True)
        changes["updated_at"] = time.time()
        sets = ", ".join(f"{k} = :{k}" for k in changes)
        with self._connect() as conn:
            cur = conn.execute(
                f"UPDATE hosts SET {sets} WHERE id = :id", {**changes, "id": host_id}
            )
            if cur.rowcount == 0:
                raise _unknown(host_id)
        return self.get(host_id)

    def get(self, host_id: str) -> HostRecord:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM hosts WHERE id = ?", (host_id,)).fetchone()
        if row is None:
            raise _unknown(host_id)
        return _record(row)

    def find_ip(self, ip: str) -> list[HostRecord]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM hosts WHERE ip = ? AND {_LIVE} ORDER BY created_at",
                (ip,),
            ).fetchall()
        return [_record(r) for r in rows]

    def find_provider_id(self, provider_id: str, provider: str = "") -> HostRecord | None:
        """The newest live row the provider knows as ``provider_id`` (any provider if "")."""
        if not provider_id:
            return None
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT * FROM hosts WHERE provider_id = ? AND {_LIVE}"
                " AND (? = '' OR provider = ?) ORDER BY created_at DESC LIMIT 1",
                (provider_id, provider, provider),
            ).fetchone()
        return None if row is None else _record(row)

    def all(self, include_deleted: bool = False) -> list[HostRecord]:
        query = "SELECT * FROM hosts"
        if not include_deleted:
            query += f" WHERE {_LIVE}"
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY created_at, id").fetchall()
        return [_record(r) for r in rows]


def _record(row: sqlite3.Row) -> HostRecord:
    values = dict(row)
    values["additional"] = json.loads(values["additional"])
    return HostRecord(**values)


def _unknown(host_id: str) -> HostUnknown:
    return HostUnknown(
        f"no host {host_id!r} in the state",
        hint="Run `inletsctl list --all` to see the hosts in the state.",
    )
