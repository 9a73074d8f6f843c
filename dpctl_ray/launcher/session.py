"""A dpctl command joined to the cluster: every Ray-side operation the CLI uses goes through one Session."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from dpctl_ray.config import Config, Timeouts
from dpctl_ray.errors import BadInput, ClusterUnreachable
from dpctl_ray.launcher import lifecycle, logs, nodes, observe, records
from dpctl_ray.launcher.progress import Observer
from dpctl_ray.launcher.status import DeploymentStatus
from dpctl_ray.planner.model import Node, Plan


class Session:
    """The joined cluster. Made by `cluster.connect()`, which sets Ray's environment before Ray is imported."""

    @classmethod
    @contextmanager
    def join(cls, address: str, source: str) -> Iterator[Session]:
        """Join the cluster at `address` as a driver in the dpctl namespace; leave it on exit."""
        if ray.is_initialized():
            ray.shutdown()
        try:
            ray.init(address=address, namespace=records.NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterUnreachable(
                f"cannot join the Ray cluster at {address} ({source}): {str(exc).splitlines()[0]}",
                hint="with token auth, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (or ~/.ray/auth_token)",
            ) from None
        # A failed launch abandons the calls still running on the hosts it stops; their errors are already
        # reported in dpctl's own words, so Ray's "Unhandled error" dumps of them are not printed.
        quiet = "RAY_IGNORE_UNHANDLED_ERRORS" not in os.environ
        if quiet:
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
        try:
            yield cls()
        finally:
            ray.shutdown()
            if quiet:
                os.environ.pop("RAY_IGNORE_UNHANDLED_ERRORS", None)

    def snapshot(self) -> tuple[Node, ...]:
        """The alive nodes, with what they have free now."""
        return nodes.snapshot()

    def up(
        self, config: Config, *, planned: Plan | None, observer: Observer, keep_on_failure: bool, recreate: bool
    ) -> lifecycle.UpResult:
        """Launch the config's deployment (or converge a running one); see `lifecycle.up`."""
        return lifecycle.up(
            config, planned=planned, observer=observer, keep_on_failure=keep_on_failure, recreate=recreate
        )

    def scale(
        self, name: str, dp: int, timeouts: Timeouts, *, dry_run: bool, observer: Observer
    ) -> lifecycle.ScaleResult:
        """Grow or shrink a running deployment; see `lifecycle.scale`."""
        return lifecycle.scale(name, dp, timeouts, dry_run=dry_run, observer=observer)

    def down(self, name: str, *, force: bool) -> lifecycle.DownResult:
        """Remove everything a deployment owns."""
        return lifecycle.down(name, force=force)

    def deployments(self) -> list[str]:
        """Every deployment in the cluster, with a record or with leftover objects only."""
        return observe.deployment_names()

    def status(self, name: str | None) -> list[DeploymentStatus]:
        """Every deployment (or the one named, which must exist) with each rank's state."""
        statuses = observe.gather(name)
        if name is not None and statuses[0].record is None and name not in observe.deployment_names():
            others = ", ".join(records.names()) or "none"
            raise BadInput(
                f"no deployment named {name!r} in this cluster (deployments: {others})", code="no_deployment"
            )
        return statuses

    def log_sources(self, name: str, ranks: list[int] | None) -> list[logs.LogSource]:
        """Where each rank's log is."""
        return logs.log_sources(name, ranks)

    def read_logs(self, sources: list[logs.LogSource], *, tail: int | None) -> dict[int, str]:
        """New text of each rank's log (`tail` lines the first time)."""
        return logs.read_logs(sources, tail=tail)
