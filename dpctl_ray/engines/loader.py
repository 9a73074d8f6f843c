"""Loading a user's engine class ("package.module:Class") and checking it keeps the engine contract."""

from __future__ import annotations

import importlib
import inspect

from dpctl_ray.engines.base import REQUIRED_METHODS, EngineError
from dpctl_ray.planner.model import LAYOUTS, Layout


def load_engine_class(path: str) -> type:
    """Import `package.module:Class`; an import failure or a missing method is an EngineError naming engine.class."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise EngineError(f'engine.class: must be "package.module:Class", got {path!r}')
    try:
        module = importlib.import_module(module_name)
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
