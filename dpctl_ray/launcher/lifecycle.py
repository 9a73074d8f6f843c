"""A deployment's life on a joined cluster: up, scale and down, each holding the deployment's lock.

A scale whose command died leaves its record in the `scaling` state; the next command recovers it first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from dpctl_ray.config import Config, Timeouts
from dpctl_ray.engines.base import RankState
from dpctl_ray.engines.processes import master_port
from dpctl_ray.errors import BadInput, Busy, DpctlError, InfeasibleError
from dpctl_ray.launcher import nodes as nodes_of
from dpctl_ray.launcher import objects, observe, reap, records, shipping, spares, supervisor
from dpctl_ray.launcher.apply import Launch, bind_ip
from dpctl_ray.launcher.nodes import snapshot
from dpctl_ray.launcher.progress import LaunchResult, Observer, RankPhase
from dpctl_ray.launcher.records import DeploymentState, RankRecord, Record
from dpctl_ray.planner import (
    Infeasible,
    Node,
    Plan,
    PlanRequest,
    RankPlacement,
    cluster_fingerprint,
    feasible,
    plan,
)
from dpctl_ray.planner import repair as repairing
from dpctl_ray.planner import scale as scaling
from dpctl_ray.planner.repair import RepairPlan
from dpctl_ray.planner.scale import ScalePlan
from dpctl_ray.planner.verify import check_fits

# A command killed in these states left work half done; the next command on the deployment finishes it.
RECOVERABLE = (DeploymentState.SCALING, DeploymentState.RESTARTING, DeploymentState.REPAIRING)
STOP_TIMEOUT = 10.0  # beyond the engine's own stop grace
SET_DP_TIMEOUT = 10.0


@dataclass(slots=True)
class ScaleResult:
    """What a scale did: the delta, and the launch of the new ranks (growing) or None (shrinking, dry run)."""

    record: Record
    delta: ScalePlan | None  # None: already at the requested size
    launch: LaunchResult | None = None
    dry_run: bool = False
    untold: list[int] = field(default_factory=list)  # running ranks that did not take the new dp size
    restarted: bool = False  # a group: every process restarted (or, in a dry run, would) with the new size
    before: int = 0


@dataclass(slots=True)
class UpResult:
    """What `up` did: launched, found the same deployment already running, or scaled it to a new dp."""

    record: Record
    plan: Plan | None
    launch: LaunchResult | None
    already_running: bool = False
    scaled: ScaleResult | None = None
    respared: bool = False  # already running; only its spares changed


@dataclass(slots=True)
class DownResult:
    """What `down` removed for one deployment."""

    name: str
    actors: list[str]
    groups: list[str]
    record: bool
    killed: list[str] = field(default_factory=list)  # "pid command" of processes it left that were killed

    @property
    def engines(self) -> int:
        """How many engine hosts were removed (one per node of a rank; per_device workers go with them)."""
        parsed = (records.ObjectName.parse(a) for a in self.actors)
        hosts = (records.ObjectKind.ENGINE, records.ObjectKind.SPARE)  # a started spare's hosts are engine hosts
        return sum(1 for name in parsed if name is not None and name.kind in hosts)

    @property
    def nothing(self) -> bool:
        """Whether there was nothing to remove."""
        return not (self.actors or self.groups or self.record or self.killed)


# --- up -------------------------------------------------------------------------------------------------


def up(config: Config, *, planned: Plan | None, observer: Observer, keep_on_failure: bool, recreate: bool) -> UpResult:
    """Launch every rank, or converge a running deployment to a new dp by scaling.

    A running deployment with the same spec is left alone; one whose spec differs only in dp is scaled;
    any other difference is refused unless `recreate`, which removes it and launches afresh.
    """
    name = planned.name if planned is not None else config.name
    with records.locked(name, "up"):
        existing = records.load(name)
        if existing is not None and existing.state in RECOVERABLE:
            existing = _recover(existing, observer)
        live = existing is not None and existing.state in (DeploymentState.RUNNING, DeploymentState.DEGRADED)
        if live and recreate:
            gone = _remove(name)
            observer.note(f"recreating {name}: removed its {gone.engines} engines")
            existing, live = None, False
        if live and existing is not None:  # a degraded deployment's healthy ranks run: converge, never relaunch
            return _converge(existing, config, planned=planned is not None, observer=observer)
        if existing is not None or name in objects.deployments_with_objects():
            # We hold the lock, so whoever launched this died mid-way: clear its leftovers first.
            removed = objects.sweep(name)
            killed = reap.on_nodes(name, _nodes(existing))
            records.delete(name)
            observer.note(
                f"removed leftovers of an interrupted launch of {name} "
                f"({len(removed.actors)} actors, {len(removed.groups)} placement groups"
                + (f", {len(killed)} processes" if killed else "")
                + ")"
            )
        nodes = snapshot()
        if planned is not None:
            _check_fresh(planned, nodes)
            check_fits(planned, nodes)  # a plan file's fingerprint says the cluster is unchanged, not the plan
            chosen = planned
        else:
            chosen = feasible(plan(PlanRequest(config.name, config.placement, nodes, config.spelled)))
        for warning in chosen.warnings:
            observer.warn(warning)
        observer.planned(chosen)
        return _launch(chosen, config, observer, keep_on_failure, nodes)


def _check_fresh(planned: Plan, nodes: tuple[Node, ...]) -> None:
    now = cluster_fingerprint(nodes, planned.spec.device, planned.spec.bundles, planned.spec.labels)
    if now != planned.fingerprint:
        raise BadInput(
            f"the plan file was made against another cluster state (fingerprint {planned.fingerprint}, "
            f"the cluster now {now})",
            hint="make a fresh plan with `dpctl plan --out FILE` and review it",
            code="stale_plan",
        )


def _converge(existing: Record, config: Config, *, planned: bool, observer: Observer) -> UpResult:
    """`up` of a running deployment: nothing to do, a scale to the new dp, or a refusal naming what differs."""
    name = existing.name
    if planned:
        raise BadInput(
            f"deployment {name!r} is already running; a plan file only launches new deployments",
            hint="`dpctl up --plan FILE --recreate` replaces it, or `--name` deploys another",
            code="already_running",
        )
    diff = records.differences(existing, config.placement, config.engine, config.cluster.runtime_env.to_document())
    degraded = existing.state is DeploymentState.DEGRADED
    respared = any((d.section, d.key) == ("placement", "spares") for d in diff)
    if respared:
        _respare(existing, config.placement.spares, config.timeouts, observer)
        diff = [d for d in diff if (d.section, d.key) != ("placement", "spares")]
    elif len(existing.spares) < existing.request.spares:
        _top_up(existing, config.timeouts, observer)
    if not diff:
        _supervise(name, config, snapshot(), _host_env(existing), observer)
        if degraded:
            observer.warn(f"{name} is degraded: lost ranks found no room; `dpctl repair {name}` places them")
        return UpResult(existing, None, None, already_running=True, respared=respared)
    if any((d.section, d.key) != ("placement", "dp") for d in diff):
        raise BadInput(
            f"deployment {name!r} runs with another spec: " + "; ".join(map(str, diff)),
            hint=f"--recreate replaces it; `dpctl scale {name} --dp N` changes only its size",
            code="spec_differs",
        )
    if degraded:
        raise BadInput(
            f"deployment {name!r} is degraded (lost ranks found no room): it is not scaled",
            hint=f"`dpctl repair {name}` first, or --recreate to replace it",
            code="degraded",
        )
    observer.note(f"{name} runs with dp {existing.request.dp}: scaling it to {config.placement.dp}")
    scaled = _scale_locked(existing, config.placement.dp, config.timeouts, dry_run=False, observer=observer)
    scaled.record.request = config.placement
    records.save(scaled.record)
    return UpResult(scaled.record, None, scaled.launch, scaled=scaled)


def _respare(record: Record, count: int, timeouts: Timeouts, observer: Observer) -> None:
    """`up` with another `placement.spares`: release the highest spares, or reserve more where there is room."""
    record.request = dataclasses.replace(record.request, spares=count)
    record.spec = dataclasses.replace(record.spec, spares=count)
    extra = sorted(s.rank for s in record.spares)[count:]
    if extra:
        _take_spares(record, extra)
        observer.note(f"{record.name}: released spares {', '.join(map(str, extra))} (placement.spares {count})")
    _top_up(record, timeouts, observer)


def _launch(plan: Plan, config: Config, observer: Observer, keep_on_failure: bool, nodes: tuple[Node, ...]) -> UpResult:
    ips = {n.id: n.ip for n in nodes}
    now = time.time()
    job = shipping.current_job()
    engine_env = shipping.engine_env(job, config.cluster.runtime_env)
    launch = Launch(
        plan,
        list(plan.ranks),
        engine=config.engine,
        timeouts=config.timeouts,
        observer=observer,
        bind_ip=bind_ip(),
        node_ips=ips,
        master_port=master_port(plan.name, config.engine.master_port),
        runtime_env=shipping.host_env(job, engine_env),
    )
    record = Record(
        name=plan.name,
        state=DeploymentState.LAUNCHING,
        # a plan file decides the spares, as it decides the ranks
        request=dataclasses.replace(config.placement, spares=len(plan.spares), spares_mode=plan.spec.spares_mode),
        spec=plan.spec,
        engine=config.engine,
        token=launch.token,
        job=records.current_job(),
        created=now,
        updated=now,
        ranks=[RankRecord.planned(r, ips.get(r.control, "")) for r in plan.ranks],
        env_request=config.cluster.runtime_env.to_document(),
        runtime_env=engine_env,
        spares=spares.records_of(plan, plan.spares),
    )
    records.save(record)  # first, so that `down` finds even a launch whose CLI is killed
    held = []
    try:
        started = plan.spec.spares_mode == "started"
        hosts = spares.Hosts(config.engine, shipping.host_env(job, engine_env)) if started else None
        held = spares.reserve(plan, plan.spares, config.timeouts.placement, hosts)  # first: quick, unless started
        if held:
            what = "started" if started else "reserved"
            observer.note(f"{plan.name}: {what} {len(held)} spare{'s' if len(held) > 1 else ''}")
        result = launch.run(keep_on_failure=keep_on_failure)
    except BaseException:
        if not keep_on_failure:
            objects.remove(held, [])
        if keep_on_failure:
            record.state = DeploymentState.FAILED
            for rank in record.ranks:
                progress = launch.progress[rank.rank]
                if progress.phase is RankPhase.FAILED:
                    rank.failed = progress.message or "failed to start"
            records.save(record)
        else:
            records.delete(plan.name)
        raise
    for rank in record.ranks:
        _granted(rank, result)
    record.state = DeploymentState.RUNNING
    records.save(record)
    _supervise(plan.name, config, nodes, shipping.host_env(job, engine_env), observer)
    return UpResult(record, plan, result)


def _supervise(
    name: str, config: Config, nodes: tuple[Node, ...], runtime_env: dict[str, Any] | None, observer: Observer
) -> None:
    """Give a running deployment the supervisor its `recovery:` asks for.

    auto: start one, or start it again when it has stopped or its budget changed; manual: remove one.
    """
    recovery = config.recovery
    running = supervisor.status(name)
    if recovery.mode != "auto":
        if running is not None:
            supervisor.stop(name)
            observer.note(f"{name}: recovery: manual: removed its supervisor")
        return
    if running is not None:
        budget = (running.max_repairs, running.window)
        if running.state == "watching" and budget == (recovery.max_repairs, recovery.window):
            return
        supervisor.stop(name)
    head = next((n.id for n in nodes if n.head), None)
    try:
        supervisor.start(name, recovery, head, runtime_env)
    except Exception as exc:  # noqa: BLE001 - the ranks run: say so, and how to repair by hand
        observer.warn(f"{name}: the supervisor did not start ({type(exc).__name__}: {exc}); `dpctl repair` repairs")
        return
    again = f" (again: it had stopped: {running.reason})" if running is not None and running.reason else ""
    observer.note(
        f"{name}: a supervisor repairs lost ranks (recovery: auto, at most {recovery.max_repairs} "
        f"repairs in {recovery.window:g}s){again}"
    )


def _host_env(record: Record) -> dict[str, Any] | None:
    """The runtime_env of a running deployment's new hosts: this command's dpctl, the record's engine part."""
    return shipping.host_env(shipping.current_job(), record.runtime_env)


