"""Leftover processes of a deployment, killed on its nodes before their devices are used again or it is gone.

A task pinned to each node scans it for the deployment's marked processes and kills them. It is sent by
value (the scan uses the standard library only), so that `down` ships nothing. See engines/leftovers.py for
the marks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dpctl_ray.engines import leftovers
from dpctl_ray.launcher import nodes as nodes_of

SWEEP_TIMEOUT = 30.0

ray.cloudpickle.register_pickle_by_value(leftovers)  # a node without dpctl's code runs the scan all the same
_kill_there: Any = ray.remote(num_cpus=0, max_retries=0)(leftovers.kill)


def on_nodes(deployment: str, node_ids: Iterable[str] | None = None, ranks: tuple[int, ...] | None = None) -> list[str]:
    """Kill the deployment's leftovers (of these ranks, if given) on each of these nodes (all, if None) that is alive.

    Returns "pid command" of each process killed.
    """
    alive = nodes_of.alive()
    chosen = alive if node_ids is None else set(node_ids) & alive
    calls = [
        _kill_there.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            deployment, ranks
        )
        for node in sorted(chosen)
    ]
    done, _ = ray.wait(calls, num_returns=len(calls), timeout=SWEEP_TIMEOUT) if calls else ([], [])
    # The nodes of a one-machine cluster share their processes: each is named once.
    return sorted({line for ref in done for line in _killed(ref)})


def _killed(ref: Any) -> list[str]:
    try:
        return list(ray.get(ref))
    except Exception:  # noqa: BLE001 - the node went away meanwhile: nothing is left there to hold its devices
        return []
