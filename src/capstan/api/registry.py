"""Kind registry: maps kind, plural, singular, short names, group and version to models.

The registry is the single place that knows which kinds exist. The store validates through it,
the HTTP API routes through it, the CLI resolves ``kubectl``-style names through it, and the
Kubernetes mode generates CRDs from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from capstan.api.appsv1 import Deployment
from capstan.api.base import Resource
from capstan.api.batchv1 import Job
from capstan.api.coordinationv1 import Lease
from capstan.api.corev1 import ConfigMap, Event, Namespace, Node, Pod, Secret
from capstan.api.errors import Cause, InvalidError, NotFoundError
from capstan.api.fielderrors import causes_from_errors


@dataclass(frozen=True)
class ScaleSubresource:
    """Where a kind keeps its replica counts, as a CRD's scale subresource declares it."""

    spec_replicas_path: str = "spec.replicas"
    status_replicas_path: str = "status.replicas"
    label_selector_path: str | None = None


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    model: type[Resource]
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    has_status: bool = True
    scale: ScaleSubresource | None = None
    categories: tuple[str, ...] = ()
    served_versions: tuple[str, ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_plural(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def validate(self, obj: dict[str, Any]) -> Resource:
        """Validate a wire object against the model; raise InvalidError with field causes."""
        try:
            return self.model.model_validate(obj)
        except ValidationError as exc:
            name = (obj.get("metadata") or {}).get("name") or ""
            causes = causes_from_validation(exc, builtin=self.group in BUILTIN_GROUPS)
            raise InvalidError.from_causes(self.kind, name, causes) from exc

    def normalize(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Validate, apply defaults and return the canonical wire form."""
        return self.validate(obj).to_wire()


BUILTIN_GROUPS = frozenset({"", "apps", "batch", "coordination.k8s.io"})
"""Groups of the kinds Kubernetes itself serves (validated by its Go code, not by an OpenAPI schema)."""


def causes_from_validation(exc: ValidationError, *, builtin: bool = False) -> list[Cause]:
    """The causes the Kubernetes API server reports for the same failures (see capstan.api.fielderrors);
    ``builtin``: in the words of its Go validation of built-in kinds, where they differ from a CRD's."""
    return causes_from_errors(exc.errors(), builtin=builtin)


class Registry:
    def __init__(self, types: Iterable[ResourceType] = ()) -> None:
        self._types: list[ResourceType] = []
        self._by_gvk: dict[tuple[str, str], ResourceType] = {}
        self._by_name: dict[str, ResourceType] = {}
        self._by_group_plural: dict[tuple[str, str], ResourceType] = {}
        for resource_type in types:
            self.add(resource_type)

    def add(self, resource_type: ResourceType) -> None:
        self._types.append(resource_type)
        for version in (resource_type.version, *resource_type.served_versions):
            api_version = f"{resource_type.group}/{version}" if resource_type.group else version
            self._by_gvk[(api_version, resource_type.kind)] = resource_type
        self._by_group_plural[(resource_type.group, resource_type.plural)] = resource_type
        names = {resource_type.plural, resource_type.singular, resource_type.kind.lower(),
                 *resource_type.short_names, resource_type.group_plural}
        for name in names:
            # Core kinds win over same-named kinds from other groups, as kubectl prefers them.
            self._by_name.setdefault(name.lower(), resource_type)

    def __iter__(self) -> Any:
        return iter(self._types)

    def for_object(self, obj: dict[str, Any]) -> ResourceType:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not kind:
            raise InvalidError.from_causes("", "", [Cause("kind", "FieldValueRequired", "kind is required")])
        if not api_version:
            raise InvalidError.from_causes(str(kind), "", [
                Cause("apiVersion", "FieldValueRequired", "apiVersion is required")])
        found = self._by_gvk.get((str(api_version), str(kind)))
        if found is None:
            raise NotFoundError(f'no matches for kind "{kind}" in version "{api_version}"',
                                reason="NotFound", kind="")
        return found

    def lookup(self, name: str) -> ResourceType:
        """Resolve a kubectl-style name: plural, singular, short name, kind or plural.group."""
        found = self._by_name.get(name.lower())
        if found is None:
            raise NotFoundError(f'the server doesn\'t have a resource type "{name}"', kind="")
        return found

    def by_group_plural(self, group: str, plural: str) -> ResourceType:
        found = self._by_group_plural.get((group, plural))
        if found is None:
            raise NotFoundError(f"the server could not find the requested resource ({plural}.{group})",
                                kind="")
        return found


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "Namespace", "namespaces", Namespace, namespaced=False, short_names=("ns",)),
    ResourceType("", "v1", "Pod", "pods", Pod, short_names=("po",), categories=("all",)),
    ResourceType("", "v1", "Node", "nodes", Node, namespaced=False, short_names=("no",)),
    ResourceType("", "v1", "Secret", "secrets", Secret, has_status=False),
    ResourceType("", "v1", "ConfigMap", "configmaps", ConfigMap, short_names=("cm",), has_status=False),
    ResourceType("", "v1", "Event", "events", Event, short_names=("ev",), has_status=False),
    ResourceType("apps", "v1", "Deployment", "deployments", Deployment, short_names=("deploy",),
                 scale=ScaleSubresource(label_selector_path="status.selector"), categories=("all",)),
    ResourceType("batch", "v1", "Job", "jobs", Job, categories=("all",)),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", Lease, has_status=False),
)


def default_registry() -> Registry:
    """The registry of every kind this build of Capstan serves."""
    # Imported here: those modules build their ResourceTypes from this module.
    from capstan.api.keda import KEDA_TYPES
    from capstan.api.kueue import KUEUE_TYPES

    return Registry((*BUILTIN_TYPES, *KEDA_TYPES, *KUEUE_TYPES))
