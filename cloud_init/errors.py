"""Errors raised while rendering user-data.

Tree::

    providers.errors.InvalidSpec
    └── UnsafeValue        a value that cannot be placed into YAML, a unit or a Caddyfile safely

    providers.errors.UserDataTooLarge   rendered user-data is over the provider's limit

They extend the provider tree so the CLI maps them at the same boundary as every
other "the spec is wrong" error.
"""

from __future__ import annotations

from providers.errors import InvalidSpec


class UnsafeValue(InvalidSpec):
    default_hint = "Use only letters, digits, dots and dashes in names and domains."