def _granted(rank: RankRecord, result: LaunchResult) -> None:
    """Record what Ray granted a rank that came up."""
    progress = result.ranks[rank.rank]
    rank.granted = list(progress.devices)
    rank.device_ips = list(progress.device_ips)
    rank.since = progress.since
    rank.ip = progress.ip or rank.ip


# --- scale ----------------------------------------------------------------------------------------------


def scale(name: str, dp: int, timeouts: Timeouts, *, dry_run: bool, observer: Observer) -> ScaleResult:
    """Grow or shrink a running deployment to dp ranks: independent ranks keep running, a group restarts at dp."""
    with records.locked(name, "scale"):
        record = records.require(name)
        if record.state in RECOVERABLE:
            record = _recover(record, observer)
        if record.state is DeploymentState.FAILED and record.engine.coupling == "group" and not dry_run:
            # A group whose restart failed holds its placement groups: start it again, then scale.
            revived = _revive(record, timeouts, observer)
            if dp == len(record.ranks):
                return revived
        if record.state is not DeploymentState.RUNNING:
            raise BadInput(
                f"deployment {name!r} is {record.state.value}, not running: nothing to scale",
                hint=f"`dpctl down {name}` removes it; `dpctl up` launches it again",
            )
        result = _scale_locked(record, dp, timeouts, dry_run=dry_run, observer=observer)
        if not dry_run and result.delta is not None:
            result.record.request = dataclasses.replace(result.record.request, dp=dp)
            records.save(result.record)
        return result


