"""Checking one value from a config file or a flag: each check names the key path in its error."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from typing import Any

from dpctl_ray.errors import ConfigError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def show(value: object) -> str:
    """A value as an error message quotes it."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def integer(value: object, path: str, minimum: int = 1, expect: str = "") -> int:
    """An integer >= minimum; a flag's digits count as one. `expect` names another accepted form (auto)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if expect:
            what = f"{expect} or {what}"
        raise ConfigError(f"{path}: must be {what}, got {show(value)}")
    return value


def number(value: object, path: str, *, zero_ok: bool = False) -> float:
    """A finite number above 0 (or >= 0); a flag's text counts as one."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        raise ConfigError(f"{path}: must be a number {'>= 0' if zero_ok else 'above 0'}, got {show(value)}")
    return float(value)


def text(value: object, path: str) -> str:
    """A non-empty string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: must be a non-empty string, got {show(value)}")
    return value.strip()


def string(value: object, path: str) -> str:
    """A string, possibly empty."""
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be a string, got {show(value)}")
    return value


def choice(value: object, path: str, choices: tuple[str, ...]) -> Any:
    """One of `choices`."""
    if value not in choices:
        raise ConfigError(f"{path}: must be one of {', '.join(choices)}, got {show(value)}")
    return value


def names(value: object, path: str) -> tuple[str, ...]:
    """A list of node ids or ips; an entry (or the whole value) may be a comma-separated string of several."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: must be a list of node ids or ips, got {show(value)}")
    out = tuple(part.strip() for v in value for part in v.split(",") if part.strip())
    if len(out) < len(value):
        raise ConfigError(f"{path}: must be a list of node ids or ips, got {show(value)}")
    return out


def ranks(value: object, path: str) -> tuple[int, ...]:
    """A list of rank numbers."""
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ConfigError(f"{path}: must be a list of rank numbers, got {show(value)}")
    return tuple(value)


def env_name(value: object, path: str) -> str:
    """An environment variable name, or "" for none."""
    if value == "":
        return ""
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ConfigError(f"{path}: must be an environment variable name, got {show(value)}")
    return value


def regex(value: object, path: str) -> str:
    """A regular expression that compiles."""
    try:
        re.compile(str(value))
    except re.error as exc:
        raise ConfigError(f"{path}: not a valid regular expression ({exc})") from None
    return str(value)
