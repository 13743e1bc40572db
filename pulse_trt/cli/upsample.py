"""`pulse-trt upsample INPUT... -o OUTDIR`: PULSE on a list of LR faces.

Flow (nothing is written until every input has passed step 2):
  1. Options: PULSE options (cli.options), generator, backend, batch size, device.
  2. Validate every input (engine.images.load_image: readable, 8-bit, square, a side that
     divides the generator's resolution) and plan every output path (pulse_trt.outputs:
     no clobbering without --overwrite, no two inputs writing the same name).
  3. Open the backend runner (loads the generator), then search batch by batch (inputs of one
     size per batch, --batch-size inputs each), with one progress bar over steps x batches.
  4. Per input write NAME_pulse.png, NAME_pulse_lr.png and NAME_pulse.json atomically.

Exit status: 0 when every input was processed, including inputs whose search did not reach
eps (their outputs are still written, the record says "success": false and a note says so);
1 with --strict when any input missed eps; 2 for an error (bad input, bad option, missing
weights), with nothing written for inputs not yet processed; 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..engine.bicubic import downscale
from ..engine.errors import PulseError
from ..engine.images import check_size, expand_inputs, from_chw01, load_image
from ..engine.result import ImageResult
from ..outputs import plan_outputs, write_result
from .options import add_pulse_options, options_from_args

GENERATORS = ("dcgan", "stylegan1")
# Output side of each generator without --resolution (known before loading it, so that inputs
# are checked before the slow part).
DEFAULT_RESOLUTION = {"dcgan": 64, "stylegan1": 1024}
# Backends of the search. Adding one = one branch in open_runner.
BACKENDS = ("torch",)
DEFAULT_BACKEND = "torch"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "upsample", help="upsample LR faces with PULSE",
        description="Find faces that downscale to the given LR faces (PULSE). Per input NAME writes "
                    "NAME_pulse.png (HR), NAME_pulse_lr.png (its downscale) and NAME_pulse.json (the record) in OUTDIR.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="LR face images (square, 8-bit PNG/JPEG) or folders of them")
    p.add_argument("-o", "--output", dest="output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    g = p.add_argument_group("generator")
    g.add_argument("--generator", choices=GENERATORS, default="dcgan",
                   help="dcgan (default): the embedded 64 px generator; stylegan1: PULSE's FFHQ StyleGAN (needs --weights)")
    g.add_argument("--weights", default=None, help="generator weights (stylegan1: PULSE's synthesis.pt); default: the embedded dcgan")
    g.add_argument("--mapping", default=None, help="stylegan1 mapping network (PULSE's mapping.pt), for the Gaussian fit")
    g.add_argument("--resolution", type=int, default=None, help="stylegan1 output side (default 1024; dcgan is always 64)")
    r = p.add_argument_group("run")
    r.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help=f"search implementation (default: {DEFAULT_BACKEND})")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the search runs (default: cpu)")
    r.add_argument("--batch-size", type=int, default=1, help="inputs searched together, each with --duplicates restarts (default: 1)")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse before doing any work)")
    r.add_argument("--strict", action="store_true", help="exit 1 when any input misses eps (default: 0, with a note per miss)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-input lines (notes and errors still print)")
    add_pulse_options(p)
    return p


class TorchRunner:
    """The PyTorch reference backend: export.generators + export.reference.pulse_search."""

    name = "torch"

    def __init__(self, generator: str, *, weights=None, mapping=None, resolution=None, device: str = "cpu"):
        try:
            import torch  # noqa: PLC0415
        except ModuleNotFoundError:
            raise PulseError("--backend torch needs PyTorch: pip install torch, then pip install 'pulse-trt[export]'") from None
        from ..export.generators import load_generator  # noqa: PLC0415

        if device == "cuda" and not torch.cuda.is_available():
            raise PulseError("--device cuda: no CUDA device is available to torch here (use --device cpu)")
        kwargs = {"device": device}
        if mapping is not None:
            kwargs["mapping"] = mapping
        if resolution is not None:
            kwargs["resolution"] = resolution
        self.generator = load_generator(generator, weights, **kwargs).eval()
        self.spec = self.generator.spec
        self.device = device
        self.description = {"name": generator, "weights": str(weights) if weights else "embedded",
                            "mapping": str(mapping) if mapping else None, "spec": self.spec.to_dict()}

    def search(self, targets: np.ndarray, options, progress) -> list[ImageResult]:
        """targets [N, 3, lr, lr] float32 in [0, 1] -> one ImageResult per input."""
        from ..export.reference import pulse_search  # noqa: PLC0415

        return pulse_search(self.generator, targets, options, device=self.device, progress=progress)


def open_runner(args: argparse.Namespace):
    """The search runner of args.backend (with .spec, .description and .search)."""
    if args.backend == "torch":
        return TorchRunner(args.generator, weights=args.weights, mapping=args.mapping, resolution=args.resolution,
                           device=args.device)
    raise PulseError(f"unknown backend {args.backend!r}; choose one of {', '.join(BACKENDS)}")


def _expected_resolution(args: argparse.Namespace) -> int:
    if args.resolution is not None:
        if args.generator == "dcgan" and args.resolution != DEFAULT_RESOLUTION["dcgan"]:
            raise PulseError(f"--resolution {args.resolution}: dcgan makes 64x64 faces only (--resolution is for stylegan1)")
        if args.resolution < 4 or args.resolution & (args.resolution - 1):
            raise PulseError(f"--resolution must be a power of two >= 4, got {args.resolution}")
        return args.resolution
    return DEFAULT_RESOLUTION[args.generator]


def _batches(sizes: list[int], batch_size: int) -> list[list[int]]:
    """Input indices grouped by LR size (first-seen order), then cut into batches."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault(s, []).append(i)
    return [idx[k:k + batch_size] for idx in groups.values() for k in range(0, len(idx), batch_size)]


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if args.batch_size < 1:
        raise PulseError(f"--batch-size must be >= 1, got {args.batch_size}")
    resolution = _expected_resolution(args)

    # 2. Validate every input and plan every output before any work.
    inputs = expand_inputs(args.inputs)
    notes: list[str] = []
    per_input_notes: list[list[str]] = []
    targets = []
    for path in inputs:
        mine: list[str] = []
        targets.append(load_image(path, resolution=resolution, notes=mine))  # [3, lr, lr]
        per_input_notes.append(mine)
        notes.extend(mine)
    outdir = Path(args.output)
    plans = plan_outputs(inputs, outdir, overwrite=args.overwrite)
    for n in notes:
        _err(f"pulse-trt: note: {n}")

    # 3. Backend (loads the generator; its resolution is now known for sure).
    runner = open_runner(args)
    hr_size = runner.spec.resolution
    if hr_size != resolution:
        for path, t in zip(inputs, targets):
            check_size(t.shape[2], t.shape[1], hr_size, what=str(path))
    outdir.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm  # noqa: PLC0415

    batches = _batches([t.shape[-1] for t in targets], args.batch_size)
    successes, t_start = 0, time.perf_counter()
    say = (lambda msg: None) if args.quiet else tqdm.write
    with tqdm(total=options.steps * len(batches), unit="step", desc="pulse-trt upsample", file=sys.stderr,
              disable=args.quiet, dynamic_ncols=True) as bar:
        for b, batch in enumerate(batches):
            target = np.stack([targets[i] for i in batch])  # [N, 3, lr, lr]
            results = runner.search(target, options, progress=lambda step, steps: bar.update(1))
            for row, (i, res) in enumerate(zip(batch, results)):
                record = _record(args, runner, options, inputs[i], plans[i], targets[i], res, hr_size,
                                 batch_index=b, batch_row=row, notes=per_input_notes[i])
                write_result(plans[i], res.hr, res.lr, record)  # 4.
                if record["success"]:
                    successes += 1
                    say(f"{inputs[i]} -> {plans[i].hr} ({hr_size}x{hr_size}): min L2 {record['min_l2']:.4g} <= eps {options.eps:g}, "
                        f"downscale of the PNG: MSE {record['output_l2_uint8']:.4g}")
                else:
                    tqdm.write(f"pulse-trt: note: {inputs[i]}: could not find a face that downscales within eps={options.eps:g} "
                               f"(best L2 {record['min_l2']:.3g} in {options.steps} steps; try more --steps or --duplicates); "
                               f"wrote {plans[i].hr.name} anyway, its record says success: false", file=sys.stderr)
    total = len(inputs)
    if not args.quiet:
        print(f"{successes} of {total} input{'s' if total != 1 else ''} downscale within eps={options.eps:g}; "
              f"outputs in {outdir}/ ({time.perf_counter() - t_start:.1f} s)")
    return 1 if (args.strict and successes < total) else 0


