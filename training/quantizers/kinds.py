"""The registry of quantizer kinds: `--model.quantizer NAME` -> its class (quantizers/seam.py).

Adding a kind: one file in this package with a Quantizer subclass (from_config, check), one line
here, and one line in export/graphs.py's QUANTIZER_GRAPHS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training.quantizers.fsq import FiniteScalarQuantizer
from training.quantizers.rvq import ResidualVectorQuantizer
from training.quantizers.seam import Quantizer
from training.quantizers.vq import VectorQuantizer

if TYPE_CHECKING:
    from training.model import ModelConfig

QUANTIZERS: dict[str, type[Quantizer]] = {
    "vq": VectorQuantizer,
    "fsq": FiniteScalarQuantizer,
    "rvq": ResidualVectorQuantizer,
}


def check_quantizer_config(cfg: ModelConfig) -> None:
    """Clear ValueErrors for a kind that does not exist or options the kind cannot take."""
    if cfg.quantizer not in QUANTIZERS:
        raise ValueError(f"--model.quantizer must be one of {', '.join(QUANTIZERS)}, not {cfg.quantizer!r}")
    if cfg.quantizer != "fsq" and cfg.fsq_levels:
        raise ValueError(f"--model.fsq-levels is for --model.quantizer fsq, not {cfg.quantizer}")
    if cfg.quantizer != "rvq" and cfg.stages != 1:
        raise ValueError(f"--model.stages is for --model.quantizer rvq, not {cfg.quantizer}")
    if cfg.stages < 1:
        raise ValueError(f"--model.stages must be at least 1, not {cfg.stages}")
    QUANTIZERS[cfg.quantizer].check(cfg)


def build_quantizer(cfg: ModelConfig) -> Quantizer:
    return QUANTIZERS[cfg.quantizer].from_config(cfg)
