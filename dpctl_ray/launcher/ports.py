"""The seam between dpctl's operations and Ray: what they need of a cluster, as small protocols.

`launcher.ray_ports` implements them on Ray; `tests/fake_cluster.py` in memory, so that rollback, recovery
and spares are tested in milliseconds, crash by crash. Operations (`launcher.operations`) and the reconciler
use nothing else of the cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from dpctl_ray.config import Recovery, RuntimeEnv, Timeouts
from dpctl_ray.deployment.record import Record
from dpctl_ray.deployment.status import Answer, HostKey
from dpctl_ray.engines.spec import EngineSpec
from dpctl_ray.launcher.progress import LaunchObserver, LaunchResult
from dpctl_ray.planner.model import Node, Plan, RankPlacement


class Store(Protocol):
    """Deployment records and the lock per deployment (the GCS key-value store)."""

    def load(self, name: str) -> Record | None:
        """The deployment's record, or None."""

    def save(self, record: Record) -> None:
        """Write (or overwrite) the record."""

    def delete(self, name: str) -> bool:
        """Remove the record; whether there was one."""

    def names(self) -> list[str]:
        """Every deployment with a record, sorted."""

    def locked(self, name: str, command: str) -> AbstractContextManager[None]:
        """Hold the deployment's lock for one command (Busy while a live command holds it)."""

    def lock_holder(self, name: str) -> dict[str, Any] | None:
        """Who holds the lock, if anyone alive does."""

    def drop_lock(self, name: str) -> None:
        """Remove the lock key (`down --force`)."""


class Nodes(Protocol):
    """The cluster's nodes as the planner sees them, and which are alive."""

    def snapshot(self) -> tuple[Node, ...]:
        """Alive nodes with what they have free now."""

    def alive(self) -> set[str]:
        """Ids of the nodes alive now."""

    def unreachable(self, ids: set[str]) -> set[str]:
        """Of these alive nodes, those dead though the cluster has not noticed yet."""


@dataclass(frozen=True, slots=True)
class Swept:
    """What a sweep removed: named actors and placement groups."""

    actors: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpareHosts:
    """What a started spare's hosts need: the engine (log dir, base port) and each new host's runtime_env."""

    engine: EngineSpec
    runtime_env: dict[str, Any] | None


class Objects(Protocol):
    """A deployment's named Ray objects: each rank's placement group and hosts, each spare's group (and hosts)."""

    def ranks(self, name: str) -> set[int]:
        """Ranks that have any object (a placement group or a host) in the cluster."""

    def spares(self, name: str) -> set[int]:
        """Numbers of the spares whose groups exist."""

    def deployments(self) -> set[str]:
        """Names of deployments with any object, record or not."""

    def remove_ranks(self, name: str, ranks: Collection[int], stems: Mapping[int, str]) -> None:
        """Remove these ranks' groups and hosts (those running on an adopted spare's objects by its stem)."""

    def reserve_spares(
        self, plan: Plan, spares: Sequence[RankPlacement], timeout: float, hosts: SpareHosts | None, *, wait: bool
    ) -> None:
        """Create these spares' groups (and, with `hosts`, their idle hosts); on failure remove them and raise."""

    def release_spares(self, name: str, numbers: Collection[int]) -> None:
        """Remove these spares' groups (and hosts)."""

    def sweep(self, name: str) -> Swept:
        """Remove every object under the deployment's name."""


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """A launch: ranks whose groups and hosts to create, ranks whose hosts exist, and how to start their work."""

    plan: Plan
    create: tuple[RankPlacement, ...]
    keep: tuple[RankPlacement, ...]
    stems: Mapping[int, str]  # kept ranks on a started spare's hosts: rank -> their names' stem
    engine: EngineSpec
    timeouts: Timeouts
    master_port: int
    runtime_env: dict[str, Any] | None
    node_ips: Mapping[str, str]


class Hosts(Protocol):
    """The work on the deployment's engine hosts: launched, stopped, told, adopted, asked; what processes left."""

    def launch(self, request: LaunchRequest, observer: LaunchObserver, *, keep_on_failure: bool) -> LaunchResult:
        """Create and start everything; on failure remove what it created, stop what it started, and raise."""

    def stop(self, name: str, ranks: Collection[int] | None, grace: float, stems: Mapping[int, str]) -> None:
        """Stop these ranks' work (all, for None): SIGTERM, SIGKILL after `grace`."""

    def tell_dp(self, name: str, ranks: Sequence[int], dp: int, stems: Mapping[int, str]) -> list[int]:
        """Tell running engines the new size; the ranks that did not answer in time."""

    def adopt(self, name: str, takes: Mapping[int, tuple[int, RankPlacement]]) -> dict[int, str]:
        """A started spare's hosts become the rank that takes it (rank -> (spare, placement)); rank -> stem."""

    def answers(self, record: Record) -> dict[HostKey, Answer | None]:
        """Every rank-node's host asked for its health at once (None: no host)."""

    def reap(self, name: str, nodes: Collection[str] | None, ranks: Collection[int] | None) -> list[str]:
        """Kill what the deployment's processes left on these nodes (of these ranks); "pid command" of each."""


class Supervisors(Protocol):
    """`recovery: auto`: the deployment's supervisor, found, started and stopped by name."""

    def status(self, name: str) -> Any | None:
        """Its state (a `SupervisorState`), None without one."""

    def start(self, name: str, recovery: Recovery, head: str | None, runtime_env: dict[str, Any] | None) -> None:
        """Start it, detached, on the head node."""

    def stop(self, name: str) -> bool:
        """Remove it; whether there was one."""


class Ports(Protocol):
    """Everything the operations use of a cluster."""

    @property
    def store(self) -> Store:
        """Records and locks."""

    @property
    def nodes(self) -> Nodes:
        """The nodes."""

    @property
    def objects(self) -> Objects:
        """Named placement groups and hosts."""

    @property
    def hosts(self) -> Hosts:
        """The work on the hosts."""

    @property
    def supervisors(self) -> Supervisors:
        """`recovery: auto` supervisors."""

    def job(self) -> str:
        """Who this command is (for records)."""

    def host_env(self, record_env: Mapping[str, Any]) -> dict[str, Any] | None:
        """A new engine host's runtime_env: this command's dpctl and the deployment's engine environment."""

    def engine_env(self, given: RuntimeEnv) -> dict[str, Any]:
        """What the cluster made of `cluster.runtime_env` for this command (URIs), as the record keeps it."""

    def now(self) -> float:
        """Wall-clock time (events, records)."""

    def checkpoint(self, step: str) -> None:
        """Between two steps of a change (the fake cluster kills the command here, to test recovery)."""
