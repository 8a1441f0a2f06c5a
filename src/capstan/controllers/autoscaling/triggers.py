"""Building each trigger's ``ScalerConfig``: TriggerAuthentication resolution and the scale
target's container environment.

* ``resolved_env``: the environment of the scale target's container (``envSourceContainerName``,
  else the first), with ``valueFrom`` Secret/ConfigMap keys and ``envFrom`` resolved, for KEDA's
  ``<field>FromEnv`` metadata.
* ``auth_params``: a trigger's ``authenticationRef``: a TriggerAuthentication (same namespace) or a
  ClusterTriggerAuthentication (its Secrets and ConfigMaps are read from
  ``cluster_object_namespace``, ``keda`` by default, as KEDA does). Sources, later ones winning
  as in KEDA's code order: ``env`` (the target's containers), ``secretTargetRef``,
  ``configMapTargetRef``, ``filePath`` (a JSON object of parameters, relative to the auth root
  the server was given; refused when none was given or the path leaves it). Cloud secret
  managers and pod identity are refused with a message naming them.

Every problem raises ``TriggerSetupError`` with a message naming the trigger and the object.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capstan.api.errors import NotFoundError
from capstan.api.keda import ScaleTriggers, TriggerAuthenticationSpec
from capstan.store.base import Obj, Store


class TriggerSetupError(Exception):
    """A trigger cannot be set up (bad authenticationRef, missing Secret, ...)."""

    def __init__(self, message: str, reason: str = "TriggerSetupError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AuthOptions:
    cluster_object_namespace: str = "keda"
    """Where ClusterTriggerAuthentication Secrets/ConfigMaps live (KEDA's KEDA_CLUSTER_OBJECT_NAMESPACE)."""
    file_auth_root: Path | None = None
    """The directory ``filePath`` is resolved in; None refuses ``filePath``."""


def _decode(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return value


async def _secret_data(store: Store, name: str, namespace: str) -> dict[str, str] | None:
    try:
        secret = await store.get(store.registry.lookup("secrets"), name, namespace)
    except NotFoundError:
        return None
    data = {key: _decode(str(value)) for key, value in (secret.get("data") or {}).items()}
    data.update({key: str(value) for key, value in (secret.get("stringData") or {}).items()})
    return data


async def _configmap_data(store: Store, name: str, namespace: str) -> dict[str, str] | None:
    try:
        configmap = await store.get(store.registry.lookup("configmaps"), name, namespace)
    except NotFoundError:
        return None
    return {key: str(value) for key, value in (configmap.get("data") or {}).items()}


def pod_template_spec(target: Obj) -> Obj | None:
    """The pod spec of a workload: ``spec.template.spec`` (Deployment, StatefulSet, Job, ...)."""
    spec = target.get("spec") or {}
    template = spec.get("template") or {}
    pod_spec = template.get("spec")
    return pod_spec if isinstance(pod_spec, dict) else None


def _container(pod_spec: Obj, name: str | None) -> Obj | None:
    containers = pod_spec.get("containers") or []
    if name:
        return next((c for c in containers if c.get("name") == name), None)
    return containers[0] if containers else None


async def resolved_env(store: Store, namespace: str, pod_spec: Obj | None,
                       container_name: str | None = None) -> dict[str, str]:
    """The container's environment as the process would see it (Secrets and ConfigMaps resolved;
    missing optional sources are skipped, missing required ones too: the scaler then reports the
    variable as unset)."""
    if pod_spec is None:
        return {}
    container = _container(pod_spec, container_name)
    if container is None:
        return {}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        data: dict[str, str] | None = None
        if source.get("secretRef"):
            data = await _secret_data(store, source["secretRef"]["name"], namespace)
        elif source.get("configMapRef"):
            data = await _configmap_data(store, source["configMapRef"]["name"], namespace)
        for key, value in (data or {}).items():
            env[prefix + key] = value
    for var in container.get("env") or []:
        resolved = await _env_value(store, namespace, var)
        if resolved is not None:
            env[var["name"]] = resolved
    return env


async def _env_value(store: Store, namespace: str, var: Obj) -> str | None:
    if var.get("value") is not None:
        return str(var["value"])
    source = var.get("valueFrom") or {}
    if source.get("secretKeyRef"):
        ref = source["secretKeyRef"]
        data = await _secret_data(store, ref["name"], namespace)
        return None if data is None else data.get(ref["key"])
    if source.get("configMapKeyRef"):
        ref = source["configMapKeyRef"]
        data = await _configmap_data(store, ref["name"], namespace)
        return None if data is None else data.get(ref["key"])
    return None


async def auth_params(store: Store, namespace: str, index: int, trigger: ScaleTriggers, pod_spec: Obj | None,
                      options: AuthOptions) -> dict[str, str]:
    """The parameters a trigger's authenticationRef provides ({} without one)."""
    ref = trigger.authentication_ref
    if ref is None:
        return {}
    where = f"triggers[{index}].authenticationRef"
    cluster = ref.kind == "ClusterTriggerAuthentication"
    rt = store.registry.lookup("clustertriggerauthentications" if cluster else "triggerauthentications")
    try:
        auth = await store.get(rt, ref.name, None if cluster else namespace)
    except NotFoundError:
        scope = "" if cluster else f' in namespace "{namespace}"'
        raise TriggerSetupError(f'{where}: {ref.kind} "{ref.name}" not found{scope}',
                                "TriggerAuthenticationNotFound") from None
    spec = TriggerAuthenticationSpec.model_validate(auth.get("spec") or {})
    unsupported = spec.unsupported_sources()
    if unsupported:
        raise TriggerSetupError(f'{where}: {ref.kind} "{ref.name}" uses {", ".join(unsupported)}, which Capstan '
                                "does not support (use secretTargetRef, configMapTargetRef, env or filePath)",
                                "TriggerAuthenticationUnsupported")
    secrets_namespace = options.cluster_object_namespace if cluster else namespace
    params: dict[str, str] = {}
    what = f'{ref.kind} "{ref.name}"'
    if spec.env:
        container_env = {}
        for item in spec.env:
            if pod_spec is not None:
                container_env = await resolved_env(store, namespace, pod_spec, item.container_name)
            if item.name not in container_env:
                raise TriggerSetupError(f"{where}: {what} env parameter {item.parameter!r}: variable "
                                        f"{item.name!r} is not set in the scale target's container",
                                        "TriggerAuthenticationInvalid")
            params[item.parameter] = container_env[item.name]
    sources = (("secretTargetRef", "Secret", spec.secret_target_ref, _secret_data),
               ("configMapTargetRef", "ConfigMap", spec.config_map_target_ref, _configmap_data))
    for field, kind, target_refs, read_data in sources:
        for target_ref in target_refs or []:
            data = await read_data(store, target_ref.name, secrets_namespace)
            if data is None:
                raise TriggerSetupError(f'{where}: {what} {field}: {kind} "{target_ref.name}" not found in '
                                        f'namespace "{secrets_namespace}"', "TriggerAuthenticationInvalid")
            if target_ref.key not in data:
                raise TriggerSetupError(f'{where}: {what} {field}: {kind} "{target_ref.name}" has no key '
                                        f"{target_ref.key!r}", "TriggerAuthenticationInvalid")
            params[target_ref.parameter] = data[target_ref.key]
    if spec.file_path:
        params.update(_file_params(where, what, spec.file_path, options))
    return params


def _file_params(where: str, what: str, file_path: str, options: AuthOptions) -> Mapping[str, str]:
    root = options.file_auth_root
    if root is None:
        raise TriggerSetupError(f"{where}: {what} filePath is not enabled on this server (no auth file root "
                                "configured)", "TriggerAuthenticationInvalid")
    path = (root / file_path).resolve()
    if not path.is_relative_to(root.resolve()):
        raise TriggerSetupError(f"{where}: {what} filePath {file_path!r} is outside the auth file root",
                                "TriggerAuthenticationInvalid")
    try:
        loaded: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TriggerSetupError(f"{where}: {what} filePath {file_path!r}: {exc}",
                                "TriggerAuthenticationInvalid") from None
    if not isinstance(loaded, dict):
        raise TriggerSetupError(f"{where}: {what} filePath {file_path!r} must hold a JSON object of parameters",
                                "TriggerAuthenticationInvalid")
    return {str(key): str(value) for key, value in loaded.items()}
