"""What the operator reads from a Service and every object it writes, as plain dicts.

Nothing here talks to an API: the handlers decide when, these functions say what.
The same builders serve ``inletsctl operator manifests`` (CRD, RBAC, the operator's
Deployment) and the objects made per Service (Tunnel, the client's Secret and
Deployment), so a test can check the YAML a user applies and the objects the
operator writes against the same definitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloud_init import fetch_script
from inletsctl.errors import UsageError
from inletsctl.store import HostRecord
from inletsctl.summary import client_argv

JSON = dict[str, Any]

GROUP = "inletsctl.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
TUNNELS = "tunnels"
#: Annotations on a Service; each falls back to the operator's flag of the same name.
MANAGE = f"{GROUP}/manage"
PROVIDER = f"{GROUP}/provider"
REGION = f"{GROUP}/region"
PLAN = f"{GROUP}/plan"
HTTP_HOST = f"{GROUP}/http-host"
FINALIZER = f"{GROUP}/finalizer"
#: Label on every object made for a Service (its name), so `kubectl get -l` finds them.
TUNNEL_LABEL = f"{GROUP}/tunnel"
#: The client image: any image with python3 3.10+ runs tunnel-core.pyz (stdlib only).
CLIENT_IMAGE = "python:3.12-slim"
#: Where the client container keeps the downloaded engine (an emptyDir: the root is read-only).
PYZ_PATH = "/engine/tunnel-core.pyz"
TOKEN_KEY = "token"
TOKEN_ENV = "INLETS_TOKEN"
OPERATOR_NAME = "inletsctl-operator"


@dataclass(frozen=True)
class Desired:
    """The exit server a Service asks for; a change in any field means another server."""

    provider: str
    region: str
    plan: str
    #: "tcp", or "http" when the Service names a host (``inletsctl.dev/http-host``)
    mode: str
    #: the Service's TCP ports; HTTP mode forwards the first
    ports: tuple[int, ...]
    #: the Service's cluster address, which the client forwards to
    upstream: str
    http_host: str = ""

    def as_spec(self) -> JSON:
        """The Tunnel's ``spec``: what its exit server was made for."""
        spec: JSON = {
            "provider": self.provider,
            "region": self.region,
            "plan": self.plan,
            "mode": self.mode,
            "ports": list(self.ports),
            "upstream": self.upstream,
            "httpHost": self.http_host,
        }
        return spec

    @property
    def client_upstream(self) -> str:
        """TCP: the host the client dials on each port; HTTP: ``HOST=URL`` of the first port."""
        if self.mode == "http":
            return f"{self.http_host}=http://{self.upstream}:{self.ports[0]}"
        return self.upstream


def desired(service: Mapping[str, Any], provider: str, region: str, plan: str) -> Desired:
    """Read a Service's annotations and ports; the operator's defaults fill what is unset."""
    meta = service.get("metadata") or {}
    notes: Mapping[str, str] = meta.get("annotations") or {}
    spec = service.get("spec") or {}
    ports = tuple(
        int(p["port"]) for p in spec.get("ports") or () if p.get("protocol", "TCP") == "TCP"
    )
    name = f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"
    if not ports:
        raise UsageError(f"Service {name} has no TCP port to expose")
    chosen = notes.get(PROVIDER) or provider
    if not chosen:
        raise UsageError(
            f"Service {name} names no provider",
            hint=f"Annotate it {PROVIDER}=NAME, or start the operator with --provider.",
        )
    cluster_ip = spec.get("clusterIP") or ""
    upstream = (
        cluster_ip
        if cluster_ip and cluster_ip != "None"
        else f"{meta.get('name')}.{meta.get('namespace', 'default')}.svc"
    )
    host = notes.get(HTTP_HOST, "")
    return Desired(
        provider=chosen,
        region=notes.get(REGION) or region,
        plan=notes.get(PLAN) or plan,
        mode="http" if host else "tcp",
        ports=ports,
        upstream=upstream,
        http_host=host,
    )


