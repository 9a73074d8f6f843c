"""Flags shared by plan, up and scale, and how they override the config file."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Annotated, Optional

import typer

from dpctl_ray.config import Config, ConfigError, deployment_name, load_config, placement_overrides

PLACEMENT = "Placement (override the config file)"


class Output(str, Enum):
    """How a command prints its data on stdout."""

    table = "table"
    json = "json"
    yaml = "yaml"


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
OutputOpt = Annotated[Output, typer.Option("-o", "--output", help="Output format.", case_sensitive=False)]
# Numbers are taken as text and checked by the config layer, so a flag and a config key fail with the same words.
Dp = Annotated[Optional[str], typer.Option("--dp", help="Data-parallel ranks.", metavar="N", rich_help_panel=PLACEMENT)]
DpLocal = Annotated[
    Optional[str],
    typer.Option(
        "--dp-local", help="Ranks on the master node: a number or auto.", metavar="N|auto", rich_help_panel=PLACEMENT
    ),
]
Tp = Annotated[
    Optional[str], typer.Option("--tp", help="Tensor-parallel size.", metavar="N", rich_help_panel=PLACEMENT)
]
Pp = Annotated[
    Optional[str], typer.Option("--pp", help="Pipeline-parallel size.", metavar="N", rich_help_panel=PLACEMENT)
]
Pack = Annotated[
    Optional[str], typer.Option("--pack", help="strict, fill or span.", metavar="MODE", rich_help_panel=PLACEMENT)
]
Device = Annotated[
    Optional[str],
    typer.Option("--device", help="Ray resource of one device (GPU).", metavar="KEY", rich_help_panel=PLACEMENT),
]
Master = Annotated[
    Optional[str], typer.Option("--master", help="auto, a node id or an ip.", metavar="NODE", rich_help_panel=PLACEMENT)
]
Nodes = Annotated[
    Optional[list[str]],
    typer.Option(
        "--nodes",
        help="Allowed node ids or ips (comma-separated or repeated).",
        metavar="NODES",
        rich_help_panel=PLACEMENT,
    ),
]
Cpus = Annotated[
    Optional[str],
    typer.Option("--cpus", help="CPUs of the control bundle (1).", metavar="CPUS", rich_help_panel=PLACEMENT),
]


def resolve_config(
    file: str | None,
    *,
    name: str | None = None,
    address: str | None = None,
    dp: str | None = None,
    dp_local: str | None = None,
    tp: str | None = None,
    pp: str | None = None,
    pack: str | None = None,
    device: str | None = None,
    master: str | None = None,
    nodes: list[str] | None = None,
    cpus: str | None = None,
) -> Config:
    """The config file (or defaults) with the flags that were given laid over it."""
    config = load_config(file)
    flags = {
        "dp": dp,
        "dp_local": dp_local,
        "tp": tp,
        "pp": pp,
        "pack": pack,
        "device": device,
        "master": master,
        "nodes": ",".join(nodes) if nodes is not None else None,
        "cpus": cpus,
    }
    placement = placement_overrides(config.placement, flags, prefix="--")
    changes: dict[str, object] = {"placement": placement}
    if name is not None:
        changes["name"] = deployment_name(name, "--name")
    if address is not None:
        if not address.strip():
            raise ConfigError("--address: must not be empty")
        changes["cluster"] = dataclasses.replace(config.cluster, address=address.strip())
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]
