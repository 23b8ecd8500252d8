"""``--release-url s3://BUCKET/KEY`` for Fargate tasks: the object is ``tunnel-core.pyz``.

A private VPC may reach S3 (through its gateway endpoint) and nothing else, so the
engine can come from the user's own bucket. The task then gets a role of its own that
may read that one object and nothing else; the container's fetch script signs its GET
with that role's credentials. ``create`` reads the object once before anything is
made and refuses another file than the one this inletsctl pins: a task would refuse
it too, but only after everything was paid for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from providers.ec2_errors import aws_errors
from providers.errors import InvalidSpec, ProviderAPIError

SCHEME = "s3://"
#: the task role's one inline policy
POLICY = "inletsctl-read-engine"
_MISSING = ("NoSuchKey", "NoSuchBucket", "404", "403", "AccessDenied")


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/{self.key}"


def parse(url: str) -> S3Object | None:
    """The object of an ``s3://`` URL; None for any other URL; a bucket alone is refused."""
    if not url.startswith(SCHEME):
        return None
    bucket, _, key = url[len(SCHEME) :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise InvalidSpec(
            f"ecs-fargate: --release-url {url}: not the URL of one object",
            hint="Pass s3://BUCKET/KEY of the uploaded tunnel-core.pyz itself.",
        )
    return S3Object(bucket, key)


def read_policy(obj: S3Object) -> dict[str, Any]:
    """The task role's policy: read that object; nothing else, not even a listing."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": obj.arn}],
    }


def check_object(s3: Any, obj: S3Object, sha256: str) -> None:
    """Read the object once (with the user's credentials) and compare its SHA-256."""
    upload = (
        f"Upload this inletsctl's tunnel-core.pyz (sha256 {sha256}; `make dist` builds it, "
        f"`inletsctl download` fetches a release's) with `aws s3 cp tunnel-core.pyz {obj.url}`."
    )
    digest = hashlib.sha256()
    try:
        with aws_errors(f"read {obj.url}", provider="ecs-fargate"):
            body = s3.get_object(Bucket=obj.bucket, Key=obj.key)["Body"]
            for chunk in iter(lambda: body.read(1 << 16), b""):
                digest.update(chunk)
    except ProviderAPIError as exc:
        if exc.code in _MISSING:
            raise InvalidSpec(
                f"ecs-fargate: cannot read {obj.url}: {exc.code}", hint=upload
            ) from exc
        raise
    if digest.hexdigest() != sha256:
        raise InvalidSpec(
            f"ecs-fargate: {obj.url} is not this inletsctl's tunnel-core.pyz (its sha256 is "
            f"{digest.hexdigest()}); the task would refuse it",
            hint=upload,
        )
