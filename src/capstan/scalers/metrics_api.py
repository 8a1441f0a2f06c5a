"""``metrics-api``: one number from any HTTP endpoint (KEDA's ``metrics_api_scaler.go`` semantics).

``GET url`` must answer 200; ``valueLocation`` finds the number in the body, read as ``format``:

- ``json`` (default): a subset of GJSON paths: dot-separated keys, array indexes as keys
  (``data.items.0.count``), ``#`` for an array's length (``data.items.#``) and ``\\.`` for a
  literal dot in a key. Not supported: wildcards (``*``, ``?``), queries (``#(...)``,
  ``items.#.count``), modifiers (``@reverse``), multipaths and JSON Lines.
- ``yaml``: the same dotted path over the YAML document (keys and list indexes).
- ``xml``: dot-separated element names below the document element (which may also be named
  first); an index selects among repeated elements; the element's text is the value.
- ``prometheus``: the text exposition format; ``valueLocation`` is a metric selector with
  ``=`` label matchers only, e.g. ``queue_depth{queue="high"}``; the first matching sample wins.

Numbers may also be strings holding a Kubernetes quantity (``"1.5k"``, ``"500m"``).
Active when ``value > activationTargetValue``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from capstan.api.quantity import QuantityError, parse_quantity
from capstan.scalers import _http
from capstan.scalers import _metadata as md
from capstan.scalers.base import MetricResult, MetricSpec, Scaler, ScalerConfig, ScalerConfigError, ScalerError
from capstan.scalers.registry import register

FORMATS = ("json", "xml", "yaml", "prometheus")
SUPPORTED_AUTH_MODES = ("apiKey", "basic", "bearer", "custom", "tls")


class ValueLocationError(ValueError):
    """valueLocation does not lead to a number in the document."""


def split_path(location: str) -> list[str]:
    """``a.b\\.c.0`` -> ``["a", "b.c", "0"]``."""
    parts, current, escaped = [], [], False
    for char in location:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _as_number(location: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueLocationError(f"valueLocation {location!r} points to a boolean, not a number")
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(parse_quantity(value))
        except QuantityError:
            raise ValueLocationError(f"valueLocation {location!r} points to {value!r}, which is not a number "
                                     "or a quantity") from None
    kind = "nothing" if value is None else type(value).__name__.replace("dict", "an object").replace("list", "a list")
    raise ValueLocationError(f"valueLocation {location!r} must point to a number, got {kind}")


def walk(document: Any, location: str) -> float:
    """Follow a dotted path through parsed JSON/YAML (dicts and lists)."""
    current = document
    parts = split_path(location)
    for index, part in enumerate(parts):
        where = ".".join(parts[: index + 1])
        if isinstance(current, list):
            if part == "#" and index == len(parts) - 1:
                return float(len(current))
            if not part.isdigit() or int(part) >= len(current):
                raise ValueLocationError(f"valueLocation {location!r}: {where!r} is not an index of a list "
                                         f"of {len(current)}")
            current = current[int(part)]
        elif isinstance(current, dict):
            if part not in current:
                raise ValueLocationError(f"valueLocation {location!r}: {where!r} not found")
            current = current[part]
        else:
            raise ValueLocationError(f"valueLocation {location!r}: {where!r} not found (its parent is a value)")
    return _as_number(location, current)


def value_from_json(body: bytes, location: str) -> float:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ValueLocationError(f"the answer is not JSON: {exc}") from exc
    return walk(document, location)


def value_from_yaml(body: bytes, location: str) -> float:
    try:
        document = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ValueLocationError(f"the answer is not YAML: {exc}") from exc
    return walk(document, location)


def value_from_xml(body: bytes, location: str) -> float:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueLocationError(f"the answer is not XML: {exc}") from exc
    parts = split_path(location)
    if parts and parts[0] == root.tag and not any(child.tag == root.tag for child in root):
        parts = parts[1:]
    element = root
    for index, part in enumerate(parts):
        where = ".".join(parts[: index + 1])
        if part.isdigit():
            continue  # an index was applied together with its element name below
        matches = element.findall(part)
        position = int(parts[index + 1]) if index + 1 < len(parts) and parts[index + 1].isdigit() else 0
        if position >= len(matches):
            raise ValueLocationError(f"valueLocation {location!r}: {where!r} not found")
        element = matches[position]
    if len(element):
        raise ValueLocationError(f"valueLocation {location!r} points to an element with children, not a value")
    return _as_number(location, (element.text or "").strip())


_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_selector(location: str) -> tuple[str, dict[str, str]]:
    """``name{a="1",b="2"}`` -> (name, labels); only ``=`` matchers."""
    match = _SELECTOR.match(location)
    if not match:
        raise ValueLocationError(f"valueLocation {location!r} is not a metric selector like name{{label=\"value\"}}")
    name, body = match.group(1), (match.group(2) or "").strip()
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        matcher = _MATCHER.match(body, pos)
        if not matcher or matcher.end() == pos:
            raise ValueLocationError(f"valueLocation {location!r}: only label=\"value\" matchers are supported")
        labels[matcher.group(1)] = bytes(matcher.group(2), "utf-8").decode("unicode_escape")
        pos = matcher.end()
    return name, labels


def value_from_prometheus(body: bytes, location: str) -> float:
    name, labels = parse_selector(location)
    text = body.decode(errors="replace").replace("\r\n", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ValueLocationError(f"the answer is not in the Prometheus text format: {exc}") from exc
    found_name = False
    for family in families:
        for sample in family.samples:
            if sample.name != name:
                continue
            found_name = True
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    if not found_name:
        raise ValueLocationError(f"metric {name!r} not found")
    raise ValueLocationError(f"no {name!r} sample matches {location!r}")


READERS = {"json": value_from_json, "yaml": value_from_yaml, "xml": value_from_xml,
           "prometheus": value_from_prometheus}


def value_from_body(body: bytes, location: str, fmt: str) -> float:
    return READERS[fmt](body, location)


def _keda_normalize(text: str) -> str:
    for char in "/.:%()":
        text = text.replace(char, "-")
    return text


@register("metrics-api")
class MetricsApiScaler(Scaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.url = md.required(config, "url")
        if not self.url.startswith(("http://", "https://")):
            raise ScalerConfigError(f"{config.label}: metadata.url: {self.url!r} must start with http:// or https://")
        self.format = md.choice(config, "format", FORMATS, "json")
        self.value_location = md.required(config, "valueLocation")
        if self.format == "prometheus":
            try:
                parse_selector(self.value_location)
            except ValueLocationError as exc:
                raise ScalerConfigError(f"{config.label}: metadata.{exc}") from exc
        self.target_value = md.number(config, "targetValue", 0.0)
        if self.target_value == 0:
            raise ScalerConfigError(f"{config.label}: metadata.targetValue is required and must not be 0")
        self.activation_target_value = md.number(config, "activationTargetValue", 0.0)
        if md.boolean(config, "aggregateFromKubeServiceEndpoints", False):
            raise ScalerConfigError(f"{config.label}: metadata.aggregateFromKubeServiceEndpoints is not supported "
                                    "by Capstan; point url at one endpoint that aggregates")
        self.http = _http.HttpSource.from_metadata(config, SUPPORTED_AUTH_MODES)
        # KEDA names this metric "metric-api-<valueLocation>" (singular), whatever the trigger type says.
        self.metric = md.metric_name(dataclasses.replace(config, trigger_type="metric-api"),
                                     _keda_normalize(self.value_location))

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=self.target_value,
                           activation_target=self.activation_target_value, target_type=self.config.metric_type)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        body = await self.http.get(self.url)
        try:
            value = value_from_body(body, self.value_location, self.format)
        except ValueLocationError as exc:
            raise ScalerError(f"{self.config.label}: {exc}") from exc
        return MetricResult(value=value, active=value > self.activation_target_value)

    async def aclose(self) -> None:
        await self.http.aclose()
