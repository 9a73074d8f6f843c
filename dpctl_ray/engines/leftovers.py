"""Processes a deployment left on a node: found by dpctl's marks and by their session, and killed.

Every command a command engine starts leads a session of its own and carries `DPCTL_DEPLOYMENT`,
`DPCTL_RANKS`, `DPCTL_NODE_INDEX` and `DPCTL_INSTANCE` in its environment. Both are needed: vLLM's
`VLLM::EngineCore` and `VLLM::Worker` keep the session when the API server that started them is gone
(reparented to PID 1, still holding the device's memory), but they rename themselves with setproctitle,
which overwrites what /proc shows of their environment. So each start is also registered here, in a file
per start under the node's temporary directory: the session it leads and when that began. A process in a
registered session that began no earlier is the deployment's, with or without readable marks.

This module reads /proc, a small directory and sends signals, with the standard library alone, so that
`down` can run it on a node by value, without shipping dpctl there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEPLOYMENT, RANKS, NODE_INDEX, INSTANCE = "DPCTL_DEPLOYMENT", "DPCTL_RANKS", "DPCTL_NODE_INDEX", "DPCTL_INSTANCE"
GONE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Leftover:
    """A process of the deployment: its pid, what it runs, and whose it is."""

    pid: int
    command: str
    ranks: tuple[int, ...]
    node_index: int
    instance: str


@dataclass(frozen=True, slots=True)
class _Stat:
    state: str
    session: int
    started: int  # clock ticks after boot


def marks(deployment: str, ranks: tuple[int, ...], node_index: int, instance: str) -> dict[str, str]:
    """The environment entries that mark a process as one of the deployment's."""
    return {
        DEPLOYMENT: deployment,
        RANKS: ",".join(map(str, ranks)),
        NODE_INDEX: str(node_index),
        INSTANCE: instance,
    }


def registry(deployment: str) -> Path:
    """Where the starts of a deployment's commands on this node are registered."""
    return Path(tempfile.gettempdir()) / "dpctl-sessions" / deployment


def register(deployment: str, instance: str, pid: int, ranks: tuple[int, ...], node_index: int) -> None:
    """Record a command just started (the leader of its own session) as the deployment's."""
    stat = _stat(pid)
    if stat is None:
        return
    folder = registry(deployment)
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"session": pid, "started": stat.started, "ranks": list(ranks), "node_index": node_index}
    (folder / f"{instance}.json").write_text(json.dumps(entry))


def unregister(deployment: str, instance: str) -> None:
    """Forget a start whose processes are all gone."""
    with contextlib.suppress(OSError):
        (registry(deployment) / f"{instance}.json").unlink()
    with contextlib.suppress(OSError):
        registry(deployment).rmdir()  # the last one


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # noqa: PTH123
            fields = f.read().decode(errors="replace").rpartition(")")[2].split()
    except OSError:
        return None
    return _Stat(fields[0], int(fields[3]), int(fields[19]))  # stat(5): state, session, starttime


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:  # noqa: PTH123
        data = f.read()
    out = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"DPCTL_"):
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # noqa: PTH123
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return ""


def _registered(deployment: str) -> dict[int, tuple[int, Leftover]]:
    """Registered sessions: session id -> (its start time, who it belongs to)."""
    entries = (_entry(path) for path in sorted(registry(deployment).glob("*.json")))
    return {session: (started, owner) for session, started, owner in filter(None, entries)}


def _entry(path: Path) -> tuple[int, int, Leftover] | None:
    try:
        entry = json.loads(path.read_text())
        owner = Leftover(0, "", tuple(entry["ranks"]), int(entry["node_index"]), path.stem)
        return int(entry["session"]), int(entry["started"]), owner
    except (OSError, ValueError, KeyError, TypeError):  # written by hand, or cut short
        return None


def find(deployment: str) -> list[Leftover]:
    """Every live process on this machine that is the deployment's (zombies excluded).

    Registered starts none of whose processes is left are forgotten on the way.
    """
    sessions = _registered(deployment)
    found, occupied = [], set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat.state in ("Z", "X"):
            continue
        try:
            env = _environ(pid)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if env.get(DEPLOYMENT) == deployment:
            ranks = tuple(int(r) for r in env.get(RANKS, "").split(",") if r.strip().isdigit())
            index = int(env[NODE_INDEX]) if env.get(NODE_INDEX, "").isdigit() else 0
            found.append(Leftover(pid, _command(pid), ranks, index, env.get(INSTANCE, "")))
            occupied.add(stat.session)
            continue
        registered = sessions.get(stat.session)
        if registered is None or stat.started < registered[0] or DEPLOYMENT in env:
            continue  # not a registered session, one that began later (its id reused), or another's process
        owner = registered[1]
        found.append(Leftover(pid, _command(pid), owner.ranks, owner.node_index, owner.instance))
        occupied.add(stat.session)
    for session, (_, owner) in sessions.items():
        if session not in occupied:
            unregister(deployment, owner.instance)
    return found


def kill(
    deployment: str, ranks: tuple[int, ...] | None = None, node_index: int | None = None, keep: str = ""
) -> list[str]:
    """SIGKILL the deployment's processes here (those serving any of `ranks` on `node_index`, if given).

    `keep`: an instance never killed (the caller's own). Returns "pid command" of each process killed, once
    they are gone (up to a few seconds).
    """
    chosen = [
        p
        for p in find(deployment)
        if p.instance != keep
        and (ranks is None or set(p.ranks) & set(ranks))
        and (node_index is None or p.node_index == node_index)
    ]
    for process in chosen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_SECONDS
    while time.monotonic() < deadline and any(_alive(p.pid) for p in chosen):
        time.sleep(0.05)
    for instance in {p.instance for p in chosen}:
        unregister(deployment, instance)
    return [f"{p.pid} {p.command}" for p in chosen]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat.state not in ("Z", "X")
