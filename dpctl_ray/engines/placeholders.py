"""The `{...}` placeholders of a command engine's argv, env and readiness target: their names and their values."""

from __future__ import annotations

import difflib
import string
from typing import Any

from dpctl_ray.engines.base import EngineContext
from dpctl_ray.errors import ConfigError
from dpctl_ray.values import printable, quoted

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
    """A templated string may use only the known placeholders, each plain `{name}`; anything else names the key.

    Format specs and conversions (`{rank:05}`, `{rank!r}`) are refused: they fail only when a rank renders.
    """
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(
            f"{path}: bad template {quoted(text)} ({exc})", hint="write a literal brace as {{ or }}"
        ) from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
            hint = f"did you mean {{{close[0]}}}?" if close else f"placeholders: {', '.join(PLACEHOLDERS)}"
            raise ConfigError(f"{path}: unknown placeholder {printable('{' + name + '}')} in {quoted(text)}", hint=hint)
        if spec or conversion:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(
                f"{path}: placeholder {printable(written)} has a format spec or conversion; write {{{name}}}",
                hint="a placeholder is replaced by its value as is",
            )
