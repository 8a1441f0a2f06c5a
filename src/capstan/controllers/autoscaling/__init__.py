"""The KEDA controllers: ScaledObject and ScaledJob reconcilers, trigger authentication, the
scaler cache, the poll scheduler, explanations and metrics.

``add_autoscaling(manager, informers, store, recorder_for, options)`` wires both controllers
into a Manager (embedded mode and the operator alike).
"""

from __future__ import annotations

from collections.abc import Callable

from capstan.controllers.autoscaling.common import AutoscalingOptions
from capstan.controllers.autoscaling.scaledjob import ScaledJobController
from capstan.controllers.autoscaling.scaledobject import ScaledObjectController
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Manager
from capstan.store.base import Store

__all__ = ["AutoscalingOptions", "ScaledJobController", "ScaledObjectController", "add_autoscaling"]


def add_autoscaling(manager: Manager, informers: InformerFactory, store: Store,
                    recorder: Callable[[str], EventRecorder],
                    options: AutoscalingOptions | None = None) -> tuple[ScaledObjectController, ScaledJobController]:
    """Add the ScaledObject and ScaledJob controllers (and the one-ScaledObject-per-target
    validator where the store takes validators)."""
    options = options or AutoscalingOptions()
    scaled_objects = ScaledObjectController(informers, store, recorder("keda-operator"), options=options)
    scaled_objects.install_validator()
    scaled_jobs = ScaledJobController(informers, store, recorder("keda-operator"), options=options)
    manager.add(scaled_objects)
    manager.add(scaled_jobs)
    return scaled_objects, scaled_jobs
