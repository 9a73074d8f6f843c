"""A placement spec's own checks: values wrong whatever the cluster (dp_local > dp, cpus <= 0, ...), and the limits."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dpctl_ray.errors import BadInput
from dpctl_ray.planner.labels import LabelError, LabelMatch, check_key
from dpctl_ray.planner.model import LAYOUTS, PACKS, SPARES_MODES, Placement, units
from dpctl_ray.values import printable, show


class SpecError(BadInput):
    """A placement value no cluster could satisfy (dp_local > dp, cpus <= 0, ...): bad input."""

    default_code = "bad_spec"


MAX_RANKS = 1_000_000  # dp, dp_local
MAX_WORLD_SIZE = 65_536  # tp, pp and tp x pp: devices of one rank
MAX_DEVICES = 4_194_304  # dp x tp x pp: devices of one deployment
MAX_CPUS = 1_000_000.0


def check_spec(spec: Placement, spelled: Mapping[str, str] | None = None) -> None:
    """Reject values that are wrong whatever the cluster; each error names its key as the user wrote it.

    `spelled` maps a key to how the user gave it (`--dp-local` for a flag); the default is `placement.KEY`.
    """

    def key(name: str) -> str:
        return (spelled or {}).get(name, f"placement.{name}")

    def count(name: str, value: object, maximum: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
            raise SpecError(f"{key(name)}: must be a positive integer of at most {maximum:,}, got {show(value)}")

    count("dp", spec.dp, MAX_RANKS)
    spares = spec.spares
    if not isinstance(spares, int) or isinstance(spares, bool) or not 0 <= spares <= MAX_RANKS - spec.dp:
        raise SpecError(
            f"{key('spares')}: must be an integer >= 0 with dp + spares at most {MAX_RANKS:,}, got {show(spares)}"
        )
    if spec.spares_mode not in SPARES_MODES:
        raise SpecError(f"{key('spares_mode')}: must be one of {', '.join(SPARES_MODES)}, got {show(spec.spares_mode)}")
    count("tp", spec.tp, MAX_WORLD_SIZE)
    count("pp", spec.pp, MAX_WORLD_SIZE)
    if spec.world_size > MAX_WORLD_SIZE:
        raise SpecError(
            f"{key('tp')} x {key('pp')}: a rank of {spec.world_size:,} devices; dpctl plans at most "
            f"{MAX_WORLD_SIZE:,} per rank"
        )
    if (spec.dp + spares) * spec.world_size > MAX_DEVICES:
        raise SpecError(
            f"{key('dp')} x {key('tp')} x {key('pp')}: {(spec.dp + spares) * spec.world_size:,} devices"
            f"{' with the spares' if spares else ''}; dpctl plans at most {MAX_DEVICES:,} in one deployment"
        )
    if spec.dp_local is not None:
        count("dp_local", spec.dp_local, MAX_RANKS)
        if spec.dp_local > spec.dp:
            raise SpecError(
                f"{key('dp_local')}: must be at most {key('dp')} ({spec.dp}), got {spec.dp_local}",
                hint="lower --dp-local, raise --dp, or use dp_local: auto",
            )
    if spec.pack not in PACKS:
        raise SpecError(f"{key('pack')}: must be one of {', '.join(PACKS)}, got {show(spec.pack)}")
    if spec.pack == "span" and spec.dp_local not in (None, 1):
        raise SpecError(
            f"{key('dp_local')}: must be 1 (or auto) with pack span, got {spec.dp_local}",
            hint="a span rank takes whole nodes, so each node hosts part of one rank",
        )
    if not isinstance(spec.device, str) or not spec.device or printable(spec.device) != spec.device:
        raise SpecError(f"{key('device')}: must name a Ray resource, got {show(spec.device)}")
    cpus = spec.cpus
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus <= MAX_CPUS or units(cpus) <= 0:
        raise SpecError(f"{key('cpus')}: must be a number above 0 and at most {MAX_CPUS:g}, got {show(cpus)}")
    if spec.bundles is not None and spec.bundles not in LAYOUTS:
        raise SpecError(f"{key('bundles')}: must be one of {', '.join(LAYOUTS)}, got {show(spec.bundles)}")
    if not isinstance(spec.master, str) or not spec.master:
        raise SpecError(f"{key('master')}: must be auto, a node id or an ip, got {show(spec.master)}")
    _check_labels(spec, key)


def _check_labels(spec: Placement, key: Callable[[str], str]) -> None:
    """The label options: selectors as Ray writes them, one per key; label keys; within and spread apart."""
    seen: set[str] = set()
    for match in spec.select:
        if not isinstance(match, LabelMatch):
            raise SpecError(f"{key('select')}: must map label names to values, got {show(match)}")
        if match.key in seen:
            raise SpecError(f"{key('select')}: selects the label {show(match.key)} twice", hint="give each label once")
        seen.add(match.key)
    for name in ("within", "rank_within", "spread"):
        label = getattr(spec, name)
        if label is not None:
            try:
                check_key(label)
            except LabelError as exc:
                raise SpecError(f"{key(name)}: {exc}") from None
    if spec.within is not None and spec.within == spec.spread:
        raise SpecError(
            f"{key('within')} and {key('spread')}: both name the label {show(spec.within)}",
            hint="a deployment inside one value cannot spread across its values; drop one",
        )
