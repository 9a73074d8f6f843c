"""`dpctl up`, `status` and `down` on the session's real multi-node Ray cluster, happy and unhappy paths."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dpctl_ray.local.state import LocalState
from tests.conftest import Invoke, demo_config, dpctl, dpctl_background, interrupt, leftovers, ray_driver, wait_for

pytestmark = pytest.mark.ray


def up_json(config: str, *extra: str) -> dict:
    result = dpctl("up", "-f", config, "-o", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_up_status_down_leaves_nothing(live: LocalState, tmp_path: Path) -> None:
    """up brings every rank to READY with distinct granted devices on its planned node; down removes it all."""
    config = demo_config(tmp_path, "life", dp=4, tp=2)
    plan = json.loads(dpctl("plan", "-f", config, "-o", "json").stdout)
    doc = up_json(config)
    (dep,) = doc["deployments"]
    assert (dep["name"], dep["dp"], dep["world_size"], dep["pack"]) == ("life", 4, 2, "strict")
    assert [r["state"] for r in dep["ranks"]] == ["READY"] * 4
    for rank, planned in zip(dep["ranks"], plan["ranks"], strict=True):
        assert rank["node"] == planned["nodes"][0]
        assert len(rank["devices"]) == 2
    per_node: dict[str, list[str]] = {}
    for rank in dep["ranks"]:
        per_node.setdefault(rank["node"], []).extend(rank["devices"])
    for devices in per_node.values():
        assert len(devices) == len(set(devices)), "two ranks were granted the same device"
    assert doc["launch"]["dropped_frames"] == {}

    status = dpctl("status", "life", "-o", "json")
    assert status.returncode == 0, status.stderr
    ranks = json.loads(status.stdout)["deployments"][0]["ranks"]
    assert [(r["state"], r["devices"]) for r in ranks] == [(r["state"], r["devices"]) for r in dep["ranks"]]

    down = dpctl("down", "life")
    assert down.returncode == 0, down.stderr
    assert "life: removed 4 engines" in down.stderr
    assert leftovers(live, "life") == []
    again = dpctl("down", "life")
    assert again.returncode == 0
    assert "life: nothing to remove" in again.stderr


def test_status_table_and_up_of_a_running_deployment(live: LocalState, tmp_path: Path) -> None:
    """A second up with the same spec says so and exits 0; another spec is refused naming what differs."""
    config = demo_config(tmp_path, "twice", dp=2, tp=2)
    up_json(config)
    try:
        again = dpctl("up", "-f", config)
        assert again.returncode == 0, again.stderr
        assert "twice already runs with this spec (2 ranks): nothing to do" in again.stderr
        assert "READY" in again.stdout
        other = dpctl("up", "-f", config, "--tp", "1")
        assert other.returncode == 2, other.stderr
        assert "placement.tp: 2 -> 1" in other.stderr
        table = dpctl("status")
        assert table.returncode == 0, table.stderr
        assert "twice: 2 ranks of TP 2, pack strict, bundles per_node, running: 2 READY" in table.stdout
    finally:
        dpctl("down", "twice")
    assert leftovers(live, "twice") == []


def test_a_failing_rank_exits_4_with_its_message_and_leaves_nothing(live: LocalState, tmp_path: Path) -> None:
    """A rank whose engine fails to start fails the launch at once (exit 4) with the engine's message."""
    config = demo_config(tmp_path, "failing", dp=2, tp=1, init_seconds=1.0, fail_ranks=(1,), ready=300)
    started = time.monotonic()
    result = dpctl("up", "-f", config)
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 60, "a failed rank must not wait for the ready timeout"
    assert "dpctl: error: rank 1 failed to start: demo engine: rank 1 failed to start" in result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(live, "failing") == []
    assert "failing" not in dpctl("status", "-o", "json").stdout


def test_infeasible_exits_3_and_creates_nothing(live: LocalState, tmp_path: Path) -> None:
    """More ranks than the cluster holds is exit 3 before anything is created."""
    config = demo_config(tmp_path, "toobig", dp=9, tp=4)
    result = dpctl("up", "-f", config)
    assert result.returncode == 3, result.stderr
    assert "cannot place rank 4 of 9" in result.stderr
    assert leftovers(live, "toobig", wait=0) == []


