"""The GPU suite: one command that fits a short GPU window and leaves its most important rows in
$OUT even when it is stopped early.

    bash benchmarks/gpu_suite.sh --budget 8m       # on a GPU machine (benchmarks/README.md)
    python benchmarks/gpu_suite.py --dry-run       # anywhere: the parts, their budgets, the skips
    python benchmarks/gpu_suite.py --prewarm       # CPU-side work only: kernel build, ONNX exports

Parts run in PARTS order, most important first: the machine and ONNX Runtime's CUDA provider,
then the engine end to end at batch 1 in fp32 (ort-cuda against the PyTorch reference), the GPU
tests, the fused kernels, bf16, the largest batch that fits, torch.compile, continuous batching.
Each engine part exports its graphs without the CPU verification (cached; the prewarm usually did
it already), verifies them on the GPU instead (verify_graphs: the export verification's rules, run
on the provider that is timed, bf16 included, which ONNX Runtime's CPU provider cannot run), then
times each backend with pulse_trt.bench.run_bench (warm-up, then repeats; medians; FLOP floor).
Torch-side numbers need no ONNX Runtime; every ort-cuda row needs the CUDA provider, carried by
benchmarks/device/stage_ort_gpu.sh, and the env part checks that sessions really run on it.

Method for fitting the window:
  1. Every part runs in its own process under a deadline of min(its budget, time left before
     --budget); a part past it is stopped (its process group killed) and the next one starts.
  2. A part whose generator, feature or library is missing is skipped with a one-line reason
     (MobileStyleGAN weights neither carried nor cached; continuous batching not in this
     checkout; no CUDA provider in onnxruntime): the suite never fails for a missing feature.
     Inside a part, a verification error or a failing backend is a row; the other backends run.
  3. Every measured row is appended to $OUT/rows.jsonl at once (fsync), and suite.json, suite.md
     and throughput.png are rewritten after every row: whatever stops the suite, the rows
     measured so far are in $OUT.
  4. The "largest batch" parts size their batch from the batch-1 rows already measured: the
     largest power of 2 whose warm-up + timed runs fit in the part's deadline (linear in batch,
     which over-estimates: batching only gets cheaper per image).
$OUT holds at most these files (OUT_FILES): suite.md, suite.json, rows.jsonl, suite.log,
gpu_tests.log, prewarm.log, throughput.png. Work files (artefact cache, kernel build log, prewarm
status) live in $PULSE_SUITE_WORK (default /tmp/pulse-gpu-suite).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("PULSE_SUITE_WORK", "/tmp/pulse-gpu-suite"))
OUT_FILES = ("suite.md", "suite.json", "rows.jsonl", "suite.log", "gpu_tests.log", "prewarm.log", "throughput.png")
STEPS = 100           # PULSE's default; every engine row runs the whole search
TOL_FP32 = 1e-5       # kernels against their float64 reference
RESERVE_S = 5.0       # kept back at the end for the last render
GENERATORS = {
    "dcgan": {"lr_size": 8, "resolution": 64, "max_batch": 256,
              "label": "dcgan 64 px, embedded weights, LR 8"},
    "stylegan1": {"lr_size": 32, "resolution": 1024, "max_batch": 64,
                  "label": "StyleGAN v1 1024 px (PULSE's architecture), seeded random weights, LR 32"},
    "mobilestylegan": {"lr_size": 32, "resolution": 1024, "max_batch": 64,
                       "label": "MobileStyleGAN 1024 px (distilled from StyleGAN2-FFHQ), LR 32"},
}


@dataclass(frozen=True)
class Part:
    """One unit of the suite: `kind` names the function that runs it (in a child process, except
    prewarm-wait), `params` its arguments, `budget` the most seconds it may take."""

    name: str
    kind: str
    budget: float
    what: str
    params: dict = field(default_factory=dict)


def _engine(gen, precision, batch, backends, budget, repeats, verify=True) -> Part:
    b = "batch 1" if batch == 1 else "the largest batch that fits"
    v = f", verify {precision} on the GPU" if verify else ""
    suffix = {("torch-compile",): "-compile", ("tensorrt",): "-trt"}.get(tuple(backends), "")
    return Part(f"{gen}-{precision}-{'b1' if batch == 1 else 'max'}{suffix}",
                "engine", budget, f"{GENERATORS[gen]['label']}: export{v}, {' + '.join(backends)} at {b}, "
                f"{STEPS} steps, warm-up + {repeats} timed",
                {"generator": gen, "precision": precision, "batch": batch, "backends": backends,
                 "repeats": repeats, "verify": verify})


PARTS = (
    Part("env", "env", 30, "device, driver, CUDA, versions; ONNX Runtime CUDA smoke session (provider really active)"),
    Part("prewarm-wait", "prewarm-wait", 60, "wait for the background prewarm (kernel build, exports) started by "
                                               "stage_ort_gpu.sh receive --prewarm; stop it at the deadline"),
    _engine("dcgan", "fp32", 1, ("ort-cuda", "torch"), 60, 3),
    _engine("stylegan1", "fp32", 1, ("ort-cuda", "torch"), 140, 2),
    _engine("mobilestylegan", "fp32", 1, ("ort-cuda", "torch"), 120, 2),
    Part("gpu-tests", "tests", 90, "build the kernels if needed; python -m pytest -m gpu tests (every GPU test)"),
    Part("kernels", "kernels", 50, "fused kernels at 1024 px: validate against float64, then time against torch "
                                   "(batch 1, 8; LR 32; fp32, bf16) and copy bandwidth; sphere_update"),
    _engine("stylegan1", "bf16", 1, ("ort-cuda",), 70, 2),
    _engine("mobilestylegan", "bf16", 1, ("ort-cuda",), 70, 2),
    _engine("dcgan", "bf16", 1, ("ort-cuda",), 30, 3),
    _engine("dcgan", "fp32", 1, ("torch-compile",), 60, 3, verify=False),
    _engine("stylegan1", "fp32", "max", ("ort-cuda", "torch"), 75, 1, verify=False),
    _engine("mobilestylegan", "fp32", "max", ("ort-cuda", "torch"), 75, 1, verify=False),
    _engine("stylegan1", "bf16", "max", ("ort-cuda",), 45, 1, verify=False),
    _engine("dcgan", "fp32", "max", ("ort-cuda", "torch"), 40, 2, verify=False),
    Part("stream-dcgan", "stream", 45, "continuous batching (issue 12): 64 dcgan faces through 8 slots on ort-cuda, "
                                       "images/s and latency"),
    _engine("stylegan1", "fp32", 1, ("torch-compile",), 150, 2, verify=False),
    _engine("mobilestylegan", "fp32", 1, ("torch-compile",), 150, 2, verify=False),
    _engine("stylegan1", "bf16", 1, ("tensorrt",), 180, 2, verify=False),
)
PART_BY_NAME = {p.name: p for p in PARTS}
# What the prewarm exports, in the order the parts need it: (generator, precision)
EXPORTS = tuple(dict.fromkeys((p.params["generator"], p.params["precision"]) for p in PARTS if p.kind == "engine"))


# -- small helpers ---------------------------------------------------------------------------------
def parse_budget(text: str) -> float:
    """'8m', '90s', '1h', '1m30s' or plain seconds -> seconds."""
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
    if not parts or "".join(a + u for a, u in parts) != s:
        raise argparse.ArgumentTypeError(f"budget {text!r}: use e.g. 8m, 90s, 1m30s or seconds")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[u] for a, u in parts)


def _log(msg: str) -> None:
    print(f"[gpu_suite {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def append_row(out: Path, row: dict) -> None:
    """Append one row to out/rows.jsonl (flushed and synced), then re-render the summaries."""
    row = {"t": round(time.time(), 1), **row}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.jsonl", "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    render(out, plot=row["kind"] in ("bench", "end"))


def read_rows(out: Path) -> list[dict]:
    rows = []
    try:
        with open(Path(out) / "rows.jsonl") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:  # a line cut by a kill mid-write
                        pass
    except OSError:
        pass
    return rows


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- availability (parent side: no torch import) --------------------------------------------------
def mobilestylegan_weights() -> tuple[str | None, str | None]:
    """(path, None) when MobileStyleGAN's converted weights are carried or cached, else (None, why)."""
    try:
        from pulse_trt.engine.errors import PulseError  # noqa: PLC0415
        from pulse_trt.weights import resolve_weights  # noqa: PLC0415
    except ImportError as e:
        return None, f"this checkout has no mobilestylegan support ({e})"
    try:
        return str(resolve_weights("mobilestylegan", None, download=False)), None
    except PulseError:
        return None, ("MobileStyleGAN weights are neither carried nor cached (stage them with "
                      "benchmarks/device/stage_ort_gpu.sh stage --with-mobilestylegan; elsewhere "
                      "pulse-trt weights fetch mobilestylegan)")


