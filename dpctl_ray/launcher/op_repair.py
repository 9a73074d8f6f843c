"""`repair`: lock, recover, find the lost ranks, place them again (pure), apply that as a change.

No room is exit 3 and the deployment degraded. The supervisor of `recovery: auto` runs the same.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from dpctl_ray.config import Timeouts
from dpctl_ray.deployment import change as changes
from dpctl_ray.deployment.record import LIVE, DeploymentState, Record
from dpctl_ray.deployment.status import LOST, rank_status
from dpctl_ray.errors import BadInput, InfeasibleError
from dpctl_ray.launcher.op_scale import require, verify
from dpctl_ray.launcher.ports import Ports
from dpctl_ray.launcher.progress import Observer
from dpctl_ray.launcher.reconcile import Reconciler
from dpctl_ray.launcher.results import RepairResult
from dpctl_ray.planner import Infeasible
from dpctl_ray.planner import repair as repairing


def repair(
    ports: Ports,
    name: str,
    timeouts: Timeouts,
    *,
    dry_run: bool,
    observer: Observer,
    expect: Mapping[str, object] | None = None,
) -> RepairResult:
    """Place every lost rank again, keeping its number; healthy ranks are not touched (a group restarts whole).

    No capacity leaves everything as it is, the deployment marked degraded, and raises (exit 3).
    """
    with ports.store.locked(name, "repair"):
        reconciler = Reconciler(ports, observer, timeouts)
        record = reconciler.recover(require(ports, name))
        down = record.state is DeploymentState.FAILED and record.engine.coupling == "group"
        if record.state not in LIVE and not down:  # a group that is down is repaired whole
            raise BadInput(
                f"deployment {name!r} is {record.state.value}: there is nothing running to repair",
                hint=f"`dpctl scale {name} --dp N` revives a failed group; `dpctl down {name}` removes it",
            )
        lost, dying = lost_ranks(ports, record)
        found = time.monotonic()
        if not lost:
            if not dry_run:
                _renew_spares(ports, reconciler, record, dying, observer)
            return RepairResult(record, None, dry_run=dry_run)
        nodes = tuple(n for n in ports.nodes.snapshot() if n.id not in dying)  # dead, though not said yet
        result = repairing.repair(record.plan(), nodes, lost)
        if isinstance(result, Infeasible):
            error = _no_room(record, result, lost)
            if not dry_run:
                record.state = DeploymentState.DEGRADED
                for rank in sorted(lost):
                    ip = next((r.ip for r in record.ranks if r.rank == rank), "")
                    record.event(rank, lost[rank], ip, "", "no room: degraded", at=ports.now())
                ports.store.save(record)
            raise error
        for warning in result.plan.warnings:
            observer.warn(warning)
        change = changes.repair(record, result)
        verify(expect, record, change)
        if dry_run:
            return RepairResult(record, result, dry_run=True, restarted=change.stop_all, change=change)
        applied = reconciler.apply(record, change)
        seconds = time.monotonic() - found
        return RepairResult(
            applied.record, result, applied.launch, restarted=change.stop_all, seconds=seconds, change=change
        )


def _renew_spares(ports: Ports, reconciler: Reconciler, record: Record, dying: set[str], observer: Observer) -> None:
    """With no rank lost: spares on nodes that are gone are dropped, and reserved again where there is room."""
    if record.state is DeploymentState.DEGRADED:
        record.state = DeploymentState.RUNNING
    alive = ports.nodes.alive() - dying
    gone = [s.rank for s in record.spares if not alive.issuperset(s.nodes)]
    if gone:
        observer.note(f"{record.name}: spares {', '.join(map(str, gone))} were on nodes that are gone")
        record.spares = [s for s in record.spares if s.rank not in gone]
        ports.store.save(record)
        ports.objects.release_spares(record.name, gone)
    reconciler.top_up(record)


def lost_ranks(ports: Ports, record: Record) -> tuple[dict[int, str], set[str]]:
    """The ranks that need repair, with why, and the nodes found dead before the cluster says so.

    A rank needs repair when its node is gone (or its raylet refuses connections), its engine host died, its
    process exited, or its engine's health says it failed.
    """
    dying = ports.nodes.unreachable(record.nodes())
    answers = ports.hosts.answers(record)
    alive = ports.nodes.alive() - dying
    statuses = (rank_status(rank, record, alive, answers) for rank in record.ranks)
    return {s.rank: s.detail or s.state.value for s in statuses if s.state in LOST}, dying


def _no_room(record: Record, result: Infeasible, lost: dict[int, str]) -> InfeasibleError:
    """Why the lost ranks cannot be placed, in repair's words (exit 3); the deployment stays degraded."""
    spec = record.spec
    need = f"{result.need_devices:g} {spec.device} + {result.need_cpus:g} CPU"
    best = result.best
    room = f"the most free is {best.free_devices} {spec.device} on {best.ip}" if best else "no node is left to use"
    healthy = len(record.ranks) - len(lost)
    return InfeasibleError(
        f"{record.name}: no room to repair rank {result.rank} (it needs {need}; {room}); "
        f"{record.name} stays degraded with {healthy} of {len(record.ranks)} ranks running",
        hint=f"add a node or free devices, then `dpctl repair {record.name}` again",
        code="no_room_to_repair",
    )
