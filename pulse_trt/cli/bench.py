"""`pulse-trt bench`: the same PULSE workload on each backend, measured (pulse_trt/bench.py)."""
from __future__ import annotations

import shlex
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure backends on one PULSE workload",
                       description="Run one PULSE workload on each requested backend in one process; "
                                   "write bench.json, bench.md and bench.png.")
    p.add_argument("--generator", default="dcgan", choices=("dcgan", "stylegan1", "mobilestylegan"))
    p.add_argument("--weights", help="synthesis weights (stylegan1; random test weights with --random-weights); "
                                     "mobilestylegan: default the fetched weights (pulse-trt weights fetch)")
    p.add_argument("--mapping", help="mapping weights (stylegan1)")
    p.add_argument("--random-weights", action="store_true",
                   help="stylegan1 / mobilestylegan with seeded random weights (architecture benchmarks; no download)")
    p.add_argument("--resolution", type=int, default=1024, help="stylegan1 output side (default 1024)")
    p.add_argument("--max-channels", type=int, default=None,
                   help="stylegan1: cap FFHQ's channel widths (a small architecture for CPU benchmarks)")
    p.add_argument("--lr-size", type=int, default=None, help="LR side (default: resolution/8 for dcgan, 32 for stylegan1)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "fp16", "bf16"))
    p.add_argument("--backends", default="torch,ort", help="comma-separated: torch, torch-compile, ort, ort-cuda, tensorrt")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="warm up with a search of this many steps instead of the whole workload (1024 px on a CPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--cache-dir", default=None, help="artefact cache (default ~/.cache/pulse-trt/artifacts)")
    p.add_argument("-o", "--out", required=True, help="directory for bench.json / bench.md / bench.png")


def run(args) -> int:
    from ..bench import Workload, run_bench, write_results  # noqa: PLC0415
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
                    max_channels=args.max_channels, warmup_steps=args.warmup_steps)
    if args.random_weights:
        work.weights = "random"
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    result = run_bench(work, backends, cache_root=args.cache_dir, device=args.device,
                       progress=lambda m: print(m, file=sys.stderr))
    command = "pulse-trt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    for p in write_results(result, args.out, command=command):
        print(p)
    return 0
