"""Azure through the real SDKs' HTTPS traffic (identity and Resource Manager), against the fake."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from providers import kit
from providers.azure import AzureProvider
from providers.errors import (
    CapacityError,
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    ProviderAPIError,
)
from providers.models import HostSpec, ProviderConfig, TunnelMode
from providers.testing.conformance import (
    ProviderConformance,
    check_deleted_host_is_gone,
    spec_for,
    wait_active,
)
from providers.testing.faults import Fault
from providers.testing.jsonapi import serving
from tests.fakes.azure import FakeAzure

_AZURE_ENV = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_AUTH_LOCATION",
    "ARM_ENDPOINT",
    "INLETS_ACCESS_TOKEN",
)


@pytest.fixture
def az_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    """The fake, and a service principal's shell aimed at it (its CA trusted)."""
    fake = FakeAzure()
    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield from serving(fake)


def open_azure(config: ProviderConfig | None = None) -> AzureProvider:
    """No waits: the fake's operations finish after one poll, and retries come at once."""
    return AzureProvider(config or ProviderConfig(), polling_interval=0, retry_backoff=0)


@pytest.fixture
def az(az_fake: FakeAzure) -> AzureProvider:
    return open_azure()


class TestAzureConformance(ProviderConformance):
    failure_points = tuple(FakeAzure.steps)

    @pytest.fixture
    def cli_env(self, az_fake: FakeAzure) -> dict[str, str]:
        az_fake.async_operations = False  # the CLI polls seconds apart, as on Azure
        return az_fake.env()

    @pytest.fixture
    def provider(self, az: AzureProvider) -> AzureProvider:
        return az

    @pytest.fixture
    def fake(self, az_fake: FakeAzure) -> FakeAzure:
        return az_fake


def _group(fake: FakeAzure, spec: HostSpec) -> str:
    return f"inletsctl-{spec.host_id}"


def _of(fake: FakeAzure, kind: str) -> list[dict]:
    return [r for r in fake.items.values() if r["type"] == f"Microsoft.{kind}"]


def test_every_resource_is_tagged_ours_in_its_own_group_from_the_call_that_makes_it(
    az, az_fake
) -> None:
    spec = spec_for(az)
    host = az.create(spec)
    tags = {"inletsctl": "exit-server", "inletsctl-host": spec.host_id}
    puts = [r for r in az_fake.requests if r.method == "PUT"]
    assert [p.path.split("/")[-2] for p in puts] == [
        "resourcegroups", "networkSecurityGroups", "virtualNetworks", "publicIPAddresses",
        "networkInterfaces", "virtualMachines",
    ]  # fmt: skip
    assert all(p.body["tags"] == tags for p in puts), "tagged in the creating call"
    assert not [r for r in az_fake.requests if r.method == "PATCH"], "no second tagging call"
    assert all(r["group"] == _group(az_fake, spec) for r in az_fake.items.values())
    assert host.id == f"{_group(az_fake, spec)}/{spec.name}"
    assert host.additional["resource_group"] == _group(az_fake, spec)


def test_vm_gets_defaults_custom_data_and_the_nic_behind_the_nsg(az, az_fake) -> None:
    spec = spec_for(az)
    host = az.create(spec)
    (vm,) = _of(az_fake, "Compute/virtualMachines")
    assert (vm["location"], vm["properties"]["hardwareProfile"]["vmSize"]) == (
        "eastus",
        "Standard_B1ls",
    )
    assert vm["properties"]["storageProfile"]["imageReference"] == {
        "publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest",
    }  # fmt: skip
    assert az_fake.user_data[spec.name] == spec.user_data
    (put_vm,) = az_fake.calls("PUT", r".*/virtualMachines/.*")
    custom = put_vm.body["properties"]["osProfile"]["customData"]
    assert base64.b64decode(custom).decode() == spec.user_data, "customData is base64"
    (nsg,) = _of(az_fake, "Network/networkSecurityGroups")
    (nic,) = _of(az_fake, "Network/networkInterfaces")
    assert nic["properties"]["networkSecurityGroup"]["id"] == nsg["id"]
    # made in that order, each operation finished before the next PUT names its result
    lines = [f"{r.method} {r.path}" for r in az_fake.requests]
    puts = [i for i, line in enumerate(lines) if line.startswith("PUT")]
    assert all(
        any("/operations/" in line for line in lines[a:b])
        for a, b in zip(puts[1:], puts[2:], strict=False)
    )
    active = wait_active(az, host)
    assert active.ip.startswith("203.0.113.")
    assert active.additional["provider_status"] == "PowerState/running"


