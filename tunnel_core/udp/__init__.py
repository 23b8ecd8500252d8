"""UDP mode: each public source address is a flow, carried as one stream to the client.

* :mod:`.plane`: the data planes (server flows per port, client upstream sockets);
* :mod:`.cli`: ``tunnel-core udp server|client``.
"""

__all__ = ["cli", "plane"]
