"""Autoscaling end to end against each real broker: the common scenario and its checks.

Each broker test (tests/e2e/test_autoscaling_<broker>_e2e.py) creates its own queue / table / topic
/ stream, a worker Deployment at 0 replicas whose container runs one of the scripts in
tests/e2e/workers/, and a ScaledObject; then ``run_scaling`` publishes the backlog and follows the
Deployment from a watch:

* the replica trajectory (every ``spec.replicas`` value, in order) must be 0, 1 (activation), a
  strictly rising sequence up to exactly the peak the HPA rules give, then ``peak, 1, 0`` — the
  default scale-down policy walks N -> 1 in one step after the cooldown, the next pass goes to 0 (see
  docs/autoscaling-semantics.md) — and never above the peak;
* every message is processed (the workers' shared journal, see workers/_worker.py);
* every worker that started left on SIGTERM through its own shutdown path.

Times are recorded for the report but never asserted.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.autoscaling_kit import ReplicaTrajectory
from tests.e2e.harness import CapstanServer, wait_for

WORKERS = Path(__file__).resolve().parent / "workers"
SCALE_TIMEOUT = 90.0  # "eventually" on a loaded 2-core machine; the expected times are a few seconds


class _Trajectory(ReplicaTrajectory):
    """ReplicaTrajectory that does not wait for its watch thread on exit: the thread blocks in a read
    until the next event and would hold the test for its 10 s join timeout. The thread is a daemon and
    ends when its stream does (at the latest when the server stops)."""

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def hpa_peak(backlog: float, target: float, maximum: int) -> int:
    """Replicas for an AverageValue metric: ceil(value / target), within maxReplicaCount.
    (From 1 replica the legacy scale-up limit max(2 x 1, 4) allows up to 4 in one step; from 2, 4.)"""
    return min(maximum, math.ceil(backlog / target))


def script_deployment(name: str, worker: str, env: dict[str, str], *, grace_seconds: int = 5) -> dict[str, Any]:
    """A Deployment at 0 replicas whose container runs ``tests/e2e/workers/<worker>``. The grace period
    lets a worker finish the message in hand after SIGTERM."""
    container = {"name": "worker", "image": "python:3.11-slim",
                 "command": [sys.executable, "-u", str(WORKERS / worker)],
                 "env": [{"name": key, "value": value} for key, value in env.items()]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": grace_seconds,
                                           "containers": [container]}}}}


def broker_scaled_object(name: str, trigger: dict[str, Any], *, maximum: int = 10, polling: int = 1,
                         cooldown: int = 5) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": 0, "maxReplicaCount": maximum,
                     "pollingInterval": polling, "cooldownPeriod": cooldown, "triggers": [trigger]}}


def condition(server: CapstanServer, name: str, kind: str) -> dict[str, Any] | None:
    obj = server.get_json(f"/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/{name}")
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def wait_ready(server: CapstanServer, name: str, timeout: float = 60.0) -> None:
    def ready() -> bool:
        cond = condition(server, name, "Ready")
        return bool(cond and cond.get("status") == "True")
    try:
        wait_for(ready, timeout=timeout, interval=0.1, message=f"ScaledObject {name} Ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Ready condition: {condition(server, name, 'Ready')}") from None


@dataclass
class JournalView:
    started: list[str] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> JournalView:
        view = cls()
        if path.exists():
            for line in path.read_text().splitlines():
                kind, _, what = line.partition(" ")
                getattr(view, kind).append(what)
        return view


def assert_trajectory(values: list[int], peak: int) -> None:
    """0, 1, strictly up to exactly ``peak``, then ``peak, 1, 0``; never above ``peak``."""
    assert values[:2] == [0, 1], f"activation must come first (0 -> 1): {values}"
    assert max(values) == peak, f"the peak must be exactly {peak}: {values}"
    top = values.index(peak)
    rise = values[:top + 1]
    assert all(a < b for a, b in itertools.pairwise(rise)), f"the rise must only go up: {values}"
    expected_fall = [peak, 1, 0] if peak > 1 else [1, 0]
    assert values[top:] == expected_fall, f"after the cooldown: {peak} -> 1 -> 0 expected: {values}"


@dataclass
class ScalingRun:
    values: list[int]
    journal: JournalView
    seconds: dict[str, float]  # from the publish: to the peak, to drained, to 0, to every worker gone

    def report(self) -> str:
        times = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return f"trajectory {self.values}; {times}"


def run_scaling(server: CapstanServer, name: str, scaled_object: dict[str, Any], *, publish: Callable[[], None],
                drained: Callable[[], bool], peak: int, journal: Path, expected: Collection[str],
                exactly_once: bool = True) -> ScalingRun:
    """Apply the ScaledObject, publish the backlog, and follow the Deployment from 0 to ``peak`` and
    back to 0 while the workers drain it; then check the trajectory and the journal. ``drained`` is
    the broker's side of "done" (queue empty, lag 0, ...); the journal must also list every item of
    ``expected``."""
    seconds: dict[str, float] = {}
    with _Trajectory(server, name) as trajectory:
        server.apply(scaled_object)
        wait_ready(server, name)
        assert trajectory.values in ([], [0]), f"scaled before anything was published: {trajectory.values}"
        start = time.monotonic()
        publish()
        wait_for(lambda: peak in trajectory.values or max(trajectory.values, default=0) > peak,
                 timeout=SCALE_TIMEOUT, interval=0.1, message=f"{peak} replicas; trajectory {trajectory.values}")
        seconds["peak"] = time.monotonic() - start
        wanted = set(expected)

        def all_done() -> bool:  # the broker has nothing left and the journal has every message
            return wanted <= set(JournalView.read(journal).processed) and drained()
        wait_for(all_done, timeout=SCALE_TIMEOUT, interval=0.2,
                 message=f"the workers to drain the backlog; journal {JournalView.read(journal)}")
        seconds["drained"] = time.monotonic() - start
        wait_for(lambda: trajectory.values[-1] == 0, timeout=SCALE_TIMEOUT, interval=0.1,
                 message=f"back to 0 replicas; trajectory {trajectory.values}")
        seconds["zero"] = time.monotonic() - start

        def all_stopped() -> bool:
            view = JournalView.read(journal)
            return Counter(view.stopped) == Counter(view.started)
        wait_for(all_stopped, timeout=60, interval=0.2,
                 message=f"every worker to stop on SIGTERM; journal {JournalView.read(journal)}")
        seconds["workers gone"] = time.monotonic() - start
        values = trajectory.values
    view = JournalView.read(journal)
    assert_trajectory(values, peak)
    assert set(view.processed) == set(expected), (
        f"missing {sorted(set(expected) - set(view.processed))}, unexpected "
        f"{sorted(set(view.processed) - set(expected))}")
    if exactly_once:
        assert sorted(view.processed) == sorted(expected), (
            f"processed more than once: {sorted(k for k, n in Counter(view.processed).items() if n > 1)}")
    assert 1 <= len(view.started) <= peak, f"{len(view.started)} workers started for a peak of {peak}: {view}"
    assert len(set(view.started)) == len(view.started), f"a worker started twice: {view.started}"
    return ScalingRun(values, view, seconds)
