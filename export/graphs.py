"""The three inference graphs, as thin torch modules over a trained VQVAE, and their ONNX export.

    encoder.onnx    image   float32 [N, C, H, W] in [0, 1]  -> latent  float32 [N, D, H/f, W/f]
    quantizer.onnx  latent  float32 [N, D, h, w]            -> indices int64   [N, h, w]  (rvq: [N, S, h, w])
    decoder.onnx    indices int64   [N, h, w] (rvq: [N, k, h, w], 1 ≤ k ≤ S) -> image float32 [N, C, f·h, f·w] in [0, 1]

N, H and W (h and w) are dynamic: the model is fully convolutional; so is k, the stage count a
residual-VQ decoder sums. f is the model's downsampling (4, 8 or 16). quantizer.onnx comes from
QUANTIZER_GRAPHS, one entry per quantizer kind (training/quantizers/kinds.py).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
import torch
from torch import nn

from export.quantizer_graphs import IndicesGraph, ResidualQuantizerGraph
from training.model import VQVAE
from training.quantizers.vq import VectorQuantizer

OPSET = 20


class EncoderGraph(nn.Module):
    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.encoder, self.offset = model.encoder, model.offset

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.offset:  # no Sub node for an uncentred model: its graph stays what it was before centring
            image = image - self.offset
        latent: torch.Tensor = self.encoder(image)  # (N, C, H, W) -> (N, D, H/f, W/f)
        return latent


class QuantizerGraph(nn.Module):
    """Nearest code as one Gemm and one ArgMin: argmin_k ‖e_k‖² − 2 z·e_k.

    The training quantizer's ‖z‖² term is the same for every k, so dropping it leaves the argmin
    unchanged, and −2 folds into the stored codebook: onnxruntime then runs Transpose, Gemm, ArgMin
    instead of eleven elementwise and reduction ops (27 % more quantizer calls per second at batch 1
    on this CPU). The parity gate compares its indices with the training quantizer's. With factorised
    codes (lookup_dim d) the latent is first projected, z = l2norm(W_in z_e), and searched among the
    K unit codes in d dimensions.
    """

    scaled_codebook_t: torch.Tensor
    code_norms: torch.Tensor

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        quantizer = model.quantizer
        if not isinstance(quantizer, VectorQuantizer):
            raise ValueError(f"QuantizerGraph needs a vector quantizer, not {type(quantizer).__name__}")
        codebook = quantizer.codes.detach()  # (K, d), unit rows for a cosine quantizer
        self.cosine = quantizer.cosine
        self.project_in: nn.Module | None = quantizer.project_in  # W_in: D -> d with lookup_dim, else None
        self.register_buffer("scaled_codebook_t", (-2 * codebook).t().contiguous())  # (d, K)
        self.register_buffer("code_norms", codebook.pow(2).sum(1))  # (K,)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.project_in is not None:
            latent = self.project_in(latent)  # (N, d, h, w)
        if self.cosine:  # the latent's own length does not change its nearest unit code, but its norm does
            latent = torch.nn.functional.normalize(latent, dim=1)
        n, d, h, w = latent.shape
        flat = latent.permute(0, 2, 3, 1).reshape(-1, d)  # (N*h*w, D)
        scores = torch.addmm(self.code_norms, flat, self.scaled_codebook_t)  # (N*h*w, K): ‖e‖² − 2 z·e
        return scores.argmin(1).reshape(n, h, w)  # (N, h, w) int64


# quantizer.onnx per quantizer kind: the model -> a module mapping latent (N, D, h, w) to int64 indices.
QUANTIZER_GRAPHS: dict[str, type[nn.Module]] = {
    "vq": QuantizerGraph,
    "fsq": IndicesGraph,
    "rvq": ResidualQuantizerGraph,
}


def subpixel_conv(transposed: nn.ConvTranspose2d) -> nn.Sequential:
    """ConvTranspose2d(kernel 4, stride 2, padding 1) as the equal 3×3 convolution to 4× the channels
    followed by a pixel shuffle. On an AVX-512 Xeon onnxruntime ran ConvTranspose at ~95 GFLOP/s and
    its blocked Conv at ~300, so the decoder was faster despite the zero taps (not so on AVX2: see
    DecoderGraph); the parity gate proves the rewritten graph equal to the trained decoder.

    Output row 2m + a reads input rows m − 1, m (a = 0: transposed-kernel rows 3, 1) or m, m + 1
    (a = 1: rows 2, 0); the same for columns. Kernel row r of the 3×3 convolution reads row m + r − 1.
    """
    k, s, p = transposed.kernel_size, transposed.stride, transposed.padding
    if (k, s, p) != ((4, 4), (2, 2), (1, 1)) or transposed.groups != 1 or transposed.bias is None:
        raise ValueError(f"subpixel_conv handles kernel 4, stride 2, padding 1 only, not {k}, {s}, {p}")
    weight = transposed.weight.detach()  # (C_in, C_out, 4, 4)
    c_in, c_out = weight.shape[:2]
    taps = {0: {0: 3, 1: 1}, 1: {1: 2, 2: 0}}  # output phase -> {3×3 kernel row: transposed-kernel row}
    kernel = torch.zeros(c_out, 2, 2, c_in, 3, 3)
    for a, rows in taps.items():
        for b, cols in taps.items():
            for r, ky in rows.items():
                for t, kx in cols.items():
                    kernel[:, a, b, :, r, t] = weight[:, :, ky, kx].t()
    conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)
    conv.weight = nn.Parameter(kernel.reshape(4 * c_out, c_in, 3, 3))  # channel o·4 + a·2 + b: PixelShuffle's order
    conv.bias = nn.Parameter(transposed.bias.detach().repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))


def with_subpixel_upsampling(decoder: nn.Module) -> nn.Module:
    """A copy of `decoder` with every transposed convolution rewritten by subpixel_conv."""
    rewritten = copy.deepcopy(decoder)
    for module in list(rewritten.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ConvTranspose2d):
                setattr(module, child_name, subpixel_conv(child))
    return rewritten


Upsample = Literal["transpose", "subpixel"]


class DecoderGraph(nn.Module):
    """Codebook lookup, decoder and the [0, 1] clamp, all inside the graph.

    `upsample`: "transpose" keeps the trained ConvTranspose layers (the faster form on AVX2 CPUs:
    +24 % decodes per second at batch 1, single-threaded, on this machine's EPYC); "subpixel" rewrites
    them as convolution + pixel shuffle (faster on AVX-512 Xeons, whose blocked convolution kernels
    outrun onnxruntime's ConvTranspose). Both are checked against the trained decoder by the parity gate.
    """

    def __init__(self, model: VQVAE, upsample: Upsample = "transpose") -> None:
        super().__init__()
        self.quantizer, self.offset = model.quantizer, model.offset
        self.decoder = with_subpixel_upsampling(model.decoder) if upsample == "subpixel" else model.decoder

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        vectors = self.quantizer.decode_from_indices(indices)  # (N, [k,] h, w) -> (N, D, h, w)
        image: torch.Tensor = self.decoder(vectors)  # (N, C, f·h, f·w)
        if self.offset:  # no Add node for an uncentred model, as before centring existed
            image = image + self.offset
        return image.clamp(0, 1)


@dataclass(frozen=True)
class GraphSpec:
    name: str
    module: nn.Module
    example: torch.Tensor
    input_name: str
    output_name: str
    input_dims: tuple[str, ...]  # readable names for the dims of the input, "" for a fixed one
    output_dims: tuple[str, ...]


def graph_specs(model: VQVAE, upsample: Upsample = "transpose") -> list[GraphSpec]:
    cfg, f, stages = model.cfg, model.downsample, model.quantizer.stages
    image = torch.rand(2, cfg.in_channels, 7 * f, 7 * f)
    latent = torch.randn(2, cfg.code_dim, 7, 7)
    grid = (2, stages, 7, 7) if stages > 1 else (2, 7, 7)  # rvq: every stage, the stage axis second
    indices = torch.randint(0, model.quantizer.codebook_size, grid)
    staged = ("N", "S", "h", "w") if stages > 1 else ("N", "h", "w")
    return [
        GraphSpec("encoder", EncoderGraph(model), image, "image", "latent", ("N", "", "H", "W"), ("N", "", "h", "w")),
        GraphSpec("quantizer", QUANTIZER_GRAPHS[model.quantizer.kind](model), latent, "latent", "indices",
                  ("N", "", "h", "w"), staged),
        GraphSpec("decoder", DecoderGraph(model, upsample), indices, "indices", "image",
                  ("N", "k", "h", "w") if stages > 1 else staged, ("N", "", "H", "W")),
    ]


def _dynamic_shapes(spec: GraphSpec, downsample: int) -> dict[str, dict[int, object]]:
    n = torch.export.Dim("N", min=1, max=4096)
    if spec.name == "encoder":  # H and W must be multiples of the total stride
        h, w = torch.export.Dim("h", min=1, max=1024), torch.export.Dim("w", min=1, max=1024)
        return {spec.input_name: {0: n, 2: downsample * h, 3: downsample * w}}
    h, w = torch.export.Dim("h", min=1, max=1024), torch.export.Dim("w", min=1, max=1024)
    if spec.name == "quantizer":
        return {spec.input_name: {0: n, 2: h, 3: w}}
    if spec.example.ndim == 4:  # rvq decoder: any first k of the S stages
        k = torch.export.Dim("k", min=1, max=spec.example.shape[1])
        return {spec.input_name: {0: n, 1: k, 2: h, 3: w}}
    return {spec.input_name: {0: n, 1: h, 2: w}}


def _name_dims(value_info: onnx.ValueInfoProto, names: tuple[str, ...]) -> None:
    """Replace the exporter's symbolic dim names ("4*h", "s0") by the contract's (N, H, W, h, w)."""
    for dim, name in zip(value_info.type.tensor_type.shape.dim, names, strict=True):
        if name:
            dim.dim_param = name


def export_graph(spec: GraphSpec, path: Path, downsample: int = 4) -> None:
    """Export one graph with dynamic N, H, W (and k) to `path` (opset OPSET), quietly; `downsample`
    is the model's f (the encoder's H and W are multiples of it)."""
    spec.module.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            spec.module, (spec.example,), input_names=[spec.input_name], output_names=[spec.output_name],
            dynamic_shapes=_dynamic_shapes(spec, downsample), opset_version=OPSET, dynamo=True, verbose=False,
        )
    assert program is not None
    proto = program.model_proto
    _name_dims(proto.graph.input[0], spec.input_dims)
    _name_dims(proto.graph.output[0], spec.output_dims)
    onnx.save(proto, str(path))


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Store key facts in the ONNX file's metadata_props (readable from onnxruntime's modelmeta)."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
