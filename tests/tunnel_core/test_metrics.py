"""The Prometheus exposition text."""

from __future__ import annotations

import re

from tunnel_core.metrics import Metrics

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z]+="(?:[^"\\\n]|\\.)*"(,[a-z]+="[^"]*")*\})? -?\d+$')


def test_every_line_is_valid_exposition_text_and_counters_show() -> None:
    m = Metrics(mode='ht"tp\n')
    m.clients_connected = 3
    m.bytes_in, m.bytes_out, m.upstream_errors = 10, 20, 2
    for status in (200, 200, 503, 502):
        m.count_request(status)
    text = m.render()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or SAMPLE.match(line), line
    assert 'tunnel_clients_connected{mode="ht\\"tp\\n"} 3' in text
    assert 'tunnel_http_requests_total{code="200"} 2' in text
    assert 'tunnel_http_requests_total{code="503"} 1' in text
    assert 'tunnel_bytes_total{direction="out"} 20' in text
    assert "tunnel_upstream_errors_total 2" in text
