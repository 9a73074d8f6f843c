"""`recovery: {mode: auto}`: a detached actor per deployment that repairs lost ranks with no dpctl command running.

It runs on the head node, takes no CPU, and every few seconds does what `dpctl repair` does, by the same
rules and under the same lock (the same `Operations.repair`). It has a budget: at most `max_repairs` repairs in
`window` seconds; when the budget is spent it stops, and says why in the deployment's events. Only a repair
that launched something spends the budget. No room, or a failed launch, backs it off (doubling, up to a minute)
instead of retrying hot, and its state says why; the deployment stays degraded meanwhile, as after a manual
repair. `launcher.supervision` starts, finds and stops it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from dpctl_ray.config import Recovery, Timeouts
from dpctl_ray.deployment.record import LIVE, RECOVERABLE
from dpctl_ray.deployment.status import SupervisorPhase, SupervisorState
from dpctl_ray.errors import Busy, ChangeFailed, DpctlError, InfeasibleError
from dpctl_ray.launcher.op_repair import lost_ranks
from dpctl_ray.launcher.operations import Operations
from dpctl_ray.launcher.ports import Ports
from dpctl_ray.launcher.progress import QuietObserver

PERIOD = 2.0  # seconds between checks
MAX_BACKOFF = 60.0


class Supervisor:
    """Watches one deployment from a thread of its own; `state()` answers meanwhile."""

    def __init__(self, deployment: str, recovery: Recovery, armed: float, make_ports: Callable[[], Ports]) -> None:
        self.deployment = deployment
        self.recovery = recovery
        self.ports = make_ports()
        # Repairs since `armed` (when `up` started it), from the deployment's events: a supervisor that Ray
        # restarts keeps its budget spent.
        record = self.ports.store.load(deployment)
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
            SupervisorPhase.STOPPED if self.stopped.is_set() else SupervisorPhase.WATCHING,
            self.reason,
            len(self.repairs),
            self.recovery.max_repairs,
            self.recovery.window,
        )

    def _forget_old(self, now: float) -> None:
        while self.repairs and self.repairs[0] < now - self.recovery.window:
            self.repairs.popleft()

    def _watch(self) -> None:
        failures = 0  # consecutive repairs that found no room or failed: each doubles the wait
        while not self.stopped.wait(min(PERIOD * 2**failures, MAX_BACKOFF)):
            failures = self._look(failures)

    def _look(self, failures: int) -> int:
        """One look, whatever it finds; the count of consecutive failures after it."""
        try:
            return self._check(failures)
        except _Stop as stop:
            self._stop(str(stop))
        except Busy:
            pass  # a dpctl command holds the deployment: look again after it
        except DpctlError as exc:  # no room (the deployment stays degraded) or a failed launch: in the events
            wait = min(PERIOD * 2 ** (failures + 1), MAX_BACKOFF)
            cause = exc.cause if isinstance(exc, ChangeFailed) else exc
            self.reason = f"{cause.message.splitlines()[0]}; next try in {wait:g}s"
            return failures + 1
        except Exception as exc:  # noqa: BLE001 - a supervisor reports, it does not crash
            self._stop(f"stopped on an unexpected error: {type(exc).__name__}: {exc}")
        return failures

    def _check(self, failures: int) -> int:
        """One look: repair what is lost (or finish what a killed command left); the failures count after it."""
        record = self.ports.store.load(self.deployment)
        if record is None:
            raise _Stop("the deployment is gone")
        interrupted = record.state in RECOVERABLE
        if not interrupted and record.state not in LIVE:
            return failures  # a group is down, or `up` is launching it: a person decides
        # A scale or repair in progress (ours too, if Ray restarted us mid-way) holds the lock: repair is Busy
        # while its holder lives, and recovers the deployment once the holder is gone.
        lost = lost_ranks(self.ports, record)[0] if not interrupted else {}
        if not lost and not interrupted:
            self.reason = ""
            return 0
        now = time.time()
        self._forget_old(now)
        if len(self.repairs) >= self.recovery.max_repairs:
            left = f"ranks {', '.join(map(str, sorted(lost)))} stay lost" if lost else "it stays as it is"
            raise _Stop(
                f"budget spent: {self.recovery.max_repairs} repairs in {self.recovery.window:g}s; "
                f"{left} until `dpctl repair`"
            )
        self.repairs.append(now)
        try:
            done = Operations(self.ports).repair(self.deployment, Timeouts(), dry_run=False, observer=QuietObserver())
        except (Busy, InfeasibleError):
            self.repairs.pop()  # nothing was changed: no repair spent
            raise
        if done.repair is None:
            self.repairs.pop()  # recovered, or nothing was lost by the time it looked
        self.reason = ""
        return 0

    def _stop(self, reason: str) -> None:
        """Say why in the deployment's events, then stop: whoever sees it stopped also finds the reason there."""
        for _ in range(30):  # a command holding the deployment's lock finishes first
            try:
                with self.ports.store.locked(self.deployment, "supervisor"):
                    record = self.ports.store.load(self.deployment)
                    if record is not None:
                        record.event(-1, "supervisor", "", "", reason, at=time.time())
                        self.ports.store.save(record)
                break
            except Busy:
                time.sleep(1.0)
            except Exception:  # noqa: BLE001 - the state below still says why
                break
        self.reason = reason
        self.stopped.set()


class _Stop(Exception):
    """The supervisor stops for this reason."""


RemoteSupervisor: Any = ray.remote(Supervisor)
