"""Deployment operations on a joined cluster: up, scale, status, logs, down; each on its record and lock."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from dpctl_ray.config import Config
from dpctl_ray.errors import BadInput, Busy, DpctlError
from dpctl_ray.launcher import objects, records
from dpctl_ray.launcher.apply import Deadlines, Launch
from dpctl_ray.launcher.cluster import snapshot
from dpctl_ray.launcher.progress import LaunchResult, Observer
from dpctl_ray.launcher.records import RankRecord, Record
from dpctl_ray.planner.document import spec_from_document, spec_to_document
from dpctl_ray.planner.model import STRATEGY, Node, Placement, Plan, RankPlacement
from dpctl_ray.planner.place import cluster_fingerprint
from dpctl_ray.planner.scale import ScalePlan

HEALTH_TIMEOUT = 2.0
STOP_TIMEOUT = 10.0  # beyond the engine's own stop grace


def request_document(spec: Placement) -> dict[str, Any]:
    """The placement as the user asked for it, for comparing a new `up` with what runs."""
    doc = dataclasses.asdict(spec)
    doc["nodes"] = list(spec.nodes)
    return doc


def engine_document(config: Config) -> dict[str, Any]:
    """The engine section as engines receive it."""
    return config.engine.to_document()


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


MakeDelta = Callable[[Plan, tuple[Node, ...], int], "ScalePlan"]


def differences(record: Record, request: dict[str, Any], engine: dict[str, Any]) -> list[str]:
    """What a new request changes about a running deployment, as `key: old -> new`."""
    return [
        f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for section, old, new in (("placement", record.request, request), ("engine", record.engine, engine))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def up(
    config: Config,
    *,
    make_plan: Callable[[tuple[Node, ...]], Plan],
    make_delta: MakeDelta,
    planned: Plan | None,
    observer: Observer,
    keep_on_failure: bool,
    recreate: bool,
    say: Callable[[str], None],
    show_plan: Callable[[Plan], None],
    show_delta: Callable[[ScalePlan], None],
) -> UpResult:
    """Launch every rank (holding the deployment's lock), or converge a running deployment to a new dp by scaling.

    A running deployment with the same spec is left alone; one whose spec differs only in dp is scaled;
    any other difference is refused unless `recreate`, which removes it and launches afresh.
    """
    name = planned.name if planned is not None else config.name
    request = request_document(config.placement)
    engine = engine_document(config)
    with records.locked(name, "up"):
        existing = records.load(name)
        if existing is not None and existing.state == "scaling":
            existing = _recover(existing, say)
        if existing is not None and existing.state == "running" and recreate:
            gone = _remove(name)
            say(f"recreating {name}: removed its {gone.engines} engines")
            existing = None
        if existing is not None and existing.state == "running":
            diff = differences(existing, request, engine)
            if planned is not None:
                raise BadInput(
                    f"deployment {name!r} is already running; a plan file only launches new deployments",
                    hint="`dpctl up --plan FILE --recreate` replaces it, or `--name` deploys another",
                    code="already_running",
                )
            if not diff:
                return UpResult(existing, None, None, already_running=True)
            if [d for d in diff if not d.startswith("placement.dp:")]:
                raise BadInput(
                    f"deployment {name!r} runs with another spec: " + "; ".join(diff),
                    hint=f"--recreate replaces it; `dpctl scale {name} --dp N` changes only its size",
                    code="spec_differs",
                )
            say(f"{name} runs with dp {existing.request['dp']}: scaling it to {config.placement.dp}")
            scaled = _scale_locked(
                existing,
                config.placement.dp,
                config,
                make_delta=make_delta,
                dry_run=False,
                observer=observer,
                show_delta=show_delta,
            )
            scaled.record.request = request
            records.save(scaled.record)
            return UpResult(scaled.record, None, scaled.launch, scaled=scaled)
        if existing is not None or name in objects.deployments_with_objects():
            # We hold the lock, so whoever launched this died mid-way: clear its leftovers first.
            removed = objects.sweep(name)
            records.delete(name)
            say(
                f"removed leftovers of an interrupted launch of {name} "
                f"({len(removed.actors)} actors, {len(removed.groups)} placement groups)"
            )
        nodes = snapshot()
        if planned is not None:
            now = cluster_fingerprint(nodes, planned.spec.device)
            if now != planned.fingerprint:
                raise BadInput(
                    f"the plan file was made against another cluster state (fingerprint {planned.fingerprint}, "
                    f"the cluster now {now})",
                    hint="make a fresh plan with `dpctl plan --out FILE` and review it",
                    code="stale_plan",
                )
            plan = planned
        else:
            plan = make_plan(nodes)
        show_plan(plan)
        return _launch(plan, config, request, engine, observer, keep_on_failure, nodes)


def _launch(
    plan: Plan,
    config: Config,
    request: dict[str, Any],
    engine: dict[str, Any],
    observer: Observer,
    keep_on_failure: bool,
    nodes: tuple[Node, ...],
) -> UpResult:
    ips = {n.id: n.ip for n in nodes}
    now = time.time()
    record = Record(
        name=plan.name,
        state="launching",
        request=request,
        spec=spec_to_document(plan.name, plan.spec),
        engine=engine,
        token="",
        job=records.current_job(),
        created=now,
        updated=now,
        ranks=[
            RankRecord(r.rank, r.local_rank, list(r.nodes), list(r.devices), r.control, ips.get(r.control, ""))
            for r in plan.ranks
        ],
    )
    launch = Launch(
        plan,
        list(plan.ranks),
        engine=engine,
        deadlines=Deadlines(config.timeouts.placement, config.timeouts.ready),
        observer=observer,
        bind_ip=_bind_ip(),
        node_ips=ips,
        master_port=master_port(plan.name, engine),
    )
    record.token = launch.token
    records.save(record)  # first, so that `down` finds even a launch whose CLI is killed
    try:
        result = launch.run(keep_on_failure=keep_on_failure)
    except BaseException:
        if keep_on_failure:
            record.state = "failed"
            records.save(record)
        else:
            records.delete(plan.name)
        raise
    for rank in record.ranks:
        progress = result.ranks[rank.rank]
        rank.granted = list(progress.devices)
        rank.device_ips = list(progress.device_ips)
        rank.since = progress.since
        rank.ip = progress.ip or rank.ip
    record.state = "running"
    records.save(record)
    return UpResult(record, plan, result)


def master_port(name: str, engine: dict[str, Any]) -> int:
    """{master_port}: engine.master_port, else a port in 20000-39999 derived from the name (same for every rank)."""
    configured = int(engine.get("master_port") or 0)
    if configured:
        return configured
    return 20000 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 20000


def _bind_ip() -> str | None:
    """Where engines can reach this driver: its node's address as Ray sees it (none for Ray Client)."""
    try:
        return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - no address: readiness falls back to Ray's own signals
        return None


# --- scale --------------------------------------------------------------------------------------------

SET_DP_TIMEOUT = 10.0


def plan_of(record: Record) -> Plan:
    """The running deployment as a plan: its resolved spec and its ranks (for the scale planner)."""
    spec = spec_from_document(record.spec)
    ranks = tuple(
        RankPlacement(r.rank, r.local_rank, STRATEGY[spec.pack], tuple(r.nodes), tuple(r.devices), r.control)
        for r in sorted(record.ranks, key=lambda r: r.rank)
    )
    return Plan(record.name, dataclasses.replace(spec, dp=len(ranks)), ranks, (), (), (), "")


def scale(
    name: str,
    dp: int,
    config: Config,
    *,
    make_delta: MakeDelta,
    dry_run: bool,
    observer: Observer,
    say: Callable[[str], None],
    show_delta: Callable[[ScalePlan], None],
) -> ScaleResult:
    """Grow or shrink a running deployment to dp ranks, holding its lock; the other ranks keep running."""
    with records.locked(name, "scale"):
        record = records.load(name)
        if record is None:
            raise BadInput(
                f"no deployment named {name!r} in this cluster", hint="`dpctl status` lists them", code="no_deployment"
            )
        if record.state == "scaling":
            record = _recover(record, say)
        if record.state != "running":
            raise BadInput(
                f"deployment {name!r} is {record.state}, not running: nothing to scale",
                hint=f"`dpctl down {name}` removes it; `dpctl up` launches it again",
            )
        result = _scale_locked(
            record,
            dp,
            config,
            make_delta=make_delta,
            dry_run=dry_run,
            observer=observer,
            show_delta=show_delta,
        )
        if not dry_run and result.delta is not None:
            result.record.request["dp"] = dp
            records.save(result.record)
        return result


def _scale_locked(
    record: Record,
    dp: int,
    config: Config,
    *,
    make_delta: MakeDelta,
    dry_run: bool,
    observer: Observer,
    show_delta: Callable[[ScalePlan], None],
) -> ScaleResult:
    current = plan_of(record)
    if dp == len(current.ranks):
        return ScaleResult(record, None, dry_run=dry_run)
    nodes = snapshot()
    delta = make_delta(current, nodes, dp)
    if dry_run:
        return ScaleResult(record, delta, dry_run=True)
    show_delta(delta)
    before = len(record.ranks)
    record.state = "scaling"  # first: a command killed from here on leaves a record the next one recovers
    if delta.removed:
        record.ranks = [r for r in record.ranks if r.rank < dp]
        record.spec["dp"] = dp
        records.save(record)
        _stop(record.name, list(delta.removed), float(record.engine.get("stop_grace", 0)))
        objects.remove_ranks(record.name, list(delta.removed))
        launch = None
    else:
        records.save(record)
        ips = {n.id: n.ip for n in nodes}
        run = Launch(
            delta.plan,
            list(delta.added),
            engine=record.engine,
            deadlines=Deadlines(config.timeouts.placement, config.timeouts.ready),
            observer=observer,
            bind_ip=_bind_ip(),
            node_ips=ips,
            master_port=master_port(record.name, record.engine),
        )
        try:
            launch = run.run()
        except BaseException as exc:
            record.state = "running"
            records.save(record)
            if isinstance(exc, DpctlError):
                exc.message += f"; {record.name} keeps running with its {before} ranks"
            raise
        for rank in delta.added:
            progress = launch.ranks[rank.rank]
            record.ranks.append(
                RankRecord(
                    rank.rank,
                    rank.local_rank,
                    list(rank.nodes),
                    list(rank.devices),
                    rank.control,
                    progress.ip or ips.get(rank.control, ""),
                    list(progress.devices),
                    list(progress.device_ips),
                    progress.since,
                )
            )
        record.spec["dp"] = dp
    record.state = "running"
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


def _recover(record: Record, say: Callable[[str], None]) -> Record:
    """A scale whose command died: remove the ranks it was adding or removing, keep the recorded ones running."""
    keep = {r.rank for r in record.ranks}
    stray = sorted(objects.ranks_with_objects(record.name) - keep)
    if stray:
        objects.remove_ranks(record.name, stray)
        say(f"removed ranks {', '.join(map(str, stray))} left by an interrupted scale of {record.name}")
    record.state = "running"
    record.spec["dp"] = len(record.ranks)
    records.save(record)
    return record


# --- status -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RankStatus:
    """One rank as `status` reports it (DESIGN.md status JSON)."""

    rank: int
    local_rank: int
    state: str  # PENDING | STARTING | READY | FAILED | DEAD
    node: str
    ip: str
    devices: list[str]
    since: float
    detail: str = ""
    device_ips: list[str] = field(default_factory=list)
    dp: int | None = None  # the dp size the engine was last told
    port: int | None = None  # the rank's {port}
    process_pid: int | None = None  # the rank's process (command engines)


@dataclass(slots=True)
class DeploymentStatus:
    """One deployment with its ranks; `record` is None for leftovers without a record."""

    name: str
    record: Record | None
    ranks: list[RankStatus]
    busy: dict[str, Any] | None = None  # the live command changing it, if any


def gather(name: str | None) -> list[DeploymentStatus]:
    """Every deployment (or one), its ranks' health asked in parallel with a short deadline."""
    wanted = [name] if name else sorted(set(records.names()) | objects.deployments_with_objects())
    alive_nodes = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    found: list[tuple[Record | None, dict[int, Any]]] = []
    asks: dict[Any, tuple[int, int]] = {}
    for i, dep in enumerate(wanted):
        record = records.load(dep)
        refs: dict[int, Any] = {}
        for rank in record.ranks if record else []:
            actor = objects.find_engine(dep, rank.rank)
            if actor is not None:
                ref = actor.health.remote()
                refs[rank.rank] = ref
                asks[ref] = (i, rank.rank)
        found.append((record, refs))
    done: set[Any] = set()
    if asks:
        ready, _ = ray.wait(list(asks), num_returns=len(asks), timeout=HEALTH_TIMEOUT)
        done = set(ready)
    out = []
    for dep, (record, refs) in zip(wanted, found, strict=True):
        if record is None:
            out.append(DeploymentStatus(dep, None, [], records.lock_holder(dep)))
            continue
        ranks = [_rank_status(rank, refs.get(rank.rank), done, alive_nodes, record) for rank in record.ranks]
        out.append(DeploymentStatus(dep, record, ranks, records.lock_holder(dep)))
    return out


def _rank_status(rank: RankRecord, ref: Any, done: set[Any], alive_nodes: set[str], record: Record) -> RankStatus:
    status = RankStatus(
        rank=rank.rank,
        local_rank=rank.local_rank,
        state="PENDING",
        node=rank.control,
        ip=rank.ip,
        devices=list(rank.granted),
        since=rank.since,
        device_ips=list(rank.device_ips),
    )
    if any(n not in alive_nodes for n in rank.nodes):
        gone = [n for n in rank.nodes if n not in alive_nodes]
        status.state, status.detail = "DEAD", f"node {gone[0][:12]} is gone"
        return status
    if ref is None:
        if record.state in ("running", "failed"):
            status.state, status.detail = "DEAD", f"engine actor is gone; `dpctl logs {record.name} -r {rank.rank}`"
        else:
            status.state, status.detail = "PENDING", "waiting for placement"
        return status
    if ref not in done:
        if rank.since:
            status.state, status.detail = "FAILED", f"no answer to a health call in {HEALTH_TIMEOUT:g}s"
        else:
            status.state, status.detail = "STARTING", "loading"
        return status
    try:
        health = ray.get(ref)
    except RayActorError:
        status.state, status.detail = "DEAD", "engine actor died"
        return status
    except Exception as exc:  # noqa: BLE001 - an engine's health error is a failed rank, not a failed status
        status.state, status.detail = "FAILED", f"health call raised {type(exc).__name__}: {exc}"
        return status
    status.state = health["state"]
    status.detail = health.get("detail", "")
    status.devices = list(health.get("devices", status.devices))
    status.device_ips = list(health.get("device_ips", status.device_ips))
    status.node = health.get("node", status.node)
    status.ip = health.get("ip", status.ip)
    status.since = float(health.get("since", status.since))
    status.dp = health.get("dp")
    status.port = health.get("port")
    status.process_pid = health.get("process_pid")
    return status


def status_document(statuses: list[DeploymentStatus]) -> dict[str, Any]:
    """DESIGN.md status JSON."""
    deployments = []
    for s in statuses:
        spec = s.record.spec if s.record else {}
        deployments.append(
            {
                "name": s.name,
                "dp": spec.get("dp", 0),
                "world_size": spec.get("world_size", 0),
                "pack": spec.get("pack", ""),
                "state": s.record.state if s.record else "orphaned",
                "ranks": [
                    {
                        "rank": r.rank,
                        "local_rank": r.local_rank,
                        "state": r.state,
                        "node": r.node,
                        "ip": r.ip,
                        "devices": r.devices,
                        "since": r.since,
                        "detail": r.detail,
                        "device_ips": r.device_ips,
                        "dp": r.dp,
                        "port": r.port,
                        "process_pid": r.process_pid,
                    }
                    for r in s.ranks
                ],
            }
        )
    return {"deployments": deployments}


# --- logs ---------------------------------------------------------------------------------------------

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
    """The log files of a deployment's ranks (all, or those asked for), from its record."""
    from dpctl_ray.engines.host import log_path  # noqa: PLC0415

    record = records.load(name)
    if record is None:
        raise BadInput(
            f"no deployment named {name!r} in this cluster", hint="`dpctl status` lists them", code="no_deployment"
        )
    known = {r.rank: r for r in record.ranks}
    missing = [r for r in ranks or [] if r not in known]
    if missing:
        raise BadInput(f"--rank: {name} has no rank {missing[0]} (ranks 0..{len(known) - 1})")
    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    log_dir = str(record.engine.get("log_dir", "/tmp/dpctl-logs"))  # noqa: S108
    return [
        LogSource(r, known[r].control, log_path(log_dir, name, r), known[r].control in alive)
        for r in (ranks or sorted(known))
    ]


def read_logs(sources: list[LogSource], *, tail: int | None) -> dict[int, str]:
    """New text of each rank's log, read on its own node in parallel (`tail` lines the first time)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    from dpctl_ray.engines.host import read_log  # noqa: PLC0415

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
            out[source.rank] = text
    return out


# --- down ---------------------------------------------------------------------------------------------


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
        return sum(1 for a in self.actors if a.rsplit("/", 1)[-1].startswith("engine-"))

    @property
    def nothing(self) -> bool:
        """Whether there was nothing to remove."""
        return not (self.actors or self.groups or self.record)


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
    grace = float(record.engine.get("stop_grace", 0)) if record else 0.0
    ranks = sorted(objects.ranks_with_objects(name))
    _stop(name, ranks, grace)
    removed = objects.sweep(name)
    had_record = records.delete(name)
    return DownResult(name, removed.actors, removed.groups, had_record)