def test_long_running_operations_are_polled_the_documented_way(az, az_fake) -> None:
    az_fake.running_reads = 2
    spec = spec_for(az)
    az.create(spec)
    polls = az_fake.calls(
        "GET", r"/subscriptions/[^/]+/providers/[^/]+/locations/[^/]+/operations/.*"
    )
    assert len(polls) == 5 * 3, "five PUTs, each polled until it left InProgress"
    assert {p.path.split("/")[4] for p in polls} == {"Microsoft.Network", "Microsoft.Compute"}
    assert az.purge(spec.host_id) == [f"resource group {_group(az_fake, spec)}"]
    results = az_fake.calls("GET", r"/subscriptions/[^/]+/operationresults/.*")
    assert len(results) == 3, "the group's delete was followed on its Location until done"


@pytest.mark.parametrize(
    ("server_changes", "ports"),
    [
        ({}, ["8080", "8123", "*"]),
        ({"ports": (), "control_port": 9000}, ["1024-65535", "*"]),
        ({"mode": TunnelMode.HTTP, "data_port": 8080}, ["8080", "8123", "*"]),
        (
            {"mode": TunnelMode.HTTP, "letsencrypt_domains": ("x.example",)},
            ["80", "443", "8123", "*"],
        ),
    ],
)
def test_nsg_allows_our_ports_only_in_priority_order(az, az_fake, server_changes, ports) -> None:
    spec = spec_for(az)
    az.create(replace(spec, server=replace(spec.server, **server_changes)))
    (nsg,) = _of(az_fake, "Network/networkSecurityGroups")
    rules = sorted(nsg["properties"]["securityRules"], key=lambda r: r["properties"]["priority"])
    assert [r["properties"]["destinationPortRange"] for r in rules] == ports
    *allowed, deny = [r["properties"] for r in rules]
    assert all(
        (r["access"], r["protocol"], r["direction"]) == ("Allow", "Tcp", "Inbound") for r in allowed
    )
    assert all(r["sourceAddressPrefix"] == "*" for r in allowed)
    assert (deny["access"], deny["sourceAddressPrefix"], deny["priority"]) == ("Deny", "*", 4096)


def test_allow_ips_restrict_the_data_ports_one_rule_per_address_family(az, az_fake) -> None:
    spec = spec_for(az)
    allowed = ("203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32")
    az.create(replace(spec, server=replace(spec.server, allow_ips=allowed)))
    (nsg,) = _of(az_fake, "Network/networkSecurityGroups")
    rules = [r["properties"] for r in nsg["properties"]["securityRules"]]
    sources = [
        (r["destinationPortRange"], r.get("sourceAddressPrefix") or r["sourceAddressPrefixes"])
        for r in rules
        if r["access"] == "Allow"
    ]
    assert sources == [
        ("8123", "*"), ("8080", ["203.0.113.0/24", "198.51.100.7/32"]), ("8080", "2001:db8::/32"),
    ]  # fmt: skip
    assert len({r["priority"] for r in rules}) == len(rules), "priorities are unique"


def test_purge_deletes_the_group_the_vm_before_its_network(az, az_fake) -> None:
    spec = spec_for(az)
    az.create(spec)
    az.delete(host_id=f"{_group(az_fake, spec)}/{spec.name}")
    kinds = [arm_id.split("/")[-2] for arm_id in az_fake.deleted]
    assert kinds.index("virtualMachines") < kinds.index("networkInterfaces")
    assert kinds.index("networkInterfaces") < kinds.index("networkSecurityGroups")
    assert az_fake.calls("DELETE", r"/subscriptions/[^/]+/resourcegroups/.*")
    assert az_fake.resources() == set()


def test_a_foreign_vm_forced_is_deleted_alone_not_its_group(az, az_fake) -> None:
    vm, _ = az_fake.foreign_vm()
    az.delete(host_id=vm, force=True)
    group = vm.split("/")[0]
    assert f"resourceGroup:{group}" in az_fake.resources(), "the user's group stays"
    assert not _of(az_fake, "Compute/virtualMachines")
    assert not az_fake.calls("DELETE", r"/subscriptions/[^/]+/resourcegroups/[^/]+")


