"""Creating, finding and removing a deployment's Ray objects: placement groups and engine hosts."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dpctl_ray.deployment.record import spare_stem
from dpctl_ray.engines.host import EngineHost
from dpctl_ray.engines.spec import EngineSpec
from dpctl_ray.engines.work import HostSpec
from dpctl_ray.launcher.nodes import NODE_ID_LABEL
from dpctl_ray.launcher.records import NAMESPACE, ObjectKind, ObjectName, object_name, prefix
from dpctl_ray.planner.model import Bundle, Plan, RankPlacement, ResolvedSpec

RemoteEngineHost = ray.remote(EngineHost)


def create_group(
    deployment: str,
    rank: RankPlacement,
    bundles: tuple[Bundle, ...],
    spec: ResolvedSpec,
    labels: Mapping[str, Mapping[str, str]],
    kind: ObjectKind = ObjectKind.GROUP,
) -> PlacementGroup:
    """One rank's (or spare's) detached, named placement group, every bundle pinned to its planned node by node id.

    The spec's label rules go to Ray too (`labels`: node id -> its labels): each bundle's selector, and for
    `rank_within` a topology strategy that keeps the group inside one value, where this Ray has one.
    """
    selectors = [{**spec.selector(labels.get(b.node, {})), NODE_ID_LABEL: b.node} for b in bundles]
    options: dict[str, Any] = {"strategy": rank.strategy}
    domain = spec.rank_within
    if domain is not None and len(rank.nodes) > 1 and TOPOLOGY and all(domain in labels.get(n, {}) for n in rank.nodes):
        options = {"topology_strategy": {NODE_ID_LABEL: rank.strategy, domain: "STRICT_PACK"}}
    group: PlacementGroup = placement_group(
        [dict(b.resources) for b in bundles],
        name=object_name(deployment, kind, rank.rank),
        lifetime="detached",
        bundle_label_selector=selectors,
        **options,
    )
    return group


# Ray 2.60 added topology strategies (one label besides the node id, STRICT_PACK only); older Ray has none.
TOPOLOGY = "topology_strategy" in inspect.signature(placement_group).parameters


def group_infeasible(group: PlacementGroup) -> bool:
    """Whether Ray has found that no node can hold the group (it then stays pending, never failing by itself)."""
    info = placement_group_table(group)
    return bool(info.get("stats", {}).get("scheduling_state") == "INFEASIBLE")


def create_host(
    deployment: str,
    rank: RankPlacement,
    k: int,
    spec: HostSpec,
    group: PlacementGroup,
    cpus: float,
    runtime_env: dict[str, Any] | None = None,
    stem: str = "",
) -> Any:
    """The host of one rank's node `k`, detached and named, on that node's bundle, claiming what it holds.

    `stem`: `spare-N` for a started spare's host (named `dpctl/D/spare-N`, `dpctl/D/spare-N-K`).

    per_node: the host claims the node's devices itself, and the control CPUs on the control node.
    per_device: the control node's host takes the control bundle's CPUs; a host on a further node takes
    nothing (it sits on its node's first device bundle); their device workers claim the devices.
    """
    control = rank.control_bundle(spec.layout)
    is_control = rank.nodes[k] == rank.control
    claim: dict[str, Any] = {"num_cpus": cpus if is_control else 0}
    if spec.layout == "per_node":
        bundle = k
        count = rank.devices[k]
        if spec.device == "GPU":
            claim["num_gpus"] = count
        elif spec.device == "CPU":
            claim["num_cpus"] += count
        else:
            claim["resources"] = {spec.device: count}
    else:
        bundle = control if is_control else spec.device_bundles[0]
    return RemoteEngineHost.options(
        name=host_name(deployment, rank, k, stem),
        namespace=NAMESPACE,
        lifetime="detached",
        max_concurrency=8,  # start and wait_exit block; health, set_dp, stop answer meanwhile
        max_restarts=0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=bundle, placement_group_capture_child_tasks=False
        ),
        **claim,
        **({"runtime_env": runtime_env} if runtime_env is not None else {}),
    ).remote(spec, group)


def host_spec(
    plan: Plan,
    rank: RankPlacement,
    k: int,
    engine: EngineSpec,
    token: str = "",
    stream: str | None = None,
    spare: int | None = None,
) -> HostSpec:
    """Who the host of a rank's (or a started spare's) node k is, and what it holds and reports to."""
    return HostSpec(
        deployment=plan.name,
        token=token,
        stream=stream,
        rank=rank.rank,
        node_index=k,
        local_rank=rank.local_rank,
        device=plan.spec.device,
        layout=plan.spec.bundles,
        device_bundles=device_bundles(rank, k),
        log_dir=engine.log_dir,
        base_port=engine.base_port,
        spare=spare,
    )


def host_name(deployment: str, rank: RankPlacement, k: int, stem: str = "") -> str:
    """`engine-R` for the host on the rank's control node (its engine runs there), `engine-R-K` for the others.

    `stem`: the objects' own name when they are not the rank's (`spare-N`: a started spare that became it).
    """
    base = f"{prefix(deployment)}{stem}" if stem else object_name(deployment, ObjectKind.ENGINE, rank.rank)
    return base if rank.nodes[k] == rank.control else f"{base}-{k}"


def stem_of(name: str) -> str:
    """`spare-N` for a started spare's objects (`dpctl/D/spare-N`, `dpctl/D/spare-N-K`), else ""."""
    parsed = ObjectName.parse(name)
    if parsed is None or parsed.kind is not ObjectKind.SPARE:
        return ""
    return spare_stem(parsed.rank) if parsed.rank is not None else ""


