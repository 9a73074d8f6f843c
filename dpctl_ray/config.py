"""The config file (DESIGN.md format): defaults < file < flags, every error naming its key path."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dpctl_ray import envsubst, values
from dpctl_ray.engines.spec import DemoSpec, EngineSpec, engine_from_document
from dpctl_ray.errors import BadInput, ConfigError
from dpctl_ray.files import load_document
from dpctl_ray.planner.checks import MAX_CPUS, MAX_WORLD_SIZE
from dpctl_ray.planner.labels import MAX_SELECTORS, LabelError, LabelMatch, check_key, parse_flag
from dpctl_ray.planner.model import LAYOUTS, NAME_RULE, PACKS, SPARES_MODES, Placement, valid_name

DEFAULT_FILE = "dpctl.yaml"
MAX_LOCAL_NODES = 64  # each simulated node is a few Ray processes on this machine
MAX_LOCAL_DEVICES = 1024


@dataclass(frozen=True, slots=True)
class PlacementKey:
    """One placement option: its key under `placement:` (and Placement field), its flag's help, and its check."""

    name: str
    help: str
    metavar: str
    check: Callable[[object, str], object]  # (value from YAML or a flag's text, key path) -> the field's value
    many: bool = False  # the flag may be repeated (a list)

    @property
    def flag(self) -> str:
        """The command-line flag: --dp-local for dp_local."""
        return "--" + self.name.replace("_", "-")


def _dp_local(value: object, path: str) -> int | None:
    return None if value == "auto" else values.integer(value, path, expect="auto")


def _select(value: object, path: str) -> tuple[LabelMatch, ...]:
    """Label selectors: a mapping {KEY: VALUE} from the file, or KEY=VALUE texts from repeated flags."""
    hint = "e.g. zone=a, zone!=a, zone=in(a,b)"
    if isinstance(value, Mapping):
        given: list[Any] = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        given = list(value)
    else:
        raise ConfigError(f"{path}: must map label names to values ({{zone: a}}), got {values.show(value)}", hint=hint)
    if len(given) > MAX_SELECTORS:
        raise ConfigError(f"{path}: gives {len(given)} selectors; dpctl takes at most {MAX_SELECTORS}")
    try:
        matches = [LabelMatch.parse(*item) if isinstance(item, tuple) else parse_flag(item) for item in given]
    except LabelError as exc:
        raise ConfigError(f"{path}: {exc}", hint=hint) from None
    return tuple(matches)  # a label selected twice is refused by check_spec, with the key as the user gave it


def _label(value: object, path: str) -> str:
    try:
        return check_key(values.text(value, path))
    except LabelError as exc:
        raise ConfigError(f"{path}: {exc}", hint="e.g. zone, rack or ray.io/gpu-domain") from None


# Adding a placement option means adding its Placement field and one entry here: the config key, the flag of
# `plan` and `up`, and the check follow from it.
PLACEMENT_KEYS: tuple[PlacementKey, ...] = (
    PlacementKey("dp", "Data-parallel ranks.", "N", values.integer),
    PlacementKey("dp_local", "Ranks on the master node: a number or auto.", "N|auto", _dp_local),
    PlacementKey("tp", "Tensor-parallel size.", "N", lambda v, p: values.integer(v, p, maximum=MAX_WORLD_SIZE)),
    PlacementKey("pp", "Pipeline-parallel size.", "N", lambda v, p: values.integer(v, p, maximum=MAX_WORLD_SIZE)),
    PlacementKey("pack", "strict, fill or span.", "MODE", lambda v, p: values.choice(v, p, PACKS)),
    PlacementKey("device", "Ray resource of one device (GPU).", "KEY", values.text),
    PlacementKey("master", "auto, a node id or an ip.", "NODE", values.text),
    PlacementKey("nodes", "Allowed node ids or ips (comma-separated or repeated).", "NODES", values.names, many=True),
    PlacementKey("cpus", "CPUs of the control bundle (1).", "CPUS", lambda v, p: values.number(v, p, maximum=MAX_CPUS)),
    PlacementKey(
        "bundles",
        "per_node (one bundle per node of a rank) or per_device (the seed's layout).",
        "LAYOUT",
        lambda v, p: values.choice(v, p, LAYOUTS),
    ),
    PlacementKey(
        "select",
        "Only nodes whose labels match (KEY=VALUE, KEY!=VALUE, KEY=in(a,b); repeat).",
        "SEL",
        _select,
        many=True,
    ),
    PlacementKey("within", "Keep the whole deployment inside one value of this label.", "LABEL", _label),
    PlacementKey("rank_within", "Keep each rank's nodes inside one value of this label.", "LABEL", _label),
    PlacementKey("spread", "Spread ranks evenly across the values of this label.", "LABEL", _label),
    PlacementKey(
        "spares",
        "Rank-sized reservations beyond dp that repair and scale-up take first (0).",
        "K",
        lambda v, p: values.integer(v, p, minimum=0),
    ),
    PlacementKey(
        "spares_mode",
        "reserved (placement groups) or started (also idle engine hosts: a lost rank takes one over at once).",
        "MODE",
        lambda v, p: values.choice(v, p, SPARES_MODES),
    ),
)