def owner(service: Mapping[str, Any]) -> JSON:
    """An owner reference to the Service: the cluster's garbage collector follows it."""
    meta = service["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(service: Mapping[str, Any], name: str) -> JSON:
    svc = service["metadata"]
    return {
        "name": name,
        "namespace": svc.get("namespace", "default"),
        "labels": {TUNNEL_LABEL: svc["name"], "app.kubernetes.io/managed-by": OPERATOR_NAME},
        "ownerReferences": [owner(service)],
    }


def namespaced(namespace: str, plural: str, name: str = "", api: str = "v1") -> str:
    """The API path of a namespaced collection, or of one object in it."""
    root = "/api/v1" if api == "v1" else f"/apis/{api}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def tunnel_path(namespace: str, name: str = "") -> str:
    return namespaced(namespace, TUNNELS, name, API_VERSION)


def tunnel(service: Mapping[str, Any], want: Desired) -> JSON:
    """The Tunnel of a Service (same name): it outlives the operator, so a restart finds it."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Tunnel",
        "metadata": _meta(service, service["metadata"]["name"]),
        "spec": want.as_spec(),
    }


def client_name(service: Mapping[str, Any]) -> str:
    return f"{service['metadata']['name']}-tunnel-client"


def client_secret(service: Mapping[str, Any], token: str) -> JSON:
    """The tunnel token, only ever in a Secret (never in the Deployment or the Tunnel)."""
    return token_secret(_meta(service, client_name(service)), token)


def token_secret(metadata: JSON, token: str) -> JSON:
    """A Secret holding ``token`` under :data:`TOKEN_KEY`, named by ``metadata``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def client_command(argv: Sequence[str], pyz_url: str, pyz_sha256: str) -> list[str]:
    """A container's command: fetch tunnel-core.pyz to :data:`PYZ_PATH`, check its pinned
    SHA-256 (the script in ``$FETCH_PY``), then run the client ``argv`` (its first word,
    the program name, is replaced by the pyz)."""
    run = (
        'python3 -I -c "$FETCH_PY" "$0" "$1" ' + PYZ_PATH + " && shift && "
        "exec python3 -I -S " + PYZ_PATH + ' "$@"'
    )
    return ["sh", "-c", run, pyz_url, pyz_sha256, *argv[1:]]


def client_deployment(
    service: Mapping[str, Any],
    want: Desired,
    record: HostRecord,
    pyz_url: str,
    pyz_sha256: str,
    image: str = CLIENT_IMAGE,
) -> JSON:
    """The tunnel client: a stock Python image fetches tunnel-core.pyz, checks its pinned
    SHA-256 as the exit server does, and runs the client command ``create`` prints.

    The host id is a pod annotation, so a new exit server rolls the client over to it.
    """
    argv = client_argv(record, upstream=want.client_upstream, ports=",".join(map(str, want.ports)))
    labels = {TUNNEL_LABEL: service["metadata"]["name"]}
    meta = _meta(service, client_name(service))
    return deployment(meta, labels, record.id, argv, pyz_url, pyz_sha256, image)


def deployment(
    metadata: JSON,
    labels: Mapping[str, str],
    host_id: str,
    argv: Sequence[str],
    pyz_url: str,
    pyz_sha256: str,
    image: str = CLIENT_IMAGE,
) -> JSON:
    """A client Deployment running ``argv`` with the token of the Secret of the same name.

    ``inletsctl connect --generate kubernetes`` builds it for any host, the operator
    for a Service's; both hand it a :func:`token_secret` named by the same ``metadata``.
    """
    container = {
        "name": "tunnel-client",
        "image": image,
        "command": client_command(argv, pyz_url, pyz_sha256),
        "env": [
            {"name": "FETCH_PY", "value": fetch_script()},
            {
                "name": TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": metadata["name"], "key": TOKEN_KEY}},
            },
        ],
        "volumeMounts": [{"name": "engine", "mountPath": PYZ_PATH.rsplit("/", 1)[0]}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {f"{GROUP}/host-id": host_id}},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "engine", "emptyDir": {}}],
                },
            },
        },
    }


def ingress(ip: str) -> JSON:
    """``status.loadBalancer`` of a Service whose exit server has ``ip``."""
    return {"ingress": [{"ip": ip}]}


# -- inletsctl operator manifests ---------------------------------------------------


