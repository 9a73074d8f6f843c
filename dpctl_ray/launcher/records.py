"""Deployments as the cluster knows them: names of their Ray objects, their records, and the lock per deployment.

A deployment lives in the cluster, not on the machine that launched it: its record is a JSON document in
the GCS key-value store (namespace `dpctl`), its placement groups and actors are detached and named
`dpctl/<deployment>/...`, and a lock key keeps two commands from changing one deployment at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dpctl_ray.engines.spec import EngineSpec, engine_from_document
from dpctl_ray.errors import BadInput, Busy
from dpctl_ray.planner.document import spec_from_document, spec_to_document
from dpctl_ray.planner.labels import LabelMatch
from dpctl_ray.planner.model import STRATEGY, Placement, Plan, RankPlacement, ResolvedSpec, valid_name
from dpctl_ray.values import show

NAMESPACE = "dpctl"
_RECORD = "deployments/"
_LOCK = "locks/"


# --- names of a deployment's Ray objects ----------------------------------------------------------------


class ObjectKind(str, Enum):
    """What a named Ray object of a deployment is; the value is its name's stem."""

    GROUP = "pg"  # a rank's placement group
    ENGINE = "engine"  # a rank's engine host actor
    SPARE = "spare"  # a spare's placement group (its number is the spare's, not a rank's)


def prefix(deployment: str) -> str:
    """Every placement group and actor of a deployment is named under this prefix."""
    return f"dpctl/{deployment}/"


def object_name(deployment: str, kind: ObjectKind, rank: int) -> str:
    """`dpctl/<deployment>/pg-<rank>`, `dpctl/<deployment>/engine-<rank>` or `dpctl/<deployment>/spare-<n>`."""
    return f"{prefix(deployment)}{kind.value}-{rank}"


@dataclass(frozen=True, slots=True)
class ObjectName:
    """A dpctl object name taken apart: its deployment, and its kind and rank when it is a rank's object."""

    deployment: str
    kind: ObjectKind | None
    rank: int | None

    @classmethod
    def parse(cls, name: str) -> ObjectName | None:
        """The parts of a name under `dpctl/`, or None for anything else."""
        parts = name.split("/")
        if len(parts) < 3 or parts[0] != "dpctl" or not parts[1]:
            return None
        stem, _, numbers = parts[-1].partition("-")
        number = numbers.split("-")[0]  # engine-R-K: the host of rank R's node K
        kind = next((k for k in ObjectKind if k.value == stem), None)
        if kind is None or not number.isdigit() or len(parts) != 3:
            return cls(parts[1], None, None)
        return cls(parts[1], kind, int(number))


# --- records ---------------------------------------------------------------------------------------------


class DeploymentState(str, Enum):
    """Where a deployment is in its life, as its record says."""

    LAUNCHING = "launching"  # `up` is creating it
    RUNNING = "running"
    SCALING = "scaling"  # a scale is adding or removing ranks (a killed one is recovered by the next command)
    RESTARTING = "restarting"  # a group is restarting all its processes (after a scale, or a repair)
    REPAIRING = "repairing"  # `repair` is placing lost ranks again
    DEGRADED = "degraded"  # ranks are lost and a repair found no room for them (it is retried by `dpctl repair`)
    FAILED = "failed"  # a launch failed and --keep-on-failure kept it, or a group could not restart


MAX_EVENTS = 20  # repair events kept with a deployment


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

    def event(self, rank: int, cause: str, before: str, after: str, result: str) -> None:
        """Record one detection and what was done about it (the last MAX_EVENTS are kept)."""
        entry = {"time": time.time(), "rank": rank, "cause": cause, "from": before, "to": after, "result": result}
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
        )

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


# --- storage and locks in the GCS ------------------------------------------------------------------------


class _KV:
    """The GCS key-value store (Ray's internal one; it needs no dashboard), in dpctl's namespace."""

    def __init__(self) -> None:
        from ray.experimental import internal_kv  # noqa: PLC0415

        self._kv = internal_kv

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self._kv._internal_kv_get(key, namespace=NAMESPACE)  # noqa: SLF001
        return value

    def put(self, key: str, value: bytes, *, overwrite: bool) -> bool:
        """Store; returns whether the key existed (with overwrite=False an existing key is left alone)."""
        return bool(self._kv._internal_kv_put(key, value, overwrite=overwrite, namespace=NAMESPACE))  # noqa: SLF001

    def delete(self, key: str) -> bool:
        return bool(self._kv._internal_kv_del(key, namespace=NAMESPACE))  # noqa: SLF001

    def keys(self, prefix: str) -> list[bytes]:
        return list(self._kv._internal_kv_list(prefix, namespace=NAMESPACE))  # noqa: SLF001


