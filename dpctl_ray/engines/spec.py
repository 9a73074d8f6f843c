"""Each engine kind's settings as one typed spec, its defaults in one place, read from the `engine:` section.

The same reader serves the config file (errors name the key path) and deployment records; the engine host
on each node receives the typed spec itself.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from dpctl_ray import values
from dpctl_ray.engines.template import ReadyCheck, check_template
from dpctl_ray.errors import ConfigError

LOG_DIR = "/tmp/dpctl-logs"  # noqa: S108 - a per-node scratch dir, like Ray's own /tmp/ray

Coupling = Literal["independent", "group"]
ProcessLayout = Literal["per_rank", "per_node"]
Api = Literal["all", "first"]


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What every kind has: where ranks log, and the ports their placeholders stand for."""

    kind: ClassVar[str] = ""
    # On each node, a rank logs to <log_dir>/<deployment>/rank-<r>.log.
    log_dir: str = LOG_DIR
    base_port: int = 0  # {port} = base_port + local_rank; 0: a free port per rank
    master_port: int = 0  # {master_port}; 0: derived from the deployment name
    # independent: a rank is added, removed or replaced alone; group: the ranks start together and restart
    # together when the size changes or one is replaced (MoE data parallelism: rank 0 waits for every rank).
    coupling: Coupling = "independent"

    def stop_seconds(self) -> float:
        """Seconds an engine gets to stop before it is killed (only a command's process needs any)."""
        return 0.0

    def to_document(self) -> dict[str, Any]:
        """The `engine:` section this spec reads back from: the keys of its kind only."""
        doc: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ReadyCheck):
                value = {value.kind: value.target}
            elif f.name in _PAIRS:
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            doc[_key(f.name)] = value
        return doc


@dataclass(frozen=True, slots=True)
class DemoSpec(EngineSpec):
    """The demo engine: simulated loading, and ranks that fail on purpose (drills, tests)."""

    kind: ClassVar[str] = "demo"
    init_seconds: float = 1.0
    fail_ranks: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandSpec(EngineSpec):
    """A real process per rank, e.g. `vllm serve`: its argv and env templates and how to tell it is ready."""

    kind: ClassVar[str] = "command"
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ready: ReadyCheck | None = None
    progress: str = ""  # regex: matching log lines are progress (a `pct` group gives the percentage)
    # The variable that lists a process's devices; "" picks it by device key (CUDA_VISIBLE_DEVICES for GPU),
    # "none" sets none (pass {devices} on the command line instead, as vLLM's --device-ids takes them).
    visible_devices_env: str = ""
    stop_grace: float = 10.0  # SIGTERM, then SIGKILL after this many seconds
    cwd: str = ""
    processes: ProcessLayout = "per_rank"  # per_rank: one per node of each rank; per_node: one per node for its ranks
    api: Api = "all"  # which processes serve: all, or only the first (of the group, or of each independent rank)
    headless_args: tuple[str, ...] = ()  # added to the argv of every process that does not serve

    def stop_seconds(self) -> float:
        """Seconds between SIGTERM and SIGKILL."""
        return self.stop_grace


@dataclass(frozen=True, slots=True)
class PythonSpec(EngineSpec):
    """A user's engine class, "package.module:Class", built with `args`."""

    kind: ClassVar[str] = "python"
    cls: str = ""
    args: tuple[tuple[str, Any], ...] = ()


KINDS: Mapping[str, type[EngineSpec]] = {s.kind: s for s in (DemoSpec, CommandSpec, PythonSpec)}
_FIELD_KEYS = {"cls": "class"}  # field names that differ from their config keys
_PAIRS = {"env", "args"}  # fields kept as pairs, written as mappings
COMMON_KEYS = ("kind", *(_FIELD_KEYS.get(f.name, f.name) for f in fields(EngineSpec)))


def _key(field_name: str) -> str:
    return _FIELD_KEYS.get(field_name, field_name)


def kind_keys(kind: type[EngineSpec]) -> tuple[str, ...]:
    """The config keys of one kind, beyond the common ones."""
    return tuple(_key(f.name) for f in fields(kind) if _key(f.name) not in COMMON_KEYS)


ALL_KEYS = (*COMMON_KEYS, *(k for spec in KINDS.values() for k in kind_keys(spec)))