def _scale_locked(record: Record, dp: int, timeouts: Timeouts, *, dry_run: bool, observer: Observer) -> ScaleResult:
    current = record.plan()
    if dp == len(current.ranks):
        return ScaleResult(record, None, dry_run=dry_run)
    nodes = snapshot()
    delta = feasible(scaling.scale(current, nodes, dp))
    for warning in delta.plan.warnings:
        observer.warn(warning)
    group = record.engine.coupling == "group"
    if dry_run:
        return ScaleResult(record, delta, dry_run=True, restarted=group)
    observer.scaling(delta, restart=group)
    if group:
        return _restart_group(record, delta, nodes, timeouts, observer)
    before = len(record.ranks)
    record.state = DeploymentState.SCALING  # first: a command killed from here on leaves a record the next recovers
    over = _promote(record, _taking(delta))
    launch = None
    if delta.removed:
        stems = spares.stems(record)  # of the ranks removed too
        record.ranks = [r for r in record.ranks if r.rank < dp]
        record.spec = dataclasses.replace(record.spec, dp=dp)
        records.save(record)
        _stop(record.name, list(delta.removed), record.engine.stop_seconds(), stems)
        objects.remove_ranks(record.name, list(delta.removed), stems)
    else:
        ips = {n.id: n.ip for n in nodes}
        create = [r for r in delta.added if r.rank not in over]
        keep = [r for r in delta.added if r.rank in over]
        try:
            launch = _run(delta.plan, create, keep, record, nodes, timeouts, observer, over)
        except BaseException as exc:
            objects.remove_ranks(record.name, list(over), over)  # spares' hosts that did not become ranks
            record.state = DeploymentState.RUNNING
            records.save(record)
            if isinstance(exc, DpctlError):
                exc.message += f"; {record.name} keeps running with its {before} ranks"
                with contextlib.suppress(DpctlError):
                    _top_up(record, timeouts, observer)
            raise
        for rank in delta.added:
            added = RankRecord.planned(rank, ips.get(rank.control, ""), over.get(rank.rank, ""))
            _granted(added, launch)
            record.ranks.append(added)
        record.spec = dataclasses.replace(record.spec, dp=dp)
    record.state = DeploymentState.RUNNING
    records.save(record)
    if delta.promoted:
        _top_up(record, timeouts, observer)
    survivors = [r.rank for r in record.ranks if r.rank < min(before, dp)]
    return ScaleResult(record, delta, launch, untold=_tell_dp(record, survivors, dp))


