"""RFC 7386 JSON merge patch: apply one, or compute the one that turns an object into another.

A merge patch is a partial document: objects merge key by key, ``null`` deletes a key, and any
other value (lists included) replaces what was there. Both functions are pure and never mutate
their arguments, so callers may pass objects they keep caching.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``target`` with ``patch`` merged in."""
    merged = _merge_value(target, patch)
    assert isinstance(merged, dict)
    return merged


def _merge_value(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_value(result.get(key), value)
    return result


def create_merge_patch(original: dict[str, Any], modified: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch that turns ``original`` into ``modified``.

    Keys missing from ``modified`` become ``null``; lists are replaced whole (merge patches
    cannot edit list elements). ``merge_patch(original, create_merge_patch(original, modified))
    == modified`` holds whenever ``modified`` contains no ``None`` values.
    """
    patch: dict[str, Any] = {}
    for key in original.keys() - modified.keys():
        patch[key] = None
    for key, new in modified.items():
        old = original.get(key, _MISSING)
        if isinstance(old, dict) and isinstance(new, dict):
            nested = create_merge_patch(old, new)
            if nested:
                patch[key] = nested
        elif old is _MISSING or old != new or type(old) is not type(new):
            patch[key] = copy.deepcopy(new)
    return patch


_MISSING: Any = object()
