"""kubectl-like tables: the columns of each kind, ages, and rendering without a box.

The columns of a kind live in one registry (``register_columns``); a new kind adds its
columns with one call next to its other CLI bits, and every kind without an entry gets
NAME AGE.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from capstan.api.registry import ResourceType

Obj = dict[str, Any]
Cell = Callable[[Obj, datetime], str]
NONE = "<none>"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Cell
    wide_only: bool = False


@dataclass(frozen=True)
class KindColumns:
    columns: tuple[Column, ...]
    show_name: bool = True  # kubectl's event table, for one, has no NAME column


_COLUMNS: dict[str, KindColumns] = {}


def register_columns(kind: str, columns: Sequence[Column], *, show_name: bool = True) -> None:
    """Set the table columns (besides NAMESPACE and NAME) of ``kind``."""
    _COLUMNS[kind] = KindColumns(tuple(columns), show_name)


def columns_for(kind: str) -> KindColumns:
    return _COLUMNS.get(kind, KindColumns((Column("AGE", lambda o, now: age(o, now)),)))


# ---- time ---------------------------------------------------------------------------------------

def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """Short durations the way kubectl prints ages: 45s, 3m20s, 17m, 5h12m, 3d4h, 400d."""
    if seconds < -1:
        return "<invalid>"
    total = max(int(seconds), 0)
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if total < 120:
        return f"{total}s"
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def since(value: str | None, now: datetime) -> str:
    moment = parse_time(value)
    return human_duration((now - moment).total_seconds()) if moment else NONE


def age(obj: Obj, now: datetime) -> str:
    return since((obj.get("metadata") or {}).get("creationTimestamp"), now)


# ---- helpers for cells --------------------------------------------------------------------------

def _get(obj: Obj, *path: str) -> Any:
    current: Any = obj
    for key in path:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


def _count(value: Any) -> str:
    return str(value or 0)


def condition(obj: Obj, kind: str) -> Obj | None:
    for cond in _get(obj, "status", "conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _condition_true(obj: Obj, kind: str) -> bool:
    found = condition(obj, kind)
    return found is not None and found.get("status") == "True"


# ---- pods ---------------------------------------------------------------------------------------

def pod_ready(pod: Obj, _: datetime | None = None) -> str:
    statuses = _get(pod, "status", "containerStatuses") or []
    total = len(_get(pod, "spec", "containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def pod_status(pod: Obj, _: datetime | None = None) -> str:
    """The one-word status kubectl shows: a container's waiting/terminated reason wins over the phase."""
    if _get(pod, "metadata", "deletionTimestamp"):
        return "Terminating"
    reason = _get(pod, "status", "reason") or _get(pod, "status", "phase") or "Pending"
    for status in _get(pod, "status", "containerStatuses") or []:
        state = status.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            return str(state["waiting"]["reason"])
        terminated = state.get("terminated")
        if terminated and reason == "Running":
            return str(terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}")
    return str(reason)


def pod_restarts(pod: Obj, _: datetime | None = None) -> str:
    return str(sum(int(s.get("restartCount") or 0) for s in _get(pod, "status", "containerStatuses") or []))


# ---- deployments, jobs, nodes, events ----------------------------------------------------------

def _deployment_ready(obj: Obj, _: datetime) -> str:
    return f"{_count(_get(obj, 'status', 'readyReplicas'))}/{_count(_get(obj, 'spec', 'replicas'))}"


def job_status(job: Obj) -> str:
    if _condition_true(job, "Complete"):
        return "Complete"
    if _condition_true(job, "Failed"):
        return "Failed"
    if _get(job, "spec", "suspend"):
        return "Suspended"
    return "Running"


def _job_completions(job: Obj, _: datetime) -> str:
    completions = _get(job, "spec", "completions")
    succeeded = _count(_get(job, "status", "succeeded"))
    if completions is None:
        parallelism = _get(job, "spec", "parallelism")
        return f"{succeeded}/1 of {parallelism}" if parallelism not in (None, 1) else f"{succeeded}/1"
    return f"{succeeded}/{completions}"


