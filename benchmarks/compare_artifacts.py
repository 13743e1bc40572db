"""Two (or more) artefact folders of one workload timed against each other, interleaved.

    python benchmarks/compare_artifacts.py DIR_A DIR_B [...] [--names before after] [--batches 1 4]
        [--steps 10] [--repeats 3] [--out DIR]

On a machine whose speed drifts between runs (a shared host: this project's VM read a matmul peak
of 172, 127 and 110 GFLOP/s on one morning with nothing else running in it), figures from two
separate `pulse-trt bench` runs are not comparable; this times every folder's step graph on ONNX
Runtime's CPU in one process, alternating folder by folder within each repeat, so a drift hits
all alike. Per batch: one warm-up search each, then `repeats` rounds of one `steps`-step search
per folder (the engine's scheduler, as `pulse-trt upsample` runs it); median ms/step and the
ratio to the first folder. The LR targets come from the first folder's render graph (seeded).
Writes DIR/compare.json and DIR/compare.md. Not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--names", nargs="+", default=None)
    ap.add_argument("--batches", type=int, nargs="+", default=[1])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    names = args.names or [d.name[:12] for d in args.dirs]
    if len(names) != len(args.dirs):
        sys.exit("compare_artifacts: --names must name every folder")

    from pulse_trt.bench import _load_average, _targets_from_render, _timed_search  # noqa: PLC0415
    from pulse_trt.engine.manifest import load_manifest  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import OrtRunner  # noqa: PLC0415
    from pulse_trt.engine.scheduler import Scheduler  # noqa: PLC0415
    from pulse_trt.machine import machine_info, machine_label  # noqa: PLC0415

    manifests = [load_manifest(d) for d in args.dirs]
    targets_all = _targets_from_render(args.dirs[0], max(args.batches), 0)
    options = PulseOptions(steps=args.steps)
    load_start = _load_average()
    rows = []
    for batch in args.batches:
        targets = targets_all[:batch]
        runners = []
        for m in manifests:
            r = OrtRunner(m, "cpu")
            r.activate()
            s = Scheduler(r, slots=batch)
            _timed_search(r, s, targets, PulseOptions(steps=2))  # warm-up
            runners.append((r, s))
        times = [[] for _ in manifests]
        for _ in range(args.repeats):
            for i, (r, s) in enumerate(runners):
                times[i].append(_timed_search(r, s, targets, options)[1])
        for r, _ in runners:
            r.deactivate()
        base = statistics.median(times[0])
        for name, d, t in zip(names, args.dirs, times):
            med = statistics.median(t)
            rows.append({"batch": batch, "name": name, "dir": str(d), "ms_per_step": round(1000 * med / args.steps, 3),
                         "vs_first": round(med / base, 3),
                         "all_ms_per_step": [round(1000 * x / args.steps, 3) for x in t]})
            print(f"batch {batch:3d} {name:20s} {1000 * med / args.steps:10.2f} ms/step  x{med / base:.3f}", file=sys.stderr)
    info = machine_info()
    result = {"machine": info, "machine_label": machine_label(info), "date": time.strftime("%Y-%m-%d"),
              "steps": args.steps, "repeats": args.repeats, "load_average_start": load_start,
              "load_average_end": _load_average(),
              "command": "python benchmarks/compare_artifacts.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"Interleaved on {result['machine_label']}, {result['date']}: {args.steps}-step searches, median of "
             f"{args.repeats}; load average {load_start} -> {result['load_average_end']}", "",
             "| batch | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for batch in args.batches:
        cells = [f"{r['ms_per_step']:.1f} ms ({r['vs_first']:.2f}x)" for r in rows if r["batch"] == batch]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    lines += ["", "ms/step and, in brackets, time relative to the first column.", "", f"Command: `{result['command']}`"]
    (args.out / "compare.md").write_text("\n".join(lines) + "\n")
    print(args.out / "compare.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
