"""Admission hooks of the batch integration on the Store: the embedded equivalent of Kueue's webhooks.

* Job and Pod creates are mutated: a queued Job starts suspended, a queued Pod starts gated.
* Cross-object checks: a Job or Pod whose ``kueue.x-k8s.io/priority-class`` label names no
  WorkloadPriorityClass is rejected; the queue name of a Job that is running (not suspended) may not
  change.

Field checks of the Kueue kinds themselves (e.g. ``borrowingLimit`` without a cohort) live in the
models (``capstan.api.kueue``) and apply on every store. ``install_admission_hooks`` uses
``add_mutator``/``add_validator`` when the store has them (SqliteStore); a Kubernetes-backed store
needs a webhook with the same functions (see docs/batch.md), and the Job integration suspends an
unadmitted Job itself on its first look either way.
"""

from __future__ import annotations

from typing import Any

from capstan.api.errors import Cause, InvalidError, NotFoundError
from capstan.controllers.batch.common import PRIORITY_CLASS_LABEL, QUEUE_LABEL
from capstan.controllers.batch.workload_job import suspend_queued_jobs
from capstan.controllers.batch.workload_pods import gate_queued_pods
from capstan.store.base import Obj, Store


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


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
                field=f"metadata.labels[{PRIORITY_CLASS_LABEL}]", reason="FieldValueNotFound",
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
    add_validator("Job", priority_class_validator(store, "Job"))
    add_validator("Pod", priority_class_validator(store, "Pod"))
    add_validator("Job", queue_name_validator)
    return True
