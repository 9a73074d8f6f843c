"""`down`: the supervisor first, every host stopped, what processes left killed, every object and the record gone.

`--force` goes ahead even while another command holds the deployment.
"""

from __future__ import annotations

from dpctl_ray.errors import Busy
from dpctl_ray.launcher.ports import Ports
from dpctl_ray.launcher.results import DownResult


def down(ports: Ports, name: str, *, force: bool) -> DownResult:
    """Stop the engines (gracefully, briefly), then remove everything under the deployment's name and its record."""
    ports.supervisors.stop(name)  # first: it would repair what down removes (its lock dies with it)
    try:
        with ports.store.locked(name, "down"):
            return remove(ports, name)
    except Busy:
        if not force:
            raise
        result = remove(ports, name)
        ports.store.drop_lock(name)
        return result


def remove(ports: Ports, name: str) -> DownResult:
    """Everything the deployment owns, removed (its lock held, or not with --force): what `down` and `--recreate` do."""
    record = ports.store.load(name)
    grace = record.engine.stop_seconds() if record else 0.0
    ports.hosts.stop(name, None, grace, record.stems() if record else {})  # every host, started spares' too
    killed = []
    if record is None or record.engine.kind == "command":  # what the hosts could not stop, or had no host left to
        killed = ports.hosts.reap(name, record.nodes() if record else None, None)
    removed = ports.objects.sweep(name)
    had_record = ports.store.delete(name)
    return DownResult(name, removed.actors, removed.groups, had_record, killed)
