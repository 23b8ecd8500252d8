"""``--config FILE`` (a small TOML subset) and ``--print-config`` for every subcommand.

Why our own parser rather than ``tomllib``: the engine must run from the pyz on
python3 3.10, which has no ``tomllib`` (and the pyz carries no ``tomli``), and an
unknown key must be reported with its line, which ``tomllib`` does not expose. So
one parser on every version, for the subset a flat list of flags needs:

* ``key = value`` lines, ``#`` comments, blank lines; keys are bare
  (``A-Za-z0-9_-``), each once;
* values: basic strings ``"..."`` (escapes ``\\" \\\\ \\b \\t \\n \\f \\r \\uXXXX
  \\UXXXXXXXX``), literal strings ``'...'``, integers, floats, ``true``/``false``,
  and one-line arrays of those (``["a", "b"]``, trailing comma allowed);
* no tables, dotted keys, dates, inline tables or multi-line values: each is an
  error naming its line.

Keys are the flag names without ``--``; dashes or underscores (``control-port`` or
``control_port``). A flag given on the command line wins over the file, and for a
repeatable flag (``--upstream``) replaces the file's list. One of a group of
exclusive flags on the command line (``--token-env``) drops the file's others
(``token-file``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["Entry", "add_args", "format_toml", "parse_toml", "resolve"]

#: Flags a file cannot set: they are about the file itself, or they end the process.
_NOT_KEYS = {"help", "config", "print-config", "version"}
_MASKED = {"token"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INT = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)")
_FLOAT = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}

Scalar = str | int | float | bool
Value = Scalar | list[Scalar]


@dataclass(frozen=True)
class Entry:
    key: str
    value: Value
    line: int


class _Bad(Exception):
    pass


def parse_toml(text: str, name: str = "config") -> list[Entry]:
    """The ``key = value`` entries of ``text``; ConfigError names ``name:LINE``."""
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("["):
                raise _Bad("tables ([section]) are not supported: put every key at the top")
            match = _BARE_KEY.match(line)
            if match is None:
                raise _Bad("expected key = value")
            key, rest = match.group(), line[match.end() :].lstrip()
            if rest.startswith("."):
                raise _Bad("dotted keys are not supported")
            if not rest.startswith("="):
                raise _Bad(f"expected = after the key {key!r}")
            value, end = _value(rest, _skip(rest, 1))
            tail = rest[end:].strip()
            if tail and not tail.startswith("#"):
                raise _Bad(f"unexpected text after the value: {tail[:20]!r}")
        except _Bad as exc:
            raise ConfigError(f"{name}:{number}: {exc}", "see `tunnel-core ... --help`") from None
        normal = key.replace("_", "-")
        if normal in seen:
            raise ConfigError(f"{name}:{number}: key {key!r} already set on line {seen[normal]}")
        seen[normal] = number
        entries.append(Entry(key, value, number))
    return entries


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _value(text: str, pos: int) -> tuple[Value, int]:
    if pos >= len(text):
        raise _Bad("missing value")
    if text[pos] == "[":
        items: list[Scalar] = []
        pos = _skip(text, pos + 1)
        while pos < len(text) and text[pos] != "]":
            item, pos = _scalar(text, pos)
            items.append(item)
            pos = _skip(text, pos)
            if pos < len(text) and text[pos] == ",":
                pos = _skip(text, pos + 1)
            elif pos < len(text) and text[pos] != "]":
                raise _Bad("expected , or ] in the array")
        if pos >= len(text):
            raise _Bad("the array does not end on this line (multi-line arrays: unsupported)")
        return items, pos + 1
    return _scalar(text, pos)


def _scalar(text: str, pos: int) -> tuple[Scalar, int]:
    char = text[pos]
    if text.startswith(('"""', "'''"), pos):
        raise _Bad("multi-line strings are not supported")
    if char == '"':
        return _basic_string(text, pos + 1)
    if char == "'":
        end = text.find("'", pos + 1)
        if end < 0:
            raise _Bad("unterminated string")
        return text[pos + 1 : end], end + 1
    word = re.match(r"[^\s,\]#]+", text[pos:])
    token = word.group() if word else ""
    if token in ("true", "false"):
        return token == "true", pos + len(token)
    if _INT.fullmatch(token):
        return int(token.replace("_", "")), pos + len(token)
    if _FLOAT.fullmatch(token):
        return float(token.replace("_", "")), pos + len(token)
    raise _Bad(f"not a TOML value: {token or text[pos : pos + 10]!r} (strings need quotes)")