def _restart_group(
    record: Record, delta: ScalePlan, nodes: tuple[Node, ...], timeouts: Timeouts, observer: Observer
) -> ScaleResult:
    """A group-coupled scale: every process restarts with the new size, on the hosts (and devices) kept.

    New ranks' groups and hosts are created; ranks removed are removed only after the group runs at its new
    size, so that a failed restart can bring the group back at its old size on the hosts it still has.
    """
    name, before = record.name, len(record.ranks)
    old = record.plan()
    record.state = DeploymentState.RESTARTING  # first: a command killed from here on is recovered by the next
    observer.note(f"{name}: restarting all {len(old.ranks)} ranks' processes (group coupling)")
    _stop(name, None, record.engine.stop_seconds())
    over = _promote(record, _taking(delta))
    kept = [r for r in old.ranks if r.rank < delta.after]
    create = [r for r in delta.added if r.rank not in over]
    taken = [r for r in delta.added if r.rank in over]
    try:
        launch = _run(delta.plan, create, [*kept, *taken], record, nodes, timeouts, observer, over)
    except BaseException as exc:
        objects.remove_ranks(name, list(over), over)
        note = _restart_at(record, old, nodes, timeouts, observer)
        if isinstance(exc, DpctlError):  # what became of the group first: a long engine message may be cut
            exc.message = f"{note}: the group could not start at {delta.after} ranks: {exc.message}"
        raise
    if delta.removed:
        objects.remove_ranks(name, list(delta.removed), spares.stems(record))
    ips = {n.id: n.ip for n in nodes}
    ranks = {r.rank: r for r in record.ranks if r.rank < delta.after}
    for new in delta.added:
        ranks[new.rank] = RankRecord.planned(new, ips.get(new.control, ""), over.get(new.rank, ""))
    for survivor in ranks.values():
        _granted(survivor, launch)
    record.ranks = [ranks[r] for r in sorted(ranks)]
    record.spec = dataclasses.replace(record.spec, dp=delta.after)
    record.state = DeploymentState.RUNNING
    records.save(record)
    if delta.promoted:
        _top_up(record, timeouts, observer)
    return ScaleResult(record, delta, launch, restarted=True, before=before)


