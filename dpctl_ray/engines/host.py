"""The actors on the cluster: one engine host per rank on its control bundle, one device worker per device bundle."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dpctl_ray.engines.base import Engine, EngineContext, EngineError
from dpctl_ray.engines.protocol import Phase
from dpctl_ray.engines.report import StreamReporter


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


class DeviceWorker:
    """Holds one device bundle, as vLLM's workers do: the device ids it reports are the ones Ray granted."""

    def info(self) -> dict[str, Any]:
        """Granted device ids, node and process of this worker."""
        context = ray.get_runtime_context()
        return {
            "ids": [str(i) for i in context.get_accelerator_ids().get(self._device, [])],
            "node": context.get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }

    def __init__(self, device: str) -> None:
        self._device = device


RemoteDeviceWorker: Any = ray.remote(DeviceWorker)


def make_engine(spec: dict[str, Any]) -> Engine:
    """The engine a config's `engine:` section describes."""
    kind = spec.get("kind", "demo")
    if kind == "demo":
        from dpctl_ray.engines.demo import DemoEngine  # noqa: PLC0415

        return DemoEngine(
            init_seconds=float(spec.get("init_seconds", 1.0)), fail_ranks=tuple(spec.get("fail_ranks", ()))
        )
    raise EngineError(f"engine.kind: unknown kind {kind!r}")


class EngineHost:
    """One rank: starts its device workers, then its engine, reporting each phase; answers health afterwards.

    The engine starts inside __init__, so a failed start is an actor that died in __init__, which Ray reports
    to the launcher at once, with the engine's own exception as the cause.
    """

    def __init__(self, launch: RankLaunch, engine: dict[str, Any], placement_group: Any) -> None:
        self.launch = launch
        self.state = "STARTING"
        self.since = time.time()
        self.detail = ""
        self.dp = launch.dp
        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self.devices: tuple[str, ...] = ()
        self.device_ips: tuple[str, ...] = ()
        self._reporter = StreamReporter(launch.stream, launch.deployment, launch.token, launch.rank)
        self._reporter.send(Phase.STARTING, "engine actor up", node=self.node, ip=self.ip)
        try:
            self.workers = self._start_workers(placement_group)
            ctx = EngineContext(
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
                port=_free_port(self.ip),
            )
            self.engine = make_engine(engine)
            self.engine.start(ctx, self._reporter)
        except BaseException as exc:
            self._reporter.send(
                Phase.FAILED, f"{type(exc).__name__}: {exc}" if not isinstance(exc, EngineError) else str(exc)
            )
            self._reporter.close()
            raise
        self.state = "READY"
        self.since = time.time()
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

    def ready(self) -> dict[str, Any]:
        """Returns once the engine serves (Ray runs this after __init__); raises if __init__ failed."""
        return self.health()

    def health(self) -> dict[str, Any]:
        """State, devices and node of this rank, with the engine's own health."""
        if self.state == "READY":
            health = self.engine.health()
            if not health.ok:
                self.state, self.detail, self.since = "FAILED", health.detail, time.time()
            else:
                self.detail = health.detail
        return {
            "state": self.state,
            "detail": self.detail,
            "devices": list(self.devices),
            "device_ips": list(self.device_ips),
            "node": self.node,
            "ip": self.ip,
            "since": self.since,
            "dp": self.dp,
            "pid": os.getpid(),
            "worker_pids": list(self.worker_pids),
        }

    def set_dp(self, dp: int) -> None:
        """Tell the engine the deployment's new size."""
        self.dp = dp
        self.engine.set_dp(dp)

    def stop(self) -> None:
        """Stop the engine (its workers go with this actor)."""
        self.engine.stop()
        self._reporter.close()


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])
