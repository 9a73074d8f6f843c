"""The config file (DESIGN.md format): defaults < file < flags, every error naming its key path."""

from __future__ import annotations

import difflib
import math
import re
import string
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
class ReadyCheck:
    """When a command engine counts as ready: a log line matching, an HTTP 2xx, or a TCP port open."""

    kind: str  # log | http | tcp
    target: str  # a regex, a URL or a port, the last two templated


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What runs on each rank: the demo engine, a command per rank, or a user's Python engine class."""

    kind: str = "demo"
    # demo
    init_seconds: float = 1.0
    fail_ranks: tuple[int, ...] = ()
    # command
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ready: ReadyCheck | None = None
    progress: str = ""  # regex: matching log lines are progress (a `pct` group gives the percentage)
    visible_devices_env: str = ""  # default by device key: CUDA_VISIBLE_DEVICES for GPU, ...
    stop_grace: float = 10.0
    cwd: str = ""
    # python
    cls: str = ""  # "package.module:Class"
    args: tuple[tuple[str, Any], ...] = ()
    # every kind
    log_dir: str = "/tmp/dpctl-logs"  # noqa: S108 - a per-node scratch dir, like Ray's own /tmp/ray; on each node: <log_dir>/<deployment>/rank-<r>.log
    base_port: int = 0  # {port} = base_port + local_rank; 0: a free port per rank
    master_port: int = 0  # {master_port}; 0: derived from the deployment name

    def to_document(self) -> dict[str, Any]:
        """The form engines receive and deployment records keep: the keys of this kind only."""
        doc: dict[str, Any] = {"kind": self.kind}
        if self.kind == "demo":
            doc.update(init_seconds=self.init_seconds, fail_ranks=list(self.fail_ranks))
        elif self.kind == "command":
            doc.update(
                argv=list(self.argv),
                env=dict(self.env),
                ready={self.ready.kind: self.ready.target} if self.ready else None,
                progress=self.progress,
                visible_devices_env=self.visible_devices_env,
                stop_grace=self.stop_grace,
                cwd=self.cwd,
            )
        else:
            doc.update({"class": self.cls, "args": dict(self.args)})
        doc.update(log_dir=self.log_dir, base_port=self.base_port, master_port=self.master_port)
        return doc


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
    "engine": (
        "kind",
        "init_seconds",
        "fail_ranks",
        "argv",
        "env",
        "ready",
        "progress",
        "visible_devices_env",
        "stop_grace",
        "cwd",
        "class",
        "args",
        "log_dir",
        "base_port",
        "master_port",
    ),
    "timeouts": ("placement", "ready"),
}
ENGINE_KINDS = ("demo", "command", "python")
_KIND_KEYS = {
    "demo": {"init_seconds", "fail_ranks"},
    "command": {"argv", "env", "ready", "progress", "visible_devices_env", "stop_grace", "cwd"},
    "python": {"class", "args"},
}
COMMON_ENGINE_KEYS = {"kind", "log_dir", "base_port", "master_port"}
PLACEHOLDERS = (
    "deployment",
    "rank",
    "local_rank",
    "dp",
    "dp_local",
    "world_size",
    "tp",
    "pp",
    "master_ip",
    "master_port",
    "node_ip",
    "port",
    "devices",
)


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
        engine=engine_config(engine),
        timeouts=Timeouts(
            placement=_number(timeouts.get("placement", base.timeouts.placement), "timeouts.placement"),
            ready=_number(timeouts.get("ready", base.timeouts.ready), "timeouts.ready"),
        ),
        source=source,
    )