def test_ready_timeout_exits_5_and_leaves_nothing(live: LocalState, tmp_path: Path) -> None:
    """Engines still loading at timeouts.ready fail the launch with exit 5, naming the ranks, and nothing is left."""
    config = demo_config(tmp_path, "sluggish", dp=2, tp=1, init_seconds=60, ready=3)
    result = dpctl("up", "-f", config)
    assert result.returncode == 5, result.stderr
    assert "dpctl: error: engines not ready after 3s: ranks 0 (" in result.stderr
    assert leftovers(live, "sluggish") == []


def test_ctrl_c_during_up_exits_130_and_leaves_nothing(live: LocalState, tmp_path: Path) -> None:
    """SIGINT while engines load removes what the launch created and exits 130."""
    config = demo_config(tmp_path, "interrupted", dp=2, tp=1, init_seconds=60)
    proc = dpctl_background("up", "-f", config)
    try:
        wait_for(lambda: leftovers(live, "interrupted", wait=0))
        time.sleep(1.0)
        _, stderr = interrupt(proc)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert leftovers(live, "interrupted") == []


def test_sigkilled_up_is_cleaned_by_down(live: LocalState, tmp_path: Path) -> None:
    """A launch whose CLI is SIGKILLed leaves objects behind that `down` (from another process) removes."""
    config = demo_config(tmp_path, "killed", dp=2, tp=1, init_seconds=60)
    proc = dpctl_background("up", "-f", config)
    try:
        wait_for(lambda: len(leftovers(live, "killed", wait=0)) >= 4)
    finally:
        proc.kill()
        proc.wait()
    down = dpctl("down", "killed")
    assert down.returncode == 0, down.stderr
    assert "killed: removed 2 engines" in down.stderr
    assert leftovers(live, "killed") == []


def test_concurrent_ups_of_one_name_one_wins(live: LocalState, tmp_path: Path) -> None:
    """Two `up`s of one deployment at once: one launches, the other stops with a clear error and exit 4."""
    config = demo_config(tmp_path, "race", dp=2, tp=1, init_seconds=2)
    procs = [dpctl_background("up", "-f", config) for _ in range(2)]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    try:
        codes = sorted(code for code, _ in results)
        assert codes == [0, 4], results
        loser = next(err for code, err in results if code == 4)
        assert "deployment 'race' is being changed by another dpctl command: `dpctl up`" in loser
        status = json.loads(dpctl("status", "race", "-o", "json").stdout)
        assert [r["state"] for r in status["deployments"][0]["ranks"]] == ["READY", "READY"]
    finally:
        dpctl("down", "race")
    assert leftovers(live, "race") == []


def test_status_reports_a_killed_engine_as_dead(live: LocalState, tmp_path: Path) -> None:
    """A rank whose engine actor is gone shows DEAD; the others stay READY."""
    config = demo_config(tmp_path, "wounded", dp=2, tp=1)
    up_json(config)
    try:
        with ray_driver(live) as ray:
            ray.kill(ray.get_actor("dpctl/wounded/engine-1", namespace="dpctl"), no_restart=True)
        status = json.loads(dpctl("status", "wounded", "-o", "json").stdout)
        states = {r["rank"]: (r["state"], r["detail"]) for r in status["deployments"][0]["ranks"]}
        assert states[0][0] == "READY"
        assert states[1][0] == "DEAD"
    finally:
        dpctl("down", "wounded")
    assert leftovers(live, "wounded") == []