def _taking(delta: ScalePlan) -> dict[int, tuple[int, RankPlacement]]:
    """The ranks a scale adds on spares: rank -> (spare, its placement)."""
    added = {r.rank: r for r in delta.added}
    return {rank: (spare, added[rank]) for rank, spare in delta.promoted}


def _promote(
    record: Record, taking: Mapping[int, tuple[int, RankPlacement]], dropped: Sequence[int] = ()
) -> dict[int, str]:
    """Ranks take spares (rank -> (spare, placement)); `dropped` spares are gone with their nodes. Saves the record.

    A started spare's hosts become their rank (rank -> stem returned: the rank runs on them under the spare's
    names); any other spare's group is released for the rank's own group, created on the same bundles next.
    """
    over = spares.take_over(record, taking)
    _take_spares(record, [*dropped, *(spare for spare, _ in taking.values())], keep={taking[r][0] for r in over})
    return over


def _take_spares(record: Record, numbers: Sequence[int], keep: Collection[int] = ()) -> None:
    """Forget these spares and save the record; then release their groups, but those in `keep` (taken over).

    The record forgets them first: a command killed in between leaves spare objects without a record entry,
    which `_recover` removes.
    """
    gone = set(numbers)
    record.spares = [s for s in record.spares if s.rank not in gone]
    records.save(record)
    spares.release(record.name, gone - set(keep))


def _top_up(record: Record, timeouts: Timeouts, observer: Observer) -> None:
    """Reserve spares again up to `placement.spares` where there is room (started ones too), and save the record."""
    hosts = spares.Hosts(record.engine, _host_env(record)) if record.spec.spares_mode == "started" else None
    spares.top_up(record, timeouts.placement, observer, hosts)
    records.save(record)


def _run(
    plan: Plan,
    create: Sequence[RankPlacement],
    keep: Sequence[RankPlacement],
    record: Record,
    nodes: tuple[Node, ...],
    timeouts: Timeouts,
    observer: Observer,
    over: Mapping[int, str] | None = None,
) -> LaunchResult:
    """A launch of `create` (new groups and hosts) and `keep` (hosts that exist), each rank's work started.

    `over`: ranks just taken over from started spares (rank -> stem), besides those the record has.
    """
    return Launch(
        plan,
        create,
        keep=keep,
        stems={**spares.stems(record), **(over or {})},
        engine=record.engine,
        timeouts=timeouts,
        observer=observer,
        bind_ip=bind_ip(),
        node_ips={n.id: n.ip for n in nodes},
        master_port=master_port(record.name, record.engine.master_port),
        runtime_env=_host_env(record),
    ).run()


