"""Find providers through the ``inletsctl.providers`` entry point group.

Built-ins are registered in pyproject.toml exactly as a third party's would be, so
there is one path for both. Listing names reads only package metadata; a module is
imported when its provider is used, so ``inletsctl --help`` never imports a cloud SDK
and one broken or unfinished provider module never breaks the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points

from providers.base import Provider
from providers.errors import PluginError, ProviderNotFound

GROUP = "inletsctl.providers"


class Registry(Mapping[str, EntryPoint]):
    """Read-only name -> entry point, sorted by name so output is the same on every run."""

    def __init__(self, group: str = GROUP) -> None:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=group):
            seen = found.get(ep.name)
            if seen is not None and seen.value != ep.value:
                raise PluginError(
                    f"provider {ep.name!r} is claimed twice: {seen.value} and {ep.value}",
                    hint="Uninstall one of the two packages.",
                )
            found[ep.name] = ep
        self._eps = dict(sorted(found.items()))

    def __getitem__(self, name: str) -> EntryPoint:
        return self._eps[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._eps)

    def __len__(self) -> int:
        return len(self._eps)

    def load(self, name: str) -> type[Provider]:
        """The provider class; imports its module now and only now."""
        ep = self._eps.get(name)
        if ep is None:
            raise ProviderNotFound(
                f"unknown provider {name!r}",
                hint=f"Installed providers: {', '.join(self._eps) or 'none'}.",
            )
        try:
            cls = ep.load()
        except Exception as exc:  # any import-time failure of a plugin is the plugin's
            raise PluginError(
                f"provider {name!r} failed to load from {ep.value}: {exc}",
                hint=f"Reinstall the package that provides {ep.module}, or use another provider.",
            ) from exc
        if not isinstance(cls, type):
            raise PluginError(f"provider {name!r} at {ep.value} is not a class")
        return cls


def registry() -> Registry:
    return Registry()


def names() -> list[str]:
    return list(Registry())


def load(name: str) -> type[Provider]:
    return Registry().load(name)
