"""The fetch script's ``s3://`` branch: its SigV4 signature against botocore's, and a
whole fetch from moto's S3 with signatures and IAM policies enforced.

moto checks signatures and policies only when ``INITIAL_NO_AUTH_ACTION_COUNT`` is set,
which it reads once per process: so this module starts a moto server of its own, as a
child process, and lets the first requests (the set-up) through unauthenticated. The
task role's credentials come from a stub of ECS's container credentials endpoint on
loopback (``AWS_CONTAINER_CREDENTIALS_FULL_URI``, as the SDKs read it), the bucket
from ``AWS_ENDPOINT_URL_S3`` (path style); on ECS the script signs for
``https://BUCKET.s3.REGION.amazonaws.com`` instead.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import cloud_init
from providers import fargate_s3
from tests.conftest import free_port, wait_for

REGION = "eu-west-1"
#: a plain key: moto matches a policy's resource against the key as sent, encoded (a key
#: with a space is refused as AccessDenied, its signature accepted); the encoding of such
#: keys is compared with botocore's in the signature test instead
BUCKET, KEY = "engines", "v1/tunnel-core.pyz"
#: the set-up before moto starts checking: role, its policy, bucket, two objects, AssumeRole
SETUP_ACTIONS = 6


def fetch_module() -> dict[str, Any]:
    """The rendered script's functions, without running it (``__name__`` is not main)."""
    namespace: dict[str, Any] = {"__name__": "fetch"}
    exec(compile(cloud_init.fetch_script(), "fetch.py", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("https://engines.s3.eu-west-1.amazonaws.com/v1/tunnel-core.pyz", "FQoGZXIvYXdzEXAMPLE"),
        ("https://engines.s3.eu-west-1.amazonaws.com/v%201/t%C3%BCnnel%2Bcore.pyz", ""),
        ("https://s3.eu-west-1.amazonaws.com/my.engines/tunnel-core.pyz", "token/with+slash="),
        ("http://127.0.0.1:5000/engines/v1/tunnel-core.pyz", "FQoGZXIvYXdzEXAMPLE"),
    ],
)
def test_the_signature_is_botocores(monkeypatch: pytest.MonkeyPatch, url: str, token: str) -> None:
    when = datetime.datetime(2026, 12, 1, 20, 5, 9)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    key_id, secret = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    theirs = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials(key_id, secret, token or None), "s3", REGION).add_auth(theirs)
    ours = fetch_module()["sign"]("GET", url, REGION, key_id, secret, token, "20261201T200509Z")
    assert ours["authorization"] == theirs.headers["Authorization"]
    assert ours["x-amz-date"] == theirs.headers["X-Amz-Date"]
    assert ours["x-amz-content-sha256"] == theirs.headers["X-Amz-Content-SHA256"]
    if token:
        assert ours["x-amz-security-token"] == theirs.headers["X-Amz-Security-Token"]