def _record(args, runner, options, path: Path, plan, target: np.ndarray, res: ImageResult, hr_size: int, *,
            batch_index: int, batch_row: int, notes: list[str]) -> dict:
    """The JSON record of one input: the search's record plus what a reader needs to reproduce
    and judge it.

    output_l2:       mean (D(hr) - y)^2 of the clamped float image that was rendered.
    output_l2_uint8: the same on the files as written (8-bit HR, downscaled again, vs the 8-bit
                     input): what a user who checks the PNGs measures.
    """
    lr_size = target.shape[-1]
    factor = hr_size // lr_size
    hr_u8 = from_chw01(res.hr).transpose(2, 0, 1)[None].astype(np.float64) / 255.0  # [1, 3, R, R]
    lr_of_file = downscale(hr_u8, factor)[0]  # [3, lr, lr]
    y_u8 = np.rint(target.astype(np.float64) * 255.0) / 255.0  # [3, lr, lr], the input file's exact values
    search = dict(res.record)
    search.pop("input", None)
    search.pop("backend", None)
    return {
        "input": str(path),
        "outputs": {"hr": plan.hr.name, "lr": plan.lr.name, "record": plan.record.name},
        "success": bool(search.pop("success")),
        "eps": options.eps,
        "l2": search.pop("l2"),
        "min_l2": search.pop("min_l2"),
        "output_l2": float(np.mean((res.lr.astype(np.float64) - target) ** 2)),
        "output_l2_uint8": float(np.mean((lr_of_file - y_u8) ** 2)),
        **search,  # best_step, steps, terms, restart, seconds
        "seconds_note": "wall time of the whole batch (generator load excluded)",
        "batch": {"index": batch_index, "row": batch_row, "size": args.batch_size},
        "lr_size": lr_size,
        "hr_size": hr_size,
        "factor": factor,
        "generator": runner.description,
        "backend": runner.name,
        "device": args.device,
        "options": options.to_dict(),
        "notes": notes,
        "pulse_trt": __version__,
    }
