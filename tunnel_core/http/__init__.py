"""HTTP mode: the data port routes each request by Host to a tunnel client.

* :mod:`.public`: a public HTTP/1.1 connection with limits and deadlines;
* :mod:`.router`: Host -> clients, round-robin;
* :mod:`.proxy`: public requests in, tunnel streams out (the server side);
* :mod:`.upstream`: a tunnel stream in, the local service out (the client side);
* :mod:`.plane`: the data planes of both sides;
* :mod:`.fileserver`: ``tunnel-core http fileserver``;
* :mod:`.cli`: ``tunnel-core http server|client|fileserver``.
"""

__all__ = ["cli", "fileserver", "plane", "proxy", "public", "router", "upstream"]
