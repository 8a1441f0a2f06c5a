"""Must show: a Job respects parallelism and completes; a failing Job stops at backoffLimit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.harness import CapstanServer, wait_for


def job_condition(server: CapstanServer, name: str) -> dict[str, Any] | None:
    job = server.get_json(f"/apis/batch/v1/namespaces/default/jobs/{name}")
    for condition in job.get("status", {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return dict(condition)
    return None


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = best = 0
    for _, delta in edges:
        current += delta
        best = max(best, current)
    return best


def test_job_never_runs_more_than_parallelism_and_completes(server: CapstanServer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    script = (f"import json,time,os\nstart=time.time()\ntime.sleep(0.8)\n"
              f"open({str(trace)!r},'a').write(json.dumps([start,time.time(),os.environ['POD']])+'\\n')")
    server.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "five"},
        "spec": {"completions": 5, "parallelism": 2, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "work", "command": ["python3", "-c", script],
                            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
        }}},
    })
    condition = wait_for(lambda: job_condition(server, "five"), timeout=120, message="the Job to finish")
    assert condition["type"] == "Complete"
    runs = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(runs) == 5
    assert len({pod for _, _, pod in runs}) == 5
    assert max_overlap([(start, end) for start, end, _ in runs]) <= 2
    status = server.get_json("/apis/batch/v1/namespaces/default/jobs/five")["status"]
    assert status["succeeded"] == 5
    assert status.get("failed", 0) == 0
    out = server.cli("get", "jobs").stdout
    assert "five" in out and "5/5" in out


def test_failing_job_stops_at_backoff_limit(server: CapstanServer) -> None:
    server.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed"},
        "spec": {"backoffLimit": 2, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "fail", "command": ["python3", "-c", "import sys; sys.exit(3)"]}],
        }}},
    })
    condition = wait_for(lambda: job_condition(server, "doomed"), timeout=120, message="the Job to fail")
    assert condition["type"] == "Failed"
    assert condition["reason"] == "BackoffLimitExceeded"
    status = server.get_json("/apis/batch/v1/namespaces/default/jobs/doomed")["status"]
    assert status["failed"] == 3  # backoffLimit 2 allows 2 retries: 3 failed pods in all
    pods = server.pods(selector="batch.kubernetes.io/job-name=doomed")
    exit_codes = {cs["state"]["terminated"]["exitCode"]
                  for p in pods for cs in p["status"]["containerStatuses"]}
    assert exit_codes == {3}
    described = server.cli("describe", "job", "doomed").stdout
    assert "BackoffLimitExceeded" in described
