"""Re-exporting the shipped checkpoints with today's code gives the shipped ONNX files, byte for byte,
except two debugging strings the exporter writes that no code change can reproduce:

- each node's `pkg.torch.onnx.stack_trace`: the absolute path, line number and source text of the
  exporting code (the shipped files name /work/main/... and the lines of the commits they were made at);
- the graph's `pkg.torch.export.ExportedProgram.range_constraints`: the same dynamic-shape ranges,
  listed in an order that varies from run to run (Python's hash order).

The test checks that the ranges are the same set, copies those two strings from the shipped file
into the fresh export, and requires the sha256 of the result to be the manifest's. Every op,
tensor name, attribute, initializer byte, shape, opset and metadata entry is therefore identical.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import onnx
import pytest

from contract.manifest import GRAPHS, load_manifest, sha256_of
from export.pipeline import build_graphs
from tests.conftest import ROOT
from training.checkpoint import load_checkpoint, model_from_checkpoint

STACK_TRACE = "pkg.torch.onnx.stack_trace"
RANGES = "pkg.torch.export.ExportedProgram.range_constraints"


def ranges(proto: onnx.ModelProto) -> set[str]:
    text = next(m.value for m in proto.graph.metadata_props if m.key == RANGES)
    return set(re.findall(r"[^{},\s][^:{}]*: VR\[[^\]]*\]", text))


def with_shipped_debug_strings(fresh: onnx.ModelProto, shipped: onnx.ModelProto) -> bytes:
    assert len(fresh.graph.node) == len(shipped.graph.node)
    for node, old in zip(fresh.graph.node, shipped.graph.node, strict=True):
        assert node.name == old.name and node.op_type == old.op_type
        traces = {m.key: m.value for m in old.metadata_props}
        for entry in node.metadata_props:
            if entry.key == STACK_TRACE:
                entry.value = traces[STACK_TRACE]
    graph_meta = {m.key: m.value for m in shipped.graph.metadata_props}
    for entry in fresh.graph.metadata_props:
        if entry.key == RANGES:
            entry.value = graph_meta[RANGES]
    return fresh.SerializeToString()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "tiny-imagenet"])
def test_re_export_of_a_shipped_model_is_byte_identical(name: str, tmp_path: Path) -> None:
    model_dir = ROOT / "models" / name
    manifest = load_manifest(model_dir)
    model = model_from_checkpoint(load_checkpoint(model_dir / "checkpoint.pt"))
    paths = build_graphs(model, manifest, tmp_path, manifest.producer.get("decoder_upsampling", "transpose"))  # type: ignore[arg-type]
    for graph in GRAPHS:
        shipped_path = model_dir / manifest.file(graph).path
        assert sha256_of(shipped_path) == manifest.file(graph).sha256  # the shipped file is untouched
        fresh, shipped = onnx.load(str(paths[graph])), onnx.load(str(shipped_path))
        assert ranges(fresh) == ranges(shipped) and ranges(fresh), graph
        rebuilt = with_shipped_debug_strings(fresh, shipped)
        assert hashlib.sha256(rebuilt).hexdigest() == manifest.file(graph).sha256, f"{name} {graph}.onnx"