def _restart_at(record: Record, plan: Plan, nodes: tuple[Node, ...], timeouts: Timeouts, observer: Observer) -> str:
    """Bring a group back on the hosts it has, at `plan`'s size; what happened, in words for the error."""
    try:
        _relaunch(record, plan, nodes, timeouts, observer)
    except BaseException as exc:  # noqa: BLE001 - whatever stops it, even Ctrl-C, the group is down and says so
        record.state = DeploymentState.FAILED
        records.save(record)
        why = exc.message if isinstance(exc, DpctlError) else type(exc).__name__
        return (
            f"{record.name} could not restart at its {len(plan.ranks)} ranks either and is down ({why}), its "
            f"placement groups kept (`dpctl scale {record.name} --dp {len(plan.ranks)}` tries again, `dpctl down` "
            "removes it)"
        )
    return f"{record.name} restarted at its old size of {len(plan.ranks)} ranks"


def _relaunch(
    record: Record, plan: Plan, nodes: tuple[Node, ...], timeouts: Timeouts, observer: Observer
) -> LaunchResult:
    """Start every rank's work again on the hosts the group has; the record says RUNNING once it is ready."""
    launch = _run(plan, (), plan.ranks, record, nodes, timeouts, observer)
    for rank in record.ranks:
        _granted(rank, launch)
    record.state = DeploymentState.RUNNING
    records.save(record)
    return launch


def _revive(record: Record, timeouts: Timeouts, observer: Observer) -> ScaleResult:
    """A group that is down after a failed restart, started again at its recorded size (an error if it fails)."""
    size = len(record.ranks)
    observer.note(f"{record.name}: the group is down; restarting it at its {size} ranks")
    _stop(record.name, None, record.engine.stop_seconds())
    try:
        launch = _relaunch(record, record.plan(), snapshot(), timeouts, observer)
    except DpctlError as exc:
        exc.message += f"; {record.name} is still down (`dpctl down {record.name}` removes it)"
        raise
    return ScaleResult(record, None, launch, restarted=True, before=size)


def _stop(name: str, ranks: list[int] | None, grace: float, stems: Mapping[int, str] | None = None) -> None:
    """Ask the hosts of these ranks (all, for None) to stop their work: processes get SIGTERM, SIGKILL after `grace`."""
    wanted = None if ranks is None else set(ranks)
    stops = [host.stop.remote() for host in objects.hosts(name, wanted, stems).values()]
    if stops:
        ray.wait(stops, num_returns=len(stops), timeout=grace + STOP_TIMEOUT)


def _tell_dp(record: Record, ranks: list[int], dp: int) -> list[int]:
    """Tell running engines the new dp size, in parallel; the ranks that did not answer in time."""
    calls = {}
    stems = spares.stems(record)
    for rank in ranks:
        engine = objects.find_engine(record.name, rank, stems.get(rank, ""))
        if engine is not None:
            calls[engine.set_dp.remote(dp)] = rank
    done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=SET_DP_TIMEOUT) if calls else ([], [])
    told = set()
    for ref in done:
        with contextlib.suppress(Exception):
            ray.get(ref)
            told.add(calls[ref])
    return [r for r in ranks if r not in told]


def _recover(record: Record, observer: Observer) -> Record:
    """A scale or group restart whose command died: remove what it was adding, bring the recorded ranks back.

    An independent scale leaves the recorded ranks running; a group restart is done again at the recorded
    size on the hosts the group still has.
    """
    keep = {r.rank for r in record.ranks}
    strays = spares.reserved(record.name) - spares.in_use(record)
    spares.release(record.name, strays)  # their hosts go with their groups
    stray = sorted(objects.ranks_with_objects(record.name) - keep)
    if stray:
        objects.remove_ranks(record.name, stray)
        observer.note(f"removed ranks {', '.join(map(str, stray))} left by an interrupted scale of {record.name}")
    restarting = record.state is DeploymentState.RESTARTING or (
        record.state is DeploymentState.REPAIRING and record.engine.coupling == "group"
    )
    record.spec = dataclasses.replace(record.spec, dp=len(record.ranks))
    record.state = DeploymentState.RUNNING
    if restarting:
        observer.note(f"{record.name}: a group restart was interrupted; restarting it at {len(record.ranks)} ranks")
        _stop(record.name, None, record.engine.stop_seconds())
        observer.note(_restart_at(record, record.plan(), snapshot(), Timeouts(), observer))
    records.save(record)
    return record


