"""Security group rules and error hints of the EC2 provider: pure functions, no AWS."""

from __future__ import annotations

from dataclasses import replace

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from providers.ec2_errors import aws_errors, hint_for
from providers.ec2_rules import MAX_RULES, ip_permissions, open_ports
from providers.errors import CredentialsMissing, HostNotFound, InvalidSpec, ProviderAPIError
from providers.ports import merge_ranges
from tests.certs import server_spec

SERVER = server_spec()


def test_ranges_are_merged_when_they_touch_or_overlap() -> None:
    assert merge_ranges([(8123, 8123), (8000, 8100), (8101, 8101), (80, 80), (90, 95)]) == [
        (80, 80),
        (90, 95),
        (8000, 8101),
        (8123, 8123),
    ]


def test_allow_list_is_used_when_no_ports_are_named() -> None:
    server = replace(SERVER, ports=(), allow_ports="80, 443,10000-10010")
    assert open_ports(server) == [(80, 80), (443, 443), (8123, 8123), (10000, 10010)]


@pytest.mark.parametrize("allow", ["80-70", "http", "0-10", "70000"])
def test_bad_allow_list_is_an_invalid_spec(allow: str) -> None:
    with pytest.raises(InvalidSpec, match="allow-ports"):
        open_ports(replace(SERVER, ports=(), allow_ports=allow))


def test_too_many_separate_ports_are_refused_before_aws_is_asked() -> None:
    spread = tuple(range(10000, 10000 + 2 * MAX_RULES, 2))
    with pytest.raises(InvalidSpec, match="do not fit"):
        ip_permissions(replace(SERVER, ports=spread))
    assert len(ip_permissions(replace(SERVER, ports=spread[: MAX_RULES - 1]))) == MAX_RULES


def test_allow_ips_split_v4_and_v6_and_count_toward_the_limit() -> None:
    server = replace(SERVER, ports=(8080,), allow_ips=("203.0.113.0/24",))
    (control, data) = ip_permissions(server)
    assert (control["FromPort"], [r["CidrIp"] for r in control["IpRanges"]]) == (
        8123,
        ["0.0.0.0/0"],
    )
    assert [r["CidrIp"] for r in data["IpRanges"]] == ["203.0.113.0/24"]
    assert "Ipv6Ranges" not in data  # no IPv6 network allowed: no IPv6 rule at all
    many = tuple(f"10.{i}.0.0/16" for i in range(MAX_RULES))
    with pytest.raises(InvalidSpec, match="IPv4 rules"):
        ip_permissions(replace(SERVER, ports=(8080,), allow_ips=many))


def test_hint_falls_back_from_the_full_code_to_its_family() -> None:
    assert "--image" in hint_for("InvalidAMIID.NotFound")
    assert "-v" in hint_for("SomethingNew")


def test_errors_are_translated_at_the_boundary() -> None:
    def client_error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}}, "RunInstances")

    with pytest.raises(HostNotFound):
        with aws_errors("describe"):
            raise client_error("InvalidInstanceID.Malformed")
    with pytest.raises(ProviderAPIError) as caught:
        with aws_errors("launch the instance"):
            raise client_error("VcpuLimitExceeded")
    assert str(caught.value) == "ec2: could not launch the instance: VcpuLimitExceeded: m"
    assert "quota" in caught.value.hint
    with pytest.raises(CredentialsMissing):
        with aws_errors("list"):
            raise NoCredentialsError()
