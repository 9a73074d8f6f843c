"""Reading YAML or JSON documents (configs, inventories, plan files) with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpctl_ray.errors import BadInput


def load_document(path: str, what: str) -> Any:
    """Parse `path` as JSON (by suffix or a leading brace) or YAML; `what` names the file in errors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{what} file not found: {path}", hint="check the path") from None
    except IsADirectoryError:
        raise BadInput(f"{what} file is a directory: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {what} file {path}: {exc}") from None
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if path.endswith(".json"):
                raise BadInput(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return _load_yaml(text, path)


def _load_yaml(text: str, path: str) -> Any:
    import yaml  # noqa: PLC0415 - JSON inventories and plan files never pay for importing yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}: not valid YAML{where}: {problem}") from None


def dump_yaml(doc: Any) -> str:
    """YAML for humans: keys in document order, block style."""
    import yaml  # noqa: PLC0415

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False))
