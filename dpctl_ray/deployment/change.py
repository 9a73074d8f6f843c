"""What an operation does to a running deployment, as data: the ranks to stop, create, restart and retire.

`up`, `scale`, `repair` and the restart of a group each turn a planner result (a plan, a scale delta, a repair)
and the deployment's record into one `Change`. The reconciler applies it in one order whatever made it: save
the record in the change's state, stop, remove the lost, take spares, start the work, commit the record, retire
what the deployment no longer has, tell the survivors their size. `commit` is the record after a change that
ran; `undone` the record after one that failed. Pure: no Ray, no clock (times are inputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from dpctl_ray.deployment.record import DeploymentState, RankRecord, Record
from dpctl_ray.planner.model import Node, Placement, Plan, RankPlacement
from dpctl_ray.planner.repair import Move, RepairPlan
from dpctl_ray.planner.scale import ScalePlan


class Operation(str, Enum):
    """What made a change; the value is the command that runs it."""

    UP = "up"
    SCALE = "scale"
    REPAIR = "repair"
    RESTART = "restart"  # a group brought back at its recorded size (down after a failed restart, or interrupted)


class Undo(str, Enum):
    """What a change that fails leaves behind (and what the next command finishes, when its command was killed)."""

    REMOVE = "remove"  # a launch: everything it created is removed (kept, with --keep-on-failure)
    KEEP_RUNNING = "keep_running"  # independent ranks: what was added is removed, the others keep running
    OLD_SIZE = "old_size"  # a group: restarted at its old size on the hosts it kept (down if even that fails)
    DEGRADED = "degraded"  # a repair of independent ranks: the lost stay lost, the others keep running
    GROUP_DOWN = "group_down"  # a group's repair or restart: the group is down, its placement groups kept


@dataclass(frozen=True, slots=True)
class Take:
    """A spare a new or moved rank takes: `placement` is the rank, on the spare's own bundles."""

    rank: int
    spare: int
    placement: RankPlacement


@dataclass(frozen=True, slots=True)
class Change:
    """One operation's effect on a deployment, in the order the reconciler applies it.

    `plan` is the deployment as it runs afterwards (its spec's dp is the new size). A started spare's hosts
    become the rank that takes it (`adopt`); a reserved spare's group is released and the rank's own group is
    created on the same bundles (`take`, whose ranks are also in `create`).
    """

    operation: Operation
    name: str
    plan: Plan
    before: int  # ranks before the change
    during: DeploymentState  # the record's state while it runs: a command killed midway leaves it so
    undo: Undo
    stop_all: bool = False  # every rank's work stops first (a group restarts whole)
    remove: tuple[int, ...] = ()  # ranks whose objects are removed first (lost ranks: replaced)
    take: tuple[Take, ...] = ()
    adopt: tuple[Take, ...] = ()
    drop: tuple[int, ...] = ()  # spares gone with their nodes
    create: tuple[RankPlacement, ...] = ()  # new placement groups and hosts
    restart: tuple[RankPlacement, ...] = ()  # hosts the deployment has, whose work starts again at the new size
    retire: tuple[int, ...] = ()  # ranks the deployment no longer has: stopped and removed once it runs
    tell: tuple[int, ...] = ()  # running ranks told the new size afterwards (independent ranks)
    moves: tuple[Move, ...] = ()  # a repair's: why each rank moved, and where
    request: Placement | None = None  # the placement the user asks for afterwards (a scale changes its dp)

    @property
    def after(self) -> int:
        """The number of ranks once it ran."""
        return self.plan.spec.dp

    @property
    def starts(self) -> tuple[RankPlacement, ...]:
        """Every rank whose work this change starts: created, restarted, and adopting a started spare."""
        return (*self.create, *self.restart, *(t.placement for t in self.adopt))

    @property
    def spares_used(self) -> tuple[int, ...]:
        """The spares this change takes, adopts or drops."""
        return (*(t.spare for t in (*self.take, *self.adopt)), *self.drop)

    def to_document(self) -> dict[str, object]:
        """What `--dry-run -o json` prints and `--out` saves: the change, rank by rank (see `from_document`)."""
        return {
            "operation": self.operation.value,
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "restart": self.stop_all,
            "remove": list(self.remove),
            "create": [r.rank for r in self.create],
            "restarted": [r.rank for r in self.restart],
            "take": [{"rank": t.rank, "spare": t.spare} for t in self.take],
            "adopt": [{"rank": t.rank, "spare": t.spare} for t in self.adopt],
            "drop": list(self.drop),
            "retire": list(self.retire),
            "moves": [
                {
                    "rank": m.rank,
                    "cause": m.cause,
                    "from": list(m.before.nodes),
                    "to": list(m.after.nodes),
                    "spare": m.spare,
                }
                for m in self.moves
            ],
        }


def launch(plan: Plan) -> Change:
    """`up` of a new deployment: every rank created (its spares are reserved first, by the launch itself)."""
    return Change(Operation.UP, plan.name, plan, 0, DeploymentState.LAUNCHING, Undo.REMOVE, create=plan.ranks)


