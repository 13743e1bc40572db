"""`pulse-trt bench`: one PULSE workload on every requested backend, in one process, measured.

Backends:
  torch          the PyTorch reference (export/reference.py: torch.optim, eager), as users run PULSE
  torch-compile  the exported iteration (export/step.py) under torch.compile; on CUDA with
                 mode="reduce-overhead" (CUDA graphs): the strongest thing a PyTorch user would do
  ort            ONNX Runtime, CPU execution provider (engine/)
  ort-cuda       ONNX Runtime, CUDA execution provider, state on the device (engine/)
  tensorrt       TensorRT engines built from the same ONNX (engine/ + export/trt_build.py)

Method (llm.c): every backend first runs the workload once (warm-up: sessions, compilation,
autotuning excluded from the figures; with `warmup_steps` a shorter search of that many steps,
for 1024 px generators whose every search takes minutes on a CPU), then `repeats` timed runs;
we report medians. Per backend
and batch: ms per step (time inside the step calls / steps), images per second (batch / whole
search), peak memory (process RSS above the pre-run baseline; GPU memory in use above baseline),
speed-up over the torch reference at the same batch and precision, and the fraction of the FLOP
floor reached: (FLOPs of one step, counted from step.onnx) / (ms per step) / (peak FLOP/s
measured by a large matmul on the same device and precision). The engine backends run a batch
as `batch` requests in `batch` slots of the scheduler (engine/scheduler.py), all starting
together: the lockstep workload.

Stream mode (run_stream, `pulse-trt bench --stream N`): N inputs submitted at once to one engine
with B slots (the continuous-batching scheduler: a freed slot takes the next start at once);
images per second (N / wall time from the first submission to the last result), latency
percentiles (submission to result, per input), success rate, optimiser steps run over all starts
(the compute) and host synchronisations per step. One warm-up stream of B inputs and 2 steps
first (sessions, bindings).
"""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .engine.errors import PulseError
from .engine.options import PulseOptions
from .machine import machine_info, machine_label

BACKENDS = ("torch", "torch-compile", "ort", "ort-cuda", "tensorrt")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Workload:
    """What every backend runs: generator, LR size, steps, batch sizes, precisions."""

    generator: str = "dcgan"
    lr_size: int = 8
    steps: int = 100
    batches: tuple[int, ...] = (1, 8)
    precisions: tuple[str, ...] = ("fp32",)
    weights: str | None = None
    mapping: str | None = None
    resolution: int = 1024
    max_channels: int | None = None  # stylegan1: cap FFHQ's channel widths (small CPU benchmarks)
    repeats: int = 3
    warmup_steps: int | None = None  # None: the warm-up runs all `steps`
    seed: int = 0
    options: dict = field(default_factory=dict)
    transposed_conv: str = "plain"  # how the exported graphs hold transposed convs (export.decompositions)
    profile: bool = False  # ORT backends: profile a short extra search, per-op summary in the row (ort_profile)


class PeakMemory:
    """Peak process RSS (and GPU memory in use, when torch sees a GPU) above the baseline at
    entry, sampled every 5 ms by a thread."""

    def __init__(self, gpu: bool):
        self.gpu = gpu
        self.peak_rss = self.peak_gpu = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _gpu_used(self) -> int:
        import torch  # noqa: PLC0415

        free, total = torch.cuda.mem_get_info()
        return total - free

    def __enter__(self):
        self._base_rss = self._rss()
        self._base_gpu = self._gpu_used() if self.gpu else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._rss() - self._base_rss)
            if self.gpu:
                self.peak_gpu = max(self.peak_gpu, self._gpu_used() - self._base_gpu)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample_once()

    def _sample_once(self):
        self.peak_rss = max(self.peak_rss, self._rss() - self._base_rss)


def _median_seconds(run, repeats: int = 6) -> float:
    """Median wall time of run() over `repeats` calls after one warm-up."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ort_matmul_flops(n: int) -> float:
    """FLOP/s of ONNX Runtime's CPU MatMul (MLAS) on n x n float32, one thread per core."""
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    io = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "abc"]
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak", io[:2], io[2:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((n, n), dtype=np.float32) for x in "ab"}
    return 2 * n**3 / _median_seconds(lambda: sess.run(None, feeds))


