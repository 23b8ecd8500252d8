"""Importing a provider's module imports none of its SDK, for every cloud (the SDK is
loaded when a provider is made), so ``inletsctl --help`` and ``list`` stay fast.

Each import runs in a fresh interpreter: this test process has imported them all.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: provider module -> the SDK's top-level modules it must not import
SDKS = {
    "providers.azure": ("azure",),
    "providers.digitalocean": ("digitalocean",),
    "providers.gce": ("google.cloud.compute_v1",),
    "providers.hetzner": ("hcloud",),
    "providers.linode": ("linode_api4",),
    "providers.ovh": ("ovh",),
    "providers.scaleway": ("scaleway", "scaleway_core"),
    "providers.vultr": ("requests",),
}


@pytest.mark.parametrize("module", sorted(SDKS))
def test_importing_the_module_does_not_import_the_sdk(module: str) -> None:
    code = f"import sys, {module}; sys.exit(any(m in sys.modules for m in {SDKS[module]!r}))"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
