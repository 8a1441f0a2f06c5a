"""The Helm chart's CRDs (deploy/helm/capstan/crds/) are generated from the models by hack/gen-crds and
must match them: a model change without regenerating fails here."""

from __future__ import annotations

from pathlib import Path

import yaml

from capstan.api.registry import BUILTIN_TYPES, default_registry
from capstan.server.operator import crd_manifests

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "capstan" / "crds"


def test_every_committed_crd_matches_the_models() -> None:
    expected = crd_manifests()
    committed = {path.name: path.read_text() for path in CRDS.glob("*.yaml")}
    assert sorted(committed) == sorted(expected), "run hack/gen-crds (CRD files added or removed)"
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"run hack/gen-crds: out of date with the models: {', '.join(stale)}"


def test_there_is_a_crd_for_every_kind_kubernetes_does_not_serve() -> None:
    builtin = {rt.group for rt in BUILTIN_TYPES}
    kinds = {f"{rt.plural}.{rt.group}" for rt in default_registry() if rt.group not in builtin}
    assert kinds >= {"scaledobjects.keda.sh", "clusterqueues.kueue.x-k8s.io"}
    names = {yaml.safe_load(path.read_text())["metadata"]["name"] for path in CRDS.glob("*.yaml")}
    assert names == kinds
