"""Where output goes: data on stdout (JSON never through Rich), messages and progress on stderr."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


class Renderable(Protocol):
    """A table: text at a width, its title bold or not."""

    def render(self, width: int | None = None, *, bold: bool = False) -> str:
        """The table as text."""


@dataclass(slots=True)
class Invocation:
    """One run of dpctl and how it prints: made by the error boundary, handed to commands as click's `ctx.obj`.

    Nothing about a run is global: tests run many in one process.
    """

    json_errors: bool = False  # errors are also `{"error": ...}` documents on stdout (`-o json` / `-o yaml`)


PIPED_WIDTH = 100  # piped output is read by people too: wide enough for a table, narrow enough to read


def width(stream: IO[str]) -> int:
    """How wide a table on `stream` may be: $COLUMNS, the terminal's width, or PIPED_WIDTH."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if stream.isatty():
        return shutil.get_terminal_size().columns
    return PIPED_WIDTH


def _width() -> int | None:
    if "COLUMNS" in os.environ:
        return None
    return None if sys.stdout.isatty() else PIPED_WIDTH


def stdout_console() -> Console:
    """A Rich console on stdout for tables (never for JSON)."""
    from rich.console import Console  # noqa: PLC0415 - `-o json` never imports Rich

    return Console(file=sys.stdout, highlight=False, width=_width(), soft_wrap=False)


def stderr_console() -> Console:
    """A Rich console on stderr for live tables and messages."""
    from rich.console import Console  # noqa: PLC0415

    return Console(file=sys.stderr, highlight=False, width=_width(), soft_wrap=False)


def print_data(item: Renderable | str) -> None:
    """A table (or text) on stdout."""
    _print(item, sys.stdout)


def _print(item: Renderable | str, stream: IO[str]) -> None:
    text = item if isinstance(item, str) else item.render(width(stream), bold=stream.isatty())
    stream.write(text + "\n")
    stream.flush()


def live_text(item: Renderable, stream: IO[str]) -> Text:
    """A table for a Rich live display on `stream`."""
    from rich.text import Text  # noqa: PLC0415 - only live displays use Rich

    return Text.from_ansi(item.render(width(stream), bold=True), no_wrap=True, overflow="crop")


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


def print_err(item: Renderable | str) -> None:
    """A table on stderr (infeasible causes, progress)."""
    _print(item, sys.stderr)