@dataclass(frozen=True, slots=True)
class LocalCluster:
    """The cluster `dpctl cluster up` (or `up` with nothing running) starts on this machine."""

    nodes: int = 2
    gpus_per_node: int = 4
    cpus_per_node: int = 2
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # node name -> its custom labels


def local_labels(value: object, path: str) -> dict[str, dict[str, str]]:
    """Node labels for the local cluster: {worker-1: {zone: a}} from the file, or `worker-1:zone=a,...` as text.

    Keys and values follow Ray's label rules; Ray keeps the `ray.io/` prefix for its own labels.
    """
    hint = "e.g. worker-1:zone=a,worker-2:zone=b (node names as `dpctl cluster status` lists them)"
    pairs: list[tuple[str, str, object]] = []
    if isinstance(value, str):
        for item in filter(None, (part.strip() for part in value.split(","))):
            node, colon, pair = item.partition(":")
            key, eq, text = pair.partition("=")
            if not colon or not eq:
                raise ConfigError(f"{path}: {values.show(item)} is not NODE:KEY=VALUE", hint=hint)
            pairs.append((node.strip(), key.strip(), text.strip()))
    elif isinstance(value, Mapping):
        for node, labels in value.items():
            if not isinstance(labels, Mapping):
                raise ConfigError(
                    f"{path}.{node}: must map label names to values, got {values.show(labels)}", hint=hint
                )
            pairs += [(str(node), str(k), v) for k, v in labels.items()]
    else:
        raise ConfigError(f"{path}: must map node names to their labels, got {values.show(value)}", hint=hint)
    out: dict[str, dict[str, str]] = {}
    for node, key, label_value in pairs:
        if node != "head" and not re.fullmatch(r"worker-[1-9][0-9]{0,2}", node):
            raise ConfigError(f"{path}: {values.show(node)} is not a node of the local cluster", hint=hint)
        try:
            match = LabelMatch.parse(key, label_value)
        except LabelError as exc:
            raise ConfigError(f"{path}.{node}: {exc}", hint=hint) from None
        if key.startswith("ray.io/") or match.negate or len(match.values) != 1:
            raise ConfigError(
                f"{path}.{node}: {values.show(key)}={values.show(label_value)} is not a plain label",
                hint="Ray keeps ray.io/ labels for itself; give a name and one value",
            )
        out.setdefault(node, {})[key] = match.values[0]
    return out


