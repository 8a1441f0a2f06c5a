"""The one-node scheduler of embedded mode.

Every change of a pod or of the node triggers one scheduling pass (a single work-queue key, so
passes never overlap). A pass places the pending pods in priority-then-age order against the
node's allocatable minus what bound, non-terminal pods request. Pods this scheduler bound but
that the informer cache does not show bound yet are "assumed" and counted as used, as in
kube-scheduler: a burst of pods never overcommits the node however fast it arrives.

The pending pods and the requests of the pods on the node are kept up to date by an informer
handler (each pod's requests parsed once per generation), so a pass costs what is pending, not
the number of pods in the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from capstan.api.errors import ConflictError, NotFoundError
from capstan.controllers.events import EventRecorder, rfc3339, utcnow
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Controller, ObjectKey, Result
from capstan.core.scheduling import (
    plan_bindings,
    pod_is_gated,
    pod_is_terminal,
    unschedulable_message,
)
from capstan.core.scheduling.conditions import find_condition, set_condition
from capstan.core.scheduling.resources import ResourceList, add, pod_requests
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

SCHEDULER_NAMES = ("default-scheduler", "capstan")


def is_ours(pod: Obj) -> bool:
    name = (pod.get("spec") or {}).get("schedulerName")
    return not name or name in SCHEDULER_NAMES


def is_pending(pod: Obj) -> bool:
    return (not (pod.get("spec") or {}).get("nodeName") and not pod["metadata"].get("deletionTimestamp")
            and not pod_is_terminal(pod) and not pod_is_gated(pod) and is_ours(pod))


class Scheduler(Controller):
    name = "scheduler"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *, node_name: str,
                 clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(informers, workers=1)
        self.store = store
        self.recorder = recorder
        self.node_name = node_name
        self.clock = clock
        self._pods_rt = store.registry.lookup("pods")
        self.pods = informers.informer(self._pods_rt)
        self.nodes = informers.informer(store.registry.lookup("nodes"))
        self._key: ObjectKey = ("", node_name)
        self._assumed: dict[str, Obj] = {}  # uid -> pod as we bound it
        # Kept by _track from the informer: per pod uid in the cache, whether it is bound (to any
        # node); the pods waiting to be placed; the requests of non-terminal pods on our node.
        self._bound: dict[str, bool] = {}
        self._pending: dict[str, Obj] = {}
        self._on_node: dict[str, ResourceList] = {}
        self._requests: dict[str, tuple[object, ResourceList]] = {}  # uid -> (generation, requests)
        self.pods.add_handler(self._track)
        self.watch(self.pods, lambda _obj: [self._key])
        self.watch(self.nodes, lambda obj: [self._key] if obj["metadata"]["name"] == node_name else [])

    async def reconcile(self, key: ObjectKey) -> Result | None:
        node = self.nodes.get(self.node_name)
        if node is None:
            return None  # not registered yet; its creation triggers a pass
        self._forget_confirmed()
        used: ResourceList = {}
        for requests in self._on_node.values():
            used = add(used, requests)
        for uid, pod in self._assumed.items():
            used = add(used, self._pod_requests(uid, pod))
        pending = [p for uid, p in self._pending.items() if uid not in self._assumed]
        binds: list[Awaitable[bool]] = []
        others: list[Awaitable[None]] = []
        for placement in plan_bindings(pending, node, used):
            pod = dict(placement.pod)
            if placement.result.fits:
                binds.append(self._bind(pod))
            else:
                others.append(self._mark_unschedulable(pod, unschedulable_message([placement.result])))
        # The pass's writes go out together (each pod is written by one of them; capacity was
        # planned above), so a burst of pods costs a few store commits, not a few per pod.
        bound = await asyncio.gather(*binds, *others)
        retry = not all(bound[:len(binds)])
        return Result(requeue_after=1.0) if retry else None

    def _track(self, change: str, pod: Obj, old: Obj | None) -> None:
        uid = pod["metadata"]["uid"]
        if change == "DELETED":
            for index in (self._bound, self._pending, self._on_node, self._requests):
                index.pop(uid, None)
            return
        node = (pod.get("spec") or {}).get("nodeName")
        self._bound[uid] = bool(node)
        if node == self.node_name and not pod_is_terminal(pod):
            self._on_node[uid] = self._pod_requests(uid, pod)
        else:
            self._on_node.pop(uid, None)
        if is_pending(pod):
            self._pending[uid] = pod
        else:
            self._pending.pop(uid, None)

    def _pod_requests(self, uid: str, pod: Obj) -> ResourceList:
        """A pod's requests, parsed once per generation (requests are spec)."""
        generation = pod["metadata"].get("generation")
        cached = self._requests.get(uid)
        if cached is not None and generation is not None and cached[0] == generation:
            return cached[1]
        requests = pod_requests(pod)
        if uid in self._bound:  # only pods in the cache are remembered (their deletion forgets them)
            self._requests[uid] = (generation, requests)
        return requests

    def _forget_confirmed(self) -> None:
        """Drop assumptions the cache now confirms (pod shows bound) or makes moot (pod gone)."""
        for uid in list(self._assumed):
            if self._bound.get(uid, True):
                del self._assumed[uid]

    async def _bind(self, pod: Obj) -> bool:
        """Bind: PodScheduled=True in status, then spec.nodeName. False when it must be retried."""
        meta = pod["metadata"]
        assumed = {**pod, "spec": {**pod["spec"], "nodeName": self.node_name}}
        self._assumed[meta["uid"]] = assumed
        try:
            status = dict(pod.get("status") or {})
            status["phase"] = status.get("phase") or "Pending"
            status["conditions"] = set_condition(status.get("conditions"), "PodScheduled", "True",
                                                 rfc3339(self.clock()))
            written = await self.store.update_status({**pod, "status": status})
            await self.store.patch(self._pods_rt, meta["name"], meta.get("namespace"), {
                "metadata": {"resourceVersion": written["metadata"]["resourceVersion"], "uid": meta["uid"]},
                "spec": {"nodeName": self.node_name}})
        except (ConflictError, NotFoundError) as exc:
            # Someone changed or deleted it in between: the next pass decides again.
            self._assumed.pop(meta["uid"], None)
            log.debug("binding %s/%s deferred: %s", meta.get("namespace"), meta["name"], exc)
            return False
        await self.recorder.record(assumed, "Normal", "Scheduled",
                                   f"Successfully assigned {meta.get('namespace')}/{meta['name']} "
                                   f"to {self.node_name}")
        return True

    async def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        status: dict[str, Any] = dict(pod.get("status") or {})
        current = find_condition(status.get("conditions"), "PodScheduled")
        if current is not None and (current.get("status"), current.get("reason"), current.get("message")) == (
                "False", "Unschedulable", message):
            return  # already said so: no write, no repeated Event
        status["phase"] = status.get("phase") or "Pending"
        status["conditions"] = set_condition(status.get("conditions"), "PodScheduled", "False",
                                             rfc3339(self.clock()), reason="Unschedulable", message=message)
        try:
            await self.store.update_status({**pod, "status": status})
        except (ConflictError, NotFoundError):
            return  # a newer version triggers another pass
        await self.recorder.record(pod, "Warning", "FailedScheduling", message)
