"""Discovery documents (/api, /apis, /api/v1, /apis/{group}/{version}) built from the registry.

They carry what ``kubectl`` needs to map names to resources: name, singularName, namespaced,
kind, verbs, shortNames and categories, plus the subresources we serve.
"""

from __future__ import annotations

from typing import Any

from capstan.api.registry import Registry, ResourceType

OBJECT_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]


def _group_versions(registry: Registry) -> dict[str, list[str]]:
    """Group name -> served versions, preferred first, in registry order."""
    found: dict[str, list[str]] = {}
    for rt in registry:
        versions = found.setdefault(rt.group, [])
        for version in (rt.version, *rt.served_versions):
            if version not in versions:
                versions.append(version)
    return found


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _api_group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [_api_group(name, versions) for name, versions in _group_versions(registry).items() if name]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = _group_versions(registry).get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, versions)}


def serves(rt: ResourceType, group: str, version: str) -> bool:
    return rt.group == group and version in (rt.version, *rt.served_versions)


def _resource_entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
        "kind": rt.kind, "verbs": OBJECT_VERBS,
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    return entry


def _subresource_entries(rt: ResourceType) -> list[dict[str, Any]]:
    entries = []
    base = {"singularName": "", "namespaced": rt.namespaced}
    if rt.has_status:
        entries.append({**base, "name": f"{rt.plural}/status", "kind": rt.kind, "verbs": SUBRESOURCE_VERBS})
    if rt.scale is not None:
        entries.append({**base, "name": f"{rt.plural}/scale", "kind": "Scale", "group": "autoscaling",
                        "version": "v1", "verbs": SUBRESOURCE_VERBS})
    if rt.group == "" and rt.kind == "Pod":
        entries.append({**base, "name": "pods/log", "kind": "Pod", "verbs": ["get"]})
    return entries


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    served = [rt for rt in registry if serves(rt, group, version)]
    if not served:
        return None
    resources = []
    for rt in served:
        resources.append(_resource_entry(rt))
        resources.extend(_subresource_entries(rt))
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}
