"""Reading YAML or JSON documents (configs, inventories, plan files), refusing what no real one looks like.

Only regular files of a bounded size are read; a key given twice is an error naming it; YAML aliases are
limited to a small budget (a "billion laughs" document expands a few hundred bytes into gigabytes), and
so is nesting.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from dpctl_ray.errors import BadInput
from dpctl_ray.values import show

MAX_BYTES = 256 * 1024 * 1024  # a 200,000-node inventory is about 30 MB, its plan about 60 MB
MAX_ALIASES = 32  # YAML aliases (shared mappings and lists) one document may use
MAX_DEPTH = 32  # mappings and lists inside each other
SHOWN_PATH = 80  # characters of the key path an error shows


class DuplicateKey(ValueError):
    """A mapping gives one key twice."""


def load_document(path: str, what: str) -> Any:
    """Parse `path` as JSON (by suffix or a leading brace) or YAML; `what` names the file in errors."""
    text = _read(path, what)
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            return _load_json(text, path)
        except BadInput:
            if path.endswith(".json"):
                raise
    return _load_yaml(text, path)


def _read(path: str, what: str) -> str:
    if not path:
        raise BadInput(f"{what} file: the path is empty", hint="name a file")
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        raise BadInput(f"{what} file not found: {show(path)}", hint="check the path") from None
    except OSError as exc:
        raise BadInput(f"cannot read {what} file {show(path)}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadInput(f"{what} file is a directory: {show(path)}")
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"{what} file is not a regular file: {show(path)}", hint="name a file, not a pipe or device")
    if info.st_size > MAX_BYTES:
        raise BadInput(f"{what} file {show(path)} is {info.st_size:,} bytes; dpctl reads at most {MAX_BYTES:,}")
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {what} file {show(path)}: {exc}") from None


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKey(key)
    return doc


def _load_json(text: str, path: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except DuplicateKey as exc:
        raise BadInput(f"{path}: the key {show(exc.args[0])} is given twice in one mapping") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits
        raise BadInput(f"{path}: has an integer of more than 4300 digits") from None


def _load_yaml(text: str, path: str) -> Any:
    import yaml  # noqa: PLC0415 - JSON inventories and plan files never pay for importing yaml

    try:
        doc = yaml.load(text, Loader=_loader())  # noqa: S506 - a safe loader
    except DuplicateKey as exc:
        raise BadInput(f"{path}: the key {show(exc.args[0])} is given twice in one mapping") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits
        raise BadInput(f"{path}: has an integer of more than 4300 digits") from None
    _check_shape(doc, path)
    return doc


_LOADER: Any = None


def _loader() -> Any:
    """PyYAML's safe loader (its C parser when present), refusing a key given twice in one mapping."""
    global _LOADER  # noqa: PLW0603 - built once, on first use, so that JSON-only runs never import yaml
    if _LOADER is None:
        import yaml  # noqa: PLC0415

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class Loader(base):  # type: ignore[valid-type, misc]
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                keys = [self.construct_object(k, deep=True) for k, _ in node.value]
                hashable = [k for k in keys if isinstance(k, (str, int, float, bool)) or k is None]
                if len(set(hashable)) != len(hashable):
                    seen: set[object] = set()
                    raise DuplicateKey(next(k for k in hashable if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
                return super().construct_mapping(node, deep=deep)

        _LOADER = Loader
    return _LOADER


def _check_shape(doc: Any, path: str) -> None:
    """Refuse YAML that shares more than MAX_ALIASES containers, refers to itself, or nests too deeply.

    Each container is visited once, so the check costs what the document holds, not what it expands to.
    """
    seen: set[int] = set()
    aliases = 0
    stack: list[tuple[Any, int, tuple[int, ...], str]] = [(doc, 0, (), "")]
    while stack:
        value, depth, ancestors, where = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        key = id(value)
        if key in ancestors:
            raise BadInput(f"{path}: a YAML alias refers to a mapping or list that contains it")
        if key in seen:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise BadInput(
                    f"{path}: uses more than {MAX_ALIASES} YAML aliases",
                    hint="write the values out; aliases that refer to aliases multiply a document's size",
                )
            continue
        if depth >= MAX_DEPTH:
            at = where if len(where) <= SHOWN_PATH else f"{where[:SHOWN_PATH]}..."
            raise BadInput(f"{path}: nested too deeply at {at} (at most {MAX_DEPTH} levels)")
        seen.add(key)
        inner = (*ancestors, key)
        if isinstance(value, dict):
            stack.extend((v, depth + 1, inner, f"{where}.{k}" if where else str(k)) for k, v in value.items())
        else:
            stack.extend((v, depth + 1, inner, f"{where}[{i}]") for i, v in enumerate(value))


def dump_yaml(doc: Any) -> str:
    """YAML for humans: keys in document order, block style."""
    import yaml  # noqa: PLC0415

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False))
