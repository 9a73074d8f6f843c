"""A launch as its watchers see it: per-rank phases and progress, and the observer protocols (no Ray here)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dpctl_ray.planner.model import Plan
    from dpctl_ray.planner.scale import ScalePlan


class RankPhase(str, Enum):
    """Where a rank is in its launch, as the live view shows it."""

    PENDING = "pending"  # waiting for its placement group
    PLACED = "placed"  # group placed, engine actor starting
    STARTING = "starting"  # engine actor up, starting workers and engine
    LOADING = "loading"  # engine reports progress
    READY = "ready"
    FAILED = "failed"


@dataclass(slots=True)
class RankProgress:
    """One rank during a launch."""

    rank: int
    local_rank: int
    ip: str
    phase: RankPhase = RankPhase.PENDING
    devices: tuple[str, ...] = ()
    device_ips: tuple[str, ...] = ()
    progress: float | None = None
    message: str = ""
    changed: float = field(default_factory=time.monotonic)
    ready_in: float | None = None  # seconds from the launch start
    latency: float | None = None  # engine's ready event to the launcher seeing it, seconds
    since: float = 0.0  # wall time it became ready
    node: str = ""


class LaunchObserver(Protocol):
    """What the CLI (or a test) sees of a launch."""

    def begin(self, ranks: list[RankProgress], started: float) -> None:
        """The launch starts with these ranks, all pending."""

    def update(self, rank: RankProgress) -> None:
        """A rank changed phase or progress."""

    def tick(self) -> None:
        """Time passed (for elapsed counters)."""

    def end(self, ok: bool) -> None:
        """The launch is over."""


class Observer(LaunchObserver, Protocol):
    """What the CLI sees of a command: the plan or delta it applies, what it says along the way, its launches."""

    def planned(self, plan: Plan) -> None:
        """`up` is about to launch this plan."""

    def scaling(self, delta: ScalePlan, *, restart: bool) -> None:
        """A scale is about to apply this delta (restarting every running rank, for a group)."""

    def note(self, message: str) -> None:
        """Something worth saying (a recovery, a convergence by scaling)."""

    def warn(self, message: str) -> None:
        """Something the user may want to fix (an allow-list entry that matches nothing)."""


@dataclass(slots=True)
class LaunchResult:
    """How a launch went: every rank's final progress and the stream's drop counts."""

    ranks: dict[int, RankProgress]
    elapsed: float
    dropped: dict[str, int]
    token: str
    unstreamed: tuple[str, ...] = ()  # nodes (ips) without pyzmq: their ranks reported through Ray only


class QuietObserver:
    """An observer that shows nothing: the base of those that show some (and the supervisor's, which shows none)."""

    def begin(self, ranks: list[RankProgress], started: float) -> None:
        """The launch starts with these ranks, all pending."""

    def update(self, rank: RankProgress) -> None:
        """A rank changed phase or progress."""

    def tick(self) -> None:
        """Time passed."""

    def end(self, ok: bool) -> None:
        """The launch is over."""

    def planned(self, plan: Plan) -> None:
        """`up` is about to launch this plan."""

    def scaling(self, delta: ScalePlan, *, restart: bool) -> None:
        """A scale is about to apply this delta."""

    def note(self, message: str) -> None:
        """Something worth saying."""

    def warn(self, message: str) -> None:
        """Something the user may want to fix."""
