"""Each rank's log, read where it lives: through a Ray task pinned to the rank's node."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dpctl_ray.engines.host import log_path, read_log
from dpctl_ray.engines.processes import process_slots
from dpctl_ray.engines.spec import CommandSpec
from dpctl_ray.errors import BadInput
from dpctl_ray.launcher import nodes, records

LOG_READ_TIMEOUT = 10.0
FOLLOW_CHUNK = 1 << 20


@dataclass(slots=True)
class LogSource:
    """Where one rank's log is: its node (if alive), the file, and how far it has been read."""

    rank: int
    node: str
    path: str
    alive: bool
    offset: int = 0


def log_sources(name: str, ranks: list[int] | None) -> list[LogSource]:
    """The log files of a deployment's ranks (all, or those asked for), from its record.

    A rank's logs are its hosts' (one per node it spans), and the log of the process that serves it when
    that runs on another rank's host (vLLM's per-node modes: a node's process serves all its ranks).
    """
    record = records.require(name)
    known = {r.rank: r for r in record.ranks}
    missing = [r for r in ranks or [] if r not in known]
    if missing:
        raise BadInput(f"--rank: {name} has no rank {missing[0]} (ranks 0..{len(known) - 1})")
    alive = nodes.alive()
    runner: dict[int, tuple[int, int]] = {}
    if isinstance(record.engine, CommandSpec):
        for slot in process_slots(record.plan(), record.engine):
            for rank in slot.ranks:
                runner.setdefault(rank, slot.host)
    sources = []
    for r in ranks or sorted(known):
        keys = [(r, k) for k in range(len(known[r].nodes))]
        if r in runner and runner[r] not in keys:
            keys.append(runner[r])
        for rank, k in keys:
            node = known[rank].nodes[k]
            path = log_path(record.engine.log_dir, name, rank, k)
            sources.append(LogSource(r, node, path, node in alive))
    return sources


def read_logs(sources: list[LogSource], *, tail: int | None) -> dict[int, str]:
    """New text of each rank's log, read on its own node in parallel (`tail` lines the first time)."""
    calls = {}
    for source in sources:
        if source.alive:
            pinned = read_log.options(scheduling_strategy=NodeAffinitySchedulingStrategy(source.node, soft=False))
            calls[pinned.remote(source.path, source.offset, FOLLOW_CHUNK, tail)] = source
    out: dict[int, str] = {}
    if not calls:
        return out
    done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=LOG_READ_TIMEOUT)
    for ref in done:
        source = calls[ref]
        with contextlib.suppress(Exception):
            text, source.offset = ray.get(ref)
            out[source.rank] = out.get(source.rank, "") + text
    return out
