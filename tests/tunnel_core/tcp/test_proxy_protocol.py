"""The PROXY header encoder against HAProxy's proxy-protocol.txt (v1 section 2.1, v2 2.2).

Expected bytes are spelled out from the spec's layout, not from the encoder.
"""

from __future__ import annotations

import pytest

from tunnel_core.tcp.proxy_protocol import header

# Section 2.2: "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
SIGNATURE = bytes.fromhex("0D0A0D0A000D0A515549540A")


def test_v1_ipv4_is_one_text_line() -> None:
    got = header("v1", ("192.0.2.10", 56324), ("203.0.113.1", 443))
    assert got == b"PROXY TCP4 192.0.2.10 203.0.113.1 56324 443\r\n"


def test_v1_the_longest_ipv4_line_from_the_spec() -> None:
    got = header("v1", ("255.255.255.255", 65535), ("255.255.255.255", 65535))
    assert got == b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"


def test_v1_ipv6_uses_tcp6_and_compressed_addresses() -> None:
    got = header("v1", ("2001:db8::1", 1234), ("2001:0db8:0000::0002", 80))
    assert got == b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n"
    longest = "ffff:" * 7 + "ffff"
    assert len(header("v1", (longest, 65535), (longest, 65535))) <= 107  # the spec's bound


def test_v1_without_addresses_is_unknown() -> None:
    assert header("v1", None, ("127.0.0.1", 80)) == b"PROXY UNKNOWN\r\n"


def test_v2_ipv4() -> None:
    got = header("v2", ("192.0.2.10", 56324), ("203.0.113.1", 443))
    expected = (
        SIGNATURE
        + bytes([0x21])  # version 2, PROXY
        + bytes([0x11])  # AF_INET, STREAM
        + (12).to_bytes(2, "big")
        + bytes([192, 0, 2, 10])
        + bytes([203, 0, 113, 1])
        + (56324).to_bytes(2, "big")
        + (443).to_bytes(2, "big")
    )
    assert got == expected
    assert len(got) == 16 + 12


def test_v2_ipv6() -> None:
    got = header("v2", ("2001:db8::1", 1234), ("::1", 8000))
    expected = (
        SIGNATURE
        + bytes([0x21, 0x21])  # version 2 PROXY, AF_INET6 STREAM
        + (36).to_bytes(2, "big")
        + bytes.fromhex("20010db8000000000000000000000001")
        + bytes.fromhex("00000000000000000000000000000001")
        + (1234).to_bytes(2, "big")
        + (8000).to_bytes(2, "big")
    )
    assert got == expected


def test_v2_without_addresses_is_local_with_no_body() -> None:
    assert header("v2", None, None) == SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])


def test_ipv4_mapped_addresses_are_sent_as_ipv4() -> None:
    got = header("v1", ("::ffff:192.0.2.10", 1), ("::ffff:203.0.113.1", 2))
    assert got == b"PROXY TCP4 192.0.2.10 203.0.113.1 1 2\r\n"


def test_mixed_families_become_tcp6() -> None:
    got = header("v1", ("192.0.2.10", 1), ("2001:db8::2", 2))
    assert got == b"PROXY TCP6 ::ffff:192.0.2.10 2001:db8::2 1 2\r\n"


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="v1 or v2"):
        header("v3", ("127.0.0.1", 1), ("127.0.0.1", 2))
