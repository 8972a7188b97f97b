"""Write the demo page's sample strips: 64 real test images per model, side by side (S·64 × S PNG):
MNIST and Fashion-MNIST test digits, and for the colour model 64×64 tiles of the Kodak photos
(released for unrestricted use, unlike Tiny ImageNet's ImageNet terms; never trained on).

    python scripts/make_demo_samples.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from datasources.idx_files import load_split

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
    kodak = Path(args.data_dir or "../shared/data") / "kodak"
    tiles = []
    for i in range(1, 25):  # each photo shrunk to 192×128 (or 128×192), then its first 64×64 tiles
        photo = Image.open(kodak / f"kodim{i:02d}.png").convert("RGB")
        small = np.asarray(photo.resize((photo.width // 4, photo.height // 4), Image.Resampling.LANCZOS))
        tiles += [small[r : r + 64, c : c + 64] for r in range(0, 128, 64) for c in range(0, 128, 64)][:3]
    Image.fromarray(np.concatenate(tiles[:64], axis=1)).save(OUT / "samples-tiny-imagenet.png", optimize=True)
    print(f"tiny-imagenet: {OUT / 'samples-tiny-imagenet.png'}")


if __name__ == "__main__":
    main()
