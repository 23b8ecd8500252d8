"""Compute Engine through google-cloud-compute's real REST traffic, against the local fake.

Credentials go the way a user's do: a service-account key file named by
``GOOGLE_APPLICATION_CREDENTIALS``, from which google-auth signs the JWT that the fake
verifies; or an access token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from providers import kit
from providers.errors import (
    CapacityError,
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    ProviderAPIError,
    ProviderError,
    ProvisionTimeout,
)
from providers.gce import GceProvider, endpoint_url, host_label
from providers.models import ProviderConfig, TunnelMode
from providers.testing.conformance import (
    ProviderConformance,
    check_deleted_host_is_gone,
    check_failed_undo,
    spec_for,
    wait_active,
)
from providers.testing.jsonapi import serving
from tests.fakes.gce import FakeGce

GOOGLE_ENV = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "GOOGLE_CLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
    "INLETS_ACCESS_TOKEN",
)


@pytest.fixture
def gce_fake() -> Iterator[FakeGce]:
    yield from serving(FakeGce())


@pytest.fixture
def key_file(gce_fake: FakeGce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake's service-account key, as GOOGLE_APPLICATION_CREDENTIALS names it."""
    for name in GOOGLE_ENV:
        monkeypatch.delenv(name, raising=False)
    key = gce_fake.write_key(tmp_path / "key.json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    return key


@pytest.fixture
def gce(gce_fake: FakeGce, key_file: Path) -> GceProvider:
    return GceProvider(ProviderConfig(endpoint_url=gce_fake.base_url))


class TestGceConformance(ProviderConformance):
    failure_points = tuple(FakeGce.steps)

    @pytest.fixture
    def cli_env(self, gce_fake: FakeGce, key_file: Path) -> dict[str, str]:
        return {
            "GOOGLE_APPLICATION_CREDENTIALS": str(key_file),
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"{gce_fake.base_url}/",
        }

    @pytest.fixture
    def provider(self, gce: GceProvider) -> GceProvider:
        return gce

    @pytest.fixture
    def fake(self, gce_fake: FakeGce) -> FakeGce:
        return gce_fake


def rules(fake: FakeGce) -> dict[str, tuple[int, list[str], list[str]]]:
    """name -> (priority, source ranges, ports) of each allow rule."""
    return {
        name: (r["priority"], r["sourceRanges"], r["allowed"][0]["ports"])
        for name, r in fake.firewalls.items()
        if "allowed" in r
    }


def test_instance_gets_user_data_labels_tag_and_defaults(gce, gce_fake) -> None:
    spec = spec_for(gce)
    host = gce.create(spec)
    zone, name = host.id.split("/")
    instance = gce_fake.instances[(zone, name)]
    labels = {"inletsctl": "exit-server", "inletsctl-host": spec.host_id}
    assert instance["labels"] == labels
    assert instance["disks"][0]["labels"] == labels and instance["disks"][0]["autoDelete"]
    assert gce_fake.user_data(instance) == spec.user_data
    assert (zone, instance["machineType"].rsplit("/", 1)[-1]) == ("us-central1-a", "e2-micro")
    image = instance["disks"][0]["sourceImage"]
    assert image == "projects/debian-cloud/global/images/family/debian-12"
    assert instance["tags"]["items"] == [f"inletsctl-{spec.host_id}"]
    active = wait_active(gce, host)
    assert (active.ip, active.additional["host_id"]) == (host.ip, spec.host_id)


def test_the_rules_exist_before_the_instance_and_deny_all_else(gce, gce_fake) -> None:
    spec = spec_for(gce)
    gce.create(spec)
    tag = f"inletsctl-{spec.host_id}"
    posts = [r for r in gce_fake.requests if r.method == "POST" and not r.path.endswith("/wait")]
    assert [p.body["name"] for p in posts] == [f"{tag}-deny", f"{tag}-allow-0", spec.name]
    deny = gce_fake.firewalls[f"{tag}-deny"]
    assert (deny["denied"], deny["sourceRanges"]) == ([{"IPProtocol": "all"}], ["0.0.0.0/0"])
    assert deny["priority"] == 910 and deny["targetTags"] == [tag]
    assert rules(gce_fake) == {f"{tag}-allow-0": (900, ["0.0.0.0/0"], ["8080", "8123"])}
    assert all(r["network"] == "global/networks/default" for r in gce_fake.firewalls.values())


@pytest.mark.parametrize(
    ("server_changes", "ports"),
    [
        ({"ports": (), "control_port": 9000}, ["1024-65535"]),
        ({"mode": TunnelMode.HTTP, "data_port": 8080}, ["8080", "8123"]),
        ({"mode": TunnelMode.HTTP, "letsencrypt_domains": ("x.example",)}, ["80", "443", "8123"]),
    ],
)
def test_allow_rule_ports_match_the_mode(gce, gce_fake, server_changes, ports) -> None:
    spec = spec_for(gce)
    gce.create(replace(spec, server=replace(spec.server, **server_changes)))
    assert [p for _, _, p in rules(gce_fake).values()] == [ports]


def test_allow_ips_narrow_the_data_ports_and_ipv6_gets_no_rule(gce, gce_fake) -> None:
    spec = spec_for(gce)
    allowed = ("203.0.113.0/24", "2001:db8::/32")
    gce.create(replace(spec, server=replace(spec.server, allow_ips=allowed)))
    tag = f"inletsctl-{spec.host_id}"
    assert rules(gce_fake) == {
        f"{tag}-allow-0": (900, ["0.0.0.0/0"], ["8123"]),
        f"{tag}-allow-1": (900, ["203.0.113.0/24"], ["8080"]),
    }
    only_v6 = spec_for(gce)
    gce.create(replace(only_v6, server=replace(only_v6.server, allow_ips=("2001:db8::/32",))))
    mine = {k: v for k, v in rules(gce_fake).items() if only_v6.host_id in k}
    assert list(mine.values()) == [(900, ["0.0.0.0/0"], ["8123"])], "data ports stay closed"


def test_delete_waits_for_the_instance_before_removing_its_rules(gce, gce_fake) -> None:
    host = gce.create(spec_for(gce))
    gce_fake.running_waits = 2
    gce.delete(host_id=host.id)
    (delete,) = [o for o in gce_fake.operations.values() if o["operationType"] == "delete"
                 and "/instances/" in o["targetLink"]]  # fmt: skip
    assert len(gce_fake.calls("POST", f".*/operations/{delete['name']}/wait")) == 3
    assert gce_fake.unguarded == [], "no rule went while the instance was alive"
    assert gce_fake.resources() == set()


def test_an_operation_that_never_finishes_is_a_timeout(gce_fake, key_file) -> None:
    impatient = GceProvider(ProviderConfig(endpoint_url=gce_fake.base_url), max_waits=2)
    gce_fake.running_waits = 5
    spec = spec_for(impatient)
    with pytest.raises(ProvisionTimeout, match=f"insert of inletsctl-{spec.host_id}-deny"):
        impatient.create(spec)
    gce_fake.running_waits = 0
    assert impatient.purge(spec.host_id) == [f"firewall rule inletsctl-{spec.host_id}-deny"]
    assert gce_fake.resources() == set()


def test_a_full_zone_is_a_capacity_error_and_leaves_nothing(gce, gce_fake) -> None:
    gce_fake.exhausted["us-central1-a"] = (
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "The zone 'projects/inletsctl-test/zones/us-central1-a' does not have enough "
        "resources available to fulfill the request.",
    )
    with pytest.raises(CapacityError) as info:
        kit.create_host(gce, spec_for(gce))
    assert info.value.code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert "does not have enough resources" in info.value.message
    assert "--region" in info.value.hint
    assert gce_fake.resources() == set()


@pytest.mark.parametrize(
    ("reason", "message", "capacity", "hint"),
    [
        ("quotaExceeded", "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.", True,
         "quota"),
        ("forbidden", "Required 'compute.instances.create' permission", False,
         "roles/compute.instanceAdmin.v1"),
        ("accessNotConfigured", "Compute Engine API has not been used in project", False,
         "gcloud services enable compute.googleapis.com"),
    ],
)  # fmt: skip
def test_403s_are_quota_or_permission_errors(gce, gce_fake, reason, message, capacity, hint):
    gce_fake.refuse("POST .*/instances", 403, reason, message)
    with pytest.raises(ProviderAPIError) as info:
        kit.create_host(gce, spec_for(gce))
    assert isinstance(info.value, CapacityError) is capacity
    assert message in info.value.message and "\n" not in info.value.message
    assert hint in info.value.hint
    assert gce_fake.resources() == set()


def test_a_key_the_api_refuses_is_one_line_naming_the_variable(gce_fake, key_file) -> None:
    info = json.loads(key_file.read_text())
    key_file.write_text(json.dumps({**info, "client_email": "deleted@x.iam.gserviceaccount.com"}))
    with pytest.raises(ProviderAPIError) as refused:
        GceProvider(ProviderConfig(endpoint_url=gce_fake.base_url)).list()
    assert str(refused.value) == (
        "gce: the API rejected the credentials from GOOGLE_APPLICATION_CREDENTIALS "
        "(401 Unauthorized)"
    )
    assert "GOOGLE_APPLICATION_CREDENTIALS" in refused.value.hint
    assert info["private_key"] not in f"{refused.value}{refused.value.hint}"


def test_an_access_token_needs_a_project_and_a_refused_one_names_its_variable(
    gce_fake, key_file, monkeypatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", gce_fake.token)
    config = ProviderConfig(endpoint_url=gce_fake.base_url)
    with pytest.raises(CredentialsMissing) as missing:
        GceProvider(config)
    assert "GOOGLE_CLOUD_PROJECT" in missing.value.hint
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", gce_fake.project)
    assert GceProvider(config).list() == []
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "expired-token")
    with pytest.raises(ProviderAPIError, match="from GOOGLE_OAUTH_ACCESS_TOKEN .401") as info:
        GceProvider(config).list()
    assert "gcloud auth print-access-token" in info.value.hint


def test_a_key_passed_as_access_token_file_contents_is_used(gce_fake, key_file, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    config = ProviderConfig(access_token=key_file.read_text(), endpoint_url=gce_fake.base_url)
    host = GceProvider(config).create(spec_for(GceProvider(config)))
    assert host.id in {f"{z}/{n}" for z, n in gce_fake.instances}
    assert all(gce_fake.project in r.path for r in gce_fake.requests)


def test_the_project_variable_wins_over_the_keys_own(gce, gce_fake, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "another-project")
    with pytest.raises(ProviderAPIError) as info:
        GceProvider(ProviderConfig(endpoint_url=gce_fake.base_url)).list()
    assert gce_fake.requests[-1].path.startswith("/compute/v1/projects/another-project/")
    assert "GOOGLE_CLOUD_PROJECT" in info.value.hint


@pytest.mark.parametrize(
    ("changes", "suggestion"),
    [({"region": "us-central1-f"}, "us-central1-a"), ({"plan": "e2-mikro"}, "e2-micro")],
)
def test_unknown_zone_or_machine_type_suggests_the_closest(gce, gce_fake, changes, suggestion):
    with pytest.raises(InvalidSpec) as info:
        gce.create(spec_for(gce, **changes))
    assert info.value.hint.startswith("Did you mean") and suggestion in info.value.hint
    assert gce_fake.calls("POST", ".*") == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [({"name": "My_Exit"}, "instance name"), ({"image": "debian-12"}, "PROJECT/FAMILY")],
)
def test_a_bad_name_or_image_spelling_is_refused_before_any_call(gce, gce_fake, changes, words):
    with pytest.raises(InvalidSpec, match=words):
        gce.create(spec_for(gce, **changes))
    assert gce_fake.requests == []


def test_an_unknown_image_family_is_the_apis_error_and_leaves_nothing(gce, gce_fake) -> None:
    with pytest.raises(ProviderAPIError, match="debian-99' was not found"):
        kit.create_host(gce, spec_for(gce, image="debian-cloud/debian-99"))
    assert gce_fake.resources() == set()


def test_list_follows_pages_and_sees_every_zone(gce, gce_fake) -> None:
    gce_fake.max_results = 1
    made = {gce.create(spec_for(gce, region=zone)).id for zone in ("us-central1-a", "us-east1-b")}
    made.add(gce.create(spec_for(gce)).id)
    assert {h.id for h in gce.list()} == made
    assert {h.region for h in gce.list()} == {"us-central1-a", "us-east1-b"}


def test_failed_undo_names_the_rule_and_how_to_finish(gce, gce_fake) -> None:
    refusal = (500, "backendError", "Internal error")
    spec, message = check_failed_undo(gce, gce_fake, "create_instance", refusal)
    assert f"firewall rule inletsctl-{spec.host_id}-deny" in message


def test_a_deleted_host_is_not_found_by_id_or_ip(gce) -> None:
    check_deleted_host_is_gone(gce)


def test_console_output_is_the_serial_port(gce) -> None:
    host = gce.create(spec_for(gce))
    assert "Cloud-init" in gce.console_output(host.id)
    with pytest.raises(HostNotFound):
        gce.console_output("us-central1-a/no-such-vm")


def test_a_bare_name_is_looked_up_in_the_configured_zone(gce_fake, key_file) -> None:
    elsewhere = ProviderConfig(endpoint_url=gce_fake.base_url, region="us-east1-b")
    provider = GceProvider(elsewhere)
    host = provider.create(spec_for(provider, region="us-east1-b"))
    assert provider.status(host.name).id == host.id == f"us-east1-b/{host.name}"


def test_the_endpoint_is_gclouds_override_without_the_version() -> None:
    gcloud = {"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": "https://proxy.example/compute/v1/"}
    assert endpoint_url(ProviderConfig(), gcloud) == "https://proxy.example"
    flag = ProviderConfig(endpoint_url="http://127.0.0.1:9/")
    assert endpoint_url(flag, gcloud) == "http://127.0.0.1:9"
    assert endpoint_url(ProviderConfig(), {}) == "https://compute.googleapis.com"


def test_host_ids_become_label_safe_the_same_way_everywhere() -> None:
    assert host_label("0a1b2c3d4e5f") == "0a1b2c3d4e5f"
    assert host_label("My_Host.ID") == "my-host-id"
    assert len(host_label("x" * 100)) == 40


def test_an_endpoint_that_refuses_connections_is_one_line(key_file) -> None:
    closed = GceProvider(ProviderConfig(endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(ProviderError) as info:
        closed.list()
    assert str(info.value) == "gce: cannot reach http://127.0.0.1:9: Connection refused"
    assert "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE" in info.value.hint
