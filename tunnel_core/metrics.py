"""Prometheus text-format metrics for the tunnel server.

The server bumps plain integers on its hot path; text is only built when
``/metrics`` is scraped. Names follow Prometheus conventions (``_total`` for
counters, base units), and label values are escaped so a hostile Host header or
path can never break the exposition format. Nothing secret is ever a label.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class Metrics:
    """Counters and gauges of one server process."""

    mode: str = "http"
    clients_connected: int = 0
    streams_open: int = 0
    connections_open: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    upstream_errors: int = 0
    requests: Counter[int] = field(default_factory=Counter)

    def count_request(self, status: int) -> None:
        self.requests[status] += 1

    def render(self) -> str:
        """The exposition text, one HELP/TYPE block per metric family."""
        mode = _escape(self.mode)
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value}" for labels, value in samples)

        family(
            "tunnel_clients_connected",
            "gauge",
            "Tunnel clients connected to the control port.",
            [(f'{{mode="{mode}"}}', self.clients_connected)],
        )
        family(
            "tunnel_streams_open",
            "gauge",
            "Streams open across all tunnel clients.",
            [("", self.streams_open)],
        )
        family(
            "tunnel_public_connections_open",
            "gauge",
            "Public connections open on the data port.",
            [("", self.connections_open)],
        )
        family(
            "tunnel_bytes_total",
            "counter",
            "Payload bytes carried, by direction (in: from the public side).",
            [('{direction="in"}', self.bytes_in), ('{direction="out"}', self.bytes_out)],
        )
        family(
            "tunnel_http_requests_total",
            "counter",
            "HTTP requests answered on the data port, by status code.",
            [(f'{{code="{code}"}}', n) for code, n in sorted(self.requests.items())],
        )
        family(
            "tunnel_upstream_errors_total",
            "counter",
            "Requests that failed between the server and the upstream service.",
            [("", self.upstream_errors)],
        )
        return "\n".join(lines) + "\n"