def _basic_string(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            code = text[pos + 1 : pos + 2]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                pos += 2
                continue
            if code in ("u", "U"):
                width = 4 if code == "u" else 8
                digits = text[pos + 2 : pos + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise _Bad(f"bad \\{code} escape")
                point = int(digits, 16)
                if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                    raise _Bad(f"\\{code}{digits} is not a Unicode scalar value")
                out.append(chr(point))
                pos += 2 + width
                continue
            raise _Bad(f"unknown escape \\{code}")
        if ord(char) < 0x20 and char != "\t":
            raise _Bad("control character in a string")
        out.append(char)
        pos += 1
    raise _Bad("unterminated string")


# -- argparse ---------------------------------------------------------------


def add_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--print-config`` on every leaf subcommand below ``parser``."""
    for leaf in _leaves(parser):
        leaf.add_argument(
            "--config",
            metavar="FILE",
            help="read flags from FILE (TOML: key = value, keys are the flag names "
            "without --); flags given here win over the file",
        )
        leaf.add_argument(
            "--print-config",
            action="store_true",
            help="print the effective configuration as TOML (token masked) and exit",
        )


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    found: list[argparse.ArgumentParser] = []
    for sub in subs:
        for child in dict.fromkeys(sub.choices.values()):  # aliases share a parser
            found += _leaves(child)
    return found


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The leaf parser that ``args`` came through (``tcp server``, ``status``...)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return parser
        sub = subs[0]
        parser = sub.choices[getattr(args, str(sub.dest))]


def _keyed(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config key (long flag without --) -> its action."""
    keys: dict[str, argparse.Action] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and longs[0][2:] not in _NOT_KEYS:
            keys[longs[0][2:]] = action
    return keys


def _given_on_command_line(build: Any, argv: Sequence[str]) -> argparse.Namespace:
    """Only what ``argv`` itself sets: every default suppressed, nothing required."""
    parser: argparse.ArgumentParser = build()
    for leaf in _leaves(parser):
        for action in leaf._actions:
            action.default = argparse.SUPPRESS
            action.required = False
        for group in leaf._mutually_exclusive_groups:
            group.required = False
    return parser.parse_args(argv)


def _tokens(key: str, action: argparse.Action, entry: Entry, name: str) -> list[str]:
    where = f"{name}:{entry.line}: {entry.key}"
    value = entry.value
    flag = f"--{key}"
    if action.nargs == 0:  # store_true and friends
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is a switch: true or false, not {value!r}")
        return [flag] if value else []
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not isinstance(action, argparse._AppendAction):
        raise ConfigError(f"{where} takes one value, not an array")
    out: list[str] = []
    for item in values:
        if isinstance(item, bool):
            raise ConfigError(f"{where}: expected a value, not {str(item).lower()}")
        text = str(item)
        try:
            converted = action.type(text) if callable(action.type) else text
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise ConfigError(f"{where}: invalid value {item!r}") from None
        if action.choices is not None and converted not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigError(f"{where}: {item!r} is not one of {choices}")
        out.append(f"{flag}={text}")
    return out


def resolve(build: Any, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` with the parser ``build()`` makes, merging ``--config`` below it."""
    given = _given_on_command_line(build, argv)
    parser: argparse.ArgumentParser = build()
    path = getattr(given, "config", None)
    if path is None:
        return parser.parse_args(argv)
    leaf = _chosen(parser, given)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"cannot read --config {path}: {reason}") from exc
    keys = _keyed(leaf)
    on_line = {action.dest for action in leaf._actions if hasattr(given, action.dest)}
    excluded = set()
    for group in leaf._mutually_exclusive_groups:
        dests = {a.dest for a in group._group_actions}
        if dests & on_line:
            excluded |= dests
    tokens: list[str] = []
    for entry in parse_toml(text, path):
        key = entry.key.replace("_", "-")
        action = keys.get(key)
        if action is None:
            raise ConfigError(
                f"{path}:{entry.line}: unknown key {entry.key!r} for `{leaf.prog}`",
                "keys are the flag names without --: " + ", ".join(sorted(keys)),
            )
        if action.dest in on_line or action.dest in excluded:
            continue  # the command line wins
        tokens += _tokens(key, action, entry, path)
    return parser.parse_args(_insert(argv, given, parser, tokens))


def _insert(
    argv: Sequence[str],
    given: argparse.Namespace,
    parser: argparse.ArgumentParser,
    tokens: list[str],
) -> list[str]:
    """``argv`` with ``tokens`` placed right after the subcommand words."""
    argv = list(argv)
    pos = 0
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        word = getattr(given, str(subs[0].dest))
        pos = argv.index(word, pos) + 1
        parser = subs[0].choices[word]
    return argv[:pos] + tokens + argv[pos:]


def format_toml(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The effective flags of ``args`` as a config file; unset ones are commented out."""
    leaf = _chosen(parser, args)
    lines = [f"# effective configuration of `{leaf.prog}`"]
    for key, action in _keyed(leaf).items():
        value = getattr(args, action.dest, None)
        if action.dest in _MASKED and value is not None:
            value = "********"
        if value is None or value == []:
            lines.append(f"# {key} =")
        else:
            lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value)
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
