"""The contract every provider implements (ours and third parties').

Register an implementation under the ``inletsctl.providers`` entry point group::

    [project.entry-points."inletsctl.providers"]
    mycloud = "mypkg.mycloud:MyCloudProvider"

Rules a provider follows (``providers.testing`` checks every one of them):

* ``create`` tags every resource (``TAG_KEY=TAG_VALUE`` and ``HOST_ID_TAG=<host_id>``)
  in the very call that creates it. It need not undo anything itself: inletsctl runs
  it through ``providers.kit.create_host``, which calls ``purge`` on any failure,
  Ctrl-C or SIGTERM, so what a lost answer hid is found by tag and removed.
* ``purge(host_id)`` removes whatever carries our host-id tag, the VM before its
  firewall (a VM is never left without one), and returns what it removed; it is
  idempotent and finds resources even when no provider id was ever recorded.
* ``status``, ``delete`` and ``list`` act only on resources with our tag; ``delete``
  of an untagged VM raises ``NotOurs`` unless ``force=True``.
* ``delete`` removes everything ``create`` made (firewall / security group, VM).
* ``list`` finds our hosts from the cloud API by tag, without local state.
* SDK exceptions are translated to ``providers.errors`` at the boundary.
* Importing the module must not import the SDK; import it inside methods or
  ``__init__`` so ``inletsctl --help`` stays fast.

Optional, a provider without one simply lacks the method:

* ``console_output(host_id) -> str``: the VM's console log, for ``inletsctl logs``;
* ``known_regions() -> list[str]``: every region name the API knows (free to ask; []
  when it cannot tell), so ``create --region a,b,c`` refuses a typo anywhere in the
  list before the first create. Without it only ``facts.regions`` is checked up front.
* Capacity or quota refusals raise ``providers.errors.CapacityError``: ``create
  --region a,b`` then tries the next region; every other error stops it.
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

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        """Remove the host and everything made with it; by id, or found by IP among ours.

        A VM without our tag raises ``NotOurs``; ``force=True`` deletes it (and only it).
        """
        ...

    def purge(self, host_id: str) -> list[str]:
        """Remove every resource tagged with our ``host_id``; what was removed, or []."""
        ...

    def list(self) -> list[Host]:
        """Our hosts at the provider, found by tag."""
        ...