# --- repair ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RepairResult:
    """What a repair did: the moves (None: nothing was lost), and the launch that brought the ranks back."""

    record: Record
    repair: RepairPlan | None
    launch: LaunchResult | None = None
    dry_run: bool = False
    restarted: bool = False  # a group: every process restarted (or, in a dry run, would)
    seconds: float = 0.0  # from finding the lost ranks to all of them READY


LOST = (RankState.DEAD, RankState.FAILED)


def lost_ranks(record: Record) -> tuple[dict[int, str], set[str]]:
    """The ranks that need repair, with why, and the nodes found dead before the GCS says so.

    A rank needs repair when its node is gone (or its raylet refuses connections), its engine actor died,
    its process exited, or its engine's health says it failed.
    """
    dying = nodes_of.unreachable({n for r in [*record.ranks, *record.spares] for n in r.nodes})
    (status,) = observe.gather(record.name, dying)  # a rank on a dying node is DEAD: its node is gone
    return {r.rank: r.detail or r.state.value for r in status.ranks if r.state in LOST}, dying


def repair(name: str, timeouts: Timeouts, *, dry_run: bool, observer: Observer) -> RepairResult:
    """Place every lost rank again, keeping its number; healthy ranks are not touched (a group restarts whole).

    No capacity leaves everything as it is, the deployment marked degraded, and raises NoPlan (exit 3).
    """
    with records.locked(name, "repair"):
        record = records.require(name)
        if record.state in RECOVERABLE:
            record = _recover(record, observer)
        if record.state not in (DeploymentState.RUNNING, DeploymentState.DEGRADED):
            raise BadInput(
                f"deployment {name!r} is {record.state.value}: there is nothing running to repair",
                hint=f"`dpctl scale {name} --dp N` revives a failed group; `dpctl down {name}` removes it",
            )
        lost, dying = lost_ranks(record)
        found = time.monotonic()
        group = record.engine.coupling == "group"
        if not lost:
            if not dry_run:
                if record.state is DeploymentState.DEGRADED:
                    record.state = DeploymentState.RUNNING
                _renew_spares(record, dying, timeouts, observer)
            return RepairResult(record, None, dry_run=dry_run)
        nodes = tuple(n for n in snapshot() if n.id not in dying)  # dead, though the GCS has not said so yet
        result = repairing.repair(record.plan(), nodes, lost)
        if isinstance(result, Infeasible):
            error = _no_room(record, result, lost)
            if not dry_run:
                record.state = DeploymentState.DEGRADED
                for rank in sorted(lost):
                    record.event(rank, lost[rank], _ips(record, rank), "", "no room: degraded")
                records.save(record)
            raise error
        for warning in result.plan.warnings:
            observer.warn(warning)
        if dry_run:
            return RepairResult(record, result, dry_run=True, restarted=group)
        return _repair(record, result, nodes, timeouts, observer, group=group, found=found)


def _renew_spares(record: Record, dying: set[str], timeouts: Timeouts, observer: Observer) -> None:
    """With no rank lost: spares on nodes that are gone are dropped, and spares reserved again where there is room."""
    alive = nodes_of.alive() - dying
    lost = [s.rank for s in record.spares if not alive.issuperset(s.nodes)]
    if lost:
        observer.note(f"{record.name}: spares {', '.join(map(str, lost))} were on nodes that are gone")
    _take_spares(record, lost)
    _top_up(record, timeouts, observer)


def _ips(record: Record, rank: int) -> str:
    found = next((r for r in record.ranks if r.rank == rank), None)
    return found.ip if found else ""