def continuous_batching() -> str | None:
    """None when the engine has continuous batching (issue 12) and bench a stream mode, else why not."""
    import importlib.util  # noqa: PLC0415

    try:
        if importlib.util.find_spec("pulse_trt.engine.scheduler") is None:
            return "continuous batching (issue 12, engine/scheduler.py) is not in this checkout"
        from pulse_trt.cli import bench as bench_cli  # noqa: PLC0415
    except ImportError as e:
        return f"continuous batching not importable ({e})"
    p = argparse.ArgumentParser()
    bench_cli.add_parser(p.add_subparsers())
    opts = p._subparsers._group_actions[0].choices["bench"]._option_string_actions  # noqa: SLF001
    missing = [o for o in ("--stream", "--slots") if o not in opts]
    return f"pulse-trt bench has no {' / '.join(missing)} option yet (issue 12)" if missing else None


def env_row(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r.get("kind") == "env"), None)


def missing_feature(part: Part) -> str | None:
    """Why `part` cannot run in this checkout and environment (weights, features, libraries), or
    None; the same on a CPU (dry run) as on the GPU machine."""
    if part.kind == "engine" and part.params["generator"] == "mobilestylegan":
        return mobilestylegan_weights()[1]
    if part.kind == "stream":
        return continuous_batching()
    if part.kind == "engine" and "tensorrt" in part.params["backends"]:
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed (the GPU image has none; carry a tensorrt wheel to time it)"
    return None


def skip_reason(part: Part, rows: list[dict]) -> str | None:
    """Why `part` cannot run here (from what is installed and the env row), or None."""
    env = env_row(rows)
    if part.kind in ("env", "prewarm-wait"):
        return None
    if env is not None and not env.get("cuda"):
        return "no CUDA GPU (env)"
    why = missing_feature(part)
    if why:
        return why
    ort_only = part.kind == "stream" or (part.kind == "engine" and set(part.params["backends"]) <= {"ort-cuda"})
    if ort_only and env is not None and not env.get("ort_cuda", {}).get("ok"):
        return "ONNX Runtime's CUDA provider is not active: " + env.get("ort_cuda", {}).get("why", "see env")
    if part.kind == "engine" and part.params["batch"] == "max":
        gen, prec = part.params["generator"], part.params["precision"]
        if not [r for r in rows if r.get("kind") == "bench" and r.get("generator") == gen
                and r.get("precision") == prec and r.get("batch") == 1]:
            return f"no batch-1 row of {gen} {prec} to size the batch from"
    return None


# -- the parent -------------------------------------------------------------------------------------
def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def part_argv(part: Part, out: Path, limit: float) -> list[str]:
    if part.kind == "cmd":  # tests: an arbitrary command
        return list(part.params["argv"])
    return [sys.executable, str(Path(__file__).resolve()), "--run-part", part.name, "--out", str(out),
            "--deadline", f"{limit:.1f}"]


_running: list[subprocess.Popen] = []  # the part process now running (for the SIGTERM handler)


def _on_term(signum, frame) -> None:
    """Stopped from outside (the device's command limit): end the running part with us."""
    for proc in _running:
        _kill_group(proc)
    raise SystemExit(128 + signum)