@pytest.fixture(scope="module")
def checking_moto() -> Iterator[str]:
    """A moto server that checks every request's signature and IAM policy after the set-up."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/moto-api/"), 30.0, "moto to listen")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def task_role(checking_moto: str) -> dict[str, str]:
    """The bucket with the engine and another object, and the credentials of a role with
    the task role's policy, as ECS's credentials endpoint hands them out."""
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    kw: dict[str, Any] = {"region_name": REGION, "endpoint_url": checking_moto, **keys}
    iam = boto3.client("iam", **kw)
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    arn = iam.create_role(RoleName="task", AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    policy = fargate_s3.read_policy(fargate_s3.S3Object(BUCKET, KEY))
    iam.put_role_policy(RoleName="task", PolicyName="read", PolicyDocument=json.dumps(policy))
    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=ENGINE)
    s3.put_object(Bucket=BUCKET, Key="other.pyz", Body=ENGINE)
    creds = boto3.client("sts", **kw).assume_role(RoleArn=arn, RoleSessionName="ecs-task")
    c = creds["Credentials"]
    return {
        "AccessKeyId": c["AccessKeyId"],
        "SecretAccessKey": c["SecretAccessKey"],
        "Token": c["SessionToken"],
        "Expiration": c["Expiration"].isoformat(),
    }


ENGINE = b"PK\x03\x04 not really a zipapp, but pinned all the same"
#: what the credentials endpoint hands out, this test
handed: dict[str, str] = {}


@pytest.fixture
def credentials_endpoint(task_role: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """ECS's container credentials endpoint on loopback; the paths it was asked for
    (a test may change what it hands out: ``handed``)."""
    asked: list[str] = []
    handed.clear()
    handed.update(task_role)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(handed).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/credentials/task-id", asked
    finally:
        server.shutdown()
        server.server_close()


def _fetch(
    tmp_path: Path, url: str, sha: str, moto_url: str, credentials: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": credentials,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": moto_url,
    }
    argv = [
        sys.executable,
        "-I",
        "-c",
        cloud_init.fetch_script(),
        url,
        sha,
        str(tmp_path / "e.pyz"),
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_the_script_fetches_the_object_with_the_task_roles_signed_request(
    tmp_path: Path, checking_moto: str, credentials_endpoint: tuple[str, list[str]]
) -> None:
    url, asked = credentials_endpoint
    sha = hashlib.sha256(ENGINE).hexdigest()
    done = _fetch(tmp_path, f"s3://{BUCKET}/{KEY}", sha, checking_moto, url)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "e.pyz").read_bytes() == ENGINE
    assert asked == ["/v2/credentials/task-id"]


def test_the_task_role_reads_no_other_object(
    tmp_path: Path, checking_moto: str, credentials_endpoint: tuple[str, list[str]]
) -> None:
    url, _ = credentials_endpoint
    sha = hashlib.sha256(ENGINE).hexdigest()
    done = _fetch(tmp_path, f"s3://{BUCKET}/other.pyz", sha, checking_moto, url)
    assert done.returncode != 0
    assert "403" in done.stderr, done.stderr
    assert not (tmp_path / "e.pyz").exists()


def test_an_s3_object_with_another_hash_is_refused(
    tmp_path: Path, checking_moto: str, credentials_endpoint: tuple[str, list[str]]
) -> None:
    url, _ = credentials_endpoint
    done = _fetch(tmp_path, f"s3://{BUCKET}/{KEY}", "f" * 64, checking_moto, url)
    assert done.returncode != 0
    assert "is not the pinned" in done.stderr
    assert not (tmp_path / "e.pyz").exists()


def test_a_request_signed_with_another_secret_is_refused_by_s3(
    tmp_path: Path, checking_moto: str, credentials_endpoint: tuple[str, list[str]]
) -> None:
    """moto checks the signature itself: the same request with a wrong key fails."""
    url, _ = credentials_endpoint
    handed["SecretAccessKey"] = "not" + handed["SecretAccessKey"]
    done = _fetch(
        tmp_path, f"s3://{BUCKET}/{KEY}", hashlib.sha256(ENGINE).hexdigest(), checking_moto, url
    )
    assert done.returncode != 0
    assert "403" in done.stderr, done.stderr


def test_on_ecs_the_credentials_come_from_the_task_metadata_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`` is a path at 169.254.170.2, as ECS sets
    it (asked through a stand-in for urlopen: that address is not this machine's)."""
    fetch = fetch_module()
    asked: list[str] = []

    class Answer:
        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def read(self, *_: int) -> bytes:
            return json.dumps({"AccessKeyId": "A", "SecretAccessKey": "S", "Token": "T"}).encode()

    def urlopen(request: urllib.request.Request, timeout: float) -> Answer:
        asked.append(request.full_url)
        return Answer()

    monkeypatch.setitem(fetch["urllib"].request.__dict__, "urlopen", urlopen)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc")
    assert fetch["container_credentials"]() == ("A", "S", "T")
    assert asked == ["http://169.254.170.2/v2/credentials/abc"]
