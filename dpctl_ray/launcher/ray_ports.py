"""The ports on Ray: records and locks in the GCS, nodes, named objects, engine hosts and supervisors."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import ray

from dpctl_ray.config import Recovery, RuntimeEnv
from dpctl_ray.deployment.record import Record
from dpctl_ray.deployment.status import HEALTH_TIMEOUT, Answer, HostKey
from dpctl_ray.errors import DpctlError
from dpctl_ray.launcher import nodes, objects, reap, records, shipping, spares, supervision
from dpctl_ray.launcher.apply import Launch, bind_ip
from dpctl_ray.launcher.ports import LaunchRequest, SpareHosts, Swept
from dpctl_ray.launcher.progress import LaunchObserver, LaunchResult, RankPhase
from dpctl_ray.planner.model import Node, Plan, RankPlacement

STOP_TIMEOUT = 10.0  # beyond the engine's own stop grace
SET_DP_TIMEOUT = 10.0


class RayStore:
    """Records and locks in the GCS key-value store (`launcher.records`)."""

    def load(self, name: str) -> Record | None:  # noqa: D102 - see ports.Store
        return records.load(name)

    def save(self, record: Record) -> None:  # noqa: D102
        records.save(record)

    def delete(self, name: str) -> bool:  # noqa: D102
        return records.delete(name)

    def names(self) -> list[str]:  # noqa: D102
        return records.names()

    @contextlib.contextmanager
    def locked(self, name: str, command: str) -> Iterator[None]:  # noqa: D102
        with records.locked(name, command):
            yield

    def lock_holder(self, name: str) -> dict[str, Any] | None:  # noqa: D102
        return records.lock_holder(name)

    def drop_lock(self, name: str) -> None:  # noqa: D102
        records.drop_lock(name)


class RayNodes:
    """Nodes from the GCS (`launcher.nodes`)."""

    def snapshot(self) -> tuple[Node, ...]:  # noqa: D102 - see ports.Nodes
        return nodes.snapshot()

    def alive(self) -> set[str]:  # noqa: D102
        return nodes.alive()

    def unreachable(self, ids: set[str]) -> set[str]:  # noqa: D102
        return nodes.unreachable(ids)


class RayObjects:
    """Placement groups and named actors (`launcher.objects`, `launcher.spares`)."""

    def ranks(self, name: str) -> set[int]:  # noqa: D102 - see ports.Objects
        return objects.ranks_with_objects(name)

    def spares(self, name: str) -> set[int]:  # noqa: D102
        return spares.reserved(name)

    def deployments(self) -> set[str]:  # noqa: D102
        return objects.deployments_with_objects()

    def remove_ranks(self, name: str, ranks: Collection[int], stems: Mapping[int, str]) -> None:  # noqa: D102
        objects.remove_ranks(name, sorted(ranks), stems)

    def reserve_spares(  # noqa: D102
        self, plan: Plan, spares_: Sequence[RankPlacement], timeout: float, hosts: SpareHosts | None, *, wait: bool
    ) -> None:
        spares.reserve(plan, spares_, timeout, hosts, wait=wait)

    def release_spares(self, name: str, numbers: Collection[int]) -> None:  # noqa: D102
        spares.release(name, numbers)

    def sweep(self, name: str) -> Swept:  # noqa: D102
        removed = objects.sweep(name)
        return Swept(removed.actors, removed.groups)


class RayHosts:
    """Engine host actors: a launch (`launcher.apply`), and calls to the hosts that exist."""

    def launch(  # noqa: D102 - see ports.Hosts
        self, request: LaunchRequest, observer: LaunchObserver, *, keep_on_failure: bool
    ) -> LaunchResult:
        launch = Launch(
            request.plan,
            request.create,
            keep=request.keep,
            stems=request.stems,
            engine=request.engine,
            timeouts=request.timeouts,
            observer=observer,
            bind_ip=bind_ip(),
            node_ips=dict(request.node_ips),
            master_port=request.master_port,
            runtime_env=request.runtime_env,
        )
        try:
            return launch.run(keep_on_failure=keep_on_failure)
        except DpctlError as exc:
            exc.failed_ranks = {r: p.message for r, p in launch.progress.items() if p.phase is RankPhase.FAILED}
            raise

    def stop(self, name: str, ranks: Collection[int] | None, grace: float, stems: Mapping[int, str]) -> None:  # noqa: D102
        wanted = None if ranks is None else set(ranks)
        stops = [host.stop.remote() for host in objects.hosts(name, wanted, stems).values()]
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=grace + STOP_TIMEOUT)

    def tell_dp(self, name: str, ranks: Sequence[int], dp: int, stems: Mapping[int, str]) -> list[int]:  # noqa: D102
        calls = {}
        for rank in ranks:
            engine = objects.find_engine(name, rank, stems.get(rank, ""))
            if engine is not None:
                calls[engine.set_dp.remote(dp)] = rank
        done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=SET_DP_TIMEOUT) if calls else ([], [])
        told = set()
        for ref in done:
            with contextlib.suppress(Exception):
                ray.get(ref)
                told.add(calls[ref])
        return [r for r in ranks if r not in told]

    def adopt(self, name: str, takes: Mapping[int, tuple[int, RankPlacement]]) -> dict[int, str]:  # noqa: D102
        return spares.take_over(name, takes)

    def answers(self, record: Record) -> dict[HostKey, Answer | None]:  # noqa: D102
        actors = objects.hosts(record.name)
        calls: dict[HostKey, Any] = {}
        for rank in record.ranks:
            placement = rank.placement()
            for k in range(len(rank.nodes)):
                actor = actors.get(objects.host_name(record.name, placement, k, rank.stem))
                if actor is not None:
                    calls[(rank.rank, k)] = actor.health.remote()
        every = list(calls.values())
        done = set(ray.wait(every, num_returns=len(every), timeout=HEALTH_TIMEOUT)[0]) if every else set()
        return {
            (r.rank, k): (answer(calls[(r.rank, k)], done) if (r.rank, k) in calls else None)
            for r in record.ranks
            for k in range(len(r.nodes))
        }

    def reap(self, name: str, nodes_: Collection[str] | None, ranks: Collection[int] | None) -> list[str]:  # noqa: D102
        return reap.on_nodes(name, nodes_, tuple(ranks) if ranks is not None else None)


def answer(ref: Any, done: set[Any]) -> Answer:
    """A host's answer to one health call: its report, or why there is none."""
    from ray.exceptions import RayActorError  # noqa: PLC0415 - with ray

    if ref not in done:
        return Answer(late=True)
    try:
        return Answer(report=ray.get(ref))
    except RayActorError:
        return Answer(actor_died=True)
    except Exception as exc:  # noqa: BLE001 - an engine's health error is a failed rank, not a failed status
        return Answer(error=f"{type(exc).__name__}: {exc}")


