"""Manifests for ``capstan apply`` and ``capstan delete -f``: reading, validating, applying.

``apply`` is all-or-nothing as far as validation goes: every document is checked (YAML syntax,
shape, known kind, schema, then a server-side dry run) before anything is written. Only when
all pass are the objects created or updated.

Objects are dry-run and written in a dependency-safe kind order (``APPLY_ORDER``, like Helm's install
order), whatever the order of the documents: Namespaces first, then ResourceFlavors before the
ClusterQueues that name them, ..., ScaledObjects after the workloads they scale. A dry run cannot see
what the same apply creates before it, so a dry-run failure that only says "not found" of a Namespace,
ResourceFlavor or WorkloadPriorityClass that an earlier document of this apply creates is not a
problem (the fields that name such objects: ``capstan.controllers.batch.validation.required_references``).
Problems are reported in document order.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from capstan.api.errors import ApiError, Cause, ConflictError, InvalidError, NotFoundError
from capstan.api.registry import Registry, ResourceType
from capstan.cli.client import ApiClient

Obj = dict[str, Any]
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
Outcome = Literal["created", "configured", "unchanged"]

APPLY_ORDER: tuple[tuple[str, str], ...] = (
    ("", "Namespace"),
    ("kueue.x-k8s.io", "ResourceFlavor"),
    ("kueue.x-k8s.io", "Cohort"),
    ("kueue.x-k8s.io", "WorkloadPriorityClass"),
    ("kueue.x-k8s.io", "ClusterQueue"),
    ("kueue.x-k8s.io", "LocalQueue"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("keda.sh", "ClusterTriggerAuthentication"),
    ("keda.sh", "TriggerAuthentication"),
    ("apps", "Deployment"),
    ("batch", "Job"),
    ("", "Pod"),
    ("keda.sh", "ScaledObject"),
    ("keda.sh", "ScaledJob"),
)
"""(group, kind) in the order ``apply`` writes them: what others name comes before them. Kinds not
listed come last, in document order (as Helm installs unknown kinds)."""
_RANK = {key: rank for rank, key in enumerate(APPLY_ORDER)}


class ManifestError(Exception):
    """One or more manifest problems; each message is one line for the user."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


@dataclass
class Document:
    source: str
    index: int  # 1-based position in its file
    obj: Any
    item: int | None = None  # position inside a kind: List document
    rt: ResourceType | None = None
    existing: Obj | None = None
    dry_run_result: Obj | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        if not isinstance(meta, dict):
            return ""
        return str(meta.get("name") or meta.get("generateName") or "")

    @property
    def label(self) -> str:
        where = f"{self.source}: document {self.index}"
        if self.item is not None:
            where += f" item {self.item}"
        if isinstance(self.obj, dict) and self.obj.get("kind"):
            return f'{where} ({self.obj["kind"]} "{self.name}")' if self.name else f"{where} ({self.obj['kind']})"
        return where

    def fail(self, message: str) -> None:
        self.problems.append(f"{self.label}: {message}")


# ---- reading ------------------------------------------------------------------------------------

