"""The one place where botocore exceptions become ``providers.errors``.

Everything the EC2 provider sends to AWS runs inside :func:`aws_errors`, so a
botocore type never reaches the CLI and every AWS failure is one line with a
hint. botocore is imported inside the function body: importing this module must
stay free (``inletsctl --help`` never loads boto3).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from providers.cloudapi import network_cause
from providers.errors import CapacityError, CredentialsMissing, HostNotFound, ProviderAPIError

PROVIDER = "ec2"

_CREDENTIALS_HINT = (
    "Set AWS_PROFILE (or pass --profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "or pass --access-token-file and --secret-key-file."
)

#: AWS error code -> hint. Codes are matched exactly, then by prefix before the dot.
_HINTS: dict[str, str] = {
    "AuthFailure": _CREDENTIALS_HINT,
    "InvalidClientTokenId": _CREDENTIALS_HINT,
    "SignatureDoesNotMatch": "The secret key does not match the access key id; "
    + _CREDENTIALS_HINT,
    "ExpiredToken": "The session token has expired; refresh it (e.g. `aws sso login`).",
    "RequestExpired": "Check this machine's clock; AWS rejects requests signed too long ago.",
    "UnauthorizedOperation": (
        "Grant the IAM identity ec2:RunInstances, ec2:TerminateInstances, ec2:Describe*, "
        "ec2:CreateSecurityGroup, ec2:AuthorizeSecurityGroupIngress, "
        "ec2:DeleteSecurityGroup and ec2:CreateTags."
    ),
    "OptInRequired": "Enable this region for your account in the AWS console, or pick another.",
    "Unsupported": "Pick another --plan or --zone; this instance type is not offered there.",
    "InvalidInstanceType": "Pick an instance type offered in this region, e.g. --plan t3.nano.",
    "InvalidAMIID": "Pass --image ubuntu-22.04, ubuntu-24.04 or an AMI id from this region.",
    "InstanceLimitExceeded": "Raise the instance quota (Service Quotas) or delete unused hosts.",
    "VcpuLimitExceeded": "Raise the vCPU quota (Service Quotas) or pick a smaller --plan.",
    "InsufficientInstanceCapacity": (
        "AWS has no capacity for this type now; try another --zone, or list regions to "
        "try in turn (--region eu-west-1,eu-west-2)."
    ),
    "Throttling": (
        "AWS kept throttling after retries; wait a minute, or set AWS_RETRY_MODE=adaptive "
        "and a higher AWS_MAX_ATTEMPTS."
    ),
    "RequestLimitExceeded": (
        "AWS kept throttling after retries; wait a minute, or set AWS_RETRY_MODE=adaptive "
        "and a higher AWS_MAX_ATTEMPTS."
    ),
    "DependencyViolation": (
        "The security group is still in use; run the same `inletsctl delete` again shortly."
    ),
    # ELBv2 (--load-balancer): its own spelling of IAM refusals and quotas
    "AccessDenied": (
        "Grant the IAM identity elasticloadbalancing:CreateLoadBalancer, CreateTargetGroup, "
        "RegisterTargets, CreateListener, AddTags, Describe*, DeleteListener, "
        "DeleteLoadBalancer and DeleteTargetGroup (--load-balancer needs them)."
    ),
    "TooManyLoadBalancers": (
        "The account's load balancer quota is used up: raise it (Service Quotas), delete "
        "unused load balancers, or list regions to try in turn (--region eu-west-1,eu-west-2)."
    ),
    "TooManyTargetGroups": (
        "The account's target group quota is used up: raise it (Service Quotas) or delete "
        "unused target groups."
    ),
    "ResourceInUse": (
        "The target group is still used by a listener; run the same `inletsctl delete` again."
    ),
    # ECS, Secrets Manager and Logs (--provider ecs-fargate) spell IAM refusals so
    "AccessDeniedException": (
        "Grant the IAM identity ecs:*Cluster, ecs:*Service, ecs:*TaskDefinition, "
        "ecs:Describe*/List*, ecs:StopTask, ecs:TagResource, secretsmanager:CreateSecret/"
        "DeleteSecret/ListSecrets/TagResource, logs:CreateLogGroup/DeleteLogGroup/Describe*/"
        "ListTags*/TagResource/FilterLogEvents, and iam:CreateRole/PutRolePolicy/PassRole/"
        "GetRole/ListRolePolicies/DeleteRolePolicy/DeleteRole/TagRole (ecs-fargate needs them)."
    ),
    "ClusterNotFoundException": "Pass the name of an existing cluster to --cluster, or drop it.",
}
_DEFAULT_HINT = "See the AWS error code above; `-v` shows the full response."
#: codes that say "not here, not now" (capacity) or "not on this account" (quota): another
#: region may work. ``Unsupported`` is one only when it is about the zone, not the request.
_CAPACITY = {
    "InsufficientInstanceCapacity",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "TooManyLoadBalancers",
    "TooManyTargetGroups",
}


def hint_for(code: str) -> str:
    """The hint for an AWS error code (``InvalidAMIID.NotFound`` falls back to ``InvalidAMIID``)."""
    return _HINTS.get(code) or _HINTS.get(code.split(".", 1)[0], _DEFAULT_HINT)


def is_capacity(code: str, message: str) -> bool:
    """Whether another region might take what this one refused (``create --region a,b``)."""
    if code == "Unsupported":
        return "Availability Zone" in message
    return code in _CAPACITY


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


@contextmanager
def aws_errors(
    action: str, provider: str = PROVIDER, hints: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Translate botocore failures raised while doing ``action`` (e.g. "launch the instance").

    Other AWS services than EC2 (ECS Anywhere's) name themselves as ``provider`` and
    give their own ``hints``, which win over EC2's for the same code.
    """
    from botocore import exceptions as bx
    from botocore.parsers import ResponseParserError

    try:
        yield
    except bx.ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code.startswith("InvalidInstanceID"):
            raise HostNotFound(f"{PROVIDER}: no such instance ({message})") from exc
        error = CapacityError if is_capacity(code, message) else ProviderAPIError
        hint = (hints or {}).get(code) or hint_for(code)
        raise error(provider, f"could not {action}: {code}: {message}", hint, code=code) from exc
    except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ProfileNotFound) as exc:
        raise CredentialsMissing(f"{provider}: {exc}", hint=_CREDENTIALS_HINT) from exc
    except bx.EndpointConnectionError as exc:
        cause = network_cause(exc)
        raise ProviderAPIError(
            provider,
            f"could not {action}: cannot reach {exc.kwargs.get('endpoint_url', 'the endpoint')}"
            + (f": {cause}" if cause else ""),
            "Check the network, --region, and --endpoint-url / AWS_ENDPOINT_URL if you set one.",
        ) from exc
    except ResponseParserError as exc:  # not botocore's own tree: it escaped before
        raise ProviderAPIError(
            provider,
            f"could not {action}: the endpoint's answer is not AWS's XML "
            "(an error page from a proxy, or not an EC2 API)",
            "Check --endpoint-url / AWS_ENDPOINT_URL and any proxy (https_proxy); "
            "`-v` shows the full answer.",
        ) from exc
    except bx.BotoCoreError as exc:
        raise ProviderAPIError(provider, f"could not {action}: {exc}", _DEFAULT_HINT) from exc
