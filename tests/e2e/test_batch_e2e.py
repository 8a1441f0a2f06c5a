"""Must show, on a real `capstan server`: queued Jobs respect quotas and priorities, a gang starts
whole, a dependent Job starts after its dependencies complete, and the CLI explains waiting."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import CapstanServer, wait_for

KUEUE = "kueue.x-k8s.io/v1beta1"
WORKLOADS = "/apis/kueue.x-k8s.io/v1beta1/namespaces/default/workloads"


@pytest.fixture
def server(tmp_path: Path) -> Any:
    from tests.e2e.harness import kill_all_containers

    capstan = CapstanServer(tmp_path / "data", cpu="8", memory="8Gi")
    capstan.start()
    try:
        yield capstan
    finally:
        capstan.stop()
        kill_all_containers(capstan.data_dir)


def queues(*specs: tuple[str, str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [{"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": "default"}}]
    for name, cpu in specs:
        objects.append({"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": {
            "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
                {"name": "default", "resources": [{"name": "cpu", "nominalQuota": cpu}]}]}]}})
        objects.append({"apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": name, "namespace": "default"},
                        "spec": {"clusterQueue": name}})
    return objects


def job(name: str, queue: str, command: list[str], cpu: str = "100m", *, parallelism: int = 1,
        priority: str | None = None, depends_on: str | None = None) -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": queue}
    if priority:
        labels["kueue.x-k8s.io/priority-class"] = priority
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if depends_on:
        meta["annotations"] = {"capstan.io/depends-on": depends_on}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {
        "parallelism": parallelism, "completions": parallelism, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main", "command": command,
                                                      "resources": {"requests": {"cpu": cpu}}}]}}}}


def traced(trace: Path, label: str, seconds: float, *, until: Path | None = None) -> list[str]:
    """A container that records (label, start, end) in ``trace``; it works ``seconds``, or until
    the file ``until`` exists when given (so a test, not the clock, decides when it ends)."""
    wait = (f"import os\nwhile not os.path.exists({str(until)!r}): time.sleep(0.05)\n" if until
            else f"time.sleep({seconds})\n")
    script = (f"import json,time\nstart=time.time()\n{wait}"
              f"open({str(trace)!r},'a').write(json.dumps([{label!r},start,time.time()])+'\\n')")
    return [sys.executable, "-c", script]


def apply_all(server: CapstanServer, objects: list[dict[str, Any]]) -> None:
    server.apply("\n---\n".join(json.dumps(o) for o in objects))


def workloads(server: CapstanServer) -> list[dict[str, Any]]:
    return list(server.get_json(WORKLOADS)["items"])


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def holding(workload: dict[str, Any]) -> bool:
    reserved, finished = condition(workload, "QuotaReserved"), condition(workload, "Finished")
    return bool(reserved and reserved["status"] == "True" and not (finished and finished["status"] == "True"))


def owner(workload: dict[str, Any]) -> str:
    return str(workload["metadata"]["ownerReferences"][0]["name"])


def test_200_jobs_respect_quotas_and_priorities(server: CapstanServer, tmp_path: Path) -> None:
    classes = [{"apiVersion": KUEUE, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}
               for name, value in (("high", 1000), ("low", 1))]
    apply_all(server, [*queues(("cq-a", "500m"), ("cq-b", "300m"), ("cq-c", "400m"), ("cq-prio", "100m")), *classes])
    quota = {"cq-a": 500, "cq-b": 300, "cq-c": 400, "cq-prio": 100}
    sampler = QuotaSampler(server, quota)
    sampler.start()
    # Each job holds its quota for a moment, so the queues really fill up to their quotas.
    jobs = [job(f"j{i:03d}", ("cq-a", "cq-b", "cq-c")[i % 3], ["sleep", "0.5"]) for i in range(200)]
    trace = tmp_path / "prio.jsonl"
    release = tmp_path / "release-blocker"
    jobs.append(job("blocker", "cq-prio", traced(trace, "blocker", 0, until=release), priority="low"))
    apply_all(server, jobs)
    wait_for(lambda: any(owner(w) == "blocker" and holding(w) for w in workloads(server)), timeout=60,
             message="the blocker admitted")
    apply_all(server, [job(f"low-{i}", "cq-prio", traced(trace, f"low-{i}", 0.3), priority="low") for i in range(3)]
              + [job(f"high-{i}", "cq-prio", traced(trace, f"high-{i}", 0.3), priority="high") for i in range(3)])

    pending = wait_for(lambda: _pending_listed(server), timeout=60, message="capstan queue pending to list 6")
    assert pending.index("high-") < pending.index("low-")
    release.touch()  # the six are queued behind the blocker: let it finish

    wait_for(lambda: sampler.finished == 207, timeout=300, interval=0.5, message="all 207 workloads finished")
    sampler.stop()
    assert not sampler.violations, sampler.violations[:5]
    assert sampler.most["cq-a"] == 500 and sampler.most["cq-b"] == 300  # quotas were used, not just respected
    runs = sorted((json.loads(line) for line in trace.read_text().splitlines()), key=lambda run: run[1])
    order = [label for label, _, _ in runs]
    assert order[0] == "blocker"
    assert all(label.startswith("high-") for label in order[1:4]), order
    assert all(label.startswith("low-") for label in order[4:]), order

    table = server.cli("get", "workloads").stdout
    assert table.splitlines()[0].split() == ["NAME", "QUEUE", "ADMITTED", "BY", "POSITION", "REASON", "AGE"]
    assert "Finished: Succeeded" in table


class QuotaSampler(threading.Thread):
    """Samples the quota held per ClusterQueue (admitted, unfinished workloads) every 50 ms."""

    def __init__(self, server: CapstanServer, quota: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.server, self.quota = server, quota
        self.most: dict[str, int] = {}
        self.violations: list[str] = []
        self.finished = 0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        while not self._stop_flag.is_set():
            items = workloads(self.server)
            used: dict[str, int] = {}
            for workload in items:
                if holding(workload):
                    cq = workload["status"]["admission"]["clusterQueue"]
                    used[cq] = used.get(cq, 0) + 100
            for cq, amount in used.items():
                self.most[cq] = max(self.most.get(cq, 0), amount)
                if amount > self.quota[cq]:
                    self.violations.append(f"{cq} holds {amount}m of {self.quota[cq]}m")
            self.finished = sum(1 for w in items if (condition(w, "Finished") or {}).get("status") == "True")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(timeout=30)


def _pending_listed(server: CapstanServer) -> str | None:
    out = server.cli("queue", "pending", "cq-prio").stdout
    lines = [line for line in out.splitlines()[1:] if line.strip()]
    if len(lines) != 6:
        return None
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4", "5", "6"]
    return out


def test_a_gang_starts_whole_and_a_dependent_starts_after_its_dependency(server: CapstanServer,
                                                                         tmp_path: Path) -> None:
    apply_all(server, queues(("gang-cq", "4"), ("dep-cq", "2")))
    trace = tmp_path / "trace.jsonl"
    apply_all(server, [job("filler", "gang-cq", traced(trace, "filler", 2.0), cpu="2")])
    wait_for(lambda: any(owner(w) == "filler" and holding(w) for w in workloads(server)), timeout=60,
             message="the filler admitted")
    apply_all(server, [job("gang", "gang-cq", traced(trace, "gang", 1.0), cpu="1", parallelism=4),
                       job("first", "dep-cq", traced(trace, "first", 1.5)),
                       job("second", "dep-cq", traced(trace, "second", 0.1), depends_on="first")])

    def waiting_reason(name: str) -> str | None:
        for workload in workloads(server):
            found = condition(workload, "QuotaReserved")
            if owner(workload) == name and found and found["status"] == "False":
                return str(found["reason"])
        return None
    assert wait_for(lambda: waiting_reason("gang"), timeout=60, message="the gang waiting") == "InsufficientQuota"
    assert wait_for(lambda: waiting_reason("second"), timeout=60, message="second waiting") == "NotReady"
    assert server.pods(selector="batch.kubernetes.io/job-name=gang") == []
    described = server.cli("describe", "workload", next(
        w["metadata"]["name"] for w in workloads(server) if owner(w) == "gang")).stdout
    assert "Last Admission Attempt:" in described
    assert 'cpu in flavor "default": requested 4, available 2, short by 2' in described

    def finished(name: str) -> bool:
        job_obj = server.get_json(f"/apis/batch/v1/namespaces/default/jobs/{name}")
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in (job_obj.get("status") or {}).get("conditions") or [])
    for name in ("filler", "gang", "first", "second"):
        wait_for(lambda n=name: finished(n), timeout=120, message=f"Job {name} complete")
    runs = [json.loads(line) for line in trace.read_text().splitlines()]
    by_label: dict[str, list[tuple[float, float]]] = {}
    for label, start, end in runs:
        by_label.setdefault(label, []).append((start, end))
    gang_starts = [start for start, _ in by_label["gang"]]
    assert len(gang_starts) == 4
    filler_end = by_label["filler"][0][1]
    assert min(gang_starts) >= filler_end - 0.05  # never 1-3 pods running alone beside the filler
    assert max(gang_starts) - min(gang_starts) < 3.0, gang_starts
    assert by_label["second"][0][0] >= by_label["first"][0][1]


def test_a_cluster_queue_with_a_borrowing_limit_but_no_cohort_is_rejected_with_the_field(
        server: CapstanServer) -> None:
    bad = {"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": "bad"}, "spec": {
        "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [{"name": "default", "resources": [
            {"name": "cpu", "nominalQuota": "1", "borrowingLimit": "1"}]}]}]}}
    result = server.cli("apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert result.returncode == 1
    assert "spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit" in result.stderr
    assert "must be nil when cohort is empty" in result.stderr
