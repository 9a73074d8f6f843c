"""The `{...}` placeholders of a command engine's argv, env and readiness target: their names and their values."""

from __future__ import annotations

import difflib
import string
from typing import Any

from dpctl_ray.engines.base import EngineContext
from dpctl_ray.errors import ConfigError

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


def placeholder_values(ctx: EngineContext) -> dict[str, Any]:
    """What each placeholder stands for, for one rank; the keys are exactly PLACEHOLDERS."""
    here = [d for d, ip in zip(ctx.devices, ctx.device_ips, strict=False) if ip == ctx.node_ip]
    return {
        "deployment": ctx.deployment,
        "rank": ctx.rank,
        "local_rank": ctx.local_rank,
        "dp": ctx.dp,
        "dp_local": ctx.dp_local,
        "world_size": ctx.world_size,
        "tp": ctx.tp,
        "pp": ctx.pp,
        "master_ip": ctx.master_ip,
        "master_port": ctx.master_port,
        "node_ip": ctx.node_ip,
        "port": ctx.port,
        "devices": ",".join(here or ctx.devices),
    }


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