def peak_flops(device: str, precision: str) -> float:
    """Achievable FLOP/s of this device and precision: a large square matmul, the faster of the
    libraries at hand. CUDA: torch (cuBLAS), 8192, in the precision. CPU: 2048, float32, the
    faster of torch's matmul and ONNX Runtime's MatMul: they differ by 2x on some CPUs (on this
    project's AMD EPYC torch's BLAS reaches about 210 GFLOP/s, MLAS about 430), and a floor
    measured with the slower one reads over 100%."""
    import torch  # noqa: PLC0415

    dtype = getattr(torch, DTYPES[precision]) if device == "cuda" else torch.float32
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def torch_matmul():
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    best = 2 * n**3 / _median_seconds(torch_matmul)
    return max(best, _ort_matmul_flops(n)) if device == "cpu" else best


def _targets(generator, lr_size: int, n: int, seed: int) -> np.ndarray:
    """n LR faces the generator itself made (seeded latents), downscaled with PULSE's operator."""
    import torch  # noqa: PLC0415

    from .engine.bicubic import downscale, factor_for  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    spec = generator.spec
    v = torch.randn(n, 1 if spec.num_ws == 1 else spec.num_ws, spec.latent_dim, generator=g)
    noise = [torch.randn(n, *s, generator=g) for s in spec.noise_shapes]
    dev = next(generator.parameters()).device
    with torch.no_grad():
        x = generator.image01(generator.map_latent(v.to(dev)), [z.to(dev) for z in noise]).clamp(0, 1).cpu().numpy()
    return np.clip(downscale(x, factor_for(spec.resolution, lr_size)), 0.0, 1.0).astype(np.float32)



def _timed_search(runner, sched, targets, opts) -> tuple[float, float]:
    """Search `targets` through the scheduler once: (seconds of the whole search, seconds inside
    the step calls scaled to `opts.steps` steps per input)."""
    from .engine.scheduler import Request  # noqa: PLC0415

    t0, s0, n0 = time.perf_counter(), runner.step_seconds, runner.steps_run
    for i, y in enumerate(targets):
        sched.add(Request(target=y, index=i, options=opts))
    sched.run_until_done()
    steps = (runner.steps_run - n0) or 1
    return time.perf_counter() - t0, (runner.step_seconds - s0) * opts.steps / steps

PROFILE_STEPS = 10  # steps of the profiled search (--profile): enough runs for stable shares


def _profile_ort(art, backend: str, targets, options: PulseOptions) -> dict:
    """ORT's per-node profile of a PROFILE_STEPS search of `targets` (a separate, untimed run:
    profiling slows the step), summarised by ort_profile.summarize; the raw trace is deleted."""
    import tempfile  # noqa: PLC0415

    from .engine.api import make_runner  # noqa: PLC0415
    from .engine.manifest import load_manifest  # noqa: PLC0415
    from .engine.scheduler import Scheduler  # noqa: PLC0415
    from .ort_profile import summarize  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="pulse-trt-profile-") as tmp:
        runner = make_runner(load_manifest(art), backend, profile=str(Path(tmp) / "step"))
        runner.activate()
        try:
            _timed_search(runner, Scheduler(runner, slots=len(targets)), targets,
                          replace(options, steps=min(options.steps, PROFILE_STEPS)))
        finally:
            runner.deactivate()
        return summarize(runner.profile_file)


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def random_mobilestylegan(device: str, fit_samples: int = 100_000):
    """MobileStyleGAN 1024's architecture with seeded random weights (no download), for
    architecture benchmarks."""
    import torch  # noqa: PLC0415

    from .export.gaussian_fit import gaussian_fit  # noqa: PLC0415
    from .export.generators.mobilestylegan import MobileStyleGANGenerator  # noqa: PLC0415

    g = MobileStyleGANGenerator(seed=0)
    mean, std = gaussian_fit(g.mapping, n=fit_samples, seed=0)
    with torch.no_grad():
        g.w_mean.copy_(mean)
        g.w_std.copy_(std)
    return g.to(device)


def random_stylegan1(resolution: int, fmaps, device: str, fit_samples: int = 100_000):
    """StyleGAN v1 of the given architecture with seeded random weights (no download) and a
    Gaussian fit of its mapping from `fit_samples` samples: for architecture benchmarks."""
    import torch  # noqa: PLC0415

    from .export.gaussian_fit import gaussian_fit  # noqa: PLC0415
    from .export.generators.stylegan1 import StyleGAN1Generator  # noqa: PLC0415

    g = StyleGAN1Generator(resolution=resolution, fmaps=fmaps, seed=0)
    mean, std = gaussian_fit(g.mapping, n=fit_samples, seed=0)
    with torch.no_grad():
        g.w_mean.copy_(mean)
        g.w_std.copy_(std)
    g.eval().requires_grad_(False)
    return g.to(device)


