"""Properties every plan has, whatever the cluster and request (Hypothesis)."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from collections import Counter, defaultdict

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dpctl_ray.planner import Infeasible, Node, Placement, Plan, PlanRequest, plan
from dpctl_ray.planner.document import plan_to_document
from dpctl_ray.planner.model import units
from dpctl_ray.planner.plan_file import plan_from_document
from dpctl_ray.planner.plan_text import dumps, plan_json
from dpctl_ray.planner.verify import check_fits
from tests.strategies import labelled_requests, requests, roomy_requests

# Some drawn requests are infeasible and filtered out by assume(); that is expected, not a health problem.
settings.register_profile(
    "default", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
settings.load_profile("default")


def feasible(request: PlanRequest) -> Plan:
    result = plan(request)
    assume(isinstance(result, Plan))
    assert isinstance(result, Plan)
    return result


@given(roomy_requests())
def test_no_node_is_overcommitted(request: PlanRequest) -> None:
    """Planned devices and CPUs on a node never exceed what it has free."""
    result = feasible(request)
    device = request.spec.device
    used: dict[str, Counter[str]] = defaultdict(Counter)
    for rank in result.ranks:
        for bundle in result.bundles(rank):
            for key, amount in bundle.resources:
                used[bundle.node][key] += units(amount)
    by_id = {n.id: n for n in request.nodes}
    for node_id, amounts in used.items():
        node = by_id[node_id]
        assert amounts[device] <= units(node.free_devices(device)) + (amounts["CPU"] if device == "CPU" else 0)
        assert amounts["CPU"] <= units(node.available.get("CPU", 0.0))


@given(st.one_of(requests(), roomy_requests()), st.randoms(use_true_random=False))
def test_same_input_same_plan_whatever_the_node_order(request: PlanRequest, rnd: random.Random) -> None:
    """Planning twice, or with the nodes listed in another order, gives the identical plan (or causes)."""
    first = plan(request)
    assert plan(request) == first
    shuffled = list(request.nodes)
    rnd.shuffle(shuffled)
    again = plan(dataclasses.replace(request, nodes=tuple(shuffled)))
    if isinstance(first, Plan):
        assert isinstance(again, Plan)
        assert again.ranks == first.ranks
        assert again.spec == first.spec
        assert again.fingerprint == first.fingerprint
    else:
        assert isinstance(again, Infeasible)
        assert (again.code, again.rank) == (first.code, first.rank)


@given(roomy_requests())
def test_if_n_ranks_fit_then_n_minus_one_fit(request: PlanRequest) -> None:
    """Feasibility is monotone in dp: removing a rank from a feasible request keeps it feasible."""
    spec = request.spec
    assume(spec.dp > 1)
    feasible(request)
    dp_local = spec.dp_local if spec.dp_local is None or spec.dp_local <= spec.dp - 1 else spec.dp - 1
    smaller = dataclasses.replace(request, spec=dataclasses.replace(spec, dp=spec.dp - 1, dp_local=dp_local))
    assert isinstance(plan(smaller), Plan)


@given(roomy_requests())
def test_ranks_are_contiguous_and_start_on_the_master(request: PlanRequest) -> None:
    """Ranks are 0..dp-1 in order; rank 0 sits on the master; local ranks count 0.. within each node."""
    result = feasible(request)
    assert [r.rank for r in result.ranks] == list(range(request.spec.dp))
    assert result.ranks[0].nodes[0] == result.spec.master
    per_node: dict[str, list[int]] = defaultdict(list)
    for r in result.ranks:
        per_node[r.nodes[0]].append(r.local_rank)
    for local_ranks in per_node.values():
        assert local_ranks == list(range(len(local_ranks)))


@given(roomy_requests(), st.sampled_from(["per_node", "per_device"]))
def test_each_rank_has_its_devices_and_one_control_in_either_layout(request: PlanRequest, layout: str) -> None:
    """per_device: world_size bundles of one device, then a CPU bundle; per_node: a bundle per node of the rank
    holding its devices there, the control CPUs on the control node; strict and fill stay on one node."""
    result = feasible(dataclasses.replace(request, spec=dataclasses.replace(request.spec, bundles=layout)))
    spec = request.spec
    for r in result.ranks:
        bundles = result.bundles(r)
        if layout == "per_device":
            assert len(bundles) == spec.world_size + 1
            assert all(b.resources == ((spec.device, 1.0),) for b in bundles[:-1])
            assert bundles[-1].resources == (("CPU", spec.cpus),)
        else:
            assert [b.node for b in bundles] == list(r.nodes)
            assert [dict(b.resources)[spec.device] for b in bundles] == [float(d) for d in r.devices]
            assert [dict(b.resources).get("CPU") for b in bundles] == [
                spec.cpus if n == r.control else None for n in r.nodes
            ]
        assert r.control_bundle(result.spec.bundles) < len(bundles)
        assert bundles[r.control_bundle(result.spec.bundles)].node == r.control
        if spec.pack in ("strict", "fill"):
            assert len(r.nodes) == 1
            assert {b.node for b in bundles} == {r.nodes[0]}
            assert r.strategy == "STRICT_PACK"
        else:
            assert r.strategy == "PACK"
            assert r.control in r.nodes


@given(roomy_requests())
def test_strict_nodes_host_dp_local_or_none(request: PlanRequest) -> None:
    """Under strict, the master hosts exactly dp_local ranks, and every other node dp_local, except the last."""
    assume(request.spec.pack == "strict")
    result = feasible(request)
    counts = Counter(r.nodes[0] for r in result.ranks)
    order = list(dict.fromkeys(r.nodes[0] for r in result.ranks))
    assert counts[result.spec.master] == result.spec.dp_local
    for node in order[1:-1]:
        assert counts[node] == result.spec.dp_local
    assert counts[order[-1]] <= result.spec.dp_local


@given(roomy_requests())
def test_fill_master_hosts_exactly_dp_local(request: PlanRequest) -> None:
    """Under fill, the master hosts exactly dp_local ranks."""
    assume(request.spec.pack == "fill")
    result = feasible(request)
    assert Counter(r.nodes[0] for r in result.ranks)[result.spec.master] == result.spec.dp_local


@given(roomy_requests(allow_list=True))
def test_allow_list_is_respected(request: PlanRequest) -> None:
    """With an allow-list, every bundle lands on a node it names (by id or ip)."""
    result = feasible(request)
    allowed = set(request.spec.nodes)
    by_id = {n.id: n for n in request.nodes}
    for r in result.ranks:
        for b in result.bundles(r):
            assert {b.node, by_id[b.node].ip} & allowed


@given(st.one_of(roomy_requests(), labelled_requests()))
def test_fast_plan_json_is_the_plan_document(request: PlanRequest) -> None:
    """The direct JSON writer gives exactly the plan document, to the byte as `dumps` would write it."""
    result = feasible(request)
    doc = plan_to_document(result)
    text = plan_json(result)
    assert json.loads(text) == doc
    assert text == dumps(doc)


@given(roomy_requests())
def test_plan_document_round_trips(request: PlanRequest) -> None:
    """A plan written with --out reads back to the same ranks, spec and fingerprint."""
    result = feasible(request)
    back = plan_from_document(json.loads(dumps(plan_to_document(result))))
    assert back.ranks == result.ranks
    assert back.spec == result.spec
    assert back.fingerprint == result.fingerprint
    assert [n.id for n in back.nodes] == [n.id for n in result.nodes]
    assert back.usage() == result.usage()


@given(st.one_of(requests(), roomy_requests()))
def test_the_callers_nodes_are_not_mutated(request: PlanRequest) -> None:
    """Planning leaves the caller's nodes, and their resource maps, exactly as they were."""
    before = [(n.id, dict(n.available), dict(n.resources)) for n in request.nodes]
    plan(request)
    assert [(n.id, dict(n.available), dict(n.resources)) for n in request.nodes] == before


