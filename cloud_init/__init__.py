"""jinja2 templates of the exit-server user-data and their renderer.

``render(server)`` gives the ``#cloud-config`` document for a ServerSpec (any
provider and the qemu VM use the same one); ``check_size`` refuses it before any API
call when it is over a provider's limit.
"""

from cloud_init._render import (
    INLETS_PRO_URL,
    INLETS_PRO_VERSION,
    LETSENCRYPT_STAGING,
    check_size,
    check_token,
    encoded_size,
    inlets_pro_url,
    render,
    template_name,
)
from cloud_init.errors import UnsafeValue

__all__ = [
    "INLETS_PRO_URL",
    "INLETS_PRO_VERSION",
    "LETSENCRYPT_STAGING",
    "UnsafeValue",
    "check_size",
    "check_token",
    "encoded_size",
    "inlets_pro_url",
    "render",
    "template_name",
]
