"""The actors on the cluster: one engine host per rank on its control bundle, one device worker per device bundle."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dpctl_ray.engines.base import Engine, EngineContext, EngineError, HostReport, RankState
from dpctl_ray.engines.loader import load_engine_class
from dpctl_ray.engines.protocol import Phase
from dpctl_ray.engines.report import StreamReporter
from dpctl_ray.engines.spec import CommandSpec, DemoSpec, EngineSpec, PythonSpec


@dataclass(frozen=True, slots=True)
class RankLaunch:
    """What the launcher tells one rank's host: who it is, its peers, and where to report."""

    deployment: str
    token: str
    stream: str | None  # tcp://ip:port of the launcher's readiness socket, if any
    rank: int
    local_rank: int
    dp: int
    dp_local: int
    world_size: int
    device: str
    master_ip: str
    master_port: int
    tp: int = 1
    pp: int = 1


def log_path(log_dir: str, deployment: str, rank: int) -> str:
    """Where a rank's log lives on its node."""
    return str(Path(log_dir) / deployment / f"rank-{rank}.log")


class DeviceWorker:
    """Holds one device bundle, as vLLM's workers do: the device ids it reports are the ones Ray granted."""

    def __init__(self, device: str) -> None:
        self._device = device

    def info(self) -> dict[str, Any]:
        """Granted device ids, node and process of this worker."""
        context = ray.get_runtime_context()
        return {
            "ids": [str(i) for i in context.get_accelerator_ids().get(self._device, [])],
            "node": context.get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }


RemoteDeviceWorker: Any = ray.remote(DeviceWorker)


def make_engine(spec: EngineSpec) -> Engine:
    """The engine a config's `engine:` section describes."""
    if isinstance(spec, DemoSpec):
        from dpctl_ray.engines.demo import DemoEngine  # noqa: PLC0415

        return DemoEngine(init_seconds=spec.init_seconds, fail_ranks=spec.fail_ranks)
    if isinstance(spec, CommandSpec):
        from dpctl_ray.engines.command import CommandEngine  # noqa: PLC0415

        return CommandEngine(spec)
    if isinstance(spec, PythonSpec):
        cls = load_engine_class(spec.cls)
        try:
            engine: Engine = cls(**dict(spec.args))
        except TypeError as exc:
            raise EngineError(f"engine.args: {spec.cls} does not take these arguments: {exc}") from None
        return engine
    raise EngineError(f"engine.kind: unknown kind {spec.kind!r}")


