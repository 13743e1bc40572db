"""ONNX Runtime session options for the step graph, measured per batch size (issue 18, item 3).

    python benchmarks/ort_session_options.py [--generator dcgan] [--lr-size 8] [--batches 1 4 8 16]
        [--steps 30] [--repeats 3] [--out benchmarks/results/cpu/ort_options]

For each batch and each variant below: the engine (OrtRunner + the scheduler, as `pulse-trt
upsample` runs it) on the cached artefacts of the workload (exported once, not timed), one
warm-up search, then `repeats` timed searches of `steps` steps; the median ms/step per variant
and its ratio to the default. Variants are interleaved per repeat (default, a, b, ..., default,
a, b, ...) so a drift in the machine's load hits every variant alike.

    default            what the engine uses (engine.runner_ort.session_options)
    threads=1          one intra-op thread
    no_spinning        session.intra_op.allow_spinning = 0
    denormal_as_zero   session.set_denormal_as_zero = 1 (flush denormals)
    no_mem_pattern     enable_mem_pattern = False
    no_cpu_arena       enable_cpu_mem_arena = False

Writes DIR/ort_session_options.json and .md with the machine and load average. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

VARIANTS = {
    "default": ({}, None),
    "threads=1": ({}, 1),
    "no_spinning": ({"session.intra_op.allow_spinning": "0"}, None),
    "denormal_as_zero": ({"session.set_denormal_as_zero": "1"}, None),
    "no_mem_pattern": ({"enable_mem_pattern": False}, None),
    "no_cpu_arena": ({"enable_cpu_mem_arena": False}, None),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="dcgan", choices=("dcgan", "mobilestylegan"))
    ap.add_argument("--lr-size", type=int, default=8)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results/cpu/ort_options")
    args = ap.parse_args(argv)

    from pulse_trt.api import Pulse  # noqa: PLC0415
    from pulse_trt.bench import _load_average, _targets_from_render, _timed_search  # noqa: PLC0415
    from pulse_trt.engine.manifest import load_manifest  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import OrtRunner  # noqa: PLC0415
    from pulse_trt.engine.scheduler import Scheduler  # noqa: PLC0415
    from pulse_trt.machine import machine_info, machine_label  # noqa: PLC0415

    options = PulseOptions(steps=args.steps)
    pulse = Pulse(args.generator, lr_size=args.lr_size, options=options, cache_dir=args.cache_dir)
    pulse._export()  # the cached artefacts (exported on first use)
    manifest = load_manifest(pulse.artifacts_dir)
    targets_all = _targets_from_render(pulse.artifacts_dir, max(args.batches), 0)
    info = machine_info()
    load_start = _load_average()
    rows = []
    for batch in args.batches:
        targets = targets_all[:batch]
        runners = {}
        for name in args.variants:
            tuning, threads = VARIANTS[name]
            r = OrtRunner(manifest, "cpu", threads=threads, tuning=tuning)
            r.activate()
            sched = Scheduler(r, slots=batch)
            _timed_search(r, sched, targets, PulseOptions(steps=3))  # warm-up: buffers, first runs
            runners[name] = (r, sched)
        times = {name: [] for name in args.variants}
        for _ in range(args.repeats):
            for name in args.variants:
                r, sched = runners[name]
                times[name].append(_timed_search(r, sched, targets, options)[1])
        for r, _ in runners.values():
            r.deactivate()
        base = statistics.median(times["default"]) if "default" in times else None
        for name in args.variants:
            ms = 1000.0 * statistics.median(times[name]) / args.steps
            row = {"batch": batch, "variant": name, "ms_per_step": round(ms, 3),
                   "vs_default": round(statistics.median(times[name]) / base, 3) if base else None,
                   "all_ms_per_step": [round(1000.0 * t / args.steps, 3) for t in times[name]]}
            rows.append(row)
            print(f"batch {batch:3d} {name:18s} {ms:9.2f} ms/step  x{row['vs_default']}", file=sys.stderr)
    result = {"machine": info, "machine_label": machine_label(info), "date": time.strftime("%Y-%m-%d"),
              "generator": args.generator, "lr_size": args.lr_size, "steps": args.steps, "repeats": args.repeats,
              "transposed_conv": manifest.raw.get("transposed_conv", "plain"),
              "load_average_start": load_start, "load_average_end": _load_average(),
              "command": "python benchmarks/ort_session_options.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ort_session_options.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"ONNX Runtime session options, {args.generator} LR {args.lr_size}, {args.steps}-step searches, median of "
             f"{args.repeats} (interleaved), on {result['machine_label']}, {result['date']}; load average "
             f"{load_start} -> {result['load_average_end']}", "",
             "| batch | " + " | ".join(args.variants) + " |", "|---:|" + "---:|" * len(args.variants)]
    for batch in args.batches:
        cells = [f"{r['ms_per_step']:.1f} ms ({r['vs_default']:.2f}x)" for r in rows if r["batch"] == batch]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    lines += ["", "ms/step and, in brackets, time relative to the default (below 1: faster).", "",
              f"Command: `{result['command']}`"]
    (out / "ort_session_options.md").write_text("\n".join(lines) + "\n")
    print(out / "ort_session_options.md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
