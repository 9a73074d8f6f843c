"""`up`: lock, recover, plan (or check a plan file), launch; or converge a running deployment.

Converging is nothing to do, a scale to the new dp, or new spares; either way the deployment gets the
supervisor its `recovery:` asks for.
"""

from __future__ import annotations

import dataclasses

from dpctl_ray.config import Config
from dpctl_ray.deployment import change as changes
from dpctl_ray.deployment.record import LIVE, DeploymentState, RankRecord, Record, differences
from dpctl_ray.errors import BadInput
from dpctl_ray.launcher import op_down, op_scale
from dpctl_ray.launcher.ports import Ports, SpareHosts
from dpctl_ray.launcher.progress import Observer, RankPhase
from dpctl_ray.launcher.reconcile import Reconciler
from dpctl_ray.launcher.results import UpResult
from dpctl_ray.planner import Node, Plan, PlanRequest, cluster_fingerprint, feasible, plan
from dpctl_ray.planner.verify import check_fits


def up(
    ports: Ports, config: Config, *, planned: Plan | None, observer: Observer, keep_on_failure: bool, recreate: bool
) -> UpResult:
    """Launch every rank, or converge a running deployment: nothing to do, a scale to the new dp, new spares.

    Any other difference is refused unless `recreate`, which removes it and launches afresh.
    """
    name = planned.name if planned is not None else config.name
    with ports.store.locked(name, "up"):
        reconciler = Reconciler(ports, observer, config.timeouts)
        existing = ports.store.load(name)
        if existing is not None:
            existing = reconciler.recover(existing)
        live = existing is not None and existing.state in LIVE
        if live and recreate:
            gone = op_down.remove(ports, name)
            observer.note(f"recreating {name}: removed its {gone.engines} engines")
            existing, live = None, False
        if live and existing is not None:  # a degraded deployment's healthy ranks run: converge, never relaunch
            return _converge(ports, reconciler, existing, config, planned=planned is not None, observer=observer)
        if existing is not None or name in ports.objects.deployments():
            _clear_leftovers(ports, name, existing, observer)
        nodes = ports.nodes.snapshot()
        if planned is not None:
            _check_fresh(planned, nodes)
            check_fits(planned, nodes)  # a plan file's fingerprint says the cluster is unchanged, not the plan
            chosen = planned
        else:
            chosen = feasible(plan(PlanRequest(config.name, config.placement, nodes, config.spelled)))
        for warning in chosen.warnings:
            observer.warn(warning)
        observer.planned(chosen)
        return _launch(ports, chosen, config, observer, nodes, keep_on_failure=keep_on_failure)


def _clear_leftovers(ports: Ports, name: str, existing: Record | None, observer: Observer) -> None:
    """We hold the lock, so whoever launched this died mid-way: clear its leftovers first."""
    removed = ports.objects.sweep(name)
    killed = ports.hosts.reap(name, existing.nodes() if existing else None, None)
    ports.store.delete(name)
    processes = f", {len(killed)} processes" if killed else ""
    observer.note(
        f"removed leftovers of an interrupted launch of {name} "
        f"({len(removed.actors)} actors, {len(removed.groups)} placement groups{processes})"
    )


def _converge(
    ports: Ports, reconciler: Reconciler, existing: Record, config: Config, *, planned: bool, observer: Observer
) -> UpResult:
    """`up` of a running deployment: nothing to do, a scale to the new dp, or a refusal naming what differs."""
    name = existing.name
    if planned:
        raise BadInput(
            f"deployment {name!r} is already running; a plan file only launches new deployments",
            hint="`dpctl up --plan FILE --recreate` replaces it, or `--name` deploys another",
            code="already_running",
        )
    diff = differences(existing, config.placement, config.engine, config.cluster.runtime_env.to_document())
    degraded = existing.state is DeploymentState.DEGRADED
    respared = any((d.section, d.key) == ("placement", "spares") for d in diff)
    if respared:
        _respare(ports, reconciler, existing, config.placement.spares, observer)
        diff = [d for d in diff if (d.section, d.key) != ("placement", "spares")]
    elif len(existing.spares) < existing.request.spares:
        reconciler.top_up(existing)
    if not diff:
        supervise(ports, name, config, observer)
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
    scaled = op_scale.resize(ports, reconciler, existing, config.placement.dp, dry_run=False, observer=observer)
    scaled.record.request = config.placement
    ports.store.save(scaled.record)
    return UpResult(scaled.record, None, scaled.launch, scaled=scaled)


def _respare(ports: Ports, reconciler: Reconciler, record: Record, count: int, observer: Observer) -> None:
    """`up` with another `placement.spares`: release the highest spares, or reserve more where there is room."""
    record.request = dataclasses.replace(record.request, spares=count)
    record.spec = dataclasses.replace(record.spec, spares=count)
    extra = sorted(s.rank for s in record.spares)[count:]
    if extra:
        record.spares = [s for s in record.spares if s.rank not in extra]
        ports.store.save(record)  # first: a spare without a record entry is removed by the next command
        ports.objects.release_spares(record.name, extra)
        observer.note(f"{record.name}: released spares {', '.join(map(str, extra))} (placement.spares {count})")
    reconciler.top_up(record)


