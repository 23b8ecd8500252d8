"""What every cloud's CLI tests share: ``inletsctl`` run as a shell script runs it, and
the checks each cloud must pass the same way, so a cloud's test file holds only what
differs (its variables, its resources, its quirks).

The fakes hand out public-looking IPs: a readiness probe must never aim at one, so
every create here stops at ``running`` (:data:`NO_PROBE`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from providers.testing.conformance import run_cli as inletsctl

__all__ = [
    "NO_PROBE",
    "check_dry_run",
    "check_foreign_vm_refused",
    "check_refused_credential",
    "inletsctl",
]

#: create's flags that stop at the cloud's "running" and never probe the fake's IP
NO_PROBE = ("--wait", "running")


def check_dry_run(
    env: dict[str, str], fake: Any, provider: str, *flags: str, secrets: Iterable[str] = ()
) -> dict[str, Any]:
    """``create --dry-run --tcp *flags`` renders the user-data, asks the API nothing, shows
    none of ``secrets`` and records nothing; returns the document for further checks."""
    shown = inletsctl(
        env, "create", "--provider", provider, "--dry-run", "--tcp", *flags, "-o", "json"
    )
    assert shown.returncode == 0, shown.stderr
    doc: dict[str, Any] = json.loads(shown.stdout)
    assert doc["provider"] == provider
    assert doc["user_data"].startswith("#cloud-config\n")
    assert fake.requests == [], "a dry run asks the API nothing"
    for secret in secrets:
        assert secret not in shown.stdout + shown.stderr
    listed = inletsctl(env, "list", "--all", "-o", "json")
    assert json.loads(listed.stdout) == [], "and records nothing"
    return doc


def check_foreign_vm_refused(
    env: dict[str, str], fake: Any, provider: str, vm: str, ip: str
) -> None:
    """``delete --id`` of a VM we did not make is refused with a hint naming --force, and
    ``delete --ip`` does not find it among ours; neither touches anything."""
    before = fake.resources()
    refused = inletsctl(env, "delete", "-p", provider, "--id", vm)
    assert refused.returncode == 1, refused.stderr
    assert "was not made by inletsctl" in refused.stderr
    assert "Hint: " in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    by_ip = inletsctl(env, "delete", "-p", provider, "--ip", ip)
    assert by_ip.returncode == 1 and "Traceback" not in by_ip.stderr, "IPs: among ours only"
    assert fake.resources() == before, "refused means untouched"


def check_refused_credential(
    env: dict[str, str], fake: Any, provider: str, variable: str, wrong: str, says: str
) -> list[str]:
    """A create with ``variable`` set to ``wrong`` fails in one ``Error:`` line naming
    the variable and ``says`` (the API's status or code) and a hint naming the variable,
    with no traceback, without echoing the value and without making anything. Returns
    stderr's lines for the cloud's own checks."""
    failed = inletsctl(
        {**env, variable: wrong}, "create", "-p", provider, "--tcp", "--ports", "8080", *NO_PROBE
    )
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    error = next(line for line in lines if line.startswith("Error: "))
    assert variable in error and says in error
    assert any(line.startswith("Hint: ") and variable in line for line in lines)
    assert "Traceback" not in failed.stderr and wrong not in failed.stderr
    assert fake.resources() == set()
    return lines
