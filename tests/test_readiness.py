"""The readiness stream and the launch loop: frames, forgeries, and Ray's own failure signals."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from dpctl_ray.config import Timeouts
from dpctl_ray.engines.protocol import MAX_FRAME_BYTES, BadFrame, Frame, Phase, decode
from dpctl_ray.engines.spec import DemoSpec
from dpctl_ray.errors import InfeasibleError, LaunchFailed, TimedOut
from dpctl_ray.launcher.progress import RankPhase, RankProgress
from dpctl_ray.launcher.stream import ReadinessStream
from dpctl_ray.local.state import LocalState
from dpctl_ray.planner import Placement, Plan, PlanRequest, plan
from tests.conftest import leftovers, ray_driver


def frame(**changes: Any) -> Frame:
    base = Frame(deployment="d", token="t", rank=0, phase=Phase.READY, ts=1.0, devices=("0",))
    return replace(base, **changes)


def test_frames_round_trip() -> None:
    """A frame decodes to exactly what was encoded."""
    f = frame(phase=Phase.PROGRESS, progress=0.5, message="loading", node="n", ip="1.2.3.4")
    assert decode(f.encode()) == f


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"v": 2, "phase": "ready", "rank": 0, "ts": 1.0}).encode(),
        json.dumps({"v": 1, "phase": "exploded", "rank": 0, "ts": 1.0}).encode(),
        json.dumps({"v": 1, "phase": "ready", "rank": -1, "ts": 1.0}).encode(),
        json.dumps({"v": 1, "phase": "ready", "rank": True, "ts": 1.0}).encode(),
        json.dumps({"v": 1, "phase": "ready", "rank": 0, "ts": "now"}).encode(),
        json.dumps({"v": 1, "phase": "progress", "rank": 0, "ts": 1.0, "progress": 7}).encode(),
        json.dumps({"v": 1, "phase": "ready", "rank": 0, "ts": 1.0, "devices": [0, 1]}).encode(),
        json.dumps({"v": 1, "phase": "ready", "rank": 0, "ts": 1.0, "token": 5}).encode(),
        b"{" + b" " * MAX_FRAME_BYTES + b"}",
    ],
    ids=[
        "garbage",
        "array",
        "version",
        "phase",
        "negative-rank",
        "bool-rank",
        "ts",
        "progress",
        "devices",
        "token-type",
        "oversize",
    ],
)
def test_malformed_frames_are_rejected(data: bytes) -> None:
    """Every kind of malformed frame raises BadFrame, never anything else."""
    with pytest.raises(BadFrame):
        decode(data)


def test_stream_keeps_this_launch_and_counts_the_rest() -> None:
    """Over a real socket: frames of another launch, deployment or rank, and garbage, are dropped and counted."""
    import zmq

    stream = ReadinessStream("d", "t", {0, 1}, "127.0.0.1")
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(stream.address)
    try:
        for data in (
            b"\x00\xffgarbage",
            frame(token="other-launch").encode(),
            frame(deployment="other").encode(),
            frame(rank=7).encode(),
            frame(rank=1).encode(),
        ):
            push.send(data)
        got: list[Frame] = []
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            got += stream.poll(100)
        assert [f.rank for f in got] == [1]
        assert stream.dropped == {"malformed": 1, "foreign": 3}
    finally:
        push.close(0)
        context.term()
        stream.close()


def test_a_reporter_closed_while_other_threads_send_drops_their_frames_and_does_not_hang() -> None:
    """A host's calls run concurrently: an earlier launch's start may still report while a later one closes.

    Over a real socket: four threads send while the reporter is closed; close returns (within the linger time),
    nothing raises, and a frame sent after close goes nowhere.
    """
    from dpctl_ray.engines.report import StreamReporter

    stream = ReadinessStream("d", "t", {0}, "127.0.0.1")
    reporter = StreamReporter(stream.address, "d", "t", 0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def send() -> None:
        try:
            while not stop.is_set():
                reporter.progress(0.5, "loading")
        except BaseException as exc:  # any error is the test's finding
            errors.append(exc)

    senders = [threading.Thread(target=send, daemon=True) for _ in range(4)]
    try:
        for t in senders:
            t.start()
        time.sleep(0.05)
        closer = threading.Thread(target=reporter.close, daemon=True)
        closer.start()
        closer.join(timeout=10)
        assert not closer.is_alive(), "close() hung while other threads were sending"
        stop.set()
        for t in senders:
            t.join(timeout=5)
        assert errors == []
        reporter.send(Phase.FAILED, "too late")  # dropped, as to a launcher that is gone
        assert reporter.last is not None
        assert reporter.last.phase is Phase.FAILED
    finally:
        stop.set()
        stream.close()


@dataclass
class Recorder:
    """An observer that records every update (the seam the CLI's live view also uses)."""

    updates: list[tuple[int, str]] = field(default_factory=list)
    on_begin: Any = None
    ended: bool | None = None

    def begin(self, ranks: list[RankProgress], started: float) -> None:
        if self.on_begin:
            self.on_begin()

    def update(self, rank: RankProgress) -> None:
        self.updates.append((rank.rank, rank.phase.value))

    def tick(self) -> None:
        pass

    def end(self, ok: bool) -> None:
        self.ended = ok


def live_plan(name: str, dp: int, tp: int) -> tuple[Plan, dict[str, str]]:
    from dpctl_ray.launcher.nodes import snapshot

    nodes = snapshot()
    result = plan(PlanRequest(name, Placement(dp=dp, tp=tp, pack="fill"), nodes))
    assert isinstance(result, Plan)
    return result, {n.id: n.ip for n in nodes}


def launch(
    plan_: Plan,
    ips: dict[str, str],
    recorder: Recorder,
    *,
    engine: DemoSpec | None = None,
    bind_ip: str | None = "127.0.0.1",
    placement: float = 30,
    ready: float = 60,
) -> Any:
    from dpctl_ray.launcher.apply import Launch

    return Launch(
        plan_,
        list(plan_.ranks),
        engine=engine or DemoSpec(init_seconds=0.5),
        timeouts=Timeouts(placement, ready),
        observer=recorder,
        bind_ip=bind_ip,
        node_ips=ips,
    )


@pytest.mark.ray
def test_forged_and_garbage_frames_do_not_disturb_a_launch(live: LocalState) -> None:
    """A flood of garbage and frames forged for another launch is dropped and counted; the launch succeeds."""
    import zmq

    with ray_driver(live):
        plan_, ips = live_plan("forged", dp=2, tp=1)
        recorder = Recorder()
        run = launch(plan_, ips, recorder, engine=DemoSpec(init_seconds=1.0))

        def forge() -> None:
            context = zmq.Context()
            push = context.socket(zmq.PUSH)
            push.connect(run.stream_address)
            for i in range(50):
                push.send(b"\x00not a frame" * (i + 1))
                push.send(Frame("forged", "wrong-token", 0, Phase.FAILED, time.time(), "forged failure").encode())
                push.send(Frame("forged", run.token, 99, Phase.FAILED, time.time(), "no such rank").encode())
            push.close(linger=2000)
            context.term()

        forger = threading.Thread(target=forge)
        recorder.on_begin = forger.start
        try:
            result = run.run()
        finally:
            forger.join()
            from dpctl_ray.launcher import objects

            objects.remove(run.created.groups, run.created.actors)
    assert recorder.ended is True
    assert all(p.phase is RankPhase.READY for p in result.ranks.values())
    assert result.dropped == {"malformed": 50, "foreign": 100}
    assert leftovers(live, "forged") == []


@pytest.mark.ray
def test_without_the_stream_ray_reports_the_engines_own_error(live: LocalState) -> None:
    """With no readiness stream, a failed start still fails at once, with the exception the engine raised."""
    with ray_driver(live):
        plan_, ips = live_plan("silent", dp=2, tp=1)
        run = launch(plan_, ips, Recorder(), bind_ip=None, engine=DemoSpec(init_seconds=0.4, fail_ranks=(0,)))
        started = time.monotonic()
        with pytest.raises(LaunchFailed) as err:
            run.run()
        assert time.monotonic() - started < 30
    assert "rank 0 failed to start: demo engine: rank 0 failed to start (engine.fail_ranks lists it" in (
        err.value.message
    )
    assert leftovers(live, "silent") == []


@pytest.mark.ray
def test_a_group_ray_finds_infeasible_fails_at_once(live: LocalState) -> None:
    """A group pinned to a node that is gone is INFEASIBLE in Ray: the launch fails (exit 3) without waiting."""
    with ray_driver(live):
        plan_, ips = live_plan("vanished", dp=1, tp=1)
        gone = replace(plan_.ranks[0], nodes=("f" * 56,), control="f" * 56)
        run = launch(replace(plan_, ranks=(gone,)), ips, Recorder(), placement=60)
        started = time.monotonic()
        with pytest.raises(InfeasibleError) as err:
            run.run()
        assert time.monotonic() - started < 15
    assert "rank 0: Ray cannot place its group" in err.value.message
    assert leftovers(live, "vanished") == []


@pytest.mark.ray
def test_placement_timeout_names_the_waiting_ranks(live: LocalState) -> None:
    """Devices held by another job keep a group pending: at timeouts.placement the launch fails (exit 5)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    with ray_driver(live) as ray:
        plan_, ips = live_plan("starved", dp=1, tp=4)
        node = plan_.ranks[0].nodes[0]
        squatter = placement_group(
            [{"GPU": 4}], strategy="STRICT_PACK", bundle_label_selector=[{"ray.io/node-id": node}]
        )
        ray.get(squatter.ready(), timeout=30)
        try:
            run = launch(plan_, ips, Recorder(), placement=2)
            with pytest.raises(TimedOut) as err:
                run.run()
        finally:
            remove_placement_group(squatter)
    assert "placement timed out after 2s: ranks 0 still wait for resources" in err.value.message
    assert leftovers(live, "starved") == []
