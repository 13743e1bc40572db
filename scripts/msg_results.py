"""The README's MobileStyleGAN figures, from the runs' own records (never typed by hand).

Reads the JSON records `pulse-trt upsample` wrote for
  - faces the generator made itself (scripts/make_examples.py --generator mobilestylegan --count 16),
    downscaled to 32x32 and upsampled with default options (and, when given, with --duplicates 2);
  - the astronaut photo aligned and downscaled to 32x32 and 16x16 (--align);
and writes docs/example/mobilestylegan/faces.jpg (truth | LR input | PULSE for every face, a
small JPEG for the README) and docs/example/mobilestylegan/summary.md, whose text also replaces
the block between `<!-- msg-results:begin -->` and `<!-- msg-results:end -->` in README.md.

    python scripts/msg_results.py --faces /tmp/msg16 --runs /tmp/msg16_out [--dup2 /tmp/msg16_dup2] \
        --astronaut docs/example/mobilestylegan/astronaut32 docs/example/mobilestylegan/astronaut16
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "example" / "mobilestylegan"
BEGIN, END = "<!-- msg-results:begin -->", "<!-- msg-results:end -->"
CELL = 192


def records(folder: Path) -> list[dict]:
    recs = []
    for p in sorted(folder.rglob("*_pulse.json"), key=lambda p: _face_index(p.name)):  # one run, or one folder per face
        r = json.loads(p.read_text())
        r["_path"] = p
        recs.append(r)
    if not recs:
        raise SystemExit(f"no *_pulse.json records in {folder}")
    return recs


def _face_index(name: str) -> int:
    m = re.match(r"msg_face(\d*)_", name)
    return int(m.group(1) or 0) if m else 0


def gallery(faces: Path, runs: Path, recs: list[dict], path: Path, per_row: int = 4) -> None:
    """faces.jpg: per face, truth | LR (nearest) | PULSE, CELL px each, captioned with min L2."""
    n = len(recs)
    rows = -(-n // per_row)
    gap, cap = 6, 16
    w = per_row * (3 * CELL + 2 * 2) + (per_row + 1) * gap
    h = rows * (CELL + cap + gap) + gap
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, r in enumerate(recs):
        stem = Path(r["input"]).name.replace("_32x32.png", "")
        truth = Image.open(faces / f"{stem}_1024.png").convert("RGB").resize((CELL, CELL), Image.Resampling.LANCZOS)
        lr = Image.open(r["input"]).convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST)
        out = Image.open(r["_path"].parent / r["outputs"]["hr"]).convert("RGB").resize((CELL, CELL), Image.Resampling.LANCZOS)
        x0 = gap + (k % per_row) * (3 * CELL + 4 + gap)
        y0 = gap + (k // per_row) * (CELL + cap + gap)
        for j, im in enumerate((truth, lr, out)):
            canvas.paste(im, (x0 + j * (CELL + 2), y0 + cap))
        ok = "ok" if r["success"] else "missed eps"
        draw.text((x0 + 2, y0 + 2), f"{stem}: truth | LR 32 | PULSE, min L2 {r['min_l2']:.4f} ({ok})", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=88)


def seconds_per_image(recs: list[dict]) -> float:
    """Wall time of the search calls per image: each record's `seconds` covers its whole call
    (records of one call share it)."""
    calls = {(str(r["_path"].parent), r["seconds"]) for r in recs}
    return sum(s for (_, s) in calls) / len(recs)


def summary(recs, dup2, astronauts) -> str:
    n = len(recs)
    ok = sum(r["success"] for r in recs)
    eps = recs[0]["eps"]
    lines = [
        f"Faces the generator made itself (`python scripts/make_examples.py --generator mobilestylegan --count 16`), "
        f"downscaled to 32x32 with PULSE's bicubic operator and upsampled to 1024x1024 with the default options "
        f"(`pulse-trt upsample --generator mobilestylegan FACE_32x32.png`, one run per face): "
        f"**{ok} of {n}** reached eps = {eps:g}.",
    ]
    if dup2:
        ok2 = sum(r["success"] for r in dup2)
        lines[-1] += f" With `--duplicates 2`: **{ok2} of {len(dup2)}**."
    worst = max(recs, key=lambda r: r["min_l2"])
    lines += ["", f"Smallest L2 per face: median {np.median([r['min_l2'] for r in recs]):.5f}, worst "
                  f"{worst['min_l2']:.5f} ({Path(worst['input']).name}); "
                  f"{seconds_per_image(recs):.0f} s per image of search on the engine "
                  f"(backend {recs[0].get('backend', 'ort')}, 100 steps at batch 1; wall time of the search calls / "
                  f"faces, measured while the 2-core machine ran other engineers' jobs at a load average of 6-13, "
                  f"so several times a quiet machine's)."]
    if astronauts:
        lines += ["", "| input | success | min L2 (eps 0.002) | MSE of the PNG's downscale | best step | PSNR / SSIM vs the aligned 1024 crop |",
                  "|---|---|---:|---:|---:|---|"]
        for rec in astronauts:
            q = rec["quality"]
            lines.append(f"| astronaut, {rec['lr_size']}x{rec['lr_size']} | {str(rec['success']).lower()} | "
                         f"{rec['min_l2']:.5f} | {rec['output_l2_uint8']:.5f} | {rec['best_step']} of {rec['steps']} | "
                         f"{q['psnr']:.2f} dB / {q['ssim']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, required=True, help="folder of make_examples.py's faces")
    ap.add_argument("--runs", type=Path, required=True, help="upsample output folder, default options")
    ap.add_argument("--dup2", type=Path, default=None, help="upsample output folder, --duplicates 2")
    ap.add_argument("--astronaut", type=Path, nargs="*", default=[], help="upsample --align output folders")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    recs = records(args.runs)
    dup2 = records(args.dup2) if args.dup2 else None
    astronauts = [records(a)[0] for a in args.astronaut]
    gallery(args.faces, args.runs, recs, OUT / "faces.jpg")
    text = summary(recs, dup2, astronauts)
    (OUT / "summary.md").write_text(text)
    print(text)
    if not args.no_readme:
        readme = ROOT / "README.md"
        body = readme.read_text()
        if BEGIN in body and END in body:
            head, rest = body.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
            print(f"updated {readme}")


if __name__ == "__main__":
    main()
