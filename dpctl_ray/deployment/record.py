"""A deployment's record: what was asked for, how it was placed, its ranks and spares, and what happened to it.

The record is the deployment's truth in the cluster (the launcher stores it in the GCS); everything here is
data and its JSON form. Times are inputs: nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dpctl_ray.engines.spec import EngineSpec, engine_from_document
from dpctl_ray.errors import BadInput
from dpctl_ray.planner.document import spec_to_document
from dpctl_ray.planner.labels import LabelMatch
from dpctl_ray.planner.model import STRATEGY, Placement, Plan, RankPlacement, ResolvedSpec, valid_name
from dpctl_ray.planner.plan_file import spec_from_document
from dpctl_ray.values import show


class DeploymentState(str, Enum):
    """Where a deployment is in its life, as its record says."""

    LAUNCHING = "launching"  # `up` is creating it
    RUNNING = "running"
    SCALING = "scaling"  # a scale is adding or removing ranks (a killed one is recovered by the next command)
    RESTARTING = "restarting"  # a group is restarting all its processes (after a scale, or a repair)
    REPAIRING = "repairing"  # `repair` is placing lost ranks again
    DEGRADED = "degraded"  # ranks are lost and a repair found no room for them (it is retried by `dpctl repair`)
    FAILED = "failed"  # a launch failed and --keep-on-failure kept it, or a group could not restart


# A command killed in these states left work half done; the next command on the deployment finishes or undoes it.
RECOVERABLE = frozenset({DeploymentState.SCALING, DeploymentState.RESTARTING, DeploymentState.REPAIRING})
LIVE = frozenset({DeploymentState.RUNNING, DeploymentState.DEGRADED})  # its ranks run (some may be lost)

MAX_EVENTS = 20  # repair events kept with a deployment
SPARE_STEM = "spare-"  # a spare's objects are named `dpctl/<name>/spare-N`; a rank that adopts one keeps them


def spare_stem(number: int) -> str:
    """`spare-N`: how spare N's objects are named under the deployment's prefix."""
    return f"{SPARE_STEM}{number}"


@dataclass(slots=True)
class RankRecord:
    """One rank as planned, and what Ray granted it once it was up."""

    rank: int
    local_rank: int
    nodes: list[str]
    devices: list[int]  # planned device count per entry of `nodes`
    control: str  # node id of the engine actor
    ip: str  # ip of the control node
    granted: list[str] = field(default_factory=list)  # device ids Ray granted, bundle order
    device_ips: list[str] = field(default_factory=list)
    since: float = 0.0
    failed: str = ""  # why its launch failed, kept with --keep-on-failure
    stem: str = ""  # `spare-N` when it took over started spare N's objects (named so); "" for pg-R, engine-R

    @classmethod
    def planned(cls, rank: RankPlacement, ip: str, stem: str = "") -> RankRecord:
        """A rank of a plan, before anything is granted (`stem`: it runs on a started spare's objects)."""
        return cls(rank.rank, rank.local_rank, list(rank.nodes), list(rank.devices), rank.control, ip, stem=stem)

    def placement(self, strategy: str = "") -> RankPlacement:
        """The rank as the planner placed it."""
        return RankPlacement(self.rank, self.local_rank, strategy, tuple(self.nodes), tuple(self.devices), self.control)


@dataclass(slots=True)
class Record:
    """A deployment: what was asked for, how it was placed, and its ranks."""

    name: str
    state: DeploymentState
    request: Placement  # the placement the user asked for (dp_local and master may be auto)
    spec: ResolvedSpec  # the resolved spec of the plan
    engine: EngineSpec
    token: str
    job: str  # Ray job id of the command that last wrote this record
    created: float
    updated: float
    ranks: list[RankRecord] = field(default_factory=list)
    version: int = 1
    env_request: dict[str, Any] = field(default_factory=dict)  # cluster.runtime_env as given (paths)
    runtime_env: dict[str, Any] = field(default_factory=dict)  # what Ray made of it (URIs): every host gets it
    events: list[dict[str, Any]] = field(default_factory=list)  # repairs: what was found and done, newest last
    spares: list[RankRecord] = field(default_factory=list)  # reserved spares (`rank` is the spare's number)
    pending: list[int] = field(default_factory=list)  # ranks a change in progress is creating (see deployment.change)

    def event(self, rank: int, cause: str, before: str, after: str, result: str, *, at: float) -> None:
        """Record one detection and what was done about it, at time `at` (the last MAX_EVENTS are kept)."""
        entry = {"time": at, "rank": rank, "cause": cause, "from": before, "to": after, "result": result}
        self.events = [*self.events, entry][-MAX_EVENTS:]

    def to_json(self) -> bytes:
        """The stored form."""
        doc = {
            "name": self.name,
            "state": self.state.value,
            "request": request_document(self.request),
            "spec": spec_to_document(self.name, self.spec),
            "engine": self.engine.to_document(),
            "token": self.token,
            "job": self.job,
            "created": self.created,
            "updated": self.updated,
            "ranks": [dataclasses.asdict(r) for r in self.ranks],
            "version": self.version,
            "env_request": self.env_request,
            "runtime_env": self.runtime_env,
            "events": self.events,
            "spares": [dataclasses.asdict(r) for r in self.spares],
            "pending": self.pending,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Record:
        """Read a stored record; one whose name breaks the name rule (written by hand) is refused."""
        raw = json.loads(data)
        if not valid_name(raw.get("name")):
            raise BadInput(f"a deployment record has an invalid name, {show(raw.get('name'))}", code="bad_record")
        request = raw["request"]
        return cls(
            name=raw["name"],
            state=DeploymentState(raw["state"]),
            request=request_from_document(request),
            spec=spec_from_document(raw["spec"]),
            engine=engine_from_document(raw["engine"]),
            token=raw["token"],
            job=raw["job"],
            created=raw["created"],
            updated=raw["updated"],
            ranks=[RankRecord(**r) for r in raw["ranks"]],
            version=raw.get("version", 1),
            env_request=_mapping(raw.get("env_request", {}), "env_request"),
            runtime_env=_mapping(raw.get("runtime_env", {}), "runtime_env"),
            events=[_mapping(e, "events") for e in _list(raw.get("events", []), "events")][-MAX_EVENTS:],
            spares=[RankRecord(**r) for r in _list(raw.get("spares", []), "spares")],
            pending=[int(r) for r in _list(raw.get("pending", []), "pending")],
        )

    def stems(self) -> dict[int, str]:
        """The ranks that run on a started spare's objects, and its stem (`spare-N`)."""
        return {r.rank: r.stem for r in self.ranks if r.stem}

    def spares_in_use(self) -> set[int]:
        """Spare numbers whose objects the deployment holds: its spares', and those its ranks run on (adopted)."""
        adopted = {int(stem.removeprefix(SPARE_STEM)) for stem in self.stems().values()}
        return {s.rank for s in self.spares} | adopted

    def nodes(self) -> set[str]:
        """Every node its ranks and spares use."""
        return {n for r in [*self.ranks, *self.spares] for n in r.nodes}

    def plan(self) -> Plan:
        """The running deployment as a plan: its spec, ranks and spares (what the scale planner starts from)."""
        strategy = STRATEGY[self.spec.pack]
        ranks = tuple(r.placement(strategy) for r in sorted(self.ranks, key=lambda r: r.rank))
        spares = tuple(r.placement(strategy) for r in sorted(self.spares, key=lambda r: r.rank))
        spec = dataclasses.replace(self.spec, dp=len(ranks))
        return Plan(self.name, spec, ranks, (), (), (), "", spares)


def _list(value: object, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadInput(f"a deployment record's {key} is not a list, {show(value)}", code="bad_record")
    return value


def _mapping(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"a deployment record's {key} is not a mapping, {show(value)}", code="bad_record")
    return value


def request_document(spec: Placement) -> dict[str, Any]:
    """The placement as the user asked for it, for comparing a new `up` with what runs."""
    doc = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    doc["nodes"] = list(spec.nodes)
    doc["select"] = {m.key: m.ray_value for m in spec.select}
    return doc


def request_from_document(doc: Mapping[str, Any]) -> Placement:
    """A stored request back (records written before label options have none)."""
    select = tuple(LabelMatch.parse(k, v) for k, v in doc.get("select", {}).items())
    return Placement(**{**doc, "nodes": tuple(doc["nodes"]), "select": select})


@dataclass(frozen=True, slots=True)
class Difference:
    """One setting a new `up` changes about a running deployment."""

    section: str  # placement | engine
    key: str
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.section}.{self.key}: {self.old!r} -> {self.new!r}"


def differences(
    record: Record, request: Placement, engine: EngineSpec, env_request: dict[str, Any] | None = None
) -> list[Difference]:
    """What a new request changes about a running deployment, key by key."""
    out = []
    for section, old, new in (
        ("placement", request_document(record.request), request_document(request)),
        ("engine", record.engine.to_document(), engine.to_document()),
        ("cluster.runtime_env", record.env_request, record.env_request if env_request is None else env_request),
    ):
        out += [
            Difference(section, key, old.get(key), new.get(key))
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
        ]
    return out
