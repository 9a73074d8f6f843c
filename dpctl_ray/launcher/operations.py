"""The operations on a deployment, each a short list of named steps: lock, recover, plan, change, apply, result.

Every one holds the deployment's lock, first finishes what a killed command left (`Reconciler.recover`), plans
purely (`planner`), turns the plan into a `Change` (`deployment.change`) and has the reconciler apply it
(`op_up`, `op_scale`, `op_repair`, `op_down`). They touch the cluster only through `Ports`, so the fake
cluster in the tests runs them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

from dpctl_ray.config import Config, Timeouts
from dpctl_ray.launcher import op_down, op_repair, op_scale, op_up
from dpctl_ray.launcher.ports import Ports
from dpctl_ray.launcher.progress import Observer
from dpctl_ray.launcher.results import DownResult, RepairResult, ScaleResult, UpResult
from dpctl_ray.planner.model import Plan


class Operations:
    """up, scale, repair and down of deployments on one cluster (its ports), said to an observer."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def up(
        self, config: Config, *, planned: Plan | None, observer: Observer, keep_on_failure: bool, recreate: bool
    ) -> UpResult:
        """Launch the config's deployment, or converge a running one (see `op_up.up`)."""
        return op_up.up(
            self.ports, config, planned=planned, observer=observer, keep_on_failure=keep_on_failure, recreate=recreate
        )

    def scale(
        self,
        name: str,
        dp: int,
        timeouts: Timeouts,
        *,
        dry_run: bool,
        observer: Observer,
        expect: Mapping[str, object] | None = None,
    ) -> ScaleResult:
        """Grow or shrink a running deployment to dp ranks (see `op_scale.scale`)."""
        return op_scale.scale(self.ports, name, dp, timeouts, dry_run=dry_run, observer=observer, expect=expect)

    def repair(
        self,
        name: str,
        timeouts: Timeouts,
        *,
        dry_run: bool,
        observer: Observer,
        expect: Mapping[str, object] | None = None,
    ) -> RepairResult:
        """Place a deployment's lost ranks again (see `op_repair.repair`)."""
        return op_repair.repair(self.ports, name, timeouts, dry_run=dry_run, observer=observer, expect=expect)

    def down(self, name: str, *, force: bool) -> DownResult:
        """Remove everything a deployment owns (see `op_down.down`)."""
        return op_down.down(self.ports, name, force=force)
