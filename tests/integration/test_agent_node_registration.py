"""Registering this machine as a Node."""

from __future__ import annotations

from pathlib import Path

import psutil

from capstan.api.quantity import parse_quantity
from capstan.api.registry import default_registry
from capstan.controllers.node import NodeRegistrar
from capstan.store.sqlite import SqliteStore


async def test_registration_is_idempotent_and_keeps_user_settings(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db", default_registry())
    nodes = store.registry.lookup("nodes")
    try:
        node = await NodeRegistrar(store, node_name="edge-1", extended_resources={"example.com/fpga": 2}).register()
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "edge-1"
        assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
        capacity = node["status"]["capacity"]
        assert capacity["cpu"] == str(psutil.cpu_count())
        assert parse_quantity(capacity["memory"]) == psutil.virtual_memory().total
        assert capacity["pods"] == "110"
        assert capacity["example.com/fpga"] == "2"
        assert node["status"]["allocatable"] == capacity
        [ready] = node["status"]["conditions"]
        assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "KubeletReady")
        assert ready["lastHeartbeatTime"]
        assert node["status"]["nodeInfo"]["operatingSystem"] == "linux"

        node["spec"]["taints"] = [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]
        node["metadata"]["labels"]["team"] = "ml"
        await store.update(node)

        again = await NodeRegistrar(store, node_name="edge-1", cpu="1500m", memory="2Gi").register()
        assert again["metadata"]["uid"] == node["metadata"]["uid"]
        assert again["spec"]["taints"] == [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]
        assert again["metadata"]["labels"]["team"] == "ml"
        assert again["status"]["allocatable"] == {"cpu": "1500m", "memory": "2Gi", "pods": "110"}
        assert len((await store.list(nodes)).items) == 1
    finally:
        await store.close()
