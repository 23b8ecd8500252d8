"""The contract every provider implements (ours and third parties').

Register an implementation under the ``inletsctl.providers`` entry point group::

    [project.entry-points."inletsctl.providers"]
    mycloud = "mypkg.mycloud:MyCloudProvider"

Rules a provider follows:

* ``create`` tags every resource (``TAG_KEY=TAG_VALUE`` and ``HOST_ID_TAG=<host_id>``)
  and, if it fails midway, removes what it made before raising (no orphans).
* ``delete`` removes everything ``create`` made (firewall / security group, VM).
* ``list`` finds our hosts from the cloud API by tag, without local state.
* SDK exceptions are translated to ``providers.errors`` at the boundary.
* Importing the module must not import the SDK; import it inside methods or
  ``__init__`` so ``inletsctl --help`` stays fast.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from providers.models import Host, HostSpec, ProviderConfig, ProviderFacts


@runtime_checkable
class Provider(Protocol):
    name: ClassVar[str]
    facts: ClassVar[ProviderFacts]

    def __init__(self, config: ProviderConfig) -> None: ...

    def create(self, spec: HostSpec) -> Host:
        """Start creating the host; returns at once (status usually ``creating``)."""
        ...

    def status(self, host_id: str) -> Host:
        """The host now; ``host_id`` is the provider's id (``Host.id``)."""
        ...

    def delete(self, host_id: str | None = None, ip: str | None = None) -> None:
        """Remove the host and everything made with it; by id, or found by IP among ours."""
        ...

    def list(self) -> list[Host]:
        """Our hosts at the provider, found by tag."""
        ...
