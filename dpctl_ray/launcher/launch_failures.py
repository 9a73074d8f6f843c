"""Every way a launch fails, as the typed error it raises: one function per cause, the words in one place.

A launch (`apply.Launch`) decides that it failed and why; these say it. What the failure left of a running
deployment (kept running, a group back at its old size, ...) is the reconciler's `ChangeFailed`, in the CLI's
words (`cli.failures`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ray.exceptions import RayActorError, RayTaskError, RuntimeEnvSetupError

from dpctl_ray.errors import InfeasibleError, Interrupted, LaunchFailed, TimedOut
from dpctl_ray.launcher.progress import RankPhase, RankProgress
from dpctl_ray.planner.model import RankPlacement, ResolvedSpec
from dpctl_ray.values import one_line

REMOVED = "everything this launch created was removed"
FAILED_HINT = f"fix the engine or its config; {REMOVED}"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def rank(ranks: Iterable[int], message: str) -> LaunchFailed:
    """An engine (or a command's process) failed to start: the engine's own words."""
    listed = list(ranks)
    numbers = ", ".join(map(str, listed))
    return LaunchFailed(
        f"rank{'s' if len(listed) > 1 else ''} {numbers} failed to start: {message}",
        hint=FAILED_HINT,
        code="engine_failed",
    )


def runtime_env(rank_: int, message: str) -> LaunchFailed:
    """Ray could not set up a rank's runtime_env on its node (a pip requirement that does not install)."""
    return LaunchFailed(
        f"rank {rank_}: Ray could not set up its runtime_env on the node: {message}",
        hint=f"check cluster.runtime_env (a pip requirement must install on every node); {REMOVED}",
        code="runtime_env_failed",
    )


def headless_exited(ranks: Iterable[int], node: str, code: int, detail: str) -> LaunchFailed:
    """A headless process (no readiness check of its own) exited before its group was ready."""
    numbers = ", ".join(map(str, ranks))
    return LaunchFailed(
        f"the headless process of ranks {numbers} on {node} exited with code {code} before the group was ready"
        + (f": {detail}" if detail else ""),
        hint=FAILED_HINT,
        code="engine_failed",
    )


def host_gone(deployment: str, rank_: int, k: int) -> LaunchFailed:
    """A host that a restart was to use is gone (its node died, or it was killed)."""
    return LaunchFailed(
        f"rank {rank_}: its engine host on node {k} is gone",
        hint=f"`dpctl status {deployment}` shows its ranks; `dpctl repair` replaces lost ones",
        code="host_gone",
    )


def group_infeasible(placement: RankPlacement, spec: ResolvedSpec, node_ips: Mapping[str, str]) -> InfeasibleError:
    """Ray found that no node can hold a rank's group any more (the cluster changed since planning)."""
    where = ", ".join(
        f"{node_ips.get(n, n)} ({c} {spec.device})" for n, c in zip(placement.nodes, placement.devices, strict=True)
    )
    return InfeasibleError(
        f"rank {placement.rank}: Ray cannot place its group on {where} + {spec.cpus:g} CPU: "
        "the node is gone or lacks the resources now",
        hint="the cluster changed since planning; run `dpctl plan` to see what fits now",
        code="group_infeasible",
    )


def placement_timeout(ranks: Iterable[int], seconds: float) -> TimedOut:
    """Ranks whose groups Ray had not placed when timeouts.placement passed."""
    listed = ", ".join(str(r) for r in sorted(ranks))
    return TimedOut(
        f"placement timed out after {seconds:g}s: ranks {listed} still wait for resources "
        "(another job holds them, or a node is busy)",
        hint=f"raise timeouts.placement, or free the devices; {REMOVED}",
        code="placement_timeout",
    )


def ready_timeout(ranks: Iterable[RankProgress], seconds: float) -> TimedOut:
    """Ranks not ready when timeouts.ready passed, each with the phase it got to."""
    parts = []
    for p in ranks:
        phase = p.phase.value + (f" {p.progress:.0%}" if p.phase is RankPhase.LOADING and p.progress else "")
        parts.append(f"{p.rank} ({phase})")
    return TimedOut(
        f"engines not ready after {seconds:g}s: ranks {', '.join(parts)}",
        hint=f"raise timeouts.ready if loading is just slow; {REMOVED}",
        code="ready_timeout",
    )


def interrupted() -> Interrupted:
    """Ctrl-C during a launch, after what it created was removed."""
    return Interrupted("interrupted: removed the placement groups and engines this launch created")


def runtime_env_failure(exc: RuntimeEnvSetupError) -> str:
    """The line of Ray's runtime_env error that says what failed (its last, after pip's or Ray's traceback)."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return one_line(lines[-1], 400) if lines else "Ray gave no reason"


def failure(exc: RayActorError | RayTaskError) -> str:
    """The engine's own words from a failed call or a dead actor: the exception it raised, when that is what happened.

    A task error carries the exception itself; a dead actor only text that ends with the traceback's last
    line, `Type: message`. An EngineError is shown as its message alone, anything else with its type.
    """
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and cause is not None and not isinstance(cause, RayTaskError):
        return str(cause) if type(cause).__name__ == "EngineError" else f"{type(cause).__name__}: {cause}"
    lines = _ANSI.sub("", str(exc)).strip().splitlines()
    if not lines:
        return "its engine actor died"
    if isinstance(exc, RayActorError) and not exc.actor_init_failed:
        return " ".join(line.strip() for line in lines if line.strip())
    last = lines[-1].strip()
    kind, sep, message = last.partition(": ")
    if sep and kind.rsplit(".", 1)[-1] == "EngineError":
        return message
    return last