@dataclass(frozen=True, slots=True)
class RuntimeEnv:
    """`cluster.runtime_env`: what Ray sets up for the engines on every node (paths absolute, URIs as given)."""

    env_vars: tuple[tuple[str, str], ...] = ()
    pip: tuple[str, ...] = ()
    working_dir: str | None = None
    py_modules: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.env_vars or self.pip or self.working_dir or self.py_modules)

    def to_document(self) -> dict[str, Any]:
        """The keys given, as in the config file (for comparing a new `up` with what runs)."""
        doc: dict[str, Any] = {}
        if self.env_vars:
            doc["env_vars"] = dict(self.env_vars)
        if self.pip:
            doc["pip"] = list(self.pip)
        if self.working_dir:
            doc["working_dir"] = self.working_dir
        if self.py_modules:
            doc["py_modules"] = list(self.py_modules)
        return doc


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Where the Ray cluster is: auto | local | host:port | ray://host:port; and the engines' runtime_env."""

    address: str = "auto"
    local: LocalCluster = field(default_factory=LocalCluster)
    runtime_env: RuntimeEnv = field(default_factory=RuntimeEnv)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines, in seconds."""

    placement: float = 60.0
    ready: float = 600.0


RECOVERY_MODES = ("manual", "auto")


@dataclass(frozen=True, slots=True)
class Recovery:
    """`recovery:`: manual (only `dpctl repair` acts) or auto (a supervisor repairs), and auto's budget."""

    mode: str = "manual"
    max_repairs: int = 3  # repairs at most in `window` seconds; then the supervisor stops and says why
    window: float = 600.0


@dataclass(frozen=True, slots=True)
class Config:
    """A whole deployment description; `source` is the file it came from, if any."""

    name: str = "demo"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    placement: Placement = field(default_factory=lambda: Placement(dp=2, tp=2))
    engine: EngineSpec = field(default_factory=DemoSpec)
    timeouts: Timeouts = field(default_factory=Timeouts)
    recovery: Recovery = field(default_factory=Recovery)
    source: str | None = None
    spelled: Mapping[str, str] = field(default_factory=dict)  # placement keys given as flags: name -> flag
    named: bool = False  # the name was given (in the file or by --name), not the default


_KEYS: Mapping[str, tuple[str, ...]] = {
    "": ("name", "cluster", "placement", "engine", "timeouts", "recovery"),
    "recovery": ("mode", "max_repairs", "window"),
    "cluster": ("address", "local", "runtime_env"),
    "cluster.local": ("nodes", "gpus_per_node", "cpus_per_node", "labels"),
    "cluster.runtime_env": ("env_vars", "pip", "working_dir", "py_modules"),
    "placement": tuple(k.name for k in PLACEMENT_KEYS),
    "timeouts": ("placement", "ready"),
}


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
        return config_from_document(envsubst.expand(doc, os.environ), source=path)
    except BadInput as exc:
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from None


def config_from_document(doc: object, source: str | None = None) -> Config:
    """Validate a config document over the defaults."""
    root = _section(doc, "")
    base = Config()
    cluster = _section(root.get("cluster", {}), "cluster")
    local = _section(cluster.get("local", {}), "cluster.local")
    placement = _section(root.get("placement", {}), "placement")
    timeouts = _section(root.get("timeouts", {}), "timeouts")
    recovery = _section(root.get("recovery", {}), "recovery")
    shape = base.cluster.local
    return Config(
        name=deployment_name(root.get("name", base.name), "name"),
        named="name" in root,
        cluster=ClusterConfig(
            address=values.text(cluster.get("address", base.cluster.address), "cluster.address"),
            local=LocalCluster(
                nodes=values.integer(
                    local.get("nodes", shape.nodes), "cluster.local.nodes", minimum=0, maximum=MAX_LOCAL_NODES
                ),
                gpus_per_node=values.integer(
                    local.get("gpus_per_node", shape.gpus_per_node),
                    "cluster.local.gpus_per_node",
                    minimum=0,
                    maximum=MAX_LOCAL_DEVICES,
                ),
                cpus_per_node=values.integer(
                    local.get("cpus_per_node", shape.cpus_per_node),
                    "cluster.local.cpus_per_node",
                    maximum=MAX_LOCAL_DEVICES,
                ),
                labels=local_labels(local.get("labels", {}), "cluster.local.labels"),
            ),
            runtime_env=runtime_env(cluster.get("runtime_env", {}), source),
        ),
        placement=placement_overrides(base.placement, placement, prefix="placement."),
        engine=engine_from_document(root.get("engine", {})),
        timeouts=Timeouts(
            placement=values.seconds(timeouts.get("placement", base.timeouts.placement), "timeouts.placement"),
            ready=values.seconds(timeouts.get("ready", base.timeouts.ready), "timeouts.ready"),
        ),
        recovery=Recovery(
            mode=values.choice(recovery.get("mode", base.recovery.mode), "recovery.mode", RECOVERY_MODES),
            max_repairs=values.integer(recovery.get("max_repairs", base.recovery.max_repairs), "recovery.max_repairs"),
            window=values.seconds(recovery.get("window", base.recovery.window), "recovery.window"),
        ),
        source=source,
    )


