"""Kubernetes manifests against the official strict JSON schemas, and against the service itself;
the compose file and Dockerfile against what the service expects."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.api.app import create_app
from service.config import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT.parent / "shared" / "schemas" / "kubernetes" / "v1.32.10"


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def schema_for(doc: dict[str, Any]) -> dict[str, Any]:
    group, _, version = doc["apiVersion"].rpartition("/")
    name = f"{doc['kind'].lower()}{'-' + group.split('.')[0] if group else ''}-{version}.json"
    return json.loads((SCHEMAS / name).read_text())


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in documents() if d["kind"] == kind]
    return doc


def app_paths() -> set[str]:
    return set(create_app(Settings()).openapi()["paths"])


def test_every_kind_is_there() -> None:
    assert {d["kind"] for _, d in documents()} == {"Deployment", "Service", "HorizontalPodAutoscaler",
                                                    "PodDisruptionBudget"}


@pytest.mark.parametrize("name, doc", documents(), ids=[f"{n}:{d['kind']}" for n, d in documents()])
def test_manifest_is_valid_against_the_strict_schema(name: str, doc: dict[str, Any]) -> None:
    errors = list(jsonschema.Draft7Validator(schema_for(doc)).iter_errors(doc))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_the_strict_schema_rejects_a_misspelled_field() -> None:
    doc = by_kind("Deployment")
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert list(jsonschema.Draft7Validator(schema_for(doc)).iter_errors(doc))


def test_probes_hit_real_routes_on_the_container_port() -> None:
    container = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert ports == {"http": int(env["VQVAE_PORT"]), "grpc": int(env["VQVAE_GRPC_PORT"])}
    assert ports == {"http": 8000, "grpc": 8001}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/livez"
    routes = app_paths()
    for probe in probes.values():
        assert probe["path"] in routes and probe["port"] in ports


def test_shutdown_fits_in_the_grace_period() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    drain = float({e["name"]: e["value"] for e in container["env"]}["VQVAE_DRAIN_SECONDS"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + drain + 10 <= pod["terminationGracePeriodSeconds"]  # 10 s for requests in flight


def test_hardening() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    deployment, service = by_kind("Deployment"), by_kind("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("http", "http"), ("grpc", "grpc")]
    assert service["spec"]["ports"][1]["appProtocol"] == "kubernetes.io/h2c"  # gRPC is HTTP/2 without TLS
    target = by_kind("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert by_kind("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2  # the PDB can always be met


def test_compose_file_matches_the_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    cpu, gpu = compose["services"]["codec"], compose["services"]["codec-gpu"]
    for service in (cpu, gpu):
        assert service["read_only"] is True and any(t.startswith("/tmp") for t in service["tmpfs"])
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "service.healthcheck"]
        assert service["restart"] == "unless-stopped"
    assert cpu["ports"][0].endswith(":8000") and cpu["deploy"]["resources"]["limits"]
    assert cpu["ports"][1].endswith(":8001") and cpu["environment"]["VQVAE_GRPC_PORT"] == "8001"
    published = [p.split(":")[0] for s in (cpu, gpu) for p in s["ports"]]
    assert len(published) == len(set(published)), published  # both profiles up at once: no port taken twice
    assert "profiles" not in cpu and gpu["profiles"] == ["gpu"]
    assert gpu["environment"]["VQVAE_PROVIDERS"] == "cuda"  # missing GPU -> not ready, never a silent fallback
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert gpu["build"]["args"]["RUNTIME"] == "gpu"


def test_dockerfile_essentials() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert stages and all(s == "debian:bookworm-slim" for s in stages) and len(stages) >= 2
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert re.search(r"^EXPOSE 8000 8001$", text, flags=re.M) and "VQVAE_GRPC_PORT=8001" in text
    assert re.search(r'^CMD \["python", "-m", "service"\]', text, flags=re.M)  # exec form: SIGTERM reaches python
    assert 'HEALTHCHECK' in text and "service.healthcheck" in text and "curl" not in text
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "torch" not in instructions.lower()
    assert Path(ROOT / ".dockerignore").read_text().startswith("# Only what")
