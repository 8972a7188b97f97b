"""The parity gate: onnxruntime must compute what PyTorch computes, on real images.

Each graph is run by both on the same inputs:
- encoder: max |latent_ort − latent_torch| ≤ 1e-4;
- quantizer: indices identical, except at near-ties, where float32 rounding legitimately decides;
  each quantizer kind defines its own (`near_ties`, training/quantizers/): VQ, two nearest codes
  within a tiny relative distance; FSQ, a value within float rounding of a .5 rounding boundary;
  residual VQ, such a VQ tie at any stage (a flip there changes every later residual, so all of that
  cell's stages are excused). Ties are counted and reported; any mismatch that is not a tie fails,
  and ≥ 99.9 % of all indices must match;
- decoder: max |image_ort − image_torch| ≤ 1e-4, for residual VQ at every stage count k = 1..S.
The whole pipeline (image -> ORT encoder -> ORT quantizer) is also compared with PyTorch's indices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from training.model import VQVAE
from training.quantizers.codebooks import near_tie_rows

LATENT_TOLERANCE = 1e-4
IMAGE_TOLERANCE = 1e-4
MIN_INDEX_MATCH = 0.999


class ParityError(Exception):
    """ONNX and PyTorch disagree; the message carries every measured difference."""


@dataclass(frozen=True)
class ParityReport:
    images: int
    latent_max_abs_diff: float
    image_max_abs_diff: float
    indices_compared: int
    index_mismatches: int  # quantizer graph alone, same latent in
    near_ties: int  # positions whose two nearest codes tie (see TIE_RELATIVE_GAP)
    mismatches_outside_ties: int
    pipeline_index_mismatches: int  # image -> encoder -> quantizer, both ends in ORT
    index_match_fraction: float
    large_images: int = 0  # of them at a larger size, each compared alone and then batched
    decoder_stage_counts: int = 1  # residual VQ: the decoder compared at every k = 1..S

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, other: ParityReport) -> ParityReport:
        """Both measurements as one: the larger differences, the summed counts."""
        total = self.indices_compared + other.indices_compared
        mismatches = self.index_mismatches + other.index_mismatches
        return ParityReport(
            images=self.images + other.images,
            latent_max_abs_diff=max(self.latent_max_abs_diff, other.latent_max_abs_diff),
            image_max_abs_diff=max(self.image_max_abs_diff, other.image_max_abs_diff),
            indices_compared=total, index_mismatches=mismatches, near_ties=self.near_ties + other.near_ties,
            mismatches_outside_ties=self.mismatches_outside_ties + other.mismatches_outside_ties,
            pipeline_index_mismatches=self.pipeline_index_mismatches + other.pipeline_index_mismatches,
            index_match_fraction=1 - mismatches / max(1, total),
            decoder_stage_counts=max(self.decoder_stage_counts, other.decoder_stage_counts))

    def failures(self) -> list[str]:
        problems = []
        if not self.latent_max_abs_diff <= LATENT_TOLERANCE:
            problems.append(f"latent max abs diff {self.latent_max_abs_diff:.3g} > {LATENT_TOLERANCE}")
        if not self.image_max_abs_diff <= IMAGE_TOLERANCE:
            problems.append(f"decoder image max abs diff {self.image_max_abs_diff:.3g} > {IMAGE_TOLERANCE}")
        if self.mismatches_outside_ties:
            problems.append(f"{self.mismatches_outside_ties} index mismatches that are not near-ties")
        if self.index_match_fraction < MIN_INDEX_MATCH:
            problems.append(f"indices match {self.index_match_fraction:.4%} < {MIN_INDEX_MATCH:.1%}")
        return problems


def _sessions(paths: dict[str, Path]) -> dict[str, ort.InferenceSession]:
    return {name: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for name, p in paths.items()}


def near_tie_mask(latent: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) latents -> (N, h, w) bool: the two nearest codes are a float32 coin toss."""
    flat = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])  # (M, D)
    return near_tie_rows(flat, codebook).view(latent.shape[0], latent.shape[2], latent.shape[3])


