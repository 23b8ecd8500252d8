"""OVHcloud Public Cloud through the ovh SDK's real, signed HTTP traffic, against the fake."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import cloud_init
from providers import kit
from providers.errors import (
    CapacityError,
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    NotOurs,
    ProviderAPIError,
)
from providers.models import ProviderConfig
from providers.ovh import OVHProvider
from providers.testing.conformance import (
    ProviderConformance,
    check_deleted_host_is_gone,
    spec_for,
    wait_active,
)
from providers.testing.jsonapi import serving
from tests.conftest import free_port
from tests.fakes.ovh import FakeOVH

OVH_ENV = (
    "OVH_ENDPOINT",
    "OVH_APPLICATION_KEY",
    "OVH_APPLICATION_SECRET",
    "OVH_CONSUMER_KEY",
    "OVH_CLOUD_PROJECT_SERVICE",
    "OVH_CLIENT_ID",
    "OVH_CLIENT_SECRET",
    "INLETS_ACCESS_TOKEN",
)


@pytest.fixture(autouse=True)
def no_ovh_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable or ovh.conf of this machine's user reaches a test."""
    for name in OVH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("ovh.config.CONFIG_PATH", [str(tmp_path / "no-ovh.conf")])


@pytest.fixture
def ovh_fake() -> Iterator[FakeOVH]:
    yield from serving(FakeOVH())


@pytest.fixture
def ovh_env(ovh_fake: FakeOVH, monkeypatch: pytest.MonkeyPatch) -> FakeOVH:
    for name, value in ovh_fake.env().items():
        monkeypatch.setenv(name, value)
    return ovh_fake


@pytest.fixture
def ovh(ovh_env: FakeOVH) -> OVHProvider:
    return OVHProvider(ProviderConfig())


class TestOVHConformance(ProviderConformance):
    failure_points = tuple(FakeOVH.steps)

    @pytest.fixture
    def cli_env(self, ovh_fake: FakeOVH) -> dict[str, str]:
        return ovh_fake.env()

    @pytest.fixture
    def provider(self, ovh: OVHProvider) -> OVHProvider:
        return ovh

    @pytest.fixture
    def fake(self, ovh_fake: FakeOVH) -> FakeOVH:
        return ovh_fake


def test_instance_gets_name_mark_defaults_and_user_data_in_one_call(ovh, ovh_fake) -> None:
    spec = spec_for(ovh)
    host = ovh.create(spec)
    (create,) = ovh_fake.calls("POST", "/1.0/cloud/project/[^/]+/instance")
    assert create.body["name"] == f"{spec.name}.inletsctl-host-{spec.host_id}"
    assert create.body["region"] == "GRA11" and create.body["monthlyBilling"] is False
    assert create.body["flavorId"] == ovh_fake.flavor_id("GRA11", "d2-2")
    assert create.body["imageId"] == ovh_fake.image_id("GRA11", "Debian 12")
    assert ovh_fake.user_data[host.id] == spec.user_data
    assert (host.name, host.additional["host_id"]) == (spec.name, spec.host_id)
    active = wait_active(ovh, host)
    assert (active.ip, active.ipv6) == ("198.51.100.10", "2001:db8::a")
    assert active.region == "GRA11"


def test_every_request_but_the_clock_is_signed_with_the_apis_time(ovh, ovh_fake) -> None:
    ovh.list()
    (clock, listing) = ovh_fake.requests
    assert clock.path == "/1.0/auth/time" and "x-ovh-signature" not in clock.headers
    assert listing.headers["x-ovh-signature"].startswith("$1$")
    assert listing.headers["x-ovh-timestamp"] == str(int(listing.headers["x-ovh-timestamp"]))
    # the fake's clock is 4000 s off this machine's: only the API's time passes its check


def test_facts_turn_on_the_host_firewall_with_the_ports_create_needs(ovh) -> None:
    server = replace(
        spec_for(ovh).server,
        release_url="https://example.com/tunnel-core.pyz",
        artifact_sha256="a" * 64,
        allow_ips=("203.0.113.0/24",),
    )
    assert OVHProvider.facts.host_firewall
    rules = re.findall(r"^\s+((?:ip6? saddr .*? )?tcp dport \S+) accept$", _ruleset(server), re.M)
    assert rules == ["tcp dport 8123", "ip saddr { 203.0.113.0/24 } tcp dport 8080"]


def _ruleset(server) -> str:
    return cloud_init.render(server, host_firewall=OVHProvider.facts.host_firewall)


