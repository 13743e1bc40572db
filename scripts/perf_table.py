"""README's performance table from the committed `pulse-trt bench` results (never typed by hand).

    python scripts/perf_table.py [--results benchmarks/results/cpu/2026-12-02]

Reads RESULTS/dcgan/bench.json and RESULTS/mobilestylegan/bench.json (each one run holding both
the torch reference and the engine: speed-ups are only taken within a run, the host's speed
drifts between runs) and rewrites README.md's block between `<!-- perf-table:begin -->` and
`<!-- perf-table:end -->`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"perf_table: cannot read {path}: {e}")


def rows(result: dict, backend: str) -> dict[int, dict]:
    return {r["batch"]: r for r in result["rows"] if r["backend"] == backend and r["precision"] == "fp32"}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def table(results: Path) -> str:
    dc = load(results / "dcgan" / "bench.json")
    msg = load(results / "mobilestylegan" / "bench.json")
    out = [f"Measured on {dc['machine_label']}, {dc['date']}, nothing else running (two runs; the matmul "
           f"peak each measured: dcgan {dc['peak_flops']['fp32'] / 1e9:.0f}, MobileStyleGAN "
           f"{msg['peak_flops']['fp32'] / 1e9:.0f} GFLOP/s fp32); 100-step searches, PULSE defaults. "
           "`FLOP floor`: the step's FLOPs / time / that peak.", "",
           "| generator | batch | torch reference ms/step | engine (ONNX Runtime) ms/step | speed-up | "
           "engine FLOP floor | engine s per image |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, ref, eng in (("dcgan 8 -> 64", dc, dc), ("MobileStyleGAN 32 -> 1024", msg, msg)):
        t, o = rows(ref, "torch"), rows(eng, "ort")
        for b in sorted(o):
            if b not in t:
                continue
            sp = t[b]["seconds_per_search"] / o[b]["seconds_per_search"]
            out.append(f"| {name} | {b} | {t[b]['ms_per_step']:.1f} | {o[b]['ms_per_step']:.1f} | {sp:.2f}x | "
                       f"{pct(o[b].get('flop_floor_fraction'))} | {o[b]['seconds_per_search'] / b:.1f} |")
    out += ["", f"Commands: `{dc['command']}`; `{msg['command']}`."]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "cpu" / "2026-12-02")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args(argv)
    body = table(args.results)
    text = args.readme.read_text()
    begin, end = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit(f"perf_table: {args.readme} has no {begin} ... {end} block")
    args.readme.write_text(pattern.sub(lambda m: f"{begin}\n{body}\n{end}", text))
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
