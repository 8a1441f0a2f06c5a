"""A probe controller for leader-election tests, and a process that runs the real operator with it.

``ActionRecorder`` acts all the time it runs: every ``interval`` seconds it appends "<identity> <unix time>"
to the ``log`` key of a ConfigMap, by read-modify-write with the resourceVersion (a Conflict is retried).
The log is therefore the commit order of every action of every replica, and shows at a glance whether
two replicas ever acted in the same period. It never asks whether it still leads: stopping it is the
leader elector's job.

``python -m tests.k8s.operator_probe KUBECONFIG NAMESPACE LEASE IDENTITY CONFIGMAP`` runs
``capstan.server.operator.run_operator_process`` (the code behind ``capstan operator``) with only this
controller, a free metrics port and the default timings (15 s / 10 s / 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from pathlib import Path

from capstan.api.errors import AlreadyExistsError, ConflictError, NotFoundError
from capstan.store.base import Store


class ActionRecorder:
    def __init__(self, store: Store, namespace: str, configmap: str, identity: str,
                 interval: float = 0.2) -> None:
        self.store = store
        self.namespace = namespace
        self.configmap = configmap
        self.identity = identity
        self.interval = interval
        self._configmaps = store.registry.lookup("configmaps")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.act()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def act(self) -> None:
        while True:
            try:
                current = await self.store.get(self._configmaps, self.configmap, self.namespace)
            except NotFoundError:
                current = None
            line = f"{self.identity} {time.time():.6f}\n"
            try:
                if current is None:
                    await self.store.create({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": self.configmap, "namespace": self.namespace},
                        "data": {"log": line}})
                else:
                    data = dict(current.get("data") or {})
                    data["log"] = data.get("log", "") + line
                    await self.store.update({**current, "data": data})
                return
            except (ConflictError, AlreadyExistsError):
                continue


def parse_log(text: str) -> list[tuple[str, float]]:
    """(identity, unix time) of every action, in commit order."""
    actions = []
    for line in text.splitlines():
        identity, _, stamp = line.partition(" ")
        actions.append((identity, float(stamp)))
    return actions


def assert_one_actor_at_a_time(log: list[tuple[str, float]]) -> None:
    """Each identity's actions form one unbroken run, and each run ends before the next begins."""
    runs: list[tuple[str, float, float]] = []
    for identity, stamp in log:
        if runs and runs[-1][0] == identity:
            runs[-1] = (identity, runs[-1][1], stamp)
        else:
            assert identity not in [run[0] for run in runs], f"{identity} acted again after a handover: {runs}"
            runs.append((identity, stamp, stamp))
    for before, after in itertools.pairwise(runs):
        assert before[2] < after[1], f"{before[0]} acted until {before[2]}, after {after[0]} began at {after[1]}"


def main(argv: list[str]) -> int:
    from capstan.controllers.operator import ControllerSpec
    from capstan.server.operator import OperatorSettings, run_operator_process

    kubeconfig, namespace, lease, identity, configmap = argv
    probe = ControllerSpec("probe", lambda c: c.manager.add(ActionRecorder(c.store, namespace, configmap, identity)))
    settings = OperatorSettings(kubeconfig=Path(kubeconfig), namespace=namespace, lease_name=lease,
                                identity=identity, metrics_host="127.0.0.1", metrics_port=0,
                                install_crds=True, controllers=(probe,))
    return run_operator_process(settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
