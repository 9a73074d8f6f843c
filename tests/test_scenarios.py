"""Planner scenarios: an inventory and a request in, the expected ranks or causes out (tests/scenarios/*.yaml)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl_ray.config import PLACEMENT_KEYS
from dpctl_ray.errors import BadInput
from dpctl_ray.planner import Infeasible, Placement, Plan, PlanRequest, plan
from dpctl_ray.planner.inventory import nodes_from_document

PLACEMENT = {key.name: key for key in PLACEMENT_KEYS}
SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def request_of(scenario: dict[str, Any]) -> PlanRequest:
    raw = dict(scenario["request"])
    if "nodes" in raw:
        raw["nodes"] = tuple(raw["nodes"])
    if "select" in raw:
        raw["select"] = PLACEMENT["select"].check(raw["select"], "placement.select")
    nodes = nodes_from_document({"nodes": scenario["nodes"]})
    return PlanRequest(name="scenario", spec=Placement(**raw), nodes=nodes)


def rank_lines(result: Plan) -> list[str]:
    return [f"{r.rank} {r.local_rank} {'+'.join(r.nodes)}" for r in result.ranks]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    """Each scenario file states one placement behaviour in its `about` line; the planner must match it."""
    scenario = load(path)
    assert scenario.get("about"), f"{path.name} needs an 'about' sentence"
    expect = scenario["expect"]

    if "error" in expect:
        with pytest.raises(BadInput) as err:
            plan(request_of(scenario))
        assert expect["error"] in err.value.message
        return

    request = request_of(scenario)
    result = plan(request)
    if "infeasible" in expect:
        assert isinstance(result, Infeasible), f"expected infeasible, got ranks {rank_lines(result)}"
        assert result.code.value == expect["infeasible"]
        if "rank" in expect:
            assert result.rank == expect["rank"]
        if "best" in expect:
            assert result.best is not None
            assert result.best.node == expect["best"]
        if "skipped" in expect:
            assert {s.node: s.reason.value for s in result.skipped} == expect["skipped"]
        if "within" in expect:
            assert dict(result.within) == expect["within"]
        return

    assert isinstance(result, Plan), f"expected a plan, got {result}"
    assert rank_lines(result) == expect["ranks"]
    assert rank_lines(dataclasses.replace(result, ranks=result.spares)) == expect.get("spares", [])
    assert result.spec.master == expect["master"]
    if "dp_local" in expect:
        assert result.spec.dp_local == expect["dp_local"]
    if "skipped" in expect:
        assert {s.node: s.reason.value for s in result.skipped} == expect["skipped"]
    if "warnings" in expect:
        assert list(result.warnings) == expect["warnings"]
    if "within_value" in expect:
        assert result.spec.within_value == expect["within_value"]
    for node, (label, value) in expect.get("labels", {}).items():
        skip = next(s for s in result.skipped if s.node == node)
        assert (skip.label, skip.value) == (label, value)
    for rank, node in expect.get("controls", {}).items():
        assert result.ranks[rank].control == node
    device = expect.get("device", request.spec.device)
    world_size = expect.get("world_size", request.spec.world_size)
    cpus = request.spec.cpus
    for r in result.ranks:
        # per_node: one bundle per node of the rank, the control node's holding the control CPUs too.
        bundles = result.bundles(r)
        assert [b.node for b in bundles] == list(r.nodes)
        assert sum(dict(b.resources).get(device, 0.0) for b in bundles) == world_size + (cpus if device == "CPU" else 0)
        if device != "CPU":
            assert [dict(b.resources).get("CPU") for b in bundles] == [
                cpus if n == r.control else None for n in r.nodes
            ]
    # The layout changes how a rank's group is cut, never where the ranks go.
    seed = plan(dataclasses.replace(request, spec=dataclasses.replace(request.spec, bundles="per_device")))
    assert isinstance(seed, Plan)
    assert seed.ranks == result.ranks
    for r in seed.ranks:
        bundles = seed.bundles(r)
        assert [b.resources for b in bundles[:-1]] == [((device, 1.0),)] * world_size
        assert bundles[-1].resources == (("CPU", cpus),)
        assert {b.node for b in bundles[:-1]} == set(r.nodes)