def _files(path_text: str) -> list[tuple[str, str]]:
    if path_text == "-":
        return [("<stdin>", sys.stdin.read())]
    path = Path(path_text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        return [(str(p), p.read_text()) for p in files]
    if not path.exists():
        raise ManifestError([f'the path "{path_text}" does not exist'])
    return [(path_text, path.read_text())]


def _parse(source: str, text: str) -> list[Document]:
    documents: list[Document] = []
    try:
        for index, loaded in enumerate(yaml.safe_load_all(text), start=1):
            if loaded is None:
                continue  # empty documents (a stray ---) are skipped, as kubectl does
            if isinstance(loaded, dict) and loaded.get("kind") == "List" and isinstance(loaded.get("items"), list):
                documents.extend(Document(source, index, item, item=pos)
                                 for pos, item in enumerate(loaded["items"], start=1))
            else:
                documents.append(Document(source, index, loaded))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ManifestError([f"{source}: invalid YAML at {where}{detail}"]) from None
    return documents


def read_documents(paths: Iterable[str]) -> list[Document]:
    """Every document of every file (directories: their manifests in name order)."""
    documents: list[Document] = []
    syntax_errors: list[str] = []
    for path_text in paths:
        for source, text in _files(path_text):
            try:
                documents.extend(_parse(source, text))
            except ManifestError as exc:
                syntax_errors.extend(exc.messages)
    if syntax_errors:
        raise ManifestError(syntax_errors)
    return documents


# ---- validation ---------------------------------------------------------------------------------

def _describe_cause(cause: Cause) -> str:
    return f"{cause.field}: {cause.message}" if cause.field else cause.message


def _describe_causes(error: ApiError) -> list[str]:
    if isinstance(error, InvalidError) and error.causes:
        return [_describe_cause(c) for c in error.causes]
    return [error.message]


def check_shape(doc: Document, registry: Registry, namespace: str | None) -> None:
    """Client-side checks: a mapping with apiVersion, kind and a name, of a known kind, valid
    against its schema; fills in the namespace."""
    obj = doc.obj
    if not isinstance(obj, dict):
        doc.fail(f"expected a mapping with apiVersion, kind and metadata, got {type(obj).__name__}")
        return
    missing = [key for key in ("apiVersion", "kind") if not obj.get(key)]
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        doc.fail("metadata: must be a mapping")
        return
    if not (meta or {}).get("name") and not (meta or {}).get("generateName"):
        missing.append("metadata.name")
    if missing:
        doc.fail(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        return
    try:
        doc.rt = registry.for_object(obj)
    except ApiError as exc:
        doc.fail(exc.message)
        return
    doc.obj = obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    if doc.rt.namespaced:
        if namespace and meta.get("namespace") and meta["namespace"] != namespace:
            doc.fail(f'the namespace from the provided object "{meta["namespace"]}" does not match the '
                     f'namespace "{namespace}"; pass --namespace={meta["namespace"]} or drop one of them')
            return
        meta["namespace"] = meta.get("namespace") or namespace or "default"
    else:
        meta.pop("namespace", None)
    try:
        doc.rt.validate(obj)
    except InvalidError as exc:
        for message in _describe_causes(exc):
            doc.fail(message)


def merged_for_update(manifest: Obj, existing: Obj) -> Obj:
    """What ``apply`` writes over an existing object: the manifest's fields, the existing
    object's server-owned metadata and status, and labels/annotations merged (manifest wins)."""
    merged = copy.deepcopy(manifest)
    meta = copy.deepcopy(existing.get("metadata") or {})
    manifest_meta = manifest.get("metadata") or {}
    for key, value in manifest_meta.items():
        if key not in ("labels", "annotations", "resourceVersion", "uid", "creationTimestamp", "generation"):
            meta[key] = copy.deepcopy(value)
    for key in ("labels", "annotations"):
        combined = {**(meta.get(key) or {}), **(manifest_meta.get(key) or {})}
        if combined:
            meta[key] = combined
    merged["metadata"] = meta
    if "status" in existing:
        merged["status"] = copy.deepcopy(existing["status"])
    return merged


def _comparable(obj: Obj) -> Obj:
    trimmed = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(trimmed.get("metadata") or {})
    for key in ("resourceVersion", "generation", "managedFields"):
        meta.pop(key, None)
    trimmed["metadata"] = meta
    return trimmed


def apply_rank(rt: ResourceType) -> int:
    """Where objects of this kind come in ``APPLY_ORDER`` (unlisted kinds after all listed ones)."""
    return _RANK.get((rt.group, rt.kind), len(APPLY_ORDER))


def in_apply_order(documents: list[Document]) -> list[Document]:
    """The documents sorted by kind as ``APPLY_ORDER`` says; document order within a kind."""
    return sorted(documents, key=lambda doc: apply_rank(doc.rt) if doc.rt is not None else len(APPLY_ORDER))


@dataclass
class ApplyBatch:
    """What the documents of one apply create or update, for the dry runs of those that name them."""

    namespaces: set[str]
    cluster_objects: set[tuple[str, str]]  # (kind, name) of cluster-scoped objects

    @classmethod
    def of(cls, documents: list[Document]) -> ApplyBatch:
        named = [doc for doc in documents if doc.rt is not None and doc.name]
        return cls(namespaces={doc.name for doc in named if doc.rt is not None and doc.rt.group == ""
                               and doc.rt.kind == "Namespace"},
                   cluster_objects={(doc.rt.kind, doc.name) for doc in named if doc.rt is not None
                                    and not doc.rt.namespaced})


def _unresolved_causes(doc: Document, error: InvalidError, batch: ApplyBatch) -> list[Cause]:
    """The causes of a dry-run failure, but for "not found" of an object this apply creates before ``doc``
    (its kind comes earlier in ``APPLY_ORDER``; the server cannot see it yet)."""
    # Imported here: the controllers package costs every other command a third of a second to load.
    from capstan.controllers.batch.validation import NOT_FOUND, required_references

    references = required_references(doc.obj)
    return [cause for cause in error.causes
            if not (cause.reason == NOT_FOUND and references.get(cause.field) in batch.cluster_objects)]


def dry_run(doc: Document, client: ApiClient, batch: ApplyBatch) -> None:
    """Ask the server whether the write would succeed, without writing."""
    assert doc.rt is not None
    meta = doc.obj["metadata"]
    try:
        for attempt in range(5):
            if meta.get("name"):
                try:
                    doc.existing = client.get(doc.rt, meta["name"], meta.get("namespace"))
                except NotFoundError:
                    doc.existing = None
            try:
                if doc.existing is not None:
                    doc.dry_run_result = client.update(merged_for_update(doc.obj, doc.existing), dry_run=True)
                else:
                    doc.dry_run_result = client.create(doc.obj, dry_run=True)
                break
            except ConflictError:
                # A controller wrote (e.g. status) between our read and the dry run: read again.
                if attempt == 4:
                    raise
    except NotFoundError as exc:
        if exc.kind == "namespaces" and exc.name in batch.namespaces:
            return  # its namespace comes earlier in this same apply
        doc.fail(exc.message)
    except InvalidError as exc:
        if not exc.causes:
            doc.fail(exc.message)
        for cause in _unresolved_causes(doc, exc, batch):  # none left: valid once its references exist
            doc.fail(_describe_cause(cause))
    except ApiError as exc:
        for message in _describe_causes(exc):
            doc.fail(message)


def validate_all(documents: list[Document], client: ApiClient, namespace: str | None) -> list[Document]:
    """Raise ManifestError listing every problem of every document (in document order), or return the
    documents in the order to write them (``in_apply_order``) when all pass."""
    for doc in documents:
        check_shape(doc, client.registry, namespace)
    problems = [p for doc in documents for p in doc.problems]
    if problems:
        raise ManifestError(problems)
    ordered = in_apply_order(documents)
    batch = ApplyBatch.of(documents)
    for doc in ordered:
        dry_run(doc, client, batch)
    problems = [p for doc in documents for p in doc.problems]
    if problems:
        raise ManifestError(problems)
    return ordered


# ---- applying -----------------------------------------------------------------------------------

def apply_document(doc: Document, client: ApiClient) -> tuple[Obj, Outcome]:
    assert doc.rt is not None
    if doc.existing is None:
        return client.create(doc.obj), "created"
    if doc.dry_run_result is not None and _comparable(doc.dry_run_result) == _comparable(doc.existing):
        return doc.existing, "unchanged"
    meta = doc.obj["metadata"]
    for _ in range(5):
        current = client.get(doc.rt, meta["name"], meta.get("namespace"))
        try:
            return client.update(merged_for_update(doc.obj, current)), "configured"
        except ConflictError:
            continue  # changed between our read and write (a controller's status write): read again
    raise ConflictError(f'{doc.rt.group_plural} "{meta["name"]}" keeps changing; try again')
