"""`inletsctl operator manifests` and the objects the operator writes, against the
Kubernetes OpenAPI schemas that kubernetes-validate ships (strict: no unknown fields)."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from inletsctl.operator import resources as r
from inletsctl.operator.cli import LIVENESS, SERVICE_ACCOUNT_TOKEN
from inletsctl.store import HostRecord
from tests.inletsctl.conftest import run_cli

#: The oldest Kubernetes the manifests are checked against (k3s LTS lines run 1.28+),
#: and the newest the validator knows.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def validate(doc: dict) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_manifests_are_kubectl_applyable_yaml_of_valid_objects() -> None:
    result = run_cli(
        "operator", "manifests", "--provider", "hetzner", "--region", "fsn1", "--annotated-only"
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ]
    for doc in docs:
        validate(doc)
    crd = docs[1]
    assert crd["metadata"]["name"] == "tunnels.inletsctl.dev"
    [version] = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    args = docs[-1]["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = ["--provider", "hetzner", "--region", "fsn1", "--annotated-only"]
    assert args == ["python3", "-m", "inletsctl", "operator", "run", "--liveness", LIVENESS, *flags]
    binding = docs[4]
    assert binding["subjects"][0]["name"] == docs[2]["metadata"]["name"]


def test_the_role_allows_every_call_the_operator_makes() -> None:
    [_, role, _] = r.rbac("inletsctl")
    granted = {
        (group, res, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = [
        ("", "services", "watch"),
        ("", "services", "patch"),  # kopf's finalizer and annotations
        ("", "services/status", "patch"),  # status.loadBalancer
        ("", "secrets", "create"),
        ("", "secrets", "patch"),
        ("", "secrets", "delete"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments", "delete"),
        (r.GROUP, "tunnels", "create"),
        (r.GROUP, "tunnels", "get"),
        (r.GROUP, "tunnels/status", "patch"),
        (r.GROUP, "tunnels", "delete"),
    ]
    assert [n for n in needed if n not in granted] == []


@pytest.fixture
def service() -> dict:
    return {
        "metadata": {"name": "web", "namespace": "apps", "uid": "1b4e28ba", "annotations": {}},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.7", "ports": [{"port": 443}]},
    }


def test_the_client_objects_are_valid_and_keep_the_token_out_of_the_pod_spec(service) -> None:
    want = r.desired(service, "digitalocean", "", "")
    record = HostRecord(
        id="abc123",
        provider="digitalocean",
        name="inlets-web",
        status="active",
        mode="tcp",
        engine="tunnel-core",
        control_port=8123,
        data_port=8000,
        fingerprint="sha256:" + "ab" * 32,
        token="s3cret-token",
        ip="203.0.113.9",
    )
    deployment = r.client_deployment(service, want, record, "https://x/t.pyz", "cd" * 32)
    secret = r.client_secret(service, record.token)
    validate(deployment)
    validate(secret)
    assert "s3cret-token" not in yaml.safe_dump(deployment)
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[3:5] == ["https://x/t.pyz", "cd" * 32]
    assert command[5:] == [
        "tcp",
        "client",
        "--url",
        "wss://203.0.113.9:8123",
        "--token-env",
        "INLETS_TOKEN",
        "--tls-fingerprint",
        record.fingerprint,
        "--upstream",
        "10.43.0.7",
        "--ports",
        "443",
    ]


def test_an_http_host_annotation_selects_http_mode(service) -> None:
    service["metadata"]["annotations"] = {r.HTTP_HOST: "app.example.com", r.PLAN: "cx22"}
    want = r.desired(service, "hetzner", "fsn1", "cx11")
    assert (want.mode, want.plan, want.region) == ("http", "cx22", "fsn1")
    assert want.client_upstream == "app.example.com=http://10.43.0.7:443"


@pytest.mark.skipif(SERVICE_ACCOUNT_TOKEN.exists(), reason="runs in a pod")
def test_run_without_cluster_credentials_says_what_is_missing(tmp_path) -> None:
    env = {"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    result = run_cli("operator", "run", "--provider", "local", env=env)
    assert result.returncode == 2, result.stderr
    assert "no Kubernetes credentials" in result.stderr
    assert "KUBECONFIG" in result.stderr
    assert "Traceback" not in result.stderr


def test_inletsctl_help_does_not_import_kopf() -> None:
    code = (
        "import sys; from inletsctl.cli import main; main(['operator', '--help']); "
        "sys.exit(1 if 'kopf' in sys.modules or 'yaml' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
