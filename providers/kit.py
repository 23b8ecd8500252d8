"""The no-orphan rules, written once for every provider (ours and third parties').

A provider has two duties: tag every resource with our host id in the call that
creates it, and implement ``purge(host_id)`` (remove whatever carries that tag, the
VM before its firewall). Everything else lives here:

* :func:`create_host` runs ``provider.create`` so that an exception, a Ctrl-C or a
  SIGTERM removes by tag what the call made, even when the cloud did the work and
  its answer was lost. Our host-id tag is the idempotency token that EC2's
  ``ClientToken`` is for one call: the lookup by tag finds what a lost answer hid.
* :func:`undo` is that removal on its own, for failures after ``create`` returned
  (while polling); a second Ctrl-C or SIGTERM while it runs is ignored, not obeyed,
  so an impatient user cannot turn an undo into an orphan.
* :func:`delete_host` removes a host by our id alone: what ``delete --id`` does when
  the CLI was killed (-9) before the provider's id reached the state.
* :func:`require_ours` is the ownership rule every ``status`` and ``delete`` applies:
  a resource without our tag is never touched unless the user said ``--force``.
* :func:`remove_leftovers` is the second half of every ``purge``: what the VMs used
  (firewalls, addresses), removed once the VMs are gone, and a failure there told as
  such, so the user knows the same ``delete`` finishes the job.
* :func:`name_tags`, :func:`name_tag_map` and :func:`host_ids` spell our two tags for
  clouds whose tags are plain names rather than key=value labels.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType

from providers.base import Provider
from providers.errors import HostNotFound, NotOurs, ProviderError, UndoFailed
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE, Host, HostSpec

__all__ = [
    "Terminated",
    "create_host",
    "delete_host",
    "host_ids",
    "host_tag",
    "is_ours",
    "name_tag_map",
    "name_tags",
    "remove_leftovers",
    "require_ours",
    "sigterm_raises",
    "undo",
    "undo_with",
]


class Terminated(BaseException):  # noqa: N818 (named like KeyboardInterrupt, its sibling)
    """SIGTERM, raised in the main thread the way Ctrl-C raises KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"terminated by signal {signum}")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` so ``finally`` and undo run.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored while an undo runs (kill -9 still works)."""
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def undo(provider: Provider, host_id: str, cause: BaseException) -> list[str]:
    """Remove everything tagged ``host_id`` after ``cause`` interrupted a create.

    Returns what was removed. If the removal fails too, raises :class:`UndoFailed`
    (chained to ``cause``), which names the command that finishes the job.
    """
    return undo_with(provider.purge, host_id, cause)


def undo_with(purge: Callable[[str], list[str]], host_id: str, cause: BaseException) -> list[str]:
    """:func:`undo` for what a host has beyond its provider's resources (DNS records)."""
    with _signals_ignored():
        try:
            return purge(host_id)
        except ProviderError as exc:
            hint = cause.hint if isinstance(cause, ProviderError) else ""
            raise UndoFailed(host_id, _describe(cause), exc.message, hint) from cause


def create_host(provider: Provider, spec: HostSpec) -> Host:
    """``provider.create(spec)``; on any failure or interrupt, nothing of it is left."""
    with sigterm_raises():
        try:
            return provider.create(spec)
        except BaseException as exc:
            undo(provider, spec.host_id, exc)
            raise


def delete_host(provider: Provider, host_id: str) -> list[str]:
    """Remove every resource tagged with our ``host_id``; HostNotFound if there is none."""
    removed = provider.purge(host_id)
    if not removed:
        raise HostNotFound(f"{provider.name}: nothing is tagged {HOST_ID_TAG}={host_id}")
    return removed


def is_ours(tags: Mapping[str, str]) -> bool:
    """True when ``tags`` (key -> value; list-style tags map to "") carry our tag."""
    return TAG_KEY in tags and tags[TAG_KEY] in (TAG_VALUE, "")


def require_ours(provider: str, what: str, tags: Mapping[str, str], force: bool) -> None:
    """Refuse to act on ``what`` unless it carries our tag or the user forced it."""
    if not force and not is_ours(tags):
        raise NotOurs(f"{provider}: {what} was not made by inletsctl (it has no {TAG_KEY} tag)")


def remove_leftovers(
    provider: str, vms: str, leftovers: Iterable[tuple[str, Callable[[], object]]]
) -> list[str]:
    """Call each ``(what, remove)`` in turn, after ``purge`` removed the VMs (``vms``:
    "servers", "instances"); returns every ``what``.

    The first failure stops: it says the VMs are gone and what is not, and that the
    same ``inletsctl delete`` removes the rest.
    """
    removed = []
    for what, remove in leftovers:
        try:
            remove()
        except ProviderError as exc:
            raise ProviderError(
                f"{provider}: the {vms} are deleted, but not {what}: {exc.message}",
                hint="Run the same `inletsctl delete` again shortly.",
            ) from exc
        removed.append(what)
    return removed


def host_tag(host_id: str) -> str:
    """Our host-id tag as a plain name: ``inletsctl-host-<host id>``."""
    return f"{HOST_ID_TAG}-{host_id}"


def name_tags(host_id: str) -> list[str]:
    """Both our tags as plain names, for clouds with no key=value labels: ``inletsctl``
    (what :func:`is_ours` looks for) and :func:`host_tag` (what ``purge`` looks for)."""
    return [TAG_KEY, host_tag(host_id)]


def name_tag_map(tags: Iterable[str]) -> dict[str, str]:
    """Plain-name tags as the map :func:`is_ours` and :func:`require_ours` read."""
    return dict.fromkeys(tags, "")


def host_ids(tags: Iterable[str]) -> list[str]:
    """Our host ids among plain-name tags (each :func:`host_tag` with its prefix removed)."""
    prefix = host_tag("")
    return [t.removeprefix(prefix) for t in tags if t.startswith(prefix)]


def _describe(cause: BaseException) -> str:
    if isinstance(cause, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(cause, Terminated):
        return "terminated (SIGTERM)"
    if isinstance(cause, ProviderError):
        return cause.message
    return f"{type(cause).__name__}: {cause}"