def runtime_env(doc: object, source: str | None) -> RuntimeEnv:
    """`cluster.runtime_env`, checked; local paths are relative to the config file and must exist."""
    section = _section(doc, "cluster.runtime_env")
    base = Path(source).resolve().parent if source else Path.cwd()
    path = "cluster.runtime_env"
    env_vars = section.get("env_vars", {})
    if not isinstance(env_vars, Mapping):
        raise ConfigError(f"{path}.env_vars: must map variable names to values, got {values.show(env_vars)}")
    pairs = []
    for key, value in env_vars.items():
        values.env_name(key, f"{path}.env_vars")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}.env_vars.{key}: must be a string, got {values.show(value)}")
        pairs.append((str(key), values.no_nul(str(value), f"{path}.env_vars.{key}")))
    pip = section.get("pip", [])
    if not isinstance(pip, list) or (not pip and "pip" in section):
        raise ConfigError(
            f"{path}.pip: must be a list of requirements, got {values.show(pip)}", hint='e.g. ["vllm==0.33.0"]'
        )
    requirements = tuple(values.text(r, f"{path}.pip[{i}]") for i, r in enumerate(pip))
    working_dir = section.get("working_dir")
    modules = section.get("py_modules", [])
    if not isinstance(modules, list):
        raise ConfigError(f"{path}.py_modules: must be a list of paths or URIs, got {values.show(modules)}")
    return RuntimeEnv(
        env_vars=tuple(pairs),
        pip=requirements,
        working_dir=None
        if working_dir is None
        else _local_path(working_dir, f"{path}.working_dir", base, dir_only=True),
        py_modules=tuple(_local_path(m, f"{path}.py_modules[{i}]", base) for i, m in enumerate(modules)),
    )


def _local_path(value: object, path: str, base: Path, *, dir_only: bool = False) -> str:
    """A URI as given (Ray fetches it), or a local path made absolute, which must exist here."""
    text = values.text(value, path)
    if "://" in text:
        return text
    where = (base / text).resolve()
    if (dir_only and not where.is_dir()) or not where.exists():
        kind = "a directory" if dir_only else "a directory or a .py file"
        raise ConfigError(
            f"{path}: {text} is not {kind} (looked at {where})", hint="paths are relative to the config file"
        )
    if not dir_only and where.is_file() and where.suffix != ".py":
        raise ConfigError(
            f"{path}: {text} is a file but not a .py module", hint="give a package directory or a .py file"
        )
    return str(where)


def placement_overrides(base: Placement, given: Mapping[str, Any], prefix: str) -> Placement:
    """`base` with the `given` values checked and applied (None = not given); `prefix` names keys in errors.

    The prefix is `placement.` for the config file and `--` for flags (where dp_local is --dp-local).
    """
    changes: dict[str, Any] = {}
    for key in PLACEMENT_KEYS:
        value = given.get(key.name)
        if value is not None:
            path = key.flag if prefix == "--" else prefix + key.name
            changes[key.name] = key.check(value, path)
    return replace(base, **changes)


def deployment_name(value: object, path: str) -> str:
    """Deployment names become Ray actor and group names, and a directory on every node (NAME_RULE)."""
    if not valid_name(value):
        raise ConfigError(f"{path}: must be {NAME_RULE}, got {values.show(value)}")
    return value


def _section(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        where = path or "config"
        raise ConfigError(f"{where}: must be a mapping, got {values.show(value)}")
    known = _KEYS[path]
    for key, given in value.items():
        full = f"{path}.{key}" if path else values.show(key)[1:-1] if isinstance(key, str) else values.show(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"{full}: unknown key", hint=hint)
        if given is None:
            raise ConfigError(f"{full}: is empty (null)", hint="give a value, or leave the key out for its default")
    return value
