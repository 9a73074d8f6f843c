"""The engine contract: what every engine kind (demo, command, python) is given and must answer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable


class EngineError(Exception):
    """An engine could not start or keep running; the message is shown to the user as is."""


class RankState(str, Enum):
    """A rank's state as `status` reports it (DESIGN.md); the values are the JSON's."""

    PENDING = "PENDING"  # waiting for its placement group
    STARTING = "STARTING"  # placed, its engine not ready yet
    READY = "READY"
    FAILED = "FAILED"  # its engine says it failed, or does not answer
    DEAD = "DEAD"  # its node or engine actor is gone


@dataclass(frozen=True, slots=True)
class EngineContext:
    """Everything a rank's engine needs to know about where it runs and who its peers are."""

    deployment: str
    rank: int
    local_rank: int
    dp: int
    dp_local: int
    world_size: int
    device: str  # the Ray resource key, e.g. GPU
    devices: tuple[str, ...]  # ids Ray granted to this rank's device bundles, in bundle order
    device_ips: tuple[str, ...]  # the node ip of each device (they differ only in span mode)
    node_id: str  # the node of the engine actor (the control bundle)
    node_ip: str
    master_ip: str  # rank 0's node
    master_port: int
    port: int  # engine.base_port + local_rank, or a port free on this node when the engine started
    tp: int = 1
    pp: int = 1
    log_path: str = ""  # this rank's log file on its node
    # per_device: the Ray actor holding each device, in `devices` order. `worker.run.remote(fn, *args)` runs
    # fn in that device's own process, which sees only its device (the seed's one worker per device).
    workers: tuple[Any, ...] = ()

    def log(self, line: str) -> None:
        """Append a timestamped line to this rank's log (what `dpctl logs` shows)."""
        if self.log_path:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.log_path, "a", encoding="utf-8") as f:  # noqa: PTH123
                f.write(f"{stamp} {line}\n")


class Progress(Protocol):
    """How an engine reports loading progress while `start` runs."""

    def progress(self, fraction: float | None, message: str = "") -> None:
        """Report 0..1 of the way to ready (None: no percentage, only a message)."""


@dataclass(frozen=True, slots=True)
class Health:
    """An engine's answer to a health call."""

    ok: bool
    detail: str = ""


@runtime_checkable
class Engine(Protocol):
    """One rank's engine. `start` blocks until ready (or raises EngineError); the rest must be quick."""

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Bring the engine up on the devices in `ctx`; return when it serves, raise EngineError if it cannot."""

    def health(self) -> Health:
        """Whether the engine still serves."""

    def set_dp(self, dp: int) -> None:
        """The deployment now has `dp` ranks (after a scale)."""

    def stop(self) -> None:
        """Shut down and release everything the engine started."""


REQUIRED_METHODS = ("start", "health", "set_dp", "stop")


@dataclass(frozen=True, slots=True)
class HostReport:
    """What a rank's engine host says about it: its state, where it runs, what Ray granted, what it started."""

    state: RankState
    detail: str
    devices: tuple[str, ...]
    device_ips: tuple[str, ...]
    node: str
    ip: str
    since: float
    dp: int  # the size the engine was last told
    pid: int  # the host actor's process
    worker_pids: tuple[int, ...]
    port: int
    process_pid: int | None  # a command engine's process
    log_path: str
    rank: int = 0
    node_index: int = 0  # which node of the rank this host holds
    serves: tuple[int, ...] = ()  # the ranks its work (engine or process) serves; () while it runs none
    argv: tuple[str, ...] = ()  # its process's command line and environment additions
    env: tuple[tuple[str, str], ...] = ()
    api: bool = False  # its process serves (it is not headless)
    ended: bool = False  # its process has exited (a failure's cause, where a peer that lost it is only unhealthy)
