"""The actors on the cluster: one engine host per rank per node it spans, holding the rank's devices there.

A host is created on its bundle and holds its devices from then on: in the per_node layout Ray grants them
to the host itself, in per_device to one device worker per bundle. The launcher then gives it work: a
rank's engine (demo, python) or a rendered process; `start` blocks until that is ready, `stop` ends it and
keeps the devices (a group restarts its processes on the hosts it already has).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dpctl_ray.engines.base import Engine, EngineError, HostReport, RankState
from dpctl_ray.engines.command import CommandEngine, Owner
from dpctl_ray.engines.loader import load_engine_class
from dpctl_ray.engines.protocol import Phase
from dpctl_ray.engines.report import StreamReporter
from dpctl_ray.engines.spec import DemoSpec, PythonSpec
from dpctl_ray.engines.work import EngineWork, HostInfo, HostSpec, ProcessWork, Work


def log_path(log_dir: str, deployment: str, rank: int, node_index: int = 0, spare: int | None = None) -> str:
    """Where a host's log lives on its node: rank-R.log, or rank-R-node-K.log for a rank's further nodes.

    A started spare's host logs to spare-N.log (spare-N-node-K.log) until a rank takes it over.
    """
    stem = f"rank-{rank}" if spare is None else f"spare-{spare}"
    name = f"{stem}.log" if node_index == 0 else f"{stem}-node-{node_index}.log"
    return str(Path(log_dir) / deployment / name)


class DeviceWorker:
    """Holds one device bundle (the per_device layout): the device ids it reports are the ones Ray granted."""

    def __init__(self, device: str) -> None:
        self._device = device

    def info(self) -> dict[str, Any]:
        """Granted device ids, node and process of this worker."""
        context = ray.get_runtime_context()
        return {"ids": [str(i) for i in context.get_accelerator_ids().get(self._device, [])], "pid": os.getpid()}

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an engine's function in this device's process (a per_device python engine's own work)."""
        return fn(*args, **kwargs)


RemoteDeviceWorker: Any = ray.remote(DeviceWorker)


def make_engine(spec: DemoSpec | PythonSpec) -> Engine:
    """The engine a demo or python `engine:` section describes."""
    if isinstance(spec, DemoSpec):
        from dpctl_ray.engines.demo import DemoEngine  # noqa: PLC0415 - only the kind that runs is imported

        return DemoEngine(init_seconds=spec.init_seconds, fail_ranks=spec.fail_ranks)
    cls = load_engine_class(spec.cls)
    try:
        engine: Engine = cls(**dict(spec.args))
    except TypeError as exc:
        raise EngineError(f"engine.args: {spec.cls} does not take these arguments: {exc}") from None
    return engine


