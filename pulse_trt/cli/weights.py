"""`pulse-trt weights fetch mobilestylegan`: download and convert generator weights that are not
shipped with the package (pulse_trt/weights.py), so a later run starts at once or a machine
without the package index can be given the converted file.

    pulse-trt weights fetch mobilestylegan            # pip download of the pinned wheel, sha256, convert
    pulse-trt weights fetch mobilestylegan --from random_face-2021.7.21.1-py3-none-any.whl
    pulse-trt weights path mobilestylegan             # print the cached file (exit 2 when missing)
"""
from __future__ import annotations

import argparse
import sys

from ..engine.errors import PulseError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("weights", help="fetch generator weights that are not shipped (mobilestylegan)",
                              description="Fetch and convert generator weights into the weights cache "
                                          "($PULSE_TRT_WEIGHTS or ~/.cache/pulse-trt/weights).")
    p.add_argument("action", choices=("fetch", "path"), help="fetch: download (or read --from) and convert; "
                                                              "path: print the cached converted file")
    p.add_argument("generator", choices=("mobilestylegan",), help="generator whose weights to fetch")
    p.add_argument("--from", dest="source", default=None, metavar="PATH",
                   help="the random-face wheel or its data/ folder, for machines without the package index")
    p.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="weights cache (default: $PULSE_TRT_WEIGHTS or ~/.cache/pulse-trt/weights)")
    p.add_argument("--force", action="store_true", help="fetch and convert again even when cached")
    return p


def run(args: argparse.Namespace) -> int:
    from ..weights import LICENSE, fetch, provenance, resolve_weights  # noqa: PLC0415

    log = lambda msg: print(f"pulse-trt: {msg}", file=sys.stderr)  # noqa: E731
    if args.action == "path":
        if args.source is not None or args.force:
            raise PulseError("`weights path` takes no --from / --force")
        print(resolve_weights(args.generator, None, cache_dir=args.weights_dir, download=False))
        return 0
    if args.source is not None:
        path = resolve_weights(args.generator, args.source, cache_dir=args.weights_dir, log=log)
        if path.suffix != ".safetensors" or provenance(path) is None:
            raise PulseError(f"--from takes the random-face wheel or its data/ folder, not {args.source}")
    else:
        path = fetch(args.generator, cache_dir=args.weights_dir, log=log, force=args.force)
    rec = provenance(path) or {}
    print(path)
    log(f"{rec.get('values', 0) / 1e6:.1f}M values, sha256 {str(rec.get('weights_sha256'))[:16]}...; licence: {LICENSE}")
    return 0