def _is_oom(e: Exception) -> bool:
    text = f"{type(e).__name__}: {e}".lower()
    return any(k in text for k in ("out of memory", "outofmemory", "failed to allocate", "cudaerrormemoryallocation"))


def _available(backend: str, device: str) -> str | None:
    """None when the backend can run here, else why not."""
    if backend in ("ort-cuda", "tensorrt") and device != "cuda":
        return "needs a CUDA GPU"
    if backend == "ort-cuda":
        import onnxruntime as ort  # noqa: PLC0415

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu)"
    if backend == "tensorrt":
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed"
    return None


def _workload_generator(work: Workload, device: str, progress=print):
    """The workload's generator on `device` (stylegan1: channels capped; random weights when asked;
    mobilestylegan: the fetched weights)."""
    from .export.generators import load_generator  # noqa: PLC0415

    fmaps = None
    if work.max_channels:
        from .export.generators.stylegan1 import ffhq_channels  # noqa: PLC0415

        cap = work.max_channels
        fmaps = lambda r: min(ffhq_channels(r), cap)  # noqa: E731
    if work.weights == "random":
        return (random_mobilestylegan(device) if work.generator == "mobilestylegan"
                else random_stylegan1(work.resolution, fmaps, device))
    if work.generator == "mobilestylegan":
        from .weights import resolve_weights  # noqa: PLC0415

        return load_generator("mobilestylegan", resolve_weights("mobilestylegan", work.weights, log=progress),
                              device=device)
    return load_generator(work.generator, work.weights, mapping=work.mapping, resolution=work.resolution,
                          fmaps=fmaps, device=device)


TORCH_BACKENDS = ("torch", "torch-compile")


def _torch_or_none():
    try:
        import torch  # noqa: PLC0415

        return torch
    except ImportError:
        return None


def _targets_from_render(art, n: int, seed: int) -> np.ndarray:
    """n LR faces without torch: the artefacts' render graph (ONNX Runtime) on seeded numpy latents
    and noise maps ~ N(0, 1) (the search's variables, mapped inside the graph): its lr_image."""
    import onnxruntime as ort  # noqa: PLC0415

    from .engine.manifest import load_manifest  # noqa: PLC0415

    m = load_manifest(art)
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(m.dir / m.raw["render"]["file"]), providers=["CPUExecutionProvider"])
    feeds = {i["name"]: rng.standard_normal([n if d == "B" else int(d) for d in i["shape"]]).astype(np.float32)
             for i in m.raw["render"]["inputs"]}
    names = [o.name for o in sess.get_outputs()]
    return np.clip(sess.run(None, feeds)[names.index("lr_image")], 0.0, 1.0).astype(np.float32)


def _artifacts_without_torch(work: Workload, options: PulseOptions, precision: str, cache_root, progress):
    """The cached artefacts of `work` found without torch (pulse_trt.cache_index, through Pulse):
    a PulseError (one line) when they are not cached yet or the workload needs torch."""
    from .api import Pulse  # noqa: PLC0415

    if work.transposed_conv != "plain":
        raise PulseError("--transposed-conv subpixel exports new graphs, which needs torch: pip install 'pulse-trt[export]'")
    if work.weights == "random" or work.max_channels:
        raise PulseError("--random-weights and --max-channels build the generator with torch, which is not installed: "
                         "pip install 'pulse-trt[export]'")
    pulse = Pulse(work.generator, weights=work.weights, mapping=work.mapping,
                  resolution=work.resolution if work.generator == "stylegan1" else None, lr_size=work.lr_size,
                  options=options, precision=precision, cache_dir=cache_root, log=progress)
    pulse._export()  # torch-free when the cache index knows the artefacts; else "needs torch", one line
    return pulse.artifacts_dir


