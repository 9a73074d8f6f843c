"""`recovery: {mode: auto}`: a detached actor per deployment that repairs lost ranks with no dpctl command running.

It runs on the head node, takes no CPU, and every few seconds does what `dpctl repair` does, by the same
rules and under the same lock. It has a budget: at most `max_repairs` repairs in `window` seconds; when the
budget is spent it stops, and says why in the deployment's events. Only a repair that launched something
spends the budget. No room, or a failed launch, backs it off (doubling, up to a minute) instead of retrying
hot, and its state says why; the deployment stays degraded meanwhile, as after a manual repair.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dpctl_ray.config import Recovery, Timeouts
from dpctl_ray.errors import Busy, DpctlError, InfeasibleError
from dpctl_ray.launcher import records
from dpctl_ray.launcher.records import NAMESPACE, DeploymentState, prefix

PERIOD = 2.0  # seconds between checks
MAX_BACKOFF = 60.0


def supervisor_name(deployment: str) -> str:
    """`dpctl/<deployment>/supervisor`: under the deployment's prefix, so that `down` and a sweep find it."""
    return f"{prefix(deployment)}supervisor"


class _Quiet:
    """The observer of a repair nobody watches: what it would say goes to the deployment's events instead."""

    def begin(self, ranks: list[Any], started: float) -> None: ...
    def update(self, rank: Any) -> None: ...
    def tick(self) -> None: ...
    def end(self, ok: bool) -> None: ...
    def planned(self, plan: Any) -> None: ...
    def scaling(self, delta: Any, *, restart: bool) -> None: ...
    def note(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SupervisorState:
    """What `status` shows of a supervisor."""

    state: str  # watching | stopped
    reason: str
    repairs: int  # in the current window
    max_repairs: int
    window: float


class Supervisor:
    """Watches one deployment from a thread of its own; `state()` answers meanwhile."""

    def __init__(self, deployment: str, recovery: Recovery, armed: float) -> None:
        self.deployment = deployment
        self.recovery = recovery
        # Repairs since `armed` (when `up` started it), from the deployment's events: a supervisor that Ray
        # restarts keeps its budget spent.
        record = records.load(deployment)
        moves = [e for e in (record.events if record else []) if e.get("to") and e.get("cause") != "supervisor"]
        self.repairs: collections.deque[float] = collections.deque(
            sorted(t for e in moves if (t := float(e.get("time", 0))) >= armed)
        )
        self.stopped = threading.Event()
        self.reason = ""
        self._thread = threading.Thread(target=self._watch, name="dpctl-supervisor", daemon=True)
        self._thread.start()

    def state(self) -> SupervisorState:
        """Watching or stopped (and why), and the repairs made in the current window."""
        self._forget_old(time.time())
        return SupervisorState(
            "stopped" if self.stopped.is_set() else "watching",
            self.reason,
            len(self.repairs),
            self.recovery.max_repairs,
            self.recovery.window,
        )

    def _forget_old(self, now: float) -> None:
        while self.repairs and self.repairs[0] < now - self.recovery.window:
            self.repairs.popleft()

    def _watch(self) -> None:
        from dpctl_ray.launcher import lifecycle  # noqa: PLC0415 - lifecycle imports this module to start it

        failures = 0  # consecutive repairs that found no room or failed: each doubles the wait
        while not self.stopped.wait(min(PERIOD * 2**failures, MAX_BACKOFF)):
            record = records.load(self.deployment)
            if record is None:
                self._stop("the deployment is gone")
                return
            interrupted = record.state in lifecycle.RECOVERABLE
            if not interrupted and record.state not in (DeploymentState.RUNNING, DeploymentState.DEGRADED):
                continue  # a group is down, or `up` is launching it: a person decides
            try:
                # A scale or repair in progress (ours too, if Ray restarted us mid-way) holds the lock: repair
                # is Busy while its holder lives, and recovers the deployment once the holder is gone.
                lost, _ = lifecycle.lost_ranks(record) if not interrupted else ({}, set())
                if not lost and not interrupted:
                    failures, self.reason = 0, ""
                    continue
                now = time.time()
                self._forget_old(now)
                if len(self.repairs) >= self.recovery.max_repairs:
                    left = f"ranks {', '.join(map(str, sorted(lost)))} stay lost" if lost else "it stays as it is"
                    self._stop(
                        f"budget spent: {self.recovery.max_repairs} repairs in {self.recovery.window:g}s; "
                        f"{left} until `dpctl repair`"
                    )
                    return
                self.repairs.append(now)
                try:
                    done = lifecycle.repair(self.deployment, Timeouts(), dry_run=False, observer=_Quiet())
                except (Busy, InfeasibleError):
                    self.repairs.pop()  # nothing was changed: no repair spent
                    raise
                if done.repair is None:
                    self.repairs.pop()  # recovered, or nothing was lost by the time it looked
                failures, self.reason = 0, ""
            except Busy:
                continue  # a dpctl command holds the deployment: look again after it
            except DpctlError as exc:  # no room (the deployment stays degraded) or a failed launch: both in the events
                failures += 1
                wait = min(PERIOD * 2**failures, MAX_BACKOFF)
                self.reason = f"{exc.message.splitlines()[0]}; next try in {wait:g}s"
            except Exception as exc:  # noqa: BLE001 - a supervisor reports, it does not crash
                self._stop(f"stopped on an unexpected error: {type(exc).__name__}: {exc}")
                return

    def _stop(self, reason: str) -> None:
        """Say why in the deployment's events, then stop: whoever sees it stopped also finds the reason there."""
        for _ in range(30):  # a command holding the deployment's lock finishes first
            try:
                with records.locked(self.deployment, "supervisor"):
                    record = records.load(self.deployment)
                    if record is not None:
                        record.event(-1, "supervisor", "", "", reason)
                        records.save(record)
                break
            except Busy:
                time.sleep(1.0)
            except Exception:  # noqa: BLE001 - the state below still says why
                break
        self.reason = reason
        self.stopped.set()


RemoteSupervisor: Any = ray.remote(Supervisor)


def start(deployment: str, recovery: Recovery, head: str | None, runtime_env: dict[str, Any] | None) -> Any:
    """The deployment's supervisor, detached, on the head node, no CPU.

    The head, strictly: Ray spills even a zero-CPU actor under soft affinity to a worker node now and then
    (seen in the tests' GCS logs), and a supervisor on a worker dies with it, in the middle of its repair.
    """
    options: dict[str, Any] = {
        "name": supervisor_name(deployment),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "num_cpus": 0,
        "max_concurrency": 4,  # state() answers while the watch thread works
        "max_restarts": -1,  # a crashed supervisor comes back (its budget from the events)
    }
    if head is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=False)
    if runtime_env is not None:
        options["runtime_env"] = runtime_env
    actor = RemoteSupervisor.options(**options).remote(deployment, recovery, time.time())
    ray.get(actor.state.remote(), timeout=60)  # started (a failure to start is the launch's)
    return actor


def find(deployment: str) -> Any | None:
    """The deployment's supervisor, if it has one."""
    try:
        return ray.get_actor(supervisor_name(deployment), namespace=NAMESPACE)
    except ValueError:
        return None


def status(deployment: str, timeout: float = 10.0) -> SupervisorState | None:
    """The deployment's supervisor's state, None without one; one that does not answer says so in its state."""
    actor = find(deployment)
    if actor is None:
        return None
    deadline = time.monotonic() + timeout
    while True:
        try:
            state: SupervisorState = ray.get(actor.state.remote(), timeout=max(deadline - time.monotonic(), 0.1))
        except ActorUnavailableError:  # a connection to it broke (a node died nearby): it may answer again
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            return SupervisorState("not answering", "ActorUnavailableError", 0, 0, 0.0)
        except Exception as exc:  # noqa: BLE001 - a dead or slow supervisor is a finding, not a failed command
            return SupervisorState("not answering", type(exc).__name__, 0, 0, 0.0)
        return state


def stop(deployment: str) -> bool:
    """Remove the deployment's supervisor (first thing `down` does); whether there was one."""
    actor = find(deployment)
    if actor is None:
        return False
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)
    return True
