"""Exceptions of the tunnel engine, one tree with a user-facing message and a hint.

::

    TunnelError                 message + hint; the CLI prints both, exit code 1
    ├── ConfigError             bad flags or files; exit code 2
    ├── ProtocolError           a peer or we broke the wire protocol
    │   ├── LocalProtocolError  we tried something illegal (a bug on our side)
    │   └── RemoteProtocolError the peer sent something illegal; drop its connection
    │       └── FrameError      the codec could not parse the bytes
    ├── ConnectError            could not reach the server (retried by the client)
    ├── FingerprintMismatch     the server's certificate is not the pinned one
    ├── AuthRejected            the server answered 401 to our token
    ├── Refused                 the server refused what the client asked to serve
    └── StreamClosedError       a stream was reset or its connection lost
"""

from __future__ import annotations


class TunnelError(Exception):
    """Root of the engine's errors; ``str()`` is the user-facing message."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint


class ConfigError(TunnelError):
    """A usage error: the user must change a flag, a file or an environment variable."""


class ProtocolError(TunnelError):
    """The wire protocol was broken; the connection that carried it is unusable."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class FrameError(RemoteProtocolError):
    """Bytes that do not parse as frames. The codec raises nothing else on bad input."""


class ConnectError(TunnelError):
    """The control connection could not be made or was lost; worth retrying."""


class FingerprintMismatch(TunnelError):
    """The server presented another certificate than the pinned one; the token stays home."""

    hint = "check --tls-fingerprint against what the server printed"


class AuthRejected(TunnelError):
    """The server rejected the token."""

    hint = "check --token / --token-file / --token-env"


class Refused(TunnelError):
    """The server refused the registration (ports outside its allow-list, ports taken)."""

    def __init__(self, message: str, hint: str = "", *, retry: bool = False) -> None:
        super().__init__(message, hint)
        self.retry = retry


class StreamClosedError(TunnelError):
    """The stream was reset by the peer or its connection was lost."""
