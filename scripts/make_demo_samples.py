"""Write the demo page's sample strips: 64 real test images per model, side by side (28·64 × 28 PNG).

    python scripts/make_demo_samples.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from training.data import load_split

OUT = Path(__file__).resolve().parents[1] / "service" / "static" / "demo"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    for dataset in ("mnist", "fashion-mnist"):
        images = load_split(dataset, "test", args.data_dir)[0][::156][:64]  # evenly spread over the test set
        strip = np.concatenate(list(images), axis=1)  # (28, 64 * 28)
        Image.fromarray(strip).save(OUT / f"samples-{dataset}.png", optimize=True)
        print(f"{dataset}: {OUT / f'samples-{dataset}.png'}")


if __name__ == "__main__":
    main()
