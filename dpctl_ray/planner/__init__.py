"""The pure placement core: frozen dataclasses in, a plan (or the causes it is infeasible) out."""

from dpctl_ray.planner.checks import SpecError, check_spec
from dpctl_ray.planner.model import (
    Bundle,
    Infeasible,
    InfeasibleCode,
    Node,
    Offer,
    Placement,
    Plan,
    PlanRequest,
    RankPlacement,
    ResolvedSpec,
    Skip,
    SkipReason,
    Usage,
)
from dpctl_ray.planner.nodes import cluster_fingerprint
from dpctl_ray.planner.place import NoPlan, feasible, plan

__all__ = [
    "Bundle",
    "Infeasible",
    "InfeasibleCode",
    "NoPlan",
    "Node",
    "Offer",
    "Placement",
    "Plan",
    "PlanRequest",
    "RankPlacement",
    "ResolvedSpec",
    "Skip",
    "SkipReason",
    "SpecError",
    "Usage",
    "check_spec",
    "cluster_fingerprint",
    "feasible",
    "plan",
]