def _stage_counts(model: VQVAE) -> list[int | None]:
    """The decoder inputs to compare: every first k stages of a residual VQ, else the one grid."""
    stages = model.quantizer.stages
    return list(range(1, stages + 1)) if stages > 1 else [None]


@torch.no_grad()
def measure_parity(model: VQVAE, paths: dict[str, Path], images_u8: np.ndarray, batch: int = 500) -> ParityReport:
    """Run PyTorch and onnxruntime side by side on uint8 images (N, H, W[, C]); -> the differences."""
    model.eval()
    sessions = _sessions(paths)
    latent_diff = image_diff = 0.0
    mismatches = ties = outside = pipeline = total = 0
    channel_last = images_u8 if images_u8.ndim == 4 else images_u8[..., None]  # (N, H, W, C)
    for start in range(0, len(images_u8), batch):
        x = torch.tensor(channel_last[start : start + batch], dtype=torch.float32).div_(255).permute(0, 3, 1, 2)
        x = x.contiguous()  # (B, C, H, W)
        latent = model.encode(x)  # (B, D, h, w)
        indices = model.quantizer.quantize_indices(latent)  # (B, h, w), or (B, S, h, w) for rvq

        ort_latent = sessions["encoder"].run(["latent"], {"image": x.numpy()})[0]
        ort_indices = sessions["quantizer"].run(["indices"], {"latent": latent.numpy()})[0]
        ort_pipeline = sessions["quantizer"].run(["indices"], {"latent": ort_latent})[0]
        for k in _stage_counts(model):  # rvq: the first k stages, k = 1..S
            chosen = indices if k is None else indices[:, :k].contiguous()
            image = model.decode_from_indices(chosen)  # (B, C, H, W)
            ort_image = sessions["decoder"].run(["image"], {"indices": chosen.numpy()})[0]
            image_diff = max(image_diff, float(np.abs(ort_image - image.numpy()).max()))

        latent_diff = max(latent_diff, float(np.abs(ort_latent - latent.numpy()).max()))
        differs = torch.from_numpy(ort_indices != indices.numpy())
        tie = model.quantizer.near_ties(latent)  # (B, h, w)
        if differs.ndim == 4:  # rvq: a tie at any stage excuses the cell's every stage
            tie = tie[:, None].expand_as(differs)
        mismatches += int(differs.sum())
        ties += int(tie.sum())
        outside += int((differs & ~tie).sum())
        pipeline += int((ort_pipeline != indices.numpy()).sum())
        total += indices.numel()
    return ParityReport(
        images=len(images_u8), latent_max_abs_diff=latent_diff, image_max_abs_diff=image_diff,
        indices_compared=total, index_mismatches=mismatches, near_ties=ties, mismatches_outside_ties=outside,
        pipeline_index_mismatches=pipeline, index_match_fraction=1 - mismatches / max(1, total),
        decoder_stage_counts=len(_stage_counts(model)),
    )


def check_parity(model: VQVAE, paths: dict[str, Path], images_u8: np.ndarray,
                 large_u8: np.ndarray | None = None) -> ParityReport:
    """measure_parity on `images_u8` (the training size, in batches) and on `large_u8` (a larger
    size, one image at a time and then all at once), raising ParityError with every measured
    difference when a bound is broken."""
    report = measure_parity(model, paths, images_u8)
    if large_u8 is not None:
        report = report.merged(measure_parity(model, paths, large_u8, batch=1))
        report = report.merged(measure_parity(model, paths, large_u8, batch=len(large_u8)))
        report = replace(report, images=len(images_u8), large_images=len(large_u8))
    problems = report.failures()
    if problems:
        raise ParityError(
            "ONNX parity check failed: " + "; ".join(problems)
            + f" (latent max diff {report.latent_max_abs_diff:.3g}, image max diff {report.image_max_abs_diff:.3g},"
            f" {report.index_mismatches}/{report.indices_compared} indices differ, {report.near_ties} near-ties)"
        )
    return report
