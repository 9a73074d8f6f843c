"""What each operation did, for the CLI to say: the records after, the launches, the plans and changes applied."""

from __future__ import annotations

from dataclasses import dataclass, field

from dpctl_ray.deployment.change import Change
from dpctl_ray.deployment.record import Record
from dpctl_ray.launcher.progress import LaunchResult
from dpctl_ray.launcher.records import ObjectKind, ObjectName
from dpctl_ray.planner.model import Plan
from dpctl_ray.planner.repair import RepairPlan
from dpctl_ray.planner.scale import ScalePlan


@dataclass(slots=True)
class ScaleResult:
    """What a scale did: the delta, and the launch of the new ranks (growing) or None (shrinking, dry run)."""

    record: Record
    delta: ScalePlan | None  # None: already at the requested size
    launch: LaunchResult | None = None
    dry_run: bool = False
    untold: list[int] = field(default_factory=list)  # running ranks that did not take the new dp size
    restarted: bool = False  # a group: every process restarted (or, in a dry run, would) with the new size
    before: int = 0
    change: Change | None = None


@dataclass(slots=True)
class UpResult:
    """What `up` did: launched, found the same deployment already running, or scaled it to a new dp."""

    record: Record
    plan: Plan | None
    launch: LaunchResult | None
    already_running: bool = False
    scaled: ScaleResult | None = None
    respared: bool = False  # already running; only its spares changed


@dataclass(slots=True)
class RepairResult:
    """What a repair did: the moves (None: nothing was lost), and the launch that brought the ranks back."""

    record: Record
    repair: RepairPlan | None
    launch: LaunchResult | None = None
    dry_run: bool = False
    restarted: bool = False  # a group: every process restarted (or, in a dry run, would)
    seconds: float = 0.0  # from finding the lost ranks to all of them READY
    change: Change | None = None


@dataclass(slots=True)
class DownResult:
    """What `down` removed for one deployment."""

    name: str
    actors: list[str]
    groups: list[str]
    record: bool
    killed: list[str] = field(default_factory=list)  # "pid command" of processes it left that were killed

    @property
    def engines(self) -> int:
        """How many engine hosts were removed (one per node of a rank; per_device workers go with them)."""
        parsed = (ObjectName.parse(a) for a in self.actors)
        hosts = (ObjectKind.ENGINE, ObjectKind.SPARE)  # a started spare's hosts are engine hosts
        return sum(1 for name in parsed if name is not None and name.kind in hosts)

    @property
    def nothing(self) -> bool:
        """Whether there was nothing to remove."""
        return not (self.actors or self.groups or self.record or self.killed)
