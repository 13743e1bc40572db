"""The README's dcgan figures, regenerated from the runs' own records (never typed by hand).

Runs, with default options on the embedded dcgan (CPU, ONNX Runtime):
  1. the README's example: `pulse-trt upsample examples/face_8x8.png examples/face_16x16.png
     -o docs/example --overwrite`;
  2. eight faces the dcgan made itself (scripts/make_examples.py --count 8), their 8x8 downscales
     upsampled with --slots 8;
  3. the astronaut (--align) with --steps 300 into docs/example/astronaut, and with the default
     100 steps into a temporary folder;
then writes into README.md the blocks between `<!-- NAME:begin -->` and `<!-- NAME:end -->`:
dcgan-results (the example's table, the eight faces), astronaut-output (the astronaut run's
console output) and astronaut-record (its record, and the 100-step run's).

    python scripts/readme_figures.py            # about 1-3 minutes on 2 CPU cores
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "docs" / "example"


def pulse_trt(*argv) -> str:
    """Run `pulse-trt ARGV` (this interpreter's package), return its stdout; stop on failure."""
    cmd = [sys.executable, "-m", "pulse_trt", *map(str, argv)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def record(path: Path) -> dict:
    return json.loads(path.read_text())


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit(f"README.md has no {begin} ... {end} block")
    return pattern.sub(lambda m: f"{begin}\n{body.strip()}\n{end}", text)


def l2_text(r: dict) -> str:
    return f"{r['l2']:.5f}" + (" (clamped at eps)" if r["l2"] <= r["eps"] * (1 + 1e-6) else "")


def main() -> None:
    # 1. The README's example.
    pulse_trt("upsample", "examples/face_8x8.png", "examples/face_16x16.png", "-o", "docs/example", "-q", "--overwrite")
    rows = []
    for size in (8, 16):
        r = record(EXAMPLE / f"face_{size}x{size}_pulse.json")
        rows.append(f"| {size}x{size} | {str(r['success']).lower()} | {l2_text(r)} | {r['output_l2_uint8']:.5f} | "
                    f"{r['best_step']} |")
    with tempfile.TemporaryDirectory(prefix="pulse-readme-") as tmp:
        tmp = Path(tmp)
        # 2. Eight faces.
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_examples.py"), "--count", "8", "--out", tmp / "faces"],
                       check=True, capture_output=True)
        pulse_trt("upsample", *sorted((tmp / "faces").glob("*_8x8.png")), "-o", tmp / "faces_out", "--slots", 8, "-q")
        recs = [record(p) for p in sorted((tmp / "faces_out").glob("*_pulse.json"))]
        ok = sum(r["success"] for r in recs)
        eps = recs[0]["eps"]
        misses = ", ".join(f"{r['min_l2']:.5f}" for r in recs if not r["success"])
        eight = f"{ok} of {len(recs)} reached eps = {eps:g} with the default options"
        eight += (f"; the others stopped at {misses} (still written, with `\"success\": false`; `--duplicates` gives "
                  "them more starts)." if misses else ".")
        # 3. The astronaut, 300 steps (kept) and 100 steps (the default, temporary).
        out = pulse_trt("upsample", "--align", "examples/astronaut.png", "--steps", 300, "-o", "docs/example/astronaut",
                        "--overwrite")  # relative -o: the console output quoted in the README names it so
        a = record(EXAMPLE / "astronaut" / "astronaut_face0_pulse.json")
        pulse_trt("upsample", "--align", "examples/astronaut.png", "-o", tmp / "astro100", "-q")
        a100 = record(tmp / "astro100" / "astronaut_face0_pulse.json")
    reached = f", best step {a['best_step']} of {a['steps']}"
    q = a["quality"]
    if a100["success"]:
        default = "also reaches eps"
    else:
        default = f"stops at L2 {a100['min_l2']:.5f} (record `\"success\": false`), hence `--steps 300` here"
    astro = (f"From `docs/example/astronaut/astronaut_face0_pulse.json`: `success` {str(a['success']).lower()}, `l2` "
             f"{l2_text(a)}{reached}, `output_l2_uint8` {a['output_l2_uint8']:.5f}, `quality`: PSNR {q['psnr']:.2f} dB, "
             f"SSIM {q['ssim']:.3f} against the aligned 64x64 crop. With the default 100 steps the same face {default}.")
    body = "\n".join([
        "| input | success | L2 at the returned step (`l2`) | MSE of the saved 64x64 PNG's downscale vs the input "
        "(`output_l2_uint8`) | best step of 100 |",
        "|---|---|---|---|---|", *rows, "",
        "On eight faces made the same way (`python scripts/make_examples.py --count 8 --out /tmp/faces`, then "
        "`pulse-trt upsample /tmp/faces/*_8x8.png -o /tmp/faces_out --slots 8`), " + eight,
    ])
    text = README.read_text()
    text = replace_block(text, "dcgan-results", body)
    text = replace_block(text, "astronaut-output", "```\n" + out.strip() + "\n```")
    text = replace_block(text, "astronaut-record", astro)
    README.write_text(text)
    print(body + "\n\n" + astro)


if __name__ == "__main__":
    main()
