"""Make the example inputs in examples/ from the embedded dcgan: faces the generator itself made,
so PULSE can find a face that downscales to them (the issue's acceptance test).

For face k (k = 0 .. count-1):
  1. z_k = torch.randn(1, 1, 100) from torch.Generator().manual_seed(seed + k)
  2. x_k = clamp((G(z_k) + 1) / 2, 0, 1)                          [3, 64, 64], the ground truth
  3. y_k = PULSE's bicubic downscale (engine.bicubic) of x_k to 16x16 and 8x8
  4. all rounded to 8 bits and saved as PNG:
     NAME_64.png (truth), NAME_16x16.png, NAME_8x8.png, NAME = "face" for k = 0 else f"face{k}".

    python scripts/make_examples.py                      # examples/face_{64,16x16,8x8}.png
    python scripts/make_examples.py --count 8 --out /tmp/faces
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pulse_trt.engine.bicubic import downscale
from pulse_trt.engine.images import save_png
from pulse_trt.export.generators import load_generator

ROOT = Path(__file__).resolve().parents[1]


def make_faces(count: int, seed: int) -> np.ndarray:
    """[count, 3, 64, 64] float64 in [0, 1]: dcgan faces of seeds seed .. seed+count-1."""
    g = load_generator("dcgan")
    faces = []
    for k in range(count):
        z = torch.randn(1, 1, g.spec.latent_dim, generator=torch.Generator().manual_seed(seed + k))  # [1, 1, 100]
        with torch.no_grad():
            faces.append(g.image01(z, []).clamp(0, 1)[0].double().numpy())  # [3, 64, 64]
    return np.stack(faces)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "examples")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2020)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    faces = make_faces(args.count, args.seed)  # [K, 3, 64, 64]
    truth = np.rint(faces * 255) / 255  # what the 64 px PNG holds
    for k in range(args.count):
        name = "face" if k == 0 else f"face{k}"
        save_png(truth[k], args.out / f"{name}_64.png")
        for side in (16, 8):
            lr = downscale(truth[k:k + 1], 64 // side)[0]  # [3, side, side]
            save_png(lr, args.out / f"{name}_{side}x{side}.png")
        print(f"{args.out / name}_{{64,16x16,8x8}}.png  (seed {args.seed + k})")


if __name__ == "__main__":
    main()
