"""``capstan apply`` writes in a dependency-safe kind order whatever the order of the documents, and its
server-side dry run accepts a reference to an object the same apply creates earlier (a ClusterQueue's
flavors, a queued Job's WorkloadPriorityClass); nothing is written unless every document is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.test_cli_commands import Server, configmap, deployment, manifest, not_found
from tests.integration.test_cli_commands import server as server  # the module's running capstan server

KUEUE = "kueue.x-k8s.io/v1beta1"


def flavor(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": name}, "spec": spec}


def cluster_queue(name: str, *flavors: str) -> dict[str, Any]:
    return {"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": {
        "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
            {"name": f, "resources": [{"name": "cpu", "nominalQuota": "1"}]} for f in flavors]}]}}


def local_queue(name: str, namespace: str, cq: str) -> dict[str, Any]:
    return {"apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": cq}}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def queued_job(name: str, namespace_name: str, queue: str, priority: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": name, "namespace": namespace_name,
        "labels": {"kueue.x-k8s.io/queue-name": queue, "kueue.x-k8s.io/priority-class": priority}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "command": ["true"], "resources": {"requests": {"cpu": "100m"}}}]}}}}


def rejected(server: Server, *paths: Path) -> list[str]:
    args = [arg for path in paths for arg in ("-f", str(path))]
    result = server.cli("apply", *args, ok=False)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()


def test_a_batch_setup_applies_in_reverse_document_order(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "reversed.yaml",
                    queued_job("order-job", "order-ns", "order-lq", "order-urgent"),
                    local_queue("order-lq", "order-ns", "order-cq"),
                    cluster_queue("order-cq", "order-spot", "order-default"),
                    {"apiVersion": KUEUE, "kind": "WorkloadPriorityClass", "metadata": {"name": "order-urgent"},
                     "value": 1000},
                    flavor("order-spot"), flavor("order-default"),
                    namespace("order-ns"))
    assert server.cli("apply", "-f", str(path)).stdout.splitlines() == [
        "namespace/order-ns created",
        "resourceflavor.kueue.x-k8s.io/order-spot created",
        "resourceflavor.kueue.x-k8s.io/order-default created",
        "workloadpriorityclass.kueue.x-k8s.io/order-urgent created",
        "clusterqueue.kueue.x-k8s.io/order-cq created",
        "localqueue.kueue.x-k8s.io/order-lq created",
        "job.batch/order-job created",
    ]
    assert server.get_json("job", "order-job", "-n", "order-ns")["metadata"]["labels"][
        "kueue.x-k8s.io/priority-class"] == "order-urgent"


def test_a_queue_file_applies_again_unchanged(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "queues.yaml", cluster_queue("again-cq", "again-f"), flavor("again-f"))
    assert server.cli("apply", "-f", str(path)).stdout.splitlines() == [
        "resourceflavor.kueue.x-k8s.io/again-f created", "clusterqueue.kueue.x-k8s.io/again-cq created"]
    assert server.cli("apply", "-f", str(path)).stdout.splitlines() == [
        "resourceflavor.kueue.x-k8s.io/again-f unchanged", "clusterqueue.kueue.x-k8s.io/again-cq unchanged"]


def test_a_directory_whose_file_names_put_the_queue_first(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    manifest(folder, "a-queues.yaml", cluster_queue("dir-cq", "dir-f"))
    manifest(folder, "b-flavors.yaml", flavor("dir-f"))
    assert server.cli("apply", "-f", str(folder)).stdout.splitlines() == [
        "resourceflavor.kueue.x-k8s.io/dir-f created", "clusterqueue.kueue.x-k8s.io/dir-cq created"]


def test_a_flavor_added_to_an_existing_queue_in_the_same_apply(server: Server, tmp_path: Path) -> None:
    server.cli("apply", "-f", str(manifest(tmp_path, "v1.yaml", flavor("grow-a"), cluster_queue("grow-cq", "grow-a"))))
    path = manifest(tmp_path, "v2.yaml", cluster_queue("grow-cq", "grow-a", "grow-b"), flavor("grow-a"),
                    flavor("grow-b"))
    assert server.cli("apply", "-f", str(path)).stdout.splitlines() == [
        "resourceflavor.kueue.x-k8s.io/grow-a unchanged",
        "resourceflavor.kueue.x-k8s.io/grow-b created",
        "clusterqueue.kueue.x-k8s.io/grow-cq configured",
    ]
    flavors = server.get_json("clusterqueue", "grow-cq")["spec"]["resourceGroups"][0]["flavors"]
    assert [f["name"] for f in flavors] == ["grow-a", "grow-b"]


def test_an_unknown_flavor_is_rejected_with_the_field_path_and_nothing_is_written(server: Server,
                                                                                   tmp_path: Path) -> None:
    path = manifest(tmp_path, "unknown.yaml", flavor("unk-on-demand"), cluster_queue("unk-cq", "unk-on-demand", "spot"))
    assert rejected(server, path) == [
        f'error: {path}: document 2 (ClusterQueue "unk-cq"): spec.resourceGroups[0].flavors[1].name: '
        'Not found: "spot": no ResourceFlavor named "spot"']
    assert not_found(server, "resourceflavor", "unk-on-demand")
    assert not_found(server, "clusterqueue", "unk-cq")


def test_an_invalid_flavor_is_the_only_problem_of_a_queue_naming_it(server: Server, tmp_path: Path) -> None:
    bad = flavor("bad-f", nodeTaints=[{"key": "gpu", "effect": "Sometimes"}])
    path = manifest(tmp_path, "bad.yaml", cluster_queue("bad-cq", "bad-f"), bad)
    errors = rejected(server, path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f'error: {path}: document 2 (ResourceFlavor "bad-f"): spec.nodeTaints[0].effect: ')
    assert not_found(server, "clusterqueue", "bad-cq")


def test_problems_are_reported_in_document_order_though_dry_runs_go_in_kind_order(server: Server,
                                                                                   tmp_path: Path) -> None:
    path = manifest(tmp_path, "two.yaml", configmap("two-cm", {}, namespace="two-missing-ns"),
                    cluster_queue("two-cq", "two-missing-f"), configmap("two-ok", {}))
    assert rejected(server, path) == [
        f'error: {path}: document 1 (ConfigMap "two-cm"): namespaces "two-missing-ns" not found',
        f'error: {path}: document 2 (ClusterQueue "two-cq"): spec.resourceGroups[0].flavors[0].name: '
        'Not found: "two-missing-f": no ResourceFlavor named "two-missing-f"']
    assert not_found(server, "configmap", "two-ok")


def test_autoscaling_objects_come_after_what_they_scale_and_use(server: Server, tmp_path: Path) -> None:
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "ks-web"},
              "spec": {"scaleTargetRef": {"name": "ks-web"}, "minReplicaCount": 1, "triggers": [
                  {"type": "cpu", "metadata": {"value": "50"}, "authenticationRef": {"name": "ks-auth"}}]}}
    auth = {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": "ks-auth"},
            "spec": {"secretTargetRef": [{"parameter": "password", "name": "ks-secret", "key": "pw"}]}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ks-secret"}, "stringData": {"pw": "x"}}
    path = manifest(tmp_path, "scaling.yaml", scaled, deployment("ks-web"), auth, configmap("ks-config", {}),
                    secret)
    assert server.cli("apply", "-f", str(path)).stdout.splitlines() == [
        "secret/ks-secret created",
        "configmap/ks-config created",
        "triggerauthentication.keda.sh/ks-auth created",
        "deployment.apps/ks-web created",
        "scaledobject.keda.sh/ks-web created",
    ]
