"""Deployments as the cluster knows them: names of their Ray objects, their records, and the lock per deployment.

A deployment lives in the cluster, not on the machine that launched it: its record is a JSON document in
the GCS key-value store (namespace `dpctl`), its placement groups and actors are detached and named
`dpctl/<deployment>/...`, and a lock key keeps two commands from changing one deployment at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from dpctl_ray.errors import Busy

NAMESPACE = "dpctl"
_RECORD = "deployments/"
_LOCK = "locks/"


def prefix(deployment: str) -> str:
    """Every placement group and actor of a deployment is named under this prefix."""
    return f"dpctl/{deployment}/"


def pg_name(deployment: str, rank: int) -> str:
    """The placement group of one rank."""
    return f"{prefix(deployment)}pg-{rank}"


def engine_name(deployment: str, rank: int) -> str:
    """The engine host actor of one rank."""
    return f"{prefix(deployment)}engine-{rank}"


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


@dataclass(slots=True)
class Record:
    """A deployment: what was asked for, how it was placed, and its ranks."""

    name: str
    state: str  # launching | running | scaling | failed
    request: dict[str, Any]  # the placement the user asked for (dp_local and master may be auto)
    spec: dict[str, Any]  # the resolved spec of the plan (DESIGN.md plan "spec")
    engine: dict[str, Any]
    token: str
    job: str  # Ray job id of the command that last wrote this record
    created: float
    updated: float
    ranks: list[RankRecord] = field(default_factory=list)
    version: int = 1

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Record:
        """Read a stored record."""
        raw = json.loads(data)
        ranks = [RankRecord(**r) for r in raw.pop("ranks")]
        return cls(**raw, ranks=ranks)


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


def save(record: Record) -> None:
    """Write (or overwrite) the deployment's record."""
    record.updated = time.time()
    _kv().put(_RECORD + record.name, record.to_json(), overwrite=True)


def delete(name: str) -> bool:
    """Remove the record; whether there was one."""
    return bool(_kv().delete(_RECORD + name))


def names() -> list[str]:
    """Every deployment with a record, sorted."""
    keys = _kv().keys(_RECORD)
    return sorted(k.decode()[len(_RECORD) :] for k in keys)


def current_job() -> str:
    """The Ray job id of this driver."""
    import ray  # noqa: PLC0415

    return str(ray.get_runtime_context().get_job_id())


def job_alive(job: str) -> bool:
    """Whether the Ray job (a dpctl command's driver) is still running."""
    from ray._private.state import state  # noqa: PLC0415 - job liveness from the GCS; ray.util.state needs the dashboard

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
