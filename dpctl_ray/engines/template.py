"""Command templates: the placeholders a command engine's argv, env and ready check may use, and their check."""

from __future__ import annotations

import difflib
import string
from dataclasses import dataclass

from dpctl_ray.errors import ConfigError
from dpctl_ray.values import printable, quoted

PLACEHOLDERS = (
    "deployment",
    "rank",  # the (first) rank the process serves
    "local_rank",
    "dp",
    "dp_local",
    "world_size",
    "tp",
    "pp",
    "master_ip",  # rank 0's first node
    "master_port",
    "node_ip",  # the process's node
    "port",
    "devices",  # the process's devices, in local-rank order
    "node_first_rank",  # the first rank the process serves
    "node_ranks",  # how many ranks the process serves
    "node_rank",  # the process's node among its rank's nodes (0 unless the rank spans nodes)
    "nnodes",  # the nodes of the process's rank
    "rank_ip",  # the first node of the process's rank
)


@dataclass(frozen=True, slots=True)
class ReadyCheck:
    """When a process counts as ready: a log line matching, an HTTP 2xx, or a TCP port open."""

    kind: str  # log | http | tcp
    target: str  # a regex, a URL or a host:port, the last two templated


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
