"""The demo engine: simulates loading with progress, can be told to fail, and remembers the dp size it was given."""

from __future__ import annotations

import time

from dpctl_ray.engines.base import EngineContext, EngineError, Health, Progress

STEP_SECONDS = 0.2


class DemoEngine:
    """Loads for `init_seconds` (reporting progress), fails on purpose for `fail_ranks`, then serves."""

    def __init__(self, init_seconds: float = 1.0, fail_ranks: tuple[int, ...] = ()) -> None:
        self.init_seconds = init_seconds
        self.fail_ranks = fail_ranks
        self.dp = 0
        self.stopped = False

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Simulate loading weights; a rank in fail_ranks fails halfway, as a real engine would."""
        self.dp = ctx.dp
        steps = max(1, round(self.init_seconds / STEP_SECONDS))
        for step in range(steps):
            if ctx.rank in self.fail_ranks and step >= steps // 2:
                msg = f"demo engine: rank {ctx.rank} failed to start (engine.fail_ranks lists it; a drill)"
                raise EngineError(msg)
            time.sleep(self.init_seconds / steps)
            progress.progress((step + 1) / steps, "loading weights")
            ctx.log(f"demo engine: loading weights {100 * (step + 1) // steps}%")
        if ctx.rank in self.fail_ranks:
            msg = f"demo engine: rank {ctx.rank} failed to start (engine.fail_ranks lists it; a drill)"
            raise EngineError(msg)

    def health(self) -> Health:
        """Serving unless stopped."""
        return Health(ok=not self.stopped, detail="stopped" if self.stopped else f"serving as one of {self.dp}")

    def set_dp(self, dp: int) -> None:
        """Remember the new size (status shows it)."""
        self.dp = dp

    def stop(self) -> None:
        """Nothing to release."""
        self.stopped = True
