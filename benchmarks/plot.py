"""Regenerate the throughput plot (images/s by batch size, one line per backend) from bench JSONs.

    python benchmarks/plot.py benchmarks/results/cpu/dcgan/bench.json -o benchmarks/results/cpu/dcgan/bench.png
"""
from __future__ import annotations

import argparse
import json
import sys

from pulse_trt.bench import plot_throughput


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="+", help="bench.json files written by `pulse-trt bench`")
    p.add_argument("-o", "--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    results = []
    for path in args.json:
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"plot: cannot read {path}: {e}", file=sys.stderr)
            return 2
    plot_throughput(results, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
