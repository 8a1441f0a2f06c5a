"""The pod phase the node agent reports, as the kubelet computes it: a container that will be
restarted keeps its pod Running, even in the instant between its exit and its restart."""

from __future__ import annotations

import pytest

from capstan.controllers.nodeagent import _phase


def pod(policy: str | None) -> dict:  # type: ignore[type-arg]
    spec = {"containers": [{"name": "main"}]}
    if policy:
        spec["restartPolicy"] = policy  # type: ignore[assignment]
    return {"spec": spec}


def exited(code: int) -> list[dict]:  # type: ignore[type-arg]
    return [{"name": "main", "state": {"terminated": {"exitCode": code}}}]


@pytest.mark.parametrize(("policy", "code", "phase"), [
    (None, 1, "Running"),          # Always is the default: it will be restarted
    ("Always", 0, "Running"),
    ("OnFailure", 1, "Running"),   # a failure is retried
    ("OnFailure", 0, "Succeeded"),
    ("Never", 1, "Failed"),
    ("Never", 0, "Succeeded"),
])
def test_phase_of_a_pod_whose_only_container_exited(policy: str | None, code: int, phase: str) -> None:
    assert _phase(pod(policy), [], exited(code), True) == phase