class RaySupervisors:
    """`recovery: auto` supervisors, detached actors on the head (`launcher.supervision`)."""

    def status(self, name: str) -> Any | None:  # noqa: D102 - see ports.Supervisors
        return supervision.status(name)

    def start(self, name: str, recovery: Recovery, head: str | None, runtime_env: dict[str, Any] | None) -> None:  # noqa: D102
        supervision.start(name, recovery, head, runtime_env, RayPorts)

    def stop(self, name: str) -> bool:  # noqa: D102
        return supervision.stop(name)


class RayPorts:
    """Every port on the joined Ray cluster (see `launcher.ports.Ports`)."""

    def __init__(self) -> None:
        self.store = RayStore()
        self.nodes = RayNodes()
        self.objects = RayObjects()
        self.hosts = RayHosts()
        self.supervisors = RaySupervisors()

    def job(self) -> str:
        """Who runs the command: a driver's Ray job, or an actor (for records and locks)."""
        return records.current_job()

    def host_env(self, record_env: Mapping[str, Any]) -> dict[str, Any] | None:
        """A new host's runtime_env: this command's dpctl and the deployment's engine environment."""
        return shipping.host_env(shipping.current_job(), record_env)

    def engine_env(self, given: RuntimeEnv) -> dict[str, Any]:
        """What Ray made of `cluster.runtime_env` for this job (URIs), as the record keeps it."""
        return shipping.engine_env(shipping.current_job(), given)

    def now(self) -> float:
        """Wall-clock time."""
        return time.time()

    def checkpoint(self, step: str) -> None:
        """Nothing happens between steps on a real cluster (the fake one kills the command there)."""
