"""What the exported graphs need at serving time, recorded in the manifest's `resources`:

- working memory per pixel of a run: every intermediate tensor of the graph at a reference size,
  from ONNX shape inference, summed with none reused (an upper bound on what onnxruntime holds);
- the halo, in grid cells, that makes tiled runs exact: the receptive field of the encoder (input
  pixels -> latent cell) and of the decoder (grid cells -> output pixels), from the modules'
  kernels, strides and padding; then checked on the exported graphs, tiles against a whole image.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, shape_inference
from torch import nn

from contract import ContractError
from contract.manifest import GRAPHS, MANIFEST_NAME, ResourceSpec, load_manifest, verify_files
from export.parity import ParityError
from training.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from training.model import VQVAE, ResidualBlock

REFERENCE_SIDE = 64  # input pixels per side for the shape-inference size estimate
ELEMENT_BYTES = {TensorProto.FLOAT: 4, TensorProto.INT64: 8, TensorProto.INT32: 4, TensorProto.BOOL: 1,
                 TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.UINT8: 1}


def tensor_bytes_per_pixel(path: Path, input_shape: tuple[int, ...], pixels: int) -> float:
    """Bytes of every tensor (inputs, intermediates, outputs) of the graph at `input_shape`, per pixel."""
    model = onnx.load(str(path))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, input_shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(model, strict_mode=True).graph
    total = 0
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = info.type.tensor_type
        dims = [d.dim_value for d in tensor.shape.dim]
        if not dims or any(d <= 0 for d in dims):  # unknown after inference: count it as the input's size
            dims = list(input_shape)
        total += math.prod(dims) * ELEMENT_BYTES.get(tensor.elem_type, 8)
    return total / pixels


def influence_radius(module: nn.Module, jump: float = 1.0) -> tuple[float, float]:
    """(radius, jump) of a chain of layers: how far, in input units, an output cell reads on either
    side of its own position, and the input units per output cell. Unknown layers raise."""
    if isinstance(module, nn.Sequential):
        radius = 0.0
        for child in module:
            extra, jump = influence_radius(child, jump)
            radius += extra
        return radius, jump
    if isinstance(module, ResidualBlock):  # x + block(x): the block's reach, same resolution
        return influence_radius(module.block, jump)[0], jump
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        k, s, p, d = (int(module.kernel_size[0]), int(module.stride[0]), int(module.padding[0]),
                      int(module.dilation[0]))
        reach = max(p, (k - 1) * d - p)
        if isinstance(module, nn.Conv2d):
            return reach * jump, jump * s
        return reach / s * jump, jump / s
    if isinstance(module, nn.ReLU | nn.Identity | nn.LeakyReLU | nn.SiLU | nn.GELU | nn.Tanh | nn.Sigmoid):
        return 0.0, jump
    raise ValueError(f"no receptive-field rule for {type(module).__name__}; add one before exporting")


def halos(model: VQVAE, downsample: int) -> tuple[int, int]:
    """(encoder halo, decoder halo) in grid cells, rounded up."""
    encoder_px, _ = influence_radius(model.encoder.net)  # input pixels
    decoder_cells, _ = influence_radius(model.decoder.net)  # grid cells
    return math.ceil(encoder_px / downsample), math.ceil(decoder_cells)


def _run(session: ort.InferenceSession, array: np.ndarray) -> np.ndarray:
    result: np.ndarray = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(array)})[0]
    return result


def check_tiles_are_exact(paths: dict[str, Path], spec: ResourceSpec, channels: int, downsample: int) -> None:
    """Tiles cut with the halo, run alone and cropped, must equal the whole run bit for bit."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    encoder, quantizer, decoder = (ort.InferenceSession(str(paths[g]), options, providers=cpu)
                                   for g in ("encoder", "quantizer", "decoder"))
    h, w = 24, 20  # grid cells: a 3×2 grid of 8×10 cores (96×80 pixels)
    image = np.random.default_rng(0).random((1, channels, h * downsample, w * downsample), dtype=np.float32)
    latent = _run(encoder, image)
    codes = _run(quantizer, latent)
    pictures = _run(decoder, codes)
    for r0 in range(0, h, 8):
        for c0 in range(0, w, 10):
            rows = slice(max(0, r0 - spec.encoder_halo), min(h, r0 + 8 + spec.encoder_halo))
            cols = slice(max(0, c0 - spec.encoder_halo), min(w, c0 + 10 + spec.encoder_halo))
            tile = _run(encoder, image[:, :, rows.start * downsample : rows.stop * downsample,
                                       cols.start * downsample : cols.stop * downsample])
            core = tile[:, :, r0 - rows.start : r0 - rows.start + 8, c0 - cols.start : c0 - cols.start + 10]
            if not np.array_equal(core, latent[:, :, r0 : r0 + 8, c0 : c0 + 10]):
                raise ParityError(f"encoder halo {spec.encoder_halo} is too small: tile at cell ({r0}, {c0}) differs "
                                  f"by {np.abs(core - latent[:, :, r0:r0 + 8, c0:c0 + 10]).max():.3g}")
            rows = slice(max(0, r0 - spec.decoder_halo), min(h, r0 + 8 + spec.decoder_halo))
            cols = slice(max(0, c0 - spec.decoder_halo), min(w, c0 + 10 + spec.decoder_halo))
            out = _run(decoder, codes[..., rows, cols])  # (1, [S,] rows, cols)
            top, left = (r0 - rows.start) * downsample, (c0 - cols.start) * downsample
            core = out[:, :, top : top + 8 * downsample, left : left + 10 * downsample]
            whole = pictures[:, :, r0 * downsample : (r0 + 8) * downsample, c0 * downsample : (c0 + 10) * downsample]
            if not np.array_equal(core, whole):
                raise ParityError(f"decoder halo {spec.decoder_halo} is too small: tile at cell ({r0}, {c0}) differs "
                                  f"by {np.abs(core - whole).max():.3g}")


