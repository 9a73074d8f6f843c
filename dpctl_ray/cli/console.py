"""Where output goes: data on stdout (JSON never through Rich), messages and progress on stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType


class _Session:
    """Per-invocation output settings the error boundary needs (tests run many invocations in one process)."""

    json_errors = False


session = _Session()


def reset() -> None:
    """Forget the previous invocation's settings."""
    session.json_errors = False


def _width() -> int | None:
    # Piped output is read by people too; Rich's 80-column default wraps our tables needlessly.
    if "COLUMNS" in os.environ:
        return None
    return None if sys.stdout.isatty() else 100


def stdout_console() -> Console:
    """A Rich console on stdout for tables (never for JSON)."""
    from rich.console import Console  # noqa: PLC0415 - `-o json` never imports Rich

    return Console(file=sys.stdout, highlight=False, width=_width(), soft_wrap=False)


def stderr_console() -> Console:
    """A Rich console on stderr for live tables and messages."""
    from rich.console import Console  # noqa: PLC0415

    return Console(file=sys.stderr, highlight=False, width=_width(), soft_wrap=False)


def print_data(renderable: RenderableType) -> None:
    """A table (or text) on stdout."""
    stdout_console().print(renderable)


def print_json(doc: Any) -> None:
    """A JSON document on stdout, indented (status documents are small; plan documents have their own writer)."""
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def write_stdout(text: str) -> None:
    """Pre-rendered data on stdout."""
    sys.stdout.write(text)
    sys.stdout.flush()


def info(message: str) -> None:
    """A progress or result line on stderr (plain text: user and cluster strings are not markup)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    """A warning on stderr."""
    sys.stderr.write(f"dpctl: warning: {message}\n")
    sys.stderr.flush()


def print_err(renderable: RenderableType) -> None:
    """A table on stderr (infeasible causes, progress)."""
    stderr_console().print(renderable)
