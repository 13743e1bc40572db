"""`pulse-trt bench`: the same PULSE workload on each backend, measured (pulse_trt/bench.py)."""
from __future__ import annotations

import shlex
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure backends on one PULSE workload",
                       description="Run one PULSE workload (LR faces the generator made itself, PULSE's default "
                                   "options) on each requested backend in one process: a warm-up, then --repeats "
                                   "timed searches, medians reported. Writes bench.json, bench.md and bench.png to "
                                   "OUTDIR. Columns: ms/step (time inside the step calls / steps), images/s (batch / "
                                   "whole search), speed-up vs the torch reference, peak RSS MiB (the process's "
                                   "resident memory above its level just before the backend was opened: sessions, "
                                   "compilation and the search's buffers; not the Python process, torch or the "
                                   "generator already loaded), peak GPU MiB (likewise), FLOP floor (step FLOPs / time "
                                   "/ measured matmul peak). Artefacts are exported on first use into the cache "
                                   "(--cache-dir, else $PULSE_TRT_CACHE, else ~/.cache/pulse-trt/artifacts). On a "
                                   "busy machine (load average above the core count) figures are noisy: a warning says so. With --stream N: "
                                   "N inputs through --slots B slots of the engine's scheduler (images/s, latency "
                                   "percentiles); writes stream.json and stream.md.")
    p.add_argument("--generator", default="dcgan", choices=("dcgan", "stylegan1", "mobilestylegan"),
                   help="generator (default: dcgan, embedded)")
    p.add_argument("--weights", help="synthesis weights (stylegan1; random test weights with --random-weights); "
                                     "mobilestylegan: default the fetched weights (pulse-trt weights fetch)")
    p.add_argument("--mapping", help="mapping weights (stylegan1)")
    p.add_argument("--random-weights", action="store_true",
                   help="stylegan1 / mobilestylegan with seeded random weights (architecture benchmarks; no download)")
    p.add_argument("--resolution", type=int, default=1024, help="stylegan1 output side (default 1024)")
    p.add_argument("--max-channels", type=int, default=None,
                   help="stylegan1: cap FFHQ's channel widths (a small architecture for CPU benchmarks)")
    p.add_argument("--lr-size", type=int, default=None, help="LR side (default: resolution/8 for dcgan, 32 for stylegan1)")
    p.add_argument("--steps", type=int, default=100, help="optimiser steps of each search (default: 100)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "fp16", "bf16"),
                   help="generator precisions inside the exported graphs, one sweep each (default: fp32; the torch "
                        "reference runs fp32 only)")
    p.add_argument("--backends", default="torch,ort", help="comma-separated: torch, torch-compile, ort, ort-cuda, tensorrt")
    p.add_argument("--repeats", type=int, default=3, help="timed searches per backend and batch; medians reported (default: 3)")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="warm up with a search of this many steps instead of the whole workload (1024 px on a CPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="device of the torch backends and of the matmul peak (default: cuda when torch sees a GPU, else cpu)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="artefact cache (default: $PULSE_TRT_CACHE, else ~/.cache/pulse-trt/artifacts)")
    p.add_argument("-o", "--output", "--out", dest="out", required=True, metavar="OUTDIR",
                   help="folder for bench.json / bench.md / bench.png (created if missing)")
    p.add_argument("--profile", action="store_true",
                   help="ONNX Runtime backends: after the timed searches, profile a 10-step search and add the step's "
                        "per-op summary (share of kernel time by op type, top nodes) to bench.json / bench.md")
    p.add_argument("--transposed-conv", choices=("plain", "subpixel"), default="plain",
                   help="how the exported graphs hold transposed convolutions: plain (default: ConvTranspose) or "
                        "subpixel (stride-1 Conv + DepthToSpace); a separate cache entry each")
    s = p.add_argument_group("stream mode")
    s.add_argument("--stream", type=int, default=None, metavar="N",
                   help="stream N inputs (the generator's own faces) through the engine's slots at once")
    s.add_argument("--slots", type=int, default=8, help="stream mode: slots of the scheduler (default 8)")
    s.add_argument("--sync-every", type=int, default=None, metavar="K", help="stream mode: steps between host syncs")
    s.add_argument("--early-stop", action="store_true", help="stream mode: a start ends once its L2 is within eps")
    s.add_argument("--restarts", type=int, default=0, help="stream mode: extra starts for inputs that missed eps")
    s.add_argument("--duplicates", type=int, default=1, help="stream mode: starts per input, always run")


def load_warning() -> str | None:
    """A warning when the 1-minute load average exceeds the core count (figures will be noisy)."""
    import os  # noqa: PLC0415

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None
    cores = os.cpu_count() or 1
    if load <= cores:
        return None
    return (f"this machine is busy (load average {load:.1f} on {cores} cores): other processes share the CPUs, "
            "so the figures will be noisy and slower than the machine can do")


def run(args) -> int:
    from ..api import _quiet_torch_onnx_logs  # noqa: PLC0415
    from ..bench import Stream, Workload, run_bench, run_stream, write_results  # noqa: PLC0415
    from ..engine.errors import PulseError  # noqa: PLC0415

    if args.steps < 1 or args.repeats < 1 or any(b < 1 for b in args.batch):
        raise PulseError("--steps, --repeats and --batch must be >= 1")
    lr = args.lr_size or (8 if args.generator == "dcgan" else 32)
    weights = args.weights
    if args.generator == "stylegan1" and not weights and not args.random_weights:
        raise PulseError("stylegan1 needs --weights synthesis.pt (and --mapping mapping.pt), or --random-weights")
    work = Workload(generator=args.generator, lr_size=lr, steps=args.steps, batches=tuple(args.batch),
                    precisions=tuple(args.precision), weights=weights, mapping=args.mapping,
                    resolution=args.resolution, repeats=args.repeats,
                    max_channels=args.max_channels, warmup_steps=args.warmup_steps,
                    transposed_conv=args.transposed_conv, profile=args.profile)
    if args.random_weights:
        work.weights = "random"
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    busy = load_warning()
    if busy:
        print(f"pulse-trt: warning: {busy}", file=sys.stderr)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.stream is not None:
        if args.stream < 1 or args.slots < 1 or args.restarts < 0 or args.duplicates < 1 or \
                (args.sync_every is not None and args.sync_every < 1):
            raise PulseError("--stream, --slots, --duplicates and --sync-every must be >= 1, --restarts >= 0")
        if args.backends == "torch,ort":  # the default pair: the reference has no scheduler
            backends = ("ort",)
        stream = Stream(inputs=args.stream, slots=args.slots, sync_every=args.sync_every, early_stop=args.early_stop,
                        restarts=args.restarts, duplicates=args.duplicates)
        with _quiet_torch_onnx_logs():  # torch.onnx's "torchvision is not installed" lines while exporting
            result = run_stream(work, stream, backends, cache_root=args.cache_dir, device=args.device, progress=say)
    else:
        with _quiet_torch_onnx_logs():
            result = run_bench(work, backends, cache_root=args.cache_dir, device=args.device, progress=say)
    command = "pulse-trt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    for p in write_results(result, args.out, command=command):
        print(p)
    return 0
