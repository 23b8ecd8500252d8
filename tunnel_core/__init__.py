"""The tunnel engine: HTTP and TCP tunnels over a TLS WebSocket. Imports nothing of ours.

The names below are the API for data planes and embedders; the modules that define
them are documented in docs/engine.md.
"""

from .client import Backoff, ClientConfig, connect, run_client
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
