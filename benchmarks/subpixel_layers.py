"""Transposed convolutions on ONNX Runtime's CPU: ConvTranspose vs its two sub-pixel forms, per layer.

    python benchmarks/subpixel_layers.py [--batches 1 16] [--runs 30] [--out benchmarks/results/cpu/subpixel]

Each layer below is exported three ways (torch.onnx, dynamo) as a one-layer graph with its
weight as a constant: "plain" (ConvTranspose), "joint" (export.decompositions.
conv_transpose_as_conv: one stride-1 Conv with s*s phases of output channels, zero taps
included, + DepthToSpace) and "split" (subpixel_forms.conv_transpose_as_phase_convs: one Conv per phase with
its own taps only, Concat, interleave) and "window" (subpixel_forms.conv_transpose_as_window_conv: one Conv
whose phases share a window of the longest phase's length, each phase cropped at its own offset).
Per batch: the median ms of `runs` runs after 10 warm-up
runs, each variant interleaved with the others. Layers: dcgan's five (64 px), stylegan1's
fused-upsample transposed conv at two sizes, and the bicubic downscale's input gradient
(1024 -> 32: rows, kernel 128 x 1 at stride 32, depthwise). The exporter's default
(transposed_conv "plain") comes from these figures and the whole-step bench. Not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# name: (cin, cout, k, stride, padding, groups, h, w)
LAYERS = {
    "dcgan.0 100->512 1->4": (100, 512, 4, 1, 0, 1, 1, 1),
    "dcgan.1 512->256 4->8": (512, 256, 4, 2, 1, 1, 4, 4),
    "dcgan.2 256->128 8->16": (256, 128, 4, 2, 1, 1, 8, 8),
    "dcgan.3 128->64 16->32": (128, 64, 4, 2, 1, 1, 16, 16),
    "dcgan.4 64->3 32->64": (64, 3, 4, 2, 1, 1, 32, 32),
    "stylegan1 up 64->64 64->128": (64, 64, 4, 2, 1, 1, 64, 64),
    "stylegan1 up 32->16 512->1024": (32, 16, 4, 2, 1, 1, 512, 512),
    "bicubic grad rows 32->1024": (3, 3, (128, 1), (32, 1), 0, 3, 32, 32),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--layers", nargs="+", default=None, help="substrings of layer names (default: all)")
    ap.add_argument("--out", default="benchmarks/results/cpu/subpixel")
    args = ap.parse_args(argv)

    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    from pulse_trt.bench import _load_average  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import session_options  # noqa: PLC0415
    from pulse_trt.export.decompositions import conv_transpose_as_conv  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from subpixel_forms import conv_transpose_as_phase_convs, conv_transpose_as_window_conv  # noqa: PLC0415
    from pulse_trt.machine import machine_info, machine_label  # noqa: PLC0415

    variants = {"plain": F.conv_transpose2d, "joint": conv_transpose_as_conv, "split": conv_transpose_as_phase_convs,
                "window": conv_transpose_as_window_conv}
    load_start = _load_average()
    rows = []
    layers = {k: v for k, v in LAYERS.items() if not args.layers or any(s in k for s in args.layers)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cin, cout, k, s, p, g, h, w) in layers.items():
            kk = k if isinstance(k, tuple) else (k, k)
            weight = torch.randn(cin, cout // g, *kk, generator=torch.Generator().manual_seed(0))

            class Layer(torch.nn.Module):
                def __init__(self, fn):
                    super().__init__()
                    self.fn = fn
                    self.register_buffer("weight", weight)

                def forward(self, x):
                    return self.fn(x, self.weight, None, s, p, 0, g)

            sessions = {}
            for vname, fn in variants.items():
                path = Path(tmp) / f"{len(rows)}_{vname}.onnx"
                x = torch.randn(2, cin, h, w)
                batch = torch.export.Dim("B", min=1, max=1024)
                torch.onnx.export(Layer(fn).eval(), (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                                  opset_version=20, optimize=False, verbose=False)
                sessions[vname] = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
            for b in args.batches:
                x = np.random.default_rng(b).standard_normal((b, cin, h, w)).astype(np.float32)
                outs = {}
                for vname, sess in sessions.items():
                    for _ in range(10):
                        outs[vname] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
                ref = outs["plain"]
                err = {v: float(np.abs(o - ref).max() / (np.abs(ref).max() + 1e-30)) for v, o in outs.items()}
                times = {v: [] for v in sessions}
                for _ in range(args.runs):
                    for vname, sess in sessions.items():
                        feed = {sess.get_inputs()[0].name: x}
                        t0 = time.perf_counter()
                        sess.run(None, feed)
                        times[vname].append(time.perf_counter() - t0)
                med = {v: 1000.0 * statistics.median(t) for v, t in times.items()}
                best = min(med, key=med.get)
                row = {"layer": name, "batch": b, "ms": {v: round(m, 4) for v, m in med.items()}, "best": best,
                       "rel_err_vs_plain": err}
                rows.append(row)
                print(f"{name:32s} b{b:<3d} " + "  ".join(f"{v} {m:8.3f} ms" for v, m in med.items()) + f"  best {best}",
                      file=sys.stderr)
    info = machine_info()
    result = {"machine": info, "machine_label": machine_label(info), "date": time.strftime("%Y-%m-%d"),
              "runs": args.runs, "load_average_start": load_start, "load_average_end": _load_average(),
              "command": "python benchmarks/subpixel_layers.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "subpixel_layers.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"Transposed convolutions on ONNX Runtime CPU, median of {args.runs} runs, on {result['machine_label']}, "
             f"{result['date']}; load average {load_start} -> {result['load_average_end']}", "",
             "| layer | batch | ConvTranspose ms | joint sub-pixel ms | split sub-pixel ms | window sub-pixel ms | best |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        m = r["ms"]
        lines.append(f"| {r['layer']} | {r['batch']} | {m['plain']:.3f} | {m['joint']:.3f} | {m['split']:.3f} | "
                     f"{m['window']:.3f} | {r['best']} |")
    lines += ["", f"Command: `{result['command']}`"]
    (out / "subpixel_layers.md").write_text("\n".join(lines) + "\n")
    print(out / "subpixel_layers.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
