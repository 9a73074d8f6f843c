"""A cluster in memory that implements `launcher.ports`: the operations and the reconciler run on it unchanged.

It keeps what Ray would (nodes and what they have free, named placement groups and hosts, the work each host
runs, records and locks) and follows Ray's rules where dpctl depends on them: a group takes its bundles'
resources, a launch removes what it created when it fails, a host that is gone answers nothing. Faults are
knobs: a rank whose start fails, a placement that never comes, a node or host that dies, and a command killed
at a named step (`kill_at`): from then on every call of that command raises `Killed`, as a SIGKILLed process
does nothing more, and the lock it held is free for the next command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dpctl_ray.config import Recovery, RuntimeEnv
from dpctl_ray.deployment.record import SPARE_STEM, Record, spare_stem
from dpctl_ray.deployment.status import Answer, HostKey
from dpctl_ray.engines.base import HostReport, RankState
from dpctl_ray.errors import Busy, LaunchFailed, TimedOut
from dpctl_ray.launcher.ports import LaunchRequest, SpareHosts, Swept
from dpctl_ray.launcher.progress import LaunchObserver, LaunchResult, RankPhase, RankProgress
from dpctl_ray.launcher.records import ObjectKind, ObjectName, object_name, prefix
from dpctl_ray.planner.model import Node, Plan, RankPlacement


class Killed(BaseException):
    """The command was SIGKILLed at this step: nothing it would do next happens."""


@dataclass(slots=True)
class Group:
    deployment: str
    bundles: list[tuple[str, dict[str, float]]]  # (node, resources)


@dataclass(slots=True)
class Host:
    deployment: str
    node: str
    rank: int  # the rank it serves (a spare's number while it is an idle spare's)
    serving: bool = False  # its work runs
    dp: int = 0
    failed: str = ""


@dataclass(slots=True)
class Cluster:
    """The cluster's state, shared by every command run on it."""

    nodes: dict[str, Node]
    alive: set[str] = field(default_factory=set)
    groups: dict[str, Group] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    records: dict[str, bytes] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    dead_jobs: set[str] = field(default_factory=set)
    fail_ranks: set[int] = field(default_factory=set)  # a start of these ranks fails
    stuck_ranks: set[int] = field(default_factory=set)  # these ranks' groups are never placed (placement timeout)
    kill_at: str | None = None  # the step at which the next command is killed
    clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000))
    jobs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    steps: list[str] = field(default_factory=list)  # every step a command reached, in order

    @classmethod
    def of(cls, count: int, devices: int = 4, cpus: int = 8) -> Cluster:
        """A head without devices and `count` nodes of `devices` GPUs."""
        nodes = [Node("head", "10.0.0.1", True, {"CPU": 4.0}, {"CPU": 4.0})]
        nodes += [
            Node(f"n{i}", f"10.0.0.{i + 2}", False, {"GPU": float(devices), "CPU": float(cpus)}, {})
            for i in range(count)
        ]
        return cls({n.id: n for n in nodes}, {n.id for n in nodes})

    def command(self) -> FakePorts:
        """The ports of one new command (a Ray job of its own)."""
        return FakePorts(self, f"job-{next(self.jobs)}")

    # --- faults ------------------------------------------------------------------------------------------

    def kill_node(self, node: str) -> None:
        self.alive.discard(node)
        for name in [n for n, h in self.hosts.items() if h.node == node]:
            del self.hosts[name]

    def kill_host(self, deployment: str, rank: int) -> None:
        del self.hosts[object_name(deployment, ObjectKind.ENGINE, rank)]

    def fail_work(
        self, deployment: str, rank: int, why: str = "process 7 crashed while serving (killed by SIGKILL)"
    ) -> None:
        host = self.hosts[object_name(deployment, ObjectKind.ENGINE, rank)]
        host.failed = why

    # --- what a test checks ------------------------------------------------------------------------------

    def record(self, name: str) -> Record | None:
        data = self.records.get(name)
        return None if data is None else Record.from_json(data)

    def objects_of(self, name: str) -> tuple[set[str], set[str]]:
        mine = prefix(name)
        return {g for g in self.groups if g.startswith(mine)}, {h for h in self.hosts if h.startswith(mine)}

    def free(self) -> dict[str, Counter[str]]:
        used: dict[str, Counter[str]] = {n: Counter() for n in self.nodes}
        for group in self.groups.values():
            for node, resources in group.bundles:
                used[node].update(resources)
        return used


