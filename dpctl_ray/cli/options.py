"""Flags shared by the commands, and how they override the config file."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer

from dpctl_ray.cli import console
from dpctl_ray.config import (
    PLACEMENT_KEYS,
    Config,
    PlacementKey,
    deployment_name,
    load_config,
    placement_overrides,
)
from dpctl_ray.engines.base import EngineError
from dpctl_ray.engines.loader import declared_layout, load_engine_class
from dpctl_ray.engines.spec import PythonSpec
from dpctl_ray.errors import BadInput, ConfigError
from dpctl_ray.planner import check_spec
from dpctl_ray.values import seconds

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from dpctl_ray.config import ClusterConfig
    from dpctl_ray.launcher.session import Session

PLACEMENT = "Placement (override the config file)"
R = TypeVar("R")


class Output(str, Enum):
    """How a command prints its data on stdout."""

    table = "table"
    json = "json"
    yaml = "yaml"


def _remember_output(ctx: typer.Context, value: Output) -> str:
    # Every command with -o tells the error boundary's Invocation, so that its errors come as documents too.
    if isinstance(ctx.obj, console.Invocation):
        ctx.obj.json_errors = value is not Output.table
    return value.value  # Typer converts what a callback returns to the enum again


ConfigFile = Annotated[
    Optional[str],
    typer.Option("-f", "--file", help="Config file (default: ./dpctl.yaml when present).", metavar="FILE"),
]
ConfigFileLongOnly = Annotated[  # for `logs`, where -f means --follow as in tail -f
    Optional[str],
    typer.Option("--file", help="Config file (default: ./dpctl.yaml when present).", metavar="FILE"),
]
Name = Annotated[
    Optional[str], typer.Option("--name", help="Deployment name (default: from the config, else demo).", metavar="NAME")
]
Address = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        help="Ray cluster: HOST:PORT, ray://HOST:PORT, auto or local (default: config, RAY_ADDRESS, local cluster).",
        metavar="ADDR",
    ),
]
OutputOpt = Annotated[
    Output, typer.Option("-o", "--output", help="Output format.", case_sensitive=False, callback=_remember_output)
]


def _flag(key: PlacementKey) -> Any:
    # Values are taken as text and checked by the config layer, so a flag and a config key fail with the same words.
    kind = Optional[list[str]] if key.many else Optional[str]
    return Annotated[kind, typer.Option(key.flag, help=key.help, metavar=key.metavar, rich_help_panel=PLACEMENT)]


def placement_flags(command: Callable[..., R]) -> Callable[..., R]:
    """Give a command one flag per placement key; it receives the values given as `placement={name: value}`."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "placement"]
    flags = [
        inspect.Parameter(key.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_flag(key))
        for key in PLACEMENT_KEYS
    ]

    def run(**given: Any) -> R:
        placement = {key.name: given.pop(key.name) for key in PLACEMENT_KEYS}
        return command(**given, placement=placement)

    run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
    run.__signature__ = signature.replace(parameters=[*kept, *flags])  # type: ignore[attr-defined]
    return run


def given_flags(placement: Mapping[str, object]) -> list[str]:
    """The placement flags that were given, as typed (for messages)."""
    return [key.flag for key in PLACEMENT_KEYS if placement.get(key.name) is not None]


def resolve_config(
    file: str | None,
    *,
    name: str | None = None,
    address: str | None = None,
    placement: Mapping[str, object] | None = None,
) -> Config:
    """The config file (or defaults) with the flags that were given laid over it, checked as a whole.

    Errors name each key as the user gave it: `--dp-local` for a flag, `placement.dp_local` from the file.
    """
    config = load_config(file)
    spelled = {key.name: key.flag for key in PLACEMENT_KEYS if (placement or {}).get(key.name) is not None}
    changes: dict[str, object] = {"spelled": spelled}
    if placement:
        changes["placement"] = placement_overrides(config.placement, placement, prefix="--")
    if name is not None:
        changes["name"] = deployment_name(name, "--name")
        changes["named"] = True
    if address is not None:
        if not address.strip():
            raise ConfigError("--address: must not be empty")
        changes["cluster"] = dataclasses.replace(config.cluster, address=address.strip())
    config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
    check_spec(config.placement, spelled)
    return config


def target(name: str | None, config: Config, cluster: Session) -> str:
    """The deployment a command acts on: NAME, else the config's name if it gave one, else the only one there is.

    With several deployments and no name to go by, the user must say which (exit 2).
    """
    if name:
        return name
    if config.named:
        return config.name
    existing = sorted(cluster.deployments())
    if len(existing) == 1:
        console.info(f"using deployment {existing[0]}, the only one in this cluster")
        return existing[0]
    if len(existing) > 1:
        raise BadInput(
            f"NAME: this cluster has {len(existing)} deployments ({', '.join(existing)}); say which",
            hint=f"e.g. `dpctl status {existing[0]}`",
            code="name_needed",
        )
    return config.name  # none: the command says that there is no such deployment


def with_timeouts(config: Config, **flags: tuple[str, str | None]) -> Config:
    """The config's timeouts with the flags given (by field: (flag as typed, value)) laid over them."""
    given = {field: seconds(value, flag) for field, (flag, value) in flags.items() if value is not None}
    return dataclasses.replace(config, timeouts=dataclasses.replace(config.timeouts, **given))


def resolve_engine(config: Config) -> Config:
    """The config with its engine checked where dpctl runs, and the bundle layout a python engine asks for.

    A python engine's class must load and keep the contract here: a config error now, not a crash on a node.
    The layout it declares (`dpctl_bundles`) is the one it gets; asking for another is bad input.
    """
    if not isinstance(config.engine, PythonSpec):
        return config
    try:
        layout = declared_layout(load_engine_class(config.engine.cls, engine_search_path(config)))
    except EngineError as exc:
        raise BadInput(
            str(exc),
            hint="dpctl looks for the class where you run it, then ships its module to the nodes",
            code="bad_engine",
        ) from None
    asked = config.placement.bundles
    if layout is None or asked == layout:
        return config
    if asked is not None:
        key = config.spelled.get("bundles", "placement.bundles")
        raise BadInput(
            f"{key}: {config.engine.cls} needs {layout} bundles (its dpctl_bundles), not {asked}",
            hint=f"leave {key} out, or set it to {layout}",
            code="bad_engine",
        )
    return dataclasses.replace(config, placement=dataclasses.replace(config.placement, bundles=layout))


def engine_search_path(config: Config) -> list[str]:
    """Where a python engine's module is looked for first: the config file's directory, then the current one."""
    dirs = [str(Path(config.source).resolve().parent)] if config.source else []
    cwd = str(Path.cwd())
    return dirs if cwd in dirs else [*dirs, cwd]


def connect(cluster: ClusterConfig, **how: Any) -> AbstractContextManager[Session]:
    """`launcher.cluster.connect`, imported when a command first needs the cluster.

    Commands that never reach Ray (`plan` of an inventory file, `--help`, bad flags) then never load the
    launcher, which is ~15 ms of every such run. What the launcher says while joining goes to stderr.
    """
    from dpctl_ray.launcher.cluster import connect as join  # noqa: PLC0415 - see above

    how.setdefault("say", console.info)
    return join(cluster, **how)
