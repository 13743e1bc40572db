"""Engine (ONNX Runtime, CPU) vs the PyTorch reference on CPU: the embedded dcgan, 100 steps.

    python benchmarks/engine_vs_torch.py [--batches 1 8] [--repeats 3] [--steps 100] [--out DIR]

For each batch size: one warm-up search per backend (not timed: session creation, torch's first
calls), then `repeats` timed searches of `steps` steps; the median wall time is reported with
the machine (CPU model from /proc/cpuinfo, cores, load average at the start and the end) in
DIR/engine_vs_torch.json and .md. Both sides search the same targets with the same seed and
options; the export (torch) happens once, into a cache directory, and is not timed.
Not a test: no assertion on time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _load() -> list[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of both sides (default: all cores)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/pulse-trt/bench"))
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)

    import torch  # noqa: PLC0415

    from pulse_trt.engine.api import PulseEngine  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.export.generators import load_generator  # noqa: PLC0415
    from pulse_trt.export.onnx_export import export_cached  # noqa: PLC0415
    from pulse_trt.export.reference import pulse_search  # noqa: PLC0415
    from pulse_trt.machine import machine_info, machine_label  # noqa: PLC0415

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    options = PulseOptions(steps=args.steps)
    gen = load_generator("dcgan")
    art = export_cached(gen, options, args.lr_size, args.cache, verify=False, check_trt=False, progress=False)
    info = machine_info()
    load_start = _load()
    rows = []
    for batch in args.batches:
        y = np.random.default_rng(batch).uniform(0.2, 0.8, (batch, 3, args.lr_size, args.lr_size)).astype(np.float32)
        times = {}
        with PulseEngine(art, backend="ort", slots=batch, threads=threads) as engine:
            engine.search(y)  # warm-up
            t = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                res_engine = engine.search(y)
                t.append(time.perf_counter() - t0)
            times["engine"] = t
        pulse_search(gen, y, options)  # warm-up
        t = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res_torch = pulse_search(gen, y, options)
            t.append(time.perf_counter() - t0)
        times["torch"] = t
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({
            "batch": batch, "steps": args.steps, "seconds": times, "median_s": med,
            "ms_per_step": {k: 1e3 * v / args.steps for k, v in med.items()},
            "speedup": med["torch"] / med["engine"],
            "success_engine": [r.success for r in res_engine], "success_torch": [r.success for r in res_torch],
        })
        print(f"batch {batch}: engine {med['engine']:.2f} s, torch {med['torch']:.2f} s, "
              f"speed-up {med['torch'] / med['engine']:.2f}x", flush=True)
    report = {"machine": info, "label": machine_label(info), "threads": threads, "lr_size": args.lr_size,
              "generator": "dcgan", "repeats": args.repeats, "load_average": {"start": load_start, "end": _load()},
              "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "results": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_vs_torch.json").write_text(json.dumps(report, indent=1))
    md = [f"# Engine (ORT CPU) vs PyTorch reference (CPU): dcgan 64 px from {args.lr_size} px, {args.steps} steps", "",
          f"Machine: {report['label']}; {threads} threads; onnxruntime {info['versions'].get('onnxruntime')}, "
          f"torch {info['versions'].get('torch')}. Median of {args.repeats} after one warm-up. "
          f"Load average at start/end: {load_start} / {report['load_average']['end']} (shared machine).", "",
          "| batch | engine s | torch s | engine ms/step | torch ms/step | speed-up |",
          "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['batch']} | {r['median_s']['engine']:.2f} | {r['median_s']['torch']:.2f} | "
                  f"{r['ms_per_step']['engine']:.1f} | {r['ms_per_step']['torch']:.1f} | {r['speedup']:.2f}x |")
    md += ["", f"Command: `python benchmarks/{report['command']}`"]
    (out / "engine_vs_torch.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
