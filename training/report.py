"""Finished training runs -> the markdown table that docs/training.md quotes.

    python -m training.report runs/mnist runs/mnist-ema runs/mnist-norestart

Each run directory must hold the eval.json a finished run writes (full test set) and its ckpt.pt
(for the command, so the table says exactly which flags differ). Numbers are copied, never retyped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HEADER = ("run", "command", "quantizer options", "steps", "train time (s)", "MSE", "PSNR (dB)", "8-bit PSNR (dB)",
          "SSIM", "codes used", "perplexity")


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The final test metrics of one run, plus its command (from the checkpoint)."""
    eval_path = run_dir / "eval.json"
    if not eval_path.is_file():
        raise FileNotFoundError(f"{eval_path}: no eval.json (has the run finished?)")
    metrics: dict[str, Any] = json.loads(eval_path.read_text())
    command, options = "", ""
    if (run_dir / "ckpt.pt").is_file():
        from training.checkpoint import load_checkpoint  # torch only when a checkpoint is there

        ckpt = load_checkpoint(run_dir / "ckpt.pt")
        command, options = ckpt.get("command", ""), quantizer_options(ckpt["config"]["model"])
    return {"run": run_dir.name, "command": command, "options": options, **metrics}


def quantizer_options(model: dict[str, Any]) -> str:
    """The quantizer options a run really used (from its stored config, whatever the defaults are now)."""
    restart = f"restart < {model['restart_threshold']:g}" if model["restart_threshold"] > 0 else "no restart"
    return ", ".join([
        "EMA codebook" if model["ema"] else "codebook loss",
        "k-means++ init" if model["data_init"] else "random init",
        restart,
    ])


def table_row(s: dict[str, Any]) -> str:
    cells = (s["run"], f"`{s['command']}`", s.get("options", ""), f"{s['step']:,}", f"{s['train_seconds']:.1f}",
             f"{s['mse']:.5f}", f"{s['psnr_dataset']:.2f}", f"{s['psnr_8bit_mean']:.2f}", f"{s['ssim']:.4f}",
             f"{s['codes_used_count']} ({s['codes_used']:.1%})", f"{s['perplexity']:.1f}")
    return "| " + " | ".join(cells) + " |"


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + [table_row(s) for s in summaries])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    args = parser.parse_args(argv)
    try:
        print(markdown_table([run_summary(r) for r in args.runs]))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
