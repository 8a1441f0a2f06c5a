"""Trigger type -> scaler class. Modules register themselves with ``@register("redis")``;
``load_builtin_scalers`` imports every module shipped in this package once."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from capstan.scalers.base import Scaler, ScalerConfig, ScalerConfigError

_SCALERS: dict[str, type[Scaler]] = {}
_loaded = False


def register(*trigger_types: str) -> Callable[[type[Scaler]], type[Scaler]]:
    def decorate(cls: type[Scaler]) -> type[Scaler]:
        for trigger_type in trigger_types:
            _SCALERS[trigger_type] = cls
        return cls

    return decorate


def load_builtin_scalers() -> None:
    """Import every scaler module of this package (each registers itself)."""
    global _loaded
    if _loaded:
        return
    import capstan.scalers as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in ("base", "registry"):
            importlib.import_module(f"capstan.scalers.{module.name}")
    _loaded = True


def known_trigger_types() -> list[str]:
    load_builtin_scalers()
    return sorted(_SCALERS)


def build_scaler(config: ScalerConfig) -> Scaler:
    """A scaler for the trigger, or ScalerConfigError naming what is wrong (unknown type,
    missing or malformed metadata)."""
    load_builtin_scalers()
    cls = _SCALERS.get(config.trigger_type)
    if cls is None:
        raise ScalerConfigError(
            f'triggers[{config.trigger_index}].type: unknown trigger type "{config.trigger_type}"; '
            f"supported: {', '.join(sorted(_SCALERS))}")
    return cls(config)
