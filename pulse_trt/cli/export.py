"""`pulse-trt export`: trace PULSE for one generator and option set into ONNX artefacts.

    pulse-trt export --generator dcgan --lr-size 8 -o artefacts/dcgan8
    pulse-trt export --generator stylegan1 --weights synthesis.pt --mapping mapping.pt --lr-size 32 \
        --precision fp16 --trt-engine -o artefacts/sg1-32
    pulse-trt export --generator mobilestylegan --lr-size 32 -o artefacts/msg32   # weights fetched once
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.errors import PulseError
from .options import add_pulse_options, options_from_args

INSTALL_HINT = "pip install 'pulse-trt[export]'"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="trace PULSE into ONNX artefacts (needs torch)",
                              description="Trace one PULSE iteration and the render pass into ONNX (docs/artifacts.md), "
                                          "verify them against PyTorch and check TensorRT compatibility.")
    p.add_argument("--generator", choices=("dcgan", "stylegan1", "mobilestylegan"), default="dcgan",
                   help="generator (default: dcgan, embedded; mobilestylegan: fetched on first use)")
    p.add_argument("--weights", type=Path, help="generator weights (stylegan1: PULSE's synthesis.pt; mobilestylegan: "
                                                "the random-face wheel, its data/ folder or our .safetensors)")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="where fetched weights are cached (default: $PULSE_TRT_WEIGHTS or ~/.cache/pulse-trt/weights)")
    p.add_argument("--mapping", type=Path, help="stylegan1 mapping weights (PULSE's mapping.pt)")
    p.add_argument("--gaussian-fit", type=Path, default=None, metavar="FILE",
                   help="stylegan1 / mobilestylegan: the Gaussian fit from FILE (PULSE's gaussian_fit.pt: mean and std) "
                        "instead of computing it")
    p.add_argument("--resolution", type=int, default=1024, help="stylegan1 output side (default: 1024)")
    p.add_argument("--lr-size", type=int, required=True, help="side of the low-resolution inputs (divides the resolution)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="generator precision inside the graphs")
    p.add_argument("--transposed-conv", choices=("plain", "subpixel"), default="plain",
                   help="transposed convolutions (dcgan's layers, strided convs' gradients) as plain ConvTranspose nodes "
                        "(default; fastest on ONNX Runtime's CPU as measured) or subpixel: stride-1 Conv + DepthToSpace")
    p.add_argument("--no-verify", action="store_true", help="skip onnx.checker and the ONNX Runtime comparison")
    p.add_argument("--verify-tolerance", type=float, default=None,
                   help="worst relative error accepted by the verification (default: 1e-4 fp32, 5e-2 fp16, 1e-1 bf16)")
    p.add_argument("--allow-unsupported-ops", action="store_true", help="export even when TensorRT's parser would reject a node")
    p.add_argument("--trt-engine", action="store_true", help="also build TensorRT engines (needs tensorrt and a GPU)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of the TensorRT optimisation profile: the most slots the engines run (default: 8)")
    p.add_argument("-o", "--output", type=Path, required=True, help="artefact directory to create (must not exist or be empty)")
    add_pulse_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)  # bad options fail before torch is even imported
    try:
        import torch  # noqa: F401, PLC0415
        import onnx  # noqa: F401, PLC0415
    except ImportError as e:
        raise PulseError(f"export needs torch and onnx ({e.name} is missing): {INSTALL_HINT}") from None
    from ..export.generators import load_generator  # noqa: PLC0415
    from ..export.onnx_export import export_artifacts  # noqa: PLC0415

    if args.generator in ("dcgan", "mobilestylegan") and (args.mapping is not None):
        raise PulseError(f"{args.generator} has no separate mapping file; drop --mapping")
    weights = args.weights
    if args.generator == "mobilestylegan":
        import sys  # noqa: PLC0415

        from ..weights import resolve_weights  # noqa: PLC0415

        weights = resolve_weights("mobilestylegan", weights, cache_dir=args.weights_dir,
                                  log=lambda msg: print(f"pulse-trt: {msg}", file=sys.stderr))
    if args.generator == "dcgan" and args.gaussian_fit is not None:
        raise PulseError("dcgan has no mapping network, so no Gaussian fit: drop --gaussian-fit")
    generator = load_generator(args.generator, weights, mapping=args.mapping, gaussian_fit=args.gaussian_fit,
                               **({"resolution": args.resolution} if args.generator == "stylegan1" else {}))
    from ..api import _quiet_torch_onnx_logs  # noqa: PLC0415

    with _quiet_torch_onnx_logs():  # torch.onnx's "torchvision is not installed" lines, as upsample
        out = export_artifacts(generator, options, args.lr_size, args.output, precision=args.precision,
                               verify=not args.no_verify, allow_unsupported=args.allow_unsupported_ops,
                               verify_tolerance=args.verify_tolerance, transposed_conv=args.transposed_conv)
    print(f"wrote {out}")
    if args.trt_engine:
        from ..export.trt_build import build_engines  # noqa: PLC0415

        for path in build_engines(out, max_batch=args.max_batch):
            print(f"wrote {path}")
    return 0
