"""deploy/kserve/: the InferenceService against KServe's strict schema, and against the service."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import yaml

from service.api.app import create_app
from service.config import Settings
from tests.conftest import ROOT
from tests.deploy.test_manifests import by_kind

SCHEMA = ROOT.parent / "shared" / "schemas" / "kserve" / "inferenceservice-serving-v1beta1-strict.json"


def inference_service() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text()) if d]
    return doc


def test_valid_against_the_strict_kserve_schema() -> None:
    doc = inference_service()
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(doc))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]
    misspelt = inference_service()
    misspelt["spec"]["predicter"] = misspelt["spec"].pop("predictor")
    assert list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(misspelt))


def test_the_predictor_speaks_v2_on_its_port_with_v2_probes_and_the_deployments_resources() -> None:
    (container,) = inference_service()["spec"]["predictor"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    port = container["ports"][0]["containerPort"]
    assert env["PROTOCOL"] == "v2" and env["VQVAE_PORT"] == str(port) == "8080" and env["VQVAE_HOST"] == "0.0.0.0"
    # Knative routes one port per container (http1 here); gRPC listens beside it, on KServe's gRPC port.
    assert [p["name"] for p in container["ports"]] == ["http1"] and env["VQVAE_GRPC_PORT"] == "8081"
    paths = set(create_app(Settings()).openapi()["paths"])
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live"),
                        ("startupProbe", "/v2/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": port} and path in paths
    deployment = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == deployment["resources"]
    assert container["securityContext"] == deployment["securityContext"]
