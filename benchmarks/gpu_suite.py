"""The GPU suite: on a machine with an NVIDIA GPU, build the kernels, run every GPU test, then
validate and time the fused kernels (llm.c style) and write JSON + a Markdown table.

    python benchmarks/gpu_suite.py [--out DIR] [--dry-run] [--skip-build] [--skip-tests]

Steps:
  1. cmake -S . -B build && cmake --build build
  2. python -m pytest -m gpu tests -q   (every GPU test; the suite carries on if some fail)
  3. copy bandwidth: a large device-to-device copy, (bytes read + written) / median time.
  4. per case (batch, lr size, dtype) at --size px: validate first (outputs poisoned with NaN,
     fresh random inputs, every output against the float64 reference, relative error < 1e-5
     for fp32), then time with warm-up, an L2 flush before each run, CUDA events, median:
     ours (downsample_loss_fwd + downscale_transpose) and torch's conv-based D + loss forward
     + backward (export/losses.py with autograd). Reports GB/s (HR read + dL/dHR written),
     the fraction of copy bandwidth and the speed-up over torch.
  5. sphere_update (adam) on a PULSE latent [B, 18, 512] against torch's eager formulas.
Writes $OUT (or --out)/gpu_suite.json and gpu_suite.md naming device, driver, CUDA and command.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOL_FP32 = 1e-5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_suite_out"), help="output folder (default $OUT)")
    p.add_argument("--size", type=int, default=1024, help="HR side (default 1024)")
    p.add_argument("--lr-sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "float16", "bfloat16"])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list the steps and exit")
    return p.parse_args(argv)


def cases(args):
    return [(b, lr, dt) for dt in args.dtypes for lr in args.lr_sizes for b in args.batches]


def plan(args) -> list[str]:
    steps = []
    if not args.skip_build:
        steps.append("build: cmake -S . -B build && cmake --build build")
    if not args.skip_tests:
        steps.append(f"tests: {sys.executable} -m pytest -m gpu tests -q")
    steps.append("bandwidth: device-to-device copy of 1 GiB, median of events")
    for b, lr, dt in cases(args):
        steps.append(f"downsample_loss: batch {b}, {args.size} px -> {lr} px, {dt}: validate, then time ours and torch")
    steps.append("sphere_update adam: latent [8, 18, 512]: validate, then time ours and torch")
    steps.append(f"write: {Path(args.out) / 'gpu_suite.json'} and {Path(args.out) / 'gpu_suite.md'}")
    return steps


def markdown_table(report: dict) -> str:
    """The Markdown summary of a report (what gpu_suite.md holds)."""
    env = report["environment"]
    lines = [f"# GPU suite: {env['device']}", "",
             f"- driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}",
             f"- command: `{env['command']}`",
             f"- copy bandwidth (device-to-device, read + write): {report['copy_gbps']:.0f} GB/s",
             f"- GPU tests: {report.get('tests', {}).get('summary', 'not run')}", "",
             "| batch | HR -> LR | dtype | max rel err | ours (us) | GB/s | % of copy | torch (us) | speed-up |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["downsample_loss"]:
        lines.append(f"| {r['batch']} | {r['size']} -> {r['lr_size']} | {r['dtype']} | {r['max_rel_err']:.1e} | "
                     f"{r['ours_us']:.1f} | {r['gbps']:.0f} | {100 * r['gbps'] / report['copy_gbps']:.0f}% | "
                     f"{r['torch_us']:.1f} | {r['torch_us'] / r['ours_us']:.1f}x |")
    for r in report.get("sphere_update", []):
        lines += ["", f"sphere_update {r['opt']} {r['shape']}: ours {r['ours_us']:.1f} us, torch {r['torch_us']:.1f} us, "
                      f"max rel err {r['max_rel_err']:.1e}"]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_suite.md").write_text(markdown_table(report))


def environment(torch) -> dict:
    def cmd(c):
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=60).stdout.strip()
        except Exception:
            return "unknown"
    return {"device": torch.cuda.get_device_name(), "driver": cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
            "cuda": torch.version.cuda, "nvcc": cmd(["nvcc", "--version"]).splitlines()[-1:] or "", "torch": torch.__version__,
            "python": platform.python_version(), "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def time_events(torch, fn, warmup, repeat, flush) -> float:
    """Median microseconds of fn() between CUDA events, an L2 flush before each run."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def rel_err(got, want) -> float:
    import numpy as np

    got = np.asarray(got, np.float64)
    if np.isnan(got).any():
        return float("nan")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def bench(args) -> dict:
    import numpy as np
    import torch

    from pulse_trt.export import losses
    from pulse_trt.kernels.downsample_loss import downsample_loss_ref, launch_downsample_loss
    from pulse_trt.kernels.loader import get_module
    from pulse_trt.kernels.sphere_adam import sphere_update

    module, dev = get_module(), "cuda"
    stream = torch.cuda.current_stream().cuda_stream
    flush = torch.empty(256 * 2**20 // 4, device=dev)  # 256 MB > any L2 here
    src = torch.empty(2**28, device=dev)               # 1 GiB
    dst = torch.empty_like(src)
    copy_us = time_events(torch, lambda: dst.copy_(src), 3, 20, flush)
    report = {"copy_gbps": 2 * src.numel() * 4 / copy_us / 1e3, "downsample_loss": [], "sphere_update": []}
    del src, dst
    rng = np.random.default_rng(0)
    eps, w2, w1 = 2e-3, 100.0, 0.0
    for b, lr_size, dtype in cases(args):
        size, f = args.size, args.size // lr_size
        tdt = getattr(torch, dtype)
        hr = torch.tensor(rng.random((b, 3, size, size), dtype=np.float32), device=dev).to(tdt)
        target = torch.tensor(rng.random((b, 3, lr_size, lr_size), dtype=np.float32), device=dev)
        outs = {"lr": torch.empty_like(target), "loss": torch.empty((b, 2), device=dev), "grad_lr": torch.empty_like(target),
                "grad_hr": torch.empty_like(hr)}
        counters = torch.empty((b,), dtype=torch.int32, device=dev)

        def ours():
            launch_downsample_loss(module, hr, target, outs["lr"], outs["loss"], outs["grad_lr"], outs["grad_hr"], counters,
                                   (b, 3, size, size), f, dtype, eps, w2, w1, stream)
        for o in outs.values():
            o.fill_(float("nan"))
        ours()
        torch.cuda.synchronize()
        ref = downsample_loss_ref(hr.float().cpu().numpy().astype(np.float64), target.cpu().numpy().astype(np.float64), f, eps, w2, w1)
        errs = {"lr": rel_err(outs["lr"].cpu(), ref.lr), "l2": rel_err(outs["loss"][:, 0].cpu(), ref.l2),
                "l1": rel_err(outs["loss"][:, 1].cpu(), ref.l1), "grad_lr": rel_err(outs["grad_lr"].cpu(), ref.grad_lr),
                "grad_hr": rel_err(outs["grad_hr"].float().cpu(), ref.grad_hr)}
        max_err = max(errs.values())
        ok = max_err < (TOL_FP32 if dtype == "float32" else 1e-2)
        print(f"validate batch {b} {size}->{lr_size} {dtype}: {'ok' if ok else 'MISMATCH'} {errs}", flush=True)

        x = hr.float().detach().requires_grad_(True)

        def torch_ref():
            x.grad = None
            lr = losses.downscale(x, f)
            (w2 * losses.l2(lr, target, eps).sum() + w1 * losses.l1(lr, target, eps).sum()).backward()
        ours_us = time_events(torch, ours, args.warmup, args.repeat, flush)
        torch_us = time_events(torch, torch_ref, args.warmup, args.repeat, flush)
        moved = 2 * hr.numel() * hr.element_size() + 4 * target.numel() * 4  # HR read + dL/dHR written (+ LR)
        report["downsample_loss"].append({"batch": b, "size": size, "lr_size": lr_size, "dtype": dtype, "errors": errs,
                                          "max_rel_err": max_err, "valid": ok, "ours_us": ours_us, "torch_us": torch_us,
                                          "bytes": moved, "gbps": moved / ours_us / 1e3})
        print(f"  ours {ours_us:.1f} us ({moved / ours_us / 1e3:.0f} GB/s), torch {torch_us:.1f} us", flush=True)

    shape = (8, 18, 512)
    p0 = rng.standard_normal(shape).astype(np.float32)
    radius = np.linalg.norm(p0, axis=2, keepdims=True).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    p_ref, m_ref, v_ref = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    sphere_update("adam", p_ref, g, [m_ref, v_ref], radius, 0.4, 1)
    p, m, v = (torch.tensor(a, device=dev) for a in (p0, np.zeros_like(p0), np.zeros_like(p0)))
    gt, rt = torch.tensor(g, device=dev), torch.tensor(radius, device=dev)
    sphere_update("adam", p, gt, [m, v], rt, 0.4, 1, impl="cuda")
    torch.cuda.synchronize()
    err = rel_err(p.cpu(), p_ref)

    def torch_adam():
        m2 = m + 0.1 * (gt - m)
        v2 = v * 0.999 + 0.001 * gt * gt
        p2 = p - 0.4 / 0.1 * (m2 / (v2.sqrt() / 0.001**0.5 + 1e-8))
        return p2 / (p2.pow(2).sum(2, keepdim=True) + 1e-9).sqrt() * rt
    report["sphere_update"].append({"opt": "adam", "shape": list(shape), "max_rel_err": err, "valid": err < TOL_FP32,
                                    "ours_us": time_events(torch, lambda: sphere_update("adam", p, gt, [m, v], rt, 0.4, 1, impl="cuda"),
                                                           args.warmup, args.repeat, flush),
                                    "torch_us": time_events(torch, torch_adam, args.warmup, args.repeat, flush)})
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print("\n".join(f"{i + 1}. {s}" for i, s in enumerate(plan(args))))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_build:
        subprocess.run("cmake -S . -B build && cmake --build build", shell=True, cwd=REPO, check=True)
    tests = {"summary": "not run"}
    if not args.skip_tests:
        r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "tests", "-q", "-rs"], cwd=REPO, capture_output=True, text=True)
        (out / "gpu_tests.log").write_text(r.stdout + r.stderr)
        tests = {"returncode": r.returncode, "summary": (r.stdout.strip().splitlines() or ["?"])[-1]}
        print(f"GPU tests: {tests['summary']}", flush=True)
    import torch

    report = {"environment": environment(torch), "tests": tests, **bench(args)}
    write_report(report, out)
    print(markdown_table(report))
    valid = all(r["valid"] for r in report["downsample_loss"] + report["sphere_update"])
    return 0 if valid and tests.get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