class FakePorts:
    """One command's view of the cluster: every call checks that the command is still alive."""

    def __init__(self, cluster: Cluster, job_id: str) -> None:
        self.cluster = cluster
        self.job_id = job_id
        self.store = _Store(self)
        self.nodes = _Nodes(self)
        self.objects = _Objects(self)
        self.hosts = _Hosts(self)
        self.supervisors = _Supervisors(self)

    def alive(self) -> Cluster:
        if self.job_id in self.cluster.dead_jobs:
            raise Killed
        return self.cluster

    def job(self) -> str:
        self.alive()
        return self.job_id

    def host_env(self, record_env: Mapping[str, Any]) -> dict[str, Any] | None:
        return dict(record_env) or None

    def engine_env(self, given: RuntimeEnv) -> dict[str, Any]:
        return given.to_document()

    def now(self) -> float:
        return float(next(self.cluster.clock))

    def checkpoint(self, step: str) -> None:
        cluster = self.alive()
        cluster.steps.append(step)
        if cluster.kill_at == step:
            cluster.kill_at = None
            cluster.dead_jobs.add(self.job_id)
            raise Killed


class _Part:
    def __init__(self, ports: FakePorts) -> None:
        self.ports = ports

    @property
    def c(self) -> Cluster:
        return self.ports.alive()


class _Store(_Part):
    def load(self, name: str) -> Record | None:
        return self.c.record(name)

    def save(self, record: Record) -> None:
        record.updated = self.ports.now()  # as the real store: every write is a new revision
        self.c.records[record.name] = record.to_json()

    def delete(self, name: str) -> bool:
        return self.c.records.pop(name, None) is not None

    def names(self) -> list[str]:
        return sorted(self.c.records)

    @contextlib.contextmanager
    def locked(self, name: str, command: str) -> Iterator[None]:
        cluster, me = self.c, self.ports.job_id
        holder = cluster.locks.get(name)
        if holder is not None and holder != me and holder not in cluster.dead_jobs:
            raise Busy(f"deployment {name!r} is being changed by another dpctl command: `dpctl {command}`")
        cluster.locks[name] = me
        try:
            yield
        finally:
            if me not in cluster.dead_jobs and cluster.locks.get(name) == me:
                del cluster.locks[name]

    def lock_holder(self, name: str) -> dict[str, Any] | None:
        holder = self.c.locks.get(name)
        return None if holder is None or holder in self.c.dead_jobs else {"job": holder}

    def drop_lock(self, name: str) -> None:
        self.c.locks.pop(name, None)


class _Nodes(_Part):
    def snapshot(self) -> tuple[Node, ...]:
        cluster = self.c
        used = cluster.free()
        return tuple(
            dataclasses.replace(n, available={k: v - used[n.id][k] for k, v in n.resources.items()})
            for n in cluster.nodes.values()
            if n.id in cluster.alive
        )

    def alive(self) -> set[str]:
        return set(self.c.alive)

    def unreachable(self, ids: set[str]) -> set[str]:
        self.c  # noqa: B018 - a dead command asks nothing
        return set()


