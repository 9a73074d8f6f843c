"""Spares (`placement.spares: K`) on Ray: placement groups shaped like a rank, reserved beside a deployment's ranks.

A spare holds a rank's devices and control CPUs on the nodes the planner chose for it, under the name
`dpctl/<name>/spare-<n>`, so `down` and a sweep find it. Repair and scale-up take a spare before free
capacity (`deployment.change`): its group is removed and the rank's group created on exactly those bundles at
once, or, for a started spare, its hosts become the rank (`adopt`). The reconciler tops the deployment up to
K spares afterwards where there is room.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.placement_group import PlacementGroup

from dpctl_ray.deployment.record import SPARE_STEM, spare_stem
from dpctl_ray.errors import InfeasibleError, LaunchFailed, TimedOut
from dpctl_ray.launcher import objects
from dpctl_ray.launcher.ports import SpareHosts
from dpctl_ray.launcher.records import ObjectKind, object_name, prefix
from dpctl_ray.planner.model import Plan, RankPlacement

CHECK_SECONDS = 0.5  # how often a pending spare is asked whether Ray found it infeasible
BECOME_TIMEOUT = 10.0  # seconds a started spare's hosts get to take a rank's identity


def reserve(
    plan: Plan, spares: Sequence[RankPlacement], timeout: float, hosts: SpareHosts | None = None, *, wait: bool = True
) -> list[PlacementGroup]:
    """Create the spares' groups and wait until Ray holds them all; on any failure remove them and raise.

    With `hosts` (spares_mode: started) each spare's engine hosts are started in its group, idle; `wait`
    also waits for them to answer (a later top-up does not: the repair that made room is done by then).
    """
    spec = plan.spec
    labels = {n.id: n.labels for n in plan.nodes} if spec.labels else {}
    groups: list[PlacementGroup] = []
    actors: list[Any] = []
    try:
        groups += (objects.create_group(plan.name, s, plan.bundles(s), spec, labels, ObjectKind.SPARE) for s in spares)
        if hosts is not None:
            actors += (
                objects.create_host(
                    plan.name,
                    spare,
                    k,
                    objects.host_spec(plan, spare, k, hosts.engine, spare=spare.rank),
                    group,
                    spec.cpus,
                    hosts.runtime_env,
                    stem=spare_stem(spare.rank),
                )
                for spare, group in zip(spares, groups, strict=True)
                for k in range(len(spare.nodes))
            )
        _wait(dict(zip(groups, (s.rank for s in spares), strict=True)), timeout)
        if actors and wait:
            ray.get([a.info.remote() for a in actors], timeout=timeout)
    except BaseException as exc:
        objects.remove(groups, actors)
        if isinstance(exc, RayError):
            raise LaunchFailed(
                f"spares: their engine hosts did not start: {type(exc).__name__}: {exc}".splitlines()[0],
                hint="`dpctl logs` and the Ray logs of the node say why; spares_mode: reserved holds no hosts",
                code="spare_failed",
            ) from None
        raise
    return groups


def _wait(groups: dict[PlacementGroup, int], timeout: float) -> None:
    """Until Ray holds every group (group -> spare number); infeasible or past the deadline raises."""
    pending = {g.ready(): (g, n) for g, n in groups.items()}
    deadline = time.monotonic() + timeout
    while pending:
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=CHECK_SECONDS)
        for ref in done:
            pending.pop(ref)
        waiting = ", ".join(str(n) for _, n in sorted(pending.values(), key=lambda p: p[1]))
        if any(objects.group_infeasible(g) for g, _ in pending.values()):
            raise InfeasibleError(
                f"spares {waiting}: Ray cannot place them where planned (a node is gone or lacks the resources now)",
                hint="run `dpctl plan` to see what fits now, or lower placement.spares",
                code="spare_infeasible",
            )
        if pending and time.monotonic() > deadline:
            raise TimedOut(
                f"placement timed out after {timeout:g}s: spares {waiting} still wait for resources",
                hint="raise timeouts.placement, free the devices, or lower placement.spares",
                code="placement_timeout",
            )


def release(deployment: str, numbers: Iterable[int]) -> None:
    """Remove these spares' groups (taken by a rank, or lost with their node)."""
    wanted = {object_name(deployment, ObjectKind.SPARE, n) for n in numbers}
    if not wanted:
        return
    found = objects.live_groups(_group_prefix(deployment))
    objects.remove([g for name, g in found.items() if name in wanted], [])


def reserved(deployment: str) -> set[int]:
    """The numbers of the deployment's spare groups that exist."""
    start = _group_prefix(deployment)
    return {int(name.removeprefix(start)) for name in objects.live_groups(start) if name.removeprefix(start).isdigit()}


def take_over(deployment: str, promoted: Mapping[int, tuple[int, RankPlacement]]) -> dict[int, str]:
    """Started spares whose hosts become the ranks that take them (rank -> (spare, the rank's placement)).

    Each of the spare's hosts is told its rank; the rank then runs on them, under the spare's names. Returns
    rank -> stem (`spare-N`) for those taken over; a spare whose hosts are gone is not.
    """
    out = {}
    for rank, (spare, placement) in sorted(promoted.items()):
        stem = spare_stem(spare)
        found = [objects.find_host(deployment, placement, k, stem) for k in range(len(placement.nodes))]
        hosts = [h for h in found if h is not None]
        if len(hosts) < len(found):
            continue
        try:
            ray.get([h.become.remote(rank, placement.local_rank) for h in hosts], timeout=BECOME_TIMEOUT)
        except RayError:
            continue
        out[rank] = stem
    return out


def _group_prefix(deployment: str) -> str:
    return prefix(deployment) + SPARE_STEM
