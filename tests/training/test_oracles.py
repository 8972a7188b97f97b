"""Our FSQ and residual VQ against lucidrains/vector-quantize-pytorch, the maintained library, as an
independent oracle: the same inputs and codebooks must give the same indices and outputs."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
import torch

from training.quantizers.fsq import FiniteScalarQuantizer
from training.quantizers.rvq import ResidualVectorQuantizer


def library() -> ModuleType:
    """vector_quantize_pytorch, imported when a test first needs it: with einx and sympy it costs
    seconds, which every collection of the suite would pay."""
    return importlib.import_module("vector_quantize_pytorch")


def channels_last(z: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) -> (N, h·w, D), the library's sequence layout."""
    return z.permute(0, 2, 3, 1).reshape(z.shape[0], -1, z.shape[1])


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (8, 8, 8, 6, 5), (7, 5, 5, 5, 5), (3, 4)])
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_fsq_matches_the_library(levels: tuple[int, ...], scale: float) -> None:
    torch.manual_seed(len(levels))
    ours = FiniteScalarQuantizer(levels).eval()
    oracle = library().FSQ(list(levels)).eval()
    z = torch.randn(4, len(levels), 6, 5) * scale  # (N, d, h, w): scale 3 saturates the tanh
    quantized, indices, losses = ours(z)
    expected, expected_indices = oracle(channels_last(z))
    assert torch.equal(indices.reshape(4, -1), expected_indices.long())
    assert torch.allclose(channels_last(quantized), expected, atol=1e-6)
    assert torch.equal(ours.quantize_indices(z), indices)
    assert float(losses.codebook) == float(losses.commitment) == 0.0  # FSQ: no codebook, no commitment
    every = torch.arange(ours.codebook_size).view(1, 1, -1)  # (1, 1, K): every index decodes as the library's
    assert torch.allclose(channels_last(ours.decode_from_indices(every)), oracle.indices_to_codes(every[0]))


def test_fsq_with_projections_matches_the_library() -> None:
    torch.manual_seed(0)
    ours = FiniteScalarQuantizer((8, 5, 5, 5), dim=16).eval()
    oracle = library().FSQ([8, 5, 5, 5], dim=16).eval()
    assert ours.project_in is not None and ours.project_out is not None
    with torch.no_grad():  # the same W_in, W_out: our 1×1 convolutions into the library's linear layers
        oracle.project_in.weight.copy_(ours.project_in.weight[:, :, 0, 0])
        oracle.project_in.bias.copy_(ours.project_in.bias)
        oracle.project_out.weight.copy_(ours.project_out.weight[:, :, 0, 0])
        oracle.project_out.bias.copy_(ours.project_out.bias)
    z = torch.randn(3, 16, 4, 4)
    quantized, indices, _ = ours(z)
    expected, expected_indices = oracle(channels_last(z))
    assert torch.equal(indices.reshape(3, -1), expected_indices.long())
    assert torch.allclose(channels_last(quantized), expected, atol=1e-5)


@pytest.mark.parametrize("stages, size, dim", [(4, 64, 8), (2, 512, 16)])
def test_residual_vq_matches_the_library(stages: int, size: int, dim: int) -> None:
    torch.manual_seed(stages)
    ours = ResidualVectorQuantizer(stages, size, dim, data_init=False, restart_threshold=0).eval()
    oracle = library().ResidualVQ(dim=dim, num_quantizers=stages, codebook_size=size, quantize_dropout=True).eval()
    with torch.no_grad():
        for s, (layer, theirs) in enumerate(zip(ours.layers, oracle.layers, strict=True)):
            layer.codebook.copy_(torch.randn(size, dim) / (s + 1))  # finer codes at later stages
            theirs._codebook.embed.copy_(layer.codebook[None])  # (1, K, D)
    z = torch.randn(3, dim, 5, 7)
    quantized, indices, _ = ours(z)  # indices (N, S, h, w)
    expected, expected_indices, _ = oracle(channels_last(z))  # (N, h·w, D), (N, h·w, S)
    assert torch.equal(indices.permute(0, 2, 3, 1).reshape(3, -1, stages), expected_indices)
    assert torch.allclose(channels_last(quantized), expected, atol=1e-5)
    assert torch.equal(ours.quantize_indices(z), indices)
    for k in range(1, stages + 1):  # the first k stages decode as the library decodes them
        ours_k = ours.decode_from_indices(indices[:, :k])
        theirs_k = oracle.get_output_from_indices(expected_indices[..., :k])
        assert torch.allclose(channels_last(ours_k), theirs_k, atol=1e-5), k
