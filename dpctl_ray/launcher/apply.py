"""Applying a plan: create every rank's placement group and engine at once, then wait on one loop.

The loop listens to the engines' readiness stream (ZMQ) and to Ray's own signals together: a group Ray
calls INFEASIBLE, an engine actor that died in __init__, a deadline. The first failure stops the launch,
and exactly what this launch created is removed before the error is raised.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from dpctl_ray.config import Timeouts
from dpctl_ray.engines.base import HostReport
from dpctl_ray.engines.host import RankLaunch
from dpctl_ray.engines.protocol import Frame, Phase
from dpctl_ray.engines.spec import EngineSpec
from dpctl_ray.errors import DpctlError, InfeasibleError, Interrupted, LaunchFailed, TimedOut
from dpctl_ray.launcher import objects
from dpctl_ray.launcher.progress import LaunchObserver, LaunchResult, RankPhase, RankProgress
from dpctl_ray.launcher.stream import ReadinessStream
from dpctl_ray.planner.model import Plan, RankPlacement

POLL_MS = 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
GROUP_CHECK_SECONDS = 0.5


@dataclass(slots=True)
class Created:
    """What this launch created, so that a failure removes exactly that."""

    groups: list[Any] = field(default_factory=list)
    actors: list[Any] = field(default_factory=list)


class Launch:
    """Creates and waits for a set of ranks of one plan (all of them for `up`, the new ones for a scale-up)."""

    def __init__(
        self,
        plan: Plan,
        ranks: list[RankPlacement],
        *,
        engine: EngineSpec,
        timeouts: Timeouts,
        observer: LaunchObserver,
        bind_ip: str | None,
        master_port: int = 0,
        node_ips: dict[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self.ranks = ranks
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
        self.progress = {r.rank: RankProgress(r.rank, r.local_rank, ips.get(r.control, "?")) for r in ranks}

    def run(self, *, keep_on_failure: bool = False) -> LaunchResult:
        """Create everything, wait for readiness; on any failure, Ctrl-C included, remove what was created."""
        started = time.monotonic()
        stream = self._open_stream()
        self.stream_address = stream.address if stream else None
        self.observer.begin(list(self.progress.values()), started)
        try:
            self._create(stream)
            self._wait(stream, started)
        except BaseException as exc:
            self.observer.end(ok=False)
            if not keep_on_failure:
                with _no_interrupts():
                    objects.remove(self.created.groups, self.created.actors)
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(
                    "interrupted: removed the placement groups and engines this launch created",
                ) from None
            if isinstance(exc, DpctlError) and keep_on_failure:
                exc.hint = "kept what was created for debugging (--keep-on-failure); `dpctl down` removes it"
            raise
        finally:
            dropped = dict(stream.dropped) if stream else {}
            if stream:
                stream.close()
        self.observer.end(ok=True)
        return LaunchResult(self.progress, time.monotonic() - started, dropped, self.token)

    def _open_stream(self) -> ReadinessStream | None:
        if not self.bind_ip:
            return None
        try:
            return ReadinessStream(self.plan.name, self.token, {r.rank for r in self.ranks}, self.bind_ip)
        except Exception:  # noqa: BLE001 - no stream is a slower launch, not a failed one: Ray's signals remain
            return None

    def _create(self, stream: ReadinessStream | None) -> None:
        plan = self.plan
        spec = plan.spec
        rank0 = next((r for r in plan.ranks if r.rank == 0), None)
        master_ip = self.node_ips.get(rank0.control, "") if rank0 else ""
        groups = {}
        for rank in self.ranks:
            group = objects.create_group(plan.name, rank, plan.bundles(rank))
            self.created.groups.append(group)
            groups[rank.rank] = group
        for rank in self.ranks:
            launch = RankLaunch(
                deployment=plan.name,
                token=self.token,
                stream=stream.address if stream else None,
                rank=rank.rank,
                local_rank=rank.local_rank,
                dp=spec.dp,
                dp_local=spec.dp_local,
                world_size=spec.world_size,
                device=spec.device,
                master_ip=master_ip,
                master_port=self.master_port,
                tp=spec.tp,
                pp=spec.pp,
            )
            actor = objects.create_engine(plan.name, launch, self.engine, groups[rank.rank], spec.cpus)
            self.created.actors.append(actor)
        self._groups = groups

    def _wait(self, stream: ReadinessStream | None, started: float) -> None:
        placing = {self._groups[r.rank].ready(): r.rank for r in self.ranks}
        actors = dict(zip([r.rank for r in self.ranks], self.created.actors, strict=True))
        readying = {actors[r.rank].ready.remote(): r.rank for r in self.ranks}
        placement_deadline = started + self.timeouts.placement
        ready_deadline: float | None = None
        next_group_check = 0.0
        while readying:
            now = time.monotonic()
            if placing and now > placement_deadline:
                raise self._placement_timeout(set(placing.values()))
            if not placing and ready_deadline is None:
                ready_deadline = now + self.timeouts.ready
            if ready_deadline is not None and now > ready_deadline:
                raise self._ready_timeout(set(readying.values()))
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
            done, _ = ray.wait(list(readying), num_returns=len(readying), timeout=0)
            for ref in done:
                rank = readying.pop(ref)
                self._on_ready(rank, ref, started)
            self.observer.tick()

    def _on_frame(self, frame: Frame, started: float) -> None:
        progress = self.progress[frame.rank]
        if progress.phase in (RankPhase.READY, RankPhase.FAILED):
            return
        if frame.node:
            progress.node = frame.node
        if frame.ip:
            progress.ip = frame.ip
        if frame.devices:
            progress.devices = frame.devices
        if frame.phase is Phase.FAILED:
            self._set(frame.rank, RankPhase.FAILED, started, frame.message)
            raise LaunchFailed(
                f"rank {frame.rank} failed to start: {frame.message}",
                hint="fix the engine or its config; everything this launch created was removed",
                code="engine_failed",
            )
        if frame.phase is Phase.READY:
            progress.latency = max(time.time() - frame.ts, 0.0)
            progress.since = frame.ts
            self._set(frame.rank, RankPhase.READY, started)
        elif frame.phase is Phase.PROGRESS:
            progress.progress = frame.progress
            self._set(frame.rank, RankPhase.LOADING, started, frame.message)
        elif frame.phase in (Phase.STARTING, Phase.PLACED):
            self._set(frame.rank, RankPhase.STARTING, started, frame.message)

    def _on_ready(self, rank: int, ref: Any, started: float) -> None:
        try:
            info: HostReport = ray.get(ref, timeout=5)
        except RayActorError as exc:
            message = actor_failure(exc)
            self._set(rank, RankPhase.FAILED, started, message)
            raise LaunchFailed(
                f"rank {rank} failed to start: {message}",
                hint="fix the engine or its config; everything this launch created was removed",
                code="engine_failed",
            ) from None
        except GetTimeoutError:
            return
        progress = self.progress[rank]
        progress.devices = info.devices
        progress.device_ips = info.device_ips
        progress.node = info.node
        progress.ip = info.ip
        if not progress.since:
            progress.since = info.since
        if progress.phase is not RankPhase.READY:
            self._set(rank, RankPhase.READY, started)

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
            if objects.group_infeasible(self._groups[rank]):
                placement = next(r for r in self.ranks if r.rank == rank)
                where = ", ".join(
                    f"{self.node_ips.get(n, n)} ({c} {self.plan.spec.device})"
                    for n, c in zip(placement.nodes, placement.devices, strict=True)
                )
                raise InfeasibleError(
                    f"rank {rank}: Ray cannot place its group on {where} + {self.plan.spec.cpus:g} CPU: "
                    "the node is gone or lacks the resources now",
                    hint="the cluster changed since planning; run `dpctl plan` to see what fits now",
                    code="group_infeasible",
                )

    def _placement_timeout(self, ranks: set[int]) -> TimedOut:
        listed = ", ".join(str(r) for r in sorted(ranks))
        return TimedOut(
            f"placement timed out after {self.timeouts.placement:g}s: ranks {listed} still wait for resources "
            "(another job holds them, or a node is busy)",
            hint="raise timeouts.placement, or free the devices; everything this launch created was removed",
            code="placement_timeout",
        )

    def _ready_timeout(self, ranks: set[int]) -> TimedOut:
        parts = []
        for rank in sorted(ranks):
            p = self.progress[rank]
            phase = p.phase.value + (f" {p.progress:.0%}" if p.phase is RankPhase.LOADING and p.progress else "")
            parts.append(f"{rank} ({phase})")
        return TimedOut(
            f"engines not ready after {self.timeouts.ready:g}s: ranks {', '.join(parts)}",
            hint="raise timeouts.ready if loading is just slow; everything this launch created was removed",
            code="ready_timeout",
        )


def bind_ip() -> str | None:
    """Where engines can reach this driver: its node's address as Ray sees it (none for Ray Client)."""
    try:
        return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - no address: readiness falls back to Ray's own signals
        return None


def actor_failure(exc: RayActorError) -> str:
    """The engine's own message from a dead actor: the exception __init__ raised, when that is what happened.

    Ray keeps no exception object here, only text that ends with the traceback's last line,
    `Type: message`; an EngineError is shown as its message alone, anything else with its type.
    """
    lines = _ANSI.sub("", str(exc)).strip().splitlines()
    if not lines:
        return "its engine actor died"
    if not exc.actor_init_failed:
        return " ".join(line.strip() for line in lines if line.strip())
    last = lines[-1].strip()
    kind, sep, message = last.partition(": ")
    if sep and kind.rsplit(".", 1)[-1] == "EngineError":
        return message
    return last


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
