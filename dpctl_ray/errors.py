"""Exit codes and the DpctlError family: every failure a user can cause, with fields and a hint."""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import Any, ClassVar


class ExitCode(IntEnum):
    """The process exit codes of every dpctl command (DESIGN.md)."""

    OK = 0
    ERROR = 1
    BAD_INPUT = 2
    INFEASIBLE = 3
    LAUNCH_FAILED = 4
    TIMEOUT = 5
    INTERRUPTED = 130


class DpctlError(Exception):
    """A failure the user can act on: a one-line message, a hint and a machine-readable code."""

    exit_code: ClassVar[ExitCode] = ExitCode.ERROR
    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code or self.default_code
        self.details: dict[str, Any] = details or {}
        self.failed_ranks: dict[int, str] = {}  # a launch's: each rank that failed, with why

    def to_json(self) -> dict[str, Any]:
        """The `{"error": {...}}` document printed on stdout with `-o json`."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        body.update(self.details)
        return {"error": body}


class BadInput(DpctlError):
    """Usage, config, inventory or plan-file errors: the input is wrong, not the cluster."""

    exit_code = ExitCode.BAD_INPUT
    default_code = "bad_input"


class ConfigError(BadInput):
    """The config file or a flag has a wrong key, type or value; the message names the key path."""

    default_code = "bad_config"


class ClusterUnreachable(BadInput):
    """No Ray cluster at the address the user (or the environment) named."""

    default_code = "cluster_unreachable"


class InfeasibleError(DpctlError):
    """The cluster cannot hold the plan; `details` carries the planner's causes."""

    exit_code = ExitCode.INFEASIBLE
    default_code = "infeasible"


class LaunchFailed(DpctlError):
    """Applying a plan failed; everything the command created was removed."""

    exit_code = ExitCode.LAUNCH_FAILED
    default_code = "launch_failed"


class Busy(LaunchFailed):
    """Another dpctl command holds the deployment: one wins, this one stops before changing anything."""

    default_code = "busy"


class TimedOut(DpctlError):
    """A deadline passed; everything the command created was removed."""

    exit_code = ExitCode.TIMEOUT
    default_code = "timeout"


class Interrupted(DpctlError):
    """Ctrl-C; everything the command created was removed."""

    exit_code = ExitCode.INTERRUPTED
    default_code = "interrupted"


class Left(str, Enum):
    """What a change that failed left of its deployment."""

    RUNNING = "running"  # the ranks it had keep running (what was added is removed)
    DEGRADED = "degraded"  # the other ranks keep running; the lost ones stay lost
    RESTARTED = "restarted"  # a group, restarted at its old size on the hosts it kept
    DOWN = "down"  # a group, down: its placement groups kept for the next try


class ChangeFailed(DpctlError):
    """A scale, repair or restart failed and was undone; `cause` says why, `left` what it left.

    The message is the cause's; the CLI says what was left (`cli.failures`). The exit code is the cause's.
    """

    def __init__(
        self,
        operation: str,
        name: str,
        cause: DpctlError,
        left: Left,
        *,
        before: int,
        after: int,
        ranks: tuple[int, ...] = (),
        second: str = "",
    ) -> None:
        super().__init__(cause.message, hint=cause.hint, code=cause.code, details=cause.details)
        self.exit_code = cause.exit_code  # type: ignore[misc]  # the cause's, not the class's
        self.operation = operation
        self.name = name
        self.cause = cause
        self.left = left
        self.before = before
        self.after = after
        self.ranks = ranks
        self.second = second  # why a group's restart at its old size failed too
