"""A dpctl command joined to the cluster: every Ray-side operation the CLI uses goes through one Session."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray

from dpctl_ray.deployment.status import DeploymentStatus
from dpctl_ray.errors import BadInput, ClusterUnreachable
from dpctl_ray.launcher import doctor, logs, nodes, observe, records
from dpctl_ray.launcher.operations import Operations
from dpctl_ray.launcher.ray_ports import RayPorts
from dpctl_ray.planner.model import Node, Placement
from dpctl_ray.values import one_line


class Session(Operations):
    """The joined cluster: the operations on its ports (`Operations`: up, scale, repair, down), status, logs, doctor.

    Made by `cluster.connect()`, which sets Ray's environment before Ray is imported.
    """

    @classmethod
    @contextmanager
    def join(
        cls,
        address: str,
        source: str,
        runtime_env: dict[str, Any] | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> Iterator[Session]:
        """Join the cluster at `address` as a driver in the dpctl namespace; leave it on exit.

        `runtime_env`: the job's, for commands that run code on the nodes (see `shipping`). `say` tells of a
        Ray Client session tried again.
        """
        if ray.is_initialized():
            ray.shutdown()
        for attempt in range(1, CLIENT_SESSION_TRIES + 1):
            try:
                ray.init(
                    address=address,
                    namespace=records.NAMESPACE,
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                    runtime_env=runtime_env,
                )
                break
            except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
                if attempt < CLIENT_SESSION_TRIES and _client_session_not_started(exc):
                    say(
                        f"the Ray Client server at {address} could not start a session ({_server_reason(exc)}); "
                        f"trying again ({attempt + 1}/{CLIENT_SESSION_TRIES})"
                    )
                    time.sleep(attempt)
                    continue
                raise _join_error(exc, address, source, attempt) from None
        _cluster_messages_to_stderr()
        # A failed launch abandons the calls still running on the hosts it stops; their errors are already
        # reported in dpctl's own words, so Ray's "Unhandled error" dumps of them are not printed.
        quiet = "RAY_IGNORE_UNHANDLED_ERRORS" not in os.environ
        if quiet:
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
        try:
            yield cls(address)
        finally:
            ray.shutdown()
            if quiet:
                os.environ.pop("RAY_IGNORE_UNHANDLED_ERRORS", None)

    def __init__(self, address: str) -> None:
        super().__init__(RayPorts())
        self.address = address

    def snapshot(self) -> tuple[Node, ...]:
        """The alive nodes, with what they have free now."""
        return nodes.snapshot()

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

    def doctor(self, placement: Placement) -> doctor.Report:
        """A preflight of this cluster: every node probed with a shipped task (see `doctor.run`)."""
        return doctor.run(self.address, placement)

    def log_sources(self, name: str, ranks: list[int] | None) -> list[logs.LogSource]:
        """Where each rank's log is."""
        return logs.log_sources(name, ranks)

    def read_logs(self, sources: list[logs.LogSource], *, tail: int | None) -> dict[int, str]:
        """New text of each rank's log (`tail` lines the first time)."""
        return logs.read_logs(sources, tail=tail)


_VERSIONS = re.compile(
    r"started with:\s+Ray: (\S+)\s+Python: (\S+)\s+This process.*?Ray: (\S+)\s+Python: (\S+)", re.DOTALL
)


# A Ray Client server (ray://) forks one server process per session. That process may die at start (gRPC's
# fork handlers; Ray issue #63202) or not answer within 30 s under load; the next session's usually starts.
# No session exists after a failed start, so trying again is safe: at most this many tries in all.
CLIENT_SESSION_TRIES = 3
_CLIENT_INIT_FAILED = "Initialization failure from server"


def _client_session_not_started(exc: Exception) -> bool:
    """Whether a Ray Client server could not start this session for a reason that may pass on another try.

    A refused runtime_env is refused again, so it is not one.
    """
    text = str(exc)
    return _CLIENT_INIT_FAILED in text and "runtime_env" not in text


def _server_reason(exc: Exception) -> str:
    """The reason a Ray Client server sent: its traceback's last line (its session did not start, or not in time)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else type(exc).__name__, 300)


def _join_error(exc: Exception, address: str, source: str, tries: int = 1) -> ClusterUnreachable:
    """Why `ray.init` failed, in dpctl's words: a version mismatch and a refused runtime_env say what to do."""
    text = str(exc)
    versions = _VERSIONS.search(text)
    if versions:
        cluster_ray, cluster_py, my_ray, my_py = versions.groups()
        if cluster_ray != my_ray:
            return ClusterUnreachable(
                f"the cluster at {address} runs Ray {cluster_ray} (Python {cluster_py}); dpctl here runs Ray {my_ray}",
                hint=f'a driver must match its cluster\'s Ray: where dpctl runs, pip install "ray=={cluster_ray}"',
                code="version_mismatch",
            )
        return ClusterUnreachable(
            f"the cluster at {address} runs Python {cluster_py}; dpctl here runs under Python {my_py} (Ray {my_ray})",
            hint=f"run dpctl with Python {cluster_py} (Ray compares Python versions down to the patch level)",
            code="version_mismatch",
        )
    if "'uv run'" in text and "pip" in text:
        return ClusterUnreachable(
            "cluster.runtime_env.pip cannot be used while dpctl runs under `uv run`: Ray's uv hook runs the nodes' "
            "workers in the project's own environment",
            hint="add the packages to the project, or run an installed dpctl (or set RAY_ENABLE_UV_RUN_RUNTIME_ENV=0)",
            code="bad_runtime_env",
        )
    if "runtime_env" in text or "py_modules" in text or "working_dir" in text:
        return ClusterUnreachable(
            f"Ray refused the runtime_env to ship to {address}: {one_line(text, 300)}",
            hint="check cluster.runtime_env in the config",
            code="bad_runtime_env",
        )
    if _client_session_not_started(exc):
        return ClusterUnreachable(
            f"the Ray Client server at {address} could not start a session for dpctl "
            f"({tries} {'try' if tries == 1 else 'tries'}): {_server_reason(exc)}",
            hint=(
                "a session server that dies at start is Ray issue #63202: start the head with "
                "GRPC_ENABLE_FORK_SUPPORT=false in its environment"
                if "Starting Ray client server failed" in text
                else "the head's logs say why: ray_client_server*.err in the session's logs directory "
                "(/tmp/ray/session_latest/logs by default)"
            ),
            code="client_session_failed",
        )
    first = text.splitlines()[0] if text.strip() else type(exc).__name__
    return ClusterUnreachable(
        f"cannot join the Ray cluster at {address} ({source}): {one_line(first, 300)}",
        hint="with token auth, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (or ~/.ray/auth_token)",
    )


def _cluster_messages_to_stderr() -> None:
    """Send the cluster's error messages to stderr.

    Ray prints them (a node marked dead, ...) to a driver's stdout, but dpctl's stdout is for its data (JSON a
    script parses); its own messages go to stderr, and so do these.
    """
    from ray._private import worker as ray_worker  # noqa: PLC0415 - Ray's printer, looked up at each message

    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "dpctl", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.dpctl = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_stderr
