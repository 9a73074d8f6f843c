"""Node labels in planning: selectors (`zone=a`, `zone!=a`, `zone=in(a,b)`) and a node's value of a label.

Selectors follow Ray's label-selector syntax (`value`, `!value`, `in(a,b)`, `!in(a,b)`), so the planner's
choice can be handed to Ray as it is. A node without the label matches no selector, not even `!=`: the
planner only picks nodes that carry every selected label, which Ray then also accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from dpctl_ray.values import show

# Ray's rules (ray/_private/label_utils.py): a name of up to 63 characters, alphanumeric at both ends with
# -_. inside; a key may have a DNS-style prefix before a slash.
_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?")
_PREFIX = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,251}[a-zA-Z0-9])?")
_IN = re.compile(r"(!?)in\((.*)\)")
MAX_SELECTORS = 64
KEY_RULE = "a label name (letters, digits, -_. inside, at most 63), with an optional prefix/"
VALUE_RULE = "letters, digits and -_. inside, at most 63 characters"


class LabelError(ValueError):
    """A selector or label key that does not follow Ray's syntax; the message says which part."""


def check_key(key: object) -> str:
    """A label key as Ray accepts it (`zone`, `ray.io/gpu-domain`), else LabelError."""
    if not isinstance(key, str):
        raise LabelError(f"must be a label name, got {show(key)}")
    prefix, _, name = key.rpartition("/")
    if (prefix and not _PREFIX.fullmatch(prefix)) or not _NAME.fullmatch(name):
        raise LabelError(f"must be {KEY_RULE}, got {show(key)}")
    return key


def _value(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise LabelError(f"a label value must be {VALUE_RULE}, got {show(value)}")
    return value


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """One selector: the node's `key` is one of `values` (or, negated, is present and none of them)."""

    key: str
    values: tuple[str, ...]
    negate: bool = False

    @classmethod
    def parse(cls, given_key: object, expression: object) -> LabelMatch:
        """`key` with a Ray selector value: `a`, `!a`, `in(a,b)` or `!in(a,b)`."""
        key = check_key(given_key)
        if not isinstance(expression, str) or not expression:
            raise LabelError(f"must be a label value, !value, in(a,b) or !in(a,b), got {show(expression)}")
        found = _IN.fullmatch(expression)
        if found:
            values = tuple(_value(v.strip()) for v in found.group(2).split(","))
            return cls(key, values, negate=bool(found.group(1)))
        negate = expression.startswith("!")
        return cls(key, (_value(expression[1:] if negate else expression),), negate=negate)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels is selected; a node without the label never is."""
        value = labels.get(self.key)
        if value is None:
            return False
        return (value in self.values) != self.negate

    @property
    def _body(self) -> str:
        return self.values[0] if len(self.values) == 1 else f"in({','.join(self.values)})"

    @property
    def ray_value(self) -> str:
        """The selector value as Ray's `bundle_label_selector` takes it."""
        return f"!{self._body}" if self.negate else self._body

    def __str__(self) -> str:
        """As a `--select` flag writes it: zone=a, zone!=a, zone=in(a,b)."""
        return f"{self.key}{'!=' if self.negate else '='}{self._body}"


def parse_flag(text: str) -> LabelMatch:
    """A `--select` value: KEY=VALUE, KEY!=VALUE, KEY=in(a,b), KEY!=in(a,b) (or KEY=!VALUE as Ray writes it)."""
    key, sep, rest = text.partition("=")
    if not sep:
        raise LabelError(f"must be KEY=VALUE, KEY!=VALUE or KEY=in(a,b), got {show(text)}")
    if key.endswith("!"):
        key, rest = key[:-1], "!" + rest
    return LabelMatch.parse(key.strip(), rest.strip())


def value_of(labels: Mapping[str, str], key: str) -> str:
    """A node's value of a label; a node without it has the empty value (its own group)."""
    return labels.get(key, "")