def _launch(
    ports: Ports, chosen: Plan, config: Config, observer: Observer, nodes: tuple[Node, ...], *, keep_on_failure: bool
) -> UpResult:
    ips = {n.id: n.ip for n in nodes}
    now = ports.now()
    engine_env = ports.engine_env(config.cluster.runtime_env)
    record = Record(
        name=chosen.name,
        state=DeploymentState.LAUNCHING,
        # a plan file decides the spares, as it decides the ranks
        request=dataclasses.replace(config.placement, spares=len(chosen.spares), spares_mode=chosen.spec.spares_mode),
        spec=chosen.spec,
        engine=config.engine,
        token="",
        job=ports.job(),
        created=now,
        updated=now,
        ranks=[RankRecord.planned(r, ips.get(r.control, "")) for r in chosen.ranks],
        env_request=config.cluster.runtime_env.to_document(),
        runtime_env=engine_env,
        spares=[RankRecord.planned(s, ips.get(s.control, "")) for s in chosen.spares],
    )
    ports.store.save(record)  # first, so that `down` finds even a launch whose CLI is killed
    reconciler = Reconciler(ports, observer, config.timeouts)
    change = changes.launch(chosen)
    started = chosen.spec.spares_mode == "started"
    try:
        if chosen.spares:
            hosts = SpareHosts(config.engine, ports.host_env(engine_env)) if started else None
            ports.objects.reserve_spares(chosen, chosen.spares, config.timeouts.placement, hosts, wait=True)
            what = "started" if started else "reserved"
            observer.note(f"{chosen.name}: {what} {len(chosen.spares)} spare{'s' if len(chosen.spares) > 1 else ''}")
        applied = reconciler.apply(record, change, keep_on_failure=keep_on_failure)
    except BaseException as exc:
        _failed_launch(ports, record, chosen, exc, keep_on_failure=keep_on_failure)
        raise
    supervise(ports, chosen.name, config, observer)
    return UpResult(applied.record, chosen, applied.launch)


def _failed_launch(ports: Ports, record: Record, chosen: Plan, exc: BaseException, *, keep_on_failure: bool) -> None:
    """A launch that failed removed what it created; its spares and record go too, unless kept for debugging."""
    if not keep_on_failure:
        ports.objects.release_spares(chosen.name, [s.rank for s in chosen.spares])
        ports.store.delete(chosen.name)
        return
    record.state = DeploymentState.FAILED
    failed = getattr(exc, "progress", None) or {}
    for rank in record.ranks:
        progress = failed.get(rank.rank)
        if progress is not None and progress.phase is RankPhase.FAILED:
            rank.failed = progress.message or "failed to start"
    ports.store.save(record)


def supervise(ports: Ports, name: str, config: Config, observer: Observer) -> None:
    """Give a running deployment the supervisor its `recovery:` asks for.

    auto: start one, or start it again when it has stopped or its budget changed; manual: remove one.
    """
    supervisors, recovery = ports.supervisors, config.recovery
    running = supervisors.status(name)
    if recovery.mode != "auto":
        if running is not None:
            supervisors.stop(name)
            observer.note(f"{name}: recovery: manual: removed its supervisor")
        return
    if running is not None:
        budget = (running.max_repairs, running.window)
        if running.watching and budget == (recovery.max_repairs, recovery.window):
            return
        supervisors.stop(name)
    head = next((n.id for n in ports.nodes.snapshot() if n.head), None)
    record = ports.store.load(name)
    try:
        supervisors.start(name, recovery, head, ports.host_env(record.runtime_env if record else {}))
    except Exception as exc:  # noqa: BLE001 - the ranks run: say so, and how to repair by hand
        observer.warn(f"{name}: the supervisor did not start ({type(exc).__name__}: {exc}); `dpctl repair` repairs")
        return
    again = f" (again: it had stopped: {running.reason})" if running is not None and running.reason else ""
    observer.note(
        f"{name}: a supervisor repairs lost ranks (recovery: auto, at most {recovery.max_repairs} "
        f"repairs in {recovery.window:g}s){again}"
    )


def _check_fresh(planned: Plan, nodes: tuple[Node, ...]) -> None:
    now = cluster_fingerprint(nodes, planned.spec.device, planned.spec.bundles, planned.spec.labels)
    if now != planned.fingerprint:
        raise BadInput(
            f"the plan file was made against another cluster state (fingerprint {planned.fingerprint}, "
            f"the cluster now {now})",
            hint="make a fresh plan with `dpctl plan --out FILE` and review it",
            code="stale_plan",
        )
