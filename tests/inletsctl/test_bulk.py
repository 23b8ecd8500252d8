"""`delete --all`, `delete --name` and `prune`, as a user and a script run them.

Every case runs the real `inletsctl` as a child process against the `local` provider
and the stateful DigitalOcean and Hetzner fakes, and ends in a question to the fake
(or to `local`'s own directories), never only to our state.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from inletsctl.store import Store
from providers.local import LocalProvider
from providers.models import HostStatus, ProviderConfig
from providers.testing.jsonapi import JsonApiFake
from tests.fakes.digitalocean import FakeDigitalOcean
from tests.fakes.hetzner import FakeHetzner
from tests.inletsctl.conftest import CLI_TIMEOUT_S

CLOUDS = {
    "digitalocean": (FakeDigitalOcean, "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_END_POINT"),
    "hetzner": (FakeHetzner, "HCLOUD_TOKEN", "HCLOUD_ENDPOINT"),
}


@pytest.fixture(params=sorted(CLOUDS))
def cloud(request: pytest.FixtureRequest) -> Iterator[tuple[str, JsonApiFake, dict[str, str]]]:
    """(provider name, its started fake, the environment that points the CLI at it)."""
    fake_class, token_env, endpoint_env = CLOUDS[request.param]
    fake: JsonApiFake = fake_class().start()
    if isinstance(fake, FakeHetzner):
        fake.running_reads = 0  # the CLI's SDK client waits 1 s between action polls
    try:
        yield request.param, fake, {token_env: fake.token, endpoint_env: fake.base_url}
    finally:
        fake.stop()


@pytest.fixture
def do_cloud() -> Iterator[tuple[FakeDigitalOcean, dict[str, str]]]:
    fake = FakeDigitalOcean().start()
    try:
        yield (
            fake,
            {"DIGITALOCEAN_ACCESS_TOKEN": fake.token, "DIGITALOCEAN_END_POINT": fake.base_url},
        )
    finally:
        fake.stop()


def inletsctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """As a script runs it: stdin is not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=_env(env),
    )


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "INLETS_ACCESS_TOKEN"}
    return {**base, "NO_COLOR": "1", **(extra or {})}


def make(*args: str, env: dict[str, str] | None = None) -> str:
    """Create a host; its id. Cloud fakes hand out public-looking IPs: never probed."""
    cloud = "-p" in args
    wait = ("--wait", "running", "--poll", "0s") if cloud else ()
    made = inletsctl("create", "--tcp", "--ports", "8080", *wait, *args, "-o", "json", env=env)
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["id"])


def local(state_dir: Path) -> LocalProvider:
    return LocalProvider(ProviderConfig(state_dir=str(state_dir)))


def statuses(state_dir: Path) -> dict[str, str]:
    return {r.id: r.status for r in Store(state_dir).all(include_deleted=True)}


def test_delete_all_in_a_script_refuses_without_yes(state_dir: Path) -> None:
    ids = [make(), make()]
    refused = inletsctl("delete", "--all")
    assert refused.returncode == 2, refused.stderr
    assert "not a terminal" in refused.stderr and "Pass --yes" in refused.stderr
    assert all(i in refused.stderr for i in ids), "it says what it would have deleted"
    assert refused.stdout == ""
    assert sorted(h.id for h in local(state_dir).list()) == sorted(ids)
    assert set(statuses(state_dir).values()) == {"ready"}


def test_delete_all_of_one_provider_deletes_its_hosts_only_and_never_a_foreign_vm(
    state_dir: Path, cloud: tuple[str, JsonApiFake, dict[str, str]]
) -> None:
    name, fake, env = cloud
    mine = make()
    theirs = [make("-p", name, env=env), make("-p", name, env=env)]
    ours = fake.resources()
    fake.foreign_vm()
    foreign = fake.resources() - ours

    gone = inletsctl("delete", "--all", "-p", name, "--yes", "-o", "json", env=env)
    assert gone.returncode == 0, gone.stderr
    docs = json.loads(gone.stdout)
    assert sorted(d["id"] for d in docs) == sorted(theirs)
    assert {d["status"] for d in docs} == {"deleted"} and all("error" not in d for d in docs)
    assert fake.resources() == foreign, "the foreign VM is all that is left"
    assert local(state_dir).status(mine).status is HostStatus.ACTIVE
    assert statuses(state_dir)[mine] == "ready"

    rest = inletsctl("delete", "--all", "--yes", env=env)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout == f"Deleted {mine} (local)\n"
    assert local(state_dir).list() == []
    assert fake.resources() == foreign


def test_a_host_that_fails_does_not_stop_the_others_and_is_named_with_its_command(
    state_dir: Path, do_cloud: tuple[FakeDigitalOcean, dict[str, str]]
) -> None:
    fake, env = do_cloud
    first, second = make("-p", "digitalocean", env=env), make("-p", "digitalocean", env=env)
    stuck = Store(state_dir).get(first).provider_id
    fake.refuse(
        rf"DELETE /v2/droplets/{stuck}/?",
        403,
        "forbidden",
        "You do not have access for the attempted action.",
    )
    res = inletsctl("delete", "--all", "--yes", env=env)
    assert res.returncode == 1, res.stderr
    assert res.stdout == f"Deleted {second} (digitalocean)\n"
    assert f"Failed: {first} (digitalocean): " in res.stderr
    assert "You do not have access" in res.stderr
    assert f"run `inletsctl delete --id {first}`" in res.stderr
    assert "1 of 2 hosts were not deleted" in res.stderr and "Traceback" not in res.stderr
    assert {r for r in fake.resources() if r.startswith("droplet:")} == {f"droplet:{stuck}"}
    assert statuses(state_dir) == {first: "failed", second: "deleted"}