def _cpu_peak_without_torch(n: int = 2048) -> float:
    """FLOP/s of a float32 n x n matmul without torch: numpy's BLAS, or ONNX Runtime's MLAS when onnx
    (which builds the model) is installed; the faster."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    best = 2 * n**3 / _median_seconds(lambda: a @ b)
    try:
        best = max(best, _ort_matmul_flops(n))
    except ImportError:
        pass
    return best


def _run_bench_ort_only(work: Workload, backends, *, cache_root, progress) -> dict:
    """run_bench without torch: the "ort" backend on cached artefacts (see run_bench)."""
    from .engine.api import make_runner  # noqa: PLC0415
    from .engine.manifest import load_manifest  # noqa: PLC0415
    from .engine.scheduler import Scheduler  # noqa: PLC0415

    options = PulseOptions(**{**work.options, "steps": work.steps, "seed": work.seed})
    warm_options = options if not work.warmup_steps else PulseOptions(**{**options.to_dict(), "steps": min(work.steps, work.warmup_steps)})
    info = machine_info()
    rows, skipped, peaks = [], [], {}
    for precision in work.precisions:
        art = _artifacts_without_torch(work, options, precision, cache_root, progress)
        targets_all = _targets_from_render(art, max(work.batches), work.seed)
        peak = peaks[precision] = _cpu_peak_without_torch()
        for backend in backends:
            for batch in work.batches:
                targets = targets_all[:batch]
                progress(f"[bench] {backend} {precision} batch {batch}: warm-up")
                with PeakMemory(gpu=False) as mem:
                    runner = make_runner(load_manifest(art), backend)
                    runner.activate()
                    try:
                        sched = Scheduler(runner, slots=batch)

                        def run(opts=options, runner=runner, sched=sched, targets=targets):
                            return _timed_search(runner, sched, targets, opts)
                        run(warm_options)
                        runs = [run() for _ in range(work.repeats)]
                    finally:
                        runner.deactivate()
                total = statistics.median(r[0] for r in runs)
                ms = 1000.0 * statistics.median(r[1] for r in runs) / work.steps
                profile = None
                if work.profile:
                    progress(f"[bench] {backend} {precision} batch {batch}: profiling {PROFILE_STEPS} steps")
                    profile = _profile_ort(art, backend, targets, options)
                try:
                    from .flops import count_flops  # noqa: PLC0415

                    flops = count_flops(Path(art) / "step.onnx", batch)["total"]
                except ImportError:  # onnx not installed: no FLOP count
                    flops = None
                row = {"backend": backend, "precision": precision, "batch": batch, "steps": work.steps,
                       "ms_per_step": round(ms, 3), "seconds_per_search": round(total, 4),
                       "images_per_s": round(batch / total, 4), "peak_rss_mib": round(mem.peak_rss / 2**20, 1),
                       "peak_gpu_mib": None, "flops_per_step": flops,
                       "flop_floor_fraction": round(flops / (ms / 1000.0) / peak, 4) if flops and ms > 0 else None,
                       "speedup_vs_torch": None, "load_average": _load_average()}
                if profile is not None:
                    row["profile"] = profile
                rows.append(row)
                progress(f"[bench] {backend} {precision} batch {batch}: {ms:.2f} ms/step, {row['images_per_s']:.2f} img/s")
    return {
        "machine": info, "machine_label": machine_label(info), "device": "cpu", "date": time.strftime("%Y-%m-%d"),
        "workload": {**work.__dict__, "batches": list(work.batches), "precisions": list(work.precisions),
                     "options": options.to_dict(), "targets": "render.onnx of seeded numpy latents (no torch)"},
        "peak_flops": peaks,
        "peak_flops_note": "FLOP/s of a 2048 fp32 matmul, the faster of numpy and ONNX Runtime (no torch here)",
        "rows": rows, "skipped": skipped,
    }


def run_bench(work: Workload, backends=("torch", "ort"), *, cache_root=None, device=None, progress=print) -> dict:
    """Measure `work` on each backend; returns the JSON-ready result (see module doc).

    Without torch (a base install) the ONNX Runtime backends still run: the artefacts come from
    the cache through its torch-free index (exported earlier by a run with torch), the LR targets
    from the render graph (_targets_from_render), the CPU peak from numpy / ONNX Runtime, and the
    FLOP count needs onnx (left out without it). The torch backends are a one-line error."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise PulseError(f"unknown backend {unknown[0]!r}: choose from {', '.join(BACKENDS)}")
    torch = _torch_or_none()
    if torch is None:
        wanted = [b for b in backends if b in TORCH_BACKENDS]
        if wanted:
            raise PulseError(f"backend {wanted[0]} needs torch, which is not installed: pip install 'pulse-trt[export]', "
                             "or bench the ONNX Runtime backends only (--backends ort)")
        if device == "cuda" or "ort-cuda" in backends or "tensorrt" in backends:
            raise PulseError("benching GPU backends without torch is not supported here: install torch "
                             "(pip install 'pulse-trt[export]') or use --backends ort")
        return _run_bench_ort_only(work, backends, cache_root=cache_root, progress=progress)
    from .export.onnx_export import export_cached  # noqa: PLC0415
    from .export.reference import pulse_search  # noqa: PLC0415
    from .flops import count_flops  # noqa: PLC0415
    from .engine.api import make_runner  # noqa: PLC0415
    from .engine.scheduler import Scheduler  # noqa: PLC0415
    from .torch_runner import TorchRunner  # noqa: PLC0415

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if cache_root is None:
        from .api import default_cache_dir  # noqa: PLC0415  ($PULSE_TRT_CACHE, else ~/.cache/pulse-trt/artifacts)

        cache_root = default_cache_dir()
    cache_root = Path(cache_root)
    options = PulseOptions(**{**work.options, "steps": work.steps, "seed": work.seed})
    warm_options = options if not work.warmup_steps else PulseOptions(**{**options.to_dict(), "steps": min(work.steps, work.warmup_steps)})
    generator = _workload_generator(work, device, progress)
    targets_all = _targets(generator, work.lr_size, max(work.batches), work.seed)
    info = machine_info()
    rows, skipped, peaks = [], [], {}
    for precision in work.precisions:
        progress(f"[bench] exporting {work.generator} lr {work.lr_size} {precision} (cached)")
        art = export_cached(generator.cpu(), options, work.lr_size, cache_root, precision=precision, progress=False,
                            transposed_conv=work.transposed_conv)
        generator.to(device)
        peak = peaks[precision] = peak_flops(device, precision)
        for backend in backends:
            why = _available(backend, device)
            if backend == "torch" and precision != "fp32":
                why = "the reference runs in fp32 only"
            if why:
                skipped.append({"backend": backend, "precision": precision, "why": why})
                progress(f"[bench] skip {backend} {precision}: {why}")
                continue
            for batch in work.batches:
                targets = targets_all[:batch]

                def open_backend(backend=backend, batch=batch, targets=targets):
                    """(run, close) for one backend; run(opts) -> (seconds of the search, seconds in steps)."""
                    if backend == "torch":
                        def run_ref(opts=options):
                            t0 = time.perf_counter()
                            pulse_search(generator, targets, opts, device=device)
                            s = time.perf_counter() - t0
                            return s, s
                        return run_ref, lambda: None
                    from .engine.manifest import load_manifest  # noqa: PLC0415

                    if backend == "torch-compile":
                        runner = TorchRunner(load_manifest(art), generator, device=device, compile=True)
                    else:
                        runner = make_runner(load_manifest(art), backend)
                    runner.activate()
                    sched = Scheduler(runner, slots=batch)

                    def run_engine(opts=options):
                        return _timed_search(runner, sched, targets, opts)
                    return run_engine, runner.deactivate

                close = None
                try:
                    progress(f"[bench] {backend} {precision} batch {batch}: warm-up")
                    # memory counts sessions/compilation too: the runner is made inside the window
                    with PeakMemory(gpu=device == "cuda") as mem:
                        run, close = open_backend()
                        run(warm_options)  # warm-up: sessions, compilation, autotuning
                        runs = [run() for _ in range(work.repeats)]
                except Exception as e:  # noqa: BLE001  (out of memory ends this backend's batch sweep)
                    if not _is_oom(e):
                        raise
                    skipped.append({"backend": backend, "precision": precision, "batch": batch,
                                    "why": "out of memory"})
                    progress(f"[bench] {backend} {precision} batch {batch}: out of memory; larger batches skipped")
                    break
                finally:
                    if close is not None:
                        close()
                    if device == "cuda":
                        torch.cuda.empty_cache()
                profile = None
                if work.profile and backend in ("ort", "ort-cuda"):
                    progress(f"[bench] {backend} {precision} batch {batch}: profiling {PROFILE_STEPS} steps")
                    profile = _profile_ort(art, backend, targets, options)
                total = statistics.median(r[0] for r in runs)
                in_steps = statistics.median(r[1] for r in runs)
                ms = 1000.0 * in_steps / work.steps
                flops = count_flops(Path(art) / "step.onnx", batch)["total"]
                row = {
                    "backend": backend, "precision": precision, "batch": batch, "steps": work.steps,
                    "ms_per_step": round(ms, 3), "seconds_per_search": round(total, 4),
                    "images_per_s": round(batch / total, 4),
                    "peak_rss_mib": round(mem.peak_rss / 2**20, 1),
                    "peak_gpu_mib": round(mem.peak_gpu / 2**20, 1) if device == "cuda" else None,
                    "flops_per_step": flops,
                    "flop_floor_fraction": round(flops / (ms / 1000.0) / peak, 4) if ms > 0 else None,
                    "load_average": _load_average(),
                }
                if profile is not None:
                    row["profile"] = profile
                rows.append(row)
                progress(f"[bench] {backend} {precision} batch {batch}: {ms:.2f} ms/step, {row['images_per_s']:.2f} img/s")
    for r in rows:
        ref = next((x for x in rows if x["backend"] == "torch" and x["batch"] == r["batch"] and x["precision"] == "fp32"), None)
        r["speedup_vs_torch"] = round(ref["seconds_per_search"] / r["seconds_per_search"], 2) if ref else None
    return {
        "machine": info, "machine_label": machine_label(info), "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "workload": {**work.__dict__, "batches": list(work.batches), "precisions": list(work.precisions),
                     "options": options.to_dict()},
        "peak_flops": peaks,
        "peak_flops_note": "FLOP/s of a square matmul per precision (CPU: 2048 fp32, the faster of torch and "
                           "ONNX Runtime; CUDA: 8192 in the precision, torch)",
        "rows": rows, "skipped": skipped,
    }


