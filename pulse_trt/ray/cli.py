"""`pulse-trt upsample ... --ray [ADDRESS]`: the CLI's inputs, options and output plan (steps 1-2 of
pulse_trt/cli/upsample.py, unchanged), then pulse_trt.ray.data.run_job instead of the local
engine: artefacts found or exported once here, shipped to `--actors` engines, each writing its
inputs' files and records as the local run would."""
from __future__ import annotations

import sys
import time

from ..engine.errors import PulseError
from .data import init_ray, require_ray, resolve_shipments, item_rows, run_job, write_grid_from_files


def run_upsample(args, items, positions, options, outdir, curves: bool) -> int:
    require_ray()
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"pulse-trt: {msg}", file=sys.stderr, flush=True))
    t_start, started = time.perf_counter(), time.time()
    pulse_kwargs = dict(generator=args.generator, weights=args.weights, mapping=args.mapping,
                        resolution=args.resolution, options=options, backend=args.backend,
                        precision=args.precision, cache_dir=args.cache_dir, export_progress=not args.quiet)
    connected = init_ray(args.ray, quiet=args.quiet)
    try:
        import ray  # noqa: PLC0415

        ray.data.DataContext.get_current().enable_progress_bars = not args.quiet
        shipped = resolve_shipments([it.target.shape[-1] for it in items], ship="auto", artifacts=args.artifacts,
                                    pulse_kwargs=pulse_kwargs, log=say)
        say(f"{len(items)} input(s) on Ray ({args.ray}): {args.actors} actor(s) x {args.slots} slots, "
            f"{args.ray_cpus:g} CPU(s) each")
        outdir.mkdir(parents=True, exist_ok=True)
        successes = 0

        def on_row(row):
            nonlocal successes
            successes += bool(row["success"])
            if not row["success"]:
                print(f"pulse-trt: note: {row['name']}: could not find a face that downscales within eps={options.eps:g} "
                      f"(best L2 {row['min_l2']:.3g}); its record says success: false", file=sys.stderr)

        rows = run_job(item_rows(items, positions), outdir, shipped, options, backend=args.backend, slots=args.slots,
                       sync_every=args.sync_every, concurrency=args.actors, num_cpus=args.ray_cpus,
                       num_gpus=args.ray_gpus, curves=curves, overwrite=args.overwrite, resume=args.resume,
                       job_started=started, on_row=on_row)
    except Exception as e:  # noqa: BLE001
        if not type(e).__module__.startswith("ray"):
            raise
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise PulseError(f"the Ray job failed ({type(e).__name__}: {cause}); inputs with a record are complete: "
                         "rerun with --resume to finish the rest") from None
    finally:
        if connected:
            require_ray().shutdown()
    if len(rows) != len(items):
        raise PulseError(f"Ray returned {len(rows)} result(s) for {len(items)} input(s)")
    grid = write_grid_from_files(items, outdir)
    total = len(items)
    if not args.quiet:
        print(f"{successes} of {total} input{'s' if total != 1 else ''} downscale within eps={options.eps:g}; "
              f"outputs in {outdir}/, comparison grid {grid.name if grid else '-'} "
              f"({time.perf_counter() - t_start:.1f} s, Ray, {args.actors} actor(s))")
    return 1 if (args.strict and successes < total) else 0
