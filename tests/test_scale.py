"""`dpctl scale` on the real multi-node cluster: ranks added or stopped, the others untouched."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpctl_ray.local.state import LocalState
from tests.conftest import demo_config, dpctl, dpctl_background, interrupt, leftovers, ray_driver, wait_for

pytestmark = pytest.mark.ray


def identities(state: LocalState, name: str) -> dict[int, tuple[Any, ...]]:
    """Per rank: engine actor id, engine pid, device worker pids, granted devices, and the dp it was told."""
    out = {}
    with ray_driver(state) as ray:
        for actor in ray.util.list_named_actors(all_namespaces=True):
            # engine-R is rank R's host on its control node (engine-R-K hold its further nodes).
            numbers = actor["name"].removeprefix(f"dpctl/{name}/engine-").split("-")
            if actor["name"].startswith(f"dpctl/{name}/engine-") and len(numbers) == 1:
                handle = ray.get_actor(actor["name"], namespace="dpctl")
                health = ray.get(handle.health.remote(), timeout=30)
                rank = int(numbers[0])
                out[rank] = (handle._actor_id.hex(), health.pid, health.worker_pids, health.devices, health.dp)
    return out


def objects_of(state: LocalState, name: str) -> list[str]:
    return sorted(o.split(" ")[1] for o in leftovers(state, name, wait=0))


def expect_ranks(state: LocalState, name: str, dp: int, nodes: int = 1) -> dict[int, tuple[Any, ...]]:
    """The recorded size, the running hosts (one per node of a rank) and the groups all say dp ranks, each told dp."""
    status = json.loads(dpctl("status", name, "-o", "json").stdout)["deployments"][0]
    assert status["dp"] == dp
    assert [r["rank"] for r in status["ranks"]] == list(range(dp))
    assert all(r["state"] == "READY" for r in status["ranks"])
    hosts = [f"dpctl/{name}/engine-{r}" + (f"-{k}" if k else "") for r in range(dp) for k in range(nodes)]
    assert objects_of(state, name) == sorted(hosts + [f"dpctl/{name}/pg-{r}" for r in range(dp)])
    ids = identities(state, name)
    assert sorted(ids) == list(range(dp))
    assert all(told == dp for *_, told in ids.values())
    return ids


def scale(name: str, dp: int, *extra: str) -> dict[str, Any]:
    result = dpctl("scale", name, "--dp", str(dp), "-o", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("pack", ["strict", "fill"])
def test_two_four_one_three_without_touching_running_ranks(live: LocalState, tmp_path: Path, pack: str) -> None:
    """2 -> 4 -> 1 -> 3: every step adds or stops only the ranks it must; the rest keep ids, processes, devices."""
    name = f"elastic-{pack}"
    config = demo_config(tmp_path, name, dp=2, tp=2, pack=pack)
    assert dpctl("up", "-f", config).returncode == 0
    try:
        two = expect_ranks(live, name, 2)
        scale(name, 4)
        four = expect_ranks(live, name, 4)
        assert {r: v[:4] for r, v in four.items() if r < 2} == {r: v[:4] for r, v in two.items()}
        scale(name, 1)
        one = expect_ranks(live, name, 1)
        assert one[0][:4] == two[0][:4]
        doc = scale(name, 3)
        three = expect_ranks(live, name, 3)
        assert three[0][:4] == two[0][:4]
        ranks = doc["deployments"][0]["ranks"]
        assert ranks[1]["node"] == ranks[0]["node"], "the master is topped up to dp_local first"
        assert [r["local_rank"] for r in ranks] == [0, 1, 0]
    finally:
        dpctl("down", name)
    assert leftovers(live, name) == []


def test_span_one_to_two(live: LocalState, tmp_path: Path) -> None:
    """A span deployment grows by a rank of two whole new nodes; rank 0 stays as it was."""
    config = demo_config(tmp_path, "wide", dp=1, tp=8, pack="span")
    assert dpctl("up", "-f", config).returncode == 0
    try:
        one = expect_ranks(live, "wide", 1, nodes=2)
        doc = scale("wide", 2)
        two = expect_ranks(live, "wide", 2, nodes=2)
        assert two[0][:4] == one[0][:4]
        ranks = doc["deployments"][0]["ranks"]
        assert len(set(ranks[0]["device_ips"]) | set(ranks[1]["device_ips"])) == 4
    finally:
        dpctl("down", "wide")
    assert leftovers(live, "wide") == []


def test_a_failing_new_rank_leaves_the_deployment_at_its_old_size(live: LocalState, tmp_path: Path) -> None:
    """A new rank that fails to start is removed (exit 4); the running ranks and the recorded size are unchanged."""
    config = demo_config(tmp_path, "resilient", dp=2, tp=1, fail_ranks=(2,))
    assert dpctl("up", "-f", config).returncode == 0
    try:
        before = expect_ranks(live, "resilient", 2)
        result = dpctl("scale", "resilient", "--dp", "4")
        assert result.returncode == 4, result.stderr
        assert "rank 2 failed to start: demo engine: rank 2 failed to start" in result.stderr
        assert "resilient keeps running with its 2 ranks" in result.stderr
        assert expect_ranks(live, "resilient", 2) == before
    finally:
        dpctl("down", "resilient")


@pytest.fixture(scope="module")
def steady(ray_cluster: LocalState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, tuple[Any, ...]]]:
    """A dp 2 deployment for the tests that must change nothing; yields its ranks' identities."""
    config = demo_config(tmp_path_factory.mktemp("steady"), "steady", dp=2, tp=2)
    assert dpctl("up", "-f", config).returncode == 0
    try:
        yield expect_ranks(ray_cluster, "steady", 2)
    finally:
        dpctl("down", "steady")


