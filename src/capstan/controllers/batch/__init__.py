"""Kueue-compatible batch queueing on any Store: Job and pod-group integrations, the admission loop
(``capstan.core.scheduling.queueing`` decides, these controllers write), queue status, metrics.

``add_batch_controllers`` wires them onto a Manager; docs/batch.md is the user guide.
"""

from __future__ import annotations

from collections.abc import Callable

from capstan.controllers.batch.admission import AdmissionController, AdmissionOptions
from capstan.controllers.batch.validation import install_admission_hooks
from capstan.controllers.batch.workload_job import JobIntegration
from capstan.controllers.batch.workload_pods import PodGroupIntegration
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Manager
from capstan.store.base import Store


def add_batch_controllers(manager: Manager, informers: InformerFactory, store: Store,
                          recorder: Callable[[str], EventRecorder], *,
                          options: AdmissionOptions | None = None) -> AdmissionController:
    """Install the store hooks and add the batch controllers to ``manager``; returns the admission loop."""
    install_admission_hooks(store)
    admission = AdmissionController(informers, store, recorder("kueue-admission"), options=options)
    manager.add(JobIntegration(informers, store, recorder("kueue-job-controller")))
    manager.add(PodGroupIntegration(informers, store, recorder("kueue-pod-controller")))
    manager.add(admission)
    return admission


__all__ = ["AdmissionController", "AdmissionOptions", "JobIntegration", "PodGroupIntegration",
           "add_batch_controllers", "install_admission_hooks"]
