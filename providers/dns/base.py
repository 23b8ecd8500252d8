"""The contract every DNS provider implements, and the plain values it speaks in.

A DNS provider is deliberately small: list the zones, list the records at a name,
create and delete records, and wait until the API says a change is served. Which
records are ours, in what order they are made and removed, and what is never
touched lives once in :mod:`providers.dns.kit`, as the VM providers' rules live in
:mod:`providers.kit`. Names are lowercase and without the trailing dot everywhere,
so a zone from Route 53 (``example.com.``) compares equal to one from Hetzner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True)
class DnsConfig:
    """Credentials given on the command line; each provider falls back on its own
    ecosystem's variables and files. Secrets are ``repr=False`` so no log shows them."""

    #: the API token, or (Route 53) the access key id
    token: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    profile: str = ""
    endpoint_url: str = ""


@dataclass(frozen=True)
class Zone:
    id: str
    #: the zone's apex, lowercase, no trailing dot: ``example.com``
    name: str


@dataclass(frozen=True)
class Record:
    """One value at one name. ``id`` is the API's record id ("" where records have none)."""

    #: fully qualified, lowercase, no trailing dot: ``app.example.com``
    name: str
    type: str
    #: the address, or a TXT record's text without its quotes
    value: str
    ttl: int = 60
    id: str = ""
    #: Route 53's alias records: the target's hosted zone; ``value`` is ``alias <dns name>``
    alias_zone: str = ""


@runtime_checkable
class DnsProvider(Protocol):
    name: ClassVar[str]

    def __init__(self, config: DnsConfig) -> None: ...

    def zones(self) -> list[Zone]:
        """Every public zone the credentials can change."""
        ...

    def records(self, zone: Zone, name: str = "") -> list[Record]:
        """The records at ``name`` in ``zone`` ("": all of the zone's records)."""
        ...

    def create(self, zone: Zone, records: Sequence[Record]) -> str:
        """Create ``records`` in the order given (atomically where the API can); returns
        the change to :meth:`wait` for ("" where the API has no such thing)."""
        ...

    def delete(self, zone: Zone, records: Sequence[Record]) -> str:
        """Delete exactly ``records`` (as :meth:`records` returned them), in order; one
        already gone is no error. Returns the change to :meth:`wait` for, or ""."""
        ...

    def wait(self, change: str, timeout: float) -> None:
        """Return once the API reports ``change`` served by its name servers;
        ``ProvisionTimeout`` after ``timeout`` seconds. Nothing to do for ""."""
        ...
