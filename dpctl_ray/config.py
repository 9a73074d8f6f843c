"""The config file (DESIGN.md format): defaults < file < flags, every error naming its key path."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dpctl_ray.errors import BadInput
from dpctl_ray.files import load_document
from dpctl_ray.planner.model import PACKS, Placement

DEFAULT_FILE = "dpctl.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ConfigError(BadInput):
    """The config file or a flag has a wrong key, type or value."""

    default_code = "bad_config"


@dataclass(frozen=True, slots=True)
class LocalCluster:
    """The cluster `dpctl cluster up` (or `up` with nothing running) starts on this machine."""

    nodes: int = 2
    gpus_per_node: int = 4
    cpus_per_node: int = 2


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Where the Ray cluster is: auto | local | host:port | ray://host:port."""

    address: str = "auto"
    local: LocalCluster = field(default_factory=LocalCluster)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What runs on each rank."""

    kind: str = "demo"
    init_seconds: float = 1.0
    fail_ranks: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines, in seconds."""

    placement: float = 60.0
    ready: float = 600.0


@dataclass(frozen=True, slots=True)
class Config:
    """A whole deployment description; `source` is the file it came from, if any."""

    name: str = "demo"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    placement: Placement = field(default_factory=lambda: Placement(dp=2, tp=2))
    engine: EngineConfig = field(default_factory=EngineConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    source: str | None = None


_KEYS: Mapping[str, tuple[str, ...]] = {
    "": ("name", "cluster", "placement", "engine", "timeouts"),
    "cluster": ("address", "local"),
    "cluster.local": ("nodes", "gpus_per_node", "cpus_per_node"),
    "placement": ("dp", "dp_local", "tp", "pp", "pack", "device", "master", "nodes", "cpus"),
    "engine": ("kind", "init_seconds", "fail_ranks"),
    "timeouts": ("placement", "ready"),
}
ENGINE_KINDS = ("demo",)


def load_config(path: str | None) -> Config:
    """The config from `path`, else ./dpctl.yaml when present, else the built-in defaults."""
    if path is None:
        if not Path(DEFAULT_FILE).is_file():
            return Config()
        path = DEFAULT_FILE
    doc = load_document(path, what="config")
    if doc is None:
        doc = {}
    try:
        return config_from_document(doc, source=path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", hint=exc.hint) from None


def config_from_document(doc: object, source: str | None = None) -> Config:
    """Validate a config document over the defaults."""
    root = _section(doc, "")
    base = Config()
    cluster = _section(root.get("cluster", {}), "cluster")
    local = _section(cluster.get("local", {}), "cluster.local")
    placement = _section(root.get("placement", {}), "placement")
    engine = _section(root.get("engine", {}), "engine")
    timeouts = _section(root.get("timeouts", {}), "timeouts")
    return Config(
        name=deployment_name(root.get("name", base.name), "name"),
        cluster=ClusterConfig(
            address=_str(cluster.get("address", base.cluster.address), "cluster.address"),
            local=LocalCluster(
                nodes=_int(local.get("nodes", base.cluster.local.nodes), "cluster.local.nodes", minimum=0),
                gpus_per_node=_int(
                    local.get("gpus_per_node", base.cluster.local.gpus_per_node),
                    "cluster.local.gpus_per_node",
                    minimum=0,
                ),
                cpus_per_node=_int(
                    local.get("cpus_per_node", base.cluster.local.cpus_per_node), "cluster.local.cpus_per_node"
                ),
            ),
        ),
        placement=placement_overrides(base.placement, placement, prefix="placement."),
        engine=EngineConfig(
            kind=_choice(engine.get("kind", base.engine.kind), "engine.kind", ENGINE_KINDS),
            init_seconds=_number(
                engine.get("init_seconds", base.engine.init_seconds), "engine.init_seconds", zero_ok=True
            ),
            fail_ranks=_ranks(engine.get("fail_ranks", []), "engine.fail_ranks"),
        ),
        timeouts=Timeouts(
            placement=_number(timeouts.get("placement", base.timeouts.placement), "timeouts.placement"),
            ready=_number(timeouts.get("ready", base.timeouts.ready), "timeouts.ready"),
        ),
        source=source,
    )


def placement_overrides(base: Placement, values: Mapping[str, Any], prefix: str) -> Placement:
    """`base` with `values` applied (None = not given); `prefix` names keys in errors (`placement.` or `--`)."""

    def key(name: str) -> str:
        return prefix + (name.replace("_", "-") if prefix == "--" else name)

    changes: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in ("dp", "tp", "pp"):
            changes[name] = _int(_maybe_int(value), key(name))
        elif name == "dp_local":
            changes[name] = None if value == "auto" else _int(_maybe_int(value), key(name), expect="auto")
        elif name == "pack":
            changes[name] = _choice(value, key(name), PACKS)
        elif name in ("device", "master"):
            changes[name] = _str(value, key(name))
        elif name == "nodes":
            changes[name] = _names(value, key(name))
        elif name == "cpus":
            changes[name] = _number(_maybe_float(value), key(name))
    return replace(base, **changes)


def deployment_name(value: object, path: str) -> str:
    """Deployment names become Ray actor and group names: letters, digits, `-`, `_`, `.`."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(
            f"{path}: must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit, got {value!r}"
        )
    return value


def _section(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        where = path or "config"
        raise ConfigError(f"{where}: must be a mapping, got {_show(value)}")
    known = _KEYS[path]
    for key in value:
        if key not in known:
            full = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"{full}: unknown key", hint=hint)
    return value


def _maybe_int(value: object) -> object:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _maybe_float(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _int(value: object, path: str, minimum: int = 1, expect: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if expect:
            what = f"{expect} or {what}"
        raise ConfigError(f"{path}: must be {what}, got {_show(value)}")
    return value


def _number(value: object, path: str, *, zero_ok: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        raise ConfigError(f"{path}: must be a number {'>= 0' if zero_ok else 'above 0'}, got {_show(value)}")
    return float(value)


def _str(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: must be a non-empty string, got {_show(value)}")
    return value.strip()


def _choice(value: object, path: str, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise ConfigError(f"{path}: must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _names(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{path}: must be a list of node ids or ips, got {_show(value)}")
    return tuple(v.strip() for v in value)


def _ranks(value: object, path: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ConfigError(f"{path}: must be a list of rank numbers, got {_show(value)}")
    return tuple(value)


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (dict, Mapping)):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
