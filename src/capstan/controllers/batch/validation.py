"""Admission hooks of the batch integration on the Store: the embedded equivalent of Kueue's webhooks.

* Job and Pod creates are mutated: a queued Job starts suspended, a queued Pod starts gated.
* Cross-object checks: a Job or Pod whose ``kueue.x-k8s.io/priority-class`` label names no
  WorkloadPriorityClass is rejected; the queue name of a Job that is running (not suspended) may not
  change; a ClusterQueue naming a flavor that no ResourceFlavor has is rejected, with the field path
  (``spec.resourceGroups[0].flavors[1].name: Not found: "spot": no ResourceFlavor named "spot"``).
  Only names a write introduces are checked: a queue whose flavor was deleted later can still be
  written (labels, finalizers) and is left inactive by the admission loop, as Kueue does.

Each cross-object check is a pure function of the objects and the names that exist
(``missing_flavor_causes``), a lookup (``existing_flavor_names``) and the validator that joins them, so
the Kubernetes webhook calls the same code. ``required_references`` says which field of an object names
which other object, so that ``capstan apply`` can accept a reference to an object the same apply creates.

Field checks of the Kueue kinds themselves (e.g. ``borrowingLimit`` without a cohort) live in the
models (``capstan.api.kueue``) and apply on every store. ``install_admission_hooks`` uses
``add_mutator``/``add_validator`` when the store has them (SqliteStore); a Kubernetes-backed store
needs a webhook with the same functions (see docs/batch.md), and the Job integration suspends an
unadmitted Job itself on its first look either way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from capstan.api.errors import Cause, InvalidError, NotFoundError
from capstan.api.fielderrors import shown
from capstan.controllers.batch.common import PRIORITY_CLASS_LABEL, QUEUE_LABEL
from capstan.controllers.batch.workload_job import suspend_queued_jobs
from capstan.controllers.batch.workload_pods import gate_queued_pods
from capstan.store.base import Obj, Store

NOT_FOUND = "FieldValueNotFound"
"""The reason of a field naming an object that does not exist (Kubernetes' ``field.ErrorTypeNotFound``)."""
RESOURCE_FLAVORS = "resourceflavors.kueue.x-k8s.io"

Reference = tuple[str, str]
"""(kind, name) of a cluster-scoped object that a field names."""


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def not_found(field: str, value: str, detail: str) -> Cause:
    """A field naming something missing, in the API server's words: ``Not found: "spot": <detail>``."""
    return Cause(field=field, reason=NOT_FOUND, message=f"Not found: {shown(value)}: {detail}")


# ---- ClusterQueue flavors ------------------------------------------------------------------------

def flavor_names(cluster_queue: Obj | None) -> Iterator[tuple[str, str]]:
    """(field path, flavor name) of every flavor a ClusterQueue's resource groups name, in order."""
    spec = (cluster_queue or {}).get("spec") or {}
    for i, group in enumerate(spec.get("resourceGroups") or []):
        for j, flavor in enumerate((group or {}).get("flavors") or []):
            name = (flavor or {}).get("name")
            if isinstance(name, str) and name:
                yield f"spec.resourceGroups[{i}].flavors[{j}].name", name


def introduced_flavors(new: Obj, old: Obj | None) -> set[str]:
    """The flavor names ``new`` names and ``old`` (the stored object, None on create) did not: the only
    ones a write is checked for, so that a queue whose flavor was deleted later stays writable."""
    before = {name for _, name in flavor_names(old)}
    return {name for _, name in flavor_names(new) if name not in before}


def missing_flavor_causes(new: Obj, old: Obj | None, existing: Collection[str]) -> list[Cause]:
    """The pure check: one cause per field naming a flavor that is neither in ``existing`` nor named
    by ``old`` already."""
    introduced = introduced_flavors(new, old)
    return [not_found(field, name, f'no ResourceFlavor named "{name}"')
            for field, name in flavor_names(new) if name in introduced and name not in existing]


async def existing_flavor_names(store: Store) -> set[str]:
    """The names of the ResourceFlavors that exist (few: one list call)."""
    result = await store.list(store.registry.lookup(RESOURCE_FLAVORS))
    return {_name(flavor) for flavor in result.items}


async def check_cluster_queue_flavors(store: Store, new: Obj, old: Obj | None) -> None:
    """Raise InvalidError if the ClusterQueue ``new`` introduces a flavor no ResourceFlavor has; reads
    the store only when the write introduces a flavor name."""
    if not introduced_flavors(new, old):
        return
    causes = missing_flavor_causes(new, old, await existing_flavor_names(store))
    if causes:
        raise InvalidError.from_causes("ClusterQueue", _name(new), causes)


def cluster_queue_flavor_validator(store: Store) -> Any:
    async def validate(new: Obj, old: Obj | None) -> None:
        await check_cluster_queue_flavors(store, new, old)

    return validate


# ---- references, for clients that create several objects at once ---------------------------------

def required_references(obj: Obj) -> dict[str, Reference]:
    """Field path -> (kind, name) of each object this module's validators require to exist for ``obj``
    (the fields of their ``FieldValueNotFound`` causes). ``capstan apply`` uses it to accept a reference
    to an object created earlier in the same apply."""
    kind = obj.get("kind")
    if kind == "ClusterQueue":
        return {field: ("ResourceFlavor", name) for field, name in flavor_names(obj)}
    labels = _labels(obj)
    if kind in ("Job", "Pod") and labels.get(QUEUE_LABEL) and labels.get(PRIORITY_CLASS_LABEL):
        return {f"metadata.labels[{PRIORITY_CLASS_LABEL}]": ("WorkloadPriorityClass", labels[PRIORITY_CLASS_LABEL])}
    return {}


# ---- Jobs and Pods -------------------------------------------------------------------------------


def priority_class_validator(store: Store, kind: str) -> Any:
    rt = store.registry.lookup("workloadpriorityclasses.kueue.x-k8s.io")

    async def validate(new: Obj, old: Obj | None) -> None:
        labels = _labels(new)
        name = labels.get(PRIORITY_CLASS_LABEL)
        if not name or not labels.get(QUEUE_LABEL) or (old is not None and _labels(old).get(PRIORITY_CLASS_LABEL)
                                                      == name):
            return
        try:
            await store.get(rt, name)
        except NotFoundError:
            raise InvalidError.from_causes(kind, str(new["metadata"].get("name") or ""), [Cause(
                field=f"metadata.labels[{PRIORITY_CLASS_LABEL}]", reason=NOT_FOUND,
                message=f'WorkloadPriorityClass "{name}" not found')]) from None

    return validate


def queue_name_validator(new: Obj, old: Obj | None) -> None:
    if old is None:
        return
    before, after = _labels(old).get(QUEUE_LABEL), _labels(new).get(QUEUE_LABEL)
    running = not (old.get("spec") or {}).get("suspend")
    if before and before != after and running:
        raise InvalidError.from_causes("Job", str(new["metadata"].get("name") or ""), [Cause(
            field=f"metadata.labels[{QUEUE_LABEL}]", reason="FieldValueInvalid",
            message="field is immutable while the Job is not suspended")])


def install_admission_hooks(store: Store, hooks: object | None = None) -> bool:
    """Register the mutators and validators on ``hooks`` (default: the store itself); False when it has no
    ``add_mutator``/``add_validator`` (a KubeStore: ``capstan.server.webhook`` registers them on its
    webhook instead, with the store for the cross-object reads)."""
    target = store if hooks is None else hooks
    add_mutator = getattr(target, "add_mutator", None)
    add_validator = getattr(target, "add_validator", None)
    if add_mutator is None or add_validator is None:
        return False
    add_mutator("Job", suspend_queued_jobs)
    add_mutator("Pod", gate_queued_pods)
    # Pure checks before the ones that read the store: a dry run that stops at a missing reference has
    # already run every other check (capstan apply relies on it).
    add_validator("Job", queue_name_validator)
    add_validator("Job", priority_class_validator(store, "Job"))
    add_validator("Pod", priority_class_validator(store, "Pod"))
    add_validator("ClusterQueue", cluster_queue_flavor_validator(store))
    return True
