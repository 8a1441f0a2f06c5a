"""Fixtures for tests against a real Kubernetes control plane ("Kubernetes mode").

Every test under tests/k8s is marked ``k8s``; deselect them with ``-m "not k8s"`` where the control plane
cannot be built. The first run compiles Kubernetes (see docs/kubernetes-test-cluster.md); later runs reuse
the cached binaries. Set CAPSTAN_KUBE_STATE=DIR to run against (and keep) a cluster started by
``hack/kube-up DIR`` instead of a private one per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.cluster import KubeCluster, build_binaries, default_state_dir, start_cluster, stop_cluster

K8S_DIR = Path(__file__).resolve().parent
# Per-test budget for the test body only: fixture setup may include a cold build of Kubernetes, which has
# its own (much longer) timeout in tests.k8s.cluster.
TEST_TIMEOUT_S = 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs a real Kubernetes control plane (hack/kube-build, kube-up)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if K8S_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.k8s)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S, func_only=True))


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A running control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok."""
    build_binaries()
    shared = default_state_dir()
    state_dir = shared or tmp_path_factory.mktemp("kube") / "state"
    try:
        # Inside the try: an interrupted or failed start must not leave half a cluster running.
        yield start_cluster(state_dir)
    finally:
        if shared is None:
            stop_cluster(state_dir)