def measure_resources(model: VQVAE, paths: dict[str, Path], downsample: int) -> ResourceSpec:
    side, cfg = REFERENCE_SIDE, model.cfg
    grid = side // downsample
    pixels = side * side
    encode = (tensor_bytes_per_pixel(paths["encoder"], (1, cfg.in_channels, side, side), pixels)
              + tensor_bytes_per_pixel(paths["quantizer"], (1, cfg.code_dim, grid, grid), pixels))
    stages = model.quantizer.stages  # rvq's decoder is measured with all S stages
    decode = tensor_bytes_per_pixel(paths["decoder"], (1, stages, grid, grid) if stages > 1 else (1, grid, grid),
                                    pixels)
    encoder_halo, decoder_halo = halos(model, downsample)
    spec = ResourceSpec(encode_bytes_per_pixel=round(encode, 1), decode_bytes_per_pixel=round(decode, 1),
                        encoder_halo=encoder_halo, decoder_halo=decoder_halo)
    check_tiles_are_exact(paths, spec, cfg.in_channels, downsample)
    return spec


def refresh(model_dir: Path) -> ResourceSpec:
    """Measure and record `resources` for an already exported model directory, from its own graphs
    and PyTorch weights; the graphs must still match the manifest's sha256s. model.json is replaced
    atomically; nothing else changes (so existing code streams stay decodable)."""
    manifest = load_manifest(model_dir)
    verify_files(manifest, model_dir)
    if manifest.pytorch is None:
        raise ContractError(f"{manifest.name}: model.json lists no PyTorch weights to measure from")
    model = model_from_checkpoint(load_checkpoint(model_dir / manifest.pytorch.path))
    paths = {graph: model_dir / manifest.file(graph).path for graph in GRAPHS}
    spec = measure_resources(model, paths, manifest.downsample)
    tmp = model_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.model_copy(update={"resources": spec}).model_dump_json(indent=2) + "\n")
    os.replace(tmp, model_dir / MANIFEST_NAME)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.resources", description=refresh.__doc__)
    parser.add_argument("model_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for model_dir in args.model_dirs:
        try:
            spec = refresh(model_dir)
        except (ContractError, ParityError, CheckpointError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{model_dir}: {spec.model_dump_json()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