class _Objects(_Part):
    def ranks(self, name: str) -> set[int]:
        out = set()
        for obj in [*self.c.groups, *self.c.hosts]:
            parsed = ObjectName.parse(obj)
            if parsed and parsed.deployment == name and parsed.kind in (ObjectKind.GROUP, ObjectKind.ENGINE):
                out.add(parsed.rank)
        return {r for r in out if r is not None}

    def spares(self, name: str) -> set[int]:
        start = prefix(name) + SPARE_STEM
        return {
            int(g.removeprefix(start)) for g in self.c.groups if g.startswith(start) and g.removeprefix(start).isdigit()
        }

    def deployments(self) -> set[str]:
        return {p.deployment for o in [*self.c.groups, *self.c.hosts] if (p := ObjectName.parse(o))}

    def remove_ranks(self, name: str, ranks: Collection[int], stems: Mapping[int, str]) -> None:
        cluster, mine = self.c, prefix(name)
        theirs = {f"{mine}{stem}" for rank, stem in stems.items() if stem and rank in ranks}
        for table in (cluster.groups, cluster.hosts):
            for obj in list(table):
                parsed = ObjectName.parse(obj)
                base = obj if obj.count("-") < 2 else obj.rsplit("-", 1)[0]
                rank_object = (
                    parsed and parsed.deployment == name and parsed.kind in (ObjectKind.GROUP, ObjectKind.ENGINE)
                )
                if (rank_object and parsed.rank in ranks) or obj in theirs or base in theirs:
                    del table[obj]

    def reserve_spares(
        self, plan: Plan, spares: Sequence[RankPlacement], timeout: float, hosts: SpareHosts | None, *, wait: bool
    ) -> None:
        cluster = self.c
        for spare in spares:
            name = object_name(plan.name, ObjectKind.SPARE, spare.rank)
            cluster.groups[name] = Group(plan.name, _bundles(plan, spare))
            if hosts is not None:
                for k, node in enumerate(spare.nodes):
                    cluster.hosts[name if node == spare.control else f"{name}-{k}"] = Host(plan.name, node, spare.rank)

    def release_spares(self, name: str, numbers: Collection[int]) -> None:
        cluster = self.c
        for number in numbers:
            stem = object_name(name, ObjectKind.SPARE, number)
            cluster.groups.pop(stem, None)
            for host in [h for h in cluster.hosts if h == stem or h.startswith(f"{stem}-")]:
                del cluster.hosts[host]

    def sweep(self, name: str) -> Swept:
        cluster = self.c
        groups, hosts = cluster.objects_of(name)
        for g in groups:
            del cluster.groups[g]
        for h in hosts:
            del cluster.hosts[h]
        return Swept(sorted(hosts), sorted(groups))