def device_bundles(rank: RankPlacement, k: int) -> tuple[int, ...]:
    """per_device: the bundle indices of the rank's devices on its node k."""
    first = sum(rank.devices[:k])
    return tuple(range(first, first + rank.devices[k]))


def hosts(deployment: str, ranks: set[int] | None = None, stems: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The deployment's engine hosts (of these ranks; all, started spares' too, for None), by name.

    `stems`: the ranks that run on a started spare's hosts, and its stem (`spare-N`).
    """
    out = {}
    theirs = {stem for rank, stem in (stems or {}).items() if stem and (ranks is None or rank in ranks)}
    for name in named_actors(prefix(deployment)):
        parsed = ObjectName.parse(name)
        if parsed is None or parsed.kind not in (ObjectKind.ENGINE, ObjectKind.SPARE):
            continue
        mine = parsed.kind is ObjectKind.ENGINE and parsed.rank in ranks if ranks is not None else True
        if not mine and stem_of(name) not in theirs:
            continue
        with contextlib.suppress(ValueError):
            out[name] = ray.get_actor(name, namespace=NAMESPACE)
    return out


def find_host(deployment: str, rank: RankPlacement, k: int, stem: str = "") -> Any | None:
    """The host of a rank's node k, if it exists."""
    try:
        return ray.get_actor(host_name(deployment, rank, k, stem), namespace=NAMESPACE)
    except ValueError:
        return None


def find_engine(deployment: str, rank: int, stem: str = "") -> Any | None:
    """The engine host of a rank, if it exists."""
    name = f"{prefix(deployment)}{stem}" if stem else object_name(deployment, ObjectKind.ENGINE, rank)
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


@dataclass(slots=True)
class Removed:
    """What a removal took away."""

    groups: list[str] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.groups or self.actors)


def remove(groups: list[PlacementGroup], actors: list[Any]) -> None:
    """Remove exactly these actors and groups (removing a group also kills the actors in it)."""
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
    for group in groups:
        with contextlib.suppress(Exception):
            remove_placement_group(group)


def remove_ranks(deployment: str, ranks: list[int], stems: Mapping[int, str] | None = None) -> Removed:
    """Remove the engine actors and placement groups of some ranks of a deployment, found by name.

    `stems`: ranks that run on a started spare's objects (`spare-N`): those objects are theirs to remove.
    """
    removed = Removed()
    wanted = set(ranks)
    theirs = {stem for rank, stem in (stems or {}).items() if stem and rank in wanted}
    wanted_groups = {object_name(deployment, ObjectKind.GROUP, r) for r in ranks}
    wanted_groups |= {f"{prefix(deployment)}{stem}" for stem in theirs}
    for name in named_actors(prefix(deployment)):
        parsed = ObjectName.parse(name)
        if parsed is None:
            continue
        mine = parsed.kind in (ObjectKind.ENGINE, ObjectKind.GROUP) and parsed.rank in wanted
        if not mine and stem_of(name) not in theirs:
            continue
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            removed.actors.append(name)
    for name, group in live_groups(prefix(deployment)).items():
        if name in wanted_groups:
            remove_placement_group(group)
            removed.groups.append(name)
    return removed


def sweep(deployment: str) -> Removed:
    """Remove every actor and placement group named under the deployment's prefix, whoever created them."""
    removed = Removed()
    for name in named_actors(prefix(deployment)):
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            removed.actors.append(name)
    for name, group in live_groups(prefix(deployment)).items():
        remove_placement_group(group)
        removed.groups.append(name)
    return removed


def named_actors(name_prefix: str = "dpctl/") -> list[str]:
    """Names of live actors in the dpctl namespace under a prefix (no dashboard needed)."""
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE and a["name"].startswith(name_prefix)
    )


def live_groups(name_prefix: str = "dpctl/") -> dict[str, PlacementGroup]:
    """Placement groups under a prefix that are not removed, by name (removed ones stay in the table)."""
    from ray._raylet import PlacementGroupID  # noqa: PLC0415

    out: dict[str, PlacementGroup] = {}
    for group_id, info in placement_group_table().items():
        name = info.get("name", "")
        if name.startswith(name_prefix) and info.get("state") != "REMOVED":
            out[name] = PlacementGroup(PlacementGroupID.from_hex(group_id))
    return out


def group_states(name_prefix: str) -> dict[str, str]:
    """The state Ray gives each placement group under a prefix that is not removed (CREATED, PENDING, ...), by name."""
    return {
        info.get("name", ""): str(info.get("state"))
        for info in placement_group_table().values()
        if info.get("name", "").startswith(name_prefix) and info.get("state") != "REMOVED"
    }


def ranks_with_objects(deployment: str) -> set[int]:
    """Rank numbers that have an engine actor or placement group of the deployment."""
    parsed = (ObjectName.parse(n) for n in [*named_actors(prefix(deployment)), *live_groups(prefix(deployment))])
    kinds = (ObjectKind.GROUP, ObjectKind.ENGINE)
    return {name.rank for name in parsed if name is not None and name.rank is not None and name.kind in kinds}


def deployments_with_objects() -> set[str]:
    """Deployment names that have any dpctl-named actor or placement group (records or not)."""
    parsed = (ObjectName.parse(n) for n in [*named_actors(), *live_groups()])
    return {name.deployment for name in parsed if name is not None}
