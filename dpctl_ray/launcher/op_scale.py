"""`scale`: lock, recover (a group that is down is started again first), plan the delta, apply it as a change."""

from __future__ import annotations

from collections.abc import Mapping

from dpctl_ray.config import Timeouts
from dpctl_ray.deployment import change as changes
from dpctl_ray.deployment.record import DeploymentState, Record
from dpctl_ray.errors import BadInput
from dpctl_ray.launcher.ports import Ports
from dpctl_ray.launcher.progress import Observer
from dpctl_ray.launcher.reconcile import Reconciler
from dpctl_ray.launcher.results import ScaleResult
from dpctl_ray.planner import feasible
from dpctl_ray.planner import scale as scaling


def scale(
    ports: Ports,
    name: str,
    dp: int,
    timeouts: Timeouts,
    *,
    dry_run: bool,
    observer: Observer,
    expect: Mapping[str, object] | None = None,
) -> ScaleResult:
    """Grow or shrink a running deployment to dp ranks: independent ranks keep running, a group restarts at dp."""
    with ports.store.locked(name, "scale"):
        reconciler = Reconciler(ports, observer, timeouts)
        record = reconciler.recover(require(ports, name))
        if record.state is DeploymentState.FAILED and record.engine.coupling == "group" and not dry_run:
            # A group whose restart failed holds its placement groups: start it again, then scale.
            revived = _revive(ports, reconciler, record, observer)
            record = revived.record
            if dp == len(record.ranks):
                return revived
        if record.state is not DeploymentState.RUNNING:
            raise BadInput(
                f"deployment {name!r} is {record.state.value}, not running: nothing to scale",
                hint=f"`dpctl down {name}` removes it; `dpctl up` launches it again",
            )
        return resize(ports, reconciler, record, dp, dry_run=dry_run, observer=observer, expect=expect)


def resize(
    ports: Ports,
    reconciler: Reconciler,
    record: Record,
    dp: int,
    *,
    dry_run: bool,
    observer: Observer,
    expect: Mapping[str, object] | None = None,
) -> ScaleResult:
    """A running deployment (its lock held, recovered) brought to dp ranks: the delta planned and applied.

    `expect`: a change saved by a dry run (`--out`), applied only if it is still what would be done now.
    """
    current = record.plan()
    if dp == len(current.ranks):
        return ScaleResult(record, None, dry_run=dry_run)
    delta = feasible(scaling.scale(current, ports.nodes.snapshot(), dp))
    for warning in delta.plan.warnings:
        observer.warn(warning)
    change = changes.scale(record, delta)
    verify(expect, record, change)
    group = change.stop_all
    if dry_run:
        return ScaleResult(record, delta, dry_run=True, restarted=group, before=len(record.ranks), change=change)
    observer.scaling(delta, restart=group)
    applied = reconciler.apply(record, change)
    return ScaleResult(
        applied.record,
        delta,
        applied.launch,
        untold=applied.untold,
        restarted=group,
        before=change.before,
        change=change,
    )


def _revive(ports: Ports, reconciler: Reconciler, record: Record, observer: Observer) -> ScaleResult:
    """A group that is down after a failed restart, started again at its recorded size (an error if it fails)."""
    size = len(record.ranks)
    observer.note(f"{record.name}: the group is down; restarting it at its {size} ranks")
    restart = changes.restart(record, ports.nodes.snapshot())
    applied = reconciler.apply(record, restart)
    return ScaleResult(applied.record, None, applied.launch, restarted=True, before=size, change=restart)


def verify(expect: Mapping[str, object] | None, record: Record, change: changes.Change) -> None:
    """A saved change (None: none) must be what the command would do now, against the same state (exit 2)."""
    if expect is None:
        return
    why = changes.stale(expect, changes.artifact(record, change))
    if why is not None:
        raise BadInput(
            f"the change file no longer applies to {record.name}: {why}",
            hint=f"make it again: `dpctl {change.operation.value} {record.name} ... --dry-run --out FILE`; review it",
            code="stale_change",
        )


def require(ports: Ports, name: str) -> Record:
    """The record of a deployment that must exist; bad input naming it otherwise."""
    record = ports.store.load(name)
    if record is None:
        raise BadInput(
            f"no deployment named {name!r} in this cluster", hint="`dpctl status` lists them", code="no_deployment"
        )
    return record