def engine_config(raw: Mapping[str, Any]) -> EngineConfig:
    """The engine section, checked for its kind: keys of another kind, bad templates and bad values name the key."""
    base = EngineConfig()
    kind = _choice(raw.get("kind", base.kind), "engine.kind", ENGINE_KINDS)
    for key in raw:
        if key not in COMMON_ENGINE_KEYS and key not in _KIND_KEYS[kind]:
            owner = next(k for k, keys in _KIND_KEYS.items() if key in keys)
            raise ConfigError(f"engine.{key}: only for engine.kind {owner}, not {kind}")
    argv: tuple[str, ...] = ()
    ready = None
    if kind == "command":
        if "argv" not in raw:
            raise ConfigError("engine.argv: required for engine.kind command", hint="a list: [program, arg, ...]")
        raw_argv = raw["argv"]
        plain = isinstance(raw_argv, list) and all(isinstance(a, (str, int, float)) for a in raw_argv)
        if not plain or not raw_argv:
            raise ConfigError(
                f"engine.argv: must be a non-empty list of strings, got {_show(raw_argv)}",
                hint="a list, never a shell string: [vllm, serve, MODEL, --port, '{port}']",
            )
        argv = tuple(str(a) for a in raw_argv)
        for i, arg in enumerate(argv):
            check_template(arg, f"engine.argv[{i}]")
        if "ready" not in raw:
            raise ConfigError(
                "engine.ready: required for engine.kind command",
                hint="{log: REGEX}, {http: URL} or {tcp: PORT}, e.g. {http: 'http://{node_ip}:{port}/health'}",
            )
        ready = _ready(raw["ready"])
    env = _env(raw.get("env", {}))
    if raw.get("progress"):
        _regex(raw["progress"], "engine.progress")
    cls = raw.get("class", "")
    if kind == "python" and (not isinstance(cls, str) or ":" not in cls):
        raise ConfigError(f'engine.class: must be "package.module:Class", got {_show(cls)}')
    args = raw.get("args", {})
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise ConfigError(f"engine.args: must map argument names to values, got {_show(args)}")
    return EngineConfig(
        kind=kind,
        init_seconds=_number(raw.get("init_seconds", base.init_seconds), "engine.init_seconds", zero_ok=True),
        fail_ranks=_ranks(raw.get("fail_ranks", []), "engine.fail_ranks"),
        argv=argv,
        env=env,
        ready=ready,
        progress=str(raw.get("progress", "")),
        visible_devices_env=_env_name(raw.get("visible_devices_env", ""), "engine.visible_devices_env"),
        stop_grace=_number(raw.get("stop_grace", base.stop_grace), "engine.stop_grace", zero_ok=True),
        cwd=str(raw.get("cwd", "")),
        cls=str(cls),
        args=tuple(args.items()),
        log_dir=_str(raw.get("log_dir", base.log_dir), "engine.log_dir"),
        base_port=_int(raw.get("base_port", base.base_port), "engine.base_port", minimum=0),
        master_port=_int(raw.get("master_port", base.master_port), "engine.master_port", minimum=0),
    )


def check_template(text: str, path: str) -> None:
    """A templated string may use only the known placeholders; an unknown one is named with the key path."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{path}: bad template {text!r} ({exc})", hint="write a literal brace as {{ or }}") from None
    for name in fields:
        base = name.split(".")[0].split("[")[0]
        if base not in PLACEHOLDERS:
            close = difflib.get_close_matches(base, PLACEHOLDERS, n=1)
            hint = f"did you mean {{{close[0]}}}?" if close else f"placeholders: {', '.join(PLACEHOLDERS)}"
            raise ConfigError(f"{path}: unknown placeholder {{{name}}} in {text!r}", hint=hint)


def _ready(raw: object) -> ReadyCheck:
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("log", "http", "tcp"):
        raise ConfigError(
            f"engine.ready: must be one of {{log: REGEX}}, {{http: URL}} or {{tcp: PORT}}, got {_show(raw)}"
        )
    kind, target = next(iter(raw.items()))
    target = str(target)
    if kind == "log":
        _regex(target, "engine.ready.log")
    else:
        check_template(target, f"engine.ready.{kind}")
    if kind == "http" and not target.startswith(("http://", "https://")):
        raise ConfigError(f"engine.ready.http: must be an http:// or https:// URL, got {target!r}")
    return ReadyCheck(kind, target)


def _env(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"engine.env: must map variable names to values, got {_show(raw)}")
    out = []
    for key, value in raw.items():
        _env_name(key, "engine.env")
        text = str(value)
        check_template(text, f"engine.env.{key}")
        out.append((str(key), text))
    return tuple(out)


def _env_name(value: object, path: str) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
        raise ConfigError(f"{path}: must be an environment variable name, got {_show(value)}")
    return value


def _regex(value: object, path: str) -> None:
    try:
        re.compile(str(value))
    except re.error as exc:
        raise ConfigError(f"{path}: not a valid regular expression ({exc})") from None


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
