"""CLI behaviour at its edges: exit codes, one-line errors with hints, JSON documents."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inletsctl.cli import main
from inletsctl.store import Store
from tests.conftest import free_port
from tests.inletsctl.conftest import run_cli


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ["create", "--provider", "nope", "--tcp", "--ports", "80"],
            "unknown provider 'nope'",
            "Installed providers: ",
        ),
        (["create"], "say what to tunnel", "--letsencrypt-domain"),
        (["create", "web", "--name", "other", "--http"], "two names", ""),
        (["delete", "a1", "--id", "b2"], "two ids", ""),
        (["create", "--http", "--inlets-version", "0.9.34"], "--inlets-version", "inlets-pro"),
        (
            ["create", "--http", "--letsencrypt-issuer", "staging"],
            "--letsencrypt-issuer needs --letsencrypt-domain",
            "--letsencrypt-email",
        ),
        (["kfwd", "--from", "svc/web"], "kfwd is not part of this inletsctl", "kubectl"),
        (["create", "--tcp", "--http", "--ports", "80"], "cannot be combined", ""),
        (["create", "--tcp", "--ports", "70000"], "'70000' is not PORT", "--ports 8080"),
        (["create", "--tcp", "--ports", "8080:0"], "'8080:0' is not PORT", ""),
        (
            ["create", "--tcp", "--ports", "80", "--region", "mars"],
            "unknown region 'mars'",
            "Use one of: local",
        ),
        (["create", "--tcp", "--ports", "80", "--poll", "soon"], "not a duration", "2s"),
        (["create", "--http", "--timeout", "5 min"], "--timeout: not a duration", "500ms"),
        (
            ["create", "--http", "--engine", "inlets-pro", "--wait", "ready"],
            "--wait ready needs the tunnel-core engine",
            "--wait running",
        ),
        (["create", "--http", "--inlets-token", "two words"], "tunnel token", "--inlets-token"),
        (["delete"], "exactly one of ID (or --id) or --ip", ""),
        (["list", "--remote"], "--remote needs --provider", ""),
    ],
)
def test_usage_errors_exit_2_with_hint(
    capsys: pytest.CaptureFixture[str], state_dir: Path, args: list[str], message: str, hint: str
) -> None:
    rc, out, err = cli(capsys, *args)
    assert rc == 2
    assert out == ""
    assert err.startswith("Error: ")
    assert message in err
    assert hint in err
    assert "Traceback" not in err
    assert Store(state_dir).all(include_deleted=True) == [], "nothing half-written"


def test_unknown_provider_lists_installed(capsys: pytest.CaptureFixture[str], state_dir: Path):
    _, _, err = cli(capsys, "create", "--provider", "nope", "--tcp", "--ports", "80")
    assert "local" in err and "ec2" in err


def test_deleting_an_unknown_id_fails_with_hint(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    rc, out, err = cli(capsys, "delete", "--id", "doesnotexist")
    assert rc == 1
    assert "no host with id 'doesnotexist' in the state" in err
    assert "--provider" in err


def test_get_unknown_id(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    rc, _, err = cli(capsys, "get", "nope")
    assert rc == 1 and "no host 'nope'" in err
    assert "--provider" not in err, "get has no --provider to suggest"
    assert "inletsctl list --all" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_traceback(state_dir: Path, where: str) -> None:
    res = run_cli("-v", "get", "nope") if where == "before" else run_cli("get", "nope", "-v")
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "HostUnknown" in res.stderr
    assert "Traceback" not in run_cli("get", "nope").stderr


#: values that cannot work, each refused before the provider is asked anything: its API
#: is a port nobody listens on, so reaching it would fail with exit 1, not 2
UNWORKABLE = [
    (["--tcp", "--ports", "80,80"], "public port 80 is given twice"),
    (["--tcp", "--ports", "8123"], "8123 is the tunnel's control port"),
    (["--tcp", "--ports", "8080,2222:22,8080:81"], "public port 8080 is given twice"),
    (["--http", "--ports", "80"], "--ports is for --tcp"),
    (["--http", "--upstream", "ftp://x"], "--upstream 'ftp://x'"),
    (["--http", "--upstream", "127.0.0.1:8080"], "--upstream '127.0.0.1:8080'"),
    (["--tcp", "--ports", "80", "--upstream", "http://127.0.0.1"], "not a URL"),
]


@pytest.mark.parametrize(("args", "message"), UNWORKABLE)
def test_unworkable_values_are_usage_errors_before_any_api_call(
    state_dir: Path, args: list[str], message: str
) -> None:
    res = run_cli(
        "create", "-p", "digitalocean", "--access-token", "x",
        "--endpoint-url", f"http://127.0.0.1:{free_port()}", "--wait", "running", *args,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Hint: " in res.stderr
    assert "cannot reach" not in res.stderr
    assert Store(state_dir).all(include_deleted=True) == []


def test_get_and_connect_refuse_an_upstream_of_the_wrong_kind(
    plugins: dict[str, str], state_dir: Path
) -> None:
    made = run_cli(
        "create", "-p", "latecloud", "--http", "--wait", "none", "-o", "json", env=plugins
    )
    assert made.returncode == 0, made.stderr
    host_id = json.loads(made.stdout)["id"]
    for command in (["get"], ["connect", "--print"]):
        res = run_cli(*command, host_id, "--upstream", "ftp://x", env=plugins)
        assert res.returncode == 2 and "--upstream 'ftp://x'" in res.stderr, command


def test_the_upstream_given_at_create_is_what_get_and_connect_use(
    plugins: dict[str, str], state_dir: Path
) -> None:
    made = run_cli(
        "create", "-p", "latecloud", "--http", "--upstream", "http://127.0.0.1:9999",
        "--wait", "none", "-o", "json", env=plugins,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert "--upstream http://127.0.0.1:9999" in host["client_command"]
    got = json.loads(run_cli("get", host["id"], "-o", "json", env=plugins).stdout)
    assert "--upstream http://127.0.0.1:9999" in got["client_command"]
    planned = json.loads(run_cli("connect", host["id"], "-o", "json", env=plugins).stdout)
    assert planned["argv"][-2:] == ["--upstream", "http://127.0.0.1:9999"]
    other = run_cli(
        "connect", host["id"], "--print", "--upstream", "http://127.0.0.1:7", env=plugins
    )
    assert other.stdout.split()[-2:] == ["--upstream", "http://127.0.0.1:7"], "a flag still wins"


def test_a_deleted_host_has_nothing_to_connect_to(plugins: dict[str, str], state_dir: Path) -> None:
    made = run_cli("create", "-p", "latecloud", "--http", "--wait", "none", "-o", "json",
                   env=plugins)  # fmt: skip
    host_id = json.loads(made.stdout)["id"]
    assert run_cli("delete", host_id, env=plugins).returncode == 0, "ID as an argument"
    text = run_cli("get", host_id, env=plugins)
    assert text.returncode == 0, text.stderr
    assert "status: deleted" in text.stdout and "It is deleted" in text.stdout
    assert "Connect a client" not in text.stdout and "tunnel-core http client" not in text.stdout
    doc = json.loads(run_cli("get", host_id, "-o", "json", env=plugins).stdout)
    assert (doc["status"], doc["client_command"], doc["delete_command"]) == ("deleted", "", "")


def test_an_unexpected_error_is_one_line_and_the_traceback_needs_v(
    tmp_path: Path, state_dir: Path
) -> None:
    (tmp_path / "buggycloud.py").write_text(
        "from providers.local import LocalProvider\n"
        "class BuggyCloud(LocalProvider):\n"
        "    name = 'buggycloud'\n"
        "    def list(self):\n"
        "        raise RuntimeError('boom\\nand a second line')\n"
    )
    info = tmp_path / "buggycloud-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: buggycloud\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[inletsctl.providers]\nbuggycloud = buggycloud:BuggyCloud\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    res = run_cli("list", "--remote", "-p", "buggycloud", env=env)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "Error: unexpected RuntimeError: boom",
        "Hint: this is a bug in inletsctl; rerun with -v and report the traceback.",
    ]
    verbose = run_cli("list", "--remote", "-p", "buggycloud", "-v", env=env)
    assert "Traceback" in verbose.stderr and "and a second line" in verbose.stderr


def test_click_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str], state_dir: Path):
    rc, _, err = cli(capsys, "create", "--no-such-flag")
    assert rc == 2 and "No such option" in err


def test_missing_credentials_names_the_variable(tmp_path: Path, state_dir: Path) -> None:
    """A third-party provider that resolves its token the shared way."""
    (tmp_path / "tokencloud.py").write_text(
        "from providers.credentials import resolve_token\n"
        "from providers.local import LocalProvider\n"
        "class TokenCloud(LocalProvider):\n"
        "    name = 'tokencloud'\n"
        "    def __init__(self, config):\n"
        "        resolve_token('tokencloud', config, ('TOKENCLOUD_TOKEN',))\n"
        "        super().__init__(config)\n"
    )
    info = tmp_path / "tokencloud-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tokencloud\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[inletsctl.providers]\ntokencloud = tokencloud:TokenCloud\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "INLETS_ACCESS_TOKEN": "", "TOKENCLOUD_TOKEN": ""}
    res = run_cli("create", "--provider", "tokencloud", "--tcp", "--ports", "80", env=env)
    assert res.returncode == 2
    assert "tokencloud: no API token found" in res.stderr
    assert "TOKENCLOUD_TOKEN or INLETS_ACCESS_TOKEN" in res.stderr
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-value\n")
    res = run_cli(
        "create",
        "--provider",
        "tokencloud",
        "--dry-run",
        "--tcp",
        "--ports",
        "80",
        "--access-token-file",
        str(secret),
        "-o",
        "json",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "s3cr3t-value" not in res.stdout + res.stderr


def test_dry_run_renders_and_records_nothing(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    rc, out, _ = cli(capsys, "create", "--http", "--dry-run", "-o", "json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["provider"] == "local"
    user_data = yaml.safe_load(doc["user_data"])
    assert doc["user_data"].startswith("#cloud-config\n")
    assert any(f["path"] == "/etc/tunnel-core/token.env" for f in user_data["write_files"])
    assert Store(state_dir).all(include_deleted=True) == []
    assert not (state_dir / "local").exists()
    rc, out, _ = cli(capsys, "create", "--http", "--dry-run")
    assert rc == 0 and out.startswith("#cloud-config\n")


def test_dry_run_with_letsencrypt_and_release_url(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    rc, out, err = cli(
        capsys,
        "create",
        "--dry-run",
        "--letsencrypt-domain",
        "t.example.com",
        "--letsencrypt-email",
        "me@example.com",
        "--release-url",
        "https://mirror.example.com/r",
    )
    assert rc == 0, err
    doc = yaml.safe_load(out)
    assert doc["packages"] == ["caddy"]
    assert doc["runcmd"][0][4].startswith("https://mirror.example.com/r/download/v")


def test_tcp_without_ports_allows_the_whole_range_and_says_so(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    rc, out, err = cli(capsys, "create", "--tcp", "--dry-run", "-o", "json")
    assert rc == 0, err
    assert "Warning: no --ports" in err and "1024-65535" in err and "--ports" in err
    units = [f for f in yaml.safe_load(json.loads(out)["user_data"])["write_files"]]
    (unit,) = [f["content"] for f in units if f["path"].endswith("tunnel-core.service")]
    assert "--allow-ports 1024-65535" in unit
    rc, _, err = cli(capsys, "create", "--tcp", "--ports", "8080", "--dry-run")
    assert rc == 0 and "Warning" not in err


def test_connect_to_a_host_made_without_ports_needs_them(
    plugins: dict[str, str], state_dir: Path
) -> None:
    made = run_cli("create", "-p", "latecloud", "--tcp", "--wait", "none", "-o", "json",
                   env=plugins)  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert host["client_command"].endswith("--ports PORTS")
    refused = run_cli("connect", host["id"], "--print", env=plugins)
    assert refused.returncode == 2 and "--ports" in refused.stderr
    planned = run_cli("connect", host["id"], "--print", "--ports", "2222:22", env=plugins)
    assert planned.returncode == 0 and planned.stdout.split()[-2:] == ["--ports", "2222:22"]
    got = json.loads(
        run_cli("get", host["id"], "--ports", "9000", "-o", "json", env=plugins).stdout
    )
    assert got["client_command"].endswith("--ports 9000")


def test_letsencrypt_staging_and_inlets_version_reach_the_user_data(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    rc, out, err = cli(
        capsys, "create", "--dry-run", "--letsencrypt-domain", "t.example.com",
        "--letsencrypt-email", "me@example.com", "--letsencrypt-issuer", "staging",
    )  # fmt: skip
    assert rc == 0, err
    files = {f["path"]: f["content"] for f in yaml.safe_load(out)["write_files"]}
    assert "acme_ca https://acme-staging-v02.api.letsencrypt.org/" in files["/etc/caddy/Caddyfile"]
    rc, out, err = cli(
        capsys, "create", "--dry-run", "--http", "--engine", "inlets-pro",
        "--inlets-version", "0.10.1",
    )  # fmt: skip
    assert rc == 0, err
    (fetch,) = yaml.safe_load(out)["runcmd"]
    assert fetch[-1].endswith("/inlets-pro/releases/download/0.10.1/inlets-pro")


@pytest.mark.parametrize("pinned", [False, True])
def test_a_local_build_of_the_pyz_is_a_warning_unless_its_url_was_chosen(
    capsys: pytest.CaptureFixture[str],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    pinned: bool,
) -> None:
    from inletsctl import release

    monkeypatch.delenv(release.RELEASE_URL_ENV, raising=False)
    if pinned:  # as an install from `make dist`'s wheel: the digest it pins is the release's
        monkeypatch.setattr(release, "pinned_sha256", lambda ver: "ab" * 32)
    else:
        monkeypatch.setattr(release, "pinned_sha256", lambda ver: "")
    aws = ["-p", "aws", "-a", "testing", "--secret-key", "testing", "--http", "--dry-run"]
    rc, _, err = cli(capsys, "create", *aws)
    assert rc == 0, err
    assert ("Warning: tunnel-core.pyz is a local build" in err) is not pinned
    assert "--release-url" in err or pinned
    rc, _, err = cli(capsys, "create", *aws, "--release-url", "http://127.0.0.1:9/r")
    assert rc == 0 and "local build" not in err, "the user serves it"
    rc, _, err = cli(capsys, "create", "--http", "--dry-run")
    assert rc == 0 and "local build" not in err, "local boots no VM from the release"


def test_hostile_domain_is_a_usage_error(capsys: pytest.CaptureFixture[str], state_dir: Path):
    rc, _, err = cli(
        capsys,
        "create",
        "--dry-run",
        "--letsencrypt-domain",
        "x.com\nruncmd: [[reboot]]",
        "--letsencrypt-email",
        "me@example.com",
    )
    assert rc == 2 and "not a domain name" in err


def test_version_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "version", "-o", "json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["version"] and doc["python"].count(".") == 2


def test_list_text_and_json_when_empty(capsys: pytest.CaptureFixture[str], state_dir: Path):
    assert cli(capsys, "list", "-o", "json")[1] == "[]\n"
    assert cli(capsys, "list")[:2] == (0, "")


def in_a_terminal(*args: str, env: dict[str, str]) -> str:
    """What `inletsctl ARGS` writes to stdout when stdout is a terminal (a pty)."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inletsctl", *args],
            stdout=follower,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **env},
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("remote", [[], ["--remote", "-p", "latecloud"]])
def test_list_has_a_header_on_a_terminal_and_only_rows_in_a_pipe(
    plugins: dict[str, str], state_dir: Path, remote: list[str]
) -> None:
    made = run_cli("create", "-p", "latecloud", "--tcp", "--ports", "8080", "--wait", "none",
                   "-o", "json", env=plugins)  # fmt: skip
    host = json.loads(made.stdout)
    host_id = host["id"] if not remote else host["provider_id"]
    shown = in_a_terminal("list", *remote, env=plugins)
    assert re.search(r"ID\s.*PROVIDER\s.*STATUS", shown), shown
    assert host_id in shown
    piped = run_cli("list", *remote, env=plugins)
    assert piped.stdout.splitlines()[0].split("\t")[0] == host_id
    assert len(piped.stdout.splitlines()) == 1, "no header, no decoration"


