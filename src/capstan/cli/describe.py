"""``capstan describe``: an object in readable sections, then its Events.

Sections: metadata, a kind-specific spec summary (pods, deployments, jobs, nodes; other kinds
show their spec as YAML), status and conditions, container states for pods, and Events. Secret
values are never printed, only their sizes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml

from capstan.api.registry import ResourceType
from capstan.cli import printers
from capstan.cli.printers import NONE, human_duration, since

Obj = dict[str, Any]
Lines = list[str]
INDENT = "  "


def _field(lines: Lines, label: str, value: Any, indent: int = 0) -> None:
    text = NONE if value in (None, "", [], {}) else str(value)
    lines.append(f"{INDENT * indent}{label + ':':<20}{text}".rstrip())


def _mapping(lines: Lines, label: str, values: dict[str, Any] | None, indent: int = 0) -> None:
    if not values:
        _field(lines, label, None, indent)
        return
    pairs = [f"{key}={value}" for key, value in sorted(values.items())]
    _field(lines, label, pairs[0], indent)
    lines.extend(f"{INDENT * indent}{'':<20}{pair}" for pair in pairs[1:])


def _yaml_block(lines: Lines, label: str, value: Any, indent: int = 0) -> None:
    if value in (None, {}, []):
        _field(lines, label, None, indent)
        return
    lines.append(f"{INDENT * indent}{label}:")
    dumped = yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip()
    lines.extend(f"{INDENT * (indent + 1)}{line}" for line in dumped.splitlines())


def _metadata(lines: Lines, obj: Obj) -> None:
    meta = obj.get("metadata") or {}
    _field(lines, "Name", meta.get("name"))
    if meta.get("namespace"):
        _field(lines, "Namespace", meta.get("namespace"))
    _mapping(lines, "Labels", meta.get("labels"))
    _mapping(lines, "Annotations", meta.get("annotations"))
    _field(lines, "CreationTimestamp", meta.get("creationTimestamp"))
    if meta.get("deletionTimestamp"):
        _field(lines, "DeletionTimestamp", meta.get("deletionTimestamp"))
    if meta.get("finalizers"):
        _field(lines, "Finalizers", ", ".join(meta["finalizers"]))
    controller = next((ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None)
    if controller:
        _field(lines, "Controlled By", f"{controller.get('kind')}/{controller.get('name')}")


def _conditions(lines: Lines, obj: Obj) -> None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    if not conditions:
        return
    lines.append("Conditions:")
    rows = [[c.get("type", ""), c.get("status", ""), c.get("reason") or "", c.get("message") or ""]
            for c in conditions]
    table = printers.render_table(["Type", "Status", "Reason", "Message"], rows)
    lines.extend(INDENT + line for line in table.splitlines())


def _container_state(lines: Lines, label: str, state: Obj | None) -> None:
    if not state:
        return
    for phase in ("running", "waiting", "terminated"):
        detail = state.get(phase)
        if detail is None:
            continue
        _field(lines, label, phase.capitalize(), 2)
        for key, text in (("reason", "Reason"), ("message", "Message"), ("exitCode", "Exit Code"),
                          ("signal", "Signal"), ("startedAt", "Started"), ("finishedAt", "Finished")):
            if detail.get(key) not in (None, ""):
                _field(lines, text, detail[key], 3)
        return


def _command(lines: Lines, container: Obj, indent: int) -> None:
    """Command and Args one element per line, as kubectl shows them; scripts keep their lines."""
    for label, key in (("Command", "command"), ("Args", "args")):
        values = container.get(key) or []
        if not values:
            continue
        lines.append(f"{INDENT * indent}{label}:")
        for value in values:
            lines.extend(f"{INDENT * (indent + 1)}{line}" for line in str(value).splitlines() or [""])


def _containers(lines: Lines, pod: Obj) -> None:
    statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
    lines.append("Containers:")
    for container in (pod.get("spec") or {}).get("containers") or []:
        lines.append(f"{INDENT}{container.get('name')}:")
        if container.get("image"):
            _field(lines, "Image", container["image"], 2)
        _command(lines, container, 2)
        status = statuses.get(container.get("name")) or {}
        _container_state(lines, "State", status.get("state"))
        _container_state(lines, "Last State", status.get("lastState"))
        _field(lines, "Ready", str(bool(status.get("ready"))), 2)
        _field(lines, "Restart Count", status.get("restartCount", 0), 2)
        resources = container.get("resources") or {}
        if resources.get("requests"):
            _mapping(lines, "Requests", resources["requests"], 2)
        if resources.get("limits"):
            _mapping(lines, "Limits", resources["limits"], 2)
        env = container.get("env") or []
        if env:
            lines.append(f"{INDENT * 2}Environment:")
            for var in env:
                shown = var.get("value") if "value" in var else _env_source(var.get("valueFrom") or {})
                lines.append(f"{INDENT * 3}{var.get('name')}: {shown}")


def _env_source(source: Obj) -> str:
    # Never resolve secret values here: name where the value comes from instead.
    if source.get("secretKeyRef"):
        ref = source["secretKeyRef"]
        return f"<set to the key '{ref.get('key')}' in secret '{ref.get('name')}'>"
    if source.get("configMapKeyRef"):
        ref = source["configMapKeyRef"]
        return f"<set to the key '{ref.get('key')}' of config map '{ref.get('name')}'>"
    if source.get("fieldRef"):
        return f"({source['fieldRef'].get('fieldPath')})"
    return NONE


def _describe_pod(lines: Lines, pod: Obj) -> None:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    _field(lines, "Node", spec.get("nodeName"))
    _field(lines, "Start Time", status.get("startTime"))
    _field(lines, "Status", printers.pod_status(pod))
    if status.get("reason"):
        _field(lines, "Reason", status.get("reason"))
    if status.get("message"):
        _field(lines, "Message", status.get("message"))
    _field(lines, "IP", status.get("podIP"))
    _containers(lines, pod)
    _conditions(lines, pod)
    _mapping(lines, "Node-Selectors", spec.get("nodeSelector"))


def _replicas_line(obj: Obj) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return (f"{spec.get('replicas', 0)} desired | {status.get('updatedReplicas', 0)} updated | "
            f"{status.get('replicas', 0)} total | {status.get('availableReplicas', 0)} available | "
            f"{status.get('unavailableReplicas', 0)} unavailable")


def _selector_text(selector: Obj | None) -> str | None:
    if not selector:
        return None
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        terms.append(f"{expr.get('key')} {expr.get('operator')} ({','.join(expr.get('values') or [])})")
    return ",".join(terms)


def _describe_deployment(lines: Lines, obj: Obj) -> None:
    spec = obj.get("spec") or {}
    _field(lines, "Selector", _selector_text(spec.get("selector")))
    _field(lines, "Replicas", _replicas_line(obj))
    _field(lines, "StrategyType", (spec.get("strategy") or {}).get("type", "RollingUpdate"))
    _pod_template(lines, spec.get("template") or {})
    _conditions(lines, obj)


def _pod_template(lines: Lines, template: Obj) -> None:
    lines.append("Pod Template:")
    _mapping(lines, "Labels", (template.get("metadata") or {}).get("labels"), 1)
    for container in (template.get("spec") or {}).get("containers") or []:
        lines.append(f"{INDENT}{container.get('name')}:")
        if container.get("image"):
            _field(lines, "Image", container.get("image"), 2)
        _command(lines, container, 2)


def _describe_job(lines: Lines, job: Obj) -> None:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    _field(lines, "Parallelism", spec.get("parallelism"))
    _field(lines, "Completions", spec.get("completions", NONE))
    _field(lines, "Backoff Limit", spec.get("backoffLimit"))
    _field(lines, "Start Time", status.get("startTime"))
    _field(lines, "Completed At", status.get("completionTime"))
    start = printers.parse_time(status.get("startTime"))
    end = printers.parse_time(status.get("completionTime"))
    if start and end:
        _field(lines, "Duration", human_duration((end - start).total_seconds()))
    _field(lines, "Pods Statuses", f"{status.get('active', 0)} Active / {status.get('succeeded', 0)} Succeeded "
                                   f"/ {status.get('failed', 0)} Failed")
    _pod_template(lines, spec.get("template") or {})
    _conditions(lines, job)


def _describe_node(lines: Lines, node: Obj) -> None:
    status = node.get("status") or {}
    _field(lines, "Unschedulable", bool((node.get("spec") or {}).get("unschedulable")))
    taints = (node.get("spec") or {}).get("taints") or []
    _field(lines, "Taints", ", ".join(f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}" for t in taints)
           or None)
    _mapping(lines, "Capacity", status.get("capacity"))
    _mapping(lines, "Allocatable", status.get("allocatable"))
    _conditions(lines, node)


def _describe_secret(lines: Lines, secret: Obj) -> None:
    _field(lines, "Type", secret.get("type", "Opaque"))
    lines.append("Data")
    lines.append("====")
    for key, value in sorted((secret.get("data") or {}).items()):
        try:
            size = len(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            size = len(value)
        lines.append(f"{key}:  {size} bytes")


def _describe_configmap(lines: Lines, configmap: Obj) -> None:
    lines.append("Data")
    lines.append("====")
    for key, value in sorted((configmap.get("data") or {}).items()):
        lines.append(f"{key}:")
        lines.append("----")
        lines.extend(str(value).splitlines())
        lines.append("")


def _describe_generic(lines: Lines, obj: Obj) -> None:
    extra = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    for key, value in extra.items():
        _yaml_block(lines, key[:1].upper() + key[1:], value)
    status = dict(obj.get("status") or {})
    status.pop("conditions", None)
    if status:
        _yaml_block(lines, "Status", status)
    _conditions(lines, obj)


def _describe_workload(lines: Lines, workload: Obj) -> None:
    spec = workload.get("spec") or {}
    status = workload.get("status") or {}
    _field(lines, "Queue Name", spec.get("queueName"))
    _field(lines, "Priority", spec.get("priority", 0))
    if spec.get("priorityClassName"):
        _field(lines, "Priority Class", spec.get("priorityClassName"))
    lines.append("Pod Sets:")
    for pod_set in spec.get("podSets") or []:
        requests: dict[str, Any] = {}
        for container in ((pod_set.get("template") or {}).get("spec") or {}).get("containers") or []:
            requests.update(((container.get("resources") or {}).get("requests")) or {})
        _field(lines, str(pod_set.get("name") or "main"), f"{pod_set.get('count', 1)} pod(s), requests "
               + (", ".join(f"{k}={v}" for k, v in sorted(requests.items())) or "none"), 1)
    admission = status.get("admission")
    if admission:
        lines.append("Admission:")
        _field(lines, "Cluster Queue", admission.get("clusterQueue"), 1)
        for assignment in admission.get("podSetAssignments") or []:
            flavors = ", ".join(f"{r}={f}" for r, f in sorted((assignment.get("flavors") or {}).items()))
            usage = ", ".join(f"{r}={v}" for r, v in sorted((assignment.get("resourceUsage") or {}).items()))
            _field(lines, str(assignment.get("name") or "main"), f"flavors {flavors}; usage {usage}", 1)
    _last_attempt(lines, workload)
    if status.get("requeueState"):
        _field(lines, "Requeue State", f"count {status['requeueState'].get('count')}, eligible at "
               f"{status['requeueState'].get('requeueAt')}")
    _conditions(lines, workload)


def _last_attempt(lines: Lines, workload: Obj) -> None:
    raw = ((workload.get("metadata") or {}).get("annotations") or {}).get("capstan.io/admission-attempt")
    if not raw:
        return
    try:
        attempt = json.loads(raw)
    except ValueError:
        return
    lines.append("Last Admission Attempt:")
    _field(lines, "Time", attempt.get("time"), 1)
    _field(lines, "Cluster Queue", attempt.get("clusterQueue"), 1)
    _field(lines, "Position", attempt.get("position") or "not queued", 1)
    _field(lines, "Reason", attempt.get("reason"), 1)
    ahead = attempt.get("higherPriorityAhead") or 0
    if ahead:
        _field(lines, "Ahead", f"{ahead} higher-priority workload(s), first: {', '.join(attempt.get('ahead') or [])}",
               1)
    shortages = attempt.get("shortages") or []
    if shortages:
        lines.append(f"{INDENT}Shortages:")
        lines.extend(f"{INDENT * 2}{s.get('text')}" for s in shortages)
    else:
        _field(lines, "Message", attempt.get("message"), 1)


def _describe_queue(lines: Lines, queue: Obj) -> None:
    _yaml_block(lines, "Spec", queue.get("spec"))
    status = dict(queue.get("status") or {})
    for key in ("pendingWorkloads", "reservingWorkloads", "admittedWorkloads"):
        _field(lines, key[:1].upper() + key[1:], status.get(key, 0))
    for flavor in status.get("flavorsReservation") or []:
        used = ", ".join(f"{r['name']}={r.get('total')}" + (f" (borrowed {r['borrowed']})"
                                                          if r.get("borrowed") not in (None, "0") else "")
                         for r in flavor.get("resources") or [])
        _field(lines, f"Flavor {flavor.get('name')}", used)
    if status.get("fairSharing"):
        _field(lines, "Weighted Share", status["fairSharing"].get("weightedShare"))
    _conditions(lines, queue)


DESCRIBERS: dict[str, Callable[[Lines, Obj], None]] = {
    "Workload": _describe_workload,
    "ClusterQueue": _describe_queue,
    "LocalQueue": _describe_queue,
    "Pod": _describe_pod,
    "Deployment": _describe_deployment,
    "Job": _describe_job,
    "Node": _describe_node,
    "Secret": _describe_secret,
    "ConfigMap": _describe_configmap,
}


def _events(lines: Lines, events: list[Obj], now: datetime) -> None:
    if not events:
        lines.append(f"Events:{'':<13}{NONE}")
        return
    lines.append("Events:")
    ordered = sorted(events, key=lambda e: printers.event_time(e) or "")
    rows = []
    for event in ordered:
        source = (event.get("source") or {}).get("component") or event.get("reportingComponent") or ""
        count = event.get("count") or 1
        seen = since(printers.event_time(event), now)
        if count > 1:
            seen = f"{seen} (x{count} over {since(event.get('firstTimestamp'), now)})"
        rows.append([str(event.get("type") or ""), str(event.get("reason") or ""), seen, source,
                     str(event.get("message") or "").replace("\n", " ")])
    table = printers.render_table(["Type", "Reason", "Age", "From", "Message"], rows)
    lines.extend(INDENT + line for line in table.splitlines())


def describe(rt: ResourceType, obj: Obj, events: list[Obj], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    lines: Lines = []
    _metadata(lines, obj)
    DESCRIBERS.get(rt.kind, _describe_generic)(lines, obj)
    _events(lines, events, now)
    return "\n".join(lines) + "\n"
