"""Applying a plan: placement groups and hosts first, then each unit of work as soon as its hosts are placed.

A launch creates the placement groups and hosts of the ranks it adds, all at once. Each host reports the
devices Ray granted it; a unit of work (a rank's engine, or a command engine's process, rendered from the
plan and those devices) starts as soon as every host it needs has reported. One loop listens to the
engines' readiness stream (ZMQ) and to Ray's own signals together: a group Ray calls INFEASIBLE, a host or
an engine that failed, a headless process that exited, a deadline. The first failure stops the launch, and
exactly what it created (or started, on hosts it was given) is removed or stopped before the error is raised.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, RuntimeEnvSetupError

from dpctl_ray.config import Timeouts
from dpctl_ray.engines.processes import HostKey
from dpctl_ray.engines.protocol import Frame, Phase
from dpctl_ray.engines.spec import EngineSpec
from dpctl_ray.engines.work import HostInfo
from dpctl_ray.errors import DpctlError, LaunchFailed, TimedOut
from dpctl_ray.launcher import launch_failures as failed
from dpctl_ray.launcher import objects
from dpctl_ray.launcher.progress import LaunchObserver, LaunchResult, RankPhase, RankProgress
from dpctl_ray.launcher.stream import ReadinessStream
from dpctl_ray.launcher.units import Unit, units, work
from dpctl_ray.planner.model import Plan, RankPlacement

POLL_MS = 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
GROUP_CHECK_SECONDS = 0.5


@dataclass(slots=True)
class Created:
    """What this launch created (removed on failure) and started on hosts it was given (stopped on failure)."""

    groups: list[Any] = field(default_factory=list)
    actors: list[Any] = field(default_factory=list)
    started: list[Any] = field(default_factory=list)


class Launch:
    """Creates ranks of a plan and starts their work (`up`, a scale-up, or a group restart on kept hosts).

    `create` are the ranks whose groups and hosts this launch creates; `keep` the ranks whose hosts exist and
    whose work it starts again (a group restart, with the plan's new size).
    """

    def __init__(
        self,
        plan: Plan,
        create: Sequence[RankPlacement],
        *,
        engine: EngineSpec,
        timeouts: Timeouts,
        observer: LaunchObserver,
        bind_ip: str | None,
        master_port: int = 0,
        node_ips: dict[str, str] | None = None,
        keep: Sequence[RankPlacement] = (),
        runtime_env: dict[str, Any] | None = None,
        stems: Mapping[int, str] | None = None,
    ) -> None:
        self.plan = plan
        self.create = list(create)
        self.keep = list(keep)
        self.stems = dict(stems or {})  # kept ranks on a started spare's hosts: rank -> their names' stem
        self.runtime_env = runtime_env  # each new host's (see shipping.host_env)
        self.engine = engine
        self.timeouts = timeouts
        self.observer = observer
        self.bind_ip = bind_ip
        self.token = secrets.token_hex(8)
        self.master_port = master_port
        self.created = Created()
        self.stream_address: str | None = None
        ips = node_ips or {n.id: n.ip for n in plan.nodes}
        self.node_ips = ips
        ranks = [*self.create, *self.keep]
        self.ranks = {r.rank: r for r in ranks}
        self.progress = {r.rank: RankProgress(r.rank, r.local_rank, ips.get(r.control, "?")) for r in ranks}
        self.hosts: dict[HostKey, Any] = {}
        self.infos: dict[HostKey, HostInfo] = {}
        self.serving: dict[int, tuple[int, ...]] = {}  # a host's rank -> the ranks its work serves
        self.unstreamed: set[str] = set()  # ips of nodes whose hosts cannot stream (no pyzmq there)

    def run(self, *, keep_on_failure: bool = False) -> LaunchResult:
        """Create everything, wait for readiness; on any failure, Ctrl-C included, remove what was created."""
        started = time.monotonic()
        stream = self._open_stream()
        self.stream_address = stream.address if stream else None
        self.observer.begin(list(self.progress.values()), started)
        try:
            groups = self._create(stream)
            self._wait(stream, groups, started)
        except BaseException as exc:
            self.observer.end(ok=False)
            if not keep_on_failure:
                with _no_interrupts():
                    self._undo()
            if isinstance(exc, KeyboardInterrupt):
                raise failed.interrupted() from None
            if isinstance(exc, DpctlError) and keep_on_failure:
                exc.hint = "kept what was created for debugging (--keep-on-failure); `dpctl down` removes it"
            raise
        finally:
            dropped = dict(stream.dropped) if stream else {}
            if stream:
                stream.close()
        self.observer.end(ok=True)
        return LaunchResult(
            self.progress, time.monotonic() - started, dropped, self.token, tuple(sorted(self.unstreamed))
        )

    def _undo(self) -> None:
        stops = [host.stop.remote(self.token) for host in self.created.started]
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=self.engine.stop_seconds() + 10)
        objects.remove(self.created.groups, self.created.actors)

    def _open_stream(self) -> ReadinessStream | None:
        if not self.bind_ip:
            return None
        try:
            return ReadinessStream(self.plan.name, self.token, set(self.ranks), self.bind_ip)
        except Exception:  # noqa: BLE001 - no stream is a slower launch, not a failed one: Ray's signals remain
            return None

    def _create(self, stream: ReadinessStream | None) -> dict[Any, int]:
        """Every new rank's group, then every host of new and kept ranks; the groups' ready refs by rank."""
        plan, spec = self.plan, self.plan.spec
        groups: dict[Any, int] = {}
        created_groups = {}
        labels = {n.id: n.labels for n in plan.nodes} if spec.labels else {}
        for rank in self.create:
            group = objects.create_group(plan.name, rank, plan.bundles(rank), spec, labels)
            self.created.groups.append(group)
            created_groups[rank.rank] = group
            groups[group.ready()] = rank.rank
        for rank in self.create:
            for k, _ in enumerate(rank.nodes):
                host_spec = objects.host_spec(
                    plan, rank, k, self.engine, self.token, stream.address if stream else None
                )
                host = objects.create_host(
                    plan.name, rank, k, host_spec, created_groups[rank.rank], spec.cpus, self.runtime_env
                )
                self.created.actors.append(host)
                self.hosts[(rank.rank, k)] = host
        for rank in self.keep:
            for k, _ in enumerate(rank.nodes):
                host = objects.find_host(plan.name, rank, k, self.stems.get(rank.rank, ""))
                if host is None:
                    raise failed.host_gone(plan.name, rank.rank, k)
                self.hosts[(rank.rank, k)] = host
        return groups

    def _wait(self, stream: ReadinessStream | None, groups: dict[Any, int], started: float) -> None:
        placing = dict(groups)
        informing = {host.info.remote(): key for key, host in self.hosts.items()}
        waiting = units(self.plan, self.engine, self.ranks)
        starting: dict[Any, Unit] = {}
        exits: dict[Any, Unit] = {}
        done: list[Unit] = []
        placement_deadline = started + self.timeouts.placement
        ready_deadline: float | None = None
        next_group_check = 0.0
        while waiting or starting:
            now = time.monotonic()
            if placing and now > placement_deadline:
                raise self._placement_timeout(set(placing.values()))
            if not placing and ready_deadline is None:
                ready_deadline = now + self.timeouts.ready
            if ready_deadline is not None and now > ready_deadline:
                raise self._ready_timeout({r for u in [*waiting, *starting.values()] for r in u.ranks})
            if stream is not None:
                for frame in stream.poll(POLL_MS):
                    self._on_frame(frame, started)
            else:
                time.sleep(POLL_MS / 1000)
            if placing:
                placed, _ = ray.wait(list(placing), num_returns=len(placing), timeout=0)
                for ref in placed:
                    self._set(placing.pop(ref), RankPhase.PLACED, started)
                if placing and now >= next_group_check:
                    next_group_check = now + GROUP_CHECK_SECONDS
                    self._check_groups(set(placing.values()))
            for ref in _ready(informing):
                key = informing.pop(ref)
                self.infos[key] = self._info(ref, key, started)
            for unit in [u for u in waiting if u.needs.issubset(self.infos)]:
                waiting.remove(unit)
                unit.work = work(unit, self.plan, self.engine, self.ranks, self.infos, self.node_ips, self.master_port)
                host = self.hosts[unit.host]
                starting[host.start.remote(unit.work, self.stream_address, self.token)] = unit
                self.serving[unit.host[0]] = unit.ranks
                if unit.host[0] not in {r.rank for r in self.create}:
                    self.created.started.append(host)
            for ref in _ready(starting):
                unit = starting.pop(ref)
                self._started(ref, unit, started)
                done.append(unit)
                if unit.headless:  # started (it has no readiness check): watched until the group is ready
                    exits[self.hosts[unit.host].wait_exit.remote()] = unit
                if self.engine.coupling != "group":
                    for rank in unit.ranks:
                        self._ready(rank, started)
            for ref in _ready(exits):
                unit = exits.pop(ref)
                raise self._exited(unit, ray.get(ref))
            self.observer.tick()
        for rank in self.ranks:  # a group is ready when all of it is
            self._ready(rank, started)

    def _info(self, ref: Any, key: HostKey, started: float) -> HostInfo:
        rank = key[0]
        try:
            info: HostInfo = ray.get(ref, timeout=10)
        except RuntimeEnvSetupError as exc:
            message = failed.runtime_env_failure(exc)
            self._set(rank, RankPhase.FAILED, started, message)
            raise failed.runtime_env(rank, message) from None
        except (RayActorError, RayTaskError) as exc:
            message = failed.failure(exc)
            self._set(rank, RankPhase.FAILED, started, message)
            raise failed.rank((rank,), message) from None
        if not info.streaming:
            self.unstreamed.add(info.ip)
        progress = self.progress[rank]
        if self.ranks[rank].nodes[key[1]] == self.ranks[rank].control:
            progress.node, progress.ip = info.node, info.ip
        known = [
            self.infos.get((rank, k)) or (info if k == key[1] else None) for k in range(len(self.ranks[rank].nodes))
        ]
        progress.devices = tuple(d for i in known if i for d in i.devices)
        progress.device_ips = tuple(i.ip for i in known if i for _ in i.devices)
        return info

    def _started(self, ref: Any, unit: Unit, started: float) -> None:
        try:
            ray.get(ref, timeout=10)
        except (RayActorError, RayTaskError) as exc:
            message = failed.failure(exc)
            for rank in unit.ranks:
                self._set(rank, RankPhase.FAILED, started, message)
            raise failed.rank(unit.ranks, message) from None
        except GetTimeoutError:  # ready, but the answer is slow to arrive: it will be there
            return

    def _exited(self, unit: Unit, code: int) -> LaunchFailed:
        node = self.infos[unit.host].ip if unit.host in self.infos else "?"
        detail = ""
        with contextlib.suppress(Exception):
            detail = ray.get(self.hosts[unit.host].health.remote(), timeout=5).detail
        for rank in unit.ranks:
            self._set(rank, RankPhase.FAILED, time.monotonic(), f"exited with code {code}")
        return failed.headless_exited(unit.ranks, node, code, detail)

    def _ready(self, rank: int, started: float) -> None:
        progress = self.progress[rank]
        if progress.phase is not RankPhase.READY:
            if not progress.since:
                progress.since = time.time()
            self._set(rank, RankPhase.READY, started)

    def _on_frame(self, frame: Frame, started: float) -> None:
        # A process serving several ranks reports as its host's rank: its words are theirs too.
        for rank in self.serving.get(frame.rank, (frame.rank,)):
            self._frame(rank, frame, started)

    def _frame(self, rank: int, frame: Frame, started: float) -> None:
        progress = self.progress[rank]
        if progress.phase in (RankPhase.READY, RankPhase.FAILED):
            return
        if frame.node:
            progress.node = frame.node
        if frame.ip:
            progress.ip = frame.ip
        if frame.phase is Phase.FAILED:
            self._set(rank, RankPhase.FAILED, started, frame.message)
            raise failed.rank((rank,), frame.message)
        if frame.phase is Phase.READY:
            progress.latency = max(time.time() - frame.ts, 0.0)
            if self.engine.coupling != "group":
                progress.since = frame.ts
                self._set(rank, RankPhase.READY, started)
        elif frame.phase is Phase.PROGRESS:
            progress.progress = frame.progress
            self._set(rank, RankPhase.LOADING, started, frame.message)
        elif frame.phase in (Phase.STARTING, Phase.PLACED):
            self._set(rank, RankPhase.STARTING, started, frame.message)

    def _set(self, rank: int, phase: RankPhase, started: float, message: str = "") -> None:
        progress = self.progress[rank]
        changed = progress.phase is not phase or (message and message != progress.message)
        progress.phase = phase
        if message:
            progress.message = message
        if phase is RankPhase.READY and progress.ready_in is None:
            progress.ready_in = time.monotonic() - started
        if changed or phase is RankPhase.LOADING:
            progress.changed = time.monotonic()
            self.observer.update(progress)

    def _check_groups(self, ranks: set[int]) -> None:
        for rank in sorted(ranks):
            group = next(g for g, r in zip(self.created.groups, self.create, strict=True) if r.rank == rank)
            if objects.group_infeasible(group):
                raise failed.group_infeasible(self.ranks[rank], self.plan.spec, self.node_ips)

    def _placement_timeout(self, ranks: set[int]) -> TimedOut:
        return failed.placement_timeout(ranks, self.timeouts.placement)

    def _ready_timeout(self, ranks: set[int]) -> TimedOut:
        return failed.ready_timeout([self.progress[r] for r in sorted(ranks)], self.timeouts.ready)


def _ready(refs: dict[Any, Any]) -> list[Any]:
    """The refs among `refs` that are done now (without waiting)."""
    if not refs:
        return []
    return ray.wait(list(refs), num_returns=len(refs), timeout=0)[0]


def bind_ip() -> str | None:
    """Where engines can reach this driver: its node's address as Ray sees it (none for Ray Client)."""
    if ray.util.client.ray.is_connected():
        return None  # a Ray Client driver is outside the cluster: readiness comes through Ray's signals
    try:
        return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - no address: readiness falls back to Ray's own signals
        return None


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Cleanup must finish even if Ctrl-C is pressed again."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