class EngineHost:
    """One rank: starts its device workers, then its engine, reporting each phase; answers health afterwards.

    The engine starts inside __init__, so a failed start is an actor that died in __init__, which Ray reports
    to the launcher at once, with the engine's own exception as the cause.
    """

    def __init__(self, launch: RankLaunch, engine: EngineSpec, placement_group: Any) -> None:
        self.launch = launch
        self.state = RankState.STARTING
        self.since = time.time()
        self.detail = ""
        self.dp = launch.dp
        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self.devices: tuple[str, ...] = ()
        self.device_ips: tuple[str, ...] = ()
        self.worker_pids: tuple[int, ...] = ()
        self.log_path = log_path(engine.log_dir, launch.deployment, launch.rank)
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        self.port = engine.base_port + launch.local_rank if engine.base_port else _free_port(self.ip)
        self._reporter = StreamReporter(launch.stream, launch.deployment, launch.token, launch.rank)
        self._reporter.send(Phase.STARTING, "engine actor up", node=self.node, ip=self.ip)
        self.ctx: EngineContext | None = None
        try:
            self.workers = self._start_workers(placement_group)
            self.ctx = EngineContext(
                deployment=launch.deployment,
                rank=launch.rank,
                local_rank=launch.local_rank,
                dp=launch.dp,
                dp_local=launch.dp_local,
                world_size=launch.world_size,
                device=launch.device,
                devices=self.devices,
                device_ips=self.device_ips,
                node_id=self.node,
                node_ip=self.ip,
                master_ip=launch.master_ip,
                master_port=launch.master_port,
                port=self.port,
                tp=launch.tp,
                pp=launch.pp,
                log_path=self.log_path,
            )
            self.ctx.log(
                f"dpctl: rank {launch.rank} of {launch.dp} ({launch.deployment}) on {self.ip}, "
                f"devices {','.join(self.devices) or '-'}, port {self.port}"
            )
            self.engine = make_engine(engine)
            self.engine.start(self.ctx, self._reporter)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            if self.ctx is not None:
                self.ctx.log(f"dpctl: failed to start: {message}")
            self._reporter.send(Phase.FAILED, message)
            self._reporter.close()
            raise
        self.state = RankState.READY
        self.since = time.time()
        self.ctx.log("dpctl: ready")
        self._reporter.send(Phase.READY, devices=self.devices, node=self.node, ip=self.ip)

    def _start_workers(self, placement_group: Any) -> list[Any]:
        device = self.launch.device
        options: dict[str, Any] = {"num_cpus": 0}
        if device == "GPU":
            options["num_gpus"] = 1
        elif device == "CPU":
            options["num_cpus"] = 1
        else:
            options["resources"] = {device: 1}
        workers = [
            RemoteDeviceWorker.options(
                **options,
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=i),
            ).remote(device)
            for i in range(self.launch.world_size)
        ]
        infos = ray.get([w.info.remote() for w in workers])
        self.devices = tuple(i["ids"][0] if i["ids"] else "" for i in infos)
        self.device_ips = tuple(i["ip"] for i in infos)
        self.worker_pids = tuple(i["pid"] for i in infos)
        self._reporter.send(Phase.PLACED, "device workers up", devices=self.devices, node=self.node, ip=self.ip)
        return workers

    def ready(self) -> HostReport:
        """Returns once the engine serves (Ray runs this after __init__); raises if __init__ failed."""
        return self.health()

    def health(self) -> HostReport:
        """State, devices and node of this rank, with the engine's own health."""
        if self.state is RankState.READY:
            health = self.engine.health()
            if not health.ok:
                self.state, self.detail, self.since = RankState.FAILED, health.detail, time.time()
            else:
                self.detail = health.detail
        return HostReport(
            state=self.state,
            detail=self.detail,
            devices=self.devices,
            device_ips=self.device_ips,
            node=self.node,
            ip=self.ip,
            since=self.since,
            dp=self.dp,
            pid=os.getpid(),
            worker_pids=self.worker_pids,
            port=self.port,
            process_pid=getattr(self.engine, "pid", None),
            log_path=self.log_path,
        )

    def set_dp(self, dp: int) -> None:
        """Tell the engine the deployment's new size."""
        self.dp = dp
        self.engine.set_dp(dp)
        if self.ctx is not None:
            self.ctx.log(f"dpctl: the deployment now has {dp} ranks")

    def stop(self) -> None:
        """Stop the engine (and any process it runs); its workers go with this actor."""
        self.engine.stop()
        if self.ctx is not None:
            self.ctx.log("dpctl: stopped")
        self._reporter.close()


@ray.remote(num_cpus=0)
def read_log(path: str, offset: int, limit: int, tail: int | None) -> tuple[str, int]:
    """Read a rank's log on its node: `tail` last lines (from the end), or up to `limit` bytes from `offset`."""
    try:
        with open(path, "rb") as f:  # noqa: PTH123
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if tail is not None:
                start = max(size - 256 * 1024, 0)
                f.seek(start)
                lines = f.read().decode(errors="replace").splitlines(keepends=True)
                return "".join(lines[-tail:] if tail else []), size
            if offset > size:
                offset = 0  # the file was replaced: start over
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return "", 0
    cut = data.rfind(b"\n") + 1 if len(data) == limit else len(data)
    return data[:cut].decode(errors="replace"), offset + cut


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])
