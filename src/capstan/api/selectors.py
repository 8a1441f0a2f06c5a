"""Label and field selectors with Kubernetes syntax, parsed once and matched many times."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector string that does not parse."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "=":
            return present and value == self.values[0]
        if self.operator == "!=":
            return not present or value != self.values[0]
        if self.operator == "in":
            return present and value in self.values
        if self.operator == "notin":
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        return not present


_SET_EXPR = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _parse_requirement(term: str) -> Requirement:
    set_match = _SET_EXPR.match(term)
    if set_match:
        values = tuple(v.strip() for v in set_match.group(3).split(",") if v.strip())
        return Requirement(set_match.group(1), set_match.group(2), values)
    for operator, normalized in (("!=", "!="), ("==", "="), ("=", "=")):
        if operator in term:
            key, _, value = term.partition(operator)
            if not key.strip():
                raise SelectorError(f"invalid selector term {term!r}: missing key")
            return Requirement(key.strip(), normalized, (value.strip(),))
    if term.startswith("!"):
        return Requirement(term[1:].strip(), "!")
    if re.match(r"^[A-Za-z0-9_./-]+$", term):
        return Requirement(term, "exists")
    raise SelectorError(f"invalid selector term {term!r}")


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text:
            return cls()
        return cls(tuple(_parse_requirement(term) for term in _split_top_level(text)))

    @classmethod
    def from_model(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """From a metav1.LabelSelector dict (matchLabels / matchExpressions)."""
        if not selector:
            return cls()
        reqs = [Requirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
        for expr in selector.get("matchExpressions") or []:
            operator = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(
                expr.get("operator", ""))
            if operator is None:
                raise SelectorError(f"unknown selector operator {expr.get('operator')!r}")
            reqs.append(Requirement(expr["key"], operator, tuple(expr.get("values") or ())))
        return cls(tuple(reqs))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)

    def __str__(self) -> str:
        terms = []
        for req in self.requirements:
            if req.operator in ("=", "!="):
                terms.append(f"{req.key}{req.operator}{req.values[0]}")
            elif req.operator in ("in", "notin"):
                terms.append(f"{req.key} {req.operator} ({','.join(req.values)})")
            elif req.operator == "exists":
                terms.append(req.key)
            else:
                terms.append(f"!{req.key}")
        return ",".join(terms)


def lookup_path(obj: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted path ("status.phase") through nested dicts; None when absent."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if not text:
            return cls()
        reqs = []
        for term in _split_top_level(text):
            req = _parse_requirement(term)
            if req.operator not in ("=", "!="):
                raise SelectorError(f"field selectors support only =, == and !=, got {term!r}")
            reqs.append(req)
        return cls(tuple(reqs))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for req in self.requirements:
            raw = lookup_path(obj, req.key)
            value = "" if raw is None else str(raw)
            if (value == req.values[0]) != (req.operator == "="):
                return False
        return True