def run_suite(parts, out, budget: float, *, reserve: float = RESERVE_S, command: str = "") -> int:
    """Run `parts` in order within `budget` seconds (module doc, Method); returns 0 when every
    part that ran finished and every verification and validation passed, else 1. Each part runs
    in a process group of its own (not a session: a command's end still ends it), killed as a
    group at its deadline."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_term)
    use_kernels()  # every part (and pytest) loads the same fatbin
    (out / "rows.jsonl").unlink(missing_ok=True)
    t0 = time.monotonic()
    deadline = t0 + budget
    append_row(out, {"kind": "meta", "command": command, "budget_s": round(budget, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "commit": _git_commit(), "parts": [p.name for p in parts]})
    failed = False
    for i, part in enumerate(parts, 1):
        rows = read_rows(out)
        left = deadline - time.monotonic() - reserve
        why = skip_reason(part, rows)
        if why is None and left < min(10.0, part.budget):
            why = f"no time left ({max(left, 0):.0f} s of the {budget:.0f} s budget)"
        if why:
            _log(f"part {i}/{len(parts)} {part.name}: skipped: {why}")
            append_row(out, {"kind": "part", "part": part.name, "status": "skipped", "why": why, "budget_s": part.budget})
            continue
        limit = min(part.budget, left)
        _log(f"part {i}/{len(parts)} {part.name}: start (deadline {limit:.0f} s): {part.what}")
        start = time.monotonic()
        if part.kind == "prewarm-wait":
            status, note = prewarm_wait(out, limit), None
        else:
            proc = subprocess.Popen(part_argv(part, out, limit), cwd=REPO, preexec_fn=os.setpgrp)  # noqa: PLW1509
            _running[:] = [proc]
            try:
                rc = proc.wait(timeout=limit)
                status = "ok" if rc == 0 else "failed"
                error = next((r.get("error") for r in reversed(read_rows(out)) if r.get("kind") == "error"
                              and r.get("part") == part.name), None)
                note = None if rc == 0 else f"exit status {rc}" + (f": {error}" if error else "")
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                status, note = "timeout", f"stopped at its deadline ({limit:.0f} s); rows measured before it are kept"
            finally:
                _running.clear()
        seconds = round(time.monotonic() - start, 1)
        failed |= status == "failed"
        _log(f"part {i}/{len(parts)} {part.name}: {status} in {seconds} s" + (f" ({note})" if note else ""))
        append_row(out, {"kind": "part", "part": part.name, "status": status, "seconds": seconds, "deadline_s": round(limit, 1),
                         "budget_s": part.budget, **({"why": note} if note else {})})
    rows = read_rows(out)
    append_row(out, {"kind": "end", "elapsed_s": round(time.monotonic() - t0, 1)})
    bad = [r for r in rows if r.get("kind") in ("verify", "kernel") and r.get("valid") is False]
    tests_bad = [r for r in rows if r.get("kind") == "tests" and r.get("returncode") not in (0, None)]
    return 1 if failed or bad or tests_bad else 0


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (r.stdout.strip() + ("+dirty" if dirty else "")) if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def prewarm_wait(out: Path, limit: float) -> str:
    """Wait for the prewarm (if one runs) up to `limit` s, stop it after, copy its log to $OUT."""
    pid_file, status_file, log = WORK / "prewarm.pid", WORK / "prewarm.json", WORK / "prewarm.log"
    end = time.monotonic() + limit
    pid = None
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pass

    def alive() -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        try:  # a zombie or a reused pid is not our prewarm
            return "gpu_suite" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return True
    status = "ok"
    while alive() and time.monotonic() < end:
        time.sleep(1.0)
    if alive():
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
        status = "timeout"
    try:
        summary = json.loads(status_file.read_text())
    except (OSError, ValueError):
        summary = {"ran": pid is not None}
    if log.is_file():
        (out / "prewarm.log").write_bytes(log.read_bytes()[-4_000_000:])
    append_row(out, {"kind": "prewarm", "status": "stopped at the deadline" if status == "timeout" else
                     ("none ran" if pid is None else "finished"), "log": log.is_file(), **summary})
    return status


# -- the children -----------------------------------------------------------------------------------
class Child:
    """What a part's process knows: the output folder, its deadline, row writing."""

    def __init__(self, out: Path, deadline_s: float):
        self.out = Path(out)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + deadline_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def row(self, **row) -> None:
        append_row(self.out, row)


def run_part(name: str, out: Path, deadline_s: float) -> int:
    """One part in this process; an exception becomes an "error" row (one line for suite.md) and
    exit status 1, its traceback on stderr (suite.log)."""
    import traceback  # noqa: PLC0415

    part = PART_BY_NAME[name]
    ctx = Child(out, deadline_s)
    fn = {"env": part_env, "engine": part_engine, "tests": part_tests, "kernels": part_kernels, "stream": part_stream}[part.kind]
    try:
        return int(fn(ctx, **part.params) or 0)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        ctx.row(kind="error", part=name, error=_one_line(e))
        return 1


