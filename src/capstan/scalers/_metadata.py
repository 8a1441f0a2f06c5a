"""Declarative trigger metadata, as KEDA's scalers declare it.

Each field names where it may come from, in KEDA's lookup order: the trigger's ``metadata``,
then the TriggerAuthentication's parameters, then the scale target's environment through
``<name>FromEnv``. Errors name the trigger and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from capstan.scalers.base import ScalerConfig, ScalerConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    metadata: bool = True
    auth: bool = False
    env: bool = True


METADATA = Source()
AUTH_OR_METADATA = Source(metadata=True, auth=True, env=True)
AUTH_ONLY = Source(metadata=False, auth=True, env=False)


def raw(config: ScalerConfig, name: str, source: Source = METADATA) -> str | None:
    """The raw string for ``name`` in KEDA's lookup order, or None when absent or empty."""
    if source.auth and config.auth_params.get(name):
        return config.auth_params[name]
    if source.metadata and config.metadata.get(name):
        return config.metadata[name]
    if source.env:
        env_name = config.metadata.get(f"{name}FromEnv")
        if env_name:
            value = config.resolved_env.get(env_name)
            if value is None:
                raise ScalerConfigError(
                    f"{config.label}: metadata.{name}FromEnv names {env_name!r}, "
                    "which is not set in the scale target's containers")
            return value
    return None


def required(config: ScalerConfig, name: str, source: Source = METADATA) -> str:
    value = raw(config, name, source)
    if value is None:
        raise ScalerConfigError(f"{config.label}: metadata.{name} is required")
    return value


def _converted(config: ScalerConfig, name: str, default: T | None, source: Source, kind: Callable[[str], T],
               what: str) -> T:
    """``name`` converted by ``kind``; ``default`` when absent (then required when ``default`` is None)."""
    value = raw(config, name, source)
    if value is None:
        if default is None:
            raise ScalerConfigError(f"{config.label}: metadata.{name} is required")
        return default
    try:
        return kind(value)
    except ValueError as exc:
        raise ScalerConfigError(f"{config.label}: metadata.{name}: {value!r} is not {what}") from exc


def number(config: ScalerConfig, name: str, default: float | None = None, source: Source = METADATA) -> float:
    return _converted(config, name, default, source, float, "a number")


def integer(config: ScalerConfig, name: str, default: int | None = None, source: Source = METADATA) -> int:
    return _converted(config, name, default, source, int, "an integer")


def boolean(config: ScalerConfig, name: str, default: bool = False, source: Source = METADATA) -> bool:
    value = raw(config, name, source)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ScalerConfigError(f"{config.label}: metadata.{name}: {value!r} is not true or false")


def choice(config: ScalerConfig, name: str, options: tuple[str, ...], default: str | None = None,
           source: Source = METADATA) -> str:
    value = raw(config, name, source)
    if value is None:
        if default is None:
            raise ScalerConfigError(f"{config.label}: metadata.{name} is required (one of {', '.join(options)})")
        return default
    if value not in options:
        raise ScalerConfigError(f"{config.label}: metadata.{name}: {value!r} is not one of {', '.join(options)}")
    return value


def metric_name(config: ScalerConfig, *parts: str) -> str:
    """KEDA's metric naming: ``s{index}-{type}-{parts}``, sanitised to a metric-safe name."""
    detail = "-".join(p for p in parts if p)
    base = f"s{config.trigger_index}-{config.trigger_type}" + (f"-{detail}" if detail else "")
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in base)