def test_a_scale_that_does_not_fit_is_exit_3_and_changes_nothing(
    ray_cluster: LocalState, steady: dict[int, tuple[Any, ...]]
) -> None:
    """Growing beyond the free devices is exit 3 with the causes; the running ranks are untouched."""
    too_big = dpctl("scale", "steady", "--dp", "40")
    assert too_big.returncode == 3, too_big.stderr
    assert "cannot place rank" in too_big.stderr
    assert expect_ranks(ray_cluster, "steady", 2) == steady


def test_a_dry_run_prints_the_delta_and_changes_nothing(
    ray_cluster: LocalState, steady: dict[int, tuple[Any, ...]]
) -> None:
    """--dry-run -o json lists the ranks a growth adds (and a shrink stops) without doing either."""
    dry = dpctl("scale", "steady", "--dp", "4", "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    delta = json.loads(dry.stdout)
    assert (delta["from"], delta["to"], delta["removed"]) == (2, 4, [])
    assert [r["rank"] for r in delta["added"]] == [2, 3]
    shrink = json.loads(dpctl("scale", "steady", "--dp", "1", "--dry-run", "-o", "json").stdout)
    assert shrink["removed"] == [1]
    assert expect_ranks(ray_cluster, "steady", 2) == steady


def test_scaling_to_the_current_size_is_nothing_to_do(
    ray_cluster: LocalState, steady: dict[int, tuple[Any, ...]]
) -> None:
    """Scaling to the size a deployment has is exit 0 and says so."""
    same = dpctl("scale", "steady", "--dp", "2")
    assert same.returncode == 0
    assert "steady already has 2 ranks: nothing to do" in same.stderr
    assert expect_ranks(ray_cluster, "steady", 2) == steady


def test_scaling_an_unknown_deployment_is_exit_2(ray_cluster: LocalState) -> None:
    """A name with no deployment is bad input."""
    missing = dpctl("scale", "nowhere", "--dp", "2")
    assert missing.returncode == 2
    assert "no deployment named 'nowhere'" in missing.stderr


def test_concurrent_scales_one_wins(live: LocalState, tmp_path: Path) -> None:
    """Two scales of one deployment at once: one runs, the other exits 4; the recorded size matches what runs."""
    config = demo_config(tmp_path, "contested", dp=1, tp=1, init_seconds=2)
    assert dpctl("up", "-f", config).returncode == 0
    try:
        procs = [dpctl_background("scale", "contested", "--dp", str(dp)) for dp in (3, 2)]
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 4], results
        assert "is being changed by another dpctl command: `dpctl scale`" in next(e for c, e in results if c == 4)
        winner = 3 if results[0][0] == 0 else 2
        expect_ranks(live, "contested", winner)
    finally:
        dpctl("down", "contested")


def test_up_converges_dp_by_scaling_and_refuses_other_changes(live: LocalState, tmp_path: Path) -> None:
    """`up` with a new dp scales (running ranks untouched); another change is refused unless --recreate."""
    config = demo_config(tmp_path, "declared", dp=1, tp=2)
    assert dpctl("up", "-f", config).returncode == 0
    try:
        one = expect_ranks(live, "declared", 1)
        grown = dpctl("up", "-f", config, "--dp", "2")
        assert grown.returncode == 0, grown.stderr
        assert "declared runs with dp 1: scaling it to 2" in grown.stderr
        assert expect_ranks(live, "declared", 2)[0][:4] == one[0][:4]
        refused = dpctl("up", "-f", config, "--dp", "2", "--tp", "1")
        assert refused.returncode == 2
        assert "placement.tp: 2 -> 1" in refused.stderr
        recreated = dpctl("up", "-f", config, "--dp", "2", "--tp", "1", "--recreate")
        assert recreated.returncode == 0, recreated.stderr
        fresh = expect_ranks(live, "declared", 2)
        assert fresh[0][0] != one[0][0]
        status = json.loads(dpctl("status", "declared", "-o", "json").stdout)["deployments"][0]
        assert status["world_size"] == 1
    finally:
        dpctl("down", "declared")