def test_delete_by_name_takes_that_name_only(state_dir: Path) -> None:
    web, db = make("--name", "web"), make("--name", "db")
    gone = inletsctl("delete", "--name", "web", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout == f"Deleted {web} (local)\n"
    assert [h.id for h in local(state_dir).list()] == [db]
    unknown = inletsctl("delete", "--name", "web", "--yes")
    assert unknown.returncode == 1 and "no host named 'web' in the state" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all", "--name", "web"], "--all or --name, not both"),
        (["--all", "--id", "abc"], "an ID or --ip names one"),
        (["--name", "web", "--force"], "--force is for one VM"),
        (["--all", "--region", "fra1"], "in the region the state has"),
    ],
)
def test_selectors_refuse_what_would_be_ignored(
    state_dir: Path, args: list[str], message: str
) -> None:
    make("--name", "web")
    res = inletsctl("delete", *args, "--yes")
    assert res.returncode == 2 and message in res.stderr
    assert set(statuses(state_dir).values()) == {"ready"}


def on_a_terminal(answer: bytes, *args: str) -> tuple[int, str]:
    """`inletsctl ARGS` with a terminal for stdin and output; ``answer`` typed at the prompt."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inletsctl", *args],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=_env({"COLUMNS": "200"}),
        )
        os.close(follower)
        follower = -1
        seen = b""
        while b"[y/N]" not in seen:  # the prompt: the listing came before it
            data = os.read(leader, 1 << 16)
            assert data, seen
            seen += data
        os.write(leader, answer + b"\n")
        while True:
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            seen += data
        return proc.wait(timeout=CLI_TIMEOUT_S), seen.decode()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_on_a_terminal_it_lists_what_goes_and_asks(state_dir: Path) -> None:
    host = make("--name", "web")
    rc, screen = on_a_terminal(b"n", "delete", "--all")
    assert rc == 1 and "Nothing deleted." in screen
    assert host in screen and "web" in screen and "Delete these 1 host" in screen
    assert [h.id for h in local(state_dir).list()] == [host]

    rc, screen = on_a_terminal(b"y", "delete", "--name", "web")
    assert rc == 0 and f"Deleted {host} (local)" in screen
    assert local(state_dir).list() == []


def _delete_behind_our_back(fake: FakeDigitalOcean, droplet_id: str) -> None:
    """What the web console does: the droplet goes, its firewall stays."""
    request = urllib.request.Request(
        f"{fake.base_url}/droplets/{droplet_id}",
        method="DELETE",
        headers={"Authorization": f"Bearer {fake.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 204


def test_prune_marks_a_host_deleted_behind_our_back_and_deletes_nothing(
    state_dir: Path, do_cloud: tuple[FakeDigitalOcean, dict[str, str]]
) -> None:
    fake, env = do_cloud
    lost, kept = make("-p", "digitalocean", env=env), make("-p", "digitalocean", env=env)
    _delete_behind_our_back(fake, Store(state_dir).get(lost).provider_id)
    before = fake.resources()
    deletes = len([r for r in fake.requests if r.method == "DELETE"])

    pruned = inletsctl("prune", "-o", "json", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout) == {"gone": [lost], "kept": [kept], "unasked": []}
    assert fake.resources() == before, "prune never deletes: the firewall is still there"
    assert len([r for r in fake.requests if r.method == "DELETE"]) == deletes
    assert statuses(state_dir) == {lost: "gone", kept: "active"}

    listed = inletsctl("list", env=env)
    assert lost not in listed.stdout and kept in listed.stdout
    assert f"{lost}\tdigitalocean\tgone" in inletsctl("list", "--all", env=env).stdout
    assert "It is gone: nothing to connect to" in inletsctl("get", lost, env=env).stdout

    finished = inletsctl("delete", "--id", lost, env=env)  # what its tag still marks
    assert finished.returncode == 0, finished.stderr
    kept_firewall = next(i for i, f in fake.firewalls.items() if f["name"] == f"inletsctl-{kept}")
    kept_droplet = Store(state_dir).get(kept).provider_id
    assert fake.resources() == {f"droplet:{kept_droplet}", f"firewall:{kept_firewall}"}
    assert statuses(state_dir)[lost] == "deleted"


def test_prune_of_local_and_a_provider_it_cannot_ask(
    state_dir: Path, do_cloud: tuple[FakeDigitalOcean, dict[str, str]]
) -> None:
    fake, env = do_cloud
    lost, kept = make(), make()
    remote = make("-p", "digitalocean", env=env)
    local(state_dir).purge(lost)  # stopped and removed without inletsctl
    refused = {**env, "DIGITALOCEAN_ACCESS_TOKEN": "revoked"}

    pruned = inletsctl("prune", env=refused)
    assert pruned.returncode == 1
    assert pruned.stdout == f"Gone: {lost} (local, inlets-{lost[:6]}): marked gone\n"
    assert "1 gone, 1 still there, 1 not asked." in pruned.stderr
    assert (
        "Failed: digitalocean (lon1): " in pruned.stderr
        and "DIGITALOCEAN_ACCESS_TOKEN" in pruned.stderr
    )
    assert "their rows are left as they were" in pruned.stderr
    assert statuses(state_dir) == {lost: "gone", kept: "ready", remote: "active"}, (
        "not knowing is not gone"
    )
    assert [h.id for h in local(state_dir).list()] == [kept]

    only_do = inletsctl("prune", "-p", "digitalocean", "-o", "json", env=env)
    assert json.loads(only_do.stdout) == {"gone": [], "kept": [remote], "unasked": []}
