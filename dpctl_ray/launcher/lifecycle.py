"""A deployment's life on a joined cluster: up, scale and down, each holding the deployment's lock.

A scale whose command died leaves its record in the `scaling` state; the next command recovers it first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

import ray

from dpctl_ray.config import Config, Timeouts
from dpctl_ray.errors import BadInput, Busy, DpctlError
from dpctl_ray.launcher import objects, records
from dpctl_ray.launcher.apply import Launch, bind_ip
from dpctl_ray.launcher.nodes import snapshot
from dpctl_ray.launcher.progress import LaunchResult, Observer, RankPhase
from dpctl_ray.launcher.records import DeploymentState, RankRecord, Record
from dpctl_ray.planner import Node, Plan, PlanRequest, cluster_fingerprint, feasible, plan
from dpctl_ray.planner import scale as scaling
from dpctl_ray.planner.scale import ScalePlan
from dpctl_ray.planner.verify import check_fits

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


@dataclass(slots=True)
class UpResult:
    """What `up` did: launched, found the same deployment already running, or scaled it to a new dp."""

    record: Record
    plan: Plan | None
    launch: LaunchResult | None
    already_running: bool = False
    scaled: ScaleResult | None = None


@dataclass(slots=True)
class DownResult:
    """What `down` removed for one deployment."""

    name: str
    actors: list[str]
    groups: list[str]
    record: bool

    @property
    def engines(self) -> int:
        """How many engine actors were removed (their device workers went with them)."""
        parsed = (records.ObjectName.parse(a) for a in self.actors)
        return sum(1 for name in parsed if name is not None and name.kind is records.ObjectKind.ENGINE)

    @property
    def nothing(self) -> bool:
        """Whether there was nothing to remove."""
        return not (self.actors or self.groups or self.record)


# --- up -------------------------------------------------------------------------------------------------


def up(config: Config, *, planned: Plan | None, observer: Observer, keep_on_failure: bool, recreate: bool) -> UpResult:
    """Launch every rank, or converge a running deployment to a new dp by scaling.

    A running deployment with the same spec is left alone; one whose spec differs only in dp is scaled;
    any other difference is refused unless `recreate`, which removes it and launches afresh.
    """
    name = planned.name if planned is not None else config.name
    with records.locked(name, "up"):
        existing = records.load(name)
        if existing is not None and existing.state is DeploymentState.SCALING:
            existing = _recover(existing, observer)
        if existing is not None and existing.state is DeploymentState.RUNNING and recreate:
            gone = _remove(name)
            observer.note(f"recreating {name}: removed its {gone.engines} engines")
            existing = None
        if existing is not None and existing.state is DeploymentState.RUNNING:
            return _converge(existing, config, planned=planned is not None, observer=observer)
        if existing is not None or name in objects.deployments_with_objects():
            # We hold the lock, so whoever launched this died mid-way: clear its leftovers first.
            removed = objects.sweep(name)
            records.delete(name)
            observer.note(
                f"removed leftovers of an interrupted launch of {name} "
                f"({len(removed.actors)} actors, {len(removed.groups)} placement groups)"
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
    now = cluster_fingerprint(nodes, planned.spec.device)
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
    diff = records.differences(existing, config.placement, config.engine)
    if not diff:
        return UpResult(existing, None, None, already_running=True)
    if any((d.section, d.key) != ("placement", "dp") for d in diff):
        raise BadInput(
            f"deployment {name!r} runs with another spec: " + "; ".join(map(str, diff)),
            hint=f"--recreate replaces it; `dpctl scale {name} --dp N` changes only its size",
            code="spec_differs",
        )
    observer.note(f"{name} runs with dp {existing.request.dp}: scaling it to {config.placement.dp}")
    scaled = _scale_locked(existing, config.placement.dp, config.timeouts, dry_run=False, observer=observer)
    scaled.record.request = config.placement
    records.save(scaled.record)
    return UpResult(scaled.record, None, scaled.launch, scaled=scaled)


def _launch(plan: Plan, config: Config, observer: Observer, keep_on_failure: bool, nodes: tuple[Node, ...]) -> UpResult:
    ips = {n.id: n.ip for n in nodes}
    now = time.time()
    launch = Launch(
        plan,
        list(plan.ranks),
        engine=config.engine,
        timeouts=config.timeouts,
        observer=observer,
        bind_ip=bind_ip(),
        node_ips=ips,
        master_port=records.master_port(plan.name, config.engine),
    )
    record = Record(
        name=plan.name,
        state=DeploymentState.LAUNCHING,
        request=config.placement,
        spec=plan.spec,
        engine=config.engine,
        token=launch.token,
        job=records.current_job(),
        created=now,
        updated=now,
        ranks=[RankRecord.planned(r, ips.get(r.control, "")) for r in plan.ranks],
    )
    records.save(record)  # first, so that `down` finds even a launch whose CLI is killed
    try:
        result = launch.run(keep_on_failure=keep_on_failure)
    except BaseException:
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
    return UpResult(record, plan, result)


def _granted(rank: RankRecord, result: LaunchResult) -> None:
    """Record what Ray granted a rank that came up."""
    progress = result.ranks[rank.rank]
    rank.granted = list(progress.devices)
    rank.device_ips = list(progress.device_ips)
    rank.since = progress.since
    rank.ip = progress.ip or rank.ip


# --- scale ----------------------------------------------------------------------------------------------


def scale(name: str, dp: int, timeouts: Timeouts, *, dry_run: bool, observer: Observer) -> ScaleResult:
    """Grow or shrink a running deployment to dp ranks; the other ranks keep running."""
    with records.locked(name, "scale"):
        record = records.require(name)
        if record.state is DeploymentState.SCALING:
            record = _recover(record, observer)
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
    if dry_run:
        return ScaleResult(record, delta, dry_run=True)
    observer.scaling(delta)
    before = len(record.ranks)
    record.state = DeploymentState.SCALING  # first: a command killed from here on leaves a record the next recovers
    launch = None
    if delta.removed:
        record.ranks = [r for r in record.ranks if r.rank < dp]
        record.spec = dataclasses.replace(record.spec, dp=dp)
        records.save(record)
        _stop(record.name, list(delta.removed), record.engine.stop_seconds())
        objects.remove_ranks(record.name, list(delta.removed))
    else:
        records.save(record)
        ips = {n.id: n.ip for n in nodes}
        run = Launch(
            delta.plan,
            list(delta.added),
            engine=record.engine,
            timeouts=timeouts,
            observer=observer,
            bind_ip=bind_ip(),
            node_ips=ips,
            master_port=records.master_port(record.name, record.engine),
        )
        try:
            launch = run.run()
        except BaseException as exc:
            record.state = DeploymentState.RUNNING
            records.save(record)
            if isinstance(exc, DpctlError):
                exc.message += f"; {record.name} keeps running with its {before} ranks"
            raise
        for rank in delta.added:
            added = RankRecord.planned(rank, ips.get(rank.control, ""))
            _granted(added, launch)
            record.ranks.append(added)
        record.spec = dataclasses.replace(record.spec, dp=dp)
    record.state = DeploymentState.RUNNING
    records.save(record)
    survivors = [r.rank for r in record.ranks if r.rank < min(before, dp)]
    return ScaleResult(record, delta, launch, untold=_tell_dp(record.name, survivors, dp))


def _stop(name: str, ranks: list[int], grace: float) -> None:
    """Ask these ranks' engines to stop (processes get SIGTERM, then SIGKILL after `grace`) before removal."""
    engines = [e for e in (objects.find_engine(name, r) for r in ranks) if e is not None]
    stops = [e.stop.remote() for e in engines]
    if stops:
        ray.wait(stops, num_returns=len(stops), timeout=grace + STOP_TIMEOUT)