def test_interrupted_scale_up_keeps_the_old_size(live: LocalState, tmp_path: Path) -> None:
    """Ctrl-C while new ranks load removes only them (exit 130); a SIGKILLed scale is recovered by the next one."""
    config = tmp_path / "steadfast.yaml"  # rank 0 ready at once, a new rank loads for a minute
    engine = {"kind": "python", "class": "tests.engines_for_tests:SlowFromRank", "args": {"slow_from": 1}}
    config.write_text(json.dumps({"name": "steadfast", "placement": {"dp": 1, "tp": 1}, "engine": engine}))
    assert dpctl("up", "-f", str(config), "--ready-timeout", "300", timeout=180).returncode == 0
    try:
        before = expect_ranks(live, "steadfast", 1)
        proc = dpctl_background("scale", "steadfast", "--dp", "2")
        wait_for(lambda: "dpctl/steadfast/engine-1" in objects_of(live, "steadfast"))
        time.sleep(1)
        _, err = interrupt(proc)
        assert proc.returncode == 130, err
        assert expect_ranks(live, "steadfast", 1) == before

        proc = dpctl_background("scale", "steadfast", "--dp", "2")
        wait_for(lambda: "dpctl/steadfast/engine-1" in objects_of(live, "steadfast"))
        proc.kill()
        proc.wait()
        recovered = dpctl("scale", "steadfast", "--dp", "1")
        assert recovered.returncode == 0, recovered.stderr
        assert "removed ranks 1 left by an interrupted scale of steadfast" in recovered.stderr
        assert expect_ranks(live, "steadfast", 1) == before
    finally:
        dpctl("down", "steadfast")
    assert leftovers(live, "steadfast") == []


def test_a_saved_change_applies_while_fresh_and_scale_ignores_a_config_in_the_directory(
    live: LocalState, tmp_path: Path
) -> None:
    """--dry-run --out saves the change, --change applies it; a stale one is exit 2; a dpctl.yaml nearby is not read."""
    config = demo_config(tmp_path, "saved", dp=2, tp=1, pack="fill")
    assert dpctl("up", "-f", config).returncode == 0
    try:
        grow = tmp_path / "grow.json"
        dry = dpctl("scale", "saved", "--dp", "3", "--dry-run", "--out", str(grow))
        assert dry.returncode == 0, dry.stderr
        saved = json.loads(grow.read_text())
        assert (saved["change"]["operation"], saved["change"]["before"], saved["change"]["after"]) == ("scale", 2, 3)
        assert saved["change"]["create"] == [2]
        shrink = tmp_path / "shrink.json"
        assert dpctl("scale", "saved", "--dp", "1", "--dry-run", "--out", str(shrink)).returncode == 0
        applied = dpctl("scale", "--change", str(grow))
        assert applied.returncode == 0, applied.stderr
        assert expect_ranks(live, "saved", 3)
        stale = dpctl("scale", "--change", str(shrink))
        assert stale.returncode == 2, stale.stderr
        assert "the change file no longer applies to saved: the deployment changed since" in stale.stderr
        assert expect_ranks(live, "saved", 3)
        # A config in the current directory with dp_local 2 says nothing about the size of `saved`.
        (tmp_path / "dpctl.yaml").write_text("name: other\nplacement: {dp: 2, dp_local: 2, tp: 1}\n")
        down_to_one = dpctl("scale", "saved", "--dp", "1", cwd=tmp_path)
        assert down_to_one.returncode == 0, down_to_one.stderr
        assert expect_ranks(live, "saved", 1)
        mixed = dpctl("scale", "--change", str(grow), "--dp", "2")
        assert mixed.returncode == 2
        assert "--change fixes the new size; drop --dp" in mixed.stderr
        lone = dpctl("scale", "saved", "--dp", "2", "--out", str(grow))
        assert lone.returncode == 2
        assert "--out saves a dry run's change; add --dry-run" in lone.stderr
    finally:
        dpctl("down", "saved")