def crd() -> JSON:
    """The Tunnel CRD: one per Service, recording its exit server's host id and phase."""
    str_field: JSON = {"type": "string"}
    spec_schema: JSON = {
        "type": "object",
        "properties": {
            "provider": str_field,
            "region": str_field,
            "plan": str_field,
            "mode": {"type": "string", "enum": ["tcp", "http"]},
            "ports": {"type": "array", "items": {"type": "integer"}},
            "upstream": str_field,
            "httpHost": str_field,
        },
    }
    status_schema: JSON = {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": ["Creating", "Ready", "Deleting"]},
            "hostId": str_field,
            "provider": str_field,
            "region": str_field,
            "providerId": str_field,
            "ip": str_field,
            "controlPort": {"type": "integer"},
            "fingerprint": str_field,
        },
    }
    columns = [
        {"name": name, "type": "string", "jsonPath": path}
        for name, path in (
            ("Provider", ".status.provider"),
            ("Host", ".status.hostId"),
            ("IP", ".status.ip"),
            ("Phase", ".status.phase"),
        )
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{TUNNELS}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": TUNNELS,
                "singular": "tunnel",
                "kind": "Tunnel",
                "shortNames": ["tun"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema, "status": status_schema},
                        }
                    },
                }
            ],
        },
    }


def _rule(groups: Sequence[str], plural: Sequence[str], verbs: Sequence[str]) -> JSON:
    return {"apiGroups": list(groups), "resources": list(plural), "verbs": list(verbs)}


def rbac(namespace: str) -> list[JSON]:
    """What the operator may do: watch and patch Services, own Tunnels and the clients."""
    every = ["get", "list", "watch", "create", "update", "patch", "delete"]
    rules = [
        _rule([""], ["services"], ["get", "list", "watch", "patch", "update"]),
        _rule([""], ["services/status"], ["get", "patch", "update"]),
        _rule([""], ["secrets"], every),
        _rule([""], ["events"], ["create", "patch"]),
        _rule([""], ["namespaces"], ["list", "watch"]),
        _rule(["apps"], ["deployments"], every),
        _rule([GROUP], [TUNNELS, f"{TUNNELS}/status"], every),
        # kopf's discovery and its cluster-wide scan for the resources it serves
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
    ]
    account = {"kind": "ServiceAccount", "name": OPERATOR_NAME, "namespace": namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_NAME, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": OPERATOR_NAME},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_NAME},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": OPERATOR_NAME,
            },
            "subjects": [account],
        },
    ]


def operator_deployment(
    namespace: str, image: str, package: str, args: Sequence[str], secret: str
) -> JSON:
    """The operator itself: ``package`` (a pip requirement) installed into ``image`` at start.

    The cloud credentials come from the Secret ``secret`` as environment variables
    (``DIGITALOCEAN_ACCESS_TOKEN``, ``HCLOUD_TOKEN``...), optional so that a cluster
    using one cloud needs only that cloud's key.
    """
    labels = {"app.kubernetes.io/name": OPERATOR_NAME}
    run = 'pip install --no-cache-dir --target /opt/inletsctl "$0" && exec "$@"'
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": OPERATOR_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # never two operators on the same Service
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": OPERATOR_NAME,
                    "containers": [
                        {
                            "name": "operator",
                            "image": image,
                            "command": ["sh", "-c", run, package],
                            "args": [
                                "python3",
                                "-m",
                                "inletsctl",
                                "operator",
                                "run",
                                *args,
                            ],
                            "env": [
                                {"name": "PYTHONPATH", "value": "/opt/inletsctl"},
                                {"name": "INLETSCTL_STATE_DIR", "value": "/state"},
                                {"name": "HOME", "value": "/state"},
                            ],
                            "envFrom": [{"secretRef": {"name": secret, "optional": True}}],
                            "volumeMounts": [
                                {"name": "state", "mountPath": "/state"},
                                {"name": "packages", "mountPath": "/opt/inletsctl"},
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 30,
                            },
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 65534,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                    "volumes": [
                        {"name": "state", "emptyDir": {}},
                        {"name": "packages", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def manifests(
    namespace: str, image: str, package: str, args: Sequence[str], secret: str
) -> list[JSON]:
    """Everything ``kubectl apply -f`` needs, in the order it needs them."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    deployment = operator_deployment(namespace, image, package, args, secret)
    return [ns, crd(), *rbac(namespace), deployment]
