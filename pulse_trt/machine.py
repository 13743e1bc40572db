"""Naming the machine a figure was measured on: CPU, GPU, driver, library versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict | None:
    """Name, driver and memory of GPU 0 from nvidia-smi, or None without one."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, driver, mem = (s.strip() for s in out[0].split(","))
    return {"name": name, "driver": driver, "memory": mem}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Everything a published figure needs to name its hardware and software."""
    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": gpu_info(),
        "versions": {d: _version(d) for d in ("pulse-trt", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy")},
    }
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def machine_label(info: dict) -> str:
    """One line: 'NVIDIA H100 80GB HBM3 (driver 580.x)' or 'AMD EPYC ... (2 cores)'."""
    if info.get("gpu"):
        return f"{info['gpu']['name']} (driver {info['gpu']['driver']})"
    return f"{info['cpu']} ({info['cores']} cores)"
