"""Is the exit server ready? Its control port answers TLS with OUR certificate, /healthz ok.

"The cloud says running" only means a VM booted; cloud-init may still be fetching
the engine, or have failed. Only the tunnel server answering with the certificate we
generated (pinned by fingerprint, as the client pins it) proves that the client
command we print will work. A server with any other certificate is never ready: it
is not the one we made, or someone is in between.

The probe never raises for what the network or the server does: it returns a short
reason for the progress line (``connection refused``, ``certificate mismatch``,
``timed out``, ``/healthz answered 503``), so polling goes on until the deadline.

This module is imported by ``create``'s option parsing (for :class:`Wait`), so the
TLS and HTTP machinery is imported only when a probe runs, keeping ``--help`` fast.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable


class Wait(str, enum.Enum):
    """How far ``create`` waits: each level includes the ones before it."""

    none = "none"  # return right after the create call
    running = "running"  # until the cloud says the VM runs
    ready = "ready"  # and until the tunnel server answers with our certificate


#: ``probe(ip, control_port, fingerprint, timeout)`` -> None when ready, else why not.
Probe = Callable[[str, int, str, float], "str | None"]

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
}


def probe(ip: str, port: int, fingerprint: str, timeout: float) -> str | None:
    """None when the server at ``ip:port`` is ours and healthy; otherwise a short reason."""
    import http.client
    import ssl

    from providers.local import healthz

    if not ip:
        return "no IP address yet"
    try:
        doc = healthz(ip, port, fingerprint, timeout)
    except ssl.SSLError as exc:
        if "pinned fingerprint" in str(exc):
            return "certificate mismatch"
        return f"TLS failed: {exc.reason or exc}"
    except TimeoutError:
        return "timed out"
    except OSError as exc:  # /healthz answered 503 arrives as a plain OSError
        if exc.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[exc.errno]
        return exc.strerror or str(exc) or type(exc).__name__
    except ValueError:  # the body was not JSON
        return "/healthz answered something other than JSON"
    except http.client.HTTPException as exc:
        return f"not an HTTP answer ({type(exc).__name__})"
    status = doc.get("status")
    if status != "ok":
        return f"/healthz says status {status!r}"
    return None