class _Hosts(_Part):
    def launch(self, request: LaunchRequest, observer: LaunchObserver, *, keep_on_failure: bool) -> LaunchResult:
        progress = {
            r.rank: RankProgress(r.rank, r.local_rank, request.node_ips.get(r.control, "?"))
            for r in (*request.create, *request.keep)
        }
        created: list[str] = []
        started: list[Host] = []
        observer.begin(list(progress.values()), 0.0)
        try:
            self._run(request, progress, created, started)
        except Killed:
            raise
        except BaseException as exc:
            observer.end(ok=False)
            if not keep_on_failure:  # as a real launch: what it created is removed, what it started stopped
                for host in started:
                    host.serving = False
                for obj in created:
                    self.c.groups.pop(obj, None)
                    self.c.hosts.pop(obj, None)
            if isinstance(exc, LaunchFailed | TimedOut):
                exc.failed_ranks = {r: p.message for r, p in progress.items() if p.phase is RankPhase.FAILED}
            raise
        observer.end(ok=True)
        return LaunchResult(progress, 0.1, {}, "token")

    def _run(
        self, request: LaunchRequest, progress: dict[int, RankProgress], created: list[str], started: list[Host]
    ) -> None:
        cluster, plan = self.c, request.plan
        for rank in request.create:
            if rank.rank in cluster.stuck_ranks:
                msg = f"placement timed out: ranks {rank.rank} still wait for resources"
                raise TimedOut(msg, code="placement_timeout")
            group = object_name(plan.name, ObjectKind.GROUP, rank.rank)
            cluster.groups[group] = Group(plan.name, _bundles(plan, rank))
            created.append(group)
            for k, node in enumerate(rank.nodes):
                host = _host_name(plan.name, rank, k, "")
                cluster.hosts[host] = Host(plan.name, node, rank.rank)
                created.append(host)
        self.ports.checkpoint("launching")  # killed here: the objects created, nothing started
        for rank in request.keep:
            stem = request.stems.get(rank.rank, "")
            if any(_host_name(plan.name, rank, k, stem) not in cluster.hosts for k in range(len(rank.nodes))):
                raise LaunchFailed(f"rank {rank.rank}: its engine host on node 0 is gone", code="host_gone")
        for rank in (*request.create, *request.keep):
            if rank.rank in cluster.fail_ranks:
                progress[rank.rank].phase = RankPhase.FAILED
                progress[rank.rank].message = f"rank {rank.rank} failed (a test's fault)"
                raise LaunchFailed(f"rank {rank.rank} failed to start: a test's fault", code="engine_failed")
            stem = request.stems.get(rank.rank, "")
            for k in range(len(rank.nodes)):
                host = cluster.hosts[_host_name(plan.name, rank, k, stem)]
                host.rank, host.serving, host.dp, host.failed = rank.rank, True, plan.spec.dp, ""
                started.append(host)
            p = progress[rank.rank]
            p.phase, p.devices, p.since = RankPhase.READY, (str(rank.rank),), 1.0

    def stop(self, name: str, ranks: Collection[int] | None, grace: float, stems: Mapping[int, str]) -> None:
        for host in self.c.hosts.values():
            if host.deployment == name and (ranks is None or host.rank in ranks):
                host.serving = False

    def tell_dp(self, name: str, ranks: Sequence[int], dp: int, stems: Mapping[int, str]) -> list[int]:
        untold = []
        for rank in ranks:
            host = self.c.hosts.get(f"{prefix(name)}{stems.get(rank) or f'engine-{rank}'}")
            if host is None:
                untold.append(rank)
            else:
                host.dp = dp
        return untold

    def adopt(self, name: str, takes: Mapping[int, tuple[int, RankPlacement]]) -> dict[int, str]:
        cluster, out = self.c, {}
        for rank, (spare, placement) in sorted(takes.items()):
            stem = spare_stem(spare)
            names = [_host_name(name, placement, k, stem) for k in range(len(placement.nodes))]
            if all(n in cluster.hosts for n in names):
                for n in names:
                    cluster.hosts[n].rank = rank
                out[rank] = stem
        return out

    def answers(self, record: Record) -> dict[HostKey, Answer | None]:
        cluster, out = self.c, {}
        for rank in record.ranks:
            for k in range(len(rank.nodes)):
                host = cluster.hosts.get(_host_name(record.name, rank.placement(), k, rank.stem))
                if host is None or host.node not in cluster.alive:
                    out[(rank.rank, k)] = None
                    continue
                state = RankState.FAILED if host.failed else RankState.READY if host.serving else RankState.STARTING
                report = HostReport(
                    state,
                    host.failed or "serving",
                    (str(rank.rank),),
                    ("",),
                    host.node,
                    cluster.nodes[host.node].ip,
                    1.0,
                    host.dp,
                    1,
                    (),
                    0,
                    None,
                    "",
                    rank=rank.rank,
                    node_index=k,
                    serves=(rank.rank,) if host.serving and k == 0 else (),
                )
                out[(rank.rank, k)] = Answer(report=report)
        return out

    def reap(self, name: str, nodes: Collection[str] | None, ranks: Collection[int] | None) -> list[str]:
        self.c  # noqa: B018 - a dead command reaps nothing
        return []


class _Supervisors(_Part):
    def status(self, name: str) -> Any | None:
        self.c  # noqa: B018
        return None

    def start(self, name: str, recovery: Recovery, head: str | None, runtime_env: dict[str, Any] | None) -> None:
        self.c  # noqa: B018

    def stop(self, name: str) -> bool:
        self.c  # noqa: B018
        return False


def _bundles(plan: Plan, rank: RankPlacement) -> list[tuple[str, dict[str, float]]]:
    return [(b.node, dict(b.resources)) for b in plan.bundles(rank)]


def _host_name(deployment: str, rank: RankPlacement, k: int, stem: str) -> str:
    base = f"{prefix(deployment)}{stem}" if stem else object_name(deployment, ObjectKind.ENGINE, rank.rank)
    return base if rank.nodes[k] == rank.control else f"{base}-{k}"
