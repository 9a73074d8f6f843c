"""Deployments as the cluster keeps them: names of their Ray objects, their records in the GCS, and their locks.

A deployment lives in the cluster, not on the machine that launched it: its record (`deployment.record`) is a
JSON document in the GCS key-value store (namespace `dpctl`), its placement groups and actors are detached and
named `dpctl/<deployment>/...`, and a lock key keeps two commands from changing one deployment at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dpctl_ray.deployment.record import Record
from dpctl_ray.errors import BadInput, Busy
from dpctl_ray.planner.model import valid_name

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
