"""The pure placement core: frozen dataclasses in, a plan (or the causes it is infeasible) out."""

from dpctl_ray.planner.model import (
    Bundle,
    Infeasible,
    InfeasibleCode,
    Node,
    NodeUse,
    Offer,
    Placement,
    Plan,
    PlanRequest,
    RankPlacement,
    ResolvedSpec,
    Skip,
    SkipReason,
)
from dpctl_ray.planner.place import SpecError, check_spec, cluster_fingerprint, plan

__all__ = [
    "Bundle",
    "Infeasible",
    "InfeasibleCode",
    "Node",
    "NodeUse",
    "Offer",
    "Placement",
    "Plan",
    "PlanRequest",
    "RankPlacement",
    "ResolvedSpec",
    "Skip",
    "SkipReason",
    "SpecError",
    "check_spec",
    "cluster_fingerprint",
    "plan",
]
