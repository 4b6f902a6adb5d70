"""HTTPRoutes and ScaledObjects lmo renders are accepted by the upstream CRD schemas.

A real API server with the Gateway API and KEDA CRDs installed refuses an object its
openAPIV3Schema does not allow (a weight out of range, an unknown filter type, a trigger
without metadata). These tests run every such object lmo can render through those schemas
(tests/fixtures/crd_schemas.py), across the routing and autoscaling options.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from lmo.api import load_file
from lmo.builders import build_children
from lmo.render import render_objects
from lmo.settings import OperatorSettings
from tests.fixtures import crd_schemas

from .conftest import OWNER, make_lm, make_plans

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
INPUTS = sorted((Path(__file__).parent / "golden" / "inputs").glob("*.yaml"))
SETTINGS = OperatorSettings().with_overrides(["prometheus_url=http://prometheus.monitoring:9090"])

TWO = [
    {"name": "v1", "checkpoint": {"uri": "s3://models/gpt2/v1/"}, "traffic": 70},
    {"name": "v2", "checkpoint": {"uri": "s3://models/gpt2/v2/"}, "traffic": 30},
]
AUTOSCALING = [
    {"engine": "HPA", "metric": "QueueTime", "target": "50ms"},
    {"engine": "HPA", "metric": "InferenceRate", "target": "20"},
    {"engine": "HPA", "metric": "CPU", "target": "70"},
    {"engine": "KEDA", "metric": "QueueTime", "target": "50ms", "minReplicas": 0},
    {"engine": "KEDA", "metric": "InferenceRate", "target": "20", "minReplicas": 1},
    {"engine": "KEDA", "metric": "CPU", "target": "70", "minReplicas": 1},
]
ROUTING = [
    {},
    {"abTest": {"header": "x-lmo-version"}},
    {"mirror": {"version": "v2", "percent": 5}},
    {"abTest": {"header": "x-model"}, "mirror": {"version": "v1", "percent": 100},
     "hostnames": ["chat.example.com"], "parentRef": {"name": "edge", "namespace": "gw"}},
]


def _custom(objects: list[dict]) -> list[dict]:
    return [o for o in objects if crd_schemas.is_checked(o)]


def _matrix() -> list[dict]:
    objects = []
    for autoscaling in AUTOSCALING:
        for routing in ROUTING:
            lm = make_lm({"versions": TWO, "routing": routing, "autoscaling": autoscaling})
            objects += build_children(lm, OWNER, SETTINGS, make_plans(lm, SETTINGS))
    gpu = make_lm({"versions": TWO, "serving": {"gpus": 1},
                   "autoscaling": {"engine": "KEDA", "metric": "GPUUtilization", "target": "60"}})
    objects += build_children(gpu, OWNER, SETTINGS, make_plans(gpu, SETTINGS))
    return objects


def test_every_routing_and_autoscaling_option_passes_the_upstream_schemas():
    objects = _custom(_matrix())
    kinds = {o["kind"] for o in objects}
    assert kinds == {"HTTPRoute", "ScaledObject"}
    assert crd_schemas.validate(objects) == len(objects)


@pytest.mark.parametrize("pending", [False, True], ids=["serving", "pending"])
def test_examples_and_golden_inputs_pass_the_upstream_schemas(pending):
    objects = []
    for path in EXAMPLES + INPUTS:
        objects += render_objects(load_file(path), SETTINGS, pending=pending, owner_uid=OWNER.uid)
    objects = _custom(objects)
    # before conversion there is a route (to nothing yet) but no Deployment to scale
    assert {o["kind"] for o in objects} == ({"HTTPRoute"} if pending else {"HTTPRoute", "ScaledObject"})
    assert crd_schemas.validate(objects) == len(objects)


def test_the_schema_check_refuses_broken_objects():
    """Not a no-op: a weight below 0, an unknown filter, a trigger without metadata."""
    objects = _custom(_matrix())
    route = copy.deepcopy(next(o for o in objects if o["kind"] == "HTTPRoute"))
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    route["spec"]["rules"][0]["filters"] = [{"type": "Teleport"}]
    scaled = copy.deepcopy(next(o for o in objects if o["kind"] == "ScaledObject"))
    del scaled["spec"]["triggers"][0]["metadata"]
    with pytest.raises(crd_schemas.SchemaError) as err:
        crd_schemas.validate([route, scaled])
    text = str(err.value)
    assert "weight must be >= 0" in text and "filters/0/type" in text
    assert "triggers/0 must have required property metadata" in text
