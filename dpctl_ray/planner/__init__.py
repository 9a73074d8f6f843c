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
from dpctl_ray.planner.place import NoPlan, SpecError, check_spec, cluster_fingerprint, feasible, plan

__all__ = [
    "Bundle",
    "Infeasible",
    "InfeasibleCode",
    "NoPlan",
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
    "feasible",
    "plan",
]
