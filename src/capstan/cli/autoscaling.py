"""The CLI's KEDA bits: ``capstan get scaledobjects`` / ``scaledjobs`` columns (as kubectl shows
KEDA's), ``capstan describe scaledobject`` (per-trigger value, target, activity, health and the
last decision with its reason), and ``capstan scaledobject explain NAME --value trigger=V``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from capstan.api.errors import ApiError
from capstan.cli import describe as describe_module
from capstan.cli import printers
from capstan.cli.client import ApiClient, UnreachableError
from capstan.cli.config import ConfigError, resolve_config
from capstan.cli.printers import NONE, Column, age, condition, register_columns

Obj = dict[str, Any]
app = typer.Typer(help="KEDA ScaledObject tools.", no_args_is_help=True)


# ---- get columns -----------------------------------------------------------------------------------

def _status_of(obj: Obj, kind: str) -> str:
    found = condition(obj, kind)
    return str(found.get("status")) if found else "Unknown"


def _spec(obj: Obj, *path: str) -> Any:
    current: Any = obj.get("spec") or {}
    for key in path:
        current = current.get(key) if isinstance(current, dict) else None
    return current


def _triggers(obj: Obj, _: datetime) -> str:
    return ",".join(str(t.get("type")) for t in _spec(obj, "triggers") or []) or NONE


def _paused(obj: Obj, _: datetime) -> str:
    found = condition(obj, "Paused")
    return str(found.get("status")) if found else "Unknown"


register_columns("ScaledObject", [
    Column("SCALETARGETKIND", lambda o, now: str((o.get("status") or {}).get("scaleTargetKind") or "")),
    Column("SCALETARGETNAME", lambda o, now: str(_spec(o, "scaleTargetRef", "name") or "")),
    Column("MIN", lambda o, now: str(_spec(o, "minReplicaCount") or 0)),
    Column("MAX", lambda o, now: str(_spec(o, "maxReplicaCount") if _spec(o, "maxReplicaCount") is not None
                                     else 100)),
    Column("READY", lambda o, now: _status_of(o, "Ready")),
    Column("ACTIVE", lambda o, now: _status_of(o, "Active")),
    Column("FALLBACK", lambda o, now: _status_of(o, "Fallback")),
    Column("PAUSED", _paused),
    Column("TRIGGERS", _triggers),
    Column("AGE", age),
])
register_columns("ScaledJob", [
    Column("MIN", lambda o, now: str(_spec(o, "minReplicaCount") or 0)),
    Column("MAX", lambda o, now: str(_spec(o, "maxReplicaCount") if _spec(o, "maxReplicaCount") is not None
                                     else 100)),
    Column("READY", lambda o, now: _status_of(o, "Ready")),
    Column("ACTIVE", lambda o, now: _status_of(o, "Active")),
    Column("PAUSED", _paused),
    Column("TRIGGERS", _triggers),
    Column("AGE", age),
])


# ---- describe ------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return NONE if value is None else str(value)


def _trigger_rows(status: Obj) -> list[list[str]]:
    health = status.get("health") or {}
    rows = []
    for row in (status.get("capstanLastDecision") or {}).get("triggers") or []:
        metric = row.get("metricName", "")
        failures = (health.get(metric) or {}).get("numberOfFailures", 0)
        state = (health.get(metric) or {}).get("status", "Happy")
        value = (row.get("error") and f"error: {row['error']}") or _fmt(row.get("value"))
        rows.append([str(row.get("name") or ""), str(row.get("type") or ""), metric, value,
                     f"{_fmt(row.get('target'))} ({row.get('metricType', 'AverageValue')})",
                     _fmt(row.get("activationTarget")), "yes" if row.get("active") else "no",
                     f"{state} ({failures} failures)" if failures else state])
    return rows


def describe_scaled_object(lines: list[str], obj: Obj) -> None:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    describe_module._field(lines, "Scale Target", f"{ref.get('kind') or 'Deployment'}/{ref.get('name')}")
    describe_module._field(lines, "Replicas", f"min {spec.get('minReplicaCount', 0)}, max "
                           f"{spec.get('maxReplicaCount', 100)}"
                           + (f", idle {spec['idleReplicaCount']}" if spec.get("idleReplicaCount") is not None
                              else ""))
    describe_module._field(lines, "Polling Interval", f"{spec.get('pollingInterval', 30)}s")
    describe_module._field(lines, "Cooldown Period", f"{spec.get('cooldownPeriod', 300)}s")
    describe_module._field(lines, "Last Active Time", status.get("lastActiveTime"))
    describe_module._field(lines, "Original Replicas", status.get("originalReplicaCount"))
    if status.get("pausedReplicaCount") is not None:
        describe_module._field(lines, "Paused Replicas", status["pausedReplicaCount"])
    rows = _trigger_rows(status)
    if rows:
        lines.append("Triggers:")
        table = printers.render_table(["Name", "Type", "Metric", "Value", "Target", "Activation", "Active",
                                       "Health"], rows)
        lines.extend("  " + line for line in table.splitlines())
    else:
        describe_module._yaml_block(lines, "Triggers", spec.get("triggers"))
    decision = status.get("capstanLastDecision") or {}
    if decision:
        lines.append("Last Decision:")
        describe_module._field(lines, "Time", decision.get("time"), 1)
        describe_module._field(lines, "Action", decision.get("action"), 1)
        describe_module._field(lines, "Replicas", f"{decision.get('currentReplicas')} -> "
                               f"{decision.get('desiredReplicas')}", 1)
        describe_module._field(lines, "Why", decision.get("reason"), 1)
    describe_module._conditions(lines, obj)


describe_module.DESCRIBERS["ScaledObject"] = describe_scaled_object


# ---- explain ---------------------------------------------------------------------------------------

def parse_values(values: list[str]) -> dict[str, float]:
    parsed = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected trigger=value, got {item!r}", param_hint="--value")
        try:
            parsed[name] = float(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a number", param_hint="--value") from None
    return parsed


def render_explanation(answer: Obj) -> str:
    lines = [f"Dry run: {answer.get('currentReplicas')} -> {answer.get('desiredReplicas')} replicas "
             f"({answer.get('action')})", f"Why: {answer.get('reason')}"]
    rows = [[str(t.get("name") or ""), t.get("metricName", ""),
             (t.get("error") and f"error: {t['error']}") or _fmt(t.get("value")), _fmt(t.get("target")),
             _fmt(t.get("activationTarget")), "yes" if t.get("active") else "no"]
            for t in answer.get("triggers") or []]
    if rows:
        lines.append("Triggers:")
        table = printers.render_table(["Name", "Metric", "Value", "Target", "Activation", "Active"], rows)
        lines.extend("  " + line for line in table.splitlines())
    return "\n".join(lines) + "\n"


@app.command("explain")
def explain(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The ScaledObject.")],
    value: Annotated[list[str] | None, typer.Option("--value", help="trigger=V (a trigger or metric name); "
                                                    "others keep the last value read.")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: default).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="json for the raw answer.")] = "",
    server: Annotated[str | None, typer.Option("--server", show_default=False)] = None,
    token: Annotated[str | None, typer.Option("--token", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", show_default=False)] = None,
) -> None:
    """What the ScaledObject would do with these metric values (nothing is changed)."""
    import json

    defaults: dict[str, Any] = ctx.obj or {}
    try:
        values = parse_values(value or [])
        config = resolve_config(server=server or defaults.get("server"), token=token or defaults.get("token"),
                                data_dir=data_dir or defaults.get("data_dir"))
        with ApiClient.from_config(config) as client:
            path = (f"/apis/keda.sh/v1alpha1/namespaces/{namespace or 'default'}/scaledobjects/{name}/explain")
            answer = client.request("POST", path, body={"values": values})
    except ApiError as exc:
        typer.echo(f"Error from server ({exc.reason}): {exc.message}", err=True)
        raise typer.Exit(1) from None
    except (ConfigError, UnreachableError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(answer, indent=2) if output == "json" else render_explanation(answer), nl=output == "json")
