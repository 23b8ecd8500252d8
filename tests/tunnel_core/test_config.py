"""``--config FILE`` and ``--print-config``: the TOML subset, the merge rules, the CLI."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Engine, free_port, healthz, wait_for
from tests.tunnel_core.tcp.test_e2e import Upstream, echo, exchange
from tunnel_core import config
from tunnel_core.cli import build_parser
from tunnel_core.errors import ConfigError

ENGINE = [sys.executable, "-m", "tunnel_core"]


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENGINE, *argv], capture_output=True, text=True, timeout=30, cwd=REPO,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tunnel.toml"
    path.write_text(text)
    return str(path)


# -- the TOML subset ----------------------------------------------------------

SUBSET_DOCUMENT = r"""
# comment
bind = "127.0.0.1"   # trailing comment
control-port = 8_123
keepalive = 2.5
exp = 1e3
negative = -4
insecure = true
off = false
literal = 'C:\path\no\escapes'
escaped = "tab\there \"q\" \\ \u00e9 \U0001F600"
upstream = ["a=http://127.0.0.1:1", 'b', ]
empty = []
"""


def test_the_subset_parses_as_tomllib_does() -> None:
    tomllib = pytest.importorskip("tomllib")
    ours = {e.key: e.value for e in config.parse_toml(SUBSET_DOCUMENT)}
    assert ours == tomllib.loads(SUBSET_DOCUMENT)
    lines = {e.key: e.line for e in config.parse_toml(SUBSET_DOCUMENT)}
    assert lines["bind"] == 3 and lines["empty"] == 13


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a = 1\n[server]\n", 2, "tables"),
        ("a.b = 1\n", 1, "dotted"),
        ('a = """x\n', 1, "multi-line"),
        ('\n\na = "open\n', 3, "unterminated"),
        ("a = [1,\n2]\n", 1, "array"),
        ("a = hello\n", 1, "quotes"),
        ("a = 0123\n", 1, "not a TOML value"),
        ("a = 1 2\n", 1, "after the value"),
        ("a 1\n", 1, "expected ="),
        ("= 1\n", 1, "key = value"),
        ('a = "\\x"\n', 1, "escape"),
        ("control-port = 1\ncontrol_port = 2\n", 2, "already set on line 1"),
    ],
)
def test_malformed_files_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse_toml(text, "f.toml")
    assert caught.value.message.startswith(f"f.toml:{line}: ")
    assert words in caught.value.message


# -- merging with the command line ---------------------------------------------


def resolve(argv: list[str]) -> argparse.Namespace:
    return config.resolve(build_parser, argv)


def test_flags_on_the_command_line_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'url = "wss://127.0.0.1:1"\ntoken-file = "/f"\ninsecure = true\n'
        'upstream = ["a=http://127.0.0.1:1", "http://127.0.0.1:2"]\n',
    )
    args = resolve(["http", "client", "--config", path])
    assert (args.url, args.token_file, args.insecure) == (["wss://127.0.0.1:1"], "/f", True)
    assert args.upstream == ["a=http://127.0.0.1:1", "http://127.0.0.1:2"]
    args = resolve(
        ["http", "client", "--config", path, "--url", "wss://127.0.0.1:9",
         "--token-env", "T", "--upstream", "http://127.0.0.1:3"]
    )  # fmt: skip
    assert args.url == ["wss://127.0.0.1:9"]
    # one of an exclusive group on the command line drops the file's other
    assert (args.token_env, args.token_file) == ("T", None)
    assert args.upstream == ["http://127.0.0.1:3"]  # replaces the file's list


def test_values_are_checked_with_the_line(tmp_path: Path) -> None:
    cases = {
        'control-port = "x"\n': "invalid value 'x'",
        "auto-tls = 1\n": "switch",
        'bind = ["a", "b"]\n': "one value",
        'generate = "sysv"\n': "not one of systemd",
        "bind = true\n": "not true",
    }
    for text, words in cases.items():
        with pytest.raises(ConfigError) as caught:
            resolve(["tcp", "server", "--config", write(tmp_path, "# x\n" + text)])
        assert caught.value.message.startswith(str(tmp_path / "tunnel.toml") + ":2: ")
        assert words in caught.value.message


def _leaves() -> list[argparse.ArgumentParser]:
    return config._leaves(build_parser())


