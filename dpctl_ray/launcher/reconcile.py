"""Applying a `Change`: the record's in-progress state saved first, then the steps, then commit or undo.

The single home of rollback and of crash recovery. Whatever made the change (`up`, `scale`, `repair`, a group
restart, the supervisor), it is applied in one order:

    save (the change's state)  stop  remove the lost  spares  launch  commit  retire  tell  top up

A launch that fails removes what it created itself; the reconciler then removes what the record does not own
(a spare's hosts adopted for the rank), puts the record back as the change's `undo` says, and for a group
restarts it at its old size. A command killed at any step leaves the record in the change's state; the next
command calls `recover`, which removes the same strays and finishes the same way. Failures are typed
(`ChangeFailed`: the cause, and what was left); the CLI writes the sentence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from dpctl_ray.config import Timeouts
from dpctl_ray.deployment import change as changes
from dpctl_ray.deployment.change import Change, Grant, Undo
from dpctl_ray.deployment.record import RECOVERABLE, DeploymentState, RankRecord, Record
from dpctl_ray.engines.processes import master_port
from dpctl_ray.errors import ChangeFailed, DpctlError, Left
from dpctl_ray.launcher.ports import LaunchRequest, Ports, SpareHosts
from dpctl_ray.launcher.progress import LaunchResult, Observer
from dpctl_ray.planner.model import Plan
from dpctl_ray.planner.scale import more_spares


@dataclass(slots=True)
class Applied:
    """What applying a change did: the record after it, the launch, and the ranks that missed the new size."""

    record: Record
    launch: LaunchResult | None = None
    untold: list[int] = field(default_factory=list)
    adopted: dict[int, str] = field(default_factory=dict)  # rank -> the started spare's stem it now runs on


class Reconciler:
    """Applies changes to one deployment through the cluster's ports, saying what it does to an observer."""

    def __init__(self, ports: Ports, observer: Observer, timeouts: Timeouts) -> None:
        self.ports = ports
        self.observer = observer
        self.timeouts = timeouts

    # --- apply -----------------------------------------------------------------------------------------

    def apply(self, record: Record, change: Change, *, keep_on_failure: bool = False) -> Applied:
        """Run the change; the record after it. On failure, undo it (as `change.undo` says) and raise ChangeFailed."""
        ports, name = self.ports, change.name
        stems = record.stems()
        running = changes.begin(record, change)
        ports.store.save(running)  # first: a command killed from here on leaves a record the next one recovers
        ports.checkpoint("saved")
        grace = record.engine.stop_seconds()
        if change.stop_all:
            self.observer.note(f"{name}: restarting all {change.before} ranks' processes (group coupling)")
            ports.hosts.stop(name, None, grace, stems)
            ports.checkpoint("stopped")
        if change.remove:
            ports.objects.remove_ranks(name, change.remove, stems)
            self._reap(record, change.remove)
            ports.checkpoint("removed")
        adopted = self._spares(change)
        try:
            launch = self._launch(running, change, adopted, keep_on_failure=keep_on_failure)
        except BaseException as exc:  # noqa: BLE001 - even Ctrl-C leaves the deployment as the change's undo says
            raise self._failed(running, change, exc) from None
        ports.checkpoint("launched")
        after = changes.commit(running, change, grants(launch), adopted, launch_ips(change), at=ports.now())
        if change.retire:  # the record owns the new ranks only; until the old are gone, a killed command's are strays
            ports.store.save(dataclasses.replace(after, state=DeploymentState.SCALING))
            ports.checkpoint("committed")
            ports.hosts.stop(name, change.retire, grace, stems)
            ports.objects.remove_ranks(name, change.retire, stems)
        ports.store.save(after)
        ports.checkpoint("retired" if change.retire else "committed")
        untold = ports.hosts.tell_dp(name, change.tell, change.after, after.stems()) if change.tell else []
        if change.spares_used or len(after.spares) < after.request.spares:
            self.top_up(after)
        return Applied(after, launch, untold, adopted)

    def _spares(self, change: Change) -> dict[int, str]:
        """Adopt started spares' hosts; release the groups of the spares taken (and dropped) for the ranks' own."""
        adopted = (
            self.ports.hosts.adopt(change.name, {t.rank: (t.spare, t.placement) for t in change.adopt})
            if change.adopt
            else {}
        )
        released = [t.spare for t in change.take] + list(change.drop)
        released += [t.spare for t in change.adopt if t.rank not in adopted]  # hosts gone: its devices only
        if released:
            self.ports.objects.release_spares(change.name, released)
        if change.adopt or released:
            self.ports.checkpoint("spares")
        return adopted

    def _launch(
        self, record: Record, change: Change, adopted: Mapping[int, str], *, keep_on_failure: bool
    ) -> LaunchResult:
        ports = self.ports
        unadopted = tuple(t.placement for t in change.adopt if t.rank not in adopted)
        request = LaunchRequest(
            plan=change.plan,
            create=(*change.create, *unadopted),
            keep=(*change.restart, *(t.placement for t in change.adopt if t.rank in adopted)),
            stems={**record.stems(), **adopted},
            engine=record.engine,
            timeouts=self.timeouts,
            master_port=master_port(record.name, record.engine.master_port),
            runtime_env=ports.host_env(record.runtime_env),
            node_ips=launch_ips(change),
        )
        return ports.hosts.launch(request, self.observer, keep_on_failure=keep_on_failure)

    def _failed(self, record: Record, change: Change, exc: BaseException) -> BaseException:
        """Undo a change whose launch failed (the launch removed what it created); the error to raise.

        A DpctlError becomes a ChangeFailed saying what was left; anything else (a bug) goes up as it is, after
        the same undo.
        """
        ports = self.ports
        if change.undo is Undo.REMOVE:  # a launch: the launch removed its ranks; `up` removes the rest
            return exc
        self.clean(record)
        after = changes.undone(record, change, launch_ips(change), at=ports.now())
        left = {
            Undo.KEEP_RUNNING: Left.RUNNING,
            Undo.DEGRADED: Left.DEGRADED,
            Undo.GROUP_DOWN: Left.DOWN,
            Undo.OLD_SIZE: Left.DOWN,
        }[change.undo]
        second: str = ""
        if change.undo is Undo.OLD_SIZE:
            ports.store.save(after)
            try:
                after = self.apply(after, changes.restart(after, change.plan.nodes)).record
                left = Left.RESTARTED
            except ChangeFailed as again:
                after, second = ports.store.load(record.name) or after, again.cause.message
            except BaseException as again:  # noqa: BLE001 - whatever stops it, the group is down and says so
                second = type(again).__name__
        ports.store.save(after)
        if change.undo is Undo.KEEP_RUNNING and isinstance(exc, DpctlError):
            with contextlib.suppress(DpctlError):
                self.top_up(after)
        if not isinstance(exc, DpctlError):
            return exc
        return ChangeFailed(
            change.operation.value,
            change.name,
            exc,
            left,
            before=change.before,
            after=change.after,
            ranks=tuple(m.rank for m in change.moves),
            second=second,
        )

    # --- crash recovery ----------------------------------------------------------------------------------

    def recover(self, record: Record) -> Record:
        """A record left in a change's state by a command that was killed: remove what it left, finish it.

        Independent ranks run as recorded; a group that was stopped restarts at its recorded size.
        """
        if record.state not in RECOVERABLE:
            return record
        self.clean(record)
        after, again = changes.recovered(record, self.ports.objects.ranks(record.name))
        self.ports.store.save(after)
        if again is not None:
            self.observer.note(f"{record.name}: a group restart was interrupted; restarting it at {again.after} ranks")
            try:
                after = self.apply(after, again).record
                self.observer.note(f"{record.name} restarted at its old size of {again.after} ranks")
            except ChangeFailed as exc:
                after = self.ports.store.load(record.name) or after
                self.observer.warn(
                    f"{record.name} could not restart at its {again.after} ranks and is down: {exc.cause.message}"
                )
        return after

    def clean(self, record: Record) -> None:
        """Remove the objects an interrupted or failed change left that the record does not own."""
        objects, name = self.ports.objects, record.name
        stray = changes.stray(record, sorted(objects.ranks(name)), sorted(objects.spares(name)))
        if stray.spares:
            objects.release_spares(name, stray.spares)
        if stray.ranks:
            objects.remove_ranks(name, stray.ranks, {})
            if record.state is DeploymentState.SCALING or set(stray.ranks) - {r.rank for r in record.ranks}:
                ranks = ", ".join(map(str, stray.ranks))
                self.observer.note(f"removed ranks {ranks} left by an interrupted {_what(record)} of {name}")

    # --- spares --------------------------------------------------------------------------------------------

    def top_up(self, record: Record) -> None:
        """Reserve spares again up to `placement.spares` where there is room (started ones too); save the record."""
        want = record.request.spares - len(record.spares)
        if want > 0:
            self._reserve(record, want)
        short = record.request.spares - len(record.spares)
        if short > 0:
            self.observer.warn(
                f"{record.name}: {len(record.spares)} of {record.request.spares} spares reserved: no room for "
                f"{short} more; `dpctl up` tries again"
            )
        self.ports.store.save(record)

    def _reserve(self, record: Record, want: int) -> None:
        ports = self.ports
        nodes = ports.nodes.snapshot()
        current = record.plan()
        # Spare numbers name objects: not one a spare or a rank running on a former spare's objects still uses.
        used = record.spares_in_use()
        free = (n for n in itertools.count() if n not in used)
        added = tuple(dataclasses.replace(s, rank=next(free)) for s in more_spares(current, nodes, want))
        if not added:
            return
        located = Plan(current.name, current.spec, current.ranks, nodes, (), (), "", current.spares)
        hosts = (
            SpareHosts(record.engine, ports.host_env(record.runtime_env))
            if record.spec.spares_mode == "started"
            else None
        )
        try:
            ports.objects.reserve_spares(located, added, self.timeouts.placement, hosts, wait=False)
        except DpctlError as exc:
            self.observer.warn(f"{record.name}: spares not reserved again: {exc.message}")
            return
        ips = {n.id: n.ip for n in nodes}
        record.spares = sorted(
            [*record.spares, *(RankRecord.planned(s, ips.get(s.control, "")) for s in added)], key=lambda r: r.rank
        )
        numbers = ", ".join(str(s.rank) for s in added)
        self.observer.note(f"{record.name}: reserved spare{'s' if len(added) > 1 else ''} {numbers}")

    def _reap(self, record: Record, ranks: tuple[int, ...]) -> None:
        """What lost processes left (vLLM's engine core holds the devices) is killed before the devices are reused."""
        if record.engine.kind != "command":
            return
        nodes = {n for r in record.ranks if r.rank in ranks for n in r.nodes}
        for line in self.ports.hosts.reap(record.name, nodes, ranks):
            self.observer.note(f"{record.name}: killed a process a lost rank left running: {line}")


def grants(launch: LaunchResult) -> dict[int, Grant]:
    """What each rank of a launch was granted."""
    return {rank: Grant(tuple(p.devices), tuple(p.device_ips), p.since, p.ip) for rank, p in launch.ranks.items()}


def launch_ips(change: Change) -> dict[str, str]:
    """Node id -> ip, as the change's plan saw the cluster."""
    return {n.id: n.ip for n in change.plan.nodes}


def _what(record: Record) -> str:
    return {DeploymentState.SCALING: "scale", DeploymentState.REPAIRING: "repair"}.get(record.state, "restart")
