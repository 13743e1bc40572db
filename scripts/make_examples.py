"""Make example inputs from a generator's own faces, so PULSE can find a face that downscales to
them (the issues' acceptance tests).

dcgan (default), for face k (k = 0 .. count-1):
  1. z_k = torch.randn(1, 1, 100) from torch.Generator().manual_seed(seed + k)
  2. x_k = clamp((G(z_k) + 1) / 2, 0, 1)                          [3, 64, 64], the ground truth
  3. y_k = PULSE's bicubic downscale (engine.bicubic) of x_k to 16x16 and 8x8
  4. all rounded to 8 bits and saved as PNG:
     NAME_64.png (truth), NAME_16x16.png, NAME_8x8.png, NAME = "face" for k = 0 else f"face{k}".

mobilestylegan (weights fetched on first use): z_k = torch.randn(1, 512) seeded the same way,
w_k = mean + 0.7 (mapping(z_k) - mean) (truncation 0.7 around the mean of 4096 mapped latents,
seed 0, as the random-face package draws its faces), x_k = its 1024 px image; LR sizes 32 and
16; files msg_face{k}_1024.png, _32x32.png, _16x16.png ("msg_face" for k = 0).

    python scripts/make_examples.py                      # examples/face_{64,16x16,8x8}.png
    python scripts/make_examples.py --count 8 --out /tmp/faces
    python scripts/make_examples.py --generator mobilestylegan --out examples   # examples/msg_face_*.png
    python scripts/make_examples.py --generator mobilestylegan --count 16 --out /tmp/msg16
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


TRUNCATION = 0.7


def make_faces(count: int, seed: int, generator: str = "dcgan") -> np.ndarray:
    """[count, 3, R, R] float64 in [0, 1]: the generator's faces of seeds seed .. seed+count-1."""
    if generator == "mobilestylegan":
        from pulse_trt.weights import resolve_weights  # noqa: PLC0415

        g = load_generator("mobilestylegan", resolve_weights("mobilestylegan", log=print))
        with torch.no_grad():
            mean = g.mapping(torch.randn(4096, 512, generator=torch.Generator().manual_seed(0))).mean(0)  # [512]
    else:
        g = load_generator("dcgan")
    faces = []
    for k in range(count):
        gen = torch.Generator().manual_seed(seed + k)
        with torch.no_grad():
            if generator == "mobilestylegan":
                w = mean + TRUNCATION * (g.mapping(torch.randn(1, 512, generator=gen)) - mean)  # [1, 512]
                faces.append(g.image01(w[:, None], []).clamp(0, 1)[0].double().numpy())  # [3, 1024, 1024]
            else:
                z = torch.randn(1, 1, g.spec.latent_dim, generator=gen)  # [1, 1, 100]
                faces.append(g.image01(z, []).clamp(0, 1)[0].double().numpy())  # [3, 64, 64]
    return np.stack(faces)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "examples")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--generator", choices=("dcgan", "mobilestylegan"), default="dcgan")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    faces = make_faces(args.count, args.seed, args.generator)  # [K, 3, R, R]
    truth = np.rint(faces * 255) / 255  # what the HR PNG holds
    res = truth.shape[-1]
    stem, sides = ("msg_face", (32, 16)) if args.generator == "mobilestylegan" else ("face", (16, 8))
    for k in range(args.count):
        name = stem if k == 0 else f"{stem}{k}"
        save_png(truth[k], args.out / f"{name}_{res}.png")
        for side in sides:
            lr = downscale(truth[k:k + 1], res // side)[0]  # [3, side, side]
            save_png(lr, args.out / f"{name}_{side}x{side}.png")
        print(f"{args.out / name}_{{{res},{sides[0]}x{sides[0]},{sides[1]}x{sides[1]}}}.png  (seed {args.seed + k})")


if __name__ == "__main__":
    main()