@dataclass
class Stream:
    """A stream of `inputs` faces through `slots` slots (engine backends), with scheduling options."""

    inputs: int = 64
    slots: int = 8
    sync_every: int | None = None  # None: engine.scheduler.DEFAULT_SYNC_EVERY
    early_stop: bool = False
    restarts: int = 0
    duplicates: int = 1


def percentile(values, q: float) -> float:
    """q-th percentile (0-100) with linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, np.float64), q))


def stream_once(engine, targets: np.ndarray, options: PulseOptions) -> dict:
    """Submit every target to `engine` (an engine.api.PulseEngine, prepared) at once and wait
    for all: wall time, per-input latency and records, the compute and the host syncs it took."""
    sched, runner = engine.scheduler, engine.scheduler.runner
    rows0, syncs0, steps0 = sched.row_steps, runner.syncs, runner.steps_run
    t0 = time.perf_counter()
    futures = [engine.submit_target(y, options=options, index=i) for i, y in enumerate(targets)]
    results = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    graph_steps = runner.steps_run - steps0
    return {"seconds": wall, "latency": [r.record["seconds"] for r in results],
            "records": [r.record for r in results], "row_steps": sched.row_steps - rows0,
            "syncs": runner.syncs - syncs0, "graph_steps": graph_steps}


def stream_summary(run: dict, n: int, slots: int, steps: int) -> dict:
    """images/s, latency percentiles, success rate, compute of one stream_once() run."""
    recs = run["records"]
    return {
        "images_per_s": round(n / run["seconds"], 4), "seconds": round(run["seconds"], 3),
        "latency_p50_s": round(percentile(run["latency"], 50), 3),
        "latency_p90_s": round(percentile(run["latency"], 90), 3),
        "latency_p99_s": round(percentile(run["latency"], 99), 3),
        "success_rate": round(sum(r["success"] for r in recs) / n, 4),
        "starts": sum(r["starts"] for r in recs),
        "row_steps": run["row_steps"],
        "compute_vs_lockstep": round(run["row_steps"] / (n * steps), 4),
        "graph_steps": run["graph_steps"], "syncs": run["syncs"],
        "syncs_per_step": round(run["syncs"] / max(run["graph_steps"], 1), 4),
        "mean_rows_per_step": round(run["row_steps"] / max(run["graph_steps"], 1), 3),
    }


def run_stream(work: Workload, stream: Stream, backends=("ort",), *, cache_root=None, device=None,
               progress=print) -> dict:
    """Stream mode (module docstring): per engine backend, one warm-up, then `work.repeats`
    timed streams of stream.inputs faces (the generator's own, seeded) through stream.slots
    slots; medians of images/s and latency percentiles; success rate and compute of the last."""
    import torch  # noqa: PLC0415

    from .engine.api import BACKENDS as ENGINE_BACKENDS  # noqa: PLC0415
    from .engine.api import PulseEngine  # noqa: PLC0415
    from .engine.scheduler import DEFAULT_SYNC_EVERY  # noqa: PLC0415
    from .export.onnx_export import export_cached  # noqa: PLC0415

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise PulseError(f"unknown backend {unknown[0]!r}: choose from {', '.join(BACKENDS)}")
    if stream.inputs < 1 or stream.slots < 1:
        raise PulseError("--stream and --slots must be >= 1")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cache_root = Path(cache_root or Path.home() / ".cache" / "pulse-trt" / "artifacts")
    sync_every = stream.sync_every or DEFAULT_SYNC_EVERY
    options = PulseOptions(**{**work.options, "steps": work.steps, "seed": work.seed, "early_stop": stream.early_stop,
                              "restarts": stream.restarts, "duplicates": stream.duplicates})
    generator = _workload_generator(work, device, progress)
    targets = _targets(generator, work.lr_size, stream.inputs, work.seed)
    rows, skipped = [], []
    for precision in work.precisions:
        progress(f"[bench] exporting {work.generator} lr {work.lr_size} {precision} (cached)")
        art = export_cached(generator.cpu(), options, work.lr_size, cache_root, precision=precision, progress=False,
                            transposed_conv=work.transposed_conv)
        for backend in backends:
            why = _available(backend, device) or (None if backend in ENGINE_BACKENDS else
                                                   "stream mode runs the engine's scheduler (ort, ort-cuda, tensorrt)")
            if why:
                skipped.append({"backend": backend, "precision": precision, "why": why})
                progress(f"[bench] skip {backend} {precision}: {why}")
                continue
            with PulseEngine(art, backend, slots=stream.slots, sync_every=sync_every) as engine:
                progress(f"[bench] {backend} {precision} stream of {stream.inputs} through {stream.slots} slots: warm-up")
                warm = replace(options, steps=2, early_stop=False, restarts=0, duplicates=1)
                stream_once(engine, targets[:stream.slots], warm)
                runs = []
                for k in range(work.repeats):
                    runs.append(stream_once(engine, targets, options))
                    progress(f"[bench] {backend} {precision} run {k + 1}: {stream.inputs / runs[-1]['seconds']:.2f} images/s")
            summaries = [stream_summary(r, stream.inputs, stream.slots, work.steps) for r in runs]
            row = dict(summaries[-1])
            for key in ("images_per_s", "seconds", "latency_p50_s", "latency_p90_s", "latency_p99_s"):
                row[key] = statistics.median(x[key] for x in summaries)
            row.update(backend=backend, precision=precision, runs=summaries,
                       records=[{k: r[k] for k in ("input", "success", "l2", "min_l2", "restart", "starts", "steps",
                                                   "best_step", "search_steps")} for r in runs[-1]["records"]])
            rows.append(row)
    info = machine_info()
    return {
        "mode": "stream", "machine": info, "machine_label": machine_label(info), "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "workload": {**work.__dict__, "batches": list(work.batches), "precisions": list(work.precisions),
                     "options": options.to_dict()},
        "stream": {**stream.__dict__, "sync_every": sync_every},
        "rows": rows, "skipped": skipped,
    }


def stream_markdown(result: dict, command: str | None = None) -> str:
    """A stream-mode result as a Markdown table, hardware and command named."""
    w, st = result["workload"], result["stream"]
    o = w["options"]
    lines = [
        f"**{w['generator']}**, LR {w['lr_size']}, {w['steps']} steps: a stream of {st['inputs']} inputs through "
        f"{st['slots']} slots, sync every {st['sync_every']} steps, early_stop {o['early_stop']}, restarts "
        f"{o['restarts']}, duplicates {o['duplicates']}; on {result['machine_label']}, {result['date']}",
        "",
        "| backend | precision | images/s | latency p50 s | p90 s | p99 s | success | starts | steps run / lockstep | syncs per step |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['backend']} | {r['precision']} | {r['images_per_s']:.2f} | {r['latency_p50_s']:.2f} | "
                     f"{r['latency_p90_s']:.2f} | {r['latency_p99_s']:.2f} | {100 * r['success_rate']:.1f}% | "
                     f"{r['starts']} | {r['compute_vs_lockstep']:.2f} | {r['syncs_per_step']:.3f} |")
    for s in result.get("skipped", []):
        lines.append(f"\n_skipped {s['backend']} ({s['precision']}): {s['why']}_")
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def to_markdown(result: dict, command: str | None = None) -> str:
    """The result as a Markdown table, hardware and command named."""
    w = result["workload"]
    arch = ""
    if w["generator"] == "mobilestylegan":
        arch = " 1024 px" + (", random weights" if w.get("weights") == "random" else ", the random-face 2021.7.21.1 weights")
    if w.get("warmup_steps"):
        arch += f" (warm-up: a {min(w['steps'], w['warmup_steps'])}-step search)"
    if w["generator"] == "stylegan1":
        arch = f" {w['resolution']} px" + (f" (channels capped at {w['max_channels']})" if w.get("max_channels") else "")
        arch += ", random weights" if w.get("weights") == "random" else ""
    lines = [
        f"**{w['generator']}**{arch}, LR {w['lr_size']}, {w['steps']} steps, on {result['machine_label']}, {result['date']}",
        "",
        "| backend | precision | batch | ms/step | images/s | speed-up vs torch | peak RSS MiB | peak GPU MiB | FLOP floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        sp = f"{r['speedup_vs_torch']:.2f}x" if r.get("speedup_vs_torch") else "-"
        ff = f"{100 * r['flop_floor_fraction']:.1f}%" if r.get("flop_floor_fraction") is not None else "-"
        gpu = "-" if r.get("peak_gpu_mib") is None else f"{r['peak_gpu_mib']:.0f}"
        lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['ms_per_step']:.2f} | "
                     f"{r['images_per_s']:.2f} | {sp} | {r['peak_rss_mib']:.0f} | {gpu} | {ff} |")
    for s in result.get("skipped", []):
        at = f", batch {s['batch']}" if "batch" in s else ""
        lines.append(f"\n_skipped {s['backend']} ({s['precision']}{at}): {s['why']}_")
    lines += ["", "Peak RSS: the process's resident memory above its level just before the backend was opened "
                  "(sessions, compilation and the search's buffers; the Python process, torch and the loaded generator "
                  "are not counted). Peak GPU: GPU memory in use above its level at that point."]
    if result.get("peak_flops"):
        peaks = ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in result["peak_flops"].items())
        lines += ["", f"FLOP floor = step FLOPs (from step.onnx) / time per step / matmul peak ({peaks})."]
    if w.get("transposed_conv", "plain") != "plain":
        lines += ["", "Graphs exported with transposed convolutions in sub-pixel form (--transposed-conv subpixel)."]
    loads = [r["load_average"][0] for r in result["rows"] if r.get("load_average")]
    if loads:
        lines += ["", f"Load average (1 min) after each row: {min(loads):.2f} - {max(loads):.2f} "
                      f"on {result['machine'].get('cores', '?')} cores."]
    if command:
        lines += ["", f"Command: `{command}`"]
    profiled = [r for r in result["rows"] if r.get("profile")]
    if profiled:
        from .ort_profile import to_markdown as profile_markdown  # noqa: PLC0415

        lines += ["", f"## ONNX Runtime profile of the step ({PROFILE_STEPS}-step searches, profiling on)", ""]
        for r in profiled:
            lines.append(profile_markdown(r["profile"], f"{r['backend']} {r['precision']} batch {r['batch']}"))
    return "\n".join(lines) + "\n"


def plot_throughput(results: list[dict], path) -> None:
    """PNG of images/s by batch size, one line per backend (and precision), from bench JSONs."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for result in results:
        series: dict[str, list] = {}
        for r in result["rows"]:
            series.setdefault(f"{r['backend']} {r['precision']}", []).append((r["batch"], r["images_per_s"]))
        for label, pts in series.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{label} ({result['workload']['generator']})" if len(results) > 1 else label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (whole search)")
    ax.set_title(f"PULSE throughput on {results[0]['machine_label']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_results(result: dict, out_dir, command: str | None = None, name: str = "bench") -> list[Path]:
    """bench.json, bench.md and bench.png in out_dir (atomic writes); stream mode: stream.json
    and stream.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = dict(result, command=command)
    stream = result.get("mode") == "stream"
    if stream and name == "bench":
        name = "stream"
    md = stream_markdown(result, command) if stream else to_markdown(result, command)
    paths = []
    for suffix, text in ((".json", json.dumps(result, indent=1) + "\n"), (".md", md)):
        p = out / f"{name}{suffix}"
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(p)
        paths.append(p)
    if result["rows"] and not stream and importlib.util.find_spec("matplotlib") is not None:  # needs pulse-trt[viz]
        p = out / f"{name}.png"
        plot_throughput([result], p)
        paths.append(p)
    return paths