def _kv() -> _KV:
    return _KV()


def load(name: str) -> Record | None:
    """The deployment's record, or None."""
    data = _kv().get(_RECORD + name)
    return None if data is None else Record.from_json(data)


def require(name: str) -> Record:
    """The record of a deployment that must exist; bad input naming it otherwise."""
    record = load(name)
    if record is None:
        raise BadInput(
            f"no deployment named {name!r} in this cluster", hint="`dpctl status` lists them", code="no_deployment"
        )
    return record


def save(record: Record) -> None:
    """Write (or overwrite) the deployment's record."""
    record.updated = time.time()
    _kv().put(_RECORD + record.name, record.to_json(), overwrite=True)


def delete(name: str) -> bool:
    """Remove the record; whether there was one."""
    return bool(_kv().delete(_RECORD + name))


def names() -> list[str]:
    """Every deployment with a record, sorted (keys that are not valid names are not deployments of dpctl's)."""
    keys = (k.decode(errors="replace")[len(_RECORD) :] for k in _kv().keys(_RECORD))
    return sorted(name for name in keys if valid_name(name))


def current_job() -> str:
    """Who this is, for locks and records: the Ray job id of a driver, `actor:<id>:<pid>` for an actor.

    A detached actor (a supervisor) outlives the job that created it, so its job's liveness says nothing about
    it; and Ray may restart it under the same id, so its process names the incarnation that holds a lock.
    """
    import ray  # noqa: PLC0415

    context = ray.get_runtime_context()
    actor = context.get_actor_id()
    return f"actor:{actor}:{os.getpid()}" if actor else str(context.get_job_id())


def job_alive(job: str) -> bool:
    """Whether the Ray job (a dpctl command's driver) is still running."""
    from ray._private.state import state  # noqa: PLC0415 - job liveness from the GCS; ray.util.state needs the dashboard

    if job.startswith("actor:"):  # alive, and still the incarnation that took the lock
        actor, _, pid = job.removeprefix("actor:").partition(":")
        found = state.actor_table(actor)
        return bool(found) and found.get("State") == "ALIVE" and str(found.get("Pid")) == pid
    for entry in state.job_table():
        if entry.get("JobID") == job:
            return not entry.get("IsDead", True)
    return False


@contextmanager
def locked(name: str, command: str) -> Iterator[None]:
    """Hold the deployment's lock for one command; a live holder makes this one fail with Busy.

    The lock names the Ray job that holds it, so a command that was killed (even with SIGKILL) does not
    leave the deployment locked: its job is dead, and the next command takes the lock over.
    """
    kv = _kv()
    me = {
        "job": current_job(),
        "command": command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
    }
    value = json.dumps(me).encode()
    key = _LOCK + name
    for _ in range(3):
        if not kv.put(key, value, overwrite=False):
            break  # the key was absent: ours now
        held = kv.get(key)
        if held is None:
            continue  # released between our put and get
        holder = json.loads(held)
        if job_alive(holder["job"]):
            age = time.time() - float(holder.get("since", time.time()))
            raise Busy(
                f"deployment {name!r} is being changed by another dpctl command: `dpctl {holder['command']}` "
                f"(pid {holder['pid']} on {holder['host']}, for {age:.0f}s)",
                hint="wait for it to finish, or stop it; its changes are undone if it fails",
            )
        kv.delete(key)  # the holder died: take over
    else:
        raise Busy(f"could not take the lock of deployment {name!r}", hint="try again")
    try:
        yield
    finally:
        held = kv.get(key)
        if held is not None and json.loads(held).get("job") == me["job"]:
            kv.delete(key)


def lock_holder(name: str) -> dict[str, Any] | None:
    """Who holds the deployment's lock, if anyone alive does."""
    held = _kv().get(_LOCK + name)
    if held is None:
        return None
    holder: dict[str, Any] = json.loads(held)
    return holder if job_alive(holder["job"]) else None


def drop_lock(name: str) -> None:
    """Remove the deployment's lock key (down, after everything is gone)."""
    _kv().delete(_LOCK + name)
