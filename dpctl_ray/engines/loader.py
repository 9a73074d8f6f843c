"""Loading a user's engine class ("package.module:Class") and checking it keeps the engine contract."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from dpctl_ray.engines.base import REQUIRED_METHODS, EngineError
from dpctl_ray.planner.model import LAYOUTS, Layout


def load_engine_class(path: str, search: Sequence[str] = ()) -> type:
    """Import `package.module:Class`; an import failure or a missing method is an EngineError naming engine.class.

    `search`: directories to look in first, in order (where dpctl runs: the config file's and the current one);
    after them come PYTHONPATH and the installed packages. On a node the module is on the path Ray ships it to.
    """
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise EngineError(f'engine.class: must be "package.module:Class", got {path!r}')
    for directory in reversed(search):
        if directory not in sys.path:
            sys.path.insert(0, directory)  # this process imports the user's module from there, as users expect
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise EngineError(f"engine.class: cannot import {module_name!r}: ModuleNotFoundError: {exc}") from None
        places = [*search, "PYTHONPATH" if os.environ.get("PYTHONPATH") else "", "the installed packages"]
        raise EngineError(
            f"engine.class: no module named {exc.name!r} (looked in {', '.join(p for p in places if p)})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises on import is the message
        raise EngineError(f"engine.class: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        raise EngineError(f"engine.class: {module_name!r} has no class {class_name!r}")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise EngineError(
            f"engine.class: {path} does not implement the engine contract: no {', '.join(f'{m}()' for m in missing)}"
            f" (an engine needs {', '.join(REQUIRED_METHODS)})"
        )
    return cls


def declared_layout(cls: type) -> Layout | None:
    """The bundle layout an engine class needs (`dpctl_bundles = "per_device"`), if it declares one."""
    layout = getattr(cls, "dpctl_bundles", None)
    if layout is not None and layout not in LAYOUTS:
        raise EngineError(
            f"engine.class: {cls.__name__}.dpctl_bundles must be one of {', '.join(LAYOUTS)}, got {layout!r}"
        )
    return layout


def module_source(path: str) -> Path | None:
    """The file or package directory of an engine class's top-level module, when it must travel to the nodes.

    None for dpctl's own engines (dpctl ships itself) and for installed packages (site-packages, the standard
    library), which a node is expected to have, like vLLM itself.
    """
    top = path.partition(":")[0].split(".")[0]
    if top == __name__.split(".")[0]:
        return None
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        source = Path(locations[0])
    elif spec.origin and spec.origin.endswith(".py"):
        source = Path(spec.origin)
    else:
        return None  # built in, or compiled: nothing to ship
    installed = {
        Path(p).resolve()
        for key in ("purelib", "platlib", "stdlib", "platstdlib")
        if (p := sysconfig.get_paths().get(key))
    }
    if any(source.resolve().is_relative_to(root) for root in installed):
        return None
    return source
