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


class SlowFromRank(Complete):
    """Ready at once below rank `slow_from`; ranks from it on load for `seconds` (a scale-up caught mid-load)."""

    def __init__(self, slow_from: int = 1, seconds: float = 60.0) -> None:
        self.slow_from, self.seconds = slow_from, seconds

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Load for `seconds` when this rank is a slow one, reporting as it goes."""
        import time

        deadline = time.monotonic() + (self.seconds if ctx.rank >= self.slow_from else 0)
        while time.monotonic() < deadline:
            progress.progress(None, "loading slowly")
            time.sleep(0.5)


def _device_view() -> dict[str, object]:
    """What a device worker's process sees: its pid, the ids Ray granted it and CUDA_VISIBLE_DEVICES."""
    import os

    import ray

    ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    return {"pid": os.getpid(), "ids": [str(i) for i in ids], "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


class PerDevice:
    """Needs the per_device layout: runs a function in each device's worker process, as vLLM's Ray executor does."""

    dpctl_bundles = "per_device"

    def __init__(self) -> None:
        self.views: list[dict[str, object]] = []

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Ask every device worker what it sees."""
        import ray

        self.views = ray.get([worker.run.remote(_device_view) for worker in ctx.workers])

    def health(self) -> Health:
        """What each worker saw, as JSON in the detail."""
        import json

        return Health(ok=True, detail=json.dumps(self.views))

    def set_dp(self, dp: int) -> None:
        """Ignored."""

    def stop(self) -> None:
        """Nothing to stop."""


class BadLayout(Complete):
    """Declares a layout that does not exist."""

    dpctl_bundles = "per_gpu"