def scale(record: Record, delta: ScalePlan) -> Change:
    """A scale: independent ranks are added or retired alone; a group restarts whole at the new size.

    Added ranks take spares first (`delta.promoted`); retired ranks are the highest, so ranks stay 0..dp-1.
    """
    group = record.engine.coupling == "group"
    added = {r.rank: r for r in delta.added}
    takes = tuple(Take(rank, spare, added[rank]) for rank, spare in delta.promoted)
    adopt, take = _split(record, takes)
    adopted = {t.rank for t in adopt}
    create = tuple(r for r in delta.added if r.rank not in adopted)
    survivors = tuple(r for r in record.plan().ranks if r.rank < delta.after)
    return Change(
        Operation.SCALE,
        record.name,
        delta.plan,
        len(record.ranks),
        DeploymentState.RESTARTING if group else DeploymentState.SCALING,
        Undo.OLD_SIZE if group else Undo.KEEP_RUNNING,
        stop_all=group,
        take=take,
        adopt=adopt,
        create=create,
        restart=survivors if group else (),
        retire=delta.removed,
        tell=() if group else tuple(r.rank for r in survivors),
        request=dataclasses.replace(record.request, dp=delta.after),
    )


def repair(record: Record, fix: RepairPlan) -> Change:
    """A repair: each lost rank placed again (back, onto a spare, or on free room); a group restarts whole."""
    group = record.engine.coupling == "group"
    takes = tuple(Take(m.rank, m.spare, m.after) for m in fix.moves if m.spare is not None)
    adopt, take = _split(record, takes)
    adopted = {t.rank for t in adopt}
    lost = set(fix.ranks)
    return Change(
        Operation.REPAIR,
        record.name,
        fix.plan,
        len(record.ranks),
        DeploymentState.REPAIRING,
        Undo.GROUP_DOWN if group else Undo.DEGRADED,
        stop_all=group,
        remove=fix.ranks,
        take=take,
        adopt=adopt,
        drop=fix.dropped,
        create=tuple(m.after for m in fix.moves if m.rank not in adopted),
        restart=tuple(r for r in fix.plan.ranks if r.rank not in lost) if group else (),
        moves=fix.moves,
    )


def restart(record: Record, nodes: tuple[Node, ...] = ()) -> Change:
    """A group brought back at its recorded size on the hosts it has (after a failed or interrupted restart).

    `nodes`: the cluster now, for the nodes' ips (the record's own are used where a node is not given).
    """
    plan = dataclasses.replace(record.plan(), nodes=nodes)
    return Change(
        Operation.RESTART,
        record.name,
        plan,
        len(record.ranks),
        DeploymentState.RESTARTING,
        Undo.GROUP_DOWN,
        stop_all=True,
        restart=plan.ranks,
    )


def _split(record: Record, takes: tuple[Take, ...]) -> tuple[tuple[Take, ...], tuple[Take, ...]]:
    """Takes of started spares (their hosts become the rank) and of reserved ones (only their devices)."""
    if record.spec.spares_mode == "started":
        return takes, ()
    return (), takes


@dataclass(frozen=True, slots=True)
class Grant:
    """What a rank got once its work started: the device ids Ray granted, where, and since when it serves."""

    devices: tuple[str, ...]
    device_ips: tuple[str, ...]
    since: float
    ip: str


def begin(record: Record, change: Change) -> Record:
    """The record while the change runs: in the change's state, with the ranks being created, without its spares.

    The spares the change takes, adopts or drops are forgotten first. Saved before anything is touched: a
    command killed from then on leaves a record that the next command recovers (`stray`, `recovered`).
    """
    used = set(change.spares_used)
    return dataclasses.replace(
        record,
        state=change.during,
        spares=[s for s in record.spares if s.rank not in used],
        pending=sorted({r.rank for r in (*change.create, *(t.placement for t in change.adopt))}),
    )


def commit(
    record: Record,
    change: Change,
    grants: Mapping[int, Grant],
    stems: Mapping[int, str],
    ips: Mapping[str, str],
    *,
    at: float,
) -> Record:
    """The record once the change ran: its ranks as planned with what each started rank was granted.

    `stems`: ranks that run on an adopted spare's objects (rank -> `spare-N`); `ips`: node id -> ip.
    """
    started = {r.rank: r for r in change.starts}
    restarted = {r.rank for r in change.restart}
    old = {r.rank: r for r in record.ranks}
    ranks = {r.rank: r for r in record.ranks if r.rank < change.after and r.rank not in started}
    for rank, placement in started.items():
        kept = old.get(rank) if rank in restarted else None  # a restarted rank keeps its record, new grants
        base = (
            dataclasses.replace(kept)
            if kept is not None
            else RankRecord.planned(placement, ips.get(placement.control, ""), stems.get(rank, ""))
        )
        ranks[rank] = _granted(base, grants.get(rank))
    after = dataclasses.replace(
        record,
        state=DeploymentState.RUNNING,
        ranks=[ranks[r] for r in sorted(ranks)],
        spec=dataclasses.replace(record.spec, dp=len(ranks)),
        request=change.request or record.request,
        pending=[],
    )
    _events(after, record, change, ips, "ready", at)
    return after