def test_a_wrong_secret_is_a_real_signature_refusal_naming_the_variable(
    ovh_env, monkeypatch
) -> None:
    monkeypatch.setenv("OVH_APPLICATION_SECRET", "not-the-secret")
    with pytest.raises(ProviderAPIError) as info:
        OVHProvider(ProviderConfig()).list()
    assert "INVALID_SIGNATURE" in str(info.value) and "\n" not in str(info.value)
    assert "OVH_APPLICATION_SECRET" in info.value.hint
    assert "not-the-secret" not in f"{info.value} {info.value.hint}"


@pytest.mark.parametrize(
    ("variable", "code"),
    [("OVH_CONSUMER_KEY", "INVALID_CREDENTIAL"), ("OVH_APPLICATION_KEY", "INVALID_KEY")],
)
def test_a_refused_key_is_one_line_naming_the_variable(
    ovh_env, monkeypatch, variable, code
) -> None:
    monkeypatch.setenv(variable, "not-the-key")
    with pytest.raises(ProviderAPIError) as info:
        OVHProvider(ProviderConfig()).list()
    assert str(info.value).count("\n") == 0
    assert variable in str(info.value) and code in str(info.value)
    assert info.value.code == "unauthorized"
    assert "not-the-key" not in f"{info.value} {info.value.hint}"


def test_access_token_file_may_be_an_ovh_conf_with_an_endpoint_section(
    ovh_fake, monkeypatch
) -> None:
    monkeypatch.setenv("OVH_CLOUD_PROJECT_SERVICE", ovh_fake.service)
    conf = (
        f"[default]\nendpoint={ovh_fake.base_url}\n\n[{ovh_fake.base_url}]\n"
        f"application_key={ovh_fake.application_key}\n"
        f"application_secret={ovh_fake.application_secret}\n"
        f"consumer_key={ovh_fake.consumer_key}\n"
    )
    host = OVHProvider(ProviderConfig(access_token=conf)).create(spec_for(OVHProvider))
    assert set(ovh_fake.instances) == {host.id}


def test_access_token_is_the_consumer_key_and_the_project_is_the_only_one(
    ovh_env, monkeypatch
) -> None:
    monkeypatch.delenv("OVH_CONSUMER_KEY")
    monkeypatch.delenv("OVH_CLOUD_PROJECT_SERVICE")
    provider = OVHProvider(ProviderConfig(access_token=ovh_env.consumer_key))
    assert provider.list() == []
    assert ovh_env.calls("GET", "/1.0/cloud/project"), "asked for the account's projects"
    with pytest.raises(ProviderAPIError, match="--access-token"):
        OVHProvider(ProviderConfig(access_token="wrong")).list()


def test_a_401_is_one_line_naming_the_consumer_keys_variable(ovh, ovh_fake) -> None:
    ovh_fake.refuse("GET /1.0/cloud/project/.*", 401, "", "You must login first")
    with pytest.raises(ProviderAPIError) as info:
        ovh.list()
    assert str(info.value) == (
        "ovh: the API rejected the consumer key from OVH_CONSUMER_KEY (401 Unauthorized)"
    )
    assert "OVH_CONSUMER_KEY" in info.value.hint


def test_purge_leaves_an_instance_already_deleting_alone(ovh, ovh_fake) -> None:
    spec = spec_for(ovh)
    host = ovh.create(spec)
    ovh_fake.instances[host.id]["status"] = "DELETING"
    assert ovh.purge(spec.host_id) == []
    assert ovh_fake.calls("DELETE", ".*") == []
    assert ovh.list()[0].status.value == "deleting"


def test_missing_keys_name_the_variables(monkeypatch) -> None:
    with pytest.raises(CredentialsMissing) as info:
        OVHProvider(ProviderConfig())
    assert "OVH_APPLICATION_KEY" in info.value.hint and "ovh.conf" in info.value.hint
    monkeypatch.setenv("OVH_APPLICATION_KEY", "k")
    monkeypatch.setenv("OVH_APPLICATION_SECRET", "s")
    with pytest.raises(CredentialsMissing) as info:
        OVHProvider(ProviderConfig())
    assert "OVH_CONSUMER_KEY" in info.value.hint


def test_endpoint_url_wins_over_ovh_endpoint(ovh_env, monkeypatch) -> None:
    monkeypatch.setenv("OVH_ENDPOINT", "ovh-ca")
    assert OVHProvider(ProviderConfig(endpoint_url=ovh_env.base_url)).list() == []
    assert ovh_env.calls("GET", "/1.0/cloud/project/.*/instance")