def _job_duration(job: Obj, now: datetime) -> str:
    start = parse_time(_get(job, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(_get(job, "status", "completionTime")) or now
    return human_duration((end - start).total_seconds())


def node_status(node: Obj, _: datetime | None = None) -> str:
    ready = condition(node, "Ready")
    text = "Unknown" if ready is None else ("Ready" if ready.get("status") == "True" else "NotReady")
    if _get(node, "spec", "unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(node: Obj, _: datetime) -> str:
    prefix = "node-role.kubernetes.io/"
    labels = _get(node, "metadata", "labels") or {}
    roles = sorted(key[len(prefix):] for key in labels if key.startswith(prefix))
    return ",".join(roles) or NONE


def _node_resource(name: str) -> Cell:
    def cell(node: Obj, _: datetime) -> str:
        value = (_get(node, "status", "allocatable") or {}).get(name)
        if value is None:
            value = (_get(node, "status", "capacity") or {}).get(name)
        return NONE if value is None else str(value)
    return cell


def event_object(event: Obj) -> str:
    involved = event.get("involvedObject") or {}
    return f"{str(involved.get('kind') or '').lower()}/{involved.get('name') or ''}"


def event_time(event: Obj) -> str | None:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
               or _get(event, "metadata", "creationTimestamp") or "") or None


register_columns("Pod", [
    Column("READY", pod_ready),
    Column("STATUS", pod_status),
    Column("RESTARTS", pod_restarts),
    Column("AGE", age),
    Column("IP", lambda o, now: _get(o, "status", "podIP") or NONE, wide_only=True),
    Column("NODE", lambda o, now: _get(o, "spec", "nodeName") or NONE, wide_only=True),
])
register_columns("Deployment", [
    Column("READY", _deployment_ready),
    Column("UP-TO-DATE", lambda o, now: _count(_get(o, "status", "updatedReplicas"))),
    Column("AVAILABLE", lambda o, now: _count(_get(o, "status", "availableReplicas"))),
    Column("AGE", age),
])
register_columns("Job", [
    Column("STATUS", lambda o, now: job_status(o)),
    Column("COMPLETIONS", _job_completions),
    Column("DURATION", _job_duration),
    Column("AGE", age),
])
register_columns("Node", [
    Column("STATUS", node_status),
    Column("ROLES", _node_roles),
    Column("AGE", age),
    Column("VERSION", lambda o, now: _get(o, "status", "nodeInfo", "kubeletVersion") or NONE),
    Column("CPU", _node_resource("cpu"), wide_only=True),
    Column("MEMORY", _node_resource("memory"), wide_only=True),
])
register_columns("Event", [
    Column("LAST SEEN", lambda o, now: since(event_time(o), now)),
    Column("TYPE", lambda o, now: str(o.get("type") or "")),
    Column("REASON", lambda o, now: str(o.get("reason") or "")),
    Column("OBJECT", lambda o, now: event_object(o)),
    Column("MESSAGE", lambda o, now: str(o.get("message") or "").replace("\n", " ")),
], show_name=False)
register_columns("Namespace", [
    Column("STATUS", lambda o, now: _get(o, "status", "phase") or "Active"),
    Column("AGE", age),
])
register_columns("ConfigMap", [
    Column("DATA", lambda o, now: str(len(o.get("data") or {}) + len(o.get("binaryData") or {}))),
    Column("AGE", age),
])
register_columns("Secret", [
    Column("TYPE", lambda o, now: str(o.get("type") or "Opaque")),
    Column("DATA", lambda o, now: str(len(o.get("data") or {}))),
    Column("AGE", age),
])


# ---- kueue.x-k8s.io -------------------------------------------------------------------------------

_POSITION = re.compile(r"^position ([0-9]+) in ClusterQueue")


def _workload_admitted_by(obj: Obj, _: datetime) -> str:
    if not _condition_true(obj, "QuotaReserved"):
        return ""
    return str(_get(obj, "status", "admission", "clusterQueue") or "")


def _workload_position(obj: Obj, _: datetime) -> str:
    found = condition(obj, "QuotaReserved")
    if found is None or found.get("status") == "True":
        return ""
    match = _POSITION.match(str(found.get("message") or ""))
    return match.group(1) if match else ""


def _workload_reason(obj: Obj, _: datetime) -> str:
    for kind in ("Finished", "Evicted"):
        found = condition(obj, kind)
        if found is not None and found.get("status") == "True":
            return f"{kind}: {found.get('reason') or ''}".rstrip(": ")
    found = condition(obj, "QuotaReserved")
    if found is None:
        return "Pending"
    return "Admitted" if found.get("status") == "True" else str(found.get("reason") or "Pending")


register_columns("Workload", [
    Column("QUEUE", lambda o, _: str(_get(o, "spec", "queueName") or "")),
    Column("ADMITTED BY", _workload_admitted_by),
    Column("POSITION", _workload_position),
    Column("REASON", _workload_reason),
    Column("AGE", lambda o, now: age(o, now)),
])
register_columns("ClusterQueue", [
    Column("COHORT", lambda o, _: str(_get(o, "spec", "cohortName") or _get(o, "spec", "cohort") or "")),
    Column("STRATEGY", lambda o, _: str(_get(o, "spec", "queueingStrategy") or "BestEffortFIFO")),
    Column("PENDING WORKLOADS", lambda o, _: str(_get(o, "status", "pendingWorkloads") or 0)),
    Column("ADMITTED WORKLOADS", lambda o, _: str(_get(o, "status", "admittedWorkloads") or 0)),
    Column("AGE", lambda o, now: age(o, now)),
])
register_columns("LocalQueue", [
    Column("CLUSTERQUEUE", lambda o, _: str(_get(o, "spec", "clusterQueue") or "")),
    Column("PENDING WORKLOADS", lambda o, _: str(_get(o, "status", "pendingWorkloads") or 0)),
    Column("ADMITTED WORKLOADS", lambda o, _: str(_get(o, "status", "admittedWorkloads") or 0)),
    Column("AGE", lambda o, now: age(o, now)),
])


# ---- rendering ----------------------------------------------------------------------------------

def table_rows(rt: ResourceType, items: Sequence[Obj], *, wide: bool, all_namespaces: bool,
               now: datetime | None = None) -> tuple[list[str], list[list[str]]]:
    now = now or datetime.now(UTC)
    spec = columns_for(rt.kind)
    columns = [c for c in spec.columns if wide or not c.wide_only]
    headers = [c.header for c in columns]
    if spec.show_name:
        headers.insert(0, "NAME")
    if all_namespaces and rt.namespaced:
        headers.insert(0, "NAMESPACE")
    rows = []
    for obj in items:
        row = [column.cell(obj, now) for column in columns]
        if spec.show_name:
            row.insert(0, str(_get(obj, "metadata", "name") or ""))
        if all_namespaces and rt.namespaced:
            row.insert(0, str(_get(obj, "metadata", "namespace") or ""))
        rows.append(row)
    return headers, rows


def render_table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]]) -> str:
    """Columns separated by three spaces, no box, no colour; no trailing blanks."""
    table = Table(box=None, show_header=headers is not None, header_style="", pad_edge=False,
                  padding=(0, 3, 0, 0), show_edge=False)
    width = len(headers) if headers is not None else max((len(r) for r in rows), default=0)
    for index in range(width):
        table.add_column(headers[index] if headers is not None else "", no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*row)
    console = Console(width=100_000, no_color=True, highlight=False, emoji=False, markup=False,
                      force_terminal=False, soft_wrap=False)
    with console.capture() as capture:
        console.print(table)
    return "\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n"


def resource_ref(rt: ResourceType, name: str) -> str:
    """How kubectl names an object in messages: ``deployment.apps/web``, ``pod/x``."""
    kind = rt.singular + (f".{rt.group}" if rt.group else "")
    return f"{kind}/{name}"