def _tell_dp(name: str, ranks: list[int], dp: int) -> list[int]:
    """Tell running engines the new dp size, in parallel; the ranks that did not answer in time."""
    calls = {}
    for rank in ranks:
        engine = objects.find_engine(name, rank)
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
    """A scale whose command died: remove the ranks it was adding or removing, keep the recorded ones running."""
    keep = {r.rank for r in record.ranks}
    stray = sorted(objects.ranks_with_objects(record.name) - keep)
    if stray:
        objects.remove_ranks(record.name, stray)
        observer.note(f"removed ranks {', '.join(map(str, stray))} left by an interrupted scale of {record.name}")
    record.state = DeploymentState.RUNNING
    record.spec = dataclasses.replace(record.spec, dp=len(record.ranks))
    records.save(record)
    return record


# --- down -----------------------------------------------------------------------------------------------


def down(name: str, *, force: bool) -> DownResult:
    """Stop the engines (gracefully, briefly), then remove everything under the deployment's name and its record."""
    try:
        with records.locked(name, "down"):
            return _remove(name)
    except Busy:
        if not force:
            raise
        result = _remove(name)
        records.drop_lock(name)
        return result


def _remove(name: str) -> DownResult:
    record = records.load(name)
    grace = record.engine.stop_seconds() if record else 0.0
    _stop(name, sorted(objects.ranks_with_objects(name)), grace)
    removed = objects.sweep(name)
    had_record = records.delete(name)
    return DownResult(name, removed.actors, removed.groups, had_record)
