"""Must show: a Pod asking for more cpu than the node has stays Pending and says why."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import CapstanServer, kill_all_containers, wait_for


def test_pod_larger_than_the_node_stays_pending_naming_cpu(tmp_path: Path) -> None:
    server = CapstanServer(tmp_path / "data", cpu="2", memory="4Gi")
    server.start()
    try:
        server.apply({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
            "spec": {"containers": [{"name": "c", "command": ["sleep", "60"],
                                     "resources": {"requests": {"cpu": "4"}}}]},
        })

        def unschedulable() -> dict | None:  # type: ignore[type-arg]
            pod = server.get_json("/api/v1/namespaces/default/pods/huge")
            for condition in pod.get("status", {}).get("conditions") or []:
                if condition["type"] == "PodScheduled" and condition["status"] == "False":
                    return dict(pod)
            return None

        pod = wait_for(unschedulable, timeout=30, message="PodScheduled=False")
        condition = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
        assert pod["status"]["phase"] == "Pending"
        assert condition["reason"] == "Unschedulable"
        assert "Insufficient cpu" in condition["message"]
        assert "requested 4" in condition["message"] and "2 allocatable" in condition["message"]
        assert not pod["spec"].get("nodeName")
        described = server.cli("describe", "pod", "huge").stdout
        assert "FailedScheduling" in described and "Insufficient cpu" in described
    finally:
        server.stop()
        kill_all_containers(server.data_dir)