def test_no_state_dir_permission_is_a_state_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("")
        target = blocker / "state"  # a path under a regular file cannot be created, even by root
    else:
        target = tmp_path / "ro" / "state"
        (tmp_path / "ro").mkdir(mode=0o500)
    res = run_cli("list", env={"INLETSCTL_STATE_DIR": str(target)})
    assert res.returncode == 1
    assert "cannot open the host state" in res.stderr and "INLETSCTL_STATE_DIR" in res.stderr


def test_delete_with_provider_finds_a_host_the_state_never_saw(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    from providers.local import LocalProvider
    from providers.models import ProviderConfig
    from providers.testing.conformance import ProviderConformance

    local = LocalProvider(ProviderConfig(state_dir=str(state_dir)))
    host = local.create(ProviderConformance().make_spec(local))
    rc, _, err = cli(capsys, "delete", "--id", host.id)
    assert rc == 1 and "--provider" in err
    rc, out, err = cli(capsys, "delete", "--id", host.id, "--provider", "local", "-o", "json")
    assert rc == 0, err
    assert json.loads(out)["status"] == "deleted"
    assert local.list() == []
    local._children.pop(host.id).wait(timeout=10)  # the CLI's own provider instance stopped it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "inlets-pro", "--http"], "only the tunnel-core engine"),
        (
            ["--letsencrypt-domain", "a.example.com", "--letsencrypt-email", "m@example.com"],
            "Let's Encrypt needs a public VM",
        ),
    ],
)
def test_local_refuses_what_it_cannot_run(
    capsys: pytest.CaptureFixture[str], state_dir: Path, args: list[str], message: str
) -> None:
    rc, _, err = cli(capsys, "create", *args)
    assert rc == 2 and message in err
    assert [r.status for r in Store(state_dir).all(include_deleted=True)] == ["deleted"]


def test_delete_by_the_providers_id_marks_the_row_deleted(
    plugins: dict[str, str], state_dir: Path
) -> None:
    made = run_cli(
        "create", "-p", "latecloud", "--tcp", "--ports", "8080", "--wait", "none", "-o", "json",
        env=plugins,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    gone = run_cli("delete", "-i", host["provider_id"], "-o", "json", env=plugins)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout) == {
        "id": host["id"],
        "provider": "latecloud",
        "status": "deleted",
    }
    assert Store(state_dir).get(host["id"]).status == "deleted"
    assert not (state_dir / "latecloud" / host["id"]).exists()
