"""Events: recorded once, repeats aggregated into a count, like Kubernetes."""

from __future__ import annotations

from pathlib import Path

from capstan.api.registry import default_registry
from capstan.controllers.events import EventRecorder
from capstan.store.sqlite import SqliteStore


async def test_repeats_bump_the_count_of_one_event(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db", default_registry())
    try:
        pod = await store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "subject"}})
        recorder = EventRecorder(store, "tester", host="node-1")
        for _ in range(3):
            await recorder.record(pod, "Warning", "Flapping", "it flapped")
        await recorder.record(pod, "Normal", "Calm", "it calmed down")
        events = (await store.list(store.registry.lookup("events"), "default")).items
        by_reason = {e["reason"]: e for e in events}
        assert set(by_reason) == {"Flapping", "Calm"}
        assert by_reason["Flapping"]["count"] == 3 and by_reason["Flapping"]["type"] == "Warning"
        assert by_reason["Calm"]["count"] == 1
        assert by_reason["Flapping"]["involvedObject"] == {
            "apiVersion": "v1", "kind": "ConfigMap", "name": "subject", "namespace": "default",
            "uid": pod["metadata"]["uid"], "resourceVersion": pod["metadata"]["resourceVersion"]}
        assert by_reason["Flapping"]["source"] == {"component": "tester", "host": "node-1"}
    finally:
        await store.close()