class EngineHost:
    """One rank's devices on one node, and the work the launcher runs there."""

    def __init__(self, spec: HostSpec, placement_group: Any) -> None:
        self.spec = spec
        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self.log_path = log_path(spec.log_dir, spec.deployment, spec.rank, spec.node_index, spec.spare)
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        rotate(self.log_path)  # a new host of the rank (a repair, a new launch): a log of its own
        self.port = spec.base_port + spec.local_rank if spec.base_port else _free_port(self.ip)
        self.reporter = StreamReporter(spec.stream, spec.deployment, spec.token, spec.rank)
        # Ray's defaults for its own workers that a command's process must not inherit (the user's own stay).
        given = (context.runtime_env or {}).get("env_vars") or {}
        self.ray_defaults = tuple(k for k in RAY_WORKER_DEFAULTS if k not in given)
        self.workers: list[Any] = []
        self.worker_pids: tuple[int, ...] = ()
        if spec.layout == "per_device":
            self.devices = self._start_workers(placement_group)
        else:
            self.devices = tuple(str(i) for i in context.get_accelerator_ids().get(spec.device, []))
        self.state = RankState.STARTING
        self.since = time.time()
        self.detail = "placed"
        self.dp = 0
        self.work: Work | None = None
        self.engine: Engine | None = None
        self.process: CommandEngine | None = None
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()  # tokens of launches undone: their start() calls start nothing
        self.starts = 0  # work started on this host so far
        who = f"rank {spec.rank}" if spec.spare is None else f"spare {spec.spare}"
        self.log(f"dpctl: {who}, node {spec.node_index} on {self.ip}: devices {','.join(self.devices) or '-'}")
        if spec.stream and not self.reporter.streaming:
            self.log("dpctl: no pyzmq on this node: readiness goes through Ray, without live progress")
        self.reporter.send(Phase.PLACED, "devices held", devices=self.devices, node=self.node, ip=self.ip)

    def _start_workers(self, placement_group: Any) -> tuple[str, ...]:
        device = self.spec.device
        options: dict[str, Any] = {"num_cpus": 0}
        if device == "GPU":
            options["num_gpus"] = 1
        elif device == "CPU":
            options["num_cpus"] = 1
        else:
            options["resources"] = {device: 1}
        self.workers = [
            RemoteDeviceWorker.options(
                **options,
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=i),
            ).remote(device)
            for i in self.spec.device_bundles
        ]
        infos = ray.get([w.info.remote() for w in self.workers])
        self.worker_pids = tuple(i["pid"] for i in infos)
        return tuple(i["ids"][0] if i["ids"] else "" for i in infos)

    def log(self, line: str) -> None:
        """Append a timestamped line to this host's log (what `dpctl logs` shows)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path, "a", encoding="utf-8") as f:  # noqa: PTH123
            f.write(f"{stamp} {line}\n")

    def become(self, rank: int, local_rank: int) -> HostInfo:
        """A started spare's host takes over a rank: its number, local rank, log and port (work comes next)."""
        spare = self.spec.spare
        self.spec = dataclasses.replace(self.spec, rank=rank, local_rank=local_rank, spare=None)
        self.log(f"dpctl: spare {spare} becomes rank {rank} (local rank {local_rank})")
        self.log_path = log_path(self.spec.log_dir, self.spec.deployment, rank, self.spec.node_index)
        rotate(self.log_path)
        if self.spec.base_port:
            self.port = self.spec.base_port + local_rank
        self.log(f"dpctl: rank {rank}, node {self.spec.node_index} on {self.ip} (was spare {spare})")
        return self.info()

    def info(self) -> HostInfo:
        """What the launcher needs to render work: node, ip, granted device ids, port."""
        return HostInfo(
            rank=self.spec.rank,
            node_index=self.spec.node_index,
            node=self.node,
            ip=self.ip,
            devices=self.devices,
            port=self.port,
            pid=os.getpid(),
            worker_pids=self.worker_pids,
            log_path=self.log_path,
            workers=tuple(self.workers),
            streaming=self.reporter.streaming or not self.reporter.address,
        )

    def start(self, work: Work, stream: str | None, token: str) -> HostReport:
        """Run `work` here and return once it is ready; raise EngineError (with the engine's words) if it fails.

        `stream` and `token` are the readiness socket of the launch that starts it (a group restart is a later
        launch than the one that created the host).
        """
        replaced = None
        try:
            with self._lock:
                if (stream, token) != (self.reporter.address, self.reporter.token):
                    replaced = self.reporter
                    self.reporter = StreamReporter(stream, self.spec.deployment, token, self.spec.rank)
                # This call reports through its own launch's reporter to the end: a later launch may replace
                # self.reporter while this one still finishes (a start undone by its launch reports its failure).
                reporter = self.reporter
                if token in self._cancelled:  # the launch was undone before this call ran: start nothing
                    raise EngineError("stopped before it started (its launch was undone)")
                self.work, self.state, self.detail = work, RankState.STARTING, "starting"
                self.dp = work.dp if isinstance(work, ProcessWork) else work.ctx.dp
                # Made under the lock, so that a stop() from here on finds what to stop.
                engine = make_engine(work.spec) if isinstance(work, EngineWork) else None
                process = None
                if isinstance(work, ProcessWork):
                    if self.starts:  # a group restart: each process start has a log of its own
                        rotate(self.log_path)
                        self.log(f"dpctl: rank {self.spec.rank}, node {self.spec.node_index} on {self.ip}, again")
                    owner = Owner(self.spec.deployment, self.spec.node_index)
                    process = CommandEngine(work, self.log_path, self.ip, owner, drop=self.ray_defaults)
                self.starts += 1
                self.engine, self.process = engine, process
        finally:
            if replaced is not None:
                replaced.close()  # outside the lock: it may wait its linger time for a launcher that is gone
        reporter.send(Phase.STARTING, "starting", devices=self.devices, node=self.node, ip=self.ip)
        try:
            if engine is not None and isinstance(work, EngineWork):
                engine.start(dataclasses.replace(work.ctx, log_path=self.log_path), reporter)
            elif process is not None:
                process.start(self.log, reporter)
        except Exception as exc:  # noqa: BLE001 - whatever an engine raises fails its rank, in its own words
            message = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            self.log(f"dpctl: failed to start: {message}")
            with self._lock:
                undone = token in self._cancelled  # stopped by its launch's undo: not this rank's own failure
            if not undone:
                self.state, self.detail, self.since = RankState.FAILED, message, time.time()
            reporter.send(Phase.FAILED, message)
            raise EngineError(message) from None
        self.state, self.since = RankState.READY, time.time()
        self.log("dpctl: ready")
        reporter.send(Phase.READY, devices=self.devices, node=self.node, ip=self.ip)
        return self.health()

    def wait_exit(self) -> int:
        """Block until this host's process exits; its exit code (the launcher watches headless processes so)."""
        return self.process.wait() if self.process is not None else 0

    def health(self) -> HostReport:
        """State, devices and node of this host, with its work's own health."""
        health = None
        if self.state is RankState.READY:
            if self.engine is not None:
                health = self.engine.health()
            elif self.process is not None:
                health = self.process.health()
        if health is not None:
            if health.ok:
                self.detail = health.detail
            else:
                self.state, self.detail, self.since = RankState.FAILED, health.detail, time.time()
        work = self.work
        return HostReport(
            state=self.state,
            detail=self.detail,
            devices=self.devices,
            device_ips=(self.ip,) * len(self.devices),
            node=self.node,
            ip=self.ip,
            since=self.since,
            dp=self.dp,
            pid=os.getpid(),
            worker_pids=self.worker_pids,
            port=self.port,
            process_pid=self.process.pid if self.process is not None else None,
            log_path=self.log_path,
            rank=self.spec.rank,
            node_index=self.spec.node_index,
            serves=work.ranks if isinstance(work, ProcessWork) else ((self.spec.rank,) if work else ()),
            argv=work.argv if isinstance(work, ProcessWork) else (),
            env=work.env if isinstance(work, ProcessWork) else (),
            api=isinstance(work, ProcessWork) and work.ready is not None,
            ended=self.process is not None and self.process.ended,
        )

    def set_dp(self, dp: int) -> None:
        """Tell a rank's engine the deployment's new size (independent ranks keep running)."""
        self.dp = dp
        if self.engine is not None:
            self.engine.set_dp(dp)
        self.log(f"dpctl: the deployment now has {dp} ranks")

    def stop(self, token: str | None = None) -> None:
        """End this host's work (a process gets SIGTERM, then SIGKILL); the devices stay held.

        `token`: the launch being undone. A start() of that launch still queued behind this call (the host
        runs calls concurrently) then starts nothing.
        """
        with self._lock:
            if token is not None:
                self._cancelled.add(token)
            engine, process = self.engine, self.process
        if engine is not None:
            engine.stop()
        how = process.stop() if process is not None else ""
        with self._lock:
            if self.engine is engine and self.process is process:  # else a later start() has begun meanwhile
                self.engine, self.process, self.work = None, None, None
                self.state, self.detail = RankState.STARTING, "stopped"
        self.log(f"dpctl: stopped{': ' + how if how else ''}")


# Ray sets OMP_NUM_THREADS to a worker's CPUs (the host holds its rank's control CPUs, and in per_node a CPU
# device's too). A command sizes its own threads: vLLM's CPU build then leaves torch at that count, and two
# ranks on two cores spin against each other (a 2-rank `up` took ~10% longer than the same `vllm serve`s).
RAY_WORKER_DEFAULTS = ("OMP_NUM_THREADS",)

KEEP_LOGS = 3  # earlier starts' logs kept beside the current one: rank-R.log.1 (the last) .. rank-R.log.3


def rotate(path: str) -> None:
    """Move a log that has lines to path.1 (path.1 to path.2, ...), so that each start writes a log of its own."""
    current = Path(path)
    try:
        if current.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    for n in range(KEEP_LOGS - 1, 0, -1):
        older = Path(f"{path}.{n}")
        if older.exists():
            older.replace(f"{path}.{n + 1}")
    current.replace(f"{path}.1")


@ray.remote(num_cpus=0)
def read_log(path: str, offset: int, limit: int, tail: int | None) -> tuple[str, int]:
    """Read a log on its node: `tail` last lines (from the end), or up to `limit` bytes from `offset`."""
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
