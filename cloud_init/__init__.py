"""jinja2 templates of the exit-server user-data and their renderer.

``render(server)`` gives the ``#cloud-config`` document for a ServerSpec (any
provider and the qemu VM use the same one); ``check_size`` refuses it before any API
call when it is over a provider's limit.
"""

from cloud_init._render import (
    ACME_CA_ROOT_PATH,
    ACME_DIRECTORIES,
    CLOUD_INIT_PATHS,
    INLETS_PRO_URL,
    INLETS_PRO_VERSION,
    UnitPaths,
    acme_directory,
    check_acme_directory,
    check_ca_root,
    check_size,
    check_token,
    encoded_size,
    fetch_script,
    host_firewall_rules,
    inlets_pro_url,
    render,
    render_unit,
    template_name,
)
from cloud_init.errors import UnsafeValue

__all__ = [
    "ACME_CA_ROOT_PATH",
    "ACME_DIRECTORIES",
    "CLOUD_INIT_PATHS",
    "INLETS_PRO_URL",
    "INLETS_PRO_VERSION",
    "UnitPaths",
    "UnsafeValue",
    "acme_directory",
    "check_acme_directory",
    "check_ca_root",
    "check_size",
    "check_token",
    "encoded_size",
    "fetch_script",
    "host_firewall_rules",
    "inlets_pro_url",
    "render",
    "render_unit",
    "template_name",
]
