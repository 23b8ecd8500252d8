"""Which tunnel client serves a request, chosen by its Host header.

Clients register the hosts they serve (or the default, ``None``). Several clients
for one host share its requests in strict round-robin, so load spreads evenly and
predictably. A client that disconnects leaves every rotation at once: routing
never hands out a client the server knows is gone. The router does no I/O, so the
server can call it from its event loop without locking.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

__all__ = ["Router", "normalize_host", "valid_host"]

# RFC 9110 section 7.2: Host = uri-host [ ":" port ]. Names are kept to what DNS and our
# router can use (letters, digits, "-", ".", "_", "~"); IP literals are bracketed.
_HOST = re.compile(rb"(?:[A-Za-z0-9._~-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{0,5})?")


def valid_host(value: bytes) -> bool:
    """Whether a Host value (or an absolute target's authority) names one host.

    ``a, b`` (two Host fields folded into one), ``user@host``, spaces and the empty
    value are refused: two parsers could route them differently.
    """
    return _HOST.fullmatch(value) is not None


def normalize_host(host: str) -> str:
    """Lower-case and drop a port, so ``API.example.com:8000`` finds ``api.example.com``."""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, e.g. [::1]:8000
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


@dataclass
class _Rotation:
    clients: list[Hashable] = field(default_factory=list)
    next: int = 0

    def pick(self) -> Hashable | None:
        if not self.clients:
            return None
        client = self.clients[self.next % len(self.clients)]
        self.next = (self.next + 1) % len(self.clients)
        return client

    def remove(self, client: Hashable) -> None:
        index = self.clients.index(client)
        del self.clients[index]
        # Keep the turn order of the survivors: the one after the removed client is next.
        if index < self.next:
            self.next -= 1
        if self.clients:
            self.next %= len(self.clients)
        else:
            self.next = 0


class Router:
    """Host -> clients registry with a default route (host ``None``)."""

    def __init__(self) -> None:
        self._rotations: dict[str | None, _Rotation] = {}
        self._hosts: dict[Hashable, tuple[str | None, ...]] = {}

    def register(self, client: Hashable, hosts: Iterable[str | None]) -> None:
        """Add ``client`` to the rotation of each host; ``None`` means "any host"."""
        if client in self._hosts:
            self.unregister(client)
        keys = tuple(dict.fromkeys(None if h is None else normalize_host(h) for h in hosts))
        self._hosts[client] = keys
        for key in keys:
            self._rotations.setdefault(key, _Rotation()).clients.append(client)

    def unregister(self, client: Hashable) -> None:
        """Drop ``client`` from every rotation; unknown clients are ignored."""
        for key in self._hosts.pop(client, ()):
            rotation = self._rotations[key]
            rotation.remove(client)
            if not rotation.clients:
                del self._rotations[key]

    def pick(self, host: str | None) -> Hashable | None:
        """The next client for ``host``, else the next default client, else ``None``."""
        if host is not None:
            rotation = self._rotations.get(normalize_host(host))
            if rotation is not None:
                return rotation.pick()
        default = self._rotations.get(None)
        return default.pick() if default is not None else None

    def hosts_of(self, client: Hashable) -> tuple[str | None, ...]:
        """The hosts ``client`` registered, for status pages."""
        return self._hosts.get(client, ())

    def __len__(self) -> int:
        return len(self._hosts)
