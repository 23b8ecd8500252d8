"""Datagram framing on a stream: any split of the bytes gives back the same datagrams."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tunnel_core.protocol.datagrams import MAX_DATAGRAM, DatagramReader, encode


@given(
    datagrams=st.lists(st.binary(max_size=600), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=12),
)
def test_boundaries_survive_any_split_of_the_stream(
    datagrams: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(map(encode, datagrams))
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    reader = DatagramReader()
    out: list[bytes] = []
    for start, stop in zip(points, points[1:], strict=False):
        out += reader.feed(wire[start:stop])
    assert out == datagrams
    assert reader.pending == 0


def test_a_partial_datagram_waits() -> None:
    reader = DatagramReader()
    framed = encode(b"hello")
    assert reader.feed(framed[:4]) == []
    assert reader.pending == 4
    assert reader.feed(framed[4:] + encode(b"")) == [b"hello", b""]


def test_a_datagram_longer_than_the_prefix_allows_is_refused() -> None:
    assert len(encode(b"x" * MAX_DATAGRAM)) == MAX_DATAGRAM + 2
    with pytest.raises(ValueError, match="over"):
        encode(b"x" * (MAX_DATAGRAM + 1))
