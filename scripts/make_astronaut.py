"""Write examples/astronaut.png: scikit-image's astronaut portrait (Eileen Collins, NASA, public
domain; skimage.data.astronaut(), 512x512), resized with Pillow's LANCZOS to --size px, for the
README's `pulse-trt upsample --align` example. scikit-image is a dev dependency.

    python scripts/make_astronaut.py                # examples/astronaut.png, 256x256
    python scripts/make_astronaut.py --size 512 --out /tmp/astronaut.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="side of the written photo in px (default: 256; 512 = original)")
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "astronaut.png", help="PNG to write")
    args = parser.parse_args(argv)
    from skimage import data  # noqa: PLC0415

    photo = Image.fromarray(data.astronaut(), "RGB")  # [512, 512, 3] uint8
    if args.size != photo.width:
        photo = photo.resize((args.size, args.size), Image.Resampling.LANCZOS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    photo.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.size}x{args.size})")


if __name__ == "__main__":
    main()