def undone(record: Record, change: Change, ips: Mapping[str, str], *, at: float) -> Record:
    """The record after the change failed and what it started was removed: its ranks as before.

    Independent ranks keep running (a failed repair leaves the deployment degraded); a group is down until
    it restarts at its old size (`restarted`) or a later command restarts it.
    """
    state = {
        Undo.KEEP_RUNNING: DeploymentState.RUNNING,
        Undo.DEGRADED: DeploymentState.DEGRADED,
        Undo.OLD_SIZE: DeploymentState.FAILED,
        Undo.GROUP_DOWN: DeploymentState.FAILED,
        Undo.REMOVE: DeploymentState.FAILED,
    }[change.undo]
    after = dataclasses.replace(
        record, state=state, spec=dataclasses.replace(record.spec, dp=len(record.ranks)), pending=[]
    )
    _events(after, record, change, ips, "failed", at)
    return after


def stray(record: Record, ranks_with_objects: Sequence[int], spares_with_objects: Sequence[int]) -> Stray:
    """What an interrupted change left that the record does not own: ranks' and spares' objects to remove.

    Ranks beyond the record's, the ranks the change was creating (`pending`: a repair's new objects for a lost
    rank's number), and spares neither reserved nor run on.
    """
    own = {r.rank for r in record.ranks}
    ranks = (set(ranks_with_objects) - own) | (set(ranks_with_objects) & set(record.pending))
    return Stray(tuple(sorted(ranks)), tuple(sorted(set(spares_with_objects) - record.spares_in_use())))


@dataclass(frozen=True, slots=True)
class Stray:
    """Objects of a deployment that its record does not list: what an interrupted change created."""

    ranks: tuple[int, ...]
    spares: tuple[int, ...]

    def __bool__(self) -> bool:
        return bool(self.ranks or self.spares)


def recovered(record: Record, ranks_with_objects: Collection[int]) -> tuple[Record, Change | None]:
    """A record left in a change's state (its command was killed), as the next command goes on with it.

    Independent ranks run as recorded. A group was stopped: the change to run next restarts it at its
    recorded size, if every rank still has its hosts; a group repair killed after it removed the lost ranks'
    is left for a repair to place them again (the group reads as down until then).
    """
    group = record.engine.coupling == "group"
    whole = {r.rank for r in record.ranks} <= set(ranks_with_objects)
    restarting = whole and (
        record.state is DeploymentState.RESTARTING or (record.state is DeploymentState.REPAIRING and group)
    )
    after = dataclasses.replace(
        record,
        state=DeploymentState.RUNNING,
        spec=dataclasses.replace(record.spec, dp=len(record.ranks)),
        pending=[],
    )
    return after, (restart(after) if restarting else None)


def _granted(rank: RankRecord, grant: Grant | None) -> RankRecord:
    if grant is not None:
        rank.granted = list(grant.devices)
        rank.device_ips = list(grant.device_ips)
        rank.since = grant.since
        rank.ip = grant.ip or rank.ip
    return rank


def _events(after: Record, before: Record, change: Change, ips: Mapping[str, str], result: str, at: float) -> None:
    """A repair's moves in the deployment's events: cause, from (the rank's ip), to (its new nodes' ips), result."""
    was = {r.rank: r.ip for r in before.ranks}
    for move in change.moves:
        to = "+".join(ips.get(n, n[:8]) for n in move.after.nodes)
        after.event(move.rank, move.cause, was.get(move.rank, ""), to, result, at=at)


ARTIFACT_VERSION = 1


def artifact(record: Record, change: Change) -> dict[str, object]:
    """A change as a file (`scale --dry-run --out FILE`): what it does, and the state it was made against.

    The state is the record's revision (its last write) and the cluster's fingerprint (its nodes and what they
    had free): applying the file (`--change FILE`) makes the change again and refuses it unless both, and so
    the change itself, are the same.
    """
    return {
        "version": ARTIFACT_VERSION,
        "made_against": {"record": record.updated, "cluster_fingerprint": change.plan.fingerprint},
        "change": change.to_document(),
    }


def stale(saved: Mapping[str, object], now: Mapping[str, object]) -> str | None:
    """Why a saved change no longer applies (None: it is what would be done now)."""
    then, current = saved.get("made_against"), now["made_against"]
    if then != current and isinstance(then, Mapping) and isinstance(current, Mapping):
        if then.get("record") != current.get("record"):
            return "the deployment changed since (its record was written again)"
        return (
            f"the cluster changed since (fingerprint {then.get('cluster_fingerprint')}, "
            f"now {current.get('cluster_fingerprint')})"
        )
    if saved.get("change") != now["change"]:
        return "the change would not be the same now"
    return None
