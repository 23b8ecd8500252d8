"""The engine's layout: a sans-I/O protocol package, one package per mode, a lazy root."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("asyncio", "ssl", "h11")


def _heavy_modules_loaded_by(statement: str) -> str:
    """Which of HEAVY a fresh ``python -I`` loads while it runs ``statement``."""
    probe = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); before = set(sys.modules)\n"
        f"{statement}\n"
        f"print(','.join(m for m in {HEAVY!r} if m in set(sys.modules) - before))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    "statement",
    [
        "import tunnel_core.protocol.frames, tunnel_core.protocol.mux, tunnel_core.protocol.ws",
        "import tunnel_core",
    ],
)
def test_the_protocol_and_the_root_import_no_asyncio_ssl_or_h11(statement: str) -> None:
    assert _heavy_modules_loaded_by(statement) == ""


def test_the_probe_sees_each_heavy_import() -> None:
    assert _heavy_modules_loaded_by("import tunnel_core.server") == ",".join(HEAVY)


@pytest.mark.parametrize(
    "package", ["tunnel_core.protocol", "tunnel_core.tcp", "tunnel_core.udp", "tunnel_core.http"]
)
def test_a_subpackage_lists_its_modules(package: str) -> None:
    pkg = importlib.import_module(package)
    assert pkg.__all__ == sorted(m.name for m in pkgutil.iter_modules(pkg.__path__))