def test_planning_imports_no_effectful_library() -> None:
    """The planner imports no ray, zmq, rich or yaml, even after planning and writing a document."""
    code = (
        "import sys\n"
        "from dpctl_ray.planner import Node, Placement, PlanRequest, plan\n"
        "from dpctl_ray.planner.document import plan_to_document\n"
        "from dpctl_ray.planner.plan_text import dumps\n"
        "n = (Node('a', '10.0.0.1', True, {'GPU': 8, 'CPU': 8}, {'GPU': 8, 'CPU': 8}),)\n"
        "dumps(plan_to_document(plan(PlanRequest('x', Placement(dp=2, tp=4), n))))\n"
        "print(sorted(m for m in ('ray', 'zmq', 'rich', 'yaml', 'typer') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fingerprint_changes_when_free_devices_change() -> None:
    """The cluster fingerprint follows free devices: a plan file made before a change is detectably stale."""
    a = Node("a", "10.0.0.1", resources={"GPU": 8, "CPU": 8}, available={"GPU": 8, "CPU": 8})
    busy = dataclasses.replace(a, available={"GPU": 7, "CPU": 8})
    spec = Placement(dp=1, tp=4)
    first = plan(PlanRequest("x", spec, (a,)))
    second = plan(PlanRequest("x", spec, (busy,)))
    assert isinstance(first, Plan)
    assert isinstance(second, Plan)
    assert first.fingerprint != second.fingerprint


# --- labels ---------------------------------------------------------------------------------------------


def _value(request: PlanRequest, node: str, label: str) -> str:
    return next(n for n in request.nodes if n.id == node).labels.get(label, "")


@given(labelled_requests(needs="rank_within"))
def test_rank_within_never_crosses_values(request: PlanRequest) -> None:
    """With rank_within, all of a rank's nodes share one value of the label."""
    result = feasible(request)
    label = request.spec.rank_within
    assert label is not None
    for r in result.ranks:
        assert len({_value(request, n, label) for n in r.nodes}) == 1


@given(labelled_requests(needs="within"))
def test_within_uses_one_value(request: PlanRequest) -> None:
    """With within, every node of every rank holds the one value the plan chose."""
    result = feasible(request)
    label = request.spec.within
    assert label is not None
    used = {_value(request, n, label) for r in result.ranks for n in r.nodes}
    assert used == {result.spec.within_value}


@given(labelled_requests(needs="select"))
def test_select_never_uses_a_non_matching_node(request: PlanRequest) -> None:
    """With selectors, every node a rank uses matches all of them (and so carries each selected label)."""
    result = feasible(request)
    by_id = {n.id: n for n in request.nodes}
    for r in result.ranks:
        for node in r.nodes:
            assert all(m.matches(by_id[node].labels) for m in request.spec.select)


@given(labelled_requests(needs="spread"))
def test_spread_is_never_less_even_than_the_unconstrained_plan(request: PlanRequest) -> None:
    """With spread, the most ranks any one value holds is at most what the same request without spread puts there."""
    label = request.spec.spread
    assert label is not None
    spread = feasible(request)
    plain = plan(dataclasses.replace(request, spec=dataclasses.replace(request.spec, spread=None)))
    assume(isinstance(plain, Plan))
    assert isinstance(plain, Plan)

    def most(result: Plan) -> int:
        return max(Counter(_value(request, r.control, label) for r in result.ranks).values())

    assert most(spread) <= most(plain)


@given(labelled_requests())
def test_labelled_plans_round_trip_and_verify(request: PlanRequest) -> None:
    """A labelled plan written with --out reads back to the same spec and ranks, and passes the plan-file checks."""
    result = feasible(request)
    back = plan_from_document(json.loads(plan_json(result)))
    assert back.spec == result.spec
    assert back.ranks == result.ranks
    assert back.fingerprint == result.fingerprint


@given(st.one_of(requests(), roomy_requests(), labelled_requests()), st.integers(1, 4))
def test_spares_never_move_the_ranks_and_fit_beside_them(request: PlanRequest, spares: int) -> None:
    """With spares the ranks are exactly the plan without them; ranks and spares together overcommit no node,
    obey the spec's rules as ranks dp.. would, and survive a plan file."""
    alone = feasible(request)
    result = plan(dataclasses.replace(request, spec=dataclasses.replace(request.spec, spares=spares)))
    assume(isinstance(result, Plan))
    assert isinstance(result, Plan)
    assert result.ranks == alone.ranks
    assert result.spec == dataclasses.replace(alone.spec, spares=spares)
    assert [s.rank for s in result.spares] == list(range(spares))
    check_fits(result, request.nodes)  # every node holds what ranks and spares put on it together
    back = plan_from_document(json.loads(dumps(plan_to_document(result))))  # check_plan: the rules, spares too
    assert back.spares == result.spares