def _where(rank: RankPlacement, nodes: tuple[Node, ...]) -> str:
    ips = {n.id: n.ip for n in nodes}
    return "+".join(ips.get(n, n[:8]) for n in rank.nodes)


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


def _repair(
    record: Record,
    fix: RepairPlan,
    nodes: tuple[Node, ...],
    timeouts: Timeouts,
    observer: Observer,
    *,
    group: bool,
    found: float,
) -> RepairResult:
    name = record.name
    record.state = DeploymentState.REPAIRING  # first: a command killed from here on is recovered by the next
    if group:
        observer.note(f"{name}: restarting all {len(record.ranks)} ranks' processes (group coupling)")
        _stop(name, None, record.engine.stop_seconds())
    objects.remove_ranks(name, list(fix.ranks), spares.stems(record))  # the lost ranks' own objects
    if record.engine.kind == "command":  # what a lost process left (vLLM's engine core holds the devices)
        old = {n for r in record.ranks if r.rank in fix.ranks for n in r.nodes}
        for line in reap.on_nodes(name, old, tuple(fix.ranks)):
            observer.note(f"{name}: killed a process a lost rank left running: {line}")
    over = _promote(record, {m.rank: (m.spare, m.after) for m in fix.moves if m.spare is not None}, fix.dropped)
    moved = [m.after for m in fix.moves if m.rank not in over]
    kept = [r for r in fix.plan.ranks if r.rank not in fix.ranks] if group else []
    kept += [m.after for m in fix.moves if m.rank in over]
    try:
        launch = _run(fix.plan, moved, kept, record, nodes, timeouts, observer, over)
        seconds = time.monotonic() - found
    except BaseException as exc:
        objects.remove_ranks(name, list(over), over)  # spares' hosts that did not become their ranks
        record.state = DeploymentState.FAILED if group else DeploymentState.DEGRADED
        records.save(record)
        if isinstance(exc, DpctlError):
            state = "its group is down" if group else "the other ranks keep running"
            exc.message = (
                f"{name}: the repair of ranks {', '.join(map(str, fix.ranks))} failed ({state}): {exc.message}"
            )
        for move in fix.moves:
            record.event(move.rank, move.cause, _ips(record, move.rank), _where(move.after, nodes), "failed")
        records.save(record)
        raise
    ips = {n.id: n.ip for n in nodes}
    for move in fix.moves:
        record.event(move.rank, move.cause, _ips(record, move.rank), _where(move.after, nodes), "ready")
    by_rank = {r.rank: r for r in record.ranks}
    for placement in (m.after for m in fix.moves):
        by_rank[placement.rank] = RankRecord.planned(
            placement, ips.get(placement.control, ""), over.get(placement.rank, "")
        )
    for rank_record in by_rank.values():
        if rank_record.rank in fix.ranks or group:
            _granted(rank_record, launch)
    record.ranks = [by_rank[r] for r in sorted(by_rank)]
    record.state = DeploymentState.RUNNING
    records.save(record)
    _top_up(record, timeouts, observer)
    return RepairResult(record, fix, launch, restarted=group, seconds=seconds)


# --- down -----------------------------------------------------------------------------------------------


def down(name: str, *, force: bool) -> DownResult:
    """Stop the engines (gracefully, briefly), then remove everything under the deployment's name and its record."""
    supervisor.stop(name)  # first: it would repair what down removes (its lock, if it held it, dies with it)
    try:
        with records.locked(name, "down"):
            return _remove(name)
    except Busy:
        if not force:
            raise
        result = _remove(name)
        records.drop_lock(name)
        return result


def _nodes(record: Record | None) -> set[str] | None:
    """Every node the deployment's ranks and spares use (None, for no record: every node)."""
    return None if record is None else {n for r in [*record.ranks, *record.spares] for n in r.nodes}


def _remove(name: str) -> DownResult:
    record = records.load(name)
    grace = record.engine.stop_seconds() if record else 0.0
    _stop(name, None, grace)  # every host, started spares' too
    killed = []
    if record is None or record.engine.kind == "command":  # what the hosts could not stop, or had no host left to
        killed = reap.on_nodes(name, _nodes(record))
    removed = objects.sweep(name)
    had_record = records.delete(name)
    return DownResult(name, removed.actors, removed.groups, had_record, killed)
