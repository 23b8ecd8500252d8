"""TCP mode: the server listens on the ports each client asks for; the client dials.

* :mod:`.plane`: the data planes (server listeners, client upstream dialer);
* :mod:`.cli`: ``tunnel-core tcp server|client``.
"""

__all__ = ["cli", "plane"]
