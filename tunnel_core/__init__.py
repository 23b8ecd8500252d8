"""The tunnel engine: HTTP and TCP tunnels over a TLS WebSocket. Imports nothing of ours.

The names below are the API for data planes and embedders; the modules that define
them are documented in docs/engine.md. The exceptions are plain classes; everything
else is imported on first use (PEP 562), so ``import tunnel_core.protocol.frames``
loads the codec alone, without asyncio or ssl.
"""

import importlib
import typing

from .errors import (
    AuthRejected,
    ConfigError,
    ConnectError,
    FingerprintMismatch,
    FrameError,
    LocalProtocolError,
    ProtocolError,
    Refused,
    RemoteProtocolError,
    StreamClosedError,
    TunnelError,
)

if typing.TYPE_CHECKING:
    from .client import Backoff, ClientConfig, connect, run_client
    from .server import DataPlane, ServerConfig, TunnelServer
    from .session import Session, Stream, StreamSink
    from .splice import SpliceProtocol

__all__ = [
    "AuthRejected",
    "Backoff",
    "ClientConfig",
    "ConfigError",
    "ConnectError",
    "DataPlane",
    "FingerprintMismatch",
    "FrameError",
    "LocalProtocolError",
    "ProtocolError",
    "Refused",
    "RemoteProtocolError",
    "ServerConfig",
    "Session",
    "SpliceProtocol",
    "Stream",
    "StreamClosedError",
    "StreamSink",
    "TunnelError",
    "TunnelServer",
    "connect",
    "run_client",
]

#: Where each name imported on first use lives: the imports above, for the import system.
_SOURCES = {
    "client": ("Backoff", "ClientConfig", "connect", "run_client"),
    "server": ("DataPlane", "ServerConfig", "TunnelServer"),
    "session": ("Session", "Stream", "StreamSink"),
    "splice": ("SpliceProtocol",),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if not typing.TYPE_CHECKING:  # hidden from type checkers, so a misspelt name stays an error

    def __getattr__(name: str) -> object:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
