"""Object-level rules of the API server that do not depend on how objects are stored.

Name validation, server-managed metadata, generation bumps, Secret ``stringData``, the Scale
subresource view and the wording of the errors, kept apart from the SQLite mechanics.
"""

from __future__ import annotations

import base64
import copy
import random
import re
from datetime import datetime
from typing import Any

from capstan.api.errors import (
    AlreadyExistsError,
    BadRequestError,
    Cause,
    ConflictError,
    InvalidError,
    NotFoundError,
)
from capstan.api.registry import ResourceType
from capstan.api.selectors import LabelSelector, SelectorError, lookup_path

Obj = dict[str, Any]

FOREGROUND_FINALIZER = "foregroundDeletion"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Kubernetes draws generated suffixes from consonants and digits that cannot spell words.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_MANAGED_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generateName", "namespace", "name")


def rfc3339(moment: datetime) -> str:
    """Seconds-precision UTC timestamp, the form Kubernetes writes in metadata."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def kind_key(rt: ResourceType) -> str:
    """The storage key of a kind: group and kind, as served versions share one storage."""
    return f"{rt.group}/{rt.kind}"


def generated_name(prefix: str, rng: random.Random) -> str:
    return prefix + "".join(rng.choice(_SUFFIX_ALPHABET) for _ in range(5))


def name_causes(rt: ResourceType, name: str | None) -> list[Cause]:
    """Why ``name`` is not acceptable for ``rt`` (empty when it is)."""
    if not name:
        return [Cause("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")]
    if rt.kind == "Namespace":
        pattern, limit, what = _DNS1123_LABEL, 63, "RFC 1123 label"
        allowed = "lower case alphanumeric characters or '-'"
    else:
        pattern, limit, what = _DNS1123_SUBDOMAIN, 253, "RFC 1123 subdomain"
        allowed = "lower case alphanumeric characters, '-' or '.'"
    if len(name) > limit:
        return [Cause("metadata.name", "FieldValueInvalid",
                      f'Invalid value: "{name}": must be no more than {limit} characters')]
    if not pattern.match(name):
        return [Cause("metadata.name", "FieldValueInvalid",
                      f'Invalid value: "{name}": a lowercase {what} must consist of {allowed}, '
                      f"and must start and end with an alphanumeric character")]
    return []


def merge_string_data(obj: Obj) -> None:
    """Fold a Secret's ``stringData`` into ``data`` (base64), as the API server does on write."""
    string_data = obj.pop("stringData", None)
    if not string_data:
        return
    data = dict(obj.get("data") or {})
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    obj["data"] = data


def content_changed(old: Obj, new: Obj) -> bool:
    """True when anything outside metadata and status differs: the rule for bumping generation."""
    skip = ("metadata", "status")
    old_rest = {k: v for k, v in old.items() if k not in skip}
    new_rest = {k: v for k, v in new.items() if k not in skip}
    return old_rest != new_rest


def same_ignoring_version(old: Obj, new: Obj) -> bool:
    """True when a write would change nothing (the API server then skips it: no new version)."""
    old_meta = {k: v for k, v in (old.get("metadata") or {}).items() if k != "resourceVersion"}
    new_meta = {k: v for k, v in (new.get("metadata") or {}).items() if k != "resourceVersion"}
    if old_meta != new_meta:
        return False
    return {k: v for k, v in old.items() if k != "metadata"} == {k: v for k, v in new.items() if k != "metadata"}


def carry_server_fields(rt: ResourceType, current: Obj, incoming: Obj) -> Obj:
    """``incoming`` as an update of ``current``: server-managed metadata and status kept,
    generation bumped when the content changed."""
    result = copy.deepcopy(incoming)
    meta = result.setdefault("metadata", {})
    old_meta = current["metadata"]
    for key in _SERVER_MANAGED_META:
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    if rt.has_status:
        if "status" in current:
            result["status"] = copy.deepcopy(current["status"])
        else:
            result.pop("status", None)
    if content_changed(current, result):
        meta["generation"] = int(old_meta.get("generation") or 1) + 1
    return result


def check_new_finalizers(rt: ResourceType, current: Obj, updated: Obj) -> None:
    old_meta, new_meta = current["metadata"], updated["metadata"]
    if not old_meta.get("deletionTimestamp"):
        return
    added = set(new_meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
    if added:
        raise InvalidError.from_causes(rt.kind, old_meta["name"], [Cause(
            "metadata.finalizers", "FieldValueForbidden",
            "Forbidden: no new finalizers can be added if the object is being deleted, found new "
            f"finalizers {sorted(added)}")])


# ---- the scale subresource -----------------------------------------------------------------------

def scale_view(rt: ResourceType, obj: Obj) -> Obj:
    """The autoscaling/v1 Scale of an object whose kind has a scale subresource."""
    assert rt.scale is not None
    meta = obj["metadata"]
    scale_meta = {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                  if key in meta}
    status: Obj = {"replicas": int(lookup_path(obj, rt.scale.status_replicas_path) or 0)}
    selector = _scale_selector(rt, obj)
    if selector:
        status["selector"] = selector
    return {
        "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": scale_meta,
        "spec": {"replicas": int(lookup_path(obj, rt.scale.spec_replicas_path) or 0)},
        "status": status,
    }


def _scale_selector(rt: ResourceType, obj: Obj) -> str:
    assert rt.scale is not None
    if rt.scale.label_selector_path:
        declared = lookup_path(obj, rt.scale.label_selector_path)
        if isinstance(declared, str) and declared:
            return declared
    try:
        return str(LabelSelector.from_model(lookup_path(obj, "spec.selector")))
    except SelectorError:
        return ""


def with_replicas(rt: ResourceType, obj: Obj, replicas: int) -> Obj:
    assert rt.scale is not None
    result = copy.deepcopy(obj)
    *parents, leaf = rt.scale.spec_replicas_path.split(".")
    node = result
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = replicas
    return result


# ---- errors worded as the API server words them ----------------------------------------------------

def not_found(rt: ResourceType, name: str) -> NotFoundError:
    return NotFoundError(f'{rt.group_plural} "{name}" not found', kind=rt.plural, name=name)


def namespace_not_found(namespace: str) -> NotFoundError:
    return NotFoundError(f'namespaces "{namespace}" not found', kind="namespaces", name=namespace)


def already_exists(rt: ResourceType, name: str) -> AlreadyExistsError:
    return AlreadyExistsError(f'{rt.group_plural} "{name}" already exists', kind=rt.plural, name=name)


def conflict(rt: ResourceType, name: str) -> ConflictError:
    return ConflictError(
        f'Operation cannot be fulfilled on {rt.group_plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again", kind=rt.plural, name=name)


def uid_conflict(rt: ResourceType, name: str, expected: str, actual: str) -> ConflictError:
    return ConflictError(
        f'Operation cannot be fulfilled on {rt.group_plural} "{name}": Precondition failed: '
        f"UID in precondition: {expected}, UID in object meta: {actual}", kind=rt.plural, name=name)


def no_subresource(rt: ResourceType, subresource: str) -> NotFoundError:
    return NotFoundError(f"the server could not find the requested resource ({rt.group_plural}/{subresource})",
                         kind=rt.plural)


def bad_resource_version(value: str) -> BadRequestError:
    return BadRequestError(f'invalid resource version "{value}": must be a decimal integer')
