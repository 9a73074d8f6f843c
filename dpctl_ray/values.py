"""Checking one value from a config file or a flag: each check names the key path and says its bounds.

Every bound is far beyond a real deployment; it is there so that no input costs unbounded work later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dpctl_ray.errors import ConfigError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTEGER = re.compile(r"^\s*-?[0-9]{1,30}\s*$")  # ASCII digits only: "²" and "٣" pass isdigit(), not this
_LONG_INTEGER = re.compile(r"^\s*[0-9]{31,}\s*$")  # digits beyond any bound: never made an int (unbounded work)
_DECIMAL = re.compile(r"^\s*[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?\s*$")
SHOWN_CHARS = 80

MAX_COUNT = 1_000_000  # ranks (dp, dp_local) and devices of a rank (tp, pp)
MAX_SECONDS = 7 * 24 * 3600.0  # timeouts and grace periods: a week
MAX_CPUS = 1_000_000.0
MAX_PORT = 65535


def printable(text: str) -> str:
    """`text` with anything that is not printable (newlines, ESC, lone surrogates, ...) written as an escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode() for c in text)


def one_line(text: str, limit: int = 1000) -> str:
    """A message as one printable line of at most about `limit` characters."""
    text = printable(text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text


def quoted(text: str) -> str:
    """A string in single quotes as Python writes it (escapes included), cut short when long."""
    shown = repr(text)
    return shown if len(shown) <= SHOWN_CHARS else f"{shown[: SHOWN_CHARS - 20]}...'({len(text):,} characters)"


def show(value: object) -> str:
    """A value as an error message quotes it: escaped, and cut short when long."""
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        text = printable(value)
        if len(text) > SHOWN_CHARS:
            text = f"{text[: SHOWN_CHARS - 20]}...({len(value):,} characters)"
        return f'"{text}"'
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**SHOWN_CHARS:
        return f"an integer of {len(str(abs(value))):,} digits"
    return printable(repr(value))[:SHOWN_CHARS]


def integer(value: object, path: str, minimum: int = 1, maximum: int = MAX_COUNT, expect: str = "") -> int:
    """An integer in [minimum, maximum]; a flag's ASCII digits count as one."""
    if isinstance(value, str) and _INTEGER.match(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if expect:
            what = f"{expect} or {what}"
        too_big = isinstance(value, int) and not isinstance(value, bool) and value > maximum
        if too_big or (isinstance(value, str) and _LONG_INTEGER.match(value)):
            what = f"{what} of at most {maximum:,}"
        raise ConfigError(f"{path}: must be {what}, got {show(value)}")
    return value


def number(value: object, path: str, *, zero_ok: bool = False, maximum: float = MAX_SECONDS) -> float:
    """A finite number above 0 (or >= 0), at most `maximum`; a flag's text counts as one."""
    if isinstance(value, str) and _DECIMAL.match(value):
        value = float(value)
    lowest = ">= 0" if zero_ok else "above 0"
    # The comparisons are also False for NaN, and run before an integer is turned into a float.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 if zero_ok else value > 0):
        raise ConfigError(f"{path}: must be a number {lowest}, got {show(value)}")
    if not value <= maximum:
        raise ConfigError(f"{path}: must be a number {lowest} of at most {maximum:g}, got {show(value)}")
    return float(value)


def seconds(value: object, path: str, *, zero_ok: bool = False) -> float:
    """A duration in seconds: finite, at most a week."""
    return number(value, path, zero_ok=zero_ok, maximum=MAX_SECONDS)


def port(value: object, path: str) -> int:
    """A TCP port, or 0 for "choose one"."""
    return integer(value, path, minimum=0, maximum=MAX_PORT)


def text(value: object, path: str) -> str:
    """A non-empty single-line string, stripped."""
    if not isinstance(value, str) or not value.strip() or printable(value) != value:
        raise ConfigError(f"{path}: must be a non-empty line of text, got {show(value)}")
    return value.strip()


def string(value: object, path: str) -> str:
    """A string, possibly empty."""
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be a string, got {show(value)}")
    return value


def choice(value: object, path: str, choices: tuple[str, ...]) -> Any:
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{path}: must be one of {', '.join(choices)}, got {show(value)}")
    return value


def names(value: object, path: str) -> tuple[str, ...]:
    """A list of node ids or ips; an entry (or the whole value) may be a comma-separated string of several."""
    entries = [(path, value)] if isinstance(value, str) else None
    if entries is None:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: must be a list of node ids or ips, got {show(value)}")
        entries = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    out: list[str] = []
    for where, entry in entries:
        if not isinstance(entry, str) or printable(entry) != entry:
            raise ConfigError(f"{where}: must be a node id or ip (printable text), got {show(entry)}")
        parts = [part.strip() for part in entry.split(",")]
        if not all(parts):
            raise ConfigError(
                f"{path}: names an empty node", hint="list node ids or ips; leave the key out for all nodes"
            )
        out += parts
    return tuple(out)


def ranks(value: object, path: str) -> tuple[int, ...]:
    """A list of rank numbers."""
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_COUNT for v in value
    ):
        raise ConfigError(f"{path}: must be a list of rank numbers, got {show(value)}")
    return tuple(value)


def env_name(value: object, path: str) -> str:
    """An environment variable name."""
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ConfigError(f"{path}: must be an environment variable name, got {show(value)}")
    return value


def regex(value: object, path: str) -> str:
    """A regular expression that compiles."""
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be a regular expression, got {show(value)}")
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ConfigError(f"{path}: not a valid regular expression ({printable(str(exc))[:120]})") from None
    return value


def no_nul(text: str, path: str) -> str:
    """A string a process can be given: no NUL byte (an argument and an environment value are C strings)."""
    if "\0" in text:
        raise ConfigError(f"{path}: must not contain a NUL byte (\\0): a process argument or variable cannot hold one")
    return text
