"""What the embedded Deployment and Job controllers share: they own Pods, read their owner and
its pods from the store (not the informer cache, which may lag behind their own writes), delete
pods with a uid precondition, and write status only when it changed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from capstan.api.base import KubeModel
from capstan.api.errors import ConflictError, NotFoundError
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Controller, controller_owner
from capstan.core.workloads.deployment import PlannedEvent
from capstan.core.workloads.pods import PodRef, is_controlled_by
from capstan.store.base import Obj, Store


class PodOwnerController(Controller):
    """Base of controllers whose objects (``owner_plural``) control Pods."""

    owner_plural: str = ""
    owner_kind: str = ""
    status_model: type[KubeModel]

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 clock: Callable[[], datetime] = utcnow, workers: int = 2) -> None:
        super().__init__(informers, workers=workers)
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.owner_rt = store.registry.lookup(self.owner_plural)
        self.pods_rt = store.registry.lookup("pods")
        self.watch(informers.informer(self.owner_rt))
        self.watch(informers.informer(self.pods_rt), controller_owner(self.owner_kind))

    async def load_owner(self, namespace: str, name: str) -> Obj | None:
        """The owner, or None when it is gone or being deleted (its pods go with it: the
        store cascades, and the garbage collector is the safety net)."""
        try:
            owner = await self.store.get(self.owner_rt, name, namespace)
        except NotFoundError:
            return None
        return None if owner["metadata"].get("deletionTimestamp") else owner

    async def controlled_pods(self, owner: Obj, label_selector: str) -> list[Obj]:
        meta = owner["metadata"]
        listed = await self.store.list(self.pods_rt, meta.get("namespace"), label_selector=label_selector)
        return [pod for pod in listed.items if is_controlled_by(pod, meta["uid"])]

    async def delete_pods(self, namespace: str, refs: Iterable[PodRef]) -> None:
        for ref in refs:
            # Already gone, or the name now belongs to another pod: nothing to do either way.
            with contextlib.suppress(NotFoundError, ConflictError):
                await self.store.delete(self.pods_rt, ref.name, namespace, uid=ref.uid)

    async def record_events(self, owner: Obj, events: Iterable[PlannedEvent]) -> None:
        for event in events:
            await self.recorder.record(owner, "Warning" if event.type == "Warning" else "Normal",
                                       event.reason, event.message)

    async def write_status(self, owner: Obj, status: dict[str, Any]) -> None:
        wanted = self.status_model.model_validate(status).to_wire()
        if wanted == (owner.get("status") or {}):
            return
        await self.store.update_status({**owner, "status": wanted})
