"""`${VAR}` and `${VAR:-default}` in a config file's strings, filled in from the environment dpctl runs in.

So a shipped preset can say `${DPCTL_VLLM:-vllm}`: the vLLM on PATH, unless the user names another. `$${`
stands for a literal `${`. Pure: the environment comes in as a mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dpctl_ray.errors import ConfigError

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_BROKEN = re.compile(r"(?<!\$)\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")


def expand(doc: object, env: Mapping[str, str], path: str = "") -> object:
    """The document with every string's references filled in; an unset one without a default names its key."""
    if isinstance(doc, str):
        return _string(doc, env, path)
    if isinstance(doc, Mapping):
        return {key: expand(value, env, f"{path}.{key}" if path else str(key)) for key, value in doc.items()}
    if isinstance(doc, list):
        return [expand(value, env, f"{path}[{i}]") for i, value in enumerate(doc)]
    return doc


def _string(text: str, env: Mapping[str, str], path: str) -> str:
    if "${" not in text:
        return text
    if _BROKEN.search(text):
        raise ConfigError(
            f"{path}: {text!r} has a `${{` that is not a reference",
            hint="write ${NAME} or ${NAME:-default}; $${ for a literal ${",
        )

    def fill(found: re.Match[str]) -> str:
        name, default = found.group(1), found.group(2)
        if name is None:
            return "${"
        if name in env:
            return env[name]
        if default is not None:
            return default[2:]
        raise ConfigError(f"{path}: ${{{name}}} is not set", hint=f"set {name}, or give a default: ${{{name}:-VALUE}}")

    return _REFERENCE.sub(fill, text)
