"""The field reference in docs/ is generated from the models and must match them."""

from __future__ import annotations

from pathlib import Path

from capstan.api.registry import default_registry
from capstan.api.schema import custom_resource_definition, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_field_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "reference" / "kinds.md").read_text()
    assert committed == reference_markdown(list(default_registry())), "run hack/gen-docs"


def test_deployment_crd_declares_scale_and_status_subresources() -> None:
    crd = custom_resource_definition(default_registry().lookup("deployments"))
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {
        "status": {},
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                  "labelSelectorPath": ".status.selector"},
    }
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"] == {"default": 1, "minimum": 0, "type": "integer"}
    assert "containers" in spec["properties"]["template"]["properties"]["spec"]["required"]


def test_schema_keeps_unknown_fields_and_int_or_string() -> None:
    crd = custom_resource_definition(default_registry().lookup("deployments"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rolling = spec["properties"]["strategy"]["properties"]["rollingUpdate"]["properties"]
    assert rolling["maxSurge"]["x-kubernetes-int-or-string"] is True
    assert spec["x-kubernetes-preserve-unknown-fields"] is True