def test_a_restricted_size_is_a_capacity_error_before_anything_exists(az, az_fake) -> None:
    az_fake.restricted.add(("Standard_B1ls", "eastus"))
    with pytest.raises(CapacityError) as info:
        az.create(spec_for(az))
    assert info.value.code == "SkuNotAvailable" and "--region" in info.value.hint
    assert az_fake.calls("PUT", ".*") == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AllocationFailed", "Allocation failed. We do not have sufficient capacity."),
        ("ZonalAllocationFailed", "Allocation failed. Please try another zone."),
        ("OperationNotAllowed", "Operation could not be completed as it results in exceeding "
         "approved standardBSFamily Cores quota."),
    ],
)  # fmt: skip
def test_allocation_and_quota_failures_are_capacity_errors_and_leave_nothing(
    az, az_fake, code, message
) -> None:
    az_fake.allocation_failures["eastus"] = (code, message)
    with pytest.raises(CapacityError) as info:
        kit.create_host(az, spec_for(az))
    assert info.value.code == code
    assert az_fake.resources() == set()


def test_operation_not_allowed_without_quota_is_no_capacity_error(az, az_fake) -> None:
    az_fake.allocation_failures["eastus"] = ("OperationNotAllowed", "The VM is being deleted.")
    with pytest.raises(ProviderAPIError) as info:
        kit.create_host(az, spec_for(az))
    assert not isinstance(info.value, CapacityError)


@pytest.mark.parametrize(
    ("changes", "suggestion"),
    [({"region": "eastus3"}, "eastus"), ({"plan": "Standard_B1l"}, "Standard_B1ls")],
)
def test_unknown_location_or_size_suggests_the_closest(az, az_fake, changes, suggestion) -> None:
    with pytest.raises(InvalidSpec) as info:
        az.create(spec_for(az, **changes))
    assert f"Did you mean {suggestion}" in info.value.hint
    assert az_fake.calls("PUT", ".*") == []


def test_an_image_that_is_no_urn_is_refused_before_any_call(az, az_fake) -> None:
    with pytest.raises(InvalidSpec, match="publisher:offer:sku:version"):
        az.create(spec_for(az, image="debian-12"))
    assert az_fake.requests == [] or all(r.method == "GET" for r in az_fake.requests)


def test_an_unknown_image_is_the_apis_error_and_leaves_nothing(az, az_fake) -> None:
    with pytest.raises(ProviderAPIError, match="PlatformImageNotFound"):
        kit.create_host(az, spec_for(az, image="Debian:debian-99:99:latest"))
    assert az_fake.resources() == set()


def test_list_follows_next_link_and_sees_ours_only(az, az_fake) -> None:
    az_fake.max_per_page = 2
    az_fake.foreign_vm()
    made = {az.create(spec_for(az)).id for _ in range(3)}
    hosts = az.list()
    assert {h.id for h in hosts} == made
    assert all(h.status.value == "active" for h in hosts), "statusOnly brings the power state"


def test_a_deleted_host_is_not_found_by_id_or_ip(az) -> None:
    check_deleted_host_is_gone(az)