def test_an_unknown_endpoint_name_is_refused_before_any_call(monkeypatch) -> None:
    monkeypatch.setenv("OVH_ENDPOINT", "ovh-mars")
    monkeypatch.setenv("OVH_APPLICATION_KEY", "k")
    monkeypatch.setenv("OVH_APPLICATION_SECRET", "s")
    monkeypatch.setenv("OVH_CONSUMER_KEY", "c")
    with pytest.raises(InvalidSpec) as info:
        OVHProvider(ProviderConfig())
    assert "ovh-eu" in info.value.hint


@pytest.mark.parametrize(
    ("changes", "suggestion"),
    [
        ({"region": "GRA1"}, "GRA11"),
        ({"plan": "d2-3"}, "d2-2"),
        ({"image": "Debian 13"}, "Debian 12"),
    ],
)
def test_unknown_region_flavor_or_image_suggests_the_closest(
    ovh, ovh_fake, changes, suggestion
) -> None:
    with pytest.raises(InvalidSpec) as info:
        ovh.create(spec_for(ovh, **changes))
    assert suggestion in info.value.hint
    assert ovh_fake.calls("POST", ".*") == []


def test_an_unavailable_flavor_is_a_capacity_error_before_any_create(ovh, ovh_fake) -> None:
    ovh_fake.unavailable_in.add("GRA11")
    with pytest.raises(CapacityError):
        ovh.create(spec_for(ovh))
    assert ovh_fake.calls("POST", ".*") == []


def test_a_quota_answer_is_a_capacity_error_and_leaves_nothing(ovh, ovh_fake) -> None:
    ovh_fake.refusals_in["GRA11"] = (400, "", "Quota exceeded for instances: Requested 1")
    with pytest.raises(CapacityError, match="Quota exceeded"):
        kit.create_host(ovh, spec_for(ovh))
    assert ovh_fake.resources() == set()


def test_a_validation_error_is_not_a_capacity_error(ovh, ovh_fake) -> None:
    ovh_fake.refusals_in["GRA11"] = (400, "", "Invalid instance name")
    with pytest.raises(ProviderAPIError) as info:
        ovh.create(spec_for(ovh))
    assert not isinstance(info.value, CapacityError)
    assert "Invalid instance name (400)" in str(info.value)


def test_known_regions_are_the_projects(ovh) -> None:
    assert ovh.known_regions()[:2] == ["GRA11", "SBG5"]


def test_a_name_that_only_looks_like_ours_is_still_not_ours(ovh, ovh_fake) -> None:
    """The mark must end the name, with a host id after it."""
    ovh_fake.foreign_vm()
    (vm,) = ovh_fake.instances.values()
    vm["name"] = "inletsctl-host-.bak"
    with pytest.raises(NotOurs):
        ovh.delete(host_id=vm["id"])
    assert ovh.list() == []


def test_a_deleted_host_is_not_found_by_id_or_ip(ovh) -> None:
    check_deleted_host_is_gone(ovh)


def test_an_id_that_is_no_path_segment_is_not_found_without_a_call(ovh, ovh_fake) -> None:
    with pytest.raises(HostNotFound):
        ovh.status("../../me")
    assert ovh_fake.requests == []


def test_a_500_is_an_error_with_a_retry_hint(ovh, ovh_fake) -> None:
    ovh_fake.refuse("GET /1.0/cloud/project/.*/instance", 500, "", "Internal server error")
    with pytest.raises(ProviderAPIError) as info:
        ovh.list()
    assert "(500)" in str(info.value) and "retry" in info.value.hint


def test_an_endpoint_that_refuses_connections_is_one_line_naming_it(ovh_env, monkeypatch) -> None:
    monkeypatch.setenv("OVH_ENDPOINT", f"http://127.0.0.1:{free_port()}/1.0")
    with pytest.raises(ProviderAPIError) as info:
        OVHProvider(ProviderConfig()).list()
    assert "Connection refused" in str(info.value) and "\n" not in str(info.value)
    assert "OVH_ENDPOINT" in info.value.hint


class _ErrorPage(http.server.BaseHTTPRequestHandler):
    """A proxy's HTML error page where the API's JSON should be."""

    def do_GET(self) -> None:
        page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


def test_an_answer_that_is_not_json_is_one_line_naming_the_endpoint(ovh_env, monkeypatch) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ErrorPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OVH_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/1.0")
        with pytest.raises(ProviderAPIError) as info:
            OVHProvider(ProviderConfig()).list()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert "no usable answer from http://127.0.0.1:" in str(info.value)
    assert "OVH_ENDPOINT" in info.value.hint and "<html" not in str(info.value)