def test_every_subcommand_has_config_and_print_config() -> None:
    leaves = _leaves()
    assert {p.prog for p in leaves} == {
        "tunnel-core tcp server", "tunnel-core tcp client", "tunnel-core udp server",
        "tunnel-core udp client", "tunnel-core http server",
        "tunnel-core http client", "tunnel-core http fileserver", "tunnel-core status",
    }  # fmt: skip
    for leaf in leaves:
        flags = {o for a in leaf._actions for o in a.option_strings}
        assert {"--config", "--print-config"} <= flags, leaf.prog


COMMANDS = {
    "tcp server": ["--token-env", "T", "--auto-tls", "--allow-ips", "10.0.0.0/8"],
    "tcp client": ["--url", "wss://[::1]:1", "--token-env", "T", "--insecure", "--ports", "80"],
    "udp server": ["--token-env", "T", "--auto-tls", "--idle-timeout", "5", "--max-flows", "9"],
    "udp client": [
        "--url",
        "wss://h:1",
        "--url",
        "wss://g:1",
        "--token-env",
        "T",
        "--insecure",
        "--ports",
        "53:5353",
    ],
    "http server": ["--token-env", "T", "--tls-cert", "c", "--tls-key", "k", "--port", "81"],
    "http client": ["--url", "wss://h:1", "--token-env", "T", "--upstream", "http://a:1"],
    "http fileserver": ["--webroot", "/srv", "--token-env", "T", "--allow-browsing"],
    "status": ["--url", "wss://h:1", "--token-env", "T", "--insecure", "--json"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_print_config_lists_every_flag_and_reads_back_the_same(
    command: str, tmp_path: Path
) -> None:
    """Every flag has a key: --print-config names each, and that file reproduces them."""
    argv = [*command.split(), *COMMANDS[command]]
    printed = run(*argv, "--print-config")
    assert printed.returncode == 0, printed.stderr
    leaf = next(p for p in _leaves() if p.prog == f"tunnel-core {command}")
    keys = {
        line.lstrip("# ").split(" =")[0] for line in printed.stdout.splitlines() if " =" in line
    }
    assert keys == set(config._keyed(leaf))
    again = run(*command.split(), "--config", write(tmp_path, printed.stdout), "--print-config")
    assert again.returncode == 0, again.stderr
    assert again.stdout == printed.stdout


def test_print_config_masks_the_token_and_starts_nothing(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, f'token = "s3cret-value"\nauto-tls = true\ncontrol-port = {port}\n')
    printed = run("tcp", "server", "--bind", "127.0.0.1", "--config", path, "--print-config")
    assert printed.returncode == 0, printed.stderr
    assert "s3cret-value" not in printed.stdout + printed.stderr
    assert 'token = "********"' in printed.stdout
    assert f"control-port = {port}" in printed.stdout
    assert healthz(port) is None


def test_an_unknown_key_is_a_usage_error_naming_key_and_line(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, f'token = "t"\nauto-tls = true\ncontrol-port = {port}\nprots = 1\n')
    result = run("tcp", "server", "--bind", "127.0.0.1", "--config", path)
    assert result.returncode == 2
    assert f"{path}:4: unknown key 'prots'" in result.stderr
    assert "Traceback" not in result.stderr
    assert healthz(port) is None


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run("tcp", "client", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "cannot read --config" in result.stderr


@pytest.mark.network
def test_a_tunnel_from_config_files_alone(engine: Engine, tmp_path: Path) -> None:
    """Required flags (token, TLS, url, ports) may all come from the file."""
    upstream = Upstream(echo)
    try:
        control, public = free_port(), free_port()
        cert, key, fingerprint = engine.cert("cfg")
        server_conf = tmp_path / "server.toml"
        server_conf.write_text(
            f'bind = "127.0.0.1"\ncontrol_port = {control}\ntoken_env = "T"\n'
            f'tls_cert = "{cert}"\ntls_key = "{key}"\nallow_ports = "{public}"\n'
        )
        client_conf = tmp_path / "client.toml"
        client_conf.write_text(
            f'url = "wss://127.0.0.1:{control}"\ntoken-env = "T"\n'
            f'tls-fingerprint = "{fingerprint}"\nports = "{public}:{upstream.port}"\n'
        )
        token = os.urandom(8).hex()
        server = engine.start("tcp", "server", "--config", str(server_conf), env={"T": token})
        wait_for(lambda: healthz(control) is not None or server.proc.poll() is not None)
        assert server.proc.poll() is None, server.stderr()
        engine.start("tcp", "client", "--config", str(client_conf), env={"T": token})
        wait_for(lambda: (healthz(control) or {}).get("clients") == 1, what="the client")
        assert exchange(public, b"from the file") == b"from the file"
    finally:
        upstream.close()
