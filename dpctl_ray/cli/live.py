"""Watching a launch: a live per-rank table on a terminal's stderr, one line per change anywhere else."""

from __future__ import annotations

import sys
import time
from typing import Any

from dpctl_ray.cli import console
from dpctl_ray.cli.render import LAUNCH_COLUMNS, Table, delta_title, devices_text, launch_rows, plan_title, table
from dpctl_ray.launcher.progress import RankPhase, RankProgress
from dpctl_ray.planner.model import Plan
from dpctl_ray.planner.scale import ScalePlan

REFRESH_SECONDS = 0.1
LINE_SECONDS = 1.0  # line mode: at most one loading line per rank this often (an engine may log a flood)
LINE_WIDTH = 100  # line mode: an engine's line is cut to fit, as tables are


class LiveView:
    """The observer the CLI gives a command: what it says on stderr, and its launches live; `lines` forces line mode."""

    def __init__(self, title: str, *, lines: bool | None = None) -> None:
        self.title = title
        self.lines = not sys.stderr.isatty() if lines is None else lines
        self.ranks: dict[int, RankProgress] = {}
        self.started = time.monotonic()
        self._live: Any = None
        self._drawn = 0.0
        self._printed: dict[int, tuple[RankPhase, str, float]] = {}  # rank -> last line's phase, message, time

    def planned(self, plan: Plan) -> None:
        """Say what is about to be launched."""
        console.info(plan_title(plan))

    def scaling(self, delta: ScalePlan, *, restart: bool) -> None:
        """Say what a scale is about to do."""
        console.info(delta_title(delta, restart=restart))

    def note(self, message: str) -> None:
        """Say it on stderr."""
        console.info(message)

    def warn(self, message: str) -> None:
        """Warn on stderr."""
        console.warn(message)

    def begin(self, ranks: list[RankProgress], started: float) -> None:
        """Show every rank as pending."""
        self.ranks = {r.rank: r for r in ranks}
        self.started = started
        if self.lines:
            console.info(f"{self.title}: launching {len(ranks)} rank{'s' if len(ranks) != 1 else ''}")
            return
        from rich.live import Live  # noqa: PLC0415

        # Transient: on success the table gives way to the summary and the final status; a failure keeps it.
        self._live = Live(self._render(), console=console.stderr_console(), auto_refresh=False, transient=True)
        self._live.start()

    def update(self, rank: RankProgress) -> None:
        """A rank changed: redraw, or print the change."""
        self.ranks[rank.rank] = rank
        if not self.lines:
            self._draw(force=True)
            return
        now = time.monotonic()
        phase, message, at = self._printed.get(rank.rank, (None, "", 0.0))
        if phase is rank.phase and (
            rank.phase is not RankPhase.LOADING or rank.message in ("", message) or now - at < LINE_SECONDS
        ):
            return  # a line per phase, and per loading message (at most one a second)
        self._printed[rank.rank] = (rank.phase, rank.message, now)
        where = f" on {rank.ip}" if rank.ip and rank.ip != "?" else ""
        text = rank.phase.value
        if rank.phase is RankPhase.LOADING and rank.message:
            text = f"loading: {rank.message}"
        elif rank.phase is RankPhase.READY:
            held = f", devices {devices_text(rank.devices, rank.device_ips)}" if any(rank.devices) else ""
            text = f"ready{where}{held} ({rank.ready_in or 0:.1f}s)"
        elif rank.phase is RankPhase.FAILED:
            text = f"failed: {rank.message.splitlines()[0] if rank.message else ''}"
        elif rank.phase is RankPhase.PLACED:
            text = f"placed{where}"
        line = f"  rank {rank.rank}: {text}"
        console.info(line if len(line) <= LINE_WIDTH else line[: LINE_WIDTH - 1] + "…")

    def tick(self) -> None:
        """Keep elapsed times moving."""
        if not self.lines:
            self._draw(force=False)

    def end(self, ok: bool) -> None:
        """Stop redrawing; after a failure, leave the last table on screen to show where each rank got to."""
        if self._live is not None:
            self._live.stop()
            self._live = None
            if not ok:
                console.print_err(self._table())

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if self._live is not None and (force or now - self._drawn >= REFRESH_SECONDS):
            self._drawn = now
            self._live.update(self._render(), refresh=True)

    def _table(self) -> Table:
        ranks = [self.ranks[r] for r in sorted(self.ranks)]
        ready = sum(1 for r in ranks if r.phase is RankPhase.READY)
        now = time.monotonic()
        title = f"{self.title}: {ready}/{len(ranks)} ready, {now - self.started:.1f}s"
        return table(LAUNCH_COLUMNS, launch_rows(ranks, now, self.started), title=title)

    def _render(self) -> Any:
        return console.live_text(self._table(), sys.stderr)
