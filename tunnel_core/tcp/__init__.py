"""TCP mode: the server listens on the ports each client asks for; the client dials.

* :mod:`.plane`: the data planes (server listeners, client upstream dialer);
* :mod:`.proxy_protocol`: PROXY protocol v1/v2 headers (sans-I/O);
* :mod:`.cli`: ``tunnel-core tcp server|client``.
"""

__all__ = ["cli", "plane", "proxy_protocol"]
