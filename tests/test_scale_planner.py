"""The scale planner: which ranks to add (with the deployment's strategy) or remove, against free resources."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dpctl_ray.planner import Infeasible, Node, Placement, Plan, PlanRequest, SpecError, plan
from dpctl_ray.planner.model import units
from dpctl_ray.planner.scale import ScalePlan, scale
from tests.strategies import roomy_requests


def gpu_nodes(count: int, gpus: int = 4, cpus: float = 4) -> tuple[Node, ...]:
    return tuple(
        Node(f"n{i}", f"10.0.0.{i + 1}", False, {"GPU": gpus, "CPU": cpus}, {"GPU": gpus, "CPU": cpus})
        for i in range(count)
    )


def occupied(nodes: tuple[Node, ...], result: Plan) -> tuple[Node, ...]:
    """The snapshot a running deployment leaves: each node's free resources minus what its ranks hold."""
    used: dict[str, Counter[str]] = {}
    result = result.whole()  # spares hold their devices too
    for rank in result.ranks:
        for bundle in result.bundles(rank):
            for key, amount in bundle.resources:
                used.setdefault(bundle.node, Counter())[key] += units(amount)
    return tuple(
        dataclasses.replace(
            n, available={k: (units(v) - used.get(n.id, Counter())[k]) / 10_000 for k, v in n.available.items()}
        )
        for n in nodes
    )


def step(nodes: tuple[Node, ...], current: Plan, dp: int) -> ScalePlan:
    """Scale a deployment that holds its resources on `nodes` (given free of it) to dp ranks."""
    result = scale(current, occupied(nodes, current), dp)
    assert isinstance(result, ScalePlan), result
    return result


def layout(result: Plan) -> list[str]:
    return [f"{r.rank} {r.local_rank} {'+'.join(r.nodes)}" for r in result.ranks]


def start(cluster: tuple[Node, ...], **spec: object) -> Plan:
    result = plan(PlanRequest("dep", Placement(**spec), cluster))  # type: ignore[arg-type]
    assert isinstance(result, Plan), result
    return result


@pytest.mark.parametrize("pack", ["strict", "fill"])
def test_two_four_one_three_tops_up_before_using_new_nodes(pack: str) -> None:
    """2 -> 4 -> 1 -> 3: growth continues node by node, refilling the master before taking a new node."""
    nodes = gpu_nodes(3)
    two = start(nodes, dp=2, tp=2, pack=pack)
    assert layout(two) == ["0 0 n0", "1 1 n0"]
    four = step(nodes, two, 4)
    assert (four.added and layout(four.plan)) == ["0 0 n0", "1 1 n0", "2 0 n1", "3 1 n1"]
    assert four.removed == ()
    one = step(nodes, four.plan, 1)
    assert one.removed == (1, 2, 3)
    assert layout(one.plan) == ["0 0 n0"]
    three = step(nodes, one.plan, 3)
    assert layout(three.plan) == ["0 0 n0", "1 1 n0", "2 0 n1"]
    assert [r.rank for r in three.added] == [1, 2]


def test_shrinking_keeps_the_survivors_identical() -> None:
    """Removing ranks never changes the ranks that stay: same nodes, devices, control node and local rank."""
    current = start(gpu_nodes(3), dp=5, tp=2, pack="fill")
    result = scale(current, gpu_nodes(3), 2)
    assert isinstance(result, ScalePlan)
    assert result.plan.ranks == current.ranks[:2]
    assert result.removed == (2, 3, 4)
    assert result.plan.spec.dp == 2


def test_strict_growth_uses_only_nodes_that_fit_dp_local() -> None:
    """Under strict, a new node must fit dp_local ranks (or what is left of dp); others are skipped."""
    nodes = (
        *gpu_nodes(2),
        Node("small", "10.0.0.3", False, {"GPU": 2, "CPU": 4}, {"GPU": 2, "CPU": 4}),
        Node("big", "10.0.0.4", False, {"GPU": 4, "CPU": 4}, {"GPU": 4, "CPU": 4}),
    )
    current = start(nodes, dp=4, tp=2, pack="strict", master="n0")
    assert layout(current) == ["0 0 n0", "1 1 n0", "2 0 n1", "3 1 n1"]
    result = step(nodes, current, 6)
    assert layout(result.plan)[4:] == ["4 0 big", "5 1 big"]
    assert {s.node: s.reason.value for s in result.plan.skipped}["small"] == "too_few_devices"


def test_fill_growth_packs_partly_free_nodes() -> None:
    """Under fill, new ranks take whatever room nodes have, in order."""
    nodes = (*gpu_nodes(1), Node("n1", "10.0.0.2", False, {"GPU": 4, "CPU": 4}, {"GPU": 2, "CPU": 4}))
    current = start(nodes, dp=2, tp=2, pack="fill")
    result = step(nodes, current, 3)
    assert layout(result.plan) == ["0 0 n0", "1 1 n0", "2 0 n1"]


def test_span_growth_takes_new_whole_nodes() -> None:
    """1 -> 2 in span mode: the new rank takes two whole free nodes, never the nodes rank 0 holds."""
    nodes = gpu_nodes(4)
    current = start(nodes, dp=1, tp=8, pack="span")
    assert layout(current) == ["0 0 n0+n1"]
    result = step(nodes, current, 2)
    assert layout(result.plan) == ["0 0 n0+n1", "1 0 n2+n3"]
    assert result.added[0].strategy == "PACK"
    assert result.added[0].control == "n2"


