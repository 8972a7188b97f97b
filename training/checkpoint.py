"""Checkpoints: one file holding the config, weights, optimiser and RNG state.

A checkpoint alone rebuilds the model (`model_from_checkpoint`); that is what export relies on.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from training.model import VQVAE, ModelConfig

FORMAT_VERSION = 1


class CheckpointError(Exception):
    pass


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of format {FORMAT_VERSION}")
    return ckpt


def model_config_from(ckpt: dict[str, Any]) -> ModelConfig:
    stored = ckpt["config"]["model"]
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in stored.items() if k in known})


def model_from_checkpoint(ckpt: dict[str, Any]) -> VQVAE:
    """Rebuild the model from the stored config and load its weights; returned in eval mode."""
    model = VQVAE(model_config_from(ckpt))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def warm_start(model: VQVAE, path: str | os.PathLike[str]) -> list[str]:
    """Start `model` from another run's weights (`--init-from`): every tensor whose name and shape
    match is copied; a single-stage checkpoint seeds the first stage of a residual model
    (`quantizer.X` -> `quantizer.layers.0.X`). The encoder and decoder must match exactly; what is
    left (the other stages) keeps its fresh start. -> the names left fresh."""
    source = load_checkpoint(path)["model"]
    if model.quantizer.stages > 1 and not any(k.startswith("quantizer.layers.") for k in source):
        source = {k.replace("quantizer.", "quantizer.layers.0.", 1) if k.startswith("quantizer.") else k: v
                  for k, v in source.items()}
    target = model.state_dict()
    for name, tensor in target.items():
        theirs = source.get(name)
        if name.startswith(("encoder.", "decoder.")) and (theirs is None or theirs.shape != tensor.shape):
            raise CheckpointError(f"{path}: {name} does not match this model's architecture; --init-from needs "
                                  "the same encoder and decoder")
    taken = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(taken, strict=False)
    return sorted(set(target) - set(taken))
