"""Engine v1 (lockstep chunks) against engine v2 (continuous batching) on one stream of faces.

    python benchmarks/stream_v1_vs_v2.py --baseline-rev 10915c2 [--inputs 64] [--slots 8] [--repeats 3]
        [--sync-sweep 1 2 4 8 16] [-o benchmarks/results/cpu/stream] [--update-results]

The figures of benchmarks/RESULTS.md ("Engine v2: continuous batching"). One stream: `--inputs`
faces made by the embedded dcgan itself (seeded latents, 64 px, PULSE's bicubic downscale to
8x8: pulse_trt.bench's workload faces), default PULSE options (100 steps), `--slots` rows.

  (a)  v1: the engine of `--baseline-rev` (extracted with `git archive` into a temporary folder
       and run in a subprocess with that tree first on sys.path): PulseEngine(batch_size=slots)
       .search(all inputs), i.e. chunks of `slots` rows in lockstep, every row all 100 steps.
  (a4) the same with --duplicates 4 (chunks of 8 rows = 2 inputs x 4 starts).
  (b)  v2: this tree's PulseEngine(slots=slots): every input submitted at once.
  (c)  v2 + early_stop.
  (d)  v2 + restarts 3.
Every repeat runs a, b, c, d, a4 back to back, so that load from other users of a shared
machine falls on all of them alike; the tables report medians over repeats. images/s = inputs /
wall time from the first submission to the last result. Latency: submission to result per input
(v1: the end of the input's chunk, taken from its progress callback; its API returns every
result only at the end of the call). Compute: optimiser steps run, summed over rows (v1:
inputs x duplicates x 100). Syncs per step: host synchronisations per step-graph call (v1: one
per step). Records: (a) against (b), input by input (success, L2, best step, restart).
Then a sweep of the sync interval K for (b) and (c) (one run each, `--sync-sweep`).

Writes OUT/stream_v1_v2.json and OUT/stream_v1_v2.md; with --update-results the Markdown also
replaces the block between the markers in benchmarks/RESULTS.md. `--from-json FILE` renders the
Markdown (and RESULTS.md with --update-results) again from a run's JSON, measuring nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- stream_v1_vs_v2: begin -->", "<!-- stream_v1_vs_v2: end -->"

# The v1 side, run by the baseline tree in a subprocess: JSON lines in, JSON lines out.
V1_WORKER = r'''
import json, sys, time
from dataclasses import replace
import numpy as np
from pulse_trt.engine.api import PulseEngine
from pulse_trt.engine.options import PulseOptions
from pulse_trt.export.generators import load_generator
from pulse_trt.export.onnx_export import export_cached
cfg = json.loads(sys.argv[1])
targets = np.load(cfg["targets"])
art = export_cached(load_generator("dcgan"), PulseOptions(), 8, cfg["cache"], progress=False)
engine = PulseEngine(art, batch_size=cfg["slots"]).__enter__()
print(json.dumps({"ready": str(art)}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    o = replace(engine.options, steps=cmd["steps"], duplicates=cmd["duplicates"])
    n = cmd["inputs"]
    chunk_rows = cfg["slots"]
    ends = []
    def progress(done, total):
        if done % o.steps == 0:
            ends.append(time.perf_counter())
    t0 = time.perf_counter()
    res = engine.search(targets[:n], options=o, progress=progress)
    wall = time.perf_counter() - t0
    per_chunk = max(1, chunk_rows // o.duplicates)
    latency = [ends[min(i * o.duplicates // chunk_rows, len(ends) - 1)] - t0 for i in range(n)]
    recs = [{k: r.record[k] for k in ("input", "success", "l2", "min_l2", "best_step", "restart", "steps")} for r in res]
    print(json.dumps({"seconds": wall, "latency": latency, "records": recs,
                      "row_steps": n * o.duplicates * o.steps, "graph_steps": len(ends) * o.steps,
                      "syncs": len(ends) * o.steps}), flush=True)
'''


def baseline_tree(rev: str, root: Path) -> Path:
    """`git archive rev` into root/tree; root/shim/pulse_trt assembled from it as the installed
    package lays it out (pulse_trt/ with engine/, export/, kernels/ inside). Returns root/shim."""
    tree = root / "tree"
    tree.mkdir()
    archive = root / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    pkg = root / "shim" / "pulse_trt"
    pkg.mkdir(parents=True)
    for entry in (tree / "pulse_trt").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for sub in ("engine", "export", "kernels"):
        (pkg / sub).symlink_to(tree / sub)
    return root / "shim"


class V1:
    """The baseline engine in a subprocess."""

    def __init__(self, shim: Path, targets_path: Path, cache: Path, slots: int):
        env = dict(os.environ, PYTHONPATH=str(shim))
        cfg = json.dumps({"targets": str(targets_path), "cache": str(cache), "slots": slots})
        self.proc = subprocess.Popen([sys.executable, "-c", V1_WORKER, cfg], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=str(shim.parent))
        ready = json.loads(self.proc.stdout.readline())
        self.artifacts = ready["ready"]

    def run(self, inputs: int, duplicates: int, steps: int) -> dict:
        self.proc.stdin.write(json.dumps({"inputs": inputs, "duplicates": duplicates, "steps": steps}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the v1 worker died (see its stderr above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def v2_run(engine, targets: np.ndarray, options) -> dict:
    from pulse_trt.bench import stream_once  # noqa: PLC0415

    run = stream_once(engine, targets, options)
    run["records"] = [{k: r[k] for k in ("input", "success", "l2", "min_l2", "best_step", "restart", "steps", "starts")}
                      for r in run["records"]]
    return run


def summary(run: dict, n: int, steps: int) -> dict:
    lat = np.asarray(run["latency"], np.float64)
    return {"images_per_s": n / run["seconds"], "seconds": run["seconds"],
            "p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)), "p99": float(np.percentile(lat, 99)),
            "success": sum(r["success"] for r in run["records"]) / n, "row_steps": run["row_steps"],
            "compute": run["row_steps"] / (n * steps), "syncs_per_step": run["syncs"] / max(run["graph_steps"], 1)}


def compare_records(a: list, b: list) -> dict:
    """(a) v1 against (b) v2, input by input."""
    same_success = sum(x["success"] == y["success"] for x, y in zip(a, b))
    l2 = [abs(x["l2"] - y["l2"]) / max(abs(x["l2"]), 1e-12) for x, y in zip(a, b)]
    min_l2 = [abs(x["min_l2"] - y["min_l2"]) / max(abs(x["min_l2"]), 1e-12) for x, y in zip(a, b)]
    return {"inputs": len(a), "same_success": same_success,
            "same_best_step": sum(x["best_step"] == y["best_step"] for x, y in zip(a, b)),
            "identical_l2": sum(x["l2"] == y["l2"] for x, y in zip(a, b)),
            "max_rel_l2_diff": max(l2), "max_rel_min_l2_diff": max(min_l2)}


def markdown(report: dict) -> str:
    cfg, m = report["config"], report["machine"]
    lines = [MARK_BEGIN,
             f"Stream of {cfg['inputs']} dcgan faces (8x8 -> 64x64, the generator's own, seeded), default PULSE options "
             f"(100 steps, eps 0.002), {cfg['slots']} slots (v1: chunks of {cfg['slots']} rows), ONNX Runtime CPU; "
             f"v2 syncs every {cfg['sync_every']} steps. {m['label']}; onnxruntime {m['versions'].get('onnxruntime')}, "
             f"{report['date']}. **Shared machine**: 2 cores used by other engineers' jobs at the same time "
             f"(load average {report['load']['start']} at the start, {report['load']['end']} at the end); the five "
             f"configurations ran interleaved, {cfg['repeats']} times, medians below, so they are comparable with each "
             "other, not as absolute figures for this CPU.", "",
             "| configuration | images/s | vs (a) | latency p50 s | p90 s | p99 s | success | compute (steps run / lockstep) | host syncs per step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = report["rows"]["a"]["images_per_s"]
    for key, label in (("a", "(a) v1 lockstep (baseline)"), ("b", "(b) v2"), ("c", "(c) v2 + --early-stop"),
                       ("d", "(d) v2 + --restarts 3"), ("a4", "(a) v1 + --duplicates 4")):
        r = report["rows"][key]
        lines.append(f"| {label} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f}x | {r['p50']:.1f} | "
                     f"{r['p90']:.1f} | {r['p99']:.1f} | {100 * r['success']:.1f}% | {r['compute']:.2f} | "
                     f"{r['syncs_per_step']:.3f} |")
    ratios = {k: [r["images_per_s"] / a["images_per_s"] for r, a in zip(report["rows"][k]["runs"], report["rows"]["a"]["runs"])]
              for k in ("b", "c", "d", "a4")}
    lines += ["", "Per repeat, images/s against (a) of the same repeat (min-max over the repeats): " + ", ".join(
        f"{k} {min(v):.2f}x-{max(v):.2f}x" for k, v in ratios.items()) + "."]
    c = report["records_a_vs_b"]
    lines += ["", f"Records, (a) against (b), input by input: the same success for {c['same_success']} of {c['inputs']}, "
                  f"the same best step for {c['same_best_step']}, bit-identical L2 for {c['identical_l2']} (largest "
                  f"relative L2 difference {c['max_rel_l2_diff']:.2g}, of min L2 {c['max_rel_min_l2_diff']:.2g})."]
    if report.get("sweep"):
        lines += ["", "Sync interval K (one run each, same stream):", "",
                  "| K | (b) images/s | (b) syncs per step | (c) images/s | (c) compute |", "|---:|---:|---:|---:|---:|"]
        for k, r in sorted(report["sweep"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {k} | {r['b']['images_per_s']:.2f} | {r['b']['syncs_per_step']:.3f} | "
                         f"{r['c']['images_per_s']:.2f} | {r['c']['compute']:.2f} |")
    tree = f", this tree: `{report['tree_commit'][:10]}`" if report.get("tree_commit") else ""
    lines += ["", f"Command: `{report['command']}` (baseline: `{cfg['baseline_rev']}`, "
                  f"`{report['baseline_commit'][:10]}`{tree})", MARK_END]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", required=True, help="git revision of the v1 engine (e.g. main before issue 12)")
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sync-sweep", type=int, nargs="*", default=[1, 2, 4, 8, 16])
    ap.add_argument("--cache-dir", default=None, help="artefact caches (default: a temporary folder)")
    ap.add_argument("-o", "--out", default=str(REPO / "benchmarks" / "results" / "cpu" / "stream"))
    ap.add_argument("--update-results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    ap.add_argument("--from-json", default=None, metavar="FILE", help="render a previous run's JSON; measure nothing")
    args = ap.parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        write_markdown(report, Path(args.out), args.update_results)
        return 0

    from pulse_trt.bench import _targets  # noqa: PLC0415
    from pulse_trt.engine.api import PulseEngine  # noqa: PLC0415
    from pulse_trt.engine.scheduler import DEFAULT_SYNC_EVERY  # noqa: PLC0415
    from pulse_trt.export.generators import load_generator  # noqa: PLC0415
    from pulse_trt.export.onnx_export import export_cached  # noqa: PLC0415
    from pulse_trt.machine import machine_info, machine_label  # noqa: PLC0415

    def say(msg):
        print(f"[stream_v1_vs_v2] {msg}", file=sys.stderr, flush=True)

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.baseline_rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    tree = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stream_v1_v2.") as tmp:
        tmp = Path(tmp)
        cache = Path(args.cache_dir) if args.cache_dir else tmp / "cache"
        gen = load_generator("dcgan")
        targets = _targets(gen, 8, args.inputs, 0)  # [N, 3, 8, 8]
        np.save(tmp / "targets.npy", targets)
        say(f"v1: {args.baseline_rev} ({commit[:10]}) into {tmp}; exporting both sides (cached)")
        v1 = V1(baseline_tree(args.baseline_rev, tmp), tmp / "targets.npy", cache / "v1", args.slots)
        art = export_cached(gen, replace_steps(args.steps), 8, cache / "v2", progress=False)
        engine = PulseEngine(art, slots=args.slots).prepare()
        o = engine.options
        configs = {"b": o, "c": replace(o, early_stop=True), "d": replace(o, restarts=3)}
        # warm-up: sessions and bindings on both sides
        v1.run(args.slots, 1, 2)
        v2_run(engine, targets[:args.slots], replace(o, steps=2))
        runs = {k: [] for k in ("a", "b", "c", "d", "a4")}
        for rep in range(args.repeats):
            for key in ("a", "b", "c", "d", "a4"):
                t0 = time.perf_counter()
                if key in ("a", "a4"):
                    run = v1.run(args.inputs, 4 if key == "a4" else 1, args.steps)
                else:
                    run = v2_run(engine, targets, configs[key])
                runs[key].append(run)
                say(f"repeat {rep + 1} {key}: {args.inputs / run['seconds']:.2f} images/s "
                    f"({time.perf_counter() - t0:.0f} s)")
        sweep = {}
        for k in args.sync_sweep:
            with PulseEngine(art, slots=args.slots, sync_every=k) as e:
                v2_run(e, targets[:args.slots], replace(o, steps=2))
                sweep[str(k)] = {key: summary(v2_run(e, targets, configs[key]), args.inputs, args.steps)
                                 for key in ("b", "c")}
            say(f"sync every {k}: (b) {sweep[str(k)]['b']['images_per_s']:.2f}, "
                f"(c) {sweep[str(k)]['c']['images_per_s']:.2f} images/s")
        engine.close()
        v1.close()
    rows = {}
    for key, rs in runs.items():
        sums = [summary(r, args.inputs, args.steps) for r in rs]
        rows[key] = {f: statistics.median(s[f] for s in sums) for f in sums[0]}
        rows[key]["runs"] = sums
    info = machine_info()
    report = {
        "config": {"inputs": args.inputs, "slots": args.slots, "steps": args.steps, "repeats": args.repeats,
                   "sync_every": DEFAULT_SYNC_EVERY, "baseline_rev": args.baseline_rev},
        "baseline_commit": commit, "tree_commit": tree + ("+changes" if dirty else ""), "machine": {"label": machine_label(info), **info}, "date": time.strftime("%Y-%m-%d"),
        "load": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "command": "python benchmarks/stream_v1_vs_v2.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "rows": rows, "records_a_vs_b": compare_records(runs["a"][-1]["records"], runs["b"][-1]["records"]),
        "sweep": sweep,
        "records": {k: runs[k][-1]["records"] for k in runs},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream_v1_v2.json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, out, args.update_results)
    return 0


def write_markdown(report: dict, out: Path, update_results: bool) -> None:
    """OUT/stream_v1_v2.md, and the block in benchmarks/RESULTS.md when asked."""
    md = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream_v1_v2.md").write_text(md)
    print(md)
    if update_results:
        path = REPO / "benchmarks" / "RESULTS.md"
        text = path.read_text()
        if MARK_BEGIN in text and MARK_END in text:
            head, rest = text.split(MARK_BEGIN, 1)
            text = head + md.rstrip("\n") + rest.split(MARK_END, 1)[1]
        else:
            raise SystemExit(f"{path} has no {MARK_BEGIN} ... {MARK_END} block to replace")
        path.write_text(text)


def replace_steps(steps: int):
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415

    return PulseOptions(steps=steps)


if __name__ == "__main__":
    raise SystemExit(main())