def part_env(ctx: Child) -> int:
    row = {"kind": "env", "python": platform.python_version(), "cuda": False}
    try:
        from pulse_trt.machine import machine_info, machine_label  # noqa: PLC0415

        info = machine_info()
        row.update(machine=info, label=machine_label(info))
    except Exception as e:  # noqa: BLE001  (the rest of the row still says what is there)
        row["machine_error"] = str(e)
    try:
        import torch  # noqa: PLC0415

        row.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=bool(torch.cuda.is_available()),
                   torch_tf32={"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32})
        if row["cuda"]:
            p = torch.cuda.get_device_properties(0)
            row.update(device=torch.cuda.get_device_name(0), sm=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                       memory_gib=round(p.total_memory / 2**30, 1))
    except Exception as e:  # noqa: BLE001
        row["torch_error"] = str(e)
    try:
        row["nvcc"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        row["nvcc"] = None
    ort_row: dict = {"ok": False}
    try:
        sys.path.insert(0, str(REPO / "benchmarks" / "device"))
        from payload import smoke  # noqa: PLC0415

        ort_row = smoke()
        if not ort_row["ok"]:
            ort_row["why"] = f"onnxruntime {ort_row['onnxruntime']} runs sessions on {ort_row['providers']}"
    except Exception as e:  # noqa: BLE001
        ort_row = {"ok": False, "why": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
    if not ort_row["ok"]:
        try:
            import onnxruntime as ort  # noqa: PLC0415

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                ort_row["why"] = (f"onnxruntime {ort.__version__} at {ort.__file__} has no CUDA provider "
                                  "(stage onnxruntime-gpu: benchmarks/device/stage_ort_gpu.sh)")
        except ImportError:
            ort_row["why"] = "onnxruntime is not installed"
    row["ort_cuda"] = ort_row
    row["kernels_fatbin"] = str(_fatbin()) if _fatbin().is_file() else None
    ctx.row(**row)
    _log(f"env: {row.get('device', 'no GPU')}, torch {row.get('torch')}, CUDA {row.get('torch_cuda')}; "
         f"ORT CUDA {'active' if ort_row.get('ok') else 'NOT active: ' + ort_row.get('why', '?')}")
    return 0


def _fatbin() -> Path:
    """The fatbin every part uses: $PULSE_TRT_KERNELS, else the checkout's build/ when it has one,
    else the suite's own sm_90 build in $PULSE_SUITE_WORK (never build/: the checkout's build is
    the full architecture list that tests/kernels/test_build.py checks)."""
    env = os.environ.get("PULSE_TRT_KERNELS")
    if env:
        return Path(env)
    repo_build = REPO / "build" / "kernels" / "pulse_kernels.fatbin"
    return repo_build if repo_build.is_file() else WORK / "build-kernels" / "kernels" / "pulse_kernels.fatbin"


def use_kernels() -> Path:
    """Point PULSE_TRT_KERNELS (this process and its children) at _fatbin(), built or not yet."""
    path = _fatbin()
    os.environ["PULSE_TRT_KERNELS"] = str(path)
    return path


def ensure_kernels(ctx: Child | None) -> str:
    """Build the fatbin at use_kernels() when missing: SASS for sm_90 only by default (the
    machine's own architecture; PULSE_SUITE_SASS_ARCHS to change) into
    $PULSE_SUITE_WORK/build-kernels; returns 'present' or 'built', raises when the build fails."""
    path = use_kernels()
    if path.is_file():
        return "present"
    archs = os.environ.get("PULSE_SUITE_SASS_ARCHS", "90")
    build = path.parents[1]
    WORK.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    with open(WORK / "build.log", "w") as log:
        r = subprocess.run(f"cmake -S . -B {shlex.quote(str(build))} -DPULSE_SASS_ARCHS={shlex.quote(archs)} && "
                           f"cmake --build {shlex.quote(str(build))} -j", shell=True, cwd=REPO, stdout=log,
                           stderr=subprocess.STDOUT)
    seconds = round(time.monotonic() - t, 1)
    if ctx is not None:
        ctx.row(kind="build", archs=archs, fatbin=str(path), seconds=seconds, returncode=r.returncode,
                log_tail=(WORK / "build.log").read_text()[-1500:])
    if r.returncode != 0 or not path.is_file():
        raise RuntimeError(f"kernel build failed (exit {r.returncode}); see {WORK / 'build.log'}")
    return "built"


def part_tests(ctx: Child) -> int:
    try:
        ensure_kernels(ctx)
    except RuntimeError as e:
        _log(str(e))  # the kernel tests then say what is missing; the others still run
    limit = max(ctx.left() - 5, 10)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests", "benchmarks", "-q", "-rs", "-p", "no:cacheprovider"]
    t = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=limit)
        text, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\n[gpu_suite] pytest stopped at its deadline ({limit:.0f} s)\n"
        rc = "timeout"
    (ctx.out / "gpu_tests.log").write_text(text)
    summary = next((ln for ln in reversed(text.strip().splitlines()) if re.search(r"\b(passed|failed|error|skipped)\b", ln)), "?")
    ctx.row(kind="tests", command=" ".join(cmd[1:]), returncode=rc, summary=summary.strip("= "), seconds=round(time.monotonic() - t, 1))
    _log(f"GPU tests: {summary}")
    return 0


# -- engine parts -------------------------------------------------------------------------------------
def _generator(name: str, device: str):
    """The generator exactly as pulse_trt.bench.run_bench builds it (so the artefact keys agree)."""
    from pulse_trt.bench import random_stylegan1  # noqa: PLC0415
    from pulse_trt.export.generators import load_generator  # noqa: PLC0415

    if name == "stylegan1":
        return random_stylegan1(1024, None, device), "random"
    weights = mobilestylegan_weights()[0] if name == "mobilestylegan" else None
    return load_generator(name, weights, mapping=None, resolution=1024, fmaps=None, device=device), weights


def export_for(name: str, precision: str, cache: Path, device: str):
    """(generator on `device`, artefact dir, weights arg for run_bench, seconds) for one export,
    without the CPU verification (the GPU verification replaces it: faster, and it covers bf16,
    which ONNX Runtime's CPU provider cannot run)."""
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.export.onnx_export import export_cached  # noqa: PLC0415

    gen, weights = _generator(name, device)
    t = time.monotonic()
    art = export_cached(gen.cpu(), PulseOptions(steps=STEPS, seed=0), GENERATORS[name]["lr_size"], cache,
                        precision=precision, verify=False, progress=False)
    return gen.to(device), art, weights, round(time.monotonic() - t, 1)


def verify_graphs(art, generator, precision: str, device: str = "cuda", batches=(1, 3), seed: int = 0,
                  tolerance: float | None = None) -> list[dict]:
    """The exported graphs on ONNX Runtime against the torch functions they were traced from, on
    `device` (the export verification's rules, export/verify.py, run where the engine runs):

    1. Fresh inputs (export.verify.random_inputs) at each batch in `batches`; ONNX Runtime with the
       engine's provider options (CUDA: device 0, ORT's defaults, so TF32 as ORT sets it); the
       torch function on the same device with TF32 off (the specification). The session must
       really run on the provider asked for (ORT falls back to the CPU silently).
    2. Per output the tensor-wise relative error ||ort - torch|| / ||torch||, the worst over
       batches; pass when every output is within TOLERANCE[precision] (fp32 1e-4, bf16 1e-1).
    3. fp32 outputs over it are judged by float64 (export.verify's arbiter): a float64 copy of
       the torch function on the smallest batch; an output passes when ORT's error against
       float64 is within FP32_SLACK x torch float32's own error against float64, plus the
       tolerance (deep backward passes differ by a few 1e-4 between float32 libraries).
    4. Still failing on CUDA with use_tf32=1: steps 1-3 again with use_tf32=0, recorded as
       `without_tf32`, to tell TF32 rounding (the engine's "fp32" is then TF32) from a wrong graph.
    Returns one row per graph: worst, worst_max, per_output, float64 (when step 3 ran), valid.
    """
    import copy  # noqa: PLC0415

    import onnxruntime as ort  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from pulse_trt.engine.manifest import load_manifest  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import session_options  # noqa: PLC0415
    from pulse_trt.export.step import make_render_fn, make_step_fn  # noqa: PLC0415
    from pulse_trt.export.verify import (FP32_SLACK, TOLERANCE, norm_relative_error, random_inputs,  # noqa: PLC0415
                                         relative_error)

    m = load_manifest(art)
    tol = TOLERANCE[precision] if tolerance is None else tolerance
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    out = []

    def torch_outputs(fn, infos, feeds, graph, dtype=torch.float32):
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            with torch.no_grad() if graph == "render" else torch.enable_grad():
                return [[r.detach().double().cpu().numpy() for r in
                         fn(*[torch.from_numpy(f[i.name]).to(device, dtype) for i in infos])] for f in feeds]
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32

    for graph, make, path in (("step", make_step_fn, m.step_path), ("render", make_render_fn, m.render_path)):
        fn = make(generator, m.options, m.lr_size, precision)
        infos = fn.layout.step_inputs() if graph == "step" else fn.layout.render_inputs()
        names = fn.output_names
        feeds = [random_inputs(infos, b, seed=seed + k) for k, b in enumerate(batches)]
        refs = torch_outputs(fn, infos, feeds, graph)
        ref64 = None

        def judge(provider_options: dict) -> dict:
            nonlocal ref64
            sess = ort.InferenceSession(str(path), session_options(), providers=[(provider, provider_options)])
            res = {"providers": sess.get_providers(), "use_tf32": sess.get_provider_options().get(provider, {}).get("use_tf32")}
            gots = [sess.run(names, f) for f in feeds]
            del sess
            per = {n: max(norm_relative_error(g[k], r[k]) for g, r in zip(gots, refs)) for k, n in enumerate(names)}
            res.update(worst=max(per.values()), per_output=per, worst_max=max(
                relative_error(g[k], r[k]) for g, r in zip(gots, refs) for k in range(len(names))))
            over = [n for n, e in per.items() if not e <= tol]
            if over and precision == "fp32":
                if ref64 is None:  # step 3, once per graph
                    fn64 = make(copy.deepcopy(generator).double(), m.options, m.lr_size, "fp32")
                    ref64 = torch_outputs(fn64, infos, feeds[:1], graph, torch.float64)[0]
                judged = {}
                for n in over:
                    k = names.index(n)
                    judged[n] = {"ort_vs_f64": norm_relative_error(gots[0][k], ref64[k]),
                                 "torch_f32_vs_f64": norm_relative_error(refs[0][k], ref64[k])}
                res["float64"] = judged
                over = [n for n, j in judged.items() if not j["ort_vs_f64"] <= FP32_SLACK * j["torch_f32_vs_f64"] + tol]
            res["over"] = over
            res["valid"] = bool(res["providers"] and res["providers"][0] == provider and not over)
            return res

        row = {"graph": graph, "precision": precision, "device": device, "batches": list(batches), "tolerance": tol,
               **judge({"device_id": "0"} if device == "cuda" else {})}
        if not row["valid"] and device == "cuda" and str(row.get("use_tf32")) == "1":
            row["without_tf32"] = judge({"device_id": "0", "use_tf32": "0"})
            row["note"] = ("TF32: within tolerance with use_tf32=0, not with ORT's default use_tf32=1"
                           if row["without_tf32"]["valid"] else "over tolerance with and without TF32")
        out.append(row)
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def choose_batch(rows: list[dict], generator: str, precision: str, backends, repeats: int, seconds: float, cap: int) -> int:
    """Largest power of 2 <= cap whose runs (1 warm-up + repeats per backend, time linear in the
    batch from the batch-1 rows) fit in `seconds`; 1 when none larger does."""
    t1 = {}
    for r in rows:
        if r.get("kind") == "bench" and r.get("generator") == generator and r.get("batch") == 1 and r.get("backend") in backends \
                and (r.get("precision") == precision or r.get("backend") == "torch"):
            t1[r["backend"]] = max(t1.get(r["backend"], 0.0), r["seconds_per_search"])
    if not t1:
        return 1
    per_image = sum((1 + repeats) * t for t in t1.values())
    b = 1
    while b * 2 <= cap and b * 2 * per_image <= seconds:
        b *= 2
    return b


def part_engine(ctx: Child, generator: str, precision: str, batch, backends, repeats: int, verify: bool,
                device: str = "cuda") -> int:
    """Export (cached), verify on the device, then time each backend with run_bench at `batch`
    (1, or "max": sized from the batch-1 rows). device="cpu" with the ort / torch backends runs
    the same code on a CPU (tests)."""
    import torch  # noqa: PLC0415

    from pulse_trt.bench import Workload, run_bench  # noqa: PLC0415

    cfg = GENERATORS[generator]
    env = env_row(read_rows(ctx.out)) or {}
    ort_cuda = env.get("ort_cuda", {"ok": False, "why": "no env row"})
    if not ort_cuda.get("ok") and "ort-cuda" in backends:
        ctx.row(kind="skip", generator=generator, precision=precision, backend="ort-cuda",
                why="ONNX Runtime's CUDA provider is not active: " + ort_cuda.get("why", "see env"))
        backends = tuple(b for b in backends if b != "ort-cuda")
        verify = False
    if not backends:
        return 0
    cache = WORK / "cache"
    _log(f"{generator} {precision}: generator and export (cached after the first)")
    gen, art, weights, export_s = export_for(generator, precision, cache, device)
    ctx.row(kind="export", generator=generator, precision=precision, artifacts=str(art), seconds=export_s, lr_size=cfg["lr_size"])
    failed = 0
    if verify:
        try:
            for v in verify_graphs(art, gen, precision, device):
                ctx.row(kind="verify", generator=generator, **v)
                _log(f"verify {generator} {precision} {v['graph']}: worst {v['worst']:.2e} (tol {v['tolerance']:g}) "
                     f"{'ok' if v['valid'] else 'OVER TOLERANCE'}")
        except Exception as e:  # noqa: BLE001  (a graph ORT cannot load here: said, and the timing still tried)
            failed += 1
            ctx.row(kind="verify", generator=generator, precision=precision, device=device, graph="step, render", valid=False,
                    error=_one_line(e))
            _log(f"verify {generator} {precision}: ERROR {_one_line(e)}")
    del gen
    if device == "cuda":
        torch.cuda.empty_cache()
    if batch == "max":
        batch = choose_batch(read_rows(ctx.out), generator, precision, backends, repeats, 0.7 * (ctx.left() - 20), cfg["max_batch"])
        if batch < 2:
            ctx.row(kind="skip", generator=generator, precision=precision, backend=",".join(backends),
                    why="batch 1 already takes the time this part has: no larger batch fits")
            return 0
        _log(f"{generator} {precision}: largest batch that fits the deadline: {batch}")
    for backend in backends:
        entries = _entries(cache)
        work = Workload(generator=generator, lr_size=cfg["lr_size"], steps=STEPS, batches=(batch,), precisions=(precision,),
                        weights=weights, resolution=1024, repeats=repeats)
        try:
            res = run_bench(work, (backend,), cache_root=cache, device=device, progress=_log)
        except Exception as e:  # noqa: BLE001  (one backend failing leaves the others' rows)
            failed += 1
            ctx.row(kind="skip", generator=generator, precision=precision, backend=backend, batch=batch,
                    why=f"error: {_one_line(e)}")
            _log(f"{generator} {precision} {backend}: ERROR {_one_line(e)}")
            continue
        reexported = sorted(_entries(cache) - entries)
        for r in res["rows"]:
            r.pop("speedup_vs_torch", None)  # recomputed across parts by render()
            ctx.row(kind="bench", generator=generator, resolution=cfg["resolution"], lr_size=cfg["lr_size"],
                    peak_flops=res["peak_flops"].get(precision), machine_label=res["machine_label"],
                    **({"note": f"bench exported again ({reexported[0][:12]})"} if reexported else {}), **r)
        for s in res["skipped"]:
            ctx.row(kind="skip", generator=generator, **s)
    return 1 if failed else 0


def _entries(cache: Path) -> set[str]:
    """Artefact entries of the cache (not its lock files and temps, which start with a dot)."""
    return {n for n in os.listdir(cache) if not n.startswith(".")} if cache.is_dir() else set()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def part_kernels(ctx: Child) -> int:
    ensure_kernels(ctx)
    args = argparse.Namespace(size=1024, lr_sizes=[32], batches=[1, 8], dtypes=["float32", "bfloat16"], warmup=10, repeat=30)
    report = kernel_bench(args, on_row=lambda r: ctx.row(**r))
    _log(f"kernels: copy {report['copy_gbps']:.0f} GB/s; {len(report['downsample_loss'])} cases")
    return 0


def part_stream(ctx: Child) -> int:
    """Continuous batching through pulse-trt bench's stream mode (issue 12); its stream.json is
    kept whole in the row (the format is issue 12's: pulse_trt.bench.run_stream)."""
    dest = WORK / "stream"
    cmd = [sys.executable, "-m", "pulse_trt", "bench", "--generator", "dcgan", "--lr-size", "8", "--backends", "ort-cuda",
           "--stream", "64", "--slots", "8", "--device", "cuda", "--cache-dir", str(WORK / "cache"), "-o", str(dest)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(ctx.left() - 5, 5))
    try:
        result = json.loads((dest / "stream.json").read_text())
        md = (dest / "stream.md").read_text()
    except (OSError, ValueError):
        result, md = None, None
    ctx.row(kind="stream", command=" ".join(cmd[1:]), returncode=r.returncode, result=result, markdown=md,
            stderr_tail=r.stderr[-1500:])
    return 0


# -- the fused kernels: validated, then timed (llm.c style) ------------------------------------------
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
    import numpy as np  # noqa: PLC0415

    got = np.asarray(got, np.float64)
    if np.isnan(got).any():
        return float("nan")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def kernel_cases(args) -> list[tuple[int, int, str]]:
    return [(b, lr, dt) for dt in args.dtypes for lr in args.lr_sizes for b in args.batches]


def kernel_bench(args, on_row=lambda r: None) -> dict:
    """Copy bandwidth, then per case (batch, LR size, dtype) at args.size px: validate (outputs
    poisoned with NaN, fresh random inputs, every output against the float64 reference; relative
    error < 1e-5 for fp32, 1e-2 otherwise), then time ours (downsample_loss_fwd +
    downscale_transpose) and torch's conv-based D + loss forward + backward with CUDA events,
    an L2 flush before each run, median; then sphere_update (adam) on a PULSE latent."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from pulse_trt.export import losses  # noqa: PLC0415
    from pulse_trt.kernels.downsample_loss import downsample_loss_ref, launch_downsample_loss  # noqa: PLC0415
    from pulse_trt.kernels.loader import get_module  # noqa: PLC0415
    from pulse_trt.kernels.sphere_adam import sphere_update  # noqa: PLC0415

    module, dev = get_module(), "cuda"
    stream = torch.cuda.current_stream().cuda_stream
    flush = torch.empty(256 * 2**20 // 4, device=dev)  # 256 MB > any L2 here
    src = torch.empty(2**28, device=dev)               # 1 GiB
    dst = torch.empty_like(src)
    copy_us = time_events(torch, lambda: dst.copy_(src), 3, 20, flush)
    report = {"copy_gbps": 2 * src.numel() * 4 / copy_us / 1e3, "downsample_loss": [], "sphere_update": []}
    on_row({"kind": "copy", "gbps": report["copy_gbps"], "bytes": 2 * src.numel() * 4, "us": copy_us})
    del src, dst
    rng = np.random.default_rng(0)
    eps, w2, w1 = 2e-3, 100.0, 0.0
    for b, lr_size, dtype in kernel_cases(args):
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
        r = {"batch": b, "size": size, "lr_size": lr_size, "dtype": dtype, "errors": errs, "max_rel_err": max_err, "valid": ok,
             "ours_us": ours_us, "torch_us": torch_us, "bytes": moved, "gbps": moved / ours_us / 1e3}
        report["downsample_loss"].append(r)
        on_row({"kind": "kernel", "op": "downsample_loss", **r})
        print(f"  ours {ours_us:.1f} us ({moved / ours_us / 1e3:.0f} GB/s), torch {torch_us:.1f} us", flush=True)
        hr = outs = x = None  # free this case's device memory before the next
        torch.cuda.empty_cache()

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
    r = {"opt": "adam", "shape": list(shape), "max_rel_err": err, "valid": err < TOL_FP32,
         "ours_us": time_events(torch, lambda: sphere_update("adam", p, gt, [m, v], rt, 0.4, 1, impl="cuda"),
                                args.warmup, args.repeat, flush),
         "torch_us": time_events(torch, torch_adam, args.warmup, args.repeat, flush)}
    report["sphere_update"].append(r)
    on_row({"kind": "kernel", "op": "sphere_update", **r})
    return report


# -- the prewarm ----------------------------------------------------------------------------------------
def prewarm() -> int:
    """The suite's CPU-side work, run in the background while the payload parts arrive: build the
    kernels, then export every (generator, precision) the parts need into the suite's cache.
    Progress in $PULSE_SUITE_WORK/prewarm.json; nothing is timed here."""
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "prewarm.pid").write_text(str(os.getpid()))
    status = {"pid": os.getpid(), "started": time.strftime("%H:%M:%S"), "steps": [], "done": False}

    def save():
        _atomic_write(WORK / "prewarm.json", json.dumps(status, indent=1))

    def step(name, fn):
        t = time.monotonic()
        try:
            note = fn()
            status["steps"].append({"step": name, "ok": True, "seconds": round(time.monotonic() - t, 1), "note": note})
        except Exception as e:  # noqa: BLE001  (the suite redoes what the prewarm could not)
            status["steps"].append({"step": name, "ok": False, "seconds": round(time.monotonic() - t, 1),
                                    "error": f"{type(e).__name__}: {str(e)[:300]}"})
        _log(f"prewarm {name}: {status['steps'][-1]}")
        save()
    save()
    step("kernels", lambda: ensure_kernels(None))
    for gen, precision in EXPORTS:
        if gen == "mobilestylegan" and mobilestylegan_weights()[1]:
            continue
        step(f"export {gen} {precision}", lambda g=gen, p=precision: str(export_for(g, p, WORK / "cache", "cpu")[1]))
    status["done"] = True
    save()
    return 0


# -- rendering ---------------------------------------------------------------------------------------
def _fmt(x, spec=".2f", unit=""):
    return "-" if x is None else f"{x:{spec}}{unit}"


def speedups(rows: list[dict]) -> None:
    """Each bench row gets vs_torch (the eager fp32 reference at the same generator and batch)
    and vs_compile (torch.compile at the same generator, batch and precision), both from
    seconds per search."""
    bench = [r for r in rows if r.get("kind") == "bench"]
    for r in bench:
        ref = next((x for x in bench if x["backend"] == "torch" and x["generator"] == r["generator"]
                    and x["batch"] == r["batch"] and x["precision"] == "fp32"), None)
        cmp_ = next((x for x in bench if x["backend"] == "torch-compile" and x["generator"] == r["generator"]
                     and x["batch"] == r["batch"] and x["precision"] == r["precision"]), None)
        r["vs_torch"] = round(ref["seconds_per_search"] / r["seconds_per_search"], 2) if ref else None
        r["vs_compile"] = round(cmp_["seconds_per_search"] / r["seconds_per_search"], 2) if cmp_ else None


def _peaks(bench: list[dict]) -> str:
    """'fp32 52 TFLOP/s, bf16 700-720 TFLOP/s': the matmul peaks the rows were judged against."""
    by: dict[str, list[float]] = {}
    for r in bench:
        if r.get("peak_flops"):
            by.setdefault(r["precision"], []).append(r["peak_flops"])
    out = []
    for prec, vals in by.items():
        unit, div = ("TFLOP/s", 1e12) if max(vals) >= 1e12 else ("GFLOP/s", 1e9)
        lo, hi = min(vals) / div, max(vals) / div
        out.append(f"{prec} {lo:.0f} {unit}" if round(lo) == round(hi) else f"{prec} {lo:.0f}-{hi:.0f} {unit}")
    return ", ".join(out) or "not measured"


def markdown(rows: list[dict]) -> str:
    """suite.md: what ran where, every row, in the order of importance."""
    meta = next((r for r in rows if r.get("kind") == "meta"), {})
    env = env_row(rows) or {}
    speedups(rows)
    ort = env.get("ort_cuda", {})
    lines = [f"# GPU suite: {env.get('device') or env.get('label') or 'device not read yet'}", ""]
    m = env.get("machine", {})
    gpu = (m.get("gpu") or {}) if isinstance(m, dict) else {}
    lines += [f"- driver {gpu.get('driver', '?')}, CUDA {env.get('torch_cuda', '?')} (torch {env.get('torch', '?')}), "
              f"{env.get('nvcc') or 'nvcc ?'}, Python {env.get('python', '?')}, {m.get('cpu', '?')} ({m.get('cores', '?')} cores)",
              f"- onnxruntime {ort.get('onnxruntime', '?')}: CUDA provider "
              + ("active" + (f" (use_tf32={ort.get('cuda_options', {}).get('use_tf32', '?')})" if ort.get("ok") else "")
                 if ort.get("ok") else f"NOT active ({ort.get('why', 'not checked')})"),
              f"- command: `{meta.get('command', '?')}`; budget {meta.get('budget_s', '?')} s; commit {meta.get('commit') or '?'}; "
              f"{meta.get('date', '')}", ""]
    bench = [r for r in rows if r.get("kind") == "bench"]
    if bench:
        lines += [f"## Engine end to end: PULSE defaults, {STEPS} steps per search", "",
                  "| generator | precision | backend | batch | ms/step | images/s | vs torch eager fp32 | vs torch.compile | "
                  "FLOP floor | peak GPU MiB |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in bench:
            lines.append(f"| {r['generator']} | {r['precision']} | {r['backend']} | {r['batch']} | {_fmt(r.get('ms_per_step'))} | "
                         f"{_fmt(r.get('images_per_s'))} | {_fmt(r.get('vs_torch'), '.2f', 'x')} | "
                         f"{_fmt(r.get('vs_compile'), '.2f', 'x')} | "
                         f"{_fmt(None if r.get('flop_floor_fraction') is None else 100 * r['flop_floor_fraction'], '.1f', '%')} | "
                         f"{_fmt(r.get('peak_gpu_mib'), '.0f')} |")
        lines += ["", "Generators: " + "; ".join(f"{g}: {GENERATORS[g]['label']}" for g in dict.fromkeys(r["generator"] for r in bench)),
                  "FLOP floor = step FLOPs (from step.onnx) / time per step / the matmul peak measured in the same part ("
                  + _peaks(bench) + "). Speed-ups are ratios of seconds per whole search."]
        tf = env.get("torch_tf32")
        if tf:
            lines.append(f"fp32 on this GPU: torch's cuDNN convolutions TF32 {tf['cudnn_conv']}, torch matmul TF32 {tf['matmul']} "
                         f"(the fp32 peak is measured so), ONNX Runtime use_tf32={ort.get('cuda_options', {}).get('use_tf32', '?')}"
                         " (library defaults, unchanged): an fp32 row whose convolutions ran in TF32 is judged against a "
                         "non-TF32 peak, so its FLOP floor reads high.")
        lines.append("")
    ver = [r for r in rows if r.get("kind") == "verify"]
    if ver:
        lines += ["## Exported graphs verified (ONNX Runtime vs the torch step on the same device, TF32 off in torch; "
                  "random inputs at batch 1 and 3)", "",
                  "| generator | precision | device | graph | worst ‖Δ‖/‖ref‖ | worst max-entry | tolerance | ORT use_tf32 | result |",
                  "|---|---|---|---|---:|---:|---:|---|---|"]
        for r in ver:
            if "error" in r:
                lines.append(f"| {r['generator']} | {r['precision']} | {r.get('device', 'cuda')} | {r['graph']} | - | - | - | - | "
                             f"ERROR: {r['error']} |")
                continue
            res = ("pass" + (" (float64 arbiter)" if r.get("float64") else "")) if r["valid"] else \
                "FAIL: " + ", ".join(r.get("over", [])) + (f" ({r['note']}; without TF32 worst {r['without_tf32']['worst']:.2e})"
                                                          if "note" in r else "")
            lines.append(f"| {r['generator']} | {r['precision']} | {r.get('device', 'cuda')} | {r['graph']} | {r['worst']:.2e} | "
                         f"{r['worst_max']:.2e} | {r['tolerance']:g} | {r.get('use_tf32') or '-'} | {res} |")
        lines.append("")
    kern = [r for r in rows if r.get("kind") == "kernel" and r.get("op") == "downsample_loss"]
    copy = next((r for r in rows if r.get("kind") == "copy"), None)
    if kern or copy:
        lines += ["## Fused kernels (validated against float64, then timed: CUDA events, L2 flushed, median)", ""]
        if copy:
            lines.append(f"Copy bandwidth (device to device, read + write): {copy['gbps']:.0f} GB/s")
        if kern:
            lines += ["", "| batch | HR -> LR | dtype | max rel err | ours (us) | GB/s | % of copy | torch (us) | speed-up |",
                      "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for r in kern:
                pct = f"{100 * r['gbps'] / copy['gbps']:.0f}%" if copy else "-"
                lines.append(f"| {r['batch']} | {r['size']} -> {r['lr_size']} | {r['dtype']} | {r['max_rel_err']:.1e} | "
                             f"{r['ours_us']:.1f} | {r['gbps']:.0f} | {pct} | {r['torch_us']:.1f} | {r['torch_us'] / r['ours_us']:.1f}x |"
                             + ("" if r["valid"] else " MISMATCH"))
        for r in (x for x in rows if x.get("kind") == "kernel" and x.get("op") == "sphere_update"):
            lines += ["", f"sphere_update {r['opt']} {r['shape']}: ours {r['ours_us']:.1f} us, torch {r['torch_us']:.1f} us, "
                          f"max rel err {r['max_rel_err']:.1e}" + ("" if r["valid"] else " MISMATCH")]
        lines.append("")
    for r in (x for x in rows if x.get("kind") == "tests"):
        lines += ["## GPU tests", "", f"`{r['command']}`: {r['summary']} (exit {r['returncode']}, {r['seconds']} s; "
                  "gpu_tests.log)", ""]
    for r in (x for x in rows if x.get("kind") == "stream"):
        lines += ["## Continuous batching", "", f"`{r['command']}` (exit {r['returncode']})", "", r.get("markdown") or
                  "no bench.md written: " + (r.get("stderr_tail") or "").strip()[-500:], ""]
    parts = [r for r in rows if r.get("kind") == "part"]
    if parts:
        lines += ["## Parts (in the order they ran)", "", "| part | status | seconds | deadline | note |", "|---|---|---:|---:|---|"]
        for r in parts:
            lines.append(f"| {r['part']} | {r['status']} | {_fmt(r.get('seconds'), '.1f')} | {_fmt(r.get('deadline_s'), '.0f')} | "
                         f"{r.get('why', '')} |")
        lines.append("")
    skips = [r for r in rows if r.get("kind") == "skip"]
    if skips:
        lines += ["## Skipped inside parts", ""] + [
            f"- {r.get('generator', '')} {r.get('backend', '')} {r.get('precision', '')}"
            f"{' batch ' + str(r['batch']) if 'batch' in r else ''}: {r['why']}" for r in skips] + [""]
    pre = next((r for r in rows if r.get("kind") == "prewarm"), None)
    if pre:
        steps = ", ".join(f"{s['step']} {'ok' if s['ok'] else 'FAILED'} ({s['seconds']} s)" for s in pre.get("steps", []))
        lines += [f"Prewarm: {pre['status']}" + (f": {steps}" if steps else "") + (" (prewarm.log)" if pre.get("log") else ""), ""]
    end = next((r for r in rows if r.get("kind") == "end"), None)
    lines.append(f"Elapsed: {end['elapsed_s']} s." if end else "The suite was still running (or was stopped) when this was written.")
    return "\n".join(lines) + "\n"


def render(out: Path, plot: bool = True) -> None:
    """suite.json, suite.md and (plot) throughput.png from out/rows.jsonl (atomic writes)."""
    out = Path(out)
    rows = read_rows(out)
    speedups(rows)
    _atomic_write(out / "suite.json", json.dumps({"rows": rows}, indent=1, default=str) + "\n")
    _atomic_write(out / "suite.md", markdown(rows))
    bench = [r for r in rows if r.get("kind") == "bench"]
    if bench and plot:
        try:
            from pulse_trt.bench import plot_throughput  # noqa: PLC0415

            groups = {}
            for r in bench:
                groups.setdefault(r["generator"], []).append(r)
            label = bench[0].get("machine_label", "GPU")
            plot_throughput([{"rows": g, "workload": {"generator": k}, "machine_label": label} for k, g in groups.items()],
                            out / "throughput.png")
        except Exception as e:  # noqa: BLE001  (matplotlib missing or a plotting error: the tables stand)
            print(f"[gpu_suite] no throughput.png: {e}", flush=True)


# -- dry run ----------------------------------------------------------------------------------------
def plan_lines(parts, budget: float) -> list[str]:
    """The dry run: every part with its budget, its worst-case end, and why it would skip here."""
    lines = [f"GPU suite plan: {len(parts)} parts, budget {budget:.0f} s ({budget / 60:.1f} min); parts run in this order, "
             "each stopped at min(its budget, time left).", "",
             f"{'#':>2}  {'part':<28} {'budget':>7} {'worst end':>9}  what"]
    t = 0.0
    for i, p in enumerate(parts, 1):
        t += p.budget
        mark = "" if t <= budget else "  [past the budget in the worst case: runs if earlier parts finish early]"
        lines.append(f"{i:>2}  {p.name:<28} {p.budget:>5.0f} s {int(t // 60):>5d}:{int(t % 60):02d}  {p.what}{mark}")
    lines += ["", "Would skip here (checked on this machine):"]
    by_reason: dict[str, list[str]] = {}
    for p in parts:
        why = missing_feature(p)
        if why:
            by_reason.setdefault(why, []).append(p.name)
    lines += [f"  - {', '.join(names)}: {why}" for why, names in by_reason.items()] or ["  - nothing"]
    try:
        import onnxruntime as ort  # noqa: PLC0415

        has = "CUDAExecutionProvider" in ort.get_available_providers()
        lines.append(f"  - ONNX Runtime here: {ort.__version__}, CUDA provider {'present' if has else 'absent'}; on the GPU "
                     "machine the env part checks that it is really active (stage it: benchmarks/device/stage_ort_gpu.sh)")
    except ImportError:
        lines.append("  - onnxruntime is not installed here")
    lines += ["", f"Writes to $OUT (at most {len(OUT_FILES)} files, rewritten after every row): {', '.join(OUT_FILES)}",
              f"Work files (artefact cache, build log, prewarm status): {WORK}"]
    return lines


# -- command line ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_suite_out"), help="output folder (default $OUT)")
    p.add_argument("--budget", type=parse_budget, default=parse_budget("8m"), help="wall-clock budget (default 8m)")
    p.add_argument("--only", nargs="+", metavar="PART", help="run only these parts (names as in --dry-run; env always runs)")
    p.add_argument("--dry-run", action="store_true", help="list the parts, their budgets and skips; run nothing")
    p.add_argument("--prewarm", action="store_true", help="CPU-side work only (kernel build, exports)")
    p.add_argument("--run-part", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.only:
        unknown = [n for n in args.only if n not in PART_BY_NAME]
        if unknown:
            p.error(f"unknown part {unknown[0]!r}; parts: {', '.join(PART_BY_NAME)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = [p for p in PARTS if not args.only or p.name in args.only or p.kind == "env"]
    if args.dry_run:
        print("\n".join(plan_lines(parts, args.budget)))
        return 0
    if args.run_part:
        return run_part(args.run_part, Path(args.out), args.deadline)
    if args.prewarm:
        return prewarm()
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])
    # gpu_suite.sh exports its start time: the budget covers the whole command, its install step too
    spent = max(0.0, time.time() - float(os.environ.get("PULSE_SUITE_T0", time.time())))
    return run_suite(parts, args.out, args.budget - spent, command=command)


if __name__ == "__main__":
    sys.exit(main())