def test_a_rejected_client_secret_is_one_line_naming_the_variable(az_fake, monkeypatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    with pytest.raises(ProviderAPIError) as info:
        open_azure().list()
    assert "\n" not in str(info.value)
    assert "AZURE_CLIENT_SECRET" in str(info.value) and "AADSTS7000215" in str(info.value)
    assert "AZURE_CLIENT_SECRET" in info.value.hint
    assert "not-the-secret" not in f"{info.value}{info.value.hint}"
    (token,) = az_fake.calls("POST", r".*/oauth2/v2\.0/token")
    assert token.path == f"/{az_fake.tenant}/oauth2/v2.0/token", "AZURE_AUTHORITY_HOST was used"
    assert not az_fake.calls("GET", r"/subscriptions/.*"), "ARM was never asked"


def test_an_unreachable_sign_in_endpoint_is_named_with_its_variable(az_fake, monkeypatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://127.0.0.1:1")
    with pytest.raises(ProviderAPIError) as info:
        open_azure().list()
    assert str(info.value) == "azure: cannot reach https://127.0.0.1:1: Connection refused"
    assert "AZURE_AUTHORITY_HOST" in info.value.hint


def test_an_expired_access_token_is_rejected_by_arm_naming_the_flag(az_fake, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    with pytest.raises(ProviderAPIError) as info:
        open_azure(ProviderConfig(access_token="expired.jwt.token")).list()
    assert "--access-token" in str(info.value) and "401" in str(info.value)
    (call,) = az_fake.calls(
        "GET", r"/subscriptions/[^/]+/providers/Microsoft.Compute/virtualMachines"
    )
    assert call.headers["authorization"] == "Bearer expired.jwt.token"


def test_a_bare_access_token_is_sent_as_the_bearer(az_fake, monkeypatch) -> None:
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("INLETS_ACCESS_TOKEN", az_fake.token)
    assert open_azure().list() == []
    assert not az_fake.calls("POST", r".*/oauth2/v2\.0/token")


def test_an_sdk_auth_file_brings_the_principal_subscription_and_endpoints(
    az_fake, monkeypatch, tmp_path: Path
) -> None:
    """What Go inletsctl users pass as --access-token-file (``az ad sp create-for-rbac
    --sdk-auth``): the endpoints in it win over the variables."""
    for name in _AZURE_ENV:
        if name != "REQUESTS_CA_BUNDLE":
            monkeypatch.delenv(name, raising=False)
    auth = tmp_path / "client_credentials.json"
    auth.write_text(json.dumps(az_fake.sdk_auth()))
    monkeypatch.setenv("AZURE_AUTH_LOCATION", str(auth))
    assert open_azure().list() == []
    (token,) = az_fake.calls("POST", r".*/oauth2/v2\.0/token")
    assert token.path == f"/{az_fake.tenant}/oauth2/v2.0/token"
    monkeypatch.delenv("AZURE_AUTH_LOCATION")
    assert open_azure(ProviderConfig(access_token=auth.read_text())).list() == []


def test_no_subscription_names_the_variable_before_any_call(az_fake, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID")
    with pytest.raises(CredentialsMissing) as info:
        open_azure()
    assert "AZURE_SUBSCRIPTION_ID" in info.value.hint
    assert az_fake.requests == []


def test_an_incomplete_sdk_auth_json_names_the_missing_fields(az_fake) -> None:
    with pytest.raises(CredentialsMissing, match="clientSecret"):
        open_azure(ProviderConfig(access_token='{"clientId": "x", "tenantId": "y"}'))


def test_an_outage_is_one_line_naming_the_endpoint_variable(az_fake) -> None:
    az_fake.refuse("GET /subscriptions/.*", 503, "ServiceUnavailable", "try later")
    with pytest.raises(ProviderAPIError) as info:
        open_azure().list()  # after the SDK's retries, at once here
    assert "ServiceUnavailable" in str(info.value) and "ARM_ENDPOINT" in info.value.hint


def test_a_lost_answer_to_the_vm_put_is_retried_and_still_leaves_nothing(az, az_fake) -> None:
    """azure-core retries a PUT answered 500; PUT is idempotent, so the retry updates the VM."""
    az_fake.arm("create_vm", Fault.LOST)
    spec = spec_for(az)
    kit.create_host(az, spec)
    assert len(az_fake.calls("PUT", r".*/virtualMachines/.*")) == 2
    assert len(_of(az_fake, "Compute/virtualMachines")) == 1
    kit.delete_host(az, spec.host_id)
    assert az_fake.resources() == set()


def test_endpoint_url_wins_over_arm_endpoint_which_an_error_names(az_fake, monkeypatch) -> None:
    monkeypatch.setenv("ARM_ENDPOINT", "https://127.0.0.1:1")
    assert open_azure(ProviderConfig(endpoint_url=az_fake.base_url)).list() == []
    with pytest.raises(ProviderAPIError) as info:
        open_azure().list()
    assert str(info.value).startswith("azure: cannot reach https://127.0.0.1:1")
    assert "ARM_ENDPOINT" in info.value.hint


def test_the_largest_user_data_the_limit_allows_is_what_the_api_takes(az, az_fake) -> None:
    """The limit is after base64; the API's is 65535 bytes before it."""
    raw = "#cloud-config\n" + "#" * (65535 - len("#cloud-config\n") - 1) + "\n"
    assert len(raw) == 65535
    assert len(base64.b64encode(raw.encode())) == AzureProvider.facts.user_data_limit
    spec = spec_for(az, user_data=raw)
    az.create(spec)
    assert az_fake.user_data[spec.name] == raw


def test_logs_read_the_serial_console_through_its_sas_url_without_our_token(az, az_fake) -> None:
    host = az.create(spec_for(az))
    (vm,) = _of(az_fake, "Compute/virtualMachines")
    assert vm["properties"]["diagnosticsProfile"] == {"bootDiagnostics": {"enabled": True}}
    text = az.console_output(host.id)
    assert text.startswith("cloud-init[812]: Cloud-init v. 22.4.2 running 'modules:final'")
    (blob,) = az_fake.calls("GET", r"/bootdiagnostics/.*")
    assert "authorization" not in blob.headers, "the ARM token never goes to storage"
    foreign, _ = az_fake.foreign_vm()
    with pytest.raises(HostNotFound):
        az.console_output(foreign)