def test_plan_file_applies_and_a_stale_one_is_refused(live: LocalState, tmp_path: Path) -> None:
    """`up --plan` applies a reviewed plan; once the cluster has changed, the same file is refused (exit 2)."""
    config = demo_config(tmp_path, "planned", dp=2, tp=2, pack="fill")
    plan_file = tmp_path / "plan.json"
    made = dpctl("plan", "-f", config, "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    planned = json.loads(plan_file.read_text())
    applied = dpctl("up", "--plan", str(plan_file), "-f", config, "-o", "json")
    try:
        assert applied.returncode == 0, applied.stderr
        ranks = json.loads(applied.stdout)["deployments"][0]["ranks"]
        assert [r["node"] for r in ranks] == [r["nodes"][0] for r in planned["ranks"]]
        stale = dpctl("up", "--plan", str(plan_file), "--name", "planned-again", "-f", config)
        assert stale.returncode == 2, stale.stderr
        assert "the plan file was made against another cluster state" in stale.stderr
        mixed = dpctl("up", "--plan", str(plan_file), "--dp", "3")
        assert mixed.returncode == 2
        assert "--plan fixes the placement; drop --dp" in mixed.stderr
    finally:
        dpctl("down", "planned")
    assert leftovers(live, "planned") == []
    assert leftovers(live, "planned-again", wait=0) == []


def test_a_tampered_plan_file_with_a_fresh_fingerprint_creates_nothing(live: LocalState, tmp_path: Path) -> None:
    """Moving a rank onto a full node keeps the fingerprint, but `up --plan` refuses it (exit 2) before creating."""
    config = demo_config(tmp_path, "forged", dp=3, tp=2, pack="fill")
    plan_file = tmp_path / "plan.json"
    assert dpctl("plan", "-f", config, "--out", str(plan_file)).returncode == 0
    doc = json.loads(plan_file.read_text())
    master = doc["spec"]["master"]
    rank = doc["ranks"][2]
    for bundle in rank["bundles"]:
        bundle["node"] = master
    rank.update(nodes=[master], local_rank=2)
    doc["spec"]["dp_local"] = 3
    plan_file.write_text(json.dumps(doc))
    result = dpctl("up", "--plan", str(plan_file), "-f", config)
    assert result.returncode == 2, result.stderr
    assert f"the plan puts 6 GPU on '{master}'" in result.stderr
    assert "which has 4 free" in result.stderr
    assert leftovers(live, "forged", wait=0) == []


def test_down_all_removes_every_deployment(live: LocalState, tmp_path: Path) -> None:
    """down --all removes every dpctl deployment in the cluster, each named in the output."""
    for name in ("all-a", "all-b"):
        up_json(demo_config(tmp_path, name, dp=1, tp=1))
    result = dpctl("down", "--all")
    assert result.returncode == 0, result.stderr
    assert "all-a: removed 1 engine" in result.stderr
    assert "all-b: removed 1 engine" in result.stderr
    assert leftovers(live, "all-a") == [] and leftovers(live, "all-b") == []  # noqa: PT018


def test_status_of_an_unknown_deployment_is_exit_2(live_cli: Invoke) -> None:
    """Asking for a deployment that does not exist is bad input, naming the ones that do."""
    result = live_cli("status", "ghost")
    assert result.exit_code == 2, result.output
    assert "no deployment named 'ghost' in this cluster" in result.stderr


def test_keep_on_failure_keeps_the_launch_for_debugging(live: LocalState, tmp_path: Path) -> None:
    """--keep-on-failure leaves a failed launch in place (and says so); status shows it, down removes it."""
    config = demo_config(tmp_path, "kept", dp=2, tp=1, fail_ranks=(1,))
    result = dpctl("up", "-f", config, "--keep-on-failure")
    assert result.returncode == 4, result.stderr
    assert "kept what was created for debugging (--keep-on-failure)" in result.stderr
    try:
        assert "group dpctl/kept/pg-1" in " ".join(leftovers(live, "kept", wait=0))
        status = json.loads(dpctl("status", "kept", "-o", "json").stdout)["deployments"][0]
        assert status["state"] == "failed"
        failed = status["ranks"][1]
        assert (failed["state"], failed["detail"]) == (
            "FAILED",
            "demo engine: rank 1 failed to start (engine.fail_ranks lists it; a drill)",
        )
    finally:
        down = dpctl("down", "kept")
    assert down.returncode == 0, down.stderr
    assert leftovers(live, "kept") == []


def test_status_watch_redraws_until_ctrl_c(live: LocalState, tmp_path: Path) -> None:
    """`status --watch` keeps showing the ranks and ends cleanly (exit 0) on Ctrl-C."""
    config = demo_config(tmp_path, "watched", dp=1, tp=1)
    up_json(config)
    try:
        proc = dpctl_background("status", "--watch", "--interval", "0.5")
        time.sleep(6)
        out, err = interrupt(proc)
        assert proc.returncode == 0, err
        assert "watched: 1 rank of TP 1, pack strict, bundles per_node, running: 1 READY" in out
    finally:
        dpctl("down", "watched")
