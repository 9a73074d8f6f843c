"""Hypothesis strategies for clusters and placement requests, kept in one place."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from dpctl_ray.planner import Node, Placement, PlanRequest
from dpctl_ray.planner.labels import LabelMatch

DEVICE_COUNTS = st.sampled_from([0, 1, 2, 4, 8, 8, 8, 16])
CPU_AMOUNTS = st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0])


@st.composite
def nodes(draw: st.DrawFn, max_nodes: int = 8, device: str = "GPU") -> tuple[Node, ...]:
    """Nodes with unique ids, IPs that may repeat, some partly used, at most one head."""
    count = draw(st.integers(min_value=1, max_value=max_nodes))
    head_index = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=count - 1)))
    out = []
    for i in range(count):
        total = draw(DEVICE_COUNTS)
        free = draw(st.integers(min_value=0, max_value=total)) if draw(st.booleans()) else total
        cpus = draw(CPU_AMOUNTS)
        free_cpus = draw(st.sampled_from([c for c in (0.0, 0.5, 1.0, cpus) if c <= cpus]))
        resources = {"CPU": cpus}
        available = {"CPU": free_cpus}
        if total:
            resources[device] = float(total)
            available[device] = float(free)
        ip = f"10.0.{draw(st.integers(min_value=0, max_value=2))}.{draw(st.integers(min_value=1, max_value=6))}"
        out.append(Node(id=f"n{i}", ip=ip, head=head_index == i, resources=resources, available=available, labels={}))
    return tuple(out)


@st.composite
def placements(draw: st.DrawFn, node_ids: tuple[str, ...] = ()) -> Placement:
    """Valid placement specs (every value check_spec accepts), masters drawn from the given ids or auto."""
    pack = draw(st.sampled_from(["strict", "fill", "span"]))
    dp = draw(st.integers(min_value=1, max_value=12))
    tp = draw(st.sampled_from([1, 2, 4, 8, 16]))
    pp = draw(st.sampled_from([1, 1, 2]))
    if pack == "span":
        dp_local = draw(st.sampled_from([None, 1]))
    else:
        dp_local = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=dp)))
    master = draw(st.sampled_from(("auto", *node_ids))) if node_ids else "auto"
    allow = tuple(draw(st.lists(st.sampled_from(node_ids), max_size=3, unique=True))) if node_ids else ()
    cpus = draw(st.sampled_from([0.5, 1.0, 1.0, 2.0]))
    return Placement(dp=dp, tp=tp, pp=pp, dp_local=dp_local, pack=pack, master=master, nodes=allow, cpus=cpus)


@st.composite
def requests(draw: st.DrawFn, max_nodes: int = 8) -> PlanRequest:
    """A cluster and a valid request against it."""
    cluster = draw(nodes(max_nodes=max_nodes))
    spec = draw(placements(tuple(n.id for n in cluster)))
    return PlanRequest(name="prop", spec=spec, nodes=cluster)


@st.composite
def roomy_requests(draw: st.DrawFn, allow_list: bool = False) -> PlanRequest:
    """Requests shaped to their cluster (node sizes drawn around world_size), so most are feasible.

    An allow-list is drawn one time in four, or always with `allow_list`.
    """
    pack = draw(st.sampled_from(["strict", "fill", "span"]))
    tp = draw(st.sampled_from([1, 2, 4, 8]))
    pp = draw(st.sampled_from([1, 1, 2]))
    world_size = tp * pp
    if pack == "span":
        world_size = max(world_size, 2)
        tp, pp = world_size, 1
        per_node = draw(st.sampled_from([d for d in (1, 2, 4, 8) if d < world_size and world_size % d == 0]))
        sizes = [per_node, per_node, per_node, per_node, per_node * 2, per_node // 2]
    else:
        sizes = [world_size, 2 * world_size, 2 * world_size, 4 * world_size, world_size + 1, max(world_size - 1, 0), 0]
    count = draw(st.integers(min_value=1, max_value=10))
    head_index = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=count - 1)))
    cluster = []
    for i in range(count):
        total = draw(st.sampled_from(sizes))
        free = total if draw(st.integers(0, 3)) else draw(st.integers(min_value=0, max_value=total))
        cpus = draw(st.sampled_from([64.0, 64.0, 64.0, 4.0, 1.0, 0.5]))
        resources = {"CPU": cpus, "GPU": float(total)} if total else {"CPU": cpus}
        available = {"CPU": cpus, "GPU": float(free)} if total else {"CPU": cpus}
        ip = f"10.0.0.{draw(st.integers(min_value=1, max_value=count + 1))}"
        cluster.append(Node(id=f"n{i}", ip=ip, head=head_index == i, resources=resources, available=available))
    ids = tuple(n.id for n in cluster)
    dp = draw(st.integers(min_value=1, max_value=count))
    if pack == "span":
        dp_local = draw(st.sampled_from([None, 1]))
    else:
        dp_local = draw(st.one_of(st.none(), st.none(), st.integers(min_value=1, max_value=min(dp, 4))))
    master = draw(st.sampled_from(ids)) if draw(st.integers(0, 4)) == 0 else "auto"
    allow: tuple[str, ...] = ()
    if allow_list or draw(st.integers(0, 3)) == 0:
        allow = tuple(draw(st.lists(st.sampled_from(ids), min_size=1, max_size=count, unique=True)))
    cpus = draw(st.sampled_from([0.5, 1.0, 1.0, 2.0]))
    spec = Placement(dp=dp, tp=tp, pp=pp, dp_local=dp_local, pack=pack, master=master, nodes=allow, cpus=cpus)
    return PlanRequest(name="prop", spec=spec, nodes=tuple(cluster))


ZONES = st.sampled_from(["a", "a", "b", "c", None])
DOMAINS = st.sampled_from(["x", "y", "y", None])


@st.composite
def labelled_requests(draw: st.DrawFn, needs: str | None = None) -> PlanRequest:
    """roomy_requests on nodes labelled with a zone and an NVLink domain (either sometimes missing), with label
    options drawn: a selector, within, rank_within and spread (within and spread never on one label).

    `needs` names the option ("select", "within", "rank_within" or "spread") that every request then has, so a
    property of that option is not drawn mostly without it.
    """
    request = draw(roomy_requests())
    cluster = []
    for node in request.nodes:
        zone, domain = draw(ZONES), draw(DOMAINS)
        labels = {k: v for k, v in (("zone", zone), ("domain", domain)) if v is not None}
        cluster.append(dataclasses.replace(node, labels=labels))
    select: tuple[LabelMatch, ...] = ()
    if needs == "select" or draw(st.integers(0, 3)) == 0:
        select = (
            draw(
                st.sampled_from(
                    [
                        LabelMatch("zone", ("a",)),
                        LabelMatch("zone", ("c",), negate=True),
                        LabelMatch("domain", ("x", "y")),
                    ]
                )
            ),
        )

    def label(option: str, unset: int) -> str | None:
        """A label for `option`: None in `unset` draws of `unset` + 2, unless the request needs the option."""
        return draw(st.sampled_from([None] * (unset if needs != option else 0) + ["zone", "domain"]))

    within, spread, rank_within = label("within", 2), label("spread", 1), label("rank_within", 1)
    if spread == within:
        within, spread = (None, spread) if needs == "spread" else (within, None)
    spec = dataclasses.replace(request.spec, select=select, within=within, rank_within=rank_within, spread=spread)
    return PlanRequest(name="prop", spec=spec, nodes=tuple(cluster))
