"""The pure placement core: frozen dataclasses in, a plan (or the causes it is infeasible) out."""

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
from dpctl_ray.planner.place import NoPlan, SpecError, check_spec, cluster_fingerprint, feasible, plan

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
