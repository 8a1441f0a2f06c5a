"""OpenAPI v3 schemas and CustomResourceDefinitions generated from the pydantic models.

One source of truth: the same models validate objects in the embedded store, generate the CRDs
the Kubernetes API server validates with, and generate the field reference in docs/.
"""

from __future__ import annotations

import copy
from typing import Any

from capstan.api.registry import ResourceType

Schema = dict[str, Any]

_DROP_KEYS = {"title", "$defs", "discriminator"}


def openapi_schema(rt: ResourceType) -> Schema:
    """A structural OpenAPI v3 schema for the kind, as Kubernetes CRDs require."""
    raw = rt.model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema = _convert(raw, defs)
    props = schema.setdefault("properties", {})
    # apiVersion/kind/metadata are validated by the API server itself for CRDs.
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    schema.pop("required", None)
    if "spec" in (raw.get("required") or []):
        schema["required"] = ["spec"]
    return schema


def _convert(node: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    variants = node.get("anyOf")
    if variants is not None:
        return _convert_union(node, variants, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP_KEYS or (key == "additionalProperties" and value is True):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # pydantic writes JSON Schema 2020 (the bound itself); CRDs take OpenAPI v3.0: bound + flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = copy.deepcopy(value)
    if out.get("type") == "object" and "properties" in out and node.get("additionalProperties", True):
        # extra="allow": unknown fields round-trip instead of being pruned.
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _convert_union(node: Schema, variants: list[Schema], defs: dict[str, Schema]) -> Schema:
    concrete = [v for v in variants if v.get("type") != "null"]
    nullable = len(concrete) != len(variants)
    extras = {k: v for k, v in node.items() if k not in ("anyOf", "title", "default")}
    if "default" in node and node["default"] is not None:
        extras["default"] = node["default"]
    if len(concrete) == 1:
        out = {**_convert(concrete[0], defs), **extras}
    else:
        types = {v.get("type") for v in concrete}
        if types <= {"integer", "string"} and len(types) == 2:
            out = {"x-kubernetes-int-or-string": True, **extras}
        else:
            out = {"x-kubernetes-preserve-unknown-fields": True, **extras}
    if nullable:
        out["nullable"] = True
    return out


def custom_resource_definition(rt: ResourceType) -> dict[str, Any]:
    """An apiextensions.k8s.io/v1 CRD for a Capstan-served kind."""
    schema = openapi_schema(rt)
    version: dict[str, Any] = {
        "name": rt.version, "served": True, "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    subresources: dict[str, Any] = {}
    if rt.has_status:
        subresources["status"] = {}
    if rt.scale is not None:
        scale: dict[str, Any] = {
            "specReplicasPath": "." + rt.scale.spec_replicas_path,
            "statusReplicasPath": "." + rt.scale.status_replicas_path,
        }
        if rt.scale.label_selector_path:
            scale["labelSelectorPath"] = "." + rt.scale.label_selector_path
        subresources["scale"] = scale
    if subresources:
        version["subresources"] = subresources
    names: dict[str, Any] = {"plural": rt.plural, "singular": rt.singular, "kind": rt.kind,
                             "listKind": f"{rt.kind}List"}
    if rt.short_names:
        names["shortNames"] = list(rt.short_names)
    if rt.categories:
        names["categories"] = list(rt.categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{rt.plural}.{rt.group}"},
        "spec": {
            "group": rt.group,
            "names": names,
            "scope": "Namespaced" if rt.namespaced else "Cluster",
            "versions": [version],
        },
    }


def field_rows(rt: ResourceType) -> list[tuple[str, str, str, str]]:
    """(field path, type, default, description) for every field of the kind, depth first."""
    rows: list[tuple[str, str, str, str]] = []
    _walk(openapi_schema(rt), "", rows)
    return [row for row in rows if not row[0].startswith(("apiVersion", "kind", "metadata"))]


def _type_name(node: Schema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "any")
    if kind == "array":
        return f"[]{_type_name(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type_name(node['additionalProperties'])}"
    if "enum" in node:
        return " \\| ".join(str(v) for v in node["enum"])
    return str(kind)


def _walk(node: Schema, prefix: str, rows: list[tuple[str, str, str, str]]) -> None:
    for name, sub in (node.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        default = sub.get("default")
        rows.append((path, _type_name(sub), "" if default is None else repr(default),
                     str(sub.get("description", "")).replace("\n", " ")))
        if name == "metadata":
            continue  # ObjectMeta is documented once, not under every template
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        suffix = "[]" if sub.get("type") == "array" else ""
        if target.get("properties"):
            _walk(target, path + suffix, rows)


def reference_markdown(types: list[ResourceType]) -> str:
    """The field reference of every kind served, as Markdown (docs/reference/kinds.md)."""
    lines = ["# Kinds and fields", "",
             "Generated from the models by `hack/gen-docs`; a test fails when it is out of date.",
             "Every object also has `apiVersion`, `kind` and `metadata` (ObjectMeta: name, generateName,",
             "namespace, uid, resourceVersion, generation, creationTimestamp, deletionTimestamp, labels,",
             "annotations, ownerReferences, finalizers). Unknown fields are kept, not dropped.", ""]
    for rt in types:
        scope = "namespaced" if rt.namespaced else "cluster-scoped"
        extras = ", ".join(filter(None, [
            "status subresource" if rt.has_status else "",
            "scale subresource" if rt.scale else "",
            f"short names: {', '.join(rt.short_names)}" if rt.short_names else ""]))
        lines += [f"## {rt.kind} ({rt.api_version})", "",
                  f"`{rt.plural}`, {scope}{'; ' + extras if extras else ''}.", "",
                  "| field | type | default |", "|---|---|---|"]
        lines += [f"| `{path}` | {kind} | {default} |" for path, kind, default, _ in field_rows(rt)]
        lines.append("")
    return "\n".join(lines)