def engine_from_document(raw: object, path: str = "engine") -> EngineSpec:
    """The `engine:` section checked for its kind: keys of another kind, bad templates and bad values name the key.

    Only the keys given are passed on, so every default is the spec's own.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must be a mapping, got {values.show(raw)}")
    kind = values.choice(raw.get("kind", DemoSpec.kind), f"{path}.kind", tuple(KINDS))
    spec = KINDS[kind]
    own = set(COMMON_KEYS) | set(kind_keys(spec))
    for key in raw:
        if key in own:
            if raw[key] is None:
                raise ConfigError(f"{path}.{key}: is empty (null)", hint="give a value, or leave the key out")
            continue
        owner = next((k for k, s in KINDS.items() if key in kind_keys(s)), None)
        if owner is not None:
            raise ConfigError(f"{path}.{key}: only for engine.kind {owner}, not {kind}")
        close = difflib.get_close_matches(str(key), ALL_KEYS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(ALL_KEYS)}"
        raise ConfigError(f"{path}.{key}: unknown key", hint=hint)
    if spec is CommandSpec:
        for required, hint in (
            ("argv", "a list: [program, arg, ...]"),
            ("ready", "{log: REGEX}, {http: URL} or {tcp: PORT}, e.g. {http: 'http://{node_ip}:{port}/health'}"),
        ):
            if required not in raw:
                raise ConfigError(f"{path}.{required}: required for engine.kind command", hint=hint)
    if spec is PythonSpec and "class" not in raw:
        raise ConfigError(f'{path}.class: required for engine.kind python: "package.module:Class"')
    checks = _CHECKS
    given = {
        f.name: checks[_key(f.name)](raw[_key(f.name)], f"{path}.{_key(f.name)}")
        for f in fields(spec)
        if _key(f.name) in raw
    }
    engine = spec(**given)
    if isinstance(engine, CommandSpec) and engine.processes == "per_node" and engine.coupling != "group":
        raise ConfigError(
            f"{path}.processes: per_node runs one process for several ranks, so they restart together",
            hint="set engine.coupling: group (vLLM's hybrid and internal load balancing are group-coupled)",
        )
    return engine


def _argv(raw: object, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"{path}: must be a non-empty list of strings, got {values.show(raw)}",
            hint="a list, never a shell string: [vllm, serve, MODEL, --port, '{port}']",
        )
    return _arguments(raw, path)


def _argv_tail(raw: object, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: must be a list of arguments, got {values.show(raw)}")
    return _arguments(raw, path)


def _arguments(raw: list[object], path: str) -> tuple[str, ...]:
    """Each argument a string (a number is written as one), checked as a template; a bad one named by its index."""
    out = []
    for i, arg in enumerate(raw):
        if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
            raise ConfigError(f"{path}[{i}]: must be a string, got {values.show(arg)}")
        text = values.no_nul(str(arg), f"{path}[{i}]")
        check_template(text, f"{path}[{i}]")
        out.append(text)
    return tuple(out)


def _python_class(raw: object, path: str) -> str:
    if not isinstance(raw, str) or ":" not in raw:
        raise ConfigError(f'{path}: must be "package.module:Class", got {values.show(raw)}')
    return raw


def _args(raw: object, path: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{path}: must map argument names to values, got {values.show(raw)}")
    return tuple(raw.items())


def _ready(raw: object, path: str) -> ReadyCheck:
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("log", "http", "tcp"):
        raise ConfigError(
            f"{path}: must be one of {{log: REGEX}}, {{http: URL}} or {{tcp: PORT}}, got {values.show(raw)}"
        )
    kind, target = next(iter(raw.items()))
    where = f"{path}.{kind}"
    if kind == "tcp" and isinstance(target, int) and not isinstance(target, bool):
        target = str(values.integer(target, where, maximum=values.MAX_PORT))
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}: must be a non-empty string, got {values.show(target)}")
    if kind == "log":
        values.regex(target, where)
        return ReadyCheck(kind, target)
    check_template(target, where)
    if kind == "http" and not target.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: must be an http:// or https:// URL, got {values.quoted(target)}")
    if kind == "tcp" and "{" not in (port := target.rpartition(":")[2]):
        values.integer(port, f"{where} (port)", maximum=values.MAX_PORT)
    return ReadyCheck(kind, target)


def _env(raw: object, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must map variable names to values, got {values.show(raw)}")
    out = []
    for key, value in raw.items():
        values.env_name(key, path)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}.{key}: must be a string, got {values.show(value)}")
        rendered = values.no_nul(str(value), f"{path}.{key}")
        check_template(rendered, f"{path}.{key}")
        out.append((str(key), rendered))
    return tuple(out)


# One check per config key of any kind: (value, key path) -> the field's value.
_CHECKS: Mapping[str, Callable[[Any, str], Any]] = {
    "log_dir": values.text,
    "base_port": values.port,
    "master_port": values.port,
    "init_seconds": lambda v, p: values.seconds(v, p, zero_ok=True),
    "fail_ranks": values.ranks,
    "argv": _argv,
    "env": _env,
    "ready": _ready,
    "progress": lambda v, p: values.regex(v, p) if v != "" else "",
    "visible_devices_env": lambda v, p: v if v in ("", "none") else values.env_name(v, p),
    "coupling": lambda v, p: values.choice(v, p, ("independent", "group")),
    "processes": lambda v, p: values.choice(v, p, ("per_rank", "per_node")),
    "api": lambda v, p: values.choice(v, p, ("all", "first")),
    "headless_args": _argv_tail,
    "stop_grace": lambda v, p: values.seconds(v, p, zero_ok=True),
    "cwd": lambda v, p: "" if v == "" else values.text(v, p),
    "class": _python_class,
    "args": _args,
}
