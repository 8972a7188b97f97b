"""The committed gRPC stubs: regenerated from the proto they are byte for byte the same, and on the wire
they are the official client's (tritonclient.grpc's descriptors): every method and every field we
declare has the same request and response types, numbers and kinds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor
from tritonclient.grpc import model_config_pb2, service_pb2

from service.grpc_api import open_inference_pb2 as ours
from service.grpc_api.endpoint import WIRE_SERVICE
from tests.conftest import ROOT

PROTO_DIR = ROOT / "service" / "grpc_api"


def test_the_committed_stubs_are_what_the_proto_generates(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={tmp_path}",
               f"--pyi_out={tmp_path}", str(PROTO_DIR / "open_inference.proto")]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    for name in ("open_inference_pb2.py", "open_inference_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (PROTO_DIR / name).read_bytes(), \
            f"{name} is stale: regenerate it with the command in open_inference.proto's header"


def official(name: str) -> Descriptor:
    for module in (service_pb2, model_config_pb2):
        if name in module.DESCRIPTOR.message_types_by_name:
            return module.DESCRIPTOR.message_types_by_name[name]
    raise KeyError(name)


def same_fields(mine: Descriptor, theirs: Descriptor, path: str) -> list[str]:
    """Every field of ours has a field of theirs with the same number, name, type and repetition;
    nested messages compared recursively. Theirs may have more (we fill fewer)."""
    problems = []
    fields = {f.number: f for f in theirs.fields}
    for field in mine.fields:
        other = fields.get(field.number)
        where = f"{path}.{field.name}"
        if other is None or (other.name, other.type, other.is_repeated) != (field.name, field.type, field.is_repeated):
            problems.append(f"{where} (#{field.number}) differs from tritonclient's")
        elif field.message_type is not None:
            problems += same_fields(field.message_type, other.message_type, where)
        elif field.enum_type is not None:
            theirs_values = {v.name: v.number for v in other.enum_type.values}
            problems += [f"{where}: {v.name}" for v in field.enum_type.values if theirs_values.get(v.name) != v.number]
    return problems


def test_our_service_is_the_official_wire_service() -> None:
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    official_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert official_service.full_name == WIRE_SERVICE
    assert {m.name for m in service.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelConfig",
        "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}
    problems = []
    for method in service.methods:
        theirs = official_service.methods_by_name[method.name]
        assert (method.input_type.name, method.output_type.name) == (theirs.input_type.name, theirs.output_type.name)
        for mine, other in ((method.input_type, theirs.input_type), (method.output_type, theirs.output_type)):
            problems += same_fields(mine, other, mine.name)
    assert not problems, problems


@pytest.mark.parametrize("name", sorted(ours.DESCRIPTOR.message_types_by_name))
def test_every_message_matches_tritonclients(name: str) -> None:
    assert not same_fields(ours.DESCRIPTOR.message_types_by_name[name], official(name), name)


def test_a_mismatch_would_be_seen() -> None:
    """The comparison is not vacuous: two different messages of theirs do not pass for each other."""
    assert same_fields(ours.DESCRIPTOR.message_types_by_name["ModelInferRequest"], official("ModelInferResponse"),
                       "ModelInferRequest")