def test_growth_that_does_not_fit_names_the_first_new_rank() -> None:
    """A scale-up beyond the free devices is infeasible at the first rank that does not fit."""
    nodes = gpu_nodes(2)
    current = start(nodes, dp=2, tp=2)
    result = scale(current, occupied(nodes, current), 5)
    assert isinstance(result, Infeasible)
    assert (result.code.value, result.rank, result.placed) == ("insufficient", 4, 4)


def test_growth_honours_the_allow_list_and_device_key() -> None:
    """New ranks only go to allowed nodes, with the deployment's device key."""
    nodes = tuple(Node(f"t{i}", f"10.0.1.{i + 1}", False, {"TPU": 4, "CPU": 8}, {"TPU": 4, "CPU": 8}) for i in range(4))
    current = start(nodes, dp=1, tp=4, device="TPU", nodes=("t0", "t2", "t3"))
    result = step(nodes, current, 3)
    assert layout(result.plan) == ["0 0 t0", "1 0 t2", "2 0 t3"]
    assert result.plan.bundles(result.added[0])[0].resources == (("TPU", 4.0), ("CPU", 1.0))


def test_scaling_to_zero_is_bad_input() -> None:
    """dp must stay positive."""
    with pytest.raises(SpecError):
        scale(start(gpu_nodes(1), dp=1, tp=1), gpu_nodes(1), 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(roomy_requests(), st.integers(min_value=1, max_value=12))
def test_scaling_never_overcommits_and_never_moves_a_rank(request: PlanRequest, target: int) -> None:
    """Whatever the scale, running ranks stay as they are, ranks stay 0..dp-1, and no node is overcommitted."""
    current = plan(request)
    assume(isinstance(current, Plan))
    assert isinstance(current, Plan)
    snapshot = occupied(request.nodes, current)
    result = scale(current, snapshot, target)
    if isinstance(result, Infeasible):
        assert target > len(current.ranks)
        return
    kept = min(target, len(current.ranks))
    assert result.plan.ranks[:kept] == current.ranks[:kept]
    assert [r.rank for r in result.plan.ranks] == list(range(target))
    used: dict[str, Counter[str]] = {}
    for rank in result.added:
        for bundle in result.plan.bundles(rank):
            for key, amount in bundle.resources:
                used.setdefault(bundle.node, Counter())[key] += units(amount)
    by_id = {n.id: n for n in snapshot}
    for node_id, amounts in used.items():
        node = by_id[node_id]
        assert amounts[request.spec.device] <= units(node.free_devices(request.spec.device))
        assert amounts["CPU"] <= units(node.available.get("CPU", 0.0))
    per_node: dict[str, list[int]] = {}
    for r in result.plan.ranks:
        per_node.setdefault(r.nodes[0], []).append(r.local_rank)
    for local_ranks in per_node.values():
        assert sorted(local_ranks) == list(range(len(local_ranks)))


def test_growth_takes_the_spares_first_where_they_are_then_free_capacity() -> None:
    nodes = gpu_nodes(4)
    current = start(nodes, dp=1, tp=4, spares=1)  # n0: rank 0; n1: spare 0
    grown = step(nodes, current, 3)
    assert grown.promoted == ((1, 0),)
    assert layout(grown.plan) == ["0 0 n0", "1 0 n1", "2 0 n2"]
    assert [r.rank for r in grown.added] == [1, 2]
    assert grown.plan.spares == ()


def test_growth_within_the_spares_plans_nothing_new() -> None:
    nodes = gpu_nodes(3)
    current = start(nodes, dp=1, tp=4, spares=2)
    grown = step(nodes, current, 2)
    assert grown.promoted == ((1, 0),)
    assert layout(grown.plan) == ["0 0 n0", "1 0 n1"]
    assert [s.nodes for s in grown.plan.spares] == [("n2",)]


def test_shrinking_keeps_the_spares() -> None:
    nodes = gpu_nodes(3)
    current = start(nodes, dp=2, tp=4, spares=1)
    assert step(nodes, current, 1).plan.spares == current.spares


def test_growth_under_spread_and_strict_never_puts_more_than_dp_local_on_a_node() -> None:
    """Found by the spares property: the last, partial node of a strict scale-up under spread could be the
    master, already holding its dp_local ranks."""
    nodes = tuple(
        Node(f"n{i}", f"10.0.0.{i}", False, {"CPU": 64.0, "GPU": gpus}, {"CPU": 64.0, "GPU": gpus}, {"zone": zone})
        for i, (gpus, zone) in enumerate([(1.0, "a")] * 5 + [(2.0, "a"), (4.0, "b")])
    )
    current = start(nodes, dp=3, tp=1, cpus=0.5, spread="zone")
    assert layout(current) == ["0 0 n6", "1 1 n6", "2 0 n0"]
    grown = step(nodes, current, 6)
    assert Counter(r.control for r in grown.plan.ranks)["n6"] == 2
    assert layout(grown.plan)[3:] == ["3 0 n5", "4 1 n5", "5 0 n1"]
