"""Engine classes for the tests: one that keeps the contract, one that does not."""

from __future__ import annotations

from dpctl_ray.engines.base import EngineContext, Health, Progress


class Complete:
    """Keeps the engine contract and does nothing."""

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Ready at once."""

    def health(self) -> Health:
        """Always fine."""
        return Health(ok=True)

    def set_dp(self, dp: int) -> None:
        """Ignored."""

    def stop(self) -> None:
        """Nothing to stop."""


class NoStop:
    """Forgets stop() and set_dp()."""

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Ready at once."""

    def health(self) -> Health:
        """Always fine."""
        return Health(ok=True)
